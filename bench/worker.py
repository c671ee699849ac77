"""One benchmark row in its own process (so peak RSS and thread settings are its own).

`python -m bench.worker JOB.json RESULT.json`; JOB names the engine and carries the token ids. The parent
(`python -m bench`) writes the job, runs this, and reads the result.
"""

from __future__ import annotations

import gc
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common.io import peak_rss_mib


def make_engine(job: dict):
    from bench import engines

    kind = job["engine"]
    if kind == "ours":
        return engines.PteEngine(job["artefact"], job["threads"])
    if kind == "export_llm":
        return engines.ExportLlmEngine(job["artefact"], job["threads"])
    if kind == "llama.cpp":
        return engines.LlamaCppEngine(job["artefact"], job["threads"], job["n_ctx"])
    if kind == "transformers":
        return engines.TransformersEngine(job["artefact"], job["threads"])
    raise ValueError(f"unknown engine {kind!r}")


def empty_result(prompts: list[list[int]], depths: list[int]) -> dict:
    return {"load_s": [], "prefill_s": {str(len(p)): [] for p in prompts}, "decode_s": [],
            "decode_depth_s": {str(d): [] for d in depths}, "peak_rss_mib": 0.0}


def depth_prompt(job: dict, depth: int) -> list[int]:
    """The prompt a decode at `depth` follows: `depth` tokens of the text (depth 0: its first token alone)."""
    return job["depth_tokens"][:depth] if depth else job["prompts"][0][:1]


def run_in_process(job: dict) -> dict:
    """Load (repeats times), warm up, then per repeat: prefill each prompt, decode after the first prompt, and
    decode after a prompt of each depth."""
    repeats, prompts, n_decode, depths = job["repeats"], job["prompts"], job["decode_tokens"], job.get("depths", [])
    res = empty_result(prompts, depths)
    for _ in range(repeats):
        engine = None  # the previous instance goes before the next loads: peak RSS is one engine's
        gc.collect()
        engine = make_engine(job)
        engine.setup()
        t0 = time.perf_counter()
        engine.load()
        res["load_s"].append(time.perf_counter() - t0)
    engine.prefill(prompts[0][:16])  # warm-up: first-call allocations, page faults in the weights
    engine.decode(4)
    for _ in range(repeats):
        for p in prompts:
            res["prefill_s"][str(len(p))].append(engine.prefill(p))
        engine.prefill(prompts[0])
        res["decode_s"].append(engine.decode(n_decode))
        for d in depths:
            engine.prefill(depth_prompt(job, d))
            res["decode_depth_s"][str(d)].append(engine.decode(n_decode))
    res["peak_rss_mib"] = peak_rss_mib()  # before perplexity: transformers' full-sequence logits are not inference
    if job.get("ppl_tokens"):
        import numpy as np

        t0 = time.perf_counter()
        reference = np.load(job["reference"]) if job.get("reference") else None
        res |= engine.score(job["ppl_tokens"], reference)
        res["ppl_s"] = time.perf_counter() - t0
    return res


STATS = re.compile(r"load ([\d.]+) ms .*\| prefill (\d+) tok at ([\d.]+) tok/s \| decode (\d+) tok at ([\d.]+) tok/s "
                   r"\| peak RSS ([\d.]+) MiB")


def run_cpp(job: dict) -> dict:
    """The C++ runner, one process per measurement: its own stats line gives load, prefill, decode and peak RSS."""
    repeats, prompts, n_decode, depths = job["repeats"], job["prompts"], job["decode_tokens"], job.get("depths", [])
    res = empty_result(prompts, depths)

    def once(ids: list[int], new_tokens: int) -> tuple[float, float]:
        with tempfile.NamedTemporaryFile("w", suffix=".ids") as f:
            f.write(" ".join(map(str, ids)))
            f.flush()
            cmd = [job["runner"], "--model", job["artefact"], "--prompt-ids", f.name, "--max-new-tokens",
                   str(new_tokens), "--ignore-eos", "--print-ids"]
            proc = subprocess.run(cmd, capture_output=True, text=True)
        m = STATS.search(proc.stderr)
        if proc.returncode != 0 or not m:
            raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr[-500:]}")
        load_ms, n_prompt, prefill_tps, n_gen, decode_tps, rss = (float(g) for g in m.groups())
        res["load_s"].append(load_ms / 1000)
        res["peak_rss_mib"] = max(res["peak_rss_mib"], rss)
        return n_prompt / prefill_tps, (n_gen - 1) / decode_tps if n_gen > 1 else 0.0

    once(prompts[0][:16], 4)  # warm-up: the .pte into the page cache
    for _ in range(repeats):
        for p in prompts:
            prefill, decode = once(p, n_decode + 1 if p is prompts[0] else 1)
            res["prefill_s"][str(len(p))].append(prefill)
            if p is prompts[0]:
                res["decode_s"].append(decode)
        for d in depths:
            res["decode_depth_s"][str(d)].append(once(depth_prompt(job, d), n_decode + 1)[1])
    return res


def main(argv: list[str]) -> int:
    from common.cli import quiet_imports

    quiet_imports()
    job = json.loads(Path(argv[0]).read_text())
    res = run_cpp(job) if job["engine"] == "cpp" else run_in_process(job)
    Path(argv[1]).write_text(json.dumps(res))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
