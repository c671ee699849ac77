"""export --quantize-kv-cache: int8 keys and values (per position and head) against the fp32 cache on SmolLM2, and
the `.pte` (Python runtime and C++ runner) against the eager int8-cache model."""

from __future__ import annotations

import pytest
import torch

from common.pipeline import load_model
from models.llama3.model import FAMILY

pytestmark = pytest.mark.slow

# KL(fp32 cache || int8 cache) per token on SmolLM2 over 512 GPL-3 tokens in chunks of 64, measured 2026-11-27
# (eager): mean 0.0010, max 0.027, top-1 agreement 96.9 %; on the fp32 .pte pair, 2026-11-28: mean 0.00095, max 0.026,
# top-1 97.3 %. The bound is 0.01 on the mean.
KL_MAX = 0.01


def chunked_logits(model, ids: list[int], chunk: int) -> torch.Tensor:
    model.init_buffers()
    with torch.no_grad():
        return torch.cat([model(torch.tensor([ids[i:i + chunk]]), torch.tensor([i]))[0]
                          for i in range(0, len(ids), chunk)])


def cache_bytes(model) -> int:
    return sum(b.numel() * b.element_size() for c in model.caches() for b in c.buffers())


def test_smollm2_int8_cache_kl_and_size(smollm2_gguf: str) -> None:
    from bench.corpus import corpus
    from common.tokenizer import load_tokenizer

    ids = load_tokenizer(smollm2_gguf).encode(corpus()[1])[:512]
    fp32 = load_model(FAMILY, smollm2_gguf, max_context_len=4096, max_seq_len=64)[0]
    int8 = load_model(FAMILY, smollm2_gguf, max_context_len=4096, max_seq_len=64, quantize_kv_cache=True)[0]
    ref = chunked_logits(fp32, ids, 64).double().log_softmax(-1)
    got = chunked_logits(int8, ids, 64).double().log_softmax(-1)
    kl = (ref.exp() * (ref - got)).sum(-1).mean().item()
    print(f"KL {kl:.5f}; cache at 4096: {cache_bytes(fp32) / 2**20:.1f} MiB fp32, {cache_bytes(int8) / 2**20:.1f} MiB int8")
    assert 0 < kl <= KL_MAX
    # int8 values plus a float32 scale and an int8 zero point per head_dim (64) row: (64 + 5) / 256 of fp32
    assert cache_bytes(int8) == cache_bytes(fp32) * (64 + 5) // (64 * 4)


def test_smollm2_int8_cache_pte_kl(smollm2_gguf: str) -> None:
    """The issue's measure on the programs themselves: SmolLM2 exported fp32 (the bench's fp32 build) with the fp32
    cache and with --quantize-kv-cache, fed 448 GPL-3 tokens one at a time after a 64-token prefill. fp32 weights,
    so that what differs is the cache: on an int8-dynamic build the GEMMs' own noise is larger than the cache's
    effect (measured 2026-11-28 on the gguf build: KL 0.024 against 0.018 between two prefill splits of the same
    fp32-cache program)."""
    from bench.artefacts import cached_export
    from bench.corpus import corpus
    from bench.registry import STANDARD_BUILDS
    from common.runtime import PteModel
    from common.tokenizer import load_tokenizer
    from tests.helpers import kl_per_position, step_logits

    build = next(b for b in STANDARD_BUILDS if b.name == "fp32")
    fp32_pte = cached_export("llama3", smollm2_gguf, build.export_args, "smollm2-135m-fp32")  # the bench's file
    int8_pte = cached_export("llama3", smollm2_gguf, (*build.export_args, "--quantize-kv-cache"),
                             "smollm2-135m-int8kv")  # not "...-fp32-*": that build's stale glob
    ids = load_tokenizer(smollm2_gguf).encode(corpus()[1])[:512]
    ref = step_logits(PteModel(fp32_pte), ids[:64], ids[64:])
    got = step_logits(PteModel(int8_pte), ids[:64], ids[64:])
    kl = kl_per_position(ref, got)
    top1 = (ref.argmax(-1) == got.argmax(-1)).double().mean().item()
    print(f".pte KL(fp32 cache || int8 cache) mean {kl.mean():.5f}, max {kl.max():.4f}, top-1 agreement {top1:.1%}")
    assert 0 < kl.mean() <= KL_MAX


def test_pte_matches_eager_int8_cache(tiny, tmp_path) -> None:
    """With the custom ops (the default; plain SDPA reads the same dequantized cache, measured equal to eager too)."""

    from common.cli import export_main, run_cli
    from common.runtime import EagerModel, PteModel, generate
    from common.sampler import Sampler
    from runners.tests.conftest import cpp_greedy
    from tests.helpers import cli_stdout, step_logits

    t = tiny["untied"]
    out = tmp_path / "model.pte"
    cli_stdout(lambda: run_cli(export_main(FAMILY), [
        "--checkpoint", t.dir, "--quantize", "fp32", "--quantize-kv-cache", "--max-seq-len", "8", "--max-context-len",
        "64", "--output", str(out)]))
    pte = PteModel(out)
    eager = EagerModel(load_model(FAMILY, t.dir, max_context_len=64, max_seq_len=8, quantize_kv_cache=True)[0], ())
    prompt = t.tokenizer.encode("The capital of France is Paris, and the capital of Italy is")
    tokens = generate(eager, prompt, Sampler(), 16, ignore_eos=True).tokens
    assert (step_logits(pte, prompt, tokens[:-1]) - step_logits(eager, prompt, tokens[:-1])).abs().max() <= 1e-4
    from executorch.exir._serialize._program import deserialize_pte_binary

    from common.export import program_operators  # the program really stores int8: it quantizes in the graph

    ops = program_operators(deserialize_pte_binary(out.read_bytes()).program)
    assert "quantized_decomposed::quantize_per_token.out" in ops
    assert cpp_greedy("llama3", out, prompt, 16, tmp_path) == generate(pte, prompt, Sampler(), 16,
                                                                     ignore_eos=True).tokens
