"""Symmetric group quantization of weights: the scale methods a recipe rule can name.

- `lsq`: per group, the scale minimising the squared rounding error over a grid of candidates (the search
  llama.cpp's quantizers do). On SmolLM2 it takes 8da4w perplexity on the bench text from 32.5 (absmax) to ~26.
- `minmax`: absmax / ((qmax - qmin) / 2), torchao's symmetric choose_qparams.
- `hqq`: torchao's half-quadratic scale-only optimisation (what `IntxChooseQParamsAlgorithm.HQQ_SCALE_ONLY` runs).

`bf16=True` rounds scales as XNNPACK stores 8da4w scales, so eager computes what the .pte runs.
"""

from __future__ import annotations

import torch

SCALE_METHODS = ("lsq", "minmax", "hqq")

# Candidate scales per group for `lsq`: absmax * f / d.
_FIT_FACTORS = torch.linspace(0.5, 1.0, 21)
# `lsq` searches this many groups at a time: its ~10 temporaries per candidate then stay in cache (a few MiB) instead
# of being whole-weight buffers that the allocator maps and unmaps 42 times per weight (most of the time was page faults).
_LSQ_ROWS = 8192


def _lsq(groups: torch.Tensor, qmin: int, qmax: int, bf16: bool) -> torch.Tensor:
    amax = groups.abs().amax(-1, keepdim=True).clamp(min=1e-9)
    best_s, best_err = None, None
    for d in (qmax, qmax + 1):
        for f in _FIT_FACTORS:
            s = amax * (f / d)
            if bf16:
                s = s.to(torch.bfloat16).float()
            err = ((groups / s).round().clamp(qmin, qmax) * s - groups).square().sum(-1, keepdim=True)
            if best_s is None:
                best_s, best_err = s, err
            else:
                better = err < best_err
                best_s, best_err = torch.where(better, s, best_s), torch.where(better, err, best_err)
    return best_s


def _hqq(groups: torch.Tensor, qmin: int, qmax: int) -> torch.Tensor:
    from torchao.quantization.quant_primitives import _choose_qparams_and_quantize_scale_only_hqq

    g = groups.shape[-1]
    _, scale = _choose_qparams_and_quantize_scale_only_hqq(groups.reshape(-1, g), [1, g], qmin, qmax)
    return scale.reshape(*groups.shape[:-1], 1).float()


def quantize_groups(
    groups: torch.Tensor, bits: int, bf16: bool = False, method: str = "lsq"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric `bits`-bit quantization of groups [..., group_size]: (int8 values, scales [..., 1])."""
    qmin, qmax = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    if method == "lsq":
        flat = groups.reshape(-1, groups.shape[-1])
        s = torch.cat([_lsq(chunk, qmin, qmax, bf16) for chunk in flat.split(_LSQ_ROWS)]).reshape(*groups.shape[:-1], 1)
    elif method == "minmax":
        s = groups.abs().amax(-1, keepdim=True).clamp(min=1e-9) / ((qmax - qmin) / 2)
    elif method == "hqq":
        s = _hqq(groups, qmin, qmax).clamp(min=1e-9)
    else:
        raise ValueError(f"scale method {method!r}: expected one of {SCALE_METHODS}")
    if bf16:
        s = s.to(torch.bfloat16).float()
    return (groups / s).round().clamp(qmin, qmax).to(torch.int8), s
