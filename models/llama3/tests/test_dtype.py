"""export --dtype bf16: a program that computes in bf16 (portable backend, plain SDPA, float weights) behind fp32
inputs and logits, against transformers' Llama run in bf16 and in fp32 on the same weights."""

from __future__ import annotations

import pytest
import torch

from models.llama3.model import FAMILY

pytestmark = pytest.mark.slow


def hf_logits(hf, ids: list[int], dtype: torch.dtype) -> torch.Tensor:
    """transformers' logits at every position of `ids`, in `dtype`, as fp32."""
    import copy

    with torch.no_grad():
        return copy.deepcopy(hf).to(dtype)(torch.tensor([ids])).logits[0].float()


def constant_elements(pte) -> dict:
    """Elements of the program's constant tensors, by dtype (executorch.exir.schema.ScalarType)."""
    import math
    from collections import Counter

    from executorch.exir._serialize._program import deserialize_pte_binary
    from executorch.exir.schema import Tensor

    counts = Counter()
    for value in deserialize_pte_binary(pte.read_bytes()).program.execution_plan[0].values:
        if isinstance(value.val, Tensor) and value.val.data_buffer_idx > 0:  # data in the file: a constant
            counts[value.val.scalar_type] += math.prod(value.val.sizes)
    return counts


def test_bf16_pte_against_transformers(tiny, tmp_path) -> None:
    from executorch.exir.schema import ScalarType

    from common.cli import export_main, run_cli
    from common.runtime import PteModel, generate
    from common.sampler import Sampler
    from runners.tests.conftest import cpp_greedy
    from tests.helpers import cli_stdout

    t = tiny["untied"]
    out = tmp_path / "model.pte"
    cli_stdout(lambda: run_cli(export_main(FAMILY), [
        "--checkpoint", t.dir, "--quantize", "fp32", "--dtype", "bf16", "--backend", "portable", "--no-custom-ops",
        "--max-seq-len", "8", "--max-context-len", "64", "--output", str(out)]))
    pte = PteModel(out)
    prompt = t.tokenizer.encode("The capital of France is Paris, and the capital of Italy is")
    tokens = generate(pte, prompt, Sampler(), 16, ignore_eos=True).tokens
    ids = prompt + tokens[:-1]
    # every position through the program: a prefill in chunks of max_seq_len, the logits of each chunk's positions
    # one call at a time (the program returns the last position's)
    got = torch.stack([pte.forward(ids[i:i + 1], i) for i in range(len(ids))])
    assert got.dtype == torch.float32
    ref32, ref16 = hf_logits(t.hf, ids, torch.float32), hf_logits(t.hf, ids, torch.bfloat16)
    ours, theirs = (got - ref32).abs().max().item(), (ref16 - ref32).abs().max().item()
    print(f"max |logit - fp32 logit|: ours bf16 {ours:.4f}, transformers bf16 {theirs:.4f}")
    # bf16 rounding really happens (not an fp32 program), and stays within transformers' own bf16 error
    assert 0.1 * theirs < ours <= 2 * theirs
    # the program stores its weights (and tables) in bf16: half the fp32 bytes
    params = sum(p.numel() for p in t.hf.parameters())
    stored = constant_elements(out)
    assert stored.get(ScalarType.BFLOAT16, 0) >= params and stored.get(ScalarType.FLOAT, 0) < params // 100
    assert cpp_greedy("llama3", out, prompt, 16, tmp_path) == tokens
