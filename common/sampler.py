"""Token sampling: greedy, temperature, top-k, top-p (nucleus), min-p, repetition penalty, seeded.

The C++ runners' sampler (runners/src/sampler.cpp) is the same algorithm step for step, with the same RNG
(SplitMix64), so a seed picks the same tokens in Python and C++ from the same logits:

1. repetition penalty on each distinct `seen` token, once (float32): a positive logit is divided by it, a negative
   one multiplied (HF's and llama.cpp's rule);
2. temperature 0: the first maximum;
3. p = exp((logit - max) / T) in float64, T applied in float32;
4. with top-k (fewer than the vocabulary), top-p or min-p: tokens sorted by p (descending, ties by id), then kept, each filter on what the one
   before kept (as transformers' warpers and llama.cpp's samplers do): the first k; the prefix whose preceding mass
   is below top_p times the kept mass (sums in sorted order); those with p >= min_p * p_max (at least one token);
5. u = SplitMix64's next 53 bits / 2^53; the pick is the first kept token whose running sum exceeds u * (their sum).
"""

from __future__ import annotations

import os
from collections.abc import Collection
from dataclasses import dataclass

import torch

MASK64 = (1 << 64) - 1


@dataclass(frozen=True)
class SamplerConfig:
    temperature: float = 0.0  # 0 = greedy
    top_k: int = 0  # 0 = off
    top_p: float = 1.0  # 1 = off
    seed: int | None = None  # None: a random seed
    min_p: float = 0.0  # 0 = off; keep tokens at least min_p times as likely as the likeliest
    repetition_penalty: float = 1.0  # 1 = off; > 1 discourages tokens already in the context

    def check(self) -> None:
        """A ValueError naming what is out of range."""
        if not self.temperature >= 0 or not 0 < self.top_p <= 1 or self.top_k < 0 or not 0 <= self.min_p <= 1 \
                or not self.repetition_penalty > 0:
            raise ValueError(f"invalid sampler settings {self} (temperature >= 0, 0 < top_p <= 1, top_k >= 0, "
                             "0 <= min_p <= 1, repetition_penalty > 0)")


class SplitMix64:
    """Steele, Lea & Flood's SplitMix64: the RNG both samplers share (64-bit state, one multiply-xorshift output)."""

    def __init__(self, seed: int):
        self.state = seed & MASK64

    def next(self) -> int:
        self.state = (self.state + 0x9E3779B97F4A7C15) & MASK64
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
        return z ^ (z >> 31)

    def uniform(self) -> float:
        """A float64 in [0, 1)."""
        return (self.next() >> 11) * 2.0**-53


def penalize(logits: torch.Tensor, seen: Collection[int], penalty: float) -> torch.Tensor:
    """`logits` [V] float32 with each distinct `seen` id penalized once (positive / penalty, negative * penalty)."""
    if penalty == 1 or not seen:
        return logits
    ids = torch.tensor(sorted({t for t in seen if 0 <= t < logits.numel()}), dtype=torch.long)
    picked = logits[ids]
    p = torch.tensor(penalty, dtype=torch.float32)
    out = logits.clone()
    out[ids] = torch.where(picked > 0, picked / p, picked * p)
    return out


class Sampler:
    """Picks the next token from a [V] logits vector; owns its RNG so runs are reproducible."""

    def __init__(self, cfg: SamplerConfig = SamplerConfig()):
        cfg.check()
        self.cfg = cfg
        self.rng = SplitMix64(cfg.seed if cfg.seed is not None else int.from_bytes(os.urandom(8), "little"))

    def __call__(self, logits: torch.Tensor, seen: Collection[int] = ()) -> int:
        """The next token; `seen`: the ids in the context so far (prompt and generated), for the repetition penalty."""
        cfg = self.cfg
        logits = penalize(logits.float().reshape(-1), seen, cfg.repetition_penalty)
        if cfg.temperature == 0:
            return int(logits.argmax())
        t = torch.tensor(cfg.temperature, dtype=torch.float32)
        p = ((logits - logits.max()) / t).double().exp()
        if not (0 < cfg.top_k < p.numel() or cfg.top_p < 1 or cfg.min_p > 0):  # every token, in vocabulary order
            return self._draw(p, torch.arange(p.numel()))
        probs, idx = p.sort(descending=True, stable=True)
        keep = min(cfg.top_k or probs.numel(), probs.numel())
        if cfg.top_p < 1:  # the prefix whose preceding mass is below top_p (the token crossing it included)
            cum = probs[:keep].cumsum(0)
            before = torch.cat([cum.new_zeros(1), cum[:-1]])
            keep = max(int((before / cum[-1] < cfg.top_p).sum()), 1)
        if cfg.min_p > 0:
            keep = max(min(keep, int((probs[:keep] >= cfg.min_p * probs[0]).sum())), 1)
        return self._draw(probs[:keep], idx[:keep])

    def _draw(self, probs: torch.Tensor, ids: torch.Tensor) -> int:
        """One of `ids` with weights `probs` (float64): the first whose running sum exceeds u * (their sum)."""
        cum = probs.cumsum(0)
        r = self.rng.uniform() * float(cum[-1])
        i = int(torch.searchsorted(cum, torch.tensor([r], dtype=cum.dtype), right=True))
        return int(ids[min(i, ids.numel() - 1)])
