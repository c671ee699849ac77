"""Grouped-query attention over a KV cache, with the attention kernel as a strategy object.

`SDPA` is plain PyTorch (exports to any backend, runs eagerly anywhere); `CustomOpsKernel` writes the cache with
ExecuTorch's `llama::update_cache` and attends with `zoo::custom_sdpa`, ExecuTorch's `llama::custom_sdpa` under the
zoo's name so the runtimes run the zoo's faster kernel (common/nn/sdpa_op.py; faster than plain SDPA: the kernel
reads only positions < start + S, and needs no mask). A model takes one kernel and hands it to every attention
layer.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from common.nn.linear import fuse_linears
from common.nn.norm import RMSNorm
from common.nn.rope import apply_rope


@dataclass(frozen=True)
class SdpaKernel:
    """torch.nn.functional.scaled_dot_product_attention over the whole cache with an additive mask."""

    name: str = "sdpa"
    needs_mask: bool = True
    writes_cache_in_op: bool = False  # the cache is written by an in-place copy_ in the graph

    def write_cache(self, cache: torch.Tensor, start: int, x: torch.Tensor) -> None:
        cache.narrow(1, start, x.size(1)).copy_(x)

    def write_cache_at(self, cache: torch.Tensor, start: int, slots: torch.Tensor, x: torch.Tensor) -> None:
        """Write x [1, S, H, D] to the cache's slots [S] (a ring). index_put, not index_copy: the pip runtime has
        a kernel for the first only."""
        cache.index_put_((torch.zeros_like(slots), slots), x[0].to(cache.dtype))

    def attend(self, q, k, v, start: int, mask: torch.Tensor | None, scale: float | None = None) -> torch.Tensor:
        """q: [B, S, Hq, D], k/v: [B, N, Hkv, D] -> [B, S, Hq, D]."""
        rep = q.size(2) // k.size(2)
        k = k.to(q.dtype).transpose(1, 2).repeat_interleave(rep, dim=1)  # a float16 cache: widened, as the kernel does
        v = v.to(q.dtype).transpose(1, 2).repeat_interleave(rep, dim=1)
        out = F.scaled_dot_product_attention(q.transpose(1, 2), k, v, attn_mask=mask, scale=scale)
        return out.transpose(1, 2)


@dataclass(frozen=True)
class CustomOpsKernel:
    """ExecuTorch's llama:: cache ops and the zoo's custom_sdpa (kernels: common/kernels.py "llama" and "sdpa")."""

    name: str = "custom_ops"
    needs_mask: bool = False
    writes_cache_in_op: bool = True  # llama::update_cache

    def __post_init__(self) -> None:
        import common.nn.sdpa_op  # noqa: F401  registers llama::* and zoo::custom_sdpa for eager and export

    @staticmethod
    def _writer(cache: torch.Tensor, x: torch.Tensor):
        """ExecuTorch's cache ops; for a float16 cache the zoo's, which round as they copy (float32 caches' programs
        keep ExecuTorch's names)."""
        return torch.ops.llama if x.dtype == cache.dtype else torch.ops.zoo

    def write_cache(self, cache: torch.Tensor, start: int, x: torch.Tensor) -> None:
        self._writer(cache, x).update_cache(x, cache, start)

    def write_cache_at(self, cache: torch.Tensor, start: int, slots: torch.Tensor, x: torch.Tensor) -> None:
        self._writer(cache, x).update_cache_with_indices(x, cache, start, slots.unsqueeze(0))

    def attend(self, q, k, v, start: int, mask: torch.Tensor | None, scale: float | None = None) -> torch.Tensor:
        """With a mask [S, cache slots] the kernel reads every slot and the mask alone decides (a ring)."""
        extra = () if scale is None else (scale,)
        if mask is not None:
            return torch.ops.zoo.custom_sdpa(q, k, v, start, mask, 0.0, False, *extra)
        return torch.ops.zoo.custom_sdpa(q, k, v, start, None, 0.0, True, *extra)


SDPA = SdpaKernel()


def attention_kernel(custom_ops: bool):
    """The kernel a `--custom-ops/--no-custom-ops` flag names."""
    return CustomOpsKernel() if custom_ops else SDPA


class Attention(nn.Module):
    """GQA with optional per-head q/k RMSNorm (Qwen3, Gemma). Module names follow HF so HF state dicts load unchanged.

    Gemma's options: `norm_offset` 1 for its (1 + w) q/k norms (Gemma 3), `v_norm` a weightless RMSNorm on v,
    `k_eq_v` no v_proj (V is the k_proj output before k's norm and RoPE: Gemma 4's full layers), `scale` the
    attention scale (None: 1/sqrt(head_dim))."""

    def __init__(
        self,
        dim: int,
        n_heads: int,
        n_kv_heads: int,
        head_dim: int,
        cache: nn.Module,
        kernel,
        bias: bool = False,
        qk_norm_eps: float | None = None,
        norm_offset: float = 0.0,
        v_norm: bool = False,
        k_eq_v: bool = False,
        scale: float | None = None,
    ):
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = n_heads, n_kv_heads, head_dim
        self.kernel, self.scale = kernel, scale
        self.q_proj = nn.Linear(dim, n_heads * head_dim, bias=bias)
        self.k_proj = nn.Linear(dim, n_kv_heads * head_dim, bias=bias)
        self.v_proj = None if k_eq_v else nn.Linear(dim, n_kv_heads * head_dim, bias=bias)
        self.o_proj = nn.Linear(n_heads * head_dim, dim, bias=False)
        norm = (lambda: RMSNorm(head_dim, qk_norm_eps, norm_offset)) if qk_norm_eps is not None else (lambda: None)
        self.q_norm, self.k_norm = norm(), norm()
        self.v_norm = RMSNorm(head_dim, qk_norm_eps or 1e-6, with_weight=False) if v_norm else None
        self.qkv_proj: nn.Linear | None = None
        self.kv_cache = cache

    def fuse(self) -> None:
        """q_proj + k_proj (+ v_proj) -> one qkv_proj (see common.nn.linear.fuse_linears)."""
        self.qkv_proj = fuse_linears(*(p for p in (self.q_proj, self.k_proj, self.v_proj) if p is not None))
        del self.q_proj, self.k_proj, self.v_proj

    def _project(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if self.qkv_proj is None:
            k = self.k_proj(x)
            return self.q_proj(x), k, k if self.v_proj is None else self.v_proj(x)
        q_dim, kv_dim = self.n_heads * self.head_dim, self.n_kv_heads * self.head_dim
        qkv = self.qkv_proj(x)
        k = qkv[..., q_dim : q_dim + kv_dim]
        return qkv[..., :q_dim], k, qkv[..., q_dim + kv_dim :] if qkv.shape[-1] > q_dim + kv_dim else k

    def forward(
        self,
        x: torch.Tensor,
        start: int,
        cos: torch.Tensor,
        sin: torch.Tensor,
        rot: torch.Tensor | None,
        mask: torch.Tensor | None,
        key_rope: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """x: [B, S, dim]; start: first position (a SymInt when exported); cos/sin: [S, 1, head_dim]; rot: the
        rotate-half matrix or None; mask: what the cache allows these queries to read (None: causal by position).
        `key_rope` (an attention sink's cache): keys are cached before RoPE and every slot is rotated by these
        (cos, sin) [slots, 1, head_dim] after the update."""
        bsz = x.shape[0]
        # -1 rather than seq_len: XNNPACK delegates a reshape with one inferred dim, not a symbolic one
        q, k, v = self._project(x)
        q = q.reshape(bsz, -1, self.n_heads, self.head_dim)
        k = k.reshape(bsz, -1, self.n_kv_heads, self.head_dim)
        v = v.reshape(bsz, -1, self.n_kv_heads, self.head_dim)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        if self.v_norm is not None:
            v = self.v_norm(v)
        q = apply_rope(q, cos, sin, rot)
        if key_rope is None:
            k = apply_rope(k, cos, sin, rot)
        k_all, v_all = self.kv_cache.update(start, k, v, self.kernel)
        if key_rope is not None:
            k_all = apply_rope(k_all, *key_rope, rot)
        out = self.kernel.attend(q, k_all, v_all, start, mask, self.scale)
        return self.o_proj(out.reshape(bsz, -1, self.n_heads * self.head_dim))
