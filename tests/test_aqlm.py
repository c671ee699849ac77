"""AQLM 2x8 (common/quant/aqlm.py) against the spec's formula: dequantization element by element, the op and the
lookup-table algorithm against dequantize + linear on odd shapes, and the op through torch.export."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from common.quant.aqlm import AqlmLinear, dequantize_2x8, lut_matmat


def _random(out_features: int, in_features: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    codes = torch.randint(-128, 128, (out_features, in_features // 8, 2), generator=g, dtype=torch.int8)
    codebooks = torch.randn(2, 256, 1, 8, generator=g).half()  # fp16, as on disk
    scales = (torch.rand(out_features, 1, 1, 1, generator=g) + 0.5).half()
    bias = torch.randn(out_features, generator=g)
    return codes, codebooks, scales, bias


def test_dequantize_follows_the_formula_with_twos_complement_codes() -> None:
    codes, codebooks, scales, _ = _random(5, 24)
    w = dequantize_2x8(codes, codebooks, scales)
    assert w.shape == (5, 24) and w.dtype == torch.float32
    cb = codebooks.float()
    for o in range(5):
        for i in range(24):
            j, b = divmod(i, 8)
            expected = float(scales[o, 0, 0, 0]) * sum(float(cb[m, int(codes[o, j, m]) % 256, 0, b]) for m in range(2))
            assert abs(float(w[o, i]) - expected) <= 1e-5 * max(1.0, abs(expected))


@pytest.mark.parametrize("rows", [1, 3, 17])
@pytest.mark.parametrize("with_bias", [False, True])
def test_op_and_lut_equal_dequantize_then_linear(rows: int, with_bias: bool) -> None:
    """37 output rows (not a multiple of any block), 1 to 17 input rows, with and without bias."""
    codes, codebooks, scales, bias = _random(37, 64, seed=rows)
    bias = bias if with_bias else None
    x = torch.randn(2, rows, 64, generator=torch.Generator().manual_seed(7))
    ref = F.linear(x, dequantize_2x8(codes, codebooks, scales), bias)
    op = torch.ops.zoo.code2x8_lut_matmat(x, codes, codebooks, scales, bias=bias)
    torch.testing.assert_close(op, ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(lut_matmat(x, codes, codebooks, scales, bias), ref, atol=1e-4, rtol=1e-4)
    out = torch.empty(0)
    torch.ops.zoo.code2x8_lut_matmat.out(x, codes, codebooks, scales, bias=bias, out=out)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


def test_aqlm_linear_exports_as_the_op() -> None:
    """torch.export keeps zoo::code2x8_lut_matmat (its fake impl gives the shape) and the program computes it."""
    layer = AqlmLinear(64, 37, bias=True)
    codes, codebooks, scales, bias = _random(37, 64)
    layer.codes.copy_(codes), layer.codebooks.copy_(codebooks.float()), layer.scales.copy_(scales.float())
    layer.bias.copy_(bias)
    x = torch.randn(1, 5, 64)
    ep = torch.export.export(layer, (x,))
    targets = {str(n.target) for n in ep.graph.nodes if n.op == "call_function"}
    assert "zoo.code2x8_lut_matmat.default" in targets, targets
    torch.testing.assert_close(ep.module()(x), F.linear(x, dequantize_2x8(codes, codebooks, scales), bias),
                               atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="not a multiple of 8"):
        AqlmLinear(60, 4)


@pytest.mark.parametrize("rows", [1, 7, 8, 13])
def test_pte_runs_the_kernel_as_eager(rows: int) -> None:
    """A program holding zoo::code2x8_lut_matmat.out runs in the Python runtime on runners/kernels/aqlm.cpp (library
    "aqlm" in common/kernels.py) and gives eager's output: the decode path (1 and 7 rows; 25 groups = six 4-group
    steps and a tail group; 37 outputs = nine 4-row blocks and a 1-row one) and the dequantize + GEMM path (8, 13
    rows: two 6-row register tiles and a 1-row rest; 37 outputs = two 16-row tiles and a part)."""
    from executorch.exir import EdgeCompileConfig, to_edge
    from executorch.runtime import Runtime

    from common.kernels import load_kernel_libraries, runtime_operator_names

    layer = AqlmLinear(200, 37, bias=True)
    codes, codebooks, scales, bias = _random(37, 200, seed=3)
    layer.codes.copy_(codes), layer.codebooks.copy_(codebooks.float()), layer.scales.copy_(scales.float())
    layer.bias.copy_(bias)
    x = torch.randn(1, rows, 200, generator=torch.Generator().manual_seed(rows))
    program = to_edge(torch.export.export(layer, (x,)),
                      compile_config=EdgeCompileConfig(_check_ir_validity=False)).to_executorch()
    load_kernel_libraries()
    assert "zoo::code2x8_lut_matmat.out" in runtime_operator_names()
    out = Runtime.get().load_program(program.buffer).load_method("forward").execute([x])[0]
    torch.testing.assert_close(out, layer(x), atol=1e-4, rtol=1e-4)
