"""Gemma `.pte` exports (XNNPACK, fp32) of tiny Gemma 4 and Gemma 3 checkpoints through the export CLI: prompts of
5x the sliding window, prefilled in chunks shorter than, equal to and longer than the window, against transformers'
one-shot forward (two exports: Gemma 4 with ExecuTorch's llama custom ops, Gemma 3 with plain SDPA)."""

from __future__ import annotations

import pytest
import torch

from common.cli import export_main, run_cli
from common.runtime import PteModel
from models.gemma4_31b.model import FAMILY
from tests.helpers import cli_stdout

pytestmark = pytest.mark.slow

WINDOW, MAX_SEQ_LEN, MAX_CONTEXT_LEN = 4, 2 * 4 + 1, 32  # the tiny configs' window; chunks up to 2 windows + 1
IDS = [2, 17, 42, 99, 5, 250, 31, 64, 7, 300, 12, 8, 77, 123, 9, 200, 45, 3, 88, 150]


@pytest.mark.parametrize("arch, flags", [("gemma4", ()), ("gemma3", ("--no-custom-ops",))])
def test_fp32_pte_chunked_prefill_matches_transformers(arch: str, flags: tuple[str, ...], tmp_path) -> None:
    from tests.checkpoints import write_tiny

    hf, hf_dir, _ = write_tiny(arch, tmp_path / "tiny")
    out = tmp_path / "pte" / "model.pte"
    stdout = cli_stdout(lambda: run_cli(export_main(FAMILY), [
        "--checkpoint", str(hf_dir), "--quantize", "fp32", "--max-seq-len", str(MAX_SEQ_LEN),
        "--max-context-len", str(MAX_CONTEXT_LEN), "--output", str(out), *flags]))
    assert ("custom_sdpa" in stdout) == (not flags)
    pte = PteModel(out)
    with torch.no_grad():
        ref = hf(torch.tensor([IDS])).logits[0]
    for chunk in (1, WINDOW, WINDOW + 1, 2 * WINDOW, MAX_SEQ_LEN):
        for start in range(0, len(IDS), chunk):  # the last logits of every chunk, through the caches
            end = min(start + chunk, len(IDS))
            err = (pte.forward(IDS[start:end], start) - ref[end - 1]).abs().max()
            assert err <= 1e-4, (chunk, start, err)
