"""quantize_and_save streams (common/pipeline.py, common/streaming.py): on a synthetic Gemma 4 checkpoint of 0.5 GB
bf16 (1 GiB as the fp32 model), its peak RSS above the interpreter's stays far below the model's size, and what it
writes loads back to the model quantized in memory."""

from __future__ import annotations

import pytest
import torch

pytestmark = pytest.mark.slow

GIB = 1 << 30


def test_quantize_and_save_peak_memory_follows_a_unit_not_the_model(tmp_path) -> None:
    from bench.quantize_memory import measure, model_sizes, synthetic_config, write_checkpoint
    from common.pipeline import load_model, prepare_quantized
    from models.gemma4_31b.model import FAMILY, config_from_hf
    from models.gemma4_31b.recipes import default

    hf = synthetic_config(layers=16, dim=1024, vocab=16384)
    write_checkpoint(tmp_path / "ckpt", hf)
    r = measure(tmp_path / "ckpt", tmp_path / "out", "default")
    model_bytes, unit_bytes = model_sizes(hf)
    grew = r["peak"] - r["base"]
    print(f"peak RSS {r['peak'] / GIB:.2f} GiB, {grew / GIB:.2f} GiB above imports; model fp32 "
          f"{model_bytes / GIB:.2f} GiB, largest unit {unit_bytes / GIB:.3f} GiB")
    # Measured 2026-11-26: 0.2 GiB above imports (torchao's first quantization is most of it) for a 1 GiB model;
    # loading the whole model first, as before streaming, needs more than the model itself.
    assert grew < 0.5 * model_bytes, (grew, model_bytes)
    saved, _, _ = load_model(FAMILY, str(tmp_path / "out"), max_context_len=8)
    fresh, _ = prepare_quantized(FAMILY, str(tmp_path / "ckpt"), default(config_from_hf(hf)), max_context_len=8)
    ids = torch.tensor([[1, 5, 9, 200, 7]])
    with torch.no_grad():
        assert torch.equal(saved(ids, torch.tensor([0])), fresh(ids, torch.tensor([0])))
