"""Every model package exposes the same three CLIs as `python -m models.<name>.<cli>`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MODELS = {"llama3": "bundled SmolLM2", "qwen3": "Qwen3"}


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("cli", ["export", "inference", "quantize_and_save"])
def test_cli_entry_points(model: str, cli: str) -> None:
    res = subprocess.run([sys.executable, "-m", f"models.{model}.{cli}", "--help"], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert f"python -m models.{model}.{cli}" in res.stdout and MODELS[model] in res.stdout
    assert "--checkpoint" in res.stdout
