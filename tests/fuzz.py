"""A fuzzer for the zoo's file readers: mutates real files and checks that every reader either accepts the result
or refuses it in one `error:` line — no traceback, crash, hang or out-of-bounds access.

Readers and the files they get (seeds written fresh each run: a tiny llama checkpoint as HF dir + GGUF, the
tokenizer files, a tiny XNNPACK .pte):
- Python, in process: GGUF, config.json, model.safetensors (+ a sharded index) -> load_model; tokenizer.json and
  tokenizer_config.json -> load_tokenizer;
- C++ runner, one process per case: tokenizer.json, tokenizer_config.json (--tokenize-only), .pte (--model);
- Python runtime, one process per case (a native crash must not end the fuzzer): .pte -> PteModel + forward.

Mutations: byte flips, truncation, insertion, runs of 0xff, and for JSON a value replaced by one of another type or
a key dropped. `python -m tests.fuzz --cases 10000 --seconds 1800` (`make fuzz`); CI runs a few hundred, seeded.
"""

from __future__ import annotations

import argparse
import collections
import json
import random
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
JSON_VALUES = [None, "x", "", -1, 0, 1.5, 1e30, 2**63, [], {}, True, [1, "a"], {"a": 1}]
CASE_SECONDS = 20  # a reader in this process
PROCESS_SECONDS = 60  # a reader as a process: the Python runtime's start alone (torch + executorch) takes ~6 s


def mutate_bytes(rng: random.Random, data: bytes) -> bytes:
    b = bytearray(data)
    kind = rng.randrange(4)
    if kind == 0 and b:
        for _ in range(rng.randint(1, 8)):  # mostly near the start, where headers and lengths live
            b[rng.randrange(min(len(b), 4096) if rng.random() < 0.7 else len(b))] = rng.randrange(256)
    elif kind == 1:
        b = b[: rng.randrange(len(b) + 1)]
    elif kind == 2:
        i = rng.randrange(len(b) + 1)
        b[i:i] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
    elif b:
        i = rng.randrange(len(b))
        b[i : i + rng.randint(1, 64)] = b"\xff" * 8
    return bytes(b)


def _paths(value, prefix=()):
    yield prefix
    if isinstance(value, dict):
        for k, v in list(value.items())[:64]:
            yield from _paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value[:8]):
            yield from _paths(v, (*prefix, i))


def mutate_json(rng: random.Random, data: bytes) -> bytes:
    value = json.loads(data)
    paths = [p for p in _paths(value) if p]
    if not paths:
        return mutate_bytes(rng, data)
    path = rng.choice(paths)
    node = value
    for key in path[:-1]:
        node = node[key]
    if isinstance(node, dict) and rng.random() < 0.2:
        del node[path[-1]]
    else:
        node[path[-1]] = rng.choice(JSON_VALUES)
    return json.dumps(value).encode()


def mutate(rng: random.Random, name: str, data: bytes) -> bytes:
    return mutate_json(rng, data) if name.endswith(".json") and rng.random() < 0.7 else mutate_bytes(rng, data)


@dataclass
class Report:
    outcomes: collections.Counter = field(default_factory=collections.Counter)
    failures: list[str] = field(default_factory=list)

    def record(self, target: str, outcome: str, detail: str = "") -> None:
        self.outcomes[(target, outcome)] += 1
        if outcome not in ("accepted", "refused"):
            self.failures.append(f"{target}: {outcome}: {detail}")


def _in_process(call: Callable[[], object]) -> tuple[str, str]:
    """('accepted' | 'refused' | 'traceback' | 'hang', detail) for a reader called in this process."""
    from common.errors import UserError
    from common.timeout import Timeout, deadline

    try:
        with deadline(CASE_SECONDS):
            call()
        return "accepted", ""
    except UserError:
        return "refused", ""  # printed as one line (common.errors.one_line)
    except Timeout:
        return "hang", f"over {CASE_SECONDS} s"
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as e:  # Exception, and pyo3's PanicException (a Rust panic in tokenizers/safetensors)
        return "traceback", "".join(traceback.format_exception_only(type(e), e)).strip()[:300] + " at " + repr(
            traceback.extract_tb(e.__traceback__)[-1][:3])


def _subprocess(cmd: list[str]) -> tuple[str, str]:
    """The same classes for a reader run as a process: exit 0, or 1/2 with one `error:` line; else a failure."""
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, errors="replace", timeout=PROCESS_SECONDS)
    except subprocess.TimeoutExpired:
        return "hang", f"over {PROCESS_SECONDS} s: {cmd}"
    ours = [ln for ln in proc.stderr.splitlines() if ln.strip() and not ln.startswith("[")]  # runtime logs: "[x.cpp:1]"
    if proc.returncode == 0:
        return "accepted", ""
    if proc.returncode < 0:
        return f"signal {-proc.returncode}", " ".join(cmd)
    if proc.returncode in (1, 2) and len(ours) == 1 and ours[0].startswith("error: "):
        return "refused", ""
    return f"exit {proc.returncode}", (proc.stderr[-300:] or proc.stdout[-300:])


def make_seeds(root: Path) -> dict[str, Path]:
    """The real files mutated: a tiny llama (HF dir, GGUF) and an XNNPACK .pte of a tiny decoder."""
    import torch

    from common.contract import CAUSAL_LM, causal_lm_constants
    from common.decoder import ModelConfig, Transformer
    from common.export import export_pte
    from common.tokenizer import load_tokenizer
    from tests.checkpoints import write_tiny

    _, hf_dir, gguf = write_tiny("llama", root / "tiny")
    vocab = load_tokenizer(hf_dir).vocab_size  # the .pte takes the tiny tokenizer's ids, so runs get past the check
    cfg = ModelConfig(vocab_size=vocab, dim=32, n_layers=1, n_heads=2, n_kv_heads=1, hidden_dim=64, head_dim=16)
    torch.manual_seed(0)
    pte = root / "pte" / "model.pte"
    export_pte(Transformer(cfg, 16, last_logits_only=True).eval(), pte, CAUSAL_LM, causal_lm_constants(cfg, 4, 16, (1,)))
    return {"hf": Path(hf_dir), "gguf": Path(gguf), "pte": pte}


def fuzz(cases: int, seconds: float, seed: int = 0, cpp_runner: Path | None = None, log=print,
         keep: Path | None = None) -> Report:
    """Run up to `cases` mutated inputs within `seconds`; the report counts outcomes and lists failures (their
    inputs copied under `keep`, when given, to reproduce them)."""
    from common.pipeline import load_model
    from common.tokenizer import load_tokenizer
    from models.llama3.model import FAMILY

    rng = random.Random(seed)
    report = Report()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        seeds = make_seeds(root)
        hf = seeds["hf"]
        targets: list[tuple[str, Callable[[Path], tuple[str, str]]]] = [
            ("gguf", lambda d: _in_process(lambda: load_model(FAMILY, str(d / "m.gguf"), max_context_len=8))),
            ("config.json", lambda d: _in_process(lambda: load_model(FAMILY, str(d), max_context_len=8))),
            ("model.safetensors", lambda d: _in_process(lambda: load_model(FAMILY, str(d), max_context_len=8))),
            ("tokenizer.json", lambda d: _in_process(lambda: load_tokenizer(d))),
            ("tokenizer_config.json", lambda d: _in_process(lambda: load_tokenizer(d))),
        ]
        py_pte = [sys.executable, "-c", "import sys; sys.path.insert(0, sys.argv[1]); from common.cli import run_cli; "
                  "from common.runtime import PteModel; sys.exit(run_cli(lambda a: PteModel(sys.argv[2]).forward([1], 0) "
                  "is None))", str(ROOT)]
        if cpp_runner:
            run = [str(cpp_runner), "--prompt", "a"]
            targets += [
                ("tokenizer.json (c++)", lambda d: _subprocess([*run, "--tokenize-only", "--tokenizer", str(d)])),
                ("tokenizer_config.json (c++)", lambda d: _subprocess([*run, "--tokenize-only", "--tokenizer", str(d)])),
                ("pte (c++)", lambda d: _subprocess([*run, "--model", str(d / "model.pte"), "--tokenizer", str(hf),
                                                     "--max-new-tokens", "2"])),
            ]
        # the Python runtime's .pte target costs a process start (~5 s, torch + executorch imports) a case: one
        # round in five
        schedule = targets * 5 + [("pte (python)", lambda d: _subprocess([*py_pte, str(d / "model.pte")]))]
        t0 = time.monotonic()
        for case in range(cases):
            if time.monotonic() - t0 > seconds:
                break
            target, check = schedule[case % len(schedule)]
            work = root / f"case{case}"
            name = target.split(" ")[0]
            if name == "gguf":
                work.mkdir()
                (work / "m.gguf").write_bytes(mutate(rng, name, seeds["gguf"].read_bytes()))
            elif name == "pte":
                work.mkdir()
                (work / "model.pte").write_bytes(mutate(rng, name, seeds["pte"].read_bytes()))
            else:
                shutil.copytree(hf, work)
                (work / name).write_bytes(mutate(rng, name, (hf / name).read_bytes()))
            outcome, detail = check(work)
            report.record(target, outcome, f"case {case} (seed {seed}): {detail}")
            if keep and outcome not in ("accepted", "refused"):
                shutil.copytree(work, keep / f"case{case}", dirs_exist_ok=True)
            shutil.rmtree(work, ignore_errors=True)
            if log and case % 500 == 499:
                log(f"{case + 1} cases, {len(report.failures)} failures, {time.monotonic() - t0:.0f} s")
    return report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.fuzz", description=__doc__.split("\n\n")[0])
    p.add_argument("--cases", type=int, default=10000)
    p.add_argument("--seconds", type=float, default=1800, help="stop after this long, whatever --cases says")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cpp-runner", type=Path, help="a built runner (make llama3-xnnpack) to fuzz as well")
    p.add_argument("--keep", type=Path, help="copy each failing case's files here")
    args = p.parse_args(argv)
    from common.cli import quiet_imports

    quiet_imports()
    report = fuzz(args.cases, args.seconds, args.seed, args.cpp_runner, log=lambda m: print(m, file=sys.stderr),
                  keep=args.keep)
    for (target, outcome), n in sorted(report.outcomes.items()):
        print(f"{target:28s} {outcome:16s} {n}")
    print(f"{sum(report.outcomes.values())} cases, {len(report.failures)} failures")
    for failure in report.failures[:50]:
        print("FAIL", failure)
    return 1 if report.failures else 0


if __name__ == "__main__":
    sys.exit(main())
