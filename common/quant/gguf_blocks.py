"""A GGUF tensor's own quantized blocks, rewritten into forms ExecuTorch runs, without a second rounding.

XNNPACK's 4-bit weights are symmetric groups of 32: `s * c` with c in -8..7. llama.cpp's 4-bit blocks (32 values,
or 32-value sub-blocks of a 256 super-block) are exactly that plus one offset per block:

    Q4_0:  w = d * (q - 8)                                      -> c = q - 8, s = d,        offset 0
    Q4_1:  w = d * q + m                                        -> c = q - 8, s = d,        offset m + 8 d
    Q4_K:  w = (d * sc) * q - dmin * mn   (per 32 sub-block)    -> c = q - 8, s = d * sc,   offset 8 d sc - dmin mn

so a linear over such a weight is `y = (s * c) x + B · groupsum32(x)`, B[o, g] the offsets (`BlockOffsetLinear`).
Q8_0 is `d * q` with int8 q in groups of 32: exactly ExecuTorch's `embedding_byte` with group-32 scales. Types with
more than 4 bits (Q5_*, Q6_K) have no exact int4 form; they become int8 per channel, from their dequantized values.

Every function takes the tensor's raw block bytes (`gguf.ReaderTensor.data`) and returns torch tensors in the
tensor's row-major (rows, cols) layout; `reconstruct` gives back the weight, in float64 (exact for these formats).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from gguf import GGMLQuantizationType as T
from gguf.quants import Q4_K

INT4_EXACT = (T.Q4_0, T.Q4_1, T.Q4_K)  # rewritten exactly as int4 groups + offsets
INT8_EXACT = (T.Q8_0,)  # exactly int8 groups of 32
GROUP = 32


@dataclass
class Int4Blocks:
    """A weight as `scales * codes + offsets`, each scale and offset shared by 32 consecutive values of a row."""

    codes: torch.Tensor  # int8 [rows, cols], -8..7
    scales: torch.Tensor  # float32 [rows, cols / 32]
    offsets: torch.Tensor | None  # float32 [rows, cols / 32]; None where the format has none (Q4_0)

    def rows(self, fix) -> Int4Blocks:
        """The same blocks with `fix` (a row permutation of a 2-D tensor) applied to each part."""
        return Int4Blocks(fix(self.codes), fix(self.scales), None if self.offsets is None else fix(self.offsets))

    @staticmethod
    def cat(parts: list[Int4Blocks]) -> Int4Blocks:
        """Row-wise concatenation (the blocks of a fused q/k/v or gate/up linear)."""
        offsets = [p.offsets if p.offsets is not None else torch.zeros_like(p.scales) for p in parts]
        return Int4Blocks(torch.cat([p.codes for p in parts]), torch.cat([p.scales for p in parts]),
                          None if all(p.offsets is None for p in parts) else torch.cat(offsets))


def _blocks(data: np.ndarray, qtype: T, shape: tuple[int, int]) -> np.ndarray:
    """The raw bytes as [n_blocks, bytes per block], row-major over (rows, cols)."""
    from gguf import GGML_QUANT_SIZES

    block, size = GGML_QUANT_SIZES[qtype]
    rows, cols = shape
    if cols % block:
        raise ValueError(f"{qtype.name} rows of {cols} values are not whole blocks of {block}")
    return np.ascontiguousarray(data).view(np.uint8).reshape(rows * cols // block, size)


def _nibbles(qs: np.ndarray) -> np.ndarray:
    """[n, 16] bytes -> [n, 32] 4-bit values: low nibbles first, then high nibbles (ggml's 32-value layout)."""
    return np.concatenate([qs & 0x0F, qs >> 4], axis=-1)


def int4_blocks(data: np.ndarray, qtype: T, shape: tuple[int, int]) -> Int4Blocks:
    """Q4_0 / Q4_1 / Q4_K raw blocks as symmetric int4 groups of 32 plus per-group offsets."""
    rows, cols = shape
    b = _blocks(data, qtype, shape)
    f16 = lambda a: a.copy().view(np.float16).astype(np.float64)  # noqa: E731  (fp16 fields, exact in float64)
    if qtype in (T.Q4_0, T.Q4_1):
        d = f16(b[:, 0:2])[:, 0]
        m = f16(b[:, 2:4])[:, 0] if qtype == T.Q4_1 else None
        q = _nibbles(b[:, 4 if qtype == T.Q4_1 else 2:])
        scales, offsets = d, None if m is None else m + 8 * d
    elif qtype == T.Q4_K:
        d, dmin = f16(b[:, 0:2]), f16(b[:, 2:4])  # [n, 1]
        sc, mn = Q4_K.get_scale_min(b[:, 4:16])  # [n, 8] 6-bit sub-block scales and mins
        qs = b[:, 16:].reshape(-1, 4, 32)  # 4 x 32 bytes: each holds two 32-value sub-blocks (low, then high nibbles)
        q = np.concatenate([qs & 0x0F, qs >> 4], axis=-1).reshape(-1, 8, 32).reshape(-1, 32)
        s = d * sc.astype(np.float64)
        scales, offsets = s.reshape(-1), (8 * s - dmin * mn.astype(np.float64)).reshape(-1)
    else:
        raise ValueError(f"{qtype.name} has no exact int4 form (expected one of {[t.name for t in INT4_EXACT]})")
    codes = torch.from_numpy(q.astype(np.int8) - 8).reshape(rows, cols)
    to32 = lambda a: torch.from_numpy(np.asarray(a, dtype=np.float32)).reshape(rows, cols // GROUP)  # noqa: E731
    return Int4Blocks(codes, to32(scales), None if offsets is None else to32(offsets))


def int8_blocks(data: np.ndarray, qtype: T, shape: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Q8_0 raw blocks as (int8 codes [rows, cols], float32 scales [rows, cols / 32]): w = scale * code."""
    if qtype not in INT8_EXACT:
        raise ValueError(f"{qtype.name} is not int8 groups of 32")
    rows, cols = shape
    b = _blocks(data, qtype, shape)
    scales = b[:, 0:2].copy().view(np.float16).astype(np.float32)
    codes = b[:, 2:].copy().view(np.int8)
    return torch.from_numpy(codes).reshape(rows, cols), torch.from_numpy(scales).reshape(rows, cols // GROUP)


def reconstruct(blocks: Int4Blocks) -> torch.Tensor:
    """`scales * codes + offsets` in float64 (exact: fp16 scales times 4-bit codes need no rounding)."""
    rows, cols = blocks.codes.shape
    w = blocks.codes.double().reshape(rows, -1, GROUP) * blocks.scales.double().unsqueeze(-1)
    if blocks.offsets is not None:
        w = w + blocks.offsets.double().unsqueeze(-1)
    return w.reshape(rows, cols)
