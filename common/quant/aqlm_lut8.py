"""AQLM 2x8, fast: `zoo::code2x8_lut8_matmat`, decode on int8 lookup tables and prefill in bf16, and its layout.

The same weights as `common.quant.aqlm` (HF's codes, codebooks and scales, repacked at export: `export
--aqlm-kernel lut8` swaps every AqlmLinear for an AqlmLut8Linear; the default, exact, keeps the fp32 op), a
different product. Both paths multiply the input rounded to bf16 by the codebooks rounded to bf16 (summing in fp32:
vdpbf16ps on CPUs with AVX512_BF16, two products a lane an instruction). Below GEMM_ROWS input rows (decode), per
row the spec's table LUT[g, c, k] = <x[8g : 8g + 8], codebooks[c, k]> is rounded to int8, one scale per block of 8
groups (64 inputs; s = max |LUT| / 127), and each output sums its table reads exactly:

    y[o] = scales[o] * sum_blocks s_block * sum_{g in block, c} round(LUT[g, c, codes[o, g, c]] / s_block) + bias[o]

From GEMM_ROWS rows (prefill), the dequantized weights rounded to bf16 times the bf16 inputs (the exact kernel's
dequantize-once GEMM at twice its multiply-adds a cycle). The rounding is noise of the kind 8da4w's int8 activations
get; in exchange a 256-entry table is four AVX-512 registers that VBMI reads for 64 outputs at once
(runners/kernels/aqlm.cpp).

Layout (`pack_codes`): codes [ceil(G/8), ceil(O/64), 8, 2, 64] int8, block-major: the kernel's unit of work, one
block of 8 groups (a table scale) for 64 outputs, is 1 KiB of consecutive bytes, and a thread's share of the
units one stream. Within a unit, lane 2j is the output 64b + j and lane 2j + 1 the output 64b + 32 + j (the kernel
widens even and odd bytes apart: this order comes out sorted); rows past O and groups past G have code 0 and are
never read. Books (`pack_books`) bf16 [2, 4, 256, 2]: codeword k's coordinates 2q, 2q + 1 at [c, q, k] (16
codewords' pairs a vector when the kernel builds a table), half the fp32 codebooks' bytes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from common.oplib import out_variant
from common.quant.aqlm import (
    CODEBOOK_SIZE,
    IN_GROUP,
    NUM_CODEBOOKS,
    TABLE_BLOCK,
    AqlmLinear,
    dequantize_2x8,
    lut_matmat,
)

LANES = 64  # outputs per unit of codes
GEMM_ROWS = 8  # from this many input rows (prefill) the op is the bf16 product: the kernel's GEMM (kGemmRows)

_LIB = torch.library.Library("zoo", "FRAGMENT")
_LIB.define("code2x8_lut8_matmat(Tensor input, Tensor codes, Tensor books, Tensor scales, *, Tensor? bias=None)"
            " -> Tensor")
_LIB.define("code2x8_lut8_matmat.out(Tensor input, Tensor codes, Tensor books, Tensor scales, *, "
            "Tensor? bias=None, Tensor(a!) out) -> Tensor(a!)")


def _lane_order() -> torch.Tensor:
    """The output (0..63) each of a block's 64 lanes holds."""
    j = torch.arange(LANES // 2)
    return torch.stack([j, j + LANES // 2], dim=1).reshape(-1)


def pack_codes(codes: torch.Tensor) -> torch.Tensor:
    """HF codes [O, G, 2] -> the kernel's [ceil(G/8), ceil(O/64), 8, 2, 64]."""
    n_out, n_groups, _ = codes.shape
    out_blocks, group_blocks = -(-n_out // LANES), -(-n_groups // TABLE_BLOCK)
    padded = codes.new_zeros(out_blocks * LANES, group_blocks * TABLE_BLOCK, NUM_CODEBOOKS)
    padded[:n_out, :n_groups] = codes
    units = padded.reshape(out_blocks, LANES, group_blocks, TABLE_BLOCK, NUM_CODEBOOKS)[:, _lane_order()]
    return units.permute(2, 0, 3, 4, 1).contiguous()


def unpack_codes(packed: torch.Tensor, n_out: int, n_groups: int) -> torch.Tensor:
    """The kernel's codes -> HF's [O, G, 2]."""
    group_blocks, out_blocks = packed.shape[:2]
    lanes = packed.permute(1, 4, 0, 2, 3)  # [OB, 64, GB, 8, 2] in lane order
    rows = torch.empty_like(lanes)
    rows[:, _lane_order()] = lanes
    return rows.reshape(out_blocks * LANES, group_blocks * TABLE_BLOCK, NUM_CODEBOOKS)[:n_out, :n_groups]


def pack_books(codebooks: torch.Tensor) -> torch.Tensor:
    """HF codebooks [2, 256, 1, 8] -> bf16 [2, 4, 256, 2]: codeword k's coordinates 2q, 2q + 1 at [c, q, k]."""
    books = codebooks.float()[:, :, 0, :].bfloat16()  # [2, 256, 8]
    return books.reshape(NUM_CODEBOOKS, CODEBOOK_SIZE, IN_GROUP // 2, 2).transpose(1, 2).contiguous()


def unpack_books(books: torch.Tensor) -> torch.Tensor:
    """The op's books -> HF codebooks [2, 256, 1, 8] (float32, bf16 values)."""
    return books.float().transpose(1, 2).reshape(NUM_CODEBOOKS, CODEBOOK_SIZE, 1, IN_GROUP)


def _lut8(input: torch.Tensor, codes: torch.Tensor, books: torch.Tensor, scales: torch.Tensor, *,
          bias: torch.Tensor | None = None) -> torch.Tensor:
    hf_codes = unpack_codes(codes, scales.numel(), input.shape[-1] // IN_GROUP)
    hf_books = unpack_books(books)
    x = input.float().bfloat16().float()  # both paths multiply bf16 inputs by bf16 codebooks, summing in fp32
    if input.numel() >= GEMM_ROWS * input.shape[-1]:  # the weights, dequantized, rounded to bf16 too
        w = dequantize_2x8(hf_codes, hf_books, scales).bfloat16().float()
        return F.linear(x, w, bias).to(input.dtype)
    return lut_matmat(x, hf_codes, hf_books, scales, bias, int8_tables=True).to(input.dtype)


def _lut8_meta(input: torch.Tensor, codes: torch.Tensor, books: torch.Tensor, scales: torch.Tensor, *,
               bias: torch.Tensor | None = None) -> torch.Tensor:
    return input.new_empty((*input.shape[:-1], scales.numel()))


_LIB.impl("code2x8_lut8_matmat", _lut8, "CompositeExplicitAutograd")
_LIB.impl("code2x8_lut8_matmat.out", out_variant(_lut8), "CompositeExplicitAutograd")
_LIB.impl("code2x8_lut8_matmat", _lut8_meta, "Meta")


class AqlmLut8Linear(nn.Module):
    """An AqlmLinear's weights repacked for `zoo::code2x8_lut8_matmat`: codes (`pack_codes`), bf16
    codebooks, fp32 scales and bias."""

    def __init__(self, linear: AqlmLinear):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.register_buffer("codes", pack_codes(linear.codes))
        self.register_buffer("books", pack_books(linear.codebooks))
        self.register_buffer("scales", linear.scales.float().reshape(-1).clone())
        self.register_buffer("bias", None if linear.bias is None else linear.bias.float().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.zoo.code2x8_lut8_matmat(x, self.codes, self.books, self.scales, bias=self.bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, 2x8 g{IN_GROUP}, lut8"


def use_lut8(model: nn.Module) -> int:
    """Swap every AqlmLinear of `model` for an AqlmLut8Linear (in place); returns how many."""
    from common.quant import replace_module

    names = [n for n, m in model.named_modules() if isinstance(m, AqlmLinear)]
    for name in names:
        replace_module(model, name, AqlmLut8Linear(model.get_submodule(name)))
    return len(names)

