"""`python -m bench.aqlm_kernel`: one linear of SmolLM2's shapes as AQLM 2x8 (runners/kernels/aqlm.cpp: the exact
kernel and the lut8 one, `export --aqlm-kernel lut8`) against the same linear as XNNPACK 8da4w and as XNNPACK fp32,
each a one-op `.pte` in the Python runtime, same run: microseconds per call for 1 input row (decode) and 128
(prefill), and the weight bytes each reads (common.quant.footprint, as the export counts them).

Random weights: the kernels' speed does not depend on the values. Prints a table; nothing is written.
"""

from __future__ import annotations

import argparse
import time

import torch

SHAPES = ((576, 576), (576, 1536), (1536, 576))  # (in, out): q/o_proj, gate/up_proj, down_proj


def _program(module: torch.nn.Module, x: torch.Tensor, xnnpack: bool):
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import EdgeCompileConfig, to_edge_transform_and_lower
    from executorch.runtime import Runtime

    ep = torch.export.export(module, (x,))
    et = to_edge_transform_and_lower(ep, partitioner=[XnnpackPartitioner()] if xnnpack else [],
                                     compile_config=EdgeCompileConfig(_check_ir_validity=False)).to_executorch()
    program = Runtime.get().load_program(et.buffer)
    return program, program.load_method("forward")  # the method needs its program alive


def _time(program_method, x: torch.Tensor, repeats: int) -> float:
    _, method = program_method
    method.execute([x])
    t0 = time.perf_counter()
    for _ in range(repeats):
        method.execute([x])
    return (time.perf_counter() - t0) / repeats * 1e6


def builds(n_in: int, n_out: int):
    """(name, module, xnnpack, weight bytes) of the four builds of one linear."""
    from torchao.quantization import Int8DynamicActivationIntxWeightConfig, quantize_
    from torchao.quantization.granularity import PerGroup

    from common.quant.aqlm import AqlmLinear
    from common.quant.aqlm_lut8 import AqlmLut8Linear
    from common.quant.footprint import weight_bytes

    g = torch.Generator().manual_seed(0)
    aqlm = AqlmLinear(n_in, n_out)
    aqlm.codes.copy_(torch.randint(-128, 128, aqlm.codes.shape, generator=g, dtype=torch.int8))
    aqlm.codebooks.copy_(torch.randn(aqlm.codebooks.shape, generator=g) * 0.1)
    fp32 = torch.nn.Linear(n_in, n_out, bias=False)
    q4 = torch.nn.Linear(n_in, n_out, bias=False)
    quantize_(q4, Int8DynamicActivationIntxWeightConfig(weight_dtype=torch.int4, weight_granularity=PerGroup(32)))
    named = (("aqlm 2x8", aqlm, False), ("aqlm lut8", AqlmLut8Linear(aqlm), False), ("8da4w xnnpack", q4, True),
             ("fp32 xnnpack", fp32, True))
    return tuple((name, module, xnnpack, weight_bytes(module)) for name, module, xnnpack in named)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.aqlm_kernel", description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=200)
    p.add_argument("--rows", type=int, nargs="+", default=[1, 128])
    args = p.parse_args(argv)
    from common.kernels import load_kernel_libraries
    from common.runtime import leave_cores_to_executorch

    load_kernel_libraries()
    leave_cores_to_executorch()  # once, for every program timed below
    print(f"{'shape (in x out)':>18} {'build':>14} {'weight KiB':>10} " + " ".join(f"{f'{m} rows us':>12}" for m in args.rows))
    for n_in, n_out in SHAPES:
        for name, module, xnnpack, nbytes in builds(n_in, n_out):
            cells = []
            for m in args.rows:
                x = torch.randn(1, m, n_in)
                reps = max(5, args.repeats // m)
                cells.append(f"{_time(_program(module.eval(), x, xnnpack), x, reps):12.1f}")
            print(f"{f'{n_in} x {n_out}':>18} {name:>14} {nbytes / 1024:10.0f} " + " ".join(cells), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
