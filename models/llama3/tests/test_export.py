"""Llama `.pte` exports of the tiny checkpoints through the export CLI, checked against eager (two exports)."""

from __future__ import annotations

import pytest

from common.cli import export_main, quantize_main, run_cli
from common.pipeline import load_model, prepare_quantized
from common.quant import QuantRecipe
from common.runtime import EagerModel, PteModel
from models.llama3.model import FAMILY
from tests.helpers import cli_stdout, greedy, step_logits

pytestmark = pytest.mark.slow

MAX_SEQ_LEN, MAX_CONTEXT_LEN, DECODE_STEPS = 8, 64, 16


def _export(tmp_path_factory, checkpoint: str, name: str, *flags: str):
    out = tmp_path_factory.mktemp(f"llama_{name}") / "model.pte"
    argv = ["--checkpoint", checkpoint, "--max-seq-len", str(MAX_SEQ_LEN), "--max-context-len", str(MAX_CONTEXT_LEN),
            "--output", str(out), *flags]
    return out, cli_stdout(lambda: run_cli(export_main(FAMILY), argv))


def _prompt(tiny) -> list[int]:
    ids = tiny.tokenizer.encode("The capital of France is Paris, and the capital of Italy is")
    assert MAX_SEQ_LEN < len(ids) < MAX_CONTEXT_LEN - DECODE_STEPS  # prefill takes two chunks
    return ids


def test_fp32_pte_matches_eager(tiny, tmp_path_factory) -> None:
    """fp32 XNNPACK .pte (plain SDPA, llama3 RoPE scaling, tied head) vs eager: prefill + 16 decode steps <= 1e-4."""
    t = tiny["tied"]
    path, stdout = _export(tmp_path_factory, t.gguf, "fp32", "--quantize", "fp32", "--no-custom-ops")
    assert "delegated ops:" in stdout and "custom_sdpa" not in stdout
    pte = PteModel(path)
    eager = EagerModel(load_model(FAMILY, t.dir, max_context_len=MAX_CONTEXT_LEN)[0], (), MAX_SEQ_LEN)
    prompt = _prompt(t)
    tokens = greedy(eager, prompt, DECODE_STEPS)
    ref, out = step_logits(eager, prompt, tokens), step_logits(pte, prompt, tokens)
    assert out.shape == (DECODE_STEPS + 1, t.hf.config.vocab_size)
    assert (out - ref).abs().max() <= 1e-4
    assert pte.eos_ids[0] == t.tokenizer.eos_ids[0] and pte._const("get_bos_id") == t.tokenizer.bos_id


def test_quantize_and_save_then_export_matches_in_memory(tiny, tmp_path_factory) -> None:
    """quantize_and_save -> export (custom ops) gives the greedy tokens of the model quantized in memory."""
    t = tiny["untied"]
    saved = tmp_path_factory.mktemp("llama_q") / "q8da4w"
    cli_stdout(lambda: run_cli(quantize_main(FAMILY), ["--checkpoint", t.dir, "--quantize", "8da4w", "--output",
                                                      str(saved)]))
    path, stdout = _export(tmp_path_factory, str(saved), "from_saved")
    assert "custom_sdpa" in stdout
    fresh, _ = prepare_quantized(FAMILY, t.dir, QuantRecipe("8da4w"), max_context_len=MAX_CONTEXT_LEN)
    prompt = _prompt(t)
    tokens = greedy(EagerModel(fresh, (), MAX_SEQ_LEN), prompt, DECODE_STEPS)
    assert greedy(PteModel(path), prompt, DECODE_STEPS) == tokens
