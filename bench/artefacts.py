"""Exports made by the real export CLI, cached under build/cache/ by a hash of everything that shapes them.

Shared by the test suite (the SmolLM2 `.pte` fixture) and the benchmark, so a run of either reuses the other's
files when flags, sources and package versions match.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from common.errors import UserError

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / "build" / "cache"
KEY_PACKAGES = ("torch", "executorch", "torchao", "gguf")


def export_key(package: str, checkpoint: str, args: Sequence[str]) -> str:
    """Hash of the export flags, the checkpoint (path, size, mtime), package versions and the exporting sources."""
    h = hashlib.sha256(" ".join([package, *args]).encode())
    st = Path(checkpoint).stat()
    h.update(f"{Path(checkpoint).resolve()}:{st.st_size}:{st.st_mtime_ns}".encode())
    for pkg in KEY_PACKAGES:
        h.update(f"{pkg}={importlib.metadata.version(pkg)}".encode())
    for path in sorted([*ROOT.glob("common/**/*.py"), *ROOT.glob(f"models/{package}/*.py"), ROOT / "models/__init__.py"]):
        h.update(str(path.relative_to(ROOT)).encode() + path.read_bytes())
    return h.hexdigest()[:16]


def cached_export(package: str, checkpoint: str, args: Sequence[str], name: str, cache: Path = CACHE, log=None) -> Path:
    """`python -m models.<package>.export --checkpoint <checkpoint> <args>` into <cache>/<name>-<key>/model.pte.

    Older exports under the same name (other sources or flags) are deleted: each is ~100 MB or more. A lock per
    name makes concurrent callers (pytest-xdist workers, a bench beside the tests) wait for one export, not race.
    """
    from filelock import FileLock

    out = cache / f"{name}-{export_key(package, checkpoint, args)}" / "model.pte"
    cache.mkdir(parents=True, exist_ok=True)
    with FileLock(cache / f"{name}.lock"):
        if out.is_file() and (out.parent / "tokenizer.json").is_file():
            return out
        for stale in cache.glob(f"{name}-*"):
            shutil.rmtree(stale, ignore_errors=True)
        cmd = [sys.executable, "-m", f"models.{package}.export", "--checkpoint", checkpoint, *args, "--output",
               str(out)]
        if log:
            log(f"exporting {name}: {' '.join(cmd[1:])}")
        t0 = time.perf_counter()
        # stderr passes through: the export's progress bars, and its one-line error if it fails
        res = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True)
        seconds = time.perf_counter() - t0
        peak = re.search(r"peak RSS (\d+) MiB", res.stdout)  # the export's own (common.io.peak_rss_mib)
        linears = re.search(r"block linear weights .*?\((\d+) bytes", res.stdout)  # common.quant.footprint
        if res.returncode == 0 and out.is_file() and peak:
            stats = {"seconds": seconds, "peak_rss_mib": float(peak.group(1))}
            if linears:  # printed by the causal-LM export CLI (common.cli), not by every package's
                stats["block_linear_bytes"] = int(linears.group(1))
            (out.parent / STATS).write_text(json.dumps(stats))
    if res.returncode != 0 or not out.is_file():
        raise UserError(f"export of {name} failed (exit {res.returncode}; its error is printed above)")
    return out


STATS = "export.json"  # beside a cached export: its wall seconds, the export process's peak RSS, block linear bytes


def export_stats(pte: str | Path) -> dict | None:
    """What cached_export measured when it made `pte` (None for exports cached before it measured)."""
    path = Path(pte).parent / STATS
    return json.loads(path.read_text()) if path.is_file() else None


# llama.cpp's formats the bench re-quantizes the GGUF to (besides the file's own), each scored for perplexity:
# the fastest of equal or better perplexity is what our builds are compared with (bench.report)
LLAMA_CPP_FORMATS = ("Q4_0", "Q8_0")


def requantized_gguf(gguf: str, qtype: str, cache: Path = CACHE, log=None) -> Path:
    """`gguf` re-quantized to llama.cpp's `qtype` (e.g. Q4_0) by llama.cpp's own quantizer (`llama_model_quantize`,
    what `llama-quantize --allow-requantize` runs, with its default per-tensor rules), cached under `cache`."""
    import ctypes
    import os

    import llama_cpp

    from common.io import atomic_path

    ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{qtype}", None)
    if ftype is None:
        raise UserError(f"llama.cpp format {qtype!r}: llama-cpp-python {llama_cpp.__version__} has no such file type")
    st = Path(gguf).stat()
    key = hashlib.sha256(f"{Path(gguf).resolve()}:{st.st_size}:{st.st_mtime_ns}:{qtype}:"
                         f"{llama_cpp.__version__}".encode()).hexdigest()[:16]
    out = cache / f"{Path(gguf).stem}-{qtype}-{key}.gguf"

    def make() -> None:
        params = llama_cpp.llama_model_quantize_default_params()
        params.ftype, params.allow_requantize, params.nthread = ftype, True, os.cpu_count() or 1
        with atomic_path(out) as tmp:
            rc = llama_cpp.llama_model_quantize(str(gguf).encode(), str(tmp).encode(), ctypes.byref(params))
            if rc != 0:
                raise UserError(f"{gguf}: llama.cpp could not re-quantize it to {qtype} (llama_model_quantize "
                                f"returned {rc})")

    return made_once(out, cache / f"{out.name}.lock", make,
                     log and (lambda: log(f"re-quantizing {Path(gguf).name} to {qtype} with llama.cpp's quantizer")))


def made_once(out: Path, lock: Path, make, announce=None) -> Path:
    """`out`, made by `make()` unless it exists; under a file lock, so concurrent callers wait for one maker.
    `announce()` runs first when it is made."""
    from filelock import FileLock

    lock.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(lock):
        if not out.is_file():
            if announce:
                announce()
            make()
    return out
