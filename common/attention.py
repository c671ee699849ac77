"""Grouped-query attention over a KV cache: PyTorch SDPA or ExecuTorch's llama custom ops."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from common.config import ModelConfig
from common.kv_cache import KVCache
from common.layers import RMSNorm, fuse_linears
from common.rope import apply_rope


class Attention(nn.Module):
    """Module names follow HF (`q_proj`, `k_norm`, ...) so HF state dicts load unchanged."""

    def __init__(self, cfg: ModelConfig, max_context_len: int, use_custom_ops: bool = False):
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
        self.use_custom_ops = use_custom_ops
        bias = cfg.attention_bias
        self.q_proj = nn.Linear(cfg.dim, cfg.n_heads * cfg.head_dim, bias=bias)
        self.k_proj = nn.Linear(cfg.dim, cfg.n_kv_heads * cfg.head_dim, bias=bias)
        self.v_proj = nn.Linear(cfg.dim, cfg.n_kv_heads * cfg.head_dim, bias=bias)
        self.o_proj = nn.Linear(cfg.n_heads * cfg.head_dim, cfg.dim, bias=False)
        if cfg.qk_norm:
            self.q_norm = RMSNorm(cfg.head_dim, cfg.norm_eps)
            self.k_norm = RMSNorm(cfg.head_dim, cfg.norm_eps)
        self.kv_cache = KVCache(max_context_len, cfg.n_kv_heads, cfg.head_dim)

    def fuse(self) -> None:
        """q_proj + k_proj + v_proj -> one qkv_proj (see common.layers.fuse_linears)."""
        self.qkv_proj = fuse_linears(self.q_proj, self.k_proj, self.v_proj)
        del self.q_proj, self.k_proj, self.v_proj

    def _project(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if hasattr(self, "qkv_proj"):
            q_dim, kv_dim = self.n_heads * self.head_dim, self.n_kv_heads * self.head_dim
            qkv = self.qkv_proj(x)
            return qkv[..., :q_dim], qkv[..., q_dim : q_dim + kv_dim], qkv[..., q_dim + kv_dim :]
        return self.q_proj(x), self.k_proj(x), self.v_proj(x)

    def forward(
        self,
        x: torch.Tensor,
        start: int,
        cos: torch.Tensor,
        sin: torch.Tensor,
        rot: torch.Tensor,
        mask: torch.Tensor | None,
    ) -> torch.Tensor:
        """x: [B, S, dim]; start: first position (a SymInt when exported); cos/sin: [S, 1, head_dim]; rot: rotate-half matrix; mask: [S, max_context_len] additive (SDPA path)."""
        bsz = x.shape[0]
        # -1 rather than seq_len: XNNPACK delegates a reshape with one inferred dim, not a symbolic one
        q, k, v = self._project(x)
        q = q.reshape(bsz, -1, self.n_heads, self.head_dim)
        k = k.reshape(bsz, -1, self.n_kv_heads, self.head_dim)
        v = v.reshape(bsz, -1, self.n_kv_heads, self.head_dim)
        if hasattr(self, "q_norm"):
            q, k = self.q_norm(q), self.k_norm(k)
        q, k = apply_rope(q, cos, sin, rot), apply_rope(k, cos, sin, rot)
        k_all, v_all = self.kv_cache.update(start, k, v, self.use_custom_ops)
        if self.use_custom_ops:
            out = torch.ops.llama.custom_sdpa(q, k_all, v_all, start, None, 0, True)
        else:
            rep = self.n_heads // self.n_kv_heads
            q = q.transpose(1, 2)
            k_all = k_all.transpose(1, 2).repeat_interleave(rep, dim=1)
            v_all = v_all.transpose(1, 2).repeat_interleave(rep, dim=1)
            out = F.scaled_dot_product_attention(q, k_all, v_all, attn_mask=mask).transpose(1, 2)
        return self.o_proj(out.reshape(bsz, -1, self.n_heads * self.head_dim))
