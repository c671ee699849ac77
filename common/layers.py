"""Small building blocks: RMSNorm, the SwiGLU MLP, and fusing linears that read the same input."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        # mean over the last dim written as a 4-D mean over dims (2, 3): XNNPACK delegates only that
        # form (global average pooling), so the norm no longer splits each layer into more partitions
        ms = xf.pow(2).unsqueeze(-1).mean((-2, -1), keepdim=True).view(x.shape[0], -1, *x.shape[2:-1], 1)
        xf = xf * torch.rsqrt(ms + self.eps)
        return self.weight * xf.to(x.dtype)


class SwiGLU(nn.Module):
    """down(silu(gate(x)) * up(x)), HF names."""

    def __init__(self, dim: int, hidden_dim: int):
        super().__init__()
        self.gate_proj = nn.Linear(dim, hidden_dim, bias=False)
        self.up_proj = nn.Linear(dim, hidden_dim, bias=False)
        self.down_proj = nn.Linear(hidden_dim, dim, bias=False)

    def fuse(self) -> None:
        """gate_proj + up_proj -> one gate_up_proj (see fuse_linears)."""
        self.gate_up_proj = fuse_linears(self.gate_proj, self.up_proj)
        del self.gate_proj, self.up_proj

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if hasattr(self, "gate_up_proj"):
            gate, up = self.gate_up_proj(x).chunk(2, dim=-1)
            return self.down_proj(F.silu(gate) * up)
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


def fuse_linears(*linears: nn.Linear) -> nn.Linear:
    """One Linear whose output is the concatenation of `linears`' outputs (weights stacked by rows).

    Exact: each output row keeps its weights, and quantization groups run along rows, so a fused layer
    quantizes to the same values. One GEMM instead of several saves a dynamic activation quantization and an
    XNNPACK operator dispatch per linear per token (decode is dispatch-bound on small models)."""
    bias = linears[0].bias is not None
    fused = nn.Linear(linears[0].in_features, sum(lin.out_features for lin in linears), bias=bias)
    with torch.no_grad():
        fused.weight.copy_(torch.cat([lin.weight for lin in linears]))
        if bias:
            fused.bias.copy_(torch.cat([lin.bias for lin in linears]))
    return fused
