"""`python -m bench.sdpa_kernel`: one attention call at SmolLM2's shapes, ExecuTorch's `llama::custom_sdpa` kernel (the
pip wheel's custom-ops library) against the zoo's `zoo::custom_sdpa` (runners/kernels/sdpa.h, which the C++
runners also run for `llama::custom_sdpa`), same run, same process: microseconds per call for decode at several
depths and for a 128-token prefill chunk, and the largest difference between the two outputs.

The programs are one-op `.pte` files (no delegate, the caches constants inside them) fed the same random query.
Prints a table; nothing is kept. `tests/test_llama_kernels.py` checks the zoo kernel against torch with them.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass

import torch

KERNELS = ("llama", "zoo")  # the op namespace a program calls: ExecuTorch's kernel, or the zoo's


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
    cache_dtype: torch.dtype = torch.float32  # float16: export --kv-cache-dtype fp16's caches (the zoo's kernel only)

    def inputs(self, seed: int = 0) -> list[torch.Tensor]:
        g = torch.Generator().manual_seed(seed)
        q = torch.randn(1, self.seq, self.heads, self.head_dim, generator=g)
        k = torch.randn(1, self.slots, self.kv_heads, self.head_dim, generator=g).to(self.cache_dtype)
        v = torch.randn(1, self.slots, self.kv_heads, self.head_dim, generator=g).to(self.cache_dtype)
        if not self.masked:
            return [q, k, v]
        hidden = torch.rand(self.seq, self.slots, generator=g) < 0.5  # a ring's mask: most slots hidden
        mask = torch.where(hidden, float("-inf"), torch.randn(self.seq, self.slots, generator=g))
        mask[:, 0] = 0.0  # every row sees at least one slot
        return [q, k, v, mask]


class _Sdpa(torch.nn.Module):
    """The caches are constants of the program, as a model's are its state: an input would be copied in per call."""

    def __init__(self, case: Case, namespace: str):
        super().__init__()
        self.case, self.op = case, getattr(torch.ops, namespace).custom_sdpa
        _, k, v, *_ = case.inputs()
        self.register_buffer("k", k)
        self.register_buffer("v", v)

    def forward(self, q, mask=None):
        if mask is None:
            return self.op(q, self.k, self.v, self.case.start, None, 0.0, True)
        return self.op(q, self.k, self.v, self.case.start, mask, 0.0, False)


def program_inputs(case: Case) -> list[torch.Tensor]:
    """What the program takes: the query (and mask); the caches are inside it."""
    q, _, _, *mask = case.inputs()
    return [q, *mask]


def method(case: Case, namespace: str, args: list[torch.Tensor]):
    """`case` as a one-op program calling `namespace`::custom_sdpa (example inputs `args`), loaded in this
    process's ExecuTorch runtime."""
    from executorch.exir import EdgeCompileConfig, to_edge
    from executorch.runtime import Runtime

    from common.kernels import load_kernel_libraries

    load_kernel_libraries()
    ep = torch.export.export(_Sdpa(case, namespace), tuple(args))
    buffer = to_edge(ep, compile_config=EdgeCompileConfig(_check_ir_validity=False)).to_executorch().buffer
    program = Runtime.get().load_program(buffer)  # reads `buffer` in place: it must outlive the method
    return buffer, program, program.load_method("forward")


def run(case: Case, namespace: str, repeats: int) -> tuple[torch.Tensor, float]:
    """The output of `case` through `namespace`'s kernel, and microseconds per call (after one untimed call)."""
    args = program_inputs(case)
    *_alive, forward = method(case, namespace, args)
    out = forward.execute(args)[0].clone()
    t0 = time.perf_counter()
    for _ in range(repeats):
        forward.execute(args)
    return out, (time.perf_counter() - t0) / max(repeats, 1) * 1e6


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.sdpa_kernel", description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=50)
    p.add_argument("--depths", type=int, nargs="+", default=[0, 512, 2048, 8063])
    args = p.parse_args(argv)
    from common.runtime import leave_cores_to_executorch

    threads = torch.get_num_threads()  # ExecuTorch's thread pool has one thread per core too
    leave_cores_to_executorch()  # a 128-token chunk at depth 2048: 13.2 ms per call with torch's threads, 6.8 without
    cases = [Case(f"decode at {d}", 1, d) for d in args.depths]
    cases += [Case(f"prefill 128 at {d}", 128, d) for d in (0, 2048)]
    print(f"{threads} threads; microseconds per call; SmolLM2 shapes (9 heads over 3 kv heads of 64)\n")
    print("| call | ExecuTorch's kernel | zoo kernel | speed-up | max abs diff |")
    print("|---|---|---|---|---|")
    for case in cases:
        (et_out, et_us), (zoo_out, zoo_us) = (run(case, ns, args.repeats) for ns in KERNELS)
        print(f"| {case.name} | {et_us:.1f} | {zoo_us:.1f} | ×{et_us / zoo_us:.2f} | "
              f"{(et_out - zoo_out).abs().max().item():.1e} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
