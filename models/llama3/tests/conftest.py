"""Tiny random Llama checkpoints (GQA, llama3 RoPE scaling, tied and untied) in every format the CLIs read."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

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


@pytest.fixture(scope="session")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Tiny]:
    from common.rope import inv_frequencies
    from common.tokenizer import load_tokenizer
    from tests.checkpoints import write_gguf, write_tiny

    root = tmp_path_factory.mktemp("llama_tiny")
    out = {}
    for seed, (name, variant) in enumerate(VARIANTS.items()):
        hf, hf_dir, f32 = write_tiny("llama", root / name, seed=seed, **variant)
        tok = load_tokenizer(hf_dir)
        if "rope_scaling" in variant:  # llama.cpp writes Llama 3.1 scaling as per-pair frequency divisors
            from common.config import ModelConfig

            cfg = ModelConfig.from_hf(hf.config.to_dict())
            plain = inv_frequencies(cfg.head_dim, cfg.rope_theta)
            factors = plain / inv_frequencies(cfg.head_dim, cfg.rope_theta, cfg.rope_scaling)
            f32 = write_gguf(root / name / "model.gguf", hf, "llama", tok, rope_freqs=factors)
        out[name] = Tiny(name, hf, tok, str(hf_dir), str(f32))
    return out
