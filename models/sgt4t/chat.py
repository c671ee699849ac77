"""`sgt(messages)`'s first half: the base model's chat template applied, and which tokens are message content.

noise_mask is True on tokens that carry any character of a message's content and False on the template's
scaffolding (BOS, role headers, end-of-turn, the generation prompt). A token that straddles content and
scaffolding is noised: it carries user text. `transform_all_tokens` noises every token.
"""

from __future__ import annotations

from common.errors import UserError


def content_spans(text: str, messages: list[dict]) -> list[tuple[int, int]]:
    """[start, end) character spans of each message's content in the rendered `text`, found in order."""
    spans, cursor = [], 0
    for m in messages:
        content = m.get("content") or ""
        if not isinstance(content, str):
            raise UserError("messages: content must be a string")
        if not content:
            continue
        at = text.find(content, cursor)
        if at < 0:  # a template that rewrites content (strips it, say): fall back to the stripped text
            content = content.strip()
            at = text.find(content, cursor)
        if at < 0:
            raise UserError(f"chat template: message content {content[:40]!r} does not appear in the rendered prompt")
        spans.append((at, at + len(content)))
        cursor = at + len(content)
    return spans


def encode_chat(tokenizer, messages: list[dict], add_generation_prompt: bool = True,
                transform_all_tokens: bool = False) -> tuple[list[int], list[bool]]:
    """(token ids as the zoo's chat CLIs encode the conversation, noise mask per token)."""
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=add_generation_prompt)
    enc = tokenizer.backend.encode(text, add_special_tokens=False)
    if transform_all_tokens:
        return list(enc.ids), [True] * len(enc.ids)
    spans = content_spans(text, messages)
    # token [s, e) overlaps content [a, b)
    mask = [s < e and any(s < b and e > a for a, b in spans) for s, e in enc.offsets]
    return list(enc.ids), mask
