"""AQLM 2x8 weights (../shared/specs/aqlm.md; Egiazarian et al., arXiv 2401.06118), the format and its op.

Each group of 8 consecutive input weights of a row is the sum of one codeword from each of 2 codebooks of 256
vectors, times a per-row scale: 2 bits per weight for the codes, 8 KiB of codebooks per layer. Tensors in Hugging
Face's `aqlm` layout (what users publish, and what we keep on disk):

    codes      [O, I / 8, 2]   int8, the unsigned code stored as two's complement (decode: code % 256)
    codebooks  [2, 256, 1, 8]  fp16 on disk, fp32 in compute
    scales     [O, 1, 1, 1]
    bias       [O] or absent

    W[o, 8j + b] = scales[o] * sum_m codebooks[m, codes[o, j, m] % 256, 0, b]

`zoo::code2x8_lut_matmat(input, codes, codebooks, scales, *, bias=None)` is `input @ W^T + bias`; eagerly it
dequantizes (here), and `lut_matmat` is the spec's lookup-table algorithm, kept as a reference (the runtime kernel
dequantizes codewords in registers instead: faster on x86, README "AQLM"); with int8_tables it is the meaning of
the lut8 op's decode rows (common/quant/aqlm_lut8.py).
Its runtime kernel is runners/kernels/aqlm.cpp (library "aqlm" in common/kernels.py): linked into the C++ runners,
loaded into the Python runtime. The quantizer: common/quant/aqlm_fit.py (a layer) and aqlm_model.py (a model).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

import common.quant.tied_head  # noqa: F401  (defines the `zoo` op namespace this fragment adds to)
from common.oplib import out_variant

NUM_CODEBOOKS, CODEBOOK_SIZE, IN_GROUP = 2, 256, 8
TABLE_BLOCK = 8  # groups a lookup table is built for at once; int8 tables: groups sharing a scale (64 inputs)

_LIB = torch.library.Library("zoo", "FRAGMENT")
_LIB.define("code2x8_lut_matmat(Tensor input, Tensor codes, Tensor codebooks, Tensor scales, *, Tensor? bias=None)"
            " -> Tensor")
_LIB.define("code2x8_lut_matmat.out(Tensor input, Tensor codes, Tensor codebooks, Tensor scales, *, "
            "Tensor? bias=None, Tensor(a!) out) -> Tensor(a!)")


def dequantize_2x8(codes: torch.Tensor, codebooks: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """fp32 weights [O, I] from codes [O, I/8, 2], codebooks [2, 256, 1, 8] and scales [O, 1, 1, 1]."""
    idx = codes.long() % CODEBOOK_SIZE  # [O, G, 2]
    cb = codebooks.float()[:, :, 0, :]  # [2, 256, 8]
    groups = cb[0][idx[..., 0]] + cb[1][idx[..., 1]]  # [O, G, 8]
    return groups.reshape(codes.shape[0], -1) * scales.float().reshape(-1, 1)


def lut_matmat(x: torch.Tensor, codes: torch.Tensor, codebooks: torch.Tensor, scales: torch.Tensor,
               bias: torch.Tensor | None = None, int8_tables: bool = False) -> torch.Tensor:
    """The spec's lookup-table algorithm for rows x [..., I]: per row a table LUT[j, m, k] = <x[8j:8j+8], codebooks[m, k]>,
    then y[o] = scales[o] * sum_j (LUT[j, 0, codes[o, j, 0]] + LUT[j, 1, codes[o, j, 1]]) + bias[o].
    `int8_tables`: each block of TABLE_BLOCK groups' tables rounded to int8 with one scale s = max |LUT| / 127, the
    reads summed as integers, then times s: the lut8 op's decode rows (common.quant.aqlm_lut8), the reference its
    kernel is tested against (the kernel sums a table entry's 8 products in its own order, so an entry within float
    rounding of .5 can round the other way: one step of its block's scale)."""
    lead, (n_out, n_groups) = x.shape[:-1], codes.shape[:2]
    rows = x.float().reshape(-1, n_groups, IN_GROUP)  # [N, G, 8]
    books = codebooks.float()[:, :, 0, :]  # [2, 256, 8]
    idx = (codes.long() % CODEBOOK_SIZE).permute(1, 2, 0)  # [G, 2, O]
    y = rows.new_zeros(rows.shape[0], n_out)
    for j0 in range(0, n_groups, TABLE_BLOCK):
        lut = torch.einsum("ngb,mkb->ngmk", rows[:, j0:j0 + TABLE_BLOCK], books)  # [N, g, 2, 256]
        step = None
        if int8_tables:
            amax = lut.abs().amax(dim=(1, 2, 3))  # [N]
            inv = torch.where(amax > 0, 127.0 / amax, torch.zeros_like(amax))
            lut, step = torch.round(lut * inv[:, None, None, None]), amax / 127.0
        block_idx = idx[j0:j0 + TABLE_BLOCK].unsqueeze(0).expand(rows.shape[0], -1, -1, -1)
        block = lut.gather(-1, block_idx).sum(dim=(1, 2))  # [N, O]
        y = y + (block if step is None else block * step[:, None])
    y = y * scales.float().reshape(1, -1)
    if bias is not None:
        y = y + bias.float()
    return y.reshape(*lead, n_out)


def _code2x8(input: torch.Tensor, codes: torch.Tensor, codebooks: torch.Tensor, scales: torch.Tensor, *,
             bias: torch.Tensor | None = None) -> torch.Tensor:
    return F.linear(input, dequantize_2x8(codes, codebooks, scales).to(input.dtype), bias)


def _code2x8_meta(input: torch.Tensor, codes: torch.Tensor, codebooks: torch.Tensor, scales: torch.Tensor, *,
                  bias: torch.Tensor | None = None) -> torch.Tensor:
    return input.new_empty((*input.shape[:-1], codes.shape[0]))


_LIB.impl("code2x8_lut_matmat", _code2x8, "CompositeExplicitAutograd")
_LIB.impl("code2x8_lut_matmat.out", out_variant(_code2x8), "CompositeExplicitAutograd")
_LIB.impl("code2x8_lut_matmat", _code2x8_meta, "Meta")


class AqlmLinear(nn.Module):
    """A Linear whose weight is AQLM 2x8 (HF's buffer names: codes, codebooks, scales, bias)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = False):
        super().__init__()
        if in_features % IN_GROUP:
            raise ValueError(f"AQLM 2x8: in_features {in_features} is not a multiple of {IN_GROUP}")
        self.in_features, self.out_features = in_features, out_features
        self.register_buffer("codes", torch.zeros(out_features, in_features // IN_GROUP, NUM_CODEBOOKS, dtype=torch.int8))
        self.register_buffer("codebooks", torch.zeros(NUM_CODEBOOKS, CODEBOOK_SIZE, 1, IN_GROUP))
        self.register_buffer("scales", torch.ones(out_features, 1, 1, 1))
        self.register_buffer("bias", torch.zeros(out_features) if bias else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() and (self.codebooks.requires_grad or self.scales.requires_grad):
            # tuning (common.quant.aqlm_model.tune): the same product, differentiable in codebooks and scales
            return F.linear(x, dequantize_2x8(self.codes, self.codebooks, self.scales).to(x.dtype), self.bias)
        return torch.ops.zoo.code2x8_lut_matmat(x, self.codes, self.codebooks, self.scales, bias=self.bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, 2x8 g{IN_GROUP}"
