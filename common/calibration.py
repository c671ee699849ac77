"""Real English text to fit on (SGT training, AQLM calibration and tuning), disjoint from the text the bench and
the quality tests measure perplexity on (GPL-3, bench/corpus.py)."""

from __future__ import annotations

import importlib
from pathlib import Path

LICENSES = Path("/usr/share/common-licenses")
FILES = ("Apache-2.0", "Artistic", "CC0-1.0", "GFDL-1.3", "GPL-2", "MPL-2.0")  # not GPL-3 / LGPL-3


def calibration_text() -> str:
    """Debian's license texts (GPL-3 held out), else CPython's standard-library module docstrings."""
    texts = [(LICENSES / n).read_text(encoding="utf-8") for n in FILES if (LICENSES / n).is_file()]
    if texts:
        return "\n\n".join(texts)
    mods = ("argparse", "collections", "dataclasses", "json", "logging", "pathlib", "subprocess", "threading")
    return "\n\n".join(importlib.import_module(m).__doc__ or "" for m in mods)
