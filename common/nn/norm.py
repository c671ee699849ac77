"""RMSNorm in its three variants: weight (Llama, Qwen3), 1 + weight (Gemma), and no weight (Gemma 4's v_norm)."""

from __future__ import annotations

import torch
from torch import nn


class RMSNorm(nn.Module):
    """x / rms(x) * (offset + weight), computed in fp32; `with_weight=False` drops the weight (scale 1)."""

    def __init__(self, dim: int, eps: float = 1e-6, offset: float = 0.0, with_weight: bool = True):
        super().__init__()
        self.eps, self.offset = eps, offset
        # Gemma stores w for a (1 + w) scale, so its identity init is 0; Llama's is 1
        self.weight = nn.Parameter(torch.full((dim,), 1.0 - offset)) if with_weight else None

    def mean_square(self, xf: torch.Tensor) -> torch.Tensor:
        """Mean of squares over the last dim, keepdim. The XNNPACK lowering swaps in a delegable form."""
        return xf.pow(2).mean(-1, keepdim=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        xf = xf * torch.rsqrt(self.mean_square(xf) + self.eps)
        if self.weight is None:
            return xf.to(x.dtype)
        if self.offset:
            return (xf * (self.offset + self.weight.float())).to(x.dtype)
        return self.weight * xf.to(x.dtype)
