"""What a model package tells the shared pipeline and CLIs about itself."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class ModelSpec:
    name: str  # package name under models/, e.g. "llama3"
    title: str  # human name for help texts
    gguf_archs: tuple[str, ...]  # accepted `general.architecture` values
    hf_model_types: tuple[str, ...]  # accepted config.json `model_type` values
    default_checkpoint: Callable[[], str] | None = None  # used when --checkpoint is omitted
