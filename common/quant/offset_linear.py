"""A linear whose weight is symmetric int4 groups plus one offset per group of 32: a GGUF 4-bit block, exactly."""

from __future__ import annotations

import torch
from torch import nn

GROUP = 32


class BlockOffsetLinear(nn.Module):
    """`linear(x) + offsets(groupsum32(x))`.

    `linear` carries the symmetric part (`scale * code`, an 8da4w group-32 weight XNNPACK runs); `offsets` the
    per-block offsets B[out, in / 32], applied to the sums of x over each group of 32 inputs: sum_i (s c_i + b) x_i
    = s sum_i c_i x_i + b sum_i x_i. The sums are taken as a 4-D mean (the form XNNPACK delegates, as RMSNorm's),
    and the factor 32 lives in the offsets' weight (exact: a power of two)."""

    def __init__(self, linear: nn.Module, in_features: int, out_features: int):
        super().__init__()
        self.linear = linear
        self.in_features, self.out_features = in_features, out_features
        self.offsets = nn.Linear(in_features // GROUP, out_features, bias=False)

    @classmethod
    def wrap(cls, linear: nn.Module, offsets: torch.Tensor) -> BlockOffsetLinear:
        """`linear` plus the block offsets `offsets` [out, in / 32] (float)."""
        out_features, groups = offsets.shape
        mod = cls(linear, groups * GROUP, out_features)
        with torch.no_grad():
            mod.offsets.weight.copy_(offsets.float() * GROUP)
        return mod

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        *lead, n = x.shape
        means = x.reshape(-1, n // GROUP, GROUP, 1).mean((-2, -1)).reshape(*lead, n // GROUP)
        return self.linear(x) + self.offsets(means)
