"""Qwen3 dense (0.6B to 32B): the llama architecture plus per-head RMSNorm on q and k before RoPE.

The shared `common.transformer` covers all of it (`qk_norm`, explicit `head_dim`, rope_theta 1e6, tied
or untied embeddings, all read from config.json or GGUF arch `qwen3`); the chat template (with its
`enable_thinking` switch) and the `<|im_end|>` / `<|endoftext|>` stop tokens come from the checkpoint's
tokenizer. This file names the family and lists the published sizes.
"""

from __future__ import annotations

from common.config import ModelConfig
from common.spec import ModelSpec

SPEC = ModelSpec(name="qwen3", title="Qwen3", gguf_archs=("qwen3",), hf_model_types=("qwen3",))

# The config.json fields that differ between the Qwen/Qwen3-* releases: (hidden, intermediate, layers, heads).
# All have 8 KV heads, head_dim 128 (not hidden / heads), vocab 151936 and rope_theta 1e6; 0.6B-4B tie
# the embedding and the LM head.
_SIZES = {
    "0.6B": (1024, 3072, 28, 16),
    "1.7B": (2048, 6144, 28, 16),
    "4B": (2560, 9728, 36, 32),
    "8B": (4096, 12288, 36, 32),
    "14B": (5120, 17408, 40, 40),
    "32B": (5120, 25600, 64, 64),
}


def hf_config(size: str) -> dict:
    """The config.json of Qwen/Qwen3-`size` (the fields `ModelConfig.from_hf` reads)."""
    hidden, intermediate, layers, heads = _SIZES[size]
    return {
        "model_type": "qwen3",
        "architectures": ["Qwen3ForCausalLM"],
        "vocab_size": 151936,
        "hidden_size": hidden,
        "intermediate_size": intermediate,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": 8,
        "head_dim": 128,
        "rms_norm_eps": 1e-6,
        "rope_theta": 1000000.0,
        "max_position_embeddings": 40960,
        "tie_word_embeddings": size in ("0.6B", "1.7B", "4B"),
        "bos_token_id": 151643,
        "eos_token_id": 151645,
    }


def config(size: str) -> ModelConfig:
    return ModelConfig.from_hf(hf_config(size))


SIZES = tuple(_SIZES)
