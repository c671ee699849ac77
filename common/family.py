"""What a model family tells the shared pipeline, CLIs, runners and bench about itself.

A family is a package `models/<name>/` whose `model.py` defines `FAMILY`; `models/__init__.py` lists the
families (one line each). `common/` never branches on a family's name: it calls these hooks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from common.contract import CAUSAL_LM, Contract


def _same(fqn: str, t: torch.Tensor, cfg: Any) -> torch.Tensor:
    return t


@dataclass(frozen=True)
class Family:
    name: str  # package name under models/, e.g. "llama3"
    title: str  # human name for help texts
    hf_model_types: tuple[str, ...]  # accepted config.json `model_type` values
    gguf_archs: tuple[str, ...]  # accepted GGUF `general.architecture` values
    config_from_hf: Callable[[dict], Any]  # config.json dict -> the family's config
    config_from_gguf: Callable[[Any], Any]  # an opened common.checkpoint.Checkpoint -> the family's config
    to_hf: Callable[[Any], dict]  # the family's config -> a config.json dict transformers reads back
    build: Callable[..., nn.Module]  # (cfg, max_context_len, kernel, last_logits_only, max_seq_len) -> the model
    gguf_name: Callable[[str], str | None]  # GGUF tensor name -> the model's state-dict key (None: unused)
    fix_gguf_tensor: Callable[[str, torch.Tensor, Any], torch.Tensor] = _same  # (key, tensor, cfg): undo llama.cpp's layout
    default_checkpoint: Callable[[], str] | None = None  # bundled weights, used when --checkpoint is omitted
    default_checkpoint_name: str | None = None  # how help texts name them
    contract: Contract = CAUSAL_LM  # the .pte contract its exports follow
    # its own --quantize recipes: name -> (its config -> common.quant.Recipe); the function's docstring is the help
    recipes: dict[str, Callable[[Any], Any]] = field(default_factory=dict)

    def accepts(self, checkpoint) -> bool:
        """Whether an opened Checkpoint is of this family (by GGUF arch or config.json model_type)."""
        return checkpoint.architecture in (self.gguf_archs if checkpoint.kind == "gguf" else self.hf_model_types)
