"""Qwen3 without exports: sizes, parity with transformers on HF dirs and GGUF, tokenizer/chat template, CLIs."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from common.cli import encode_prompt, inference_main, quantize_main, run_cli
from common.errors import UserError
from common.nn.attention import attention_kernel
from common.pipeline import load_model, prepare_quantized
from common.quant import preset
from common.tokenizer import load_tokenizer
from models.qwen3.model import FAMILY, SIZES, config, hf_config
from tests.helpers import cached_logits

ROOT = Path(__file__).resolve().parents[3]
VARIANTS = ("tied", "untied")
# Non-embedding parameters in billions, from the Qwen/Qwen3-* model cards.
PUBLISHED = {"0.6B": 0.44, "1.7B": 1.4, "4B": 3.6, "8B": 6.95, "14B": 13.2, "32B": 31.2}
CHATS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "2+2?"},
        {"role": "assistant", "content": "4", "reasoning_content": "Two plus two."},
        {"role": "user", "content": "Und 3+3? 🙂"},
    ],
]


def ids_for(tiny, n: int = 24) -> list[int]:
    text = tiny.tokenizer.apply_chat_template(CHATS[1], enable_thinking=False)
    ids = tiny.tokenizer.encode(text)
    assert len(ids) >= n
    return ids[:n]


def hf_logits(tiny, ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        return tiny.hf(torch.tensor([ids])).logits[0]


# --- configs ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", SIZES)
def test_published_sizes_match_transformers(size: str) -> None:
    """Every Qwen3 size builds the same module tree as transformers (on the meta device, no memory)."""
    from transformers import Qwen3Config, Qwen3ForCausalLM

    cfg = config(size)
    assert (cfg.qk_norm, cfg.rope_theta, cfg.head_dim, cfg.tie_embeddings) == (
        True, 1e6, 128, size in ("0.6B", "1.7B", "4B"))
    with torch.device("meta"):
        ours = FAMILY.build(cfg, 8)
        hf = Qwen3ForCausalLM(Qwen3Config(**FAMILY.to_hf(cfg)))
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in hf.state_dict().items()}
    body = sum(p.numel() for name, p in ours.named_parameters() if "embed_tokens" not in name and "lm_head" not in name)
    assert body / 1e9 == pytest.approx(PUBLISHED[size], rel=0.01)
    assert FAMILY.config_from_hf(FAMILY.to_hf(cfg)) == cfg == FAMILY.config_from_hf(hf_config(size))


def test_unsupported_config_is_refused() -> None:
    with pytest.raises(UserError, match="rope_type 'yarn'"):
        type(config("8B")).from_hf(hf_config("8B") | {"rope_scaling": {"rope_type": "yarn", "factor": 4.0}})
    with pytest.raises(UserError, match="sliding_window None: expected a positive int"):
        type(config("8B")).from_hf(hf_config("8B") | {"use_sliding_window": True, "max_window_layers": 0})


# --- parity with transformers ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("custom_ops", [False, True], ids=["sdpa", "custom_ops"])
def test_hf_dir_matches_transformers(tiny, variant: str, custom_ops: bool) -> None:
    t = tiny[variant]
    model, cfg, recipe = load_model(FAMILY, t.dir, max_context_len=64, kernel=attention_kernel(custom_ops))
    assert recipe is None and cfg.qk_norm and cfg.tie_embeddings == (variant == "tied")
    ids = ids_for(t)
    ref = hf_logits(t, ids)
    assert ref.abs().max() > 1  # O(1) weights: the tolerance below is tight, not vacuous
    with torch.no_grad():
        full = model(torch.tensor([ids]), torch.tensor([0]))[0]
    assert (full - ref).abs().max() <= 1e-4
    model.reset_cache()
    assert (cached_logits(model, ids, prefill=10) - ref).abs().max() <= 1e-4


def test_sharded_dir_loads_the_same(tiny) -> None:
    t = tiny["untied"]
    assert (Path(t.sharded) / "model.safetensors.index.json").is_file()
    assert len(list(Path(t.sharded).glob("model-*-of-*.safetensors"))) > 1
    a, _, _ = load_model(FAMILY, t.dir, max_context_len=8)
    b, _, _ = load_model(FAMILY, t.sharded, max_context_len=8)
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("variant", VARIANTS)
def test_gguf_matches_transformers(tiny, variant: str) -> None:
    import gguf

    from tests.checkpoints import gguf_roundtrip

    t = tiny[variant]
    model, cfg, _ = load_model(FAMILY, t.gguf, max_context_len=64)
    dir_cfg = load_model(FAMILY, t.dir, max_context_len=8)[1]
    same = ("vocab_size", "dim", "n_layers", "n_heads", "n_kv_heads", "hidden_dim", "head_dim", "rope_theta",
            "tie_embeddings", "qk_norm", "bos_id", "eos_ids", "max_position_embeddings")
    assert {f: getattr(cfg, f) for f in same} == {f: getattr(dir_cfg, f) for f in same}
    hf_state = t.hf.state_dict()
    ours = model.state_dict()
    assert all(torch.equal(ours[k], v) for k, v in hf_state.items())
    ids = ids_for(t)
    assert (cached_logits(model, ids, prefill=10) - hf_logits(t, ids)).abs().max() <= 1e-4

    q8 = load_model(FAMILY, t.gguf_q8, max_context_len=8)[0].state_dict()
    for k, v in hf_state.items():  # exactly what llama.cpp's Q8_0 holds: quantized 2-D weights, F32 norms
        assert torch.equal(q8[k], gguf_roundtrip(v, gguf.GGMLQuantizationType.Q8_0) if v.ndim == 2 else v), k


def test_wrong_family_is_refused(tiny, tmp_path: Path, capsys) -> None:
    from models.llama3.model import FAMILY as LLAMA3
    from tests.checkpoints import tiny_hf_model, write_gguf

    llama = tiny_hf_model("llama", vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                          num_attention_heads=2, num_key_value_heads=1)
    llama_gguf = write_gguf(tmp_path / "llama.gguf", llama, "llama")
    with pytest.raises(UserError, match="expects \\('qwen3',\\)"):
        load_model(FAMILY, str(llama_gguf))
    for ckpt in (tiny["tied"].dir, tiny["tied"].gguf):
        with pytest.raises(UserError, match="'qwen3', but Llama 3"):
            load_model(LLAMA3, ckpt)
    argv = ["--checkpoint", str(llama_gguf), "--max-new-tokens", "1"]
    assert run_cli(inference_main(FAMILY), argv) == 2
    assert "error:" in capsys.readouterr().err


# --- tokenizer and chat template -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hf_tokenizer(tiny):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny["tied"].dir)


def test_tokenizers_match_transformers(tiny, hf_tokenizer) -> None:
    from tests.checkpoints import CORPUS

    t = tiny["tied"]
    from_gguf = load_tokenizer(t.gguf)
    samples = [*CORPUS[:8], "<|im_start|>user\nZürich <think>x</think>  12345\n\n<|im_end|>", "  spaces\t\n"]
    for text in samples:
        ids = hf_tokenizer.encode(text, add_special_tokens=False)
        assert t.tokenizer.encode(text) == from_gguf.encode(text) == ids, text
        assert t.tokenizer.decode(ids) == hf_tokenizer.decode(ids) == text
    im_end, endoftext = (t.tokenizer.backend.token_to_id(s) for s in ("<|im_end|>", "<|endoftext|>"))
    for tok in (t.tokenizer, from_gguf):  # Qwen3 stops on both; no BOS is prepended
        assert (tok.eos_ids[:2], tok.add_bos_token, tok.encode("hi")[:1]) == ((im_end, endoftext), False,
                                                                             hf_tokenizer.encode("hi")[:1])
    assert len(t.tokenizer.encode("<think></think><|im_start|>")) == 3  # added tokens stay whole


@pytest.mark.parametrize("enable_thinking", [True, False])
def test_chat_template_matches_transformers(tiny, hf_tokenizer, enable_thinking: bool) -> None:
    t = tiny["tied"]
    for tok in (t.tokenizer, load_tokenizer(t.gguf)):
        for chat in CHATS:
            expected = hf_tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True,
                                                        enable_thinking=enable_thinking)
            assert tok.apply_chat_template(chat, enable_thinking=enable_thinking) == expected
        for system in (None, "Be brief."):  # what --chat [--system] sends
            ids = encode_prompt(tok, "Hi 🙂", True, system, enable_thinking)
            chat = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": "Hi 🙂"}]
            text = hf_tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True,
                                                    enable_thinking=enable_thinking)
            assert ids == hf_tokenizer.encode(text, add_special_tokens=False)
    assert expected.endswith("assistant\n" + ("" if enable_thinking else "<think>\n\n</think>\n\n"))


# --- CLIs ------------------------------------------------------------------------------------------------------


def _prefill_tokens(err: str) -> int:
    return int(re.search(r"prefill (\d+) tok", err).group(1))


@pytest.mark.parametrize("source", ["dir", "gguf"])
def test_inference_cli_eager(tiny, source: str, capsys) -> None:
    t = tiny["untied"]
    ckpt = t.dir if source == "dir" else t.gguf
    base = ["--checkpoint", ckpt, "--max-new-tokens", "4", "--max-context-len", "64"]
    assert run_cli(inference_main(FAMILY), [*base, "--prompt", "Hello"]) == 0
    out, err = capsys.readouterr()
    assert out.startswith("Hello") and "decode" in err and f"eager {Path(ckpt).name}" in err
    prefill = {}
    for flag in ("--enable-thinking", "--no-enable-thinking"):
        assert run_cli(inference_main(FAMILY), [*base, "--chat", "--system", "Be brief.", flag]) == 0
        prefill[flag] = _prefill_tokens(capsys.readouterr().err)
    empty_think = len(t.tokenizer.encode("<think>\n\n</think>\n\n"))
    assert prefill["--no-enable-thinking"] == prefill["--enable-thinking"] + empty_think


def test_quantize_and_save_round_trip(tiny, tmp_path: Path, capsys) -> None:
    t = tiny["tied"]
    out = tmp_path / "q8da4w"
    assert run_cli(quantize_main(FAMILY), ["--checkpoint", t.dir, "--quantize", "8da4w", "--output", str(out)]) == 0
    assert f"wrote {out}/" in capsys.readouterr().out
    hf = json.loads((out / "config.json").read_text())
    assert (hf["model_type"], hf["zoo_quantization"]["name"], hf["head_dim"]) == ("qwen3", "8da4w-g32", 32)
    saved, _, recipe = load_model(FAMILY, str(out), max_context_len=64)
    fresh, _ = prepare_quantized(FAMILY, t.dir, preset("8da4w"), max_context_len=64)
    assert recipe == preset("8da4w")
    ids = ids_for(t)
    a, b = cached_logits(saved, ids, 10), cached_logits(fresh, ids, 10)
    assert torch.equal(a, b)
    assert (a - hf_logits(t, ids)).abs().max() < 0.2 * hf_logits(t, ids).abs().max()  # still the same model
    again = load_tokenizer(out)
    assert (again.chat_template, again.eos_ids) == (t.tokenizer.chat_template, t.tokenizer.eos_ids)
    argv = ["--checkpoint", str(out), "--chat", "--max-new-tokens", "2", "--max-context-len", "64"]
    assert run_cli(inference_main(FAMILY), argv) == 0


def test_quantize_and_save_from_gguf_with_embeddings(tiny, tmp_path: Path) -> None:
    t = tiny["untied"]
    out = tmp_path / "q_emb"
    argv = ["--checkpoint", t.gguf_q8, "--quantize", "8da8w", "--embedding-bits", "8", "--output", str(out)]
    assert run_cli(quantize_main(FAMILY), argv) == 0
    saved, cfg, recipe = load_model(FAMILY, str(out), max_context_len=64)
    fresh, _ = prepare_quantized(FAMILY, t.gguf_q8, recipe, max_context_len=64)
    assert (recipe, cfg.tie_embeddings) == (preset("8da8w", embedding_bits=8), False)
    ids = ids_for(t)
    assert torch.equal(cached_logits(saved, ids, 10), cached_logits(fresh, ids, 10))
