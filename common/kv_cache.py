"""KV caches held as mutable buffers, updated in place at a start position.

Layout is [B, S, H, D] (sequence before heads), which is what ExecuTorch's
`llama::update_cache` / `llama::custom_sdpa` kernels expect; the SDPA path
transposes a view.
"""

from __future__ import annotations

import torch
from torch import nn


def start_position(input_pos: torch.Tensor, seq_len: int, capacity: int) -> int:
    """input_pos[0] as a symbolic int bounded for export: 0 <= start and start + seq_len <= capacity."""
    start = input_pos[0].item()
    torch._check(start >= 0)
    torch._check(start + seq_len <= capacity)
    return start


class KVCache(nn.Module):
    """Static (flat) cache of `max_context_len` positions."""

    def __init__(self, max_context_len: int, n_kv_heads: int, head_dim: int, dtype=torch.float32):
        super().__init__()
        self.max_context_len = max_context_len
        self.shape = (1, max_context_len, n_kv_heads, head_dim)
        self.dtype = dtype
        self.init_buffers()

    def init_buffers(self) -> None:
        """(Re)create the caches; also used after building the model on the meta device."""
        self.register_buffer("k_cache", torch.zeros(self.shape, dtype=self.dtype), persistent=False)
        self.register_buffer("v_cache", torch.zeros(self.shape, dtype=self.dtype), persistent=False)

    def update(
        self, start: int, k: torch.Tensor, v: torch.Tensor, use_custom_ops: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Write k, v ([B, S, H, D]) at position `start` (see start_position); return the whole caches."""
        seq_len = k.size(1)
        if use_custom_ops:
            torch.ops.llama.update_cache(k, self.k_cache, start)
            torch.ops.llama.update_cache(v, self.v_cache, start)
        else:
            self.k_cache.narrow(1, start, seq_len).copy_(k)
            self.v_cache.narrow(1, start, seq_len).copy_(v)
        return self.k_cache, self.v_cache

    def reset(self) -> None:
        self.k_cache.zero_()
        self.v_cache.zero_()
