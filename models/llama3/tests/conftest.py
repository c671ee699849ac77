"""Tiny random Llama checkpoints (GQA, llama3 RoPE scaling, tied and untied) in every format the CLIs read."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

ROPE_SCALING = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                "original_max_position_embeddings": 16}
VARIANTS = {
    # Llama 3.2 1B-like: GQA 4:2, tied embeddings, llama3 RoPE scaling
    "tied": dict(num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True, rope_scaling=ROPE_SCALING),
    # Llama 3 8B-like: GQA 8:2, untied LM head, no scaling
    "untied": dict(num_attention_heads=8, num_key_value_heads=2, tie_word_embeddings=False),
}


@dataclass(frozen=True)
class Tiny:
    name: str
    hf: object  # transformers.LlamaForCausalLM, eval mode
    tokenizer: object  # common.tokenizer.Tokenizer
    dir: str  # HF checkpoint dir
    gguf: str  # F32 GGUF (q/k permuted as llama.cpp writes them; rope_freqs for the scaled variant)


def _rope_freqs(hf) -> torch.Tensor:
    """llama.cpp's `rope_freqs` for an HF llama3-scaled config: the per-pair divisors of the inverse frequencies."""
    from common.decoder import ModelConfig
    from common.nn.rope import inv_frequencies

    cfg = ModelConfig.from_hf(hf.config.to_dict())
    return inv_frequencies(cfg.head_dim, cfg.rope_theta) / inv_frequencies(cfg.head_dim, cfg.rope_theta, cfg.rope_scaling)


def _make_tiny(root, name: str, seed: int, variant: dict) -> Tiny:
    from common.tokenizer import load_tokenizer
    from tests.checkpoints import write_gguf, write_tiny

    hf, hf_dir, gguf_path = write_tiny("llama", root / name, seed=seed, **variant)
    tok = load_tokenizer(hf_dir)
    if "rope_scaling" in variant:  # rewrite the GGUF with the scaling, as llama.cpp's converter does
        gguf_path = write_gguf(root / name / "model.gguf", hf, "llama", tok, rope_freqs=_rope_freqs(hf))
    return Tiny(name, hf, tok, str(hf_dir), str(gguf_path))


@pytest.fixture(scope="session")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Tiny]:
    root = tmp_path_factory.mktemp("llama_tiny")
    return {name: _make_tiny(root, name, seed, v) for seed, (name, v) in enumerate(VARIANTS.items())}
