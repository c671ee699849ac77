"""The fixed real English text perplexity is measured on: the GNU GPL v3 as Debian ships it (base-files).

Falling back to the license text CPython installs beside its standard library. Which file was used, and its
sha256, go into the results so runs are comparable only when the text is the same.
"""

from __future__ import annotations

import hashlib
import sys
import sysconfig
from pathlib import Path

from common.errors import UserError
from common.io import read_text_arg

CANDIDATES = (
    Path("/usr/share/common-licenses/GPL-3"),
    Path(sysconfig.get_paths()["stdlib"]) / "LICENSE.txt",
    Path(sys.base_prefix) / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "LICENSE.txt",
)


def corpus(path: str | None = None) -> tuple[Path, str, str]:
    """(path, text, sha256) of the perplexity text: `path` if given, else the first CANDIDATES file present."""
    if path:
        text = read_text_arg(path, "--text")
        return Path(path), text, hashlib.sha256(text.encode("utf-8")).hexdigest()
    for p in CANDIDATES:
        if p.is_file():
            data = p.read_bytes()
            return p, data.decode("utf-8"), hashlib.sha256(data).hexdigest()
    raise UserError(f"no perplexity text found (looked for {', '.join(map(str, CANDIDATES))}); pass --text FILE")
