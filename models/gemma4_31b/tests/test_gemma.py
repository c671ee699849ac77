"""Gemma 4 and Gemma 3 through one decoder (models/gemma4_31b/model.py) against transformers' Gemma4ForCausalLM /
Gemma3ForCausalLM on identical tiny random weights: from HF dirs, from a gemma3 GGUF written as llama.cpp does,
full-sequence and KV-cached, prompts longer than the sliding window in chunks of every awkward size."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from common.errors import UserError
from common.nn.attention import attention_kernel
from common.pipeline import load_model
from models.gemma4_31b.model import FAMILY, FULL, SLIDING, config_from_hf

WINDOW = 4  # the tiny configs' sliding window (tests/checkpoints.py TINY)
IDS = [2, 17, 42, 99, 5, 250, 31, 64, 7, 300, 12, 8, 77, 123, 9, 200, 45, 3, 88, 150]  # 5x the window


@pytest.fixture(scope="module", params=["gemma4", "gemma3"])
def tiny(request, tmp_path_factory: pytest.TempPathFactory):
    from tests.checkpoints import write_tiny

    return (request.param, *write_tiny(request.param, tmp_path_factory.mktemp(request.param)))


def _reference(hf, ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        return hf(torch.tensor([ids])).logits[0]


def _chunked(model, ids: list[int], chunk: int) -> torch.Tensor:
    """Logits of `ids` fed `chunk` tokens per call through the KV caches."""
    model.reset_cache()
    out = []
    with torch.no_grad():
        for start in range(0, len(ids), chunk):
            out.append(model(torch.tensor([ids[start : start + chunk]]), torch.tensor([start]))[0])
    return torch.cat(out)


def test_config_reads_both_generations(tiny) -> None:
    arch, hf, hf_dir, _ = tiny
    cfg = config_from_hf(hf.config.to_dict())
    assert cfg.layer_types == (SLIDING,) * 5 + (FULL,)
    if arch == "gemma4":
        assert (cfg.global_head_dim, cfg.n_global_kv_heads, cfg.k_eq_v, cfg.v_norm, cfg.norm_offset) == (32, 1, True,
                                                                                                         True, 0.0)
        assert cfg.attn_scale == 1.0 and cfg.final_softcap == 30.0 and cfg.global_rope.rotary_fraction == 0.25
    else:
        assert (cfg.global_head_dim, cfg.k_eq_v, cfg.v_norm, cfg.norm_offset) == (16, False, False, 1.0)
        assert cfg.attn_scale == 16**-0.5 and cfg.final_softcap is None
    # to_hf round-trips through transformers' own config class and back
    from transformers import AutoConfig

    again = AutoConfig.for_model(**FAMILY.to_hf(cfg)).to_dict()
    assert config_from_hf(again) == cfg


@pytest.mark.parametrize("source", ["hf", "gguf"])
def test_logits_match_transformers(tiny, source: str) -> None:
    arch, hf, hf_dir, gguf_path = tiny
    if source == "gguf" and gguf_path is None:
        pytest.skip("llama.cpp writes no Gemma 4 text GGUF")
    model, _, _ = load_model(FAMILY, str(hf_dir if source == "hf" else gguf_path), max_context_len=64)
    if arch == "gemma4":
        assert model.model.layers[5].self_attn.v_proj is None  # K=V on the full layer
    ref = _reference(hf, IDS)
    with torch.no_grad():
        out = model(torch.tensor([IDS]), torch.tensor([0]))[0]
    assert (out - ref).abs().max() <= 1e-4


@pytest.mark.parametrize("custom_ops", [False, True], ids=["sdpa", "custom_ops"])
@pytest.mark.parametrize("chunk", [1, WINDOW, WINDOW + 1, 2 * WINDOW, len(IDS)])
def test_chunked_prefill_is_exact_for_every_chunk_size(tiny, chunk: int, custom_ops: bool) -> None:
    """A prompt of 5x the window, fed in chunks shorter than, equal to and longer than the window through sliding
    layers' rings sized for that chunk (window - 1 + chunk slots, the least that is exact; the ring wraps several
    times): the same logits as transformers' one-shot forward (ExecuTorch's 2 x window ring is wrong past
    window + 1)."""
    _, hf, hf_dir, _ = tiny
    model, _, _ = load_model(FAMILY, str(hf_dir), max_context_len=64, max_seq_len=chunk,
                             kernel=attention_kernel(custom_ops))
    ring = model.model.layers[0].self_attn.kv_cache
    assert ring.k_cache.shape[1] == min(WINDOW - 1 + chunk, 64)
    assert (_chunked(model, IDS, chunk) - _reference(hf, IDS)).abs().max() <= 1e-4


def test_unsupported_gemma4_variants_are_one_clear_error(tiny) -> None:
    arch, hf, _, _ = tiny
    if arch != "gemma4":
        pytest.skip("a Gemma 4 config check")
    for key, value in (("hidden_size_per_layer_input", 256), ("enable_moe_block", True), ("num_kv_shared_layers", 2)):
        with pytest.raises(UserError, match="not supported") as e:
            config_from_hf(hf.config.to_dict() | {key: value})
        assert "\n" not in str(e.value)


def test_a_window_larger_than_the_context_is_one_clear_error(tiny, tmp_path, capsys) -> None:
    """A config.json whose sliding window exceeds max_position_embeddings: one `error:` line naming the file."""
    import json
    import shutil

    from common.cli import export_main, run_cli

    _, hf, hf_dir, _ = tiny
    bad = tmp_path / "bad"
    shutil.copytree(hf_dir, bad)
    config = json.loads((bad / "config.json").read_text())
    (bad / "config.json").write_text(json.dumps(config | {"sliding_window": config["max_position_embeddings"] + 1}))
    assert run_cli(export_main(FAMILY), ["--checkpoint", str(bad), "--output", str(tmp_path / "o" / "m.pte")]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(bad) in err[0] and "sliding_window" in err[0] and "context" in err[0], err


def test_a_gemma_gguf_is_refused_by_the_llama3_cli(tiny, capsys) -> None:
    arch, _, _, gguf_path = tiny
    if gguf_path is None:
        pytest.skip("no Gemma 4 GGUF")
    from common.cli import export_main, run_cli
    from models.llama3.model import FAMILY as LLAMA3

    out = Path(gguf_path).parent / "x" / "model.pte"
    assert run_cli(export_main(LLAMA3), ["--checkpoint", str(gguf_path), "--output", str(out)]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "gemma3" in err[0] and "gemma4_31b" in err[0], err
    assert not out.parent.exists()


def test_31b_size_table() -> None:
    """The 31B text config builds (on the meta device) with the published shape: per-kind heads, K=V full layers."""
    from models.gemma4_31b.model import Gemma, hf_config_31b

    cfg = config_from_hf(hf_config_31b())
    with torch.device("meta"):
        model = Gemma(cfg, max_context_len=8)
    full = [i for i, t in enumerate(cfg.layer_types) if t == FULL]
    assert full == list(range(5, 60, 6)) and full[-1] == cfg.n_layers - 1
    attn = model.model.layers[5].self_attn
    assert (attn.head_dim, attn.n_kv_heads, attn.v_proj) == (512, 4, None)
    assert (model.model.layers[0].self_attn.head_dim, model.model.layers[0].self_attn.n_kv_heads) == (256, 16)
    params = sum(p.numel() for n, p in model.named_parameters() if n != "lm_head.weight")  # tied
    assert 30e9 < params < 32e9, params
    print(f"Gemma 4 31B text: {params / 1e9:.2f}B parameters")


def test_recipes_on_the_31b_model() -> None:
    """`default` and `sensitive` as upstream's rules become on XNNPACK, module by module on the 31B config: int8
    v_proj/down_proj in layers 0-14 and 45-59 only (sensitive), int4 groups of 32 elsewhere, one int8 table read by
    the embedding and the tied head."""
    from common.quant import plan
    from models.gemma4_31b.model import Gemma, hf_config_31b
    from models.gemma4_31b.recipes import default, sensitive

    cfg = config_from_hf(hf_config_31b())
    with torch.device("meta"):
        model = Gemma(cfg, max_context_len=8)
    edges = set(range(15)) | set(range(45, 60))
    for recipe in (default(cfg), sensitive(cfg)):
        p = plan(model, recipe)
        assert (p["model.embed_tokens"].scheme, p["lm_head"].scheme) == ("emb8", "tied8")
        for name, rule in p.items():
            if not name.startswith("model.layers."):
                continue
            layer = int(name.split(".")[2])
            int8 = recipe.name == "sensitive" and layer in edges and name.endswith(("v_proj", "down_proj"))
            assert (rule.scheme, rule.group_size) == (("8da8w", 32) if int8 else ("8da4w", 32)), name
            if not int8:
                assert rule.scale_method == ("hqq" if recipe.name == "sensitive" else "lsq")
        assert sum(n.endswith("v_proj") and p[n].scheme == "8da8w" for n in p) == (
            25 if recipe.name == "sensitive" else 0)  # 30 edge layers, 5 of them full (K=V: no v_proj)
