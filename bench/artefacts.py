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
        if res.returncode == 0 and out.is_file() and peak:
            (out.parent / STATS).write_text(json.dumps({"seconds": seconds, "peak_rss_mib": float(peak.group(1))}))
    if res.returncode != 0 or not out.is_file():
        raise UserError(f"export of {name} failed (exit {res.returncode}; its error is printed above)")
    return out


STATS = "export.json"  # beside a cached export: its wall seconds and the export process's peak RSS


def export_stats(pte: str | Path) -> dict | None:
    """What cached_export measured when it made `pte` (None for exports cached before it measured)."""
    path = Path(pte).parent / STATS
    return json.loads(path.read_text()) if path.is_file() else None
