"""A tied LM head that reads its embedding's int8 table: one copy of the table in the `.pte`.

XNNPACK's int8 weights are per channel only, so a tied head lowered there re-quantizes the table and stores a
second copy in the delegate's blob (28 MB of SmolLM2's 125 MB). `zoo::linear_q8` computes
`x @ (codes * scales)^T` from the embedding's own codes [V, D] int8 and group scales [V, D / g] fp32 (GGUF's Q8_0
layout, exactly), so both ops read one constant. Its runtime kernel is runners/kernels/zoo.cpp (library "zoo" in
common/kernels.py), linked into the C++ runners and loaded into the Python runtime.
"""

from __future__ import annotations

import torch
from torch import nn

from common.oplib import out_variant
from common.quant.embedding import QuantizedEmbedding

# Defining the schema once per process: importing this module is what registers it (common/kernels.py).
_LIB = torch.library.Library("zoo", "DEF")
_LIB.define("linear_q8(Tensor input, Tensor codes, Tensor scales) -> Tensor")
_LIB.define("linear_q8.out(Tensor input, Tensor codes, Tensor scales, *, Tensor(a!) out) -> Tensor(a!)")


def dequantize_q8(codes: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """[N, K] fp32 weights from int8 codes [N, K] and group scales [N, G] (group = K / G)."""
    return codes.float() * scales.float().repeat_interleave(codes.shape[1] // scales.shape[1], dim=1)


def _linear_q8(input: torch.Tensor, codes: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.linear(input, dequantize_q8(codes, scales))


def _linear_q8_meta(input: torch.Tensor, codes: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    return input.new_empty((*input.shape[:-1], codes.shape[0]))


_LIB.impl("linear_q8", _linear_q8, "CompositeExplicitAutograd")
_LIB.impl("linear_q8.out", out_variant(_linear_q8), "CompositeExplicitAutograd")
_LIB.impl("linear_q8", _linear_q8_meta, "Meta")


class TiedQ8Head(nn.Module):
    """`lm_head` as `zoo::linear_q8` over `table`'s buffers. The table is referenced, not registered, so the state
    dict holds it once (under the embedding's name) and export lifts one constant for both ops."""

    def __init__(self, table: QuantizedEmbedding):
        super().__init__()
        if table.bits != 8:
            raise ValueError("TiedQ8Head needs an int8 table")
        self.__dict__["table"] = table  # not a submodule: see the class docstring
        self.out_features, self.in_features = table.qweight.shape  # nn.Linear's interface (the vocabulary size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.zoo.linear_q8(x, self.table.qweight, self.table.scales)

    def extra_repr(self) -> str:
        return f"reads the embedding table {tuple(self.table.qweight.shape)} int8, group {self.table.group_size}"
