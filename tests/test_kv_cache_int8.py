"""export --quantize-kv-cache on every cache layout and family: a sliding-window ring (qwen3 --local-global), an
attention sink run past its context (llama, Gemma 4), and Gemma 4's mix of rings and K=V full layers. An int8 cache must give
the logits of an fp32 cache handed the keys and values quantize-dequantized per position and head (the int8 format
itself), for every chunk size; the `.pte` must give eager's. (SmolLM2's KL against the fp32 cache, and the flat
cache's `.pte`, are models/llama3/tests/test_kv_cache_int8.py.)"""

from __future__ import annotations

import pytest
import torch

from common.nn.attention import attention_kernel
from common.pipeline import load_model

N = 20  # positions fed: past every window and ring, and past the sink's 2 + 6
SLIDING = dict(num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2, head_dim=16, sliding_window=5,
               layer_types=["sliding_attention", "full_attention", "sliding_attention"], use_sliding_window=True,
               max_window_layers=0)
CASES = {  # name -> (tiny arch, its HF config, load_model's attention options)
    "qwen3-sliding": ("qwen3", SLIDING, {}),
    "llama-sink": ("llama", {}, {"attention_sink": (2, 6)}),
    "gemma4": ("gemma4", {}, {}),
    "gemma4-sink": ("gemma4", {}, {"attention_sink": (2, 6)}),  # sinks on the full layers, rings past the context
}


def family_for(arch: str):
    from models import family

    return family({"qwen3": "qwen3", "llama": "llama3", "gemma4": "gemma4_31b"}[arch])


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, str]:
    from tests.checkpoints import write_tiny

    root = tmp_path_factory.mktemp("int8_kv")
    return {name: str(write_tiny(arch, root / name, seed=i, **cfg)[1]) for i, (name, (arch, cfg, _)) in
            enumerate(CASES.items())}


def fake_quant(x: torch.Tensor) -> torch.Tensor:
    """x [B, S, H, D] through int8 and back, per [position, head] row, as the int8 cache stores it."""
    import executorch.kernels.quantized  # noqa: F401  (registers quantized_decomposed)

    ops = torch.ops.quantized_decomposed
    scales, zeros = ops.choose_qparams_per_token_asymmetric(x, torch.int8)
    q = ops.quantize_per_token(x, scales, zeros, -128, 127, torch.int8)
    return ops.dequantize_per_token(q, scales.float().double(), zeros.to(torch.int8).long(), -128, 127, torch.int8,
                                    torch.float32)


def chunked(model, ids: list[int], chunk: int) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([model(torch.tensor([ids[i:i + chunk]]), torch.tensor([i]))[0]
                          for i in range(0, len(ids), chunk)])


def check_against_rounded_fp32_cache(checkpoint: str, case: tuple, custom_ops: bool, rounding, cache_kw: dict,
                                     dtype: torch.dtype, atol: float, moved: float) -> None:
    """A cache stored as `cache_kw` says (load_model's flags) gives, for chunks of 1, 3 and 8, the logits (to `atol`)
    of an fp32 cache written with `rounding`(keys and values): its format and nothing else. The rounding must move
    the logits by more than `moved`, and the caches must hold `dtype`."""
    arch, _, options = case
    family = family_for(arch)
    ids = torch.randint(3, 200, (N,), generator=torch.Generator().manual_seed(1)).tolist()
    for chunk in (1, 3, 8):
        kw = dict(max_context_len=24, max_seq_len=chunk, kernel=attention_kernel(custom_ops), **options)
        stored = load_model(family, checkpoint, **cache_kw, **kw)[0]
        fp32 = load_model(family, checkpoint, **kw)[0]
        plain = chunked(fp32, ids, chunk)
        for cache in fp32.caches():  # the reference: an fp32 cache written with rounded keys and values
            cache.update = lambda start, k, v, kernel, update=cache.update: update(start, rounding(k), rounding(v),
                                                                                   kernel)
        fp32.reset_cache()
        ref, got = chunked(fp32, ids, chunk), chunked(stored, ids, chunk)
        assert (got - ref).abs().max() <= atol, chunk
        assert (got - plain).abs().max() > moved  # the rounding is really there
        assert all(c.k_cache.dtype == c.v_cache.dtype == dtype for c in stored.caches())


@pytest.mark.parametrize("custom_ops", [False, True], ids=["sdpa", "custom_ops"])
@pytest.mark.parametrize("case", CASES)
def test_int8_cache_is_the_fp32_cache_of_int8_values(checkpoints, case: str, custom_ops: bool) -> None:
    check_against_rounded_fp32_cache(checkpoints[case], CASES[case], custom_ops, fake_quant,
                                     {"quantize_kv_cache": True}, torch.int8, atol=1e-4, moved=1e-4)


@pytest.mark.slow
def test_int8_ring_pte_matches_eager(checkpoints, tmp_path) -> None:
    """qwen3 --local-global 5,0 --quantize-kv-cache with the custom ops (llama::update_cache_with_indices writing
    int8 ring slots): the `.pte` in the Python runtime gives eager's logits, and the C++ runner its greedy tokens."""

    from common.cli import export_main, run_cli
    from common.runtime import EagerModel, PteModel, generate
    from common.sampler import Sampler
    from runners.tests.conftest import cpp_greedy
    from tests.helpers import cli_stdout, step_logits

    family = family_for("qwen3")
    out = tmp_path / "model.pte"
    cli_stdout(lambda: run_cli(export_main(family), [
        "--checkpoint", checkpoints["qwen3-sliding"], "--quantize", "fp32", "--quantize-kv-cache", "--local-global",
        "5,0", "--max-seq-len", "4", "--max-context-len", "32", "--output", str(out)]))
    pte = PteModel(out)
    eager = EagerModel(load_model(family, checkpoints["qwen3-sliding"], max_context_len=32, max_seq_len=4,
                                  local_global=(5, 0), quantize_kv_cache=True)[0], ())
    prompt = list(range(3, 13))
    tokens = generate(eager, prompt, Sampler(), 16, ignore_eos=True).tokens
    assert (step_logits(pte, prompt, tokens[:-1]) - step_logits(eager, prompt, tokens[:-1])).abs().max() <= 1e-4
    assert cpp_greedy("qwen3", out, prompt, 16, tmp_path) == generate(pte, prompt, Sampler(), 16,
                                                                     ignore_eos=True).tokens
