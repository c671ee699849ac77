"""`zoo::linear_q8` (common/quant/tied_head.py, kernel runners/kernels/zoo.cpp): the tied LM head that reads the
embedding's int8 table. The runtime kernel against the eager definition (dequantize + linear) on odd shapes, and
the .pte holding the table once."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from gguf import GGMLQuantizationType as T
from torch import nn

from common.quant.tied_head import dequantize_q8


class _Head(nn.Module):
    def __init__(self, codes: torch.Tensor, scales: torch.Tensor):
        super().__init__()
        self.register_buffer("codes", codes)
        self.register_buffer("scales", scales)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.zoo.linear_q8(x, self.codes, self.scales)


def _run_pte(module: nn.Module, x: torch.Tensor, tmp_path: Path) -> torch.Tensor:
    from executorch.exir import to_edge
    from executorch.runtime import Runtime

    from common.kernels import load_kernel_libraries

    load_kernel_libraries()
    program = to_edge(torch.export.export(module, (x,))).to_executorch()
    path = tmp_path / "head.pte"
    path.write_bytes(program.buffer)
    assert "zoo::linear_q8.out" in {op.name + ("." + op.overload if op.overload else "")
                                    for op in program.executorch_program.execution_plan[0].operators}
    return Runtime.get().load_program(str(path)).load_method("forward").execute([x])[0]


@pytest.mark.parametrize("rows, n, k, group", [(1, 70, 64, 32), (5, 70, 64, 32), (3, 129, 96, 32), (2, 33, 48, 16)])
def test_runtime_kernel_matches_dequantize_then_linear(rows: int, n: int, k: int, group: int, tmp_path: Path) -> None:
    """Rows not a multiple of the kernel's 64-row tasks, one and many input rows, the group-32 fast path and the
    any-group loop: fp32 rounding apart, the kernel computes x @ (codes * scales)^T."""
    g = torch.Generator().manual_seed(rows * n + k)
    codes = torch.randint(-128, 128, (n, k), dtype=torch.int8, generator=g)
    scales = torch.rand(n, k // group, generator=g) * 0.02 + 0.001
    x = torch.randn(1, rows, k, generator=g)
    want = x.double() @ dequantize_q8(codes, scales).double().T
    eager = _Head(codes, scales)(x)
    got = _run_pte(_Head(codes, scales), x, tmp_path)
    assert got.shape == (1, rows, n)
    assert torch.allclose(eager.double(), want, rtol=1e-5, atol=1e-5)
    assert torch.allclose(got.double(), want, rtol=1e-5, atol=1e-5), (got.double() - want).abs().max()


def test_the_tied_table_is_stored_once(tmp_path: Path) -> None:
    """A tiny tied llama from a Q8_0 GGUF: the gguf preset's .pte is smaller than the same export with the LM head
    as XNNPACK int8 weights by (nearly) the table's bytes, and computes what the eager model does."""
    from common.pipeline import export_model
    from common.quant import Recipe, Rule, preset
    from common.runtime import PteModel
    from common.tokenizer import load_tokenizer
    from models.llama3.model import FAMILY
    from tests.checkpoints import write_gguf, write_tiny

    hf, hf_dir, _ = write_tiny("llama", tmp_path / "tiny")
    path = str(write_gguf(tmp_path / "q8.gguf", hf, "llama", load_tokenizer(hf_dir), qtype=T.Q8_0))
    gguf = preset("gguf")
    twice = Recipe("gguf-head8", (Rule("lm_head", "8da8w"), *gguf.rules))
    sizes = {}
    for name, recipe in (("once", gguf), ("twice", twice)):
        out = tmp_path / name / "model.pte"
        summary, _ = export_model(FAMILY, path, str(out), recipe, max_seq_len=8, max_context_len=32)
        sizes[name] = out.stat().st_size
        assert ("zoo::linear_q8.out" in summary.operators) == (name == "once")
    vocab, dim = hf.config.vocab_size, hf.config.hidden_size
    assert sizes["twice"] - sizes["once"] > 0.9 * vocab * dim, sizes

    from common.pipeline import prepare_quantized

    model, _ = prepare_quantized(FAMILY, path, gguf, max_context_len=32, last_logits_only=True)
    ids = [1, 17, 42, 99, 5]
    with torch.no_grad():
        want = model(torch.tensor([ids]), torch.tensor([0]))[0, -1]
    got = PteModel(tmp_path / "once" / "model.pte").forward(ids, 0)
    # int8 dynamic activations round differently in XNNPACK than in torchao's eager reference: bound, not equal
    assert torch.softmax(got, -1).sub(torch.softmax(want, -1)).abs().max() < 1e-2
    assert got.argmax() == want.argmax()
