"""The gated MLP: down(act(gate(x)) * up(x)), SiLU (Llama, Qwen3) or GELU-tanh (Gemma)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from common.nn.linear import fuse_linears


def gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    """F.gelu(x, approximate="tanh") written out: XNNPACK's own GELU is an approximation (4.7e-4 off at |x| ~ 20,
    5e-3 on a tiny Gemma's logits), its tanh is exact to fp32 (6e-7)."""
    return 0.5 * x * (1.0 + torch.tanh(0.7978845608028654 * (x + 0.044715 * x * x * x)))


ACTIVATIONS = {
    "silu": F.silu,
    "gelu_tanh": gelu_tanh,
}


class GatedMLP(nn.Module):
    """HF names (gate_proj, up_proj, down_proj); after `fuse()`, gate_up_proj holds both halves."""

    def __init__(self, dim: int, hidden_dim: int, activation: str = "silu", bias: bool = False):
        super().__init__()
        self.act = ACTIVATIONS[activation]
        self.gate_proj = nn.Linear(dim, hidden_dim, bias=bias)
        self.up_proj = nn.Linear(dim, hidden_dim, bias=bias)
        self.down_proj = nn.Linear(hidden_dim, dim, bias=bias)
        self.gate_up_proj: nn.Linear | None = None

    def fuse(self) -> None:
        """gate_proj + up_proj -> one gate_up_proj (see common.nn.linear.fuse_linears)."""
        self.gate_up_proj = fuse_linears(self.gate_proj, self.up_proj)
        del self.gate_proj, self.up_proj

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.gate_up_proj is not None:
            gate, up = self.gate_up_proj(x).chunk(2, dim=-1)
        else:
            gate, up = self.gate_proj(x), self.up_proj(x)
        return self.down_proj(self.act(gate) * up)
