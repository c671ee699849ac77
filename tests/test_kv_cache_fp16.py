"""export --kv-cache-dtype fp16: keys and values stored as float16, attention in float32 (the zoo's kernel widens
each cache row as it reads it). On every cache layout (flat, a sliding-window ring, an attention sink run past its
context, Gemma 4's mix), a float16 cache must give the logits of a float32 cache handed the keys and values rounded to
float16, for every chunk size and both attention kernels; the `.pte` must give eager's, in the Python runtime and the
C++ runner. (SmolLM2's KL against the float32 cache: models/llama3/tests/test_kv_cache_fp16.py.)"""

from __future__ import annotations

import pytest
import torch

from common.pipeline import load_model
from tests.test_kv_cache_int8 import CASES, check_against_rounded_fp32_cache, family_for

FP16_CASES = {**CASES, "llama": ("llama", {}, {})}  # the int8 test's layouts, and a plain flat cache


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, str]:
    from tests.checkpoints import write_tiny

    root = tmp_path_factory.mktemp("fp16_kv")
    return {name: str(write_tiny(arch, root / name, seed=i, **cfg)[1]) for i, (name, (arch, cfg, _)) in
            enumerate(FP16_CASES.items())}


@pytest.mark.parametrize("custom_ops", [False, True], ids=["sdpa", "custom_ops"])
@pytest.mark.parametrize("case", FP16_CASES)
def test_fp16_cache_is_the_fp32_cache_of_fp16_values(checkpoints, case: str, custom_ops: bool) -> None:
    check_against_rounded_fp32_cache(checkpoints[case], FP16_CASES[case], custom_ops,
                                     lambda x: x.half().float(), {"kv_cache_dtype": "fp16"}, torch.float16,
                                     atol=1e-5, moved=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("case,flags", [("llama", []), ("qwen3-sliding", ["--local-global", "5,0"])],
                         ids=["flat", "ring"])
def test_fp16_cache_pte_matches_eager(checkpoints, tmp_path, case: str, flags: list[str]) -> None:
    """The `.pte` (XNNPACK, the custom ops: zoo::update_cache rounding to halves as it writes, zoo::custom_sdpa
    reading them) in the Python runtime gives eager's logits, and the C++ runner its greedy tokens."""
    from common.cli import export_main, run_cli
    from common.runtime import EagerModel, PteModel, generate
    from common.sampler import Sampler
    from runners.tests.conftest import cpp_greedy
    from tests.helpers import cli_stdout, step_logits

    arch = {"llama": "llama", "qwen3-sliding": "qwen3"}[case]
    family, out = family_for(arch), tmp_path / "model.pte"
    printed = cli_stdout(lambda: run_cli(export_main(family), [
        "--checkpoint", checkpoints[case], "--quantize", "fp32", "--kv-cache-dtype", "fp16", *flags,
        "--max-seq-len", "4", "--max-context-len", "32", "--output", str(out)]))
    assert "fp16 KV cache" in printed
    from executorch.exir._serialize._program import deserialize_pte_binary

    from common.export import program_operators  # the zoo's writer rounds as it copies: no cast op in the graph

    ops = program_operators(deserialize_pte_binary(out.read_bytes()).program)
    assert f"zoo::update_cache{'_with_indices' if flags else ''}.out" in ops
    if not flags:  # (a ring's mask has casts of its own)
        assert not any("to_dim_order_copy" in op or "_to_copy" in op for op in ops), ops
    local_global = (5, 0) if flags else None
    pte = PteModel(out)
    eager = EagerModel(load_model(family, checkpoints[case], max_context_len=32, max_seq_len=4,
                                  local_global=local_global, kv_cache_dtype="fp16")[0], ())
    prompt = list(range(3, 13))
    tokens = generate(eager, prompt, Sampler(), 16, ignore_eos=True).tokens
    got, want = step_logits(pte, prompt, tokens[:-1]), step_logits(eager, prompt, tokens[:-1])
    # Not the fp32 programs' 1e-4: where the program's k or v differs from eager's in the last fp32 bit (XNNPACK's
    # GEMM sums in another order), rounding to float16 can land one half-precision step (2^-11 relative) apart.
    # Measured 2026-11-29: ring 6e-4 on logits of magnitude ~20, flat below 1e-4.
    assert (got - want).abs().max() <= 2e-3 and torch.equal(got.argmax(-1), want.argmax(-1))
    assert cpp_greedy(family.name, out, prompt, 16, tmp_path) == generate(pte, prompt, Sampler(), 16,
                                                                         ignore_eos=True).tokens


@pytest.mark.parametrize("flags,message", [
    (["--quantize-kv-cache"], "--kv-cache-dtype fp16: --quantize-kv-cache stores the cache as int8"),
    (["--dtype", "bf16", "--backend", "portable", "--no-custom-ops"], "--dtype bf16: the cache follows the program's"),
], ids=["int8", "bf16"])
def test_fp16_cache_conflicts_get_one_line(checkpoints, tmp_path, flags: list[str], message: str, capsys) -> None:
    from common.cli import export_main, run_cli

    assert run_cli(export_main(family_for("llama")), [
        "--checkpoint", checkpoints["llama"], "--quantize", "fp32", "--kv-cache-dtype", "fp16", *flags,
        "--output", str(tmp_path / "x.pte")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "x.pte").exists()
