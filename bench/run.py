"""`python -m bench`: build what is missing, run every engine of every registered model, report.

Each row runs in its own `bench.worker` process, one after another (never two at once: they would share
the cores). Rows that cannot run here (llama-cpp-python not installed, no C++ toolchain) are reported as
skipped with the reason, not dropped.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench.artefacts import CACHE, LLAMA_CPP_FORMATS, cached_export, export_stats, requantized_gguf
from bench.registry import BenchModel, discover
from common.errors import UserError
from common.io import check_writable_dir, read_text_arg, staged_outputs

ROOT = Path(__file__).resolve().parent.parent
ENGINES = ("ours", "cpp", "export_llm", "llama.cpp", "transformers")
MAX_DEPTH = -1  # in Settings.depths: as deep as the model allows
DEPTH_ENGINES = ("ours", "cpp", "export_llm", "llama.cpp")  # transformers' eager fp32 is a reference, not a peer for speed


@dataclass(frozen=True)
class Settings:
    threads: int
    repeats: int = 3
    prompt_lens: tuple[int, ...] = (128, 512)
    decode_tokens: int = 128
    # decode tok/s after a prompt of each depth (llama-bench's -d); MAX_DEPTH: the model's context less the decode,
    # at most max_depth. Our builds are exported with the context the longest prompt or depth needs.
    depths: tuple[int, ...] = ()
    max_depth: int = 8192
    ppl_tokens: int = 512
    engines: tuple[str, ...] = ENGINES
    builds: tuple[str, ...] | None = None  # None: all of a model's builds
    text: str | None = None  # perplexity text (default: bench.corpus)
    cache: Path = CACHE  # where our exports are kept (bench.artefacts)


def log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def build_cpp_runner(package: str) -> Path:
    """`make <package>-xnnpack` (incremental); the runner binary."""
    target = f"{package}-xnnpack"
    res = subprocess.run(["make", "--no-print-directory", target], cwd=ROOT, capture_output=True, text=True)
    binary = ROOT / "build" / target / f"{package}_runner"
    if res.returncode != 0 or not binary.is_file():
        raise UserError(f"make {target} failed: {(res.stderr or res.stdout)[-800:]}")
    return binary


def model_depths(model: BenchModel, s: Settings) -> list[int]:
    """s.depths with MAX_DEPTH resolved: the model's context (its checkpoint's max_position_embeddings, at most
    s.max_depth) less the decoded tokens."""
    if MAX_DEPTH not in s.depths:
        return list(s.depths)
    from common.pipeline import open_checkpoint, read_config
    from models import family

    fam = family(model.package)
    longest = min(read_config(fam, open_checkpoint(fam, model.gguf())).max_position_embeddings, s.max_depth)
    return sorted({longest - s.decode_tokens - 1 if d == MAX_DEPTH else d for d in s.depths})


def context_needed(s: Settings, depths: list[int]) -> int:
    """Positions the longest prompt and the token its prefill timing decodes (the C++ runner refuses a prompt that
    fills the context), or the deepest decode, fill."""
    return max(*(n + 1 for n in s.prompt_lens), *(d + s.decode_tokens + 1 for d in depths))


def with_context(args: list[str], context: int) -> list[str]:
    """Export flags with --max-context-len raised to `context` where they ask for less."""
    args = list(args)
    if "--max-context-len" in args:
        i = args.index("--max-context-len") + 1
        args[i] = str(max(int(args[i]), context))
    return args


def plan_rows(model: BenchModel, s: Settings, context: int = 0) -> list[dict]:
    """The rows of one model, with what each needs built (our exports with at least `context` positions); nothing
    is built here."""
    gguf = model.gguf()
    rows = []
    for b in model.builds:
        for runner in b.runners:
            engine = "ours" if runner == "python" else "cpp"
            if (s.builds and b.name not in s.builds) or engine not in s.engines:
                continue
            rows.append({"model": model.name, "engine": engine, "build": b.name,
                         "export_args": with_context(b.export_args, context),
                         "label": f"ours {b.name} ({'Python' if runner == 'python' else 'C++'})",
                         "checkpoint": b.checkpoint, "make_target": b.make_target})
    if "export_llm" in s.engines and model.package == "llama3":  # its llama; other families: not a peer row
        rows.append({"model": model.name, "engine": "export_llm", "label": "ExecuTorch export_llm 8da4w (Python)",
                     "context": max(context, 1024)})
    qtype = gguf_type(gguf)
    if "llama.cpp" in s.engines:
        rows.append({"model": model.name, "engine": "llama.cpp", "label": f"llama.cpp {qtype}", "artefact": gguf})
        for fmt in LLAMA_CPP_FORMATS:  # llama.cpp's own formats, re-quantized by its quantizer (prepare)
            if fmt != qtype:
                rows.append({"model": model.name, "engine": "llama.cpp", "label": f"llama.cpp {fmt} (from {qtype})",
                             "requantize": fmt})
    if "transformers" in s.engines:
        rows.append({"model": model.name, "engine": "transformers", "label": "transformers fp32 (eager)",
                     "artefact": gguf})
    return rows


def gguf_type(path: str) -> str:
    """The GGUF's weight type as llama.cpp names it (general.file_type), e.g. Q4_1."""
    from gguf import GGUFReader, LlamaFileType

    field = GGUFReader(path).fields.get("general.file_type")
    if field is None:
        return "GGUF"
    name = LlamaFileType(int(field.parts[field.data[0]][0])).name
    return name.removeprefix("MOSTLY_").removeprefix("ALL_")


def prepare(row: dict, model: BenchModel, s: Settings) -> None:
    """Export / build / import-check what the row needs; on failure the row carries the reason."""
    try:
        if row["engine"] in ("ours", "cpp"):
            name = f"{model.name}-{row['build']}"
            checkpoint = model.gguf()
            if row.get("checkpoint"):
                checkpoint = str(ROOT / row["checkpoint"])
                if not os.path.exists(checkpoint):
                    row["error"] = f"skipped: {row['checkpoint']} not made (make {row['make_target']})"
                    return
            t0 = time.perf_counter()
            row["artefact"] = str(cached_export(model.package, checkpoint, row["export_args"], name, s.cache, log))
            log(f"{name}: {row['artefact']} ({time.perf_counter() - t0:.0f} s)")
            row["export"] = export_stats(row["artefact"])
            if row["engine"] == "cpp":
                row["runner"] = str(build_cpp_runner(model.package))
        elif row["engine"] == "export_llm":
            from bench.export_llm import cached_export_llm

            row["artefact"] = str(cached_export_llm(model.gguf(), 128, row["context"], s.cache, log))
            row["export"] = export_stats(row["artefact"])
        elif row["engine"] == "llama.cpp":
            import llama_cpp  # noqa: F401

            if row.get("requantize"):
                row["artefact"] = str(requantized_gguf(model.gguf(), row["requantize"], s.cache, log))
        elif row["engine"] == "transformers":
            import accelerate  # noqa: F401  transformers' GGUF loading needs it
        row["size_bytes"] = os.path.getsize(row["artefact"])
    except ImportError as e:
        row["error"] = f"skipped: {e.name} not installed (pip install -e '.[bench]')"
    except UserError as e:
        row["error"] = f"skipped: {e}"


def run_row(row: dict, tokens: list[int], s: Settings, reference: Path | None = None,
            depths: list[int] = ()) -> None:
    """Run the row's worker process; its result goes under row['raw'], a failure under row['error']. `tokens`
    covers the longest prompt and depth."""
    prompts = [tokens[:n] for n in s.prompt_lens]
    depths = list(depths) if row["engine"] in DEPTH_ENGINES else []
    job = {"engine": row["engine"], "artefact": row["artefact"], "runner": row.get("runner"), "threads": s.threads,
           "repeats": s.repeats, "prompts": prompts, "decode_tokens": s.decode_tokens,
           "depths": depths, "depth_tokens": tokens[: max(depths, default=0)],
           "n_ctx": context_needed(s, depths) + 16,
           "ppl_tokens": tokens[: s.ppl_tokens] if row["engine"] != "cpp" else None,
           "reference": str(reference) if reference else None}
    with tempfile.TemporaryDirectory() as tmp:
        job_path, res_path = Path(tmp) / "job.json", Path(tmp) / "result.json"
        job_path.write_text(json.dumps(job))
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "bench.worker", str(job_path), str(res_path)], cwd=ROOT,
                              capture_output=True, text=True)
        if proc.returncode != 0 or not res_path.is_file():
            row["error"] = f"failed: {proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else proc.returncode}"
            log(f"{row['label']}: {row['error']}")
            return
        row["raw"] = json.loads(res_path.read_text())
        log(f"{row['label']}: done in {time.perf_counter() - t0:.0f} s")


def reference_logprobs(model: BenchModel, tokens: list[int], path: Path) -> Path:
    """Log-probabilities [N-1, vocab] of the unquantized model (the GGUF dequantized to fp32, eager) along `tokens`,
    saved to `path` (.npy): every row's KL and top-1 agreement are measured against it."""
    import numpy as np
    import torch

    from common.pipeline import load_model
    from models import family

    net, _, _ = load_model(family(model.package), model.gguf(), max_context_len=len(tokens))
    with torch.no_grad():
        logits = net(torch.tensor([tokens]), torch.tensor([0]))[0, :-1]
    np.save(path, logits.double().log_softmax(-1).float().numpy())
    return path


def run_bench(models: list[BenchModel], s: Settings, limits: dict[str, float] | None = None) -> list[dict]:
    """Plan, prepare and run every row; rows come back summarized (see bench.report), with their speeds as
    fractions of the machine's `limits` (bench.limits.measure) when given."""
    from bench.corpus import corpus
    from bench.limits import fractions, matmul_params
    from bench.report import summarize
    from common.tokenizer import load_tokenizer

    path, text, digest = corpus(s.text)
    rows = []
    for model in models:
        tokens = load_tokenizer(model.gguf()).encode(text)
        if len(tokens) < s.ppl_tokens:
            raise UserError(f"{path}: {len(tokens)} tokens, fewer than the {s.ppl_tokens} scored for perplexity")
        depths = model_depths(model, s)
        context = context_needed(s, depths)
        timed = tokens * -(-context // len(tokens))  # the text, repeated where a depth needs more: speed needs no new words
        with tempfile.TemporaryDirectory() as tmp:
            reference = reference_logprobs(model, tokens[: s.ppl_tokens], Path(tmp) / "reference.npy")
            for row in plan_rows(model, s, context):
                row["text"] = {"path": str(path), "sha256": digest}
                prepare(row, model, s)
                if "error" not in row:
                    run_row(row, timed, s, reference, depths)
                rows.append(summarize(row, list(s.prompt_lens), s.decode_tokens))
                if limits and "raw" in row and row["engine"] != "transformers":  # it runs fp32, not the file
                    row["limits"] = fractions(row, limits, matmul_params(model.gguf()), max(s.prompt_lens))
    return rows


def _csv(value: str) -> tuple[str, ...]:
    items = tuple(v.strip() for v in value.split(",") if v.strip())
    if not items:
        raise argparse.ArgumentTypeError(f"expected a comma-separated list, got {value!r}")
    return items


def _positive(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value!r}")
    return n


def _depths(value: str) -> tuple[int, ...]:
    if value.strip() == "none":
        return ()
    out = []
    for v in _csv(value):
        if v == "max":
            out.append(MAX_DEPTH)
        elif v.isdigit():
            out.append(int(v))
        else:
            raise argparse.ArgumentTypeError(f"expected depths >= 0 or 'max', comma-separated, got {value!r}")
    return tuple(out)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    from common.cli import ArgumentParser

    p = ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    p.add_argument("--models", type=_csv, help="comma-separated registered models (default: all)")
    p.add_argument("--engines", type=_csv, default=ENGINES, help=f"subset of {','.join(ENGINES)}")
    p.add_argument("--builds", type=_csv, help="our builds to run, e.g. 8da4w,fp32 (default: all)")
    p.add_argument("--threads", type=_positive, default=os.cpu_count(), help="threads for every engine (default: all cores)")
    p.add_argument("--repeats", type=_positive, default=3, help="timed runs per measurement (median and best reported)")
    p.add_argument("--prompt-lens", type=lambda v: tuple(_positive(x) for x in _csv(v)), default=(128, 512, 2048))
    p.add_argument("--decode-tokens", type=_positive, default=128)
    p.add_argument("--depths", type=_depths, default=(0, 512, 2048, MAX_DEPTH),
                   help="decode after prompts of these lengths (llama-bench's -d; 'max': the model's context less "
                        "the decode, at most --max-depth); 'none' skips the sweep (default: 0,512,2048,max)")
    p.add_argument("--max-depth", type=_positive, default=8192, help="cap on 'max' in --depths (default 8192)")
    p.add_argument("--ppl-tokens", type=_positive, default=512, help="tokens of the text scored for perplexity (>= 2)")
    p.add_argument("--text", help="perplexity text (default: /usr/share/common-licenses/GPL-3)")
    p.add_argument("--out", default=str(ROOT / "bench" / "results"), help="directory for the JSON and PNG")
    p.add_argument("--cache", default=str(CACHE), help="directory for our exports (reused while nothing changed)")
    p.add_argument("--list", action="store_true", help="list the registered models and exit")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    from bench.report import markdown, write_chart, write_json

    args = parse_args(argv)
    registered = discover()
    if args.list:
        for name, m in registered.items():
            print(f"{name}: models/{m.package}, builds {', '.join(dict.fromkeys(b.name for b in m.builds))}")
        return 0
    unknown = set(args.models or ()) - set(registered)
    if unknown:
        raise UserError(f"--models {','.join(sorted(unknown))}: not registered (have {', '.join(registered)})")
    bad = set(args.engines) - set(ENGINES)
    if bad:
        raise UserError(f"--engines {','.join(sorted(bad))}: expected some of {','.join(ENGINES)}")
    models = [registered[n] for n in (args.models or registered)]
    builds = {b.name for m in models for b in m.builds}
    if args.builds and not set(args.builds) <= builds:
        raise UserError(f"--builds {','.join(sorted(set(args.builds) - builds))}: not a build of "
                        f"{', '.join(m.name for m in models)} (have {', '.join(sorted(builds))})")
    if args.ppl_tokens < 2:
        raise UserError(f"--ppl-tokens {args.ppl_tokens}: expected at least 2 (perplexity scores tokens after the first)")
    check_writable_dir(args.out, "--out")
    if args.text:
        read_text_arg(args.text, "--text")  # now, not after ten minutes of exports
    s = Settings(args.threads, args.repeats, args.prompt_lens, args.decode_tokens, args.depths, args.max_depth,
                 args.ppl_tokens, args.engines, args.builds, args.text, Path(args.cache))
    from bench.limits import measure

    limits = measure(s.threads)  # printed with the table (a bad --text still gets its one error line alone)
    rows = run_bench(models, s, limits)
    table = markdown(rows, list(s.prompt_lens), s.decode_tokens, limits)
    print(table)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = Path(args.out)
    settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(s).items()}
    with staged_outputs(out) as stage:  # the JSON and the chart land together or not at all
        write_json(stage / f"bench-{stamp}.json", rows, settings | {"limits": limits})
        write_chart(stage / f"bench-{stamp}.png", rows, list(s.prompt_lens), s.decode_tokens,
                    f"{s.threads} threads, median of {s.repeats}")
    print(f"wrote {out / f'bench-{stamp}.json'} and {out / f'bench-{stamp}.png'}")
    return 0
