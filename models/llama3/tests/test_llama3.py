"""Llama without exports: parity with transformers (HF dir, GGUF), KV-cached decoding, quantize_and_save, CLIs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from common.cli import inference_main, quantize_main, run_cli
from common.nn.attention import attention_kernel
from common.pipeline import load_model, prepare_quantized
from common.quant import preset
from models.llama3.model import FAMILY
from tests.helpers import cached_logits

ROOT = Path(__file__).resolve().parents[3]
VARIANTS = ("tied", "untied")


def ids_for(tiny, n: int = 40) -> list[int]:
    ids = tiny.tokenizer.encode("The capital of France is Paris. Numbers 3.14159 and 2024; code: def f(x): return x")
    assert len(ids) >= n  # longer than the 16-position original context: exercises the llama3 scaling
    return ids[:n]


def hf_logits(tiny, ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        return tiny.hf(torch.tensor([ids])).logits[0]


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("custom_ops", [False, True], ids=["sdpa", "custom_ops"])
def test_hf_dir_matches_transformers(tiny, variant: str, custom_ops: bool) -> None:
    t = tiny[variant]
    model, cfg, _ = load_model(FAMILY, t.dir, max_context_len=64, kernel=attention_kernel(custom_ops))
    assert cfg.tie_embeddings == (variant == "tied") and (cfg.rope_scaling is not None) == (variant == "tied")
    ids = ids_for(t)
    ref = hf_logits(t, ids)
    with torch.no_grad():
        full = model(torch.tensor([ids]), torch.tensor([0]))[0]
    assert (full - ref).abs().max() <= 1e-4
    assert (cached_logits(model, ids, 7) - ref).abs().max() <= 1e-4


@pytest.mark.parametrize("variant", VARIANTS)
def test_gguf_matches_transformers(tiny, variant: str) -> None:
    """llama.cpp's q/k permutation is undone, a tied LM head is re-tied, rope_freqs reproduce llama3 scaling."""
    t = tiny[variant]
    model, cfg, _ = load_model(FAMILY, t.gguf, max_context_len=64)
    assert (cfg.rope_freq_factors is not None) == (variant == "tied")
    ids = ids_for(t)
    with torch.no_grad():
        out = model(torch.tensor([ids]), torch.tensor([0]))[0]
    assert (out - hf_logits(t, ids)).abs().max() <= 1e-4
    hf_q = t.hf.state_dict()["model.layers.0.self_attn.q_proj.weight"]
    assert torch.equal(model.state_dict()["model.layers.0.self_attn.q_proj.weight"], hf_q)


def test_quantize_and_save_round_trip(tiny, tmp_path: Path, capsys) -> None:
    """quantize_and_save -> load gives bit-identical logits to quantizing in memory (8da4w + 4-bit embeddings)."""
    t = tiny["untied"]
    out = tmp_path / "q"
    argv = ["--checkpoint", t.gguf, "--quantize", "8da4w", "--embedding-bits", "4", "--output", str(out)]
    assert run_cli(quantize_main(FAMILY), argv) == 0
    assert f"wrote {out}/" in capsys.readouterr().out
    saved, _, recipe = load_model(FAMILY, str(out), max_context_len=64)
    assert recipe == preset("8da4w", embedding_bits=4)
    fresh, _ = prepare_quantized(FAMILY, t.gguf, recipe, max_context_len=64)
    ids = ids_for(t)
    a = cached_logits(saved, ids, 9)
    assert torch.equal(a, cached_logits(fresh, ids, 9))
    ref = hf_logits(t, ids)
    cos = torch.nn.functional.cosine_similarity(a.flatten(), ref.flatten(), dim=0)
    assert cos > 0.95, cos  # int4 weights and embeddings: not equal to fp32, but still the same model


def test_group_size_must_divide_features(tiny, capsys) -> None:
    argv = ["--checkpoint", tiny["tied"].dir, "--quantize", "8da4w", "--group-size", "128", "--output", "/tmp/x.pte"]
    from common.cli import export_main

    assert run_cli(export_main(FAMILY), argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --group-size 128 does not divide in_features 64") and "\n" not in err


def test_inference_cli_eager_greedy_matches_transformers(tiny, capsys) -> None:
    t = tiny["untied"]
    ids = t.tokenizer.encode("Hello world")
    with torch.no_grad():
        ref = t.hf.generate(torch.tensor([ids]), max_new_tokens=6, do_sample=False, min_new_tokens=6)[0, len(ids):]
    argv = ["--checkpoint", t.dir, "--prompt", "Hello world", "--max-new-tokens", "6", "--max-context-len", "64"]
    assert run_cli(inference_main(FAMILY), argv) == 0
    out = capsys.readouterr().out
    eos = set(t.tokenizer.eos_ids)
    expected = t.tokenizer.decode([x for x in ref.tolist()[: next((i + 1 for i, x in enumerate(ref.tolist()) if x in eos), 6)] if x not in eos])
    assert out.startswith("Hello world" + expected)


def test_quantize_and_save_dirs_from_before_recipes_still_load(tiny, tmp_path: Path) -> None:
    """A dir written before recipes were rules (flags dict in config.json, unfused linears) loads unfused and computes
    what today's fused in-memory path computes (fusing is exact: same int4 rows, same scales)."""
    import json

    from common.pipeline import quantize_and_save

    t = tiny["untied"]
    then = preset("8da4w", embedding_bits=4, int8_head=False)  # the flags then made an int4 LM head
    out = quantize_and_save(FAMILY, t.gguf, str(tmp_path / "old"), then, fuse=False)
    cfg = json.loads((out / "config.json").read_text())
    cfg["zoo_quantization"] = {"linear": "8da4w", "group_size": 32, "embedding_bits": 4, "embedding_group_size": 32}
    (out / "config.json").write_text(json.dumps(cfg))
    old, _, recipe = load_model(FAMILY, str(out), max_context_len=64)
    assert recipe == then
    assert "q_proj" in dict(old.model.layers[0].self_attn.named_children())
    fresh, _ = prepare_quantized(FAMILY, t.gguf, recipe, max_context_len=64)
    assert "qkv_proj" in dict(fresh.model.layers[0].self_attn.named_children())
    ids = ids_for(t)
    assert torch.allclose(cached_logits(old, ids, 9), cached_logits(fresh, ids, 9), atol=1e-5)
