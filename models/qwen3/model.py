"""Qwen3 dense (0.6B to 32B): the llama architecture plus per-head RMSNorm on q and k before RoPE.

The llama-style decoder in `common.decoder` covers it with `qk_norm` (explicit `head_dim`, rope_theta 1e6, tied
or untied embeddings, all read from config.json or GGUF arch `qwen3`; llama.cpp stores Qwen3's q/k unpermuted);
the chat template (with its `enable_thinking` switch) and the `<|im_end|>` / `<|endoftext|>` stop tokens come
from the checkpoint's tokenizer. This file is the family: its config hooks and the published sizes.
"""

from __future__ import annotations

from common.decoder import ModelConfig, Transformer
from common.family import Family
from common.gguf_loader import hf_name, vocab_and_tie


def config_from_hf(hf: dict) -> ModelConfig:
    return ModelConfig.from_hf(hf, qk_norm=True)


def config_from_gguf(ckpt) -> ModelConfig:
    return ModelConfig.from_gguf(ckpt.gguf_meta, "qwen3", ckpt.path, qk_norm=True, **vocab_and_tie(ckpt))


def to_hf(cfg: ModelConfig) -> dict:
    return {"architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3"} | cfg.to_hf()


FAMILY = Family(
    name="qwen3",
    title="Qwen3",
    hf_model_types=("qwen3",),
    gguf_archs=("qwen3",),
    config_from_hf=config_from_hf,
    config_from_gguf=config_from_gguf,
    to_hf=to_hf,
    build=Transformer,
    gguf_name=hf_name,
)

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
    """The config.json of Qwen/Qwen3-`size` (the fields `config_from_hf` reads)."""
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
    return config_from_hf(hf_config(size))


SIZES = tuple(_SIZES)
