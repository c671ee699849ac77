"""A multi-turn chat whose KV cache persists between turns (the inference CLIs' --interactive).

Each turn renders the whole conversation with the model's chat template, as a from-scratch run would, and prefills
only what the cache does not already hold: the tokens after the longest common prefix with what was fed before.
When the reply re-encodes to the tokens that were generated (the usual case), that is the new turn alone. So the
tokens equal running each full conversation from scratch, at the cost of one turn. A conversation that outgrows
the context starts a fresh one from the system message and the last user message, unless the model has an attention
sink (export --attention-sink): then it runs on, attending to the sink and the recent window. Rewinding the cache (when the
reply re-encodes differently) is exact for flat caches, and for ring caches up to max_seq_len - 1 positions back.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from common.errors import UserError
from common.runtime import EagerModel, Generation, PteModel, generate
from common.sampler import Sampler


def common_prefix(a: list[int], b: list[int]) -> int:
    """How many leading ids `a` and `b` share."""
    n = min(len(a), len(b))
    return next((i for i in range(n) if a[i] != b[i]), n)


@dataclass
class Turn:
    reply: str
    generation: Generation
    prefilled: int  # prompt tokens this turn fed (the rest came from the cache)
    reused: int  # prompt tokens already in the cache
    fresh_context: bool  # the conversation outgrew the context: earlier turns were dropped


@dataclass
class ChatSession:
    model: PteModel | EagerModel
    tokenizer: object  # common.tokenizer.Tokenizer
    sampler: Sampler
    system: str | None = None
    enable_thinking: bool | None = None
    max_new_tokens: int = 256
    messages: list[dict] = field(default_factory=list)
    cached: list[int] = field(default_factory=list)  # ids whose keys/values the cache holds at positions 0..

    def render(self, messages: list[dict]) -> list[int]:
        """The conversation's ids, ending in the template's generation prompt."""
        head = [{"role": "system", "content": self.system}] if self.system else []
        extra = {} if self.enable_thinking is None else {"enable_thinking": self.enable_thinking}
        text = self.tokenizer.apply_chat_template(head + messages, add_generation_prompt=True, **extra)
        return self.tokenizer.encode(text, add_bos=False)

    def turn(self, user: str, on_token: Callable[[int], None] | None = None) -> Turn:
        """Answer `user`, continuing the conversation; Ctrl-C ends the reply (kept, as far as it went)."""
        messages = [*self.messages, {"role": "user", "content": user}]
        ids, fresh = self.render(messages), False
        rotates = bool(getattr(self.model, "attention_sink", ()))
        if len(ids) >= self.model.max_context_len and not rotates:  # start over from the last user message
            messages, fresh = messages[-1:], True
            ids, self.cached = self.render(messages), []
            if len(ids) >= self.model.max_context_len:
                raise UserError(f"this message is {len(ids)} tokens with the chat template, and the context holds "
                                f"{self.model.max_context_len}: shorten it")
        keep = min(common_prefix(self.cached, ids), len(ids) - 1)  # at least one token fed, for its logits
        if len(self.cached) - keep >= self.model.max_seq_len:
            # a sliding-window layer's ring (common/nn/kv_cache.ring_size) keeps max_seq_len - 1 positions beyond its
            # window: rewinding further may have overwritten what the window still reads, so start over
            keep = 0
        gen = generate(self.model, ids[keep:], self.sampler, self.max_new_tokens, on_token, start=keep,
                       seen=set(ids), interruptible=True)
        reply_ids = [t for t in gen.tokens if t not in self.model.eos_ids]
        reply = self.tokenizer.decode(reply_ids)
        self.messages = [*messages, {"role": "assistant", "content": reply}]
        self.cached = ids + gen.tokens[:-1]  # the last token was sampled, never fed
        return Turn(reply, gen, len(ids) - keep, keep, fresh)
