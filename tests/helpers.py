"""Helpers shared by every model package's tests: logits over a KV-cached run, greedy runs, CLI output."""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Callable

import torch

from common.runtime import generate, prefill
from common.sampler import Sampler

# Tokenizer parity sample: scripts, emoji, rare planes, code, whitespace, digits, combining marks, special tokens.
MULTILINGUAL = [
    "Hello, world! How are you doing today?",
    "Café crème, naïve façade, où est l'hôtel ? À bientôt.",
    "Größenwahn: Straße, übermäßig schön.",
    "你好，世界！今天天气很好。",
    "こんにちは、世界。カタカナとひらがな、漢字。",
    "한국어 텍스트와 ไทย และ हिन्दी पाठ",
    "Привет, мир! Как дела?",
    "مرحبا بالعالم! كيف حالك؟",
    "Emoji: 😀🎉👍🏽 🇫🇷 ❤️ 🧑‍💻",
    "Rare: 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 ꙮ 𓀀 ᚠᛇᚻ",
    "def f(x):\n\tif x > 0:\n\t\treturn x * 2\n    return -1\r\n",
    "   leading and trailing spaces   ",
    "\n\n  \t mixed whitespace \n",
    "Digits: 0 12 345 6789 3.14159 1,000,000 2024-01-01 ١٢٣ ½",
    "it's I'M we'RE they'll 'd 'S",
    "Combining: e\u0301 A\u030a \u212b \uf900 \u1100\u1161\u11a8",
    "<|im_start|>user\nspecial tokens<|im_end|>\n<|im_start|>assistant\n<|endoftext|>",
    "",
]


def cached_logits(model: torch.nn.Module, ids: list[int], prefill: int) -> torch.Tensor:
    """Eager logits at every position from a prefill of `prefill` tokens, then one token per call."""
    with torch.no_grad():
        out = [model(torch.tensor([ids[:prefill]]), torch.tensor([0]))[0]]
        out += [model(torch.tensor([[t]]), torch.tensor([pos]))[0] for pos, t in enumerate(ids[prefill:], prefill)]
    return torch.cat(out)


def step_logits(model, prompt: list[int], tokens: list[int]) -> torch.Tensor:
    """Last-position logits (PteModel or EagerModel) after a chunked prefill of `prompt`, then after each of `tokens`."""
    out = [prefill(model, prompt)]
    for pos, token in enumerate(tokens, len(prompt)):
        out.append(model.forward([token], pos))
    return torch.stack(out)


def kl_per_position(ref: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """KL(softmax(ref) || softmax(other)) in nats for each row of two [N, V] logit tensors."""
    ref_lp, other_lp = ref.double().log_softmax(-1), other.double().log_softmax(-1)
    return (ref_lp.exp() * (ref_lp - other_lp)).sum(-1)


def gguf_pte_fidelity(family, gguf: str, pte: str, n: int = 512) -> tuple[float, float, float]:
    """(mean KL, perplexity ratio, size ratio) of a `.pte` exported from `gguf` against the GGUF dequantized to fp32
    (eager, one shot), over the first `n` tokens of the bench's GPL-3 text, fed to the `.pte` one token per call
    (the decode path). Prints the figures."""
    from bench.corpus import corpus
    from common.pipeline import load_model
    from common.runtime import PteModel
    from common.tokenizer import load_tokenizer

    ids = load_tokenizer(gguf).encode(corpus()[1])[:n]
    model, _, _ = load_model(family, gguf, max_context_len=2 * n)
    with torch.no_grad():
        ref = model(torch.tensor([ids]), torch.tensor([0]))[0][:-1]
    program = PteModel(pte)
    got = torch.stack([program.forward([t], pos) for pos, t in enumerate(ids[:-1])])
    target = torch.tensor(ids[1:])

    def ppl(logits: torch.Tensor) -> float:
        return torch.exp(-logits.double().log_softmax(-1).gather(1, target[:, None]).mean()).item()

    kl = kl_per_position(ref, got).mean().item()
    ratio, size = ppl(got) / ppl(ref), os.path.getsize(pte) / os.path.getsize(gguf)
    print(f"{os.path.basename(gguf)} -> .pte: KL {kl:.4f}, perplexity {ppl(got):.3f} vs {ppl(ref):.3f} "
          f"({ratio:.3f}x), size {size:.3f}x the GGUF")
    return kl, ratio, size


def greedy_gaps(logits: torch.Tensor, tokens: list[int]) -> torch.Tensor:
    """For each row of [N, V] logits, how far the chosen token's logit is below the row's largest."""
    return logits.max(-1).values - logits[torch.arange(len(tokens)), torch.tensor(tokens)]


def greedy(model, prompt: list[int], steps: int) -> list[int]:
    """`steps` greedy tokens, ignoring stop tokens (random weights may emit one early)."""
    model.eos_ids = ()
    return generate(model, prompt, Sampler(), steps).tokens


def cli_stdout(call: Callable[[], int]) -> str:
    """Run a CLI body that must succeed; return what it printed on stdout."""
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert call() == 0
    return buf.getvalue()
