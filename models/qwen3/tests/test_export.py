"""Qwen3 `.pte` exports through the export CLI (two exports per session, ~30-60 s each), checked against eager."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from common.cli import export_main, inference_main, run_cli
from common.pipeline import load_model, prepare_quantized
from common.quant import preset
from common.runtime import EagerModel, PteModel
from common.tokenizer import load_tokenizer
from models.qwen3.model import FAMILY
from tests.helpers import cli_stdout, greedy, step_logits

pytestmark = pytest.mark.slow

MAX_SEQ_LEN, MAX_CONTEXT_LEN, DECODE_STEPS = 16, 64, 16
PROMPT = [{"role": "user", "content": "Capital of France?"}]


def _export(tmp_path_factory, checkpoint: str, name: str, *flags: str) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp(f"qwen3_{name}") / "model.pte"
    argv = ["--checkpoint", checkpoint, "--max-seq-len", str(MAX_SEQ_LEN), "--max-context-len", str(MAX_CONTEXT_LEN),
            "--output", str(out), *flags]
    return out, argv


@pytest.fixture(scope="module")
def fp32_pte(tiny, tmp_path_factory) -> tuple[Path, str]:
    """The tied model from its HF dir, fp32, with ExecuTorch's llama:: custom ops (the CLI default)."""
    out, argv = _export(tmp_path_factory, tiny["tied"].dir, "fp32", "--quantize", "fp32")
    return out, cli_stdout(lambda: run_cli(export_main(FAMILY), argv))


@pytest.fixture(scope="module")
def q_pte(tiny, tmp_path_factory) -> tuple[Path, str]:
    """The untied model from its GGUF, 8da4w, plain SDPA + in-place cache updates (--no-custom-ops)."""
    out, argv = _export(tmp_path_factory, tiny["untied"].gguf, "8da4w", "--quantize", "8da4w", "--no-custom-ops")
    return out, cli_stdout(lambda: run_cli(export_main(FAMILY), argv))


def _prompt(tiny) -> list[int]:
    ids = tiny.tokenizer.encode(tiny.tokenizer.apply_chat_template(PROMPT, enable_thinking=False))
    assert MAX_SEQ_LEN < len(ids) < MAX_CONTEXT_LEN - DECODE_STEPS  # prefill takes two chunks
    return ids


def test_fp32_pte_matches_eager(tiny, fp32_pte) -> None:
    t = tiny["tied"]
    path, stdout = fp32_pte
    assert "custom_sdpa" in stdout and f"wrote {path}" in stdout
    pte = PteModel(path)
    eager = EagerModel(load_model(FAMILY, t.dir, max_context_len=MAX_CONTEXT_LEN)[0], (), MAX_SEQ_LEN)
    prompt = _prompt(t)
    tokens = greedy(eager, prompt, DECODE_STEPS + 1)[:DECODE_STEPS]
    ref, out = step_logits(eager, prompt, tokens), step_logits(pte, prompt, tokens)
    assert out.shape == (DECODE_STEPS + 1, 384)
    assert (out - ref).abs().max() <= 1e-4
    with torch.no_grad():  # and eager is transformers, at the prefill's last position
        assert (ref[0] - t.hf(torch.tensor([prompt])).logits[0, -1]).abs().max() <= 1e-4


def test_pte_contract_and_tokenizer(tiny, fp32_pte) -> None:
    t = tiny["tied"]
    path, _ = fp32_pte
    pte = PteModel(path)
    const = {name: pte._const(name) for name in ("get_vocab_size", "get_n_layers", "get_bos_id")}
    endoftext, im_end = (t.tokenizer.backend.token_to_id(s) for s in ("<|endoftext|>", "<|im_end|>"))
    assert const == {"get_vocab_size": 384, "get_n_layers": 2, "get_bos_id": endoftext}
    assert (pte.max_seq_len, pte.max_context_len) == (MAX_SEQ_LEN, MAX_CONTEXT_LEN)
    assert pte.eos_ids[:2] == (im_end, endoftext)  # <|im_end|> then <|endoftext|>
    beside = load_tokenizer(path.parent)
    assert beside.chat_template == t.tokenizer.chat_template
    assert beside.encode("Hello <think>x</think>") == t.tokenizer.encode("Hello <think>x</think>")


def test_8da4w_pte_greedy_matches_eager_8da4w(tiny, q_pte) -> None:
    t = tiny["untied"]
    path, stdout = q_pte
    assert "custom_sdpa" not in stdout
    quantized, _ = prepare_quantized(FAMILY, t.gguf, preset("8da4w"), max_context_len=MAX_CONTEXT_LEN)
    eager, pte, prompt = EagerModel(quantized, (), MAX_SEQ_LEN), PteModel(path), _prompt(t)
    tokens = greedy(eager, prompt, DECODE_STEPS + 1)
    assert greedy(pte, prompt, DECODE_STEPS + 1) == tokens
    # eager rounds the int4 group scales to bf16 as XNNPACK stores them, so the logits agree too
    ref, out = (step_logits(m, prompt, tokens[:DECODE_STEPS]) for m in (eager, pte))
    assert (out - ref).abs().max() <= 1e-4


@pytest.mark.parametrize("thinking", ["--enable-thinking", "--no-enable-thinking"])
def test_inference_cli_pte(q_pte, thinking: str, capsys) -> None:
    path, _ = q_pte
    argv = ["--pte", str(path), "--chat", thinking, "--prompt", "Hi!", "--max-new-tokens", "4"]
    assert run_cli(inference_main(FAMILY), argv) == 0
    err = capsys.readouterr().err
    assert "[model.pte]" in err and "decode" in err
