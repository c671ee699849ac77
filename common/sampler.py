"""Token sampling: greedy, temperature, top-k, top-p (nucleus), seeded."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class SamplerConfig:
    temperature: float = 0.0  # 0 = greedy
    top_k: int = 0  # 0 = off
    top_p: float = 1.0  # 1 = off
    seed: int | None = None


class Sampler:
    """Picks the next token from a [V] logits vector; owns its RNG so runs are reproducible."""

    def __init__(self, cfg: SamplerConfig = SamplerConfig()):
        if cfg.temperature < 0 or not 0 < cfg.top_p <= 1 or cfg.top_k < 0:
            raise ValueError(f"invalid sampler settings {cfg} (temperature >= 0, 0 < top_p <= 1, top_k >= 0)")
        self.cfg = cfg
        self.generator = torch.Generator()
        self.generator.manual_seed(cfg.seed if cfg.seed is not None else torch.seed())

    def __call__(self, logits: torch.Tensor) -> int:
        logits = logits.float().reshape(-1)
        if self.cfg.temperature == 0:
            return int(logits.argmax())
        probs = torch.softmax(logits / self.cfg.temperature, dim=-1)
        probs, idx = probs.sort(descending=True)
        keep = torch.ones_like(probs, dtype=torch.bool)
        if self.cfg.top_k:
            keep[self.cfg.top_k :] = False
        if self.cfg.top_p < 1:
            # keep the smallest prefix whose mass reaches top_p (the token crossing it included)
            keep &= (probs.cumsum(0) - probs) < self.cfg.top_p
        probs = torch.where(keep, probs, torch.zeros_like(probs))
        choice = torch.multinomial(probs / probs.sum(), 1, generator=self.generator)
        return int(idx[choice])
