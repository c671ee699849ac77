"""The zoo's model families, one line each: the package under models/ whose model.py defines `FAMILY`."""

from __future__ import annotations

import importlib

FAMILIES = (
    "llama3",
    "qwen3",
    "gemma4_31b",
)


def family(name: str):
    """The `common.family.Family` of models/<name>."""
    return importlib.import_module(f"models.{name}.model").FAMILY


def family_of(checkpoint):
    """The family that accepts an opened `common.checkpoint.Checkpoint`, or None."""
    return next((f for f in map(family, FAMILIES) if f.accepts(checkpoint)), None)
