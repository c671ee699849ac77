"""The shared building blocks (common/nn) and the generate loop against their references: transformers' RoPE
tables and norms, plain PyTorch attention, and a scripted model for the loop's control flow."""

from __future__ import annotations

import pytest
import torch

from common.nn.attention import SDPA, CustomOpsKernel
from common.nn.kv_cache import FlatKVCache, causal_mask
from common.nn.mlp import GatedMLP
from common.nn.norm import RMSNorm
from common.nn.rope import RopeScaling, apply_rope, inv_frequencies, rope_tables, rotate_half_matrix
from common.runtime import generate
from common.sampler import Sampler, SamplerConfig


def _hf_inv_freq(rope_type: str, **config) -> torch.Tensor:
    from transformers import LlamaConfig
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    cfg = LlamaConfig(hidden_size=256, num_attention_heads=4, **config)
    if rope_type == "default":
        return 1.0 / (cfg.rope_parameters["rope_theta"] ** (torch.arange(0, 64, 2).float() / 64))
    return ROPE_INIT_FUNCTIONS[rope_type](cfg, "cpu")[0]


def test_rope_frequencies_match_transformers() -> None:
    assert torch.allclose(inv_frequencies(64, 5e5), _hf_inv_freq("default", rope_theta=5e5))
    scaling = RopeScaling(factor=32.0, low_freq_factor=1.0, high_freq_factor=4.0, original_max_position_embeddings=8192)
    hf = _hf_inv_freq("llama3", rope_parameters={"rope_type": "llama3", "rope_theta": 5e5, **vars(scaling)})
    assert torch.allclose(inv_frequencies(64, 5e5, scaling), hf)
    hf = _hf_inv_freq("proportional", rope_parameters={"rope_type": "proportional", "rope_theta": 1e6,
                                                       "partial_rotary_factor": 0.25})
    assert torch.allclose(inv_frequencies(64, 1e6, rotary_dim=16), hf)


def test_partial_rotary_leaves_the_other_dims_alone() -> None:
    cos, sin = rope_tables(32, inv_frequencies(64, 1e4, rotary_dim=16))
    x = torch.randn(1, 32, 2, 64)
    y = apply_rope(x, cos, sin)
    for d in (*range(8, 32), *range(40, 64)):  # the pairs past rotary_dim // 2 in both halves
        assert torch.equal(y[..., d], x[..., d])
    assert not torch.allclose(y[:, 1:, :, :8], x[:, 1:, :, :8])


def test_rotate_half_matmul_is_exact() -> None:
    from transformers.models.llama.modeling_llama import rotate_half

    x = torch.randn(2, 5, 3, 64)
    assert torch.equal(torch.nn.functional.linear(x, rotate_half_matrix(64)), rotate_half(x))
    cos, sin = rope_tables(5, inv_frequencies(64, 1e4))
    assert torch.equal(apply_rope(x, cos, sin, rotate_half_matrix(64)), apply_rope(x, cos, sin))


def test_rmsnorm_variants_match_transformers() -> None:
    from transformers.models.gemma3.modeling_gemma3 import Gemma3RMSNorm
    from transformers.models.llama.modeling_llama import LlamaRMSNorm

    from common.export import XnnpackRMSNorm

    x = torch.randn(2, 7, 48) * 3
    w = torch.randn(48)
    ours, hf = RMSNorm(48, 1e-6), LlamaRMSNorm(48, 1e-6)
    ours.weight.data.copy_(w), hf.weight.data.copy_(w)
    assert torch.allclose(ours(x), hf(x), atol=1e-6)
    ours, hf = RMSNorm(48, 1e-6, offset=1.0), Gemma3RMSNorm(48, 1e-6)
    assert torch.equal(ours.weight, hf.weight)  # both start as the identity scale
    ours.weight.data.copy_(w), hf.weight.data.copy_(w)
    assert torch.allclose(ours(x), hf(x), atol=1e-6)
    plain = RMSNorm(48, 1e-6, with_weight=False)
    assert plain.weight is None and torch.allclose(plain(x), x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6))
    swapped = RMSNorm(48, 1e-6)
    swapped.weight.data.copy_(w)
    reference = swapped(x)
    swapped.__class__ = XnnpackRMSNorm  # the XNNPACK lowering's delegable form
    assert torch.allclose(swapped(x), reference, atol=1e-6)


@pytest.mark.parametrize("activation", ["silu", "gelu_tanh"])
def test_gated_mlp_and_its_fusion(activation: str) -> None:
    torch.manual_seed(0)
    mlp = GatedMLP(32, 64, activation)
    x = torch.randn(3, 32)
    act = torch.nn.functional.silu if activation == "silu" else lambda t: torch.nn.functional.gelu(t, approximate="tanh")
    expected = mlp.down_proj(act(mlp.gate_proj(x)) * mlp.up_proj(x))
    if activation == "silu":
        assert torch.equal(mlp(x), expected)
    else:  # GELU-tanh written out with tanh (XNNPACK's own GELU is approximate): fp32 rounding apart
        assert torch.allclose(mlp(x), expected, atol=1e-6) and not torch.equal(expected, mlp.down_proj(
            torch.nn.functional.gelu(mlp.gate_proj(x)) * mlp.up_proj(x)))  # and the tanh form, not erf
    mlp.fuse()
    assert torch.allclose(mlp(x), expected, atol=1e-6)


def _attend(kernel, q, k, v, start):
    cache = FlatKVCache(16, k.size(2), k.size(3))
    k_all, v_all = cache.update(start, k, v, kernel)
    mask = FlatKVCache.mask(causal_mask(16), start, q.size(1)) if kernel.needs_mask else None
    return kernel.attend(q, k_all, v_all, start, mask), cache


def test_attention_kernels_agree_with_a_plain_reference() -> None:
    """SDPA and ExecuTorch's custom ops: same cache writes, same causal GQA output, at a non-zero start."""
    torch.manual_seed(0)
    q, k, v = torch.randn(1, 3, 4, 8), torch.randn(1, 3, 2, 8), torch.randn(1, 3, 2, 8)
    start = 5
    out_sdpa, cache_sdpa = _attend(SDPA, q, k, v, start)
    out_custom, cache_custom = _attend(CustomOpsKernel(), q, k, v, start)
    assert torch.equal(cache_sdpa.k_cache, cache_custom.k_cache) and torch.equal(cache_sdpa.k_cache[:, 5:8], k)
    assert not cache_sdpa.k_cache[:, :5].any() and not cache_sdpa.k_cache[:, 8:].any()
    # reference: query i (position start + i) reads positions <= start + i; slots < start are zeros here
    keys = cache_sdpa.k_cache[0].repeat_interleave(2, dim=1)
    vals = cache_sdpa.v_cache[0].repeat_interleave(2, dim=1)
    scores = torch.einsum("shd,thd->hst", q[0], keys) / 8**0.5
    scores = scores + causal_mask(16)[start : start + 3]
    ref = torch.einsum("hst,thd->shd", scores.softmax(-1), vals)
    assert torch.allclose(out_sdpa[0], ref, atol=1e-5) and torch.allclose(out_custom[0], ref, atol=1e-5)


class Scripted:
    """A model whose next token is always (last token + 1) % 10, recording the forward calls."""

    def __init__(self, max_seq_len: int, max_context_len: int, eos_ids=(9,)):
        self.max_seq_len, self.max_context_len, self.eos_ids = max_seq_len, max_context_len, eos_ids
        self.calls: list[tuple[int, int]] = []

    def forward(self, tokens: list[int], start: int) -> torch.Tensor:
        self.calls.append((len(tokens), start))
        return torch.nn.functional.one_hot(torch.tensor((tokens[-1] + 1) % 10), 10).float()


def test_generate_chunks_prefill_and_stops() -> None:
    model = Scripted(max_seq_len=4, max_context_len=64)
    gen = generate(model, [0, 1, 2, 3, 4, 5, 6, 7, 8, 0], Sampler(), 100)
    assert model.calls[:3] == [(4, 0), (4, 4), (2, 8)]  # chunks of max_seq_len at the right positions
    assert gen.tokens == [1, 2, 3, 4, 5, 6, 7, 8, 9]  # stops at EOS 9, which is kept
    assert model.calls[3:] == [(1, pos) for pos in range(10, 18)]
    assert generate(Scripted(4, 64), [0], Sampler(), 3).tokens == [1, 2, 3]  # max_new_tokens
    assert generate(Scripted(4, 64), [0], Sampler(), 12, ignore_eos=True).tokens == [1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1, 2]
    short = generate(Scripted(4, 8), [0, 1, 2, 3, 4], Sampler(), 100, ignore_eos=True)
    assert len(short.tokens) == 8 - 5 + 1  # the context end: last token sampled from position 7's logits


def test_sampler_greedy_topk_and_seed() -> None:
    logits = torch.tensor([0.0, 3.0, 1.0, 2.5])
    assert Sampler()(logits) == 1
    assert Sampler(SamplerConfig(temperature=5.0, top_k=1, seed=3))(logits) == 1  # top-k 1 is greedy
    draws = Sampler(SamplerConfig(temperature=1.0, top_p=0.9, seed=7))
    seq = [draws(logits) for _ in range(200)]
    again = Sampler(SamplerConfig(temperature=1.0, top_p=0.9, seed=7))
    assert seq == [again(logits) for _ in range(200)]
    assert set(seq) <= {1, 3, 2} and 0 not in seq  # top-p 0.9 drops the least likely token
    with pytest.raises(ValueError):
        Sampler(SamplerConfig(temperature=-1))
