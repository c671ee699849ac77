"""KV caches held as mutable buffers, written in place at a start position.

Layout is [B, S, H, D] (sequence before heads), which is what ExecuTorch's `llama::update_cache` /
`llama::custom_sdpa` kernels expect; the SDPA kernel transposes a view. How a cache is written is the attention
kernel's business (common.nn.attention); which positions attention may read is the cache's (`mask`).
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


def causal_mask(n: int, window: int | None = None) -> torch.Tensor:
    """Additive [n, n] mask: row i (query at position i) reads positions 0..i of a flat cache, or with a sliding
    `window` the last `window` of them, i - window < j <= i (HF's sliding_window: the query's own included)."""
    mask = torch.full((n, n), float("-inf")).triu(1)
    return mask if window is None else mask + torch.full((n, n), float("-inf")).tril(-window)


class FlatKVCache(nn.Module):
    """Static cache of `max_context_len` positions; position p lives in slot p."""

    def __init__(self, max_context_len: int, n_kv_heads: int, head_dim: int, dtype: torch.dtype = torch.float32):
        super().__init__()
        self.max_context_len = max_context_len
        self.shape = (1, max_context_len, n_kv_heads, head_dim)
        self.dtype = dtype
        self.init_buffers()

    def init_buffers(self) -> None:
        """(Re)create the caches; also used after building the model on the meta device."""
        self.register_buffer("k_cache", torch.zeros(self.shape, dtype=self.dtype), persistent=False)
        self.register_buffer("v_cache", torch.zeros(self.shape, dtype=self.dtype), persistent=False)

    def update(self, start: int, k: torch.Tensor, v: torch.Tensor, kernel) -> tuple[torch.Tensor, torch.Tensor]:
        """Write k, v ([B, S, H, D]) at `start` (see start_position) with `kernel`; return what attention reads."""
        kernel.write_cache(self.k_cache, start, k)
        kernel.write_cache(self.v_cache, start, v)
        return self.k_cache, self.v_cache

    @staticmethod
    def mask(causal: torch.Tensor, start: int, seq_len: int) -> torch.Tensor:
        """Rows start..start+seq_len of the model's one `causal_mask` table: what those queries may read."""
        return causal.narrow(0, start, seq_len)

    def reset(self) -> None:
        self.k_cache.zero_()
        self.v_cache.zero_()
