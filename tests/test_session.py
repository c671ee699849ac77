"""common.session.ChatSession (--interactive): each turn's tokens equal a from-scratch run of the whole conversation,
and a turn prefills only what the cache lacks (counted at the model's forward calls)."""

from __future__ import annotations

import copy

import pytest
import torch

from common.runtime import EagerModel, generate
from common.sampler import Sampler
from common.session import ChatSession


class Counting(EagerModel):
    """An EagerModel that records each forward call's (token count, start position)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.calls: list[tuple[int, int]] = []

    def forward(self, tokens: list[int], start: int) -> torch.Tensor:
        self.calls.append((len(tokens), start))
        return super().forward(tokens, start)


@pytest.fixture(scope="module")
def tokenizer(smollm2_gguf: str):
    from common.tokenizer import load_tokenizer

    return load_tokenizer(smollm2_gguf)


def tiny(tokenizer, context: int, seq_len: int = 8) -> Counting:
    """A random 2-layer llama with SmolLM2's vocabulary, prefilling `seq_len` tokens per call."""
    from common.decoder import ModelConfig, Transformer

    cfg = ModelConfig(vocab_size=tokenizer.vocab_size, dim=64, n_layers=2, n_heads=4, n_kv_heads=2, hidden_dim=128,
                      head_dim=16, rope_theta=1e4, tie_embeddings=False, bos_id=tokenizer.bos_id,
                      eos_ids=tokenizer.eos_ids)
    torch.manual_seed(0)
    model = Transformer(cfg, context, last_logits_only=True, max_seq_len=seq_len).eval()
    with torch.no_grad():
        model.lm_head.weight.mul_(8.0)  # clear greedy margins
    return Counting(model, tuple(tokenizer.eos_ids))


def from_scratch(model: Counting, session: ChatSession, n: int) -> tuple[list[int], list[int]]:
    """(the ids of the conversation so far without its last reply, the tokens a fresh run generates from them)."""
    ids = session.render(session.messages[:-1])
    ref = Counting(copy.deepcopy(model.model), model.eos_ids, model.max_seq_len)
    return ids, generate(ref, ids, Sampler(), n).tokens


def test_turns_equal_from_scratch_runs_and_overflow_starts_fresh(tokenizer) -> None:
    model = tiny(tokenizer, context=96)
    session = ChatSession(model, tokenizer, Sampler(), max_new_tokens=10)
    fresh = []
    for user in ["Hi there", "What is two plus two?", "Thanks!", "One more question.", "Bye now."]:
        turn = session.turn(user)
        ids, expected = from_scratch(model, session, 10)
        assert turn.generation.tokens == expected, user
        assert turn.reused + turn.prefilled == len(ids) and len(ids) < model.max_context_len
        fresh.append(turn.fresh_context)
        if turn.fresh_context:  # the conversation outgrew 96 positions: this message alone (after the system one)
            assert turn.reused == 0 and [m["role"] for m in session.messages] == ["user", "assistant"]
    assert any(fresh) and not fresh[0]


def test_ctrl_c_ends_the_reply_not_the_chat(tokenizer) -> None:
    model = tiny(tokenizer, context=256)
    session = ChatSession(model, tokenizer, Sampler(), max_new_tokens=10)

    def stop_at_third(token: int, seen=[]) -> None:  # noqa: B006  the count lives with the callback
        seen.append(token)
        if len(seen) == 3:
            raise KeyboardInterrupt

    first = session.turn("Tell me a long story.", stop_at_third)
    assert first.generation.interrupted and len(first.generation.tokens) == 3
    second = session.turn("Go on.")
    _, expected = from_scratch(model, session, 10)
    assert second.generation.tokens == expected and not second.generation.interrupted


@pytest.mark.slow
def test_smollm2_second_turn_prefills_only_its_own_tokens(smollm2_gguf: str, tokenizer) -> None:
    from common.pipeline import load_model
    from models.llama3.model import FAMILY

    transformer, cfg, _ = load_model(FAMILY, smollm2_gguf, max_context_len=512)
    model = Counting(transformer, tuple(cfg.eos_ids), max_seq_len=64)
    session = ChatSession(model, tokenizer, Sampler(), max_new_tokens=24)
    cached = []
    for user in ["What is the capital of France?", "And of Italy?", "Which of the two is bigger?"]:
        model.calls.clear()
        turn = session.turn(user)
        ids, expected = from_scratch(model, session, 24)
        assert turn.generation.tokens == expected, user
        # what this turn fed before decoding: the ids after everything the cache held (the previous prompt and reply)
        prefill = [(n, start) for n, start in model.calls if n > 1 or start < len(ids)]
        assert sum(n for n, _ in prefill) == len(ids) - len(cached) and prefill[0][1] == len(cached), user
        assert ids[: len(cached)] == cached  # the reply re-encoded to the tokens generated
        cached = ids + turn.generation.tokens[:-1]
    assert "Paris" in session.messages[1]["content"]
