"""This machine's limits, measured in the bench's own run, and what a row's speed is as a fraction of them.

- Memory read bandwidth: the best of a few reductions over a 1 GiB float32 tensor (torch, all bench threads).
  Decoding one token reads every weight once, so its ceiling is bandwidth / bytes per token; bytes per token is
  taken as the artefact's size (the `.pte` or GGUF: the embedding table counts whole, though a token reads one row
  of it, so the fraction is slightly overstated for untied models and exact for tied ones read as the LM head).
- int8 GEMM peak: the best of a few 2048^3 int8 x int8 -> int32 products (`torch._int_mm`, oneDNN's VNNI path).
  Prefill does 2 ops per weight per token (every matmul weight once, the tied embedding as the LM head).
"""

from __future__ import annotations

import time


def _best_seconds(fn, repeats: int) -> float:
    fn()  # warm-up: page faults, thread pool, kernel choice
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def read_bandwidth(threads: int, mib: int = 1024, repeats: int = 5) -> float:
    """Bytes per second read by a float32 sum over `mib` MiB (far past any cache)."""
    import torch

    torch.set_num_threads(threads)
    x = torch.ones(mib * 2**20 // 4)
    return x.numel() * 4 / _best_seconds(x.sum, repeats)


def int8_peak(threads: int, n: int = 2048, repeats: int = 5) -> float:
    """int8 multiply-adds x 2 per second of an n x n x n int8 GEMM."""
    import torch

    torch.set_num_threads(threads)
    g = torch.Generator().manual_seed(0)
    a, b = (torch.randint(-128, 128, (n, n), dtype=torch.int8, generator=g) for _ in range(2))
    return 2 * n**3 / _best_seconds(lambda: torch._int_mm(a, b), repeats)


def matmul_params(gguf: str) -> int:
    """Weights a token is multiplied through: every 2-D tensor of the GGUF, the embedding table only as a tied LM
    head (no output.weight)."""
    import numpy as np
    from gguf import GGUFReader

    sizes = {t.name: int(np.prod(t.shape)) for t in GGUFReader(gguf).tensors if len(t.shape) == 2}
    n = sum(v for k, v in sizes.items() if k != "token_embd.weight")
    return n + (sizes.get("token_embd.weight", 0) if "output.weight" not in sizes else 0)


def measure(threads: int) -> dict[str, float]:
    return {"read_bytes_per_s": read_bandwidth(threads), "int8_ops_per_s": int8_peak(threads)}


def fractions(row: dict, limits: dict[str, float], params: int, prompt_len: int) -> dict[str, float]:
    """decode tok/s / (bandwidth / bytes per token) and prefill tok/s at `prompt_len` / (int8 peak / 2 ops per
    weight per token), medians."""
    out = {}
    if row.get("size_bytes"):
        out["decode_of_bandwidth"] = row["decode_tps"]["median"] * row["size_bytes"] / limits["read_bytes_per_s"]
    out["prefill_of_int8_peak"] = row["prefill_tps"][str(prompt_len)]["median"] * 2 * params / limits["int8_ops_per_s"]
    return out
