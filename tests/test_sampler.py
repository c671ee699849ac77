"""common.sampler against transformers' logits processors (the reference for what each setting keeps and how it
weighs), and its RNG against SplitMix64's published outputs. Python-vs-C++ token equality is in
runners/tests/test_cpp_runner.py."""

from __future__ import annotations

import pytest
import torch

from common.sampler import Sampler, SamplerConfig, SplitMix64, penalize

DRAWS = 6000


def test_splitmix64_matches_the_reference_sequence() -> None:
    # the first outputs for seed 1234567, as Vigna's splitmix64.c prints them (also the Rust rand_xoshiro test vector)
    rng = SplitMix64(1234567)
    assert [rng.next() for _ in range(5)] == [6457827717110365317, 3203168211198807973, 9817491932198370423,
                                              4593380528125082431, 16408922859458223821]
    u = [SplitMix64(s).uniform() for s in range(1000)]
    assert all(0 <= x < 1 for x in u) and 0.45 < sum(u) / len(u) < 0.55


def test_repetition_penalty_matches_transformers() -> None:
    from transformers.generation.logits_process import RepetitionPenaltyLogitsProcessor

    torch.manual_seed(0)
    logits = torch.randn(50) * 3
    context = [3, 7, 7, 11, 3, 49, 0, 20]  # repeats count once
    for penalty in (1.3, 0.8):
        expected = RepetitionPenaltyLogitsProcessor(penalty)(torch.tensor([context]), logits[None].clone())[0]
        assert torch.equal(penalize(logits, set(context), penalty), expected)
    assert torch.equal(penalize(logits, set(context), 1.0), logits)
    # greedy with a penalty: the repeated favourite gives way
    favourite = int(logits.argmax())
    assert Sampler(SamplerConfig(repetition_penalty=100.0))(logits, {favourite}) != favourite


def hf_distribution(logits: torch.Tensor, temperature: float, top_k: int, top_p: float, min_p: float) -> torch.Tensor:
    """The next-token distribution transformers' warpers give (temperature, then top-k, top-p, min-p)."""
    from transformers.generation.logits_process import (
        MinPLogitsWarper,
        TemperatureLogitsWarper,
        TopKLogitsWarper,
        TopPLogitsWarper,
    )

    scores, ids = logits[None].clone(), torch.zeros(1, 1, dtype=torch.long)
    warpers = [TemperatureLogitsWarper(temperature)]
    warpers += [TopKLogitsWarper(top_k)] if top_k else []
    warpers += [TopPLogitsWarper(top_p)] if top_p < 1 else []
    warpers += [MinPLogitsWarper(min_p)] if min_p > 0 else []
    for w in warpers:
        scores = w(ids, scores)
    return scores[0].softmax(-1)


@pytest.mark.parametrize("temperature,top_k,top_p,min_p", [
    (1.0, 0, 1.0, 0.0), (0.7, 5, 1.0, 0.0), (1.0, 0, 0.8, 0.0), (1.3, 0, 1.0, 0.1), (0.9, 8, 0.9, 0.05),
])
def test_draws_follow_transformers_distribution(temperature: float, top_k: int, top_p: float, min_p: float) -> None:
    torch.manual_seed(1)
    logits = torch.randn(12) * 1.5
    expected = hf_distribution(logits, temperature, top_k, top_p, min_p)
    sampler = Sampler(SamplerConfig(temperature, top_k, top_p, seed=5, min_p=min_p))
    counts = torch.bincount(torch.tensor([sampler(logits) for _ in range(DRAWS)]), minlength=12).double()
    assert set(counts.nonzero().flatten().tolist()) <= set(expected.nonzero().flatten().tolist())  # never outside
    # 4 standard deviations of a binomial frequency at p = 0.5 over DRAWS draws: 0.026
    assert (counts / DRAWS - expected.double()).abs().max() < 4 * (0.25 / DRAWS) ** 0.5


def test_min_p_keeps_at_least_the_likeliest() -> None:
    logits = torch.tensor([5.0, 0.0, 0.0, 0.0])
    draws = Sampler(SamplerConfig(temperature=1.0, seed=0, min_p=1.0))
    assert {draws(logits) for _ in range(50)} == {0}


@pytest.mark.parametrize("bad", [dict(min_p=-0.1), dict(min_p=1.5), dict(repetition_penalty=0.0),
                                 dict(top_p=0.0), dict(top_k=-1)])
def test_invalid_settings_are_refused(bad: dict) -> None:
    with pytest.raises(ValueError):
        Sampler(SamplerConfig(temperature=1.0, **bad))
