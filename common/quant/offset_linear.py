"""A linear whose weight is symmetric int4 groups plus one offset per group of 32: a GGUF 4-bit block, exactly."""

from __future__ import annotations

import torch
from torch import nn

GROUP = 32


def group_matrix(in_features: int) -> torch.Tensor:
    """[in / 32, in] of 0/1: row g sums inputs 32 g .. 32 g + 31."""
    return torch.eye(in_features // GROUP).repeat_interleave(GROUP, dim=1)


class BlockOffsetLinear(nn.Module):
    """`linear(x) + offsets(group_sums(x))`.

    `linear` carries the symmetric part (`scale * code`, an 8da4w group-32 weight XNNPACK runs); `offsets` the
    per-block offsets B[out, in / 32], applied to the sums of x over each group of 32 inputs: sum_i (s c_i + b) x_i
    = s sum_i c_i x_i + b sum_i x_i. The sums are a linear of 0/1 weights (`group_matrix`), quantized to int8
    exactly (code 1, scale 1): with int8 dynamic activations it sums the same quantized x the int4 part multiplies,
    as llama.cpp sums its q8 activation blocks for Q4_1, and it stays inside XNNPACK's partition (a reshape and a
    mean would split it: their dynamic reshape is not delegated)."""

    def __init__(self, linear: nn.Module, in_features: int, out_features: int):
        super().__init__()
        self.linear = linear
        self.in_features, self.out_features = in_features, out_features
        self.group_sums = nn.Linear(in_features, in_features // GROUP, bias=False)
        self.offsets = nn.Linear(in_features // GROUP, out_features, bias=False)

    @classmethod
    def wrap(cls, linear: nn.Module, offsets: torch.Tensor) -> BlockOffsetLinear:
        """`linear` plus the block offsets `offsets` [out, in / 32] (float)."""
        out_features, groups = offsets.shape
        mod = cls(linear, groups * GROUP, out_features)
        with torch.no_grad():
            mod.group_sums.weight.copy_(group_matrix(groups * GROUP))
            mod.offsets.weight.copy_(offsets.float())
        return mod

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x) + self.offsets(self.group_sums(x))
