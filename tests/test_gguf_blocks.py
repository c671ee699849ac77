"""GGUF blocks kept as the file gives them (common/quant/gguf_blocks.py, the `gguf` preset): each block type's rewrite
reproduces gguf.quants.dequantize exactly in fp32, and the linear that runs it computes the dequantized linear."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gguf import GGML_QUANT_SIZES
from gguf import GGMLQuantizationType as T
from gguf.quants import dequantize, quantize

from common.quant.gguf_blocks import Int4Blocks, int4_blocks, int8_blocks, reconstruct
from common.quant.offset_linear import BlockOffsetLinear

ROWS, COLS = 48, 512


def _random_blocks(qtype: T, seed: int = 0) -> np.ndarray:
    """Raw tensor bytes: gguf's own quantizer where it has one, else random blocks with finite fp16 scales."""
    rng = np.random.default_rng(seed)
    if qtype != T.Q4_K:
        return quantize((rng.standard_normal((ROWS, COLS)) * 0.05).astype(np.float32), qtype)
    block, size = GGML_QUANT_SIZES[qtype]
    raw = rng.integers(0, 256, (ROWS * COLS // block, size), dtype=np.uint8)
    raw[:, 0:4] = rng.uniform(1e-4, 2e-3, (len(raw), 2)).astype(np.float16).view(np.uint8)  # d, dmin
    return raw.reshape(ROWS, -1)


def _dequantized(raw: np.ndarray, qtype: T) -> torch.Tensor:
    return torch.from_numpy(dequantize(raw, qtype).reshape(ROWS, COLS).astype(np.float32))


@pytest.mark.parametrize("qtype", [T.Q4_0, T.Q4_1, T.Q4_K])
def test_int4_rewrite_is_exact(qtype: T) -> None:
    raw = _random_blocks(qtype)
    b = int4_blocks(raw, qtype, (ROWS, COLS))
    assert b.codes.dtype == torch.int8 and int(b.codes.min()) >= -8 and int(b.codes.max()) <= 7
    assert b.scales.shape == (ROWS, COLS // 32) and (b.offsets is None) == (qtype == T.Q4_0)
    assert torch.equal(reconstruct(b).float(), _dequantized(raw, qtype))


def test_q8_0_rewrite_is_exact() -> None:
    raw = _random_blocks(T.Q8_0)
    codes, scales = int8_blocks(raw, T.Q8_0, (ROWS, COLS))
    w = (codes.float().reshape(ROWS, -1, 32) * scales.unsqueeze(-1)).reshape(ROWS, COLS)  # as embedding_byte computes
    assert torch.equal(w, _dequantized(raw, T.Q8_0))


def test_types_without_an_exact_form_are_refused() -> None:
    with pytest.raises(ValueError, match="no exact int4 form"):
        int4_blocks(_random_blocks(T.Q5_0), T.Q5_0, (ROWS, COLS))
    with pytest.raises(ValueError, match="not int8 groups"):
        int8_blocks(_random_blocks(T.Q4_0), T.Q4_0, (ROWS, COLS))


@pytest.mark.parametrize("qtype", [T.Q4_1, T.Q4_K])
def test_block_offset_linear_computes_the_dequantized_linear(qtype: T) -> None:
    """The symmetric part as its own linear plus offsets over group sums: the dequantized weight's linear (fp32)."""
    b = int4_blocks(_random_blocks(qtype, seed=1), qtype, (ROWS, COLS))
    symmetric = torch.nn.Linear(COLS, ROWS, bias=False)
    with torch.no_grad():
        symmetric.weight.copy_(reconstruct(Int4Blocks(b.codes, b.scales, None)).float())
    x = torch.randn(2, 5, COLS)
    expected = x.double() @ reconstruct(b).T
    got = BlockOffsetLinear.wrap(symmetric, b.offsets)(x)
    assert got.shape == (2, 5, ROWS)
    torch.testing.assert_close(got.double(), expected, rtol=1e-5, atol=1e-5)


def test_row_fixes_apply_to_every_part() -> None:
    """llama's q/k un-permutation moves whole rows: applied to codes, scales and offsets alike it commutes with
    dequantizing."""
    from models.llama3.model import unpermute_rope

    b = int4_blocks(_random_blocks(T.Q4_1), T.Q4_1, (ROWS, COLS))
    fixed = b.rows(lambda t: unpermute_rope(t, 4))
    assert torch.equal(reconstruct(fixed), unpermute_rope(reconstruct(b), 4))


@pytest.mark.slow
def test_real_gemma3_file_blocks(gemma3_gguf: str) -> None:
    """Every 4-bit and Q8_0 tensor type in the real Gemma 3 270M file (Q4_K, Q8_0) rewrites exactly; its Q5_0 and
    Q6_K tensors have no exact int4 form (the gguf preset runs them as int8 per channel)."""
    from gguf import GGUFReader

    seen = set()
    for t in GGUFReader(gemma3_gguf).tensors:
        if len(t.shape) != 2 or t.tensor_type in seen:
            continue
        seen.add(t.tensor_type)
        shape = (int(t.shape[1]), int(t.shape[0]))
        ref = torch.from_numpy(dequantize(t.data, t.tensor_type).reshape(shape).astype(np.float32))
        if t.tensor_type == T.Q4_K:
            assert torch.equal(reconstruct(int4_blocks(t.data, t.tensor_type, shape)).float(), ref), t.name
        elif t.tensor_type == T.Q8_0:
            codes, scales = int8_blocks(t.data, t.tensor_type, shape)
            assert torch.equal((codes.float().reshape(shape[0], -1, 32) * scales.unsqueeze(-1)).reshape(shape), ref)
    assert {T.Q4_K, T.Q8_0, T.Q5_0, T.Q6_K} <= seen
