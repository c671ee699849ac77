"""AQLM 2x8 on the fast kernel (common/quant/aqlm_lut8.py, `zoo::code2x8_lut8_matmat`, runners/kernels/aqlm.cpp):
int8 lookup tables for decode, bf16 for prefill. The packed layout, the op against the exact product within the
rounding it allows, the kernel in a `.pte` against the op in eager on odd shapes (both paths), and a tiny AQLM model exported with `--aqlm-kernel lut8`."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from common.quant.aqlm import TABLE_BLOCK, AqlmLinear, dequantize_2x8, lut_matmat
from common.quant.aqlm_lut8 import (
    GEMM_ROWS,
    AqlmLut8Linear,
    pack_books,
    pack_codes,
    unpack_books,
    unpack_codes,
)
from tests.test_aqlm import _random


def _layer(n_out: int, n_in: int, seed: int, bias: bool = True) -> AqlmLinear:
    layer = AqlmLinear(n_in, n_out, bias=bias)
    codes, codebooks, scales, b = _random(n_out, n_in, seed=seed)
    layer.codes.copy_(codes), layer.codebooks.copy_(codebooks.float()), layer.scales.copy_(scales.float())
    if bias:
        layer.bias.copy_(b)
    return layer


def _table_steps(x: torch.Tensor, layer: AqlmLinear) -> torch.Tensor:
    """s_block summed over the blocks, per row [N]: one table step of every block (the kernel's table entries may
    round the other way than the reference's, one step of their block's scale, where they are within float rounding
    of a half)."""
    rows = x.float().reshape(-1, layer.in_features // 8, 8)
    books = layer.codebooks.float()[:, :, 0, :]
    steps = torch.zeros(rows.shape[0])
    for g0 in range(0, rows.shape[1], TABLE_BLOCK):
        lut = torch.einsum("ngb,mkb->ngmk", rows[:, g0:g0 + TABLE_BLOCK], books)
        steps += lut.abs().amax(dim=(1, 2, 3)) / 127
    return steps


def test_codes_pack_in_lane_order_and_round_trip() -> None:
    """100 outputs, 11 groups: units of 8 groups x 64 outputs, block-major ([2, 2, 8, 2, 64]), the last of each
    padding (code 0); lane 2j is output j, lane 2j + 1 output 32 + j; books bf16 [2, 4, 256, 2], codeword k's
    coordinates 2q, 2q + 1 at [c, q, k]."""
    codes, codebooks, _, _ = _random(100, 88)
    packed = pack_codes(codes)
    assert packed.shape == (2, 2, 8, 2, 64) and packed.dtype == torch.int8
    assert torch.equal(packed[0, 0, 3, 1, 2 * 5], codes[5, 3, 1]) and torch.equal(packed[0, 0, 3, 1, 2 * 5 + 1], codes[37, 3, 1])
    # group 10 is group 2 of group block 1; outputs 64..95 in output block 1's even lanes, 96..99 in odd lanes 1..7
    assert torch.equal(packed[1, 1, 2, 0, 2 * 3 + 1], codes[99, 10, 0]) and torch.equal(packed[1, 0, 2, 1, 0], codes[0, 10, 1])
    assert not packed[:, 1, :, :, 9::2].any() and not packed[1, :, 3:].any()
    assert torch.equal(unpack_codes(packed, 100, 11), codes)
    books = pack_books(codebooks)
    assert books.shape == (2, 4, 256, 2) and books.dtype == torch.bfloat16
    assert books[1, 3, 200, 0] == codebooks[1, 200, 0, 6].float().bfloat16()
    assert torch.equal(unpack_books(books), codebooks.float().bfloat16().float())


@pytest.mark.parametrize("n_in", [64, 200])
def test_op_is_the_exact_product_within_its_rounding(n_in: int) -> None:
    """Below GEMM_ROWS rows the op is the table reference on bf16-rounded inputs and codebooks, each table read off
    the exact <x_group, codeword> by at most half its block's step, so within scales[o] * sum_blocks 16 * s_block / 2
    of dequantize + linear on the rounded operands; from GEMM_ROWS rows (prefill) the product of bf16-rounded
    operands; both within 2^-8 sum |x| |W| (each operand within 2^-9 relative) of the exact product, and not equal."""
    layer = _layer(37, n_in, seed=n_in)
    packed = AqlmLut8Linear(layer)
    books = layer.codebooks.bfloat16().float()
    w, w16 = (dequantize_2x8(layer.codes, b, layer.scales) for b in (layer.codebooks, books))
    for n_rows in (3, GEMM_ROWS):
        x = torch.randn(n_rows, n_in, generator=torch.Generator().manual_seed(n_rows))
        x16 = x.bfloat16().float()
        got, exact = packed(x), F.linear(x, w, layer.bias)
        bf16_bound = 2**-8 * (x.abs() @ w.abs().T)
        if n_rows < GEMM_ROWS:
            ref = lut_matmat(x16, layer.codes, books, layer.scales, layer.bias, int8_tables=True)
            torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)
            tables = layer.scales.reshape(1, -1) * (2 * TABLE_BLOCK * _table_steps(x16, layer) / 2)[:, None]
            assert ((got - F.linear(x16, w16, layer.bias)).abs() <= tables + 1e-6).all()
            bound = bf16_bound + tables
        else:
            torch.testing.assert_close(got, F.linear(x16, w16.bfloat16().float(), layer.bias), atol=1e-5, rtol=1e-5)
            bound = 2 * bf16_bound  # the weights round twice: codebooks, then the dequantized weight
        err = (got - exact).abs()
        assert (err <= bound + 1e-6).all() and err.max() > 1e-4, (n_rows, err.max())


@pytest.mark.parametrize("rows, n_in", [(1, 200), (3, 200), (7, 200), (8, 200), (13, 200), (1, 136), (3, 136)])
def test_pte_runs_the_kernel_as_the_reference(rows: int, n_in: int) -> None:
    """A program holding zoo::code2x8_lut8_matmat.out in the Python runtime (library "aqlm") against the op in
    eager: below 8 rows the table path (200 inputs = 3 blocks of 8 groups and one of 1; 100 outputs = a block of 64
    and a part; 136 inputs = 3 blocks, 6 units, so that two threads share the middle block), within one table step
    of any block (truncating instead of rounding would be off by ~8); from 8 rows the GEMM over the packed codes in
    bf16 (vdpbf16ps, or fp32 on rounded operands), within fp32 rounding."""
    from common.kernels import load_kernel_libraries, runtime_operator_names

    load_kernel_libraries()
    assert "zoo::code2x8_lut8_matmat.out" in runtime_operator_names()
    out, ref, step = _kernel_and_op(rows, n_in)
    if rows >= GEMM_ROWS:
        torch.testing.assert_close(out, ref, atol=1e-4, rtol=1e-4)
        return
    err = (out - ref).abs().reshape(rows, -1)
    assert (err <= step / 2 + 1e-5).all(), (err.max(), step.min())


def _kernel_and_op(rows: int, n_in: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A random 100-output lut8 linear on `rows` rows of `n_in` inputs, as a one-op program in the Python runtime
    (whichever aqlm library is loaded) and in eager (below 8 rows the table reference on bf16-rounded operands):
    (the program's output, eager's, one table step of every block summed [rows, O])."""
    from executorch.exir import EdgeCompileConfig, to_edge
    from executorch.runtime import Runtime

    layer = _layer(100, n_in, seed=rows)
    packed = AqlmLut8Linear(layer).eval()
    x = torch.randn(1, rows, n_in, generator=torch.Generator().manual_seed(rows))
    program = to_edge(torch.export.export(packed, (x,)),
                      compile_config=EdgeCompileConfig(_check_ir_validity=False)).to_executorch()
    out = Runtime.get().load_program(program.buffer).load_method("forward").execute([x])[0]
    step = layer.scales.reshape(1, -1) * _table_steps(x.bfloat16().float(), layer).reshape(-1, 1)
    return out, packed(x), step


def test_tiny_aqlm_model_with_int8_tables(tmp_path: Path, capsys) -> None:
    """`export --aqlm-kernel lut8` of the tiny HF AQLM checkpoint: the program holds the lut8 op (and not the exact
    one) and the exact program's block-linear bytes plus its code padding (64 outputs a block), less half the
    codebooks' (bf16); prefilled in one call (the bf16
    GEMM) within bf16 rounding of the exact program; token by token the table path, within int8-dynamic noise (KL < 1e-3, the same top-1)
    of eager with the same tables and of the exact model; the C++ runner picks the Python runtime's greedy tokens; on a
    float checkpoint the flag is one error line."""
    import subprocess

    from common.cli import export_main, run_cli
    from common.pipeline import load_model
    from common.quant.aqlm_lut8 import use_lut8
    from common.runtime import PteModel
    from models.llama3.model import FAMILY
    from runners.tests.conftest import build_runner
    from tests.helpers import greedy, kl_per_position, step_logits
    from tests.test_aqlm_model import LINEARS, write_hf_aqlm

    hf, path = write_hf_aqlm(tmp_path / "ckpt")
    pte, exact_pte = tmp_path / "lut8.pte", tmp_path / "exact.pte"
    for out, flags in ((pte, ["--aqlm-kernel", "lut8"]), (exact_pte, [])):
        assert run_cli(export_main(FAMILY), ["--checkpoint", str(path), "--output", str(out), "--max-seq-len", "16",
                                             "--max-context-len", "64", *flags]) == 0
    printed = [line for line in capsys.readouterr().out.split("\n") if line.startswith("block linear weights")]
    stored = [int(line.split("(")[1].split()[0]) for line in printed]
    shapes = [layer.get_submodule(name).weight.shape for layer in hf.model.layers for name in LINEARS]
    padding = sum((-o % 64) * i // 8 * 2 for o, i in shapes)  # code rows up to a whole block of 64 outputs
    assert stored[0] == stored[1] + padding - len(shapes) * 2 * 256 * 8 * 2, (printed, padding)  # bf16 codebooks
    data = pte.read_bytes()
    assert b"zoo::code2x8_lut8_matmat" in data and b"zoo::code2x8_lut_matmat" not in data

    exact, _, _ = load_model(FAMILY, str(path), max_context_len=64)
    tables, _, _ = load_model(FAMILY, str(path), max_context_len=64)
    assert use_lut8(tables) == 7 * len(hf.model.layers)
    prompt, tokens = list(range(5, 17)), [40, 41, 42, 43, 44, 45]
    program = PteModel(pte)
    prefilled, exact_prefill = program.forward(prompt, 0), PteModel(exact_pte).forward(prompt, 0)
    assert kl_per_position(exact_prefill[None], prefilled[None]).item() < 1e-3
    assert prefilled.argmax() == exact_prefill.argmax() and (prefilled - exact_prefill).abs().max() > 1e-5
    with torch.no_grad():
        want = step_logits(_eager(tables), prompt, tokens)[1:]
        reference = step_logits(_eager(exact), prompt, tokens)[1:]
    got = step_logits(program, prompt, tokens)[1:]
    # int8-dynamic noise, bounded in KL: one table entry within float rounding of a half rounds the other way in
    # the kernel (its sums run in another order) and moves this random tiny model's logits by up to 0.5 (measured;
    # the tables against the exact product move them 0.6), where a wrong code or lane gives KL of order 1
    assert (got.argmax(-1) == want.argmax(-1)).all() and kl_per_position(want, got).max() < 1e-3
    kl = kl_per_position(reference, got)
    assert 0 < kl.max() < 1e-3 and (got.argmax(-1) == reference.argmax(-1)).all(), kl

    ids = greedy(PteModel(pte), prompt, 8)
    (tmp_path / "ids.txt").write_text(" ".join(map(str, prompt)))
    proc = subprocess.run([str(build_runner("llama3")), "--model", str(pte), "--prompt-ids", str(tmp_path / "ids.txt"),
                           "--max-new-tokens", "8", "--temperature", "0", "--ignore-eos", "--print-ids"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and proc.stdout.split() == [str(t) for t in ids], (ids, proc.stdout, proc.stderr)

    float_dir = path.parent / "float" / "hf"
    assert run_cli(export_main(FAMILY), ["--checkpoint", str(float_dir), "--aqlm-kernel", "lut8",
                                         "--output", str(tmp_path / "x.pte")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --aqlm-kernel lut8:") and err.count("\n") == 1 and "no AQLM linears" in err
    assert not (tmp_path / "x.pte").exists()


def _eager(model):
    from common.runtime import EagerModel

    return EagerModel(model, ())


_PORTABLE_CHECK = """
import sys, ctypes
import executorch.runtime  # the runtime whose registry the library's kernels join, loaded first as before
from tests.test_aqlm_lut8 import _kernel_and_op
ctypes.CDLL(sys.argv[1], mode=ctypes.RTLD_GLOBAL)  # this build of the aqlm library, not the usual one
worst = []
for rows, n_in in ((1, 200), (3, 200), (1, 136), (8, 200), (13, 200)):
    out, ref, step = _kernel_and_op(rows, n_in)
    err = (out - ref).abs().reshape(rows, -1)
    # tables: err over half a table step of every block (as test_pte_runs_the_kernel_as_the_reference); GEMM: err
    worst.append(float((err / (step / 2 + 1e-5)).max()) if rows < 8 else float(err.max()))
print(" ".join(f"{w:.3g}" for w in worst))
"""


@pytest.mark.parametrize("flags", [("-mno-avx512vbmi", "-mno-avx512bf16"), ("-mno-avx512f",)],
                         ids=["avx512-without-vbmi-bf16", "avx2"])
def test_kernel_paths_of_other_cpus_give_the_op(tmp_path: Path, flags: tuple[str, ...]) -> None:
    """The aqlm library built without VBMI and AVX512_BF16 (the paths CPUs without them take, tables read a byte at
    a time and bf16-rounded operands in fp32 FMAs), and without AVX-512 at all (an AVX2 machine: the same paths on
    256-bit vectors), gives the op's numbers too: in a fresh process that loads only that build, the kernel against
    eager for 1, 3 (tables; 1 also on 136 inputs, a block shared by two threads) and 8, 13 rows (GEMM)."""
    import subprocess
    import sys

    from common.kernels import ROOT, build_shared_library, library_for

    lib = build_shared_library(library_for("zoo::code2x8_lut8_matmat"), tmp_path / "build", flags)
    proc = subprocess.run([sys.executable, "-c", _PORTABLE_CHECK, str(lib)], capture_output=True, text=True,
                          cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    worst = [float(v) for v in proc.stdout.split()]
    assert len(worst) == 5 and max(worst[:3]) <= 1 and max(worst[3:]) < 1e-4, worst
