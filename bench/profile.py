"""Where a `.pte`'s decode time goes: ExecuTorch's ETDump profiler, grouped the way bench/README.md reports it.

`python -m bench.profile --pte build/cache/smollm2-135m-8da4w-*/model.pte [--context 128] [--tokens 64]`

Prefills `--context` tokens of the bench text, then times `--tokens` decode steps exactly as the Python runner
takes them (argmax sampling, one `Method.execute` per token) with ETDump on, and splits each step into:
delegated linears (XNNPACK GEMM events), AQLM linears (our kernel), other XNNPACK ops, XNNPACK call overhead
(delegate call time not inside any XNNPACK op), SDPA and KV-cache update (llama custom ops), other portable ops,
the runtime's own per-execute overhead, sampling, and Python (wall time outside `execute`).
"""

from __future__ import annotations

import statistics
import tempfile
from pathlib import Path

# the runtime's own (non-delegated) operators: subtracted from Method::execute to leave the runtime's overhead
OPERATOR_CATEGORIES = ("AQLM linears (zoo kernel)", "SDPA (custom_sdpa)", "KV update (llama::update_cache)",
                       "other portable ops")
CATEGORIES = ("delegated linears", "other XNNPACK ops", "XNNPACK call overhead", *OPERATOR_CATEGORIES,
              "runtime overhead", "sampling (argmax)", "Python overhead")


def category(name: str, delegated: bool) -> str | None:
    if delegated:
        return "delegated linears" if name.startswith("Fully Connected") else "other XNNPACK ops"
    if name in ("llama::custom_sdpa.out", "zoo::custom_sdpa.out"):
        return "SDPA (custom_sdpa)"
    if name in ("zoo::code2x8_lut_matmat.out", "zoo::code2x8_lut8_matmat.out"):
        return "AQLM linears (zoo kernel)"
    if name == "llama::update_cache.out":
        return "KV update (llama::update_cache)"
    if name in ("DELEGATE_CALL", "OPERATOR_CALL", "Method::execute") or name.startswith("Method::"):
        return None  # containers, accounted below
    return "other portable ops"


def profile(pte: str, prompt: list[int], tokens: int, threads: int) -> dict[str, float]:
    """Milliseconds per decoded token in each category."""
    from executorch.devtools import Inspector
    from executorch.extension.pybindings.portable_lib import _unsafe_reset_threadpool

    from common.runtime import PteModel, generate
    from common.sampler import Sampler

    _unsafe_reset_threadpool(threads)
    model = PteModel(pte, etdump=True)
    n_prefill = (len(prompt) + model.max_seq_len - 1) // model.max_seq_len
    # tokens + 1 samples: the first comes from the prefill's logits, then `tokens` decode steps
    gen = generate(model, prompt, Sampler(), tokens + 1, ignore_eos=True)
    wall_s, sample_s = gen.decode_s, gen.sample_s
    with tempfile.TemporaryDirectory() as tmp:
        etdump = Path(tmp) / "etdump.etdp"
        model.write_etdump(str(etdump), str(Path(tmp) / "debug.bin"))
        inspector = Inspector(etdump_path=str(etdump))
    ms = dict.fromkeys(CATEGORIES, 0.0)
    delegate_ms = execute_ms = xnn_ms = 0.0
    for block in inspector.event_blocks:
        if block.name != "Execute":
            continue
        for ev in block.events:
            if ev.perf_data is None:
                continue
            # one raw sample per occurrence, in execution order: skip the prefill calls
            per_call = len(ev.perf_data.raw) // (n_prefill + tokens) or 1
            total = sum(ev.perf_data.raw[n_prefill * per_call :])
            if ev.name == "DELEGATE_CALL":
                delegate_ms += total
            elif ev.name == "Method::execute":
                execute_ms += total
            cat = category(ev.name, bool(ev.is_delegated_op))
            if cat:
                ms[cat] += total
                xnn_ms += total if ev.is_delegated_op else 0.0
    portable = sum(ms[k] for k in OPERATOR_CATEGORIES)
    ms["XNNPACK call overhead"] = max(delegate_ms - xnn_ms, 0.0)
    ms["runtime overhead"] = max(execute_ms - delegate_ms - portable, 0.0)
    ms["sampling (argmax)"] = sample_s * 1e3
    ms["Python overhead"] = max(wall_s * 1e3 - execute_ms - sample_s * 1e3, 0.0)
    out = {k: v / tokens for k, v in ms.items()}
    out["total (wall)"] = wall_s * 1e3 / tokens
    return out


def main(argv: list[str] | None = None) -> int:
    import os

    from bench.corpus import corpus
    from bench.run import _positive
    from common.cli import ArgumentParser
    from common.errors import UserError
    from common.runtime import PteModel
    from common.tokenizer import load_tokenizer

    p = ArgumentParser(prog="python -m bench.profile", description=__doc__.splitlines()[0])
    p.add_argument("--pte", required=True, help="a zoo .pte (tokenizer.json beside it)")
    p.add_argument("--context", type=_positive, default=128, help="prompt tokens before the timed decode")
    p.add_argument("--tokens", type=_positive, default=64, help="decode steps profiled")
    p.add_argument("--repeats", type=_positive, default=3, help="profiles taken; the median of each category is shown")
    p.add_argument("--threads", type=_positive, default=os.cpu_count())
    args = p.parse_args(argv)
    limit = PteModel(args.pte).max_context_len  # the program first: its errors name the .pte
    if args.context + args.tokens + 1 > limit:
        raise UserError(f"--context {args.context} + --tokens {args.tokens}: more than {args.pte}'s context of {limit}")
    prompt = load_tokenizer(Path(args.pte).resolve().parent).encode(corpus()[1])[: args.context]
    runs = [profile(args.pte, prompt, args.tokens, args.threads) for _ in range(args.repeats)]
    med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    total = med["total (wall)"]
    print(f"{args.pte}: decode after {args.context} tokens, {args.tokens} steps, {args.threads} threads, "
          f"median of {args.repeats}: {total:.2f} ms/token ({1e3 / total:.1f} tok/s)\n")
    print("| where | ms/token | share |\n|---|---|---|")
    for k in CATEGORIES:
        print(f"| {k} | {med[k]:.3f} | {100 * med[k] / total:.1f}% |")
    return 0


if __name__ == "__main__":
    from common.cli import run_cli

    raise SystemExit(run_cli(main))
