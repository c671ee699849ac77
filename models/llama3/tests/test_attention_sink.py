"""Attention sink (export --attention-sink SINK,WINDOW; StreamingLLM): the plain model's numbers within the context,
generation past it in eager, the `.pte` and the C++ runner alike, and SmolLM2's perplexity past the context."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from common.decoder import ModelConfig, Transformer
from common.nn.attention import attention_kernel
from common.runtime import EagerModel, generate
from common.sampler import Sampler

SINK, WINDOW, SEQ = 4, 28, 8  # a context of 32


def all_logits(model, ids: list[int], chunk: int) -> torch.Tensor:
    """Logits at every position, `ids` fed `chunk` at a time from a fresh cache."""
    model.init_buffers()
    with torch.no_grad():
        return torch.cat([model(torch.tensor([ids[i:i + chunk]]), torch.tensor([i]))[0]
                          for i in range(0, len(ids), chunk)])


@pytest.mark.parametrize("custom_ops", [False, True], ids=["sdpa", "custom_ops"])
def test_within_the_context_a_sink_changes_nothing(custom_ops: bool) -> None:
    cfg = ModelConfig(vocab_size=100, dim=64, n_layers=2, n_heads=4, n_kv_heads=2, hidden_dim=128, head_dim=16)
    torch.manual_seed(0)
    plain = Transformer(cfg, SINK + WINDOW, attention_kernel(custom_ops), max_seq_len=SEQ).eval()
    sink = Transformer(dataclasses.replace(cfg, attention_sink=(SINK, WINDOW)), 1 << 16, attention_kernel(custom_ops),
                       max_seq_len=SEQ).eval()
    sink.load_state_dict(plain.state_dict())
    assert sink.max_context_len == SINK + WINDOW and sink.max_seq_len == SEQ
    ids = torch.randint(0, 100, (3 * (SINK + WINDOW),), generator=torch.Generator().manual_seed(1)).tolist()
    ref = all_logits(plain, ids[: SINK + WINDOW], SEQ)
    for chunk in (1, 3, SEQ):
        out = all_logits(sink, ids, chunk)  # runs on to 3x the context
        inside = (SINK + WINDOW) // chunk * chunk  # the chunks that end within the context
        assert (out[:inside] - ref[:inside]).abs().max() <= 1e-5, chunk
        assert torch.isfinite(out).all()
    # past the context, the chunk's last query sees the sinks where a token-by-token run does
    by_token, by_chunk = all_logits(sink, ids, 1), all_logits(sink, ids, SEQ)
    assert (by_token[SEQ - 1 :: SEQ] - by_chunk[SEQ - 1 :: SEQ]).abs().max() < 1e-2


@pytest.mark.slow
def test_pte_and_cpp_runner_run_past_the_context_like_eager(tiny, tmp_path) -> None:
    """The tiny llama exported --attention-sink 4,28 (fp32, custom ops): greedy 3x the context from a prompt longer
    than it, the same tokens from eager, the Python runtime and the C++ runner; the contract says so."""
    from common.cli import export_main, run_cli
    from common.pipeline import load_model
    from common.runtime import PteModel
    from models.llama3.model import FAMILY
    from runners.tests.conftest import cpp_greedy
    from tests.helpers import cli_stdout

    t = tiny["untied"]
    out = tmp_path / "model.pte"
    stdout = cli_stdout(lambda: run_cli(export_main(FAMILY), [
        "--checkpoint", t.dir, "--quantize", "fp32", "--attention-sink", f"{SINK},{WINDOW}", "--max-seq-len",
        str(SEQ), "--output", str(out)]))
    assert f"context {SINK + WINDOW}, attention sink {SINK} + window {WINDOW}" in stdout
    pte = PteModel(out)
    assert pte.attention_sink == (SINK, WINDOW) and pte.max_context_len == SINK + WINDOW
    prompt = t.tokenizer.encode("one two three four five six seven eight nine ten eleven twelve thirteen " * 3)
    assert len(prompt) > SINK + WINDOW
    n = 3 * (SINK + WINDOW)
    got = generate(pte, prompt, Sampler(), n, ignore_eos=True).tokens
    eager_model = load_model(FAMILY, t.dir, max_seq_len=SEQ, attention_sink=(SINK, WINDOW))[0]
    assert generate(EagerModel(eager_model, ()), prompt, Sampler(), n, ignore_eos=True).tokens == got
    assert len(got) == n and len(set(got)) > 3
    assert cpp_greedy("llama3", out, prompt, n, tmp_path) == got


@pytest.mark.slow
def test_smollm2_perplexity_past_the_context(smollm2_gguf: str) -> None:
    """GPL-3 text fed 8x past a 128-position context (sink 4 + window 124): perplexity on the tokens past it within
    1.2x of the full-context model's on the same tokens (measured 2026-11-27: 20.41 vs 18.24, 1.12x; with window
    252: 19.17 vs 18.57); greedy generation runs to 3x a 64-position context; a chat past it does not start over."""
    from bench.corpus import corpus
    from common.pipeline import load_model
    from common.session import ChatSession
    from common.tokenizer import load_tokenizer
    from models.llama3.model import FAMILY

    tok = load_tokenizer(smollm2_gguf)
    ids = tok.encode(corpus()[1])[:1024]
    context = 128
    dense = load_model(FAMILY, smollm2_gguf, max_context_len=len(ids), max_seq_len=64)[0]
    sink = load_model(FAMILY, smollm2_gguf, max_seq_len=32, attention_sink=(4, context - 4))[0]

    def nll(model, chunk: int) -> torch.Tensor:
        lp = all_logits(model, ids, chunk)[:-1].double().log_softmax(-1)
        return -lp.gather(1, torch.tensor(ids[1:])[:, None])[:, 0]

    past = slice(context - 1, None)
    ppl_sink, ppl_dense = nll(sink, 32)[past].mean().exp().item(), nll(dense, 64)[past].mean().exp().item()
    print(f"perplexity past the context: sink {ppl_sink:.2f}, full context {ppl_dense:.2f}")
    assert ppl_sink <= 1.2 * ppl_dense

    small = 64  # generation and chat past a smaller context: 3x it is cheaper to decode
    model = EagerModel(load_model(FAMILY, smollm2_gguf, max_seq_len=32, attention_sink=(4, small - 4))[0],
                       tuple(tok.eos_ids))
    gen = generate(model, tok.encode("Once upon a time"), Sampler(), 3 * small, ignore_eos=True)
    assert len(gen.tokens) == 3 * small and len(set(gen.tokens)) > 20
    session = ChatSession(model, tok, Sampler(), max_new_tokens=32)
    turns = [session.turn(f"Tell me about {x} in two sentences.") for x in ("apples", "the sea", "cats", "Paris")]
    assert len(session.cached) > 2 * small and not any(t.fresh_context for t in turns)
    assert all(t.reused > 0 for t in turns[1:])
