"""export --kv-cache-dtype fp16 on SmolLM2: KL against the float32 cache, and the cache's size. (Every layout, the
`.pte` and the C++ runner on tiny models: tests/test_kv_cache_fp16.py.)"""

from __future__ import annotations

import pytest

from common.pipeline import load_model
from models.llama3.model import FAMILY
from models.llama3.tests.test_kv_cache_int8 import cache_bytes, chunked_logits

pytestmark = pytest.mark.slow

# KL(fp32 cache || fp16 cache) per token on SmolLM2, 512 GPL-3 tokens in chunks of 64, eager: measured 2026-11-29
# mean 1.1e-6 (top-1 agreement 100 %); the int8 cache's is 0.0010. The bound leaves room for other CPUs' rounding.
KL_MAX = 1e-4


def test_smollm2_fp16_cache_kl_and_size(smollm2_gguf: str) -> None:
    from bench.corpus import corpus
    from common.tokenizer import load_tokenizer

    ids = load_tokenizer(smollm2_gguf).encode(corpus()[1])[:512]
    fp32 = load_model(FAMILY, smollm2_gguf, max_context_len=4096, max_seq_len=64)[0]
    half = load_model(FAMILY, smollm2_gguf, max_context_len=4096, max_seq_len=64, kv_cache_dtype="fp16")[0]
    ref = chunked_logits(fp32, ids, 64).double().log_softmax(-1)
    got = chunked_logits(half, ids, 64).double().log_softmax(-1)
    kl = (ref.exp() * (ref - got)).sum(-1).mean().item()
    top1 = (ref.argmax(-1) == got.argmax(-1)).double().mean().item()
    print(f"KL {kl:.2e}, top-1 {top1:.1%}; cache at 4096: {cache_bytes(fp32) / 2**20:.1f} MiB fp32, "
          f"{cache_bytes(half) / 2**20:.1f} MiB fp16")
    assert 0 < kl <= KL_MAX and top1 >= 0.98
    assert 2 * cache_bytes(half) == cache_bytes(fp32)
