"""`python -m bench.sdpa_kernel`: one `llama::custom_sdpa` call at SmolLM2's attention shapes, ExecuTorch's kernel (the
pip wheel's custom-ops library: what the Python runtime runs) against the zoo's (runners/kernels/llama.cpp: what
the C++ runner runs), same run: microseconds per call for decode at several depths and for a 128-token prefill
chunk, and the largest difference between the two outputs.

Each kernel runs in its own process: both register the same operator names, and ExecuTorch aborts on a second
registration. The programs are one-op `.pte` files (no delegate) fed the same random query and caches. Prints a
table; nothing is kept. `tests/test_llama_kernels.py` checks the zoo kernel's numbers through the same child.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
KERNELS = ("executorch", "zoo")


@dataclass(frozen=True)
class Case:
    """One custom_sdpa call: query positions start .. start + seq - 1 over a cache of `slots` positions."""

    name: str
    seq: int
    start: int
    heads: int = 9  # SmolLM2: 9 query heads over 3 kv heads of 64
    kv_heads: int = 3
    head_dim: int = 64
    slots: int = 8192
    masked: bool = False  # an additive [seq, slots] mask over every slot instead of the causal rule

    def inputs(self, seed: int = 0) -> list[torch.Tensor]:
        g = torch.Generator().manual_seed(seed)
        q = torch.randn(1, self.seq, self.heads, self.head_dim, generator=g)
        k = torch.randn(1, self.slots, self.kv_heads, self.head_dim, generator=g)
        v = torch.randn(1, self.slots, self.kv_heads, self.head_dim, generator=g)
        if not self.masked:
            return [q, k, v]
        hidden = torch.rand(self.seq, self.slots, generator=g) < 0.5  # a ring's mask: most slots hidden
        mask = torch.where(hidden, float("-inf"), torch.randn(self.seq, self.slots, generator=g))
        mask[:, 0] = 0.0  # every row sees at least one slot
        return [q, k, v, mask]


class _Sdpa(torch.nn.Module):
    """The caches are constants of the program, as a model's are its state: an input would be copied in per call."""

    def __init__(self, case: Case):
        super().__init__()
        self.case = case
        _, k, v, *_ = case.inputs()
        self.register_buffer("k", k)
        self.register_buffer("v", v)

    def forward(self, q, mask=None):
        if mask is None:
            return torch.ops.llama.custom_sdpa(q, self.k, self.v, self.case.start, None, 0.0, True)
        return torch.ops.llama.custom_sdpa(q, self.k, self.v, self.case.start, mask, 0.0, False)


def program_inputs(case: Case) -> list[torch.Tensor]:
    """What the program takes: the query (and mask); the caches are inside it."""
    q, _, _, *mask = case.inputs()
    return [q, *mask]


def write_program(case: Case, path: Path) -> None:
    """`case` as a one-op `.pte` (portable kernels; custom_sdpa is the llama library's)."""
    from executorch.exir import EdgeCompileConfig, to_edge

    from common.kernels import library_for

    library_for("llama::custom_sdpa").load()
    ep = torch.export.export(_Sdpa(case), tuple(program_inputs(case)))
    path.write_bytes(to_edge(ep, compile_config=EdgeCompileConfig(_check_ir_validity=False)).to_executorch().buffer)


def load_kernels(which: str) -> None:
    """Register `which` llama:: kernels in this process: ExecuTorch's custom-ops library, or the zoo's C++ file built
    as a shared library (build/kernels/llama_zoo)."""
    from common.kernels import library_for

    lib = library_for("llama::custom_sdpa")
    if which == "zoo":
        lib = replace(lib, name="llama_zoo", python_module=None, python_shared=True)
    lib.load()


def child(which: str, work: Path, names: list[str], repeats: int) -> None:
    """In a fresh process: run each case's program with `which` kernels; write outputs and microseconds per call."""
    from executorch.runtime import Runtime
    from safetensors.torch import load_file, save_file

    load_kernels(which)
    times, outs = {}, {}
    for name in names:
        inputs = load_file(str(work / f"{name}.in.safetensors"))
        args = [inputs[key] for key in sorted(inputs)]  # 0: q, 1: mask
        method = Runtime.get().load_program(work / f"{name}.pte").load_method("forward")
        outs[name] = method.execute(args)[0].clone()
        t0 = time.perf_counter()
        for _ in range(repeats):
            method.execute(args)
        times[name] = (time.perf_counter() - t0) / repeats * 1e6
    save_file(outs, str(work / f"{which}.out.safetensors"))
    (work / f"{which}.times.json").write_text(json.dumps(times))


def run(cases: list[Case], which: str, work: Path, repeats: int) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    """Outputs and microseconds per call of `cases` with `which` kernels, in a child process."""
    from safetensors.torch import load_file, save_file

    for case in cases:
        if not (work / f"{case.name}.pte").exists():
            write_program(case, work / f"{case.name}.pte")
            save_file({f"{i}": t for i, t in enumerate(program_inputs(case))}, str(work / f"{case.name}.in.safetensors"))
    code = f"from bench.sdpa_kernel import child; child({which!r}, __import__('pathlib').Path({str(work)!r}), " \
           f"{[c.name for c in cases]!r}, {repeats})"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{which} kernels: child exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    return load_file(str(work / f"{which}.out.safetensors")), json.loads((work / f"{which}.times.json").read_text())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.sdpa_kernel", description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=50)
    p.add_argument("--depths", type=int, nargs="+", default=[0, 512, 2048, 8063])
    args = p.parse_args(argv)
    cases = [Case(f"decode at {d}", 1, d) for d in args.depths]
    cases += [Case(f"prefill 128 at {d}", 128, d) for d in (0, 2048)]
    with tempfile.TemporaryDirectory() as tmp:
        results = {which: run(cases, which, Path(tmp), args.repeats) for which in KERNELS}
    print(f"{torch.get_num_threads()} threads; microseconds per call; SmolLM2 shapes (9 heads over 3 kv heads of 64)\n")
    print("| call | ExecuTorch's kernel | zoo kernel | speed-up | max abs diff |")
    print("|---|---|---|---|---|")
    (et_out, et_us), (zoo_out, zoo_us) = results["executorch"], results["zoo"]
    for case in cases:
        diff = (et_out[case.name] - zoo_out[case.name]).abs().max().item()
        print(f"| {case.name} | {et_us[case.name]:.1f} | {zoo_us[case.name]:.1f} | "
              f"×{et_us[case.name] / zoo_us[case.name]:.2f} | {diff:.1e} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
