"""Rotary position embeddings in the HF (rotate-half) layout: default, Llama 3 scaled, and partial rotary."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class RopeScaling:
    """Llama 3 style frequency scaling (rope_type "llama3")."""

    factor: float = 8.0
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0
    original_max_position_embeddings: int = 8192


def inv_frequencies(
    head_dim: int,
    theta: float,
    scaling: RopeScaling | None = None,
    freq_factors: tuple[float, ...] | None = None,
    rotary_dim: int | None = None,
) -> torch.Tensor:
    """Inverse frequencies [head_dim // 2].

    Llama 3.1 scaling comes as HF `scaling` or as llama.cpp's per-pair `freq_factors`. Partial rotary
    ("proportional": exponents over the full head_dim, only the first rotary_dim // 2 pairs rotate) gives the
    other pairs frequency 0, so their cos is 1 and sin 0: those dims pass through unrotated."""
    inv = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim))
    if rotary_dim is not None and rotary_dim < head_dim:
        inv[rotary_dim // 2 :] = 0.0
    if freq_factors is not None:
        return inv / torch.tensor(freq_factors, dtype=torch.float32)
    if scaling is None:
        return inv
    low_wavelen = scaling.original_max_position_embeddings / scaling.low_freq_factor
    high_wavelen = scaling.original_max_position_embeddings / scaling.high_freq_factor
    wavelen = 2 * math.pi / inv
    scaled = torch.where(wavelen > low_wavelen, inv / scaling.factor, inv)
    smooth = (scaling.original_max_position_embeddings / wavelen - scaling.low_freq_factor) / (
        scaling.high_freq_factor - scaling.low_freq_factor
    )
    smoothed = (1 - smooth) * scaled / scaling.factor + smooth * scaled
    medium = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
    return torch.where(medium, smoothed, scaled)


def rope_tables(max_len: int, inv_freq: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin tables of shape [max_len, 1, head_dim] (frequencies repeated for both halves)."""
    return rope_at(torch.arange(max_len), inv_freq)


def rope_at(positions: torch.Tensor, inv_freq: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin [S, 1, head_dim] at `positions` [S]: rope_tables' rows, computed (for positions past any table;
    fp32 angles, as transformers computes them)."""
    freqs = positions.to(torch.float32)[:, None] * inv_freq
    emb = torch.cat((freqs, freqs), dim=-1)[:, None, :]
    return emb.cos(), emb.sin()


def rotate_half_matrix(head_dim: int) -> torch.Tensor:
    """W with `x @ W.T == cat(-x2, x1)`: rotate-half as a matmul (exact: one ±1 per row)."""
    half = head_dim // 2
    w = torch.zeros(head_dim, head_dim)
    w[torch.arange(half), torch.arange(half) + half] = -1.0
    w[torch.arange(half) + half, torch.arange(half)] = 1.0
    return w


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, rot: torch.Tensor | None = None) -> torch.Tensor:
    """x: [B, S, H, D]; cos/sin: [S, 1, D] (broadcast over batch and heads); rot: rotate_half_matrix(D) or None."""
    if rot is not None:
        return x * cos + F.linear(x, rot) * sin
    half = x.shape[-1] // 2
    return x * cos + torch.cat((-x[..., half:], x[..., :half]), dim=-1) * sin
