"""The zoo's attention kernel (runners/kernels/sdpa.h: `zoo::custom_sdpa`, and `llama::custom_sdpa` in the C++
runners) against attention computed by torch, on shapes chosen to reach every path: decode calls whose keys are
split across threads and combined, prefill blocks whose rows see different numbers of keys (also within one value
pass over several rows), head sizes with and without a compile-time instantiation and not a multiple of 8, grouped
and ungrouped heads, and the masked call (most slots hidden).

Each case is a one-op `.pte` calling `zoo::custom_sdpa` in the Python runtime (bench.sdpa_kernel); the C++
runners register the same kernel body for `llama::custom_sdpa` too. fp32 throughout: only summation order differs
from torch.
"""

from __future__ import annotations

import pytest
import torch

from bench.sdpa_kernel import Case, run

CASES = [
    Case("decode-first", seq=1, start=0, heads=9, kv_heads=3, head_dim=64, slots=64),
    Case("decode-split", seq=1, start=1500, heads=9, kv_heads=3, head_dim=64, slots=2048),
    Case("decode-split-short", seq=1, start=130, heads=9, kv_heads=3, head_dim=64, slots=256),  # 3 tiles, 2 ranges
    Case("decode-split-mqa", seq=1, start=1999, heads=4, kv_heads=1, head_dim=128, slots=2048),
    Case("prefill-odd", seq=13, start=37, heads=6, kv_heads=2, head_dim=48, slots=128),
    Case("prefill-tiles", seq=20, start=150, heads=4, kv_heads=4, head_dim=256, slots=256),
    Case("prefill-grouped", seq=19, start=100, heads=8, kv_heads=2, head_dim=64, slots=256),  # rows of 2 positions share a value pass
    Case("head-20", seq=5, start=70, heads=4, kv_heads=2, head_dim=20, slots=96),
    Case("head-512", seq=3, start=100, heads=2, kv_heads=1, head_dim=512, slots=128),
    Case("masked-decode", seq=1, start=0, heads=8, kv_heads=2, head_dim=32, slots=700, masked=True),
    Case("masked-prefill", seq=11, start=0, heads=4, kv_heads=2, head_dim=64, slots=300, masked=True),
]
# float16 caches (export --kv-cache-dtype fp16): each row widened to float32 as it is read, so the reference on the
# same half values is as exact as for float32 caches
HALF = [Case(f"{c.name}-fp16", c.seq, c.start, c.heads, c.kv_heads, c.head_dim, c.slots, c.masked, torch.float16)
        for c in CASES if c.name in ("decode-split", "prefill-odd", "prefill-grouped", "head-20", "masked-prefill")]


def reference(case: Case) -> torch.Tensor:
    """softmax(q k^T * D^-1/2 + mask) v per head, over keys 0 .. start + i (causal) or every slot (masked)."""
    q, k, v, *mask = case.inputs()
    group = case.heads // case.kv_heads
    q, k, v = (t[0].transpose(0, 1).double() for t in (q, k, v))  # [heads, positions, D]
    k, v = k.repeat_interleave(group, 0), v.repeat_interleave(group, 0)
    scores = q @ k.transpose(1, 2) / case.head_dim ** 0.5  # [heads, seq, slots]
    if mask:
        scores = scores + mask[0].double()
    else:
        pos = torch.arange(case.start, case.start + case.seq)[:, None]
        scores = scores.masked_fill(torch.arange(case.slots)[None, :] > pos, float("-inf"))
    return (scores.softmax(-1) @ v).transpose(0, 1)[None].float()  # [1, seq, heads, D]


@pytest.mark.parametrize("case", CASES + HALF, ids=lambda c: c.name)
def test_zoo_sdpa_kernel_equals_torch_attention(case: Case) -> None:
    got, _ = run(case, "zoo", repeats=0)
    want = reference(case)
    assert got.shape == want.shape
    assert torch.allclose(got, want, atol=2e-6, rtol=1e-5), (got - want).abs().max().item()


def test_reference_is_what_executorch_computes() -> None:
    """The reference's reading of custom_sdpa (scale, grouping, causal positions, mask) is ExecuTorch's own."""
    for case in CASES:
        got, _ = run(case, "llama", repeats=0)
        assert torch.allclose(got, reference(case), atol=2e-6, rtol=1e-5), case.name
