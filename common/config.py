"""Model configuration shared by every text model in the zoo, read from HF config.json or GGUF."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from common.errors import UserError


@dataclass(frozen=True)
class RopeScaling:
    """Llama 3 style frequency scaling (rope_type "llama3")."""

    factor: float = 8.0
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0
    original_max_position_embeddings: int = 8192


@dataclass(frozen=True)
class ModelConfig:
    vocab_size: int
    dim: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    hidden_dim: int
    head_dim: int
    norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    rope_scaling: RopeScaling | None = None
    # llama.cpp's `rope_freqs.weight` (Llama 3.1+ GGUFs): per-pair divisors of the inverse frequencies
    rope_freq_factors: tuple[float, ...] | None = None
    tie_embeddings: bool = False
    qk_norm: bool = False  # per-head RMSNorm on q and k before RoPE (Qwen3)
    attention_bias: bool = False
    max_position_embeddings: int = 8192
    bos_id: int | None = None
    eos_ids: tuple[int, ...] = field(default_factory=tuple)

    @classmethod
    def from_hf(cls, hf: dict[str, Any]) -> ModelConfig:
        """Build from the dict of an HF `config.json` (Llama / Qwen3 families)."""
        try:
            n_heads = hf["num_attention_heads"]
            dim = hf["hidden_size"]
            rs = hf.get("rope_scaling") or (hf.get("rope_parameters") or {})
            scaling = None
            rope_type = rs.get("rope_type", rs.get("type"))
            if rope_type not in (None, "default", "llama3"):  # e.g. Qwen3's optional YaRN
                raise UserError(f"config.json: rope_type {rope_type!r} is not supported (default or llama3)")
            if hf.get("use_sliding_window") or any(t != "full_attention" for t in hf.get("layer_types") or ()):
                raise UserError("config.json: sliding-window attention layers are not supported")
            if rope_type == "llama3":
                scaling = RopeScaling(
                    factor=rs["factor"],
                    low_freq_factor=rs["low_freq_factor"],
                    high_freq_factor=rs["high_freq_factor"],
                    original_max_position_embeddings=rs["original_max_position_embeddings"],
                )
            theta = hf.get("rope_theta", rs.get("rope_theta", 10000.0))
            eos = hf.get("eos_token_id")
            eos_ids = tuple(eos) if isinstance(eos, list) else (() if eos is None else (eos,))
            if hf.get("model_type") not in (None, "llama", "qwen3"):
                raise UserError(f"config.json: model_type {hf.get('model_type')!r} is not a llama/qwen3 checkpoint")
            return cls(
                vocab_size=hf["vocab_size"],
                dim=dim,
                n_layers=hf["num_hidden_layers"],
                n_heads=n_heads,
                n_kv_heads=hf.get("num_key_value_heads") or n_heads,
                hidden_dim=hf["intermediate_size"],
                head_dim=hf.get("head_dim") or dim // n_heads,
                norm_eps=hf.get("rms_norm_eps", 1e-5),
                rope_theta=float(theta),
                rope_scaling=scaling,
                rope_freq_factors=tuple(hf["rope_freq_factors"]) if hf.get("rope_freq_factors") else None,
                tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
                qk_norm="qwen3" in str(hf.get("model_type", "")),
                attention_bias=bool(hf.get("attention_bias", False)),
                max_position_embeddings=hf.get("max_position_embeddings", 8192),
                bos_id=hf.get("bos_token_id"),
                eos_ids=eos_ids,
            )
        except KeyError as e:
            raise UserError(f"config.json is missing required key {e.args[0]!r}") from None

    def to_hf(self) -> dict[str, Any]:
        """An HF `config.json` dict that `from_hf` (and transformers) read back to this config."""
        model_type = "qwen3" if self.qk_norm else "llama"
        d = {
            "architectures": ["Qwen3ForCausalLM" if self.qk_norm else "LlamaForCausalLM"],
            "model_type": model_type,
            "vocab_size": self.vocab_size,
            "hidden_size": self.dim,
            "num_hidden_layers": self.n_layers,
            "num_attention_heads": self.n_heads,
            "num_key_value_heads": self.n_kv_heads,
            "intermediate_size": self.hidden_dim,
            "head_dim": self.head_dim,
            "rms_norm_eps": self.norm_eps,
            "rope_theta": self.rope_theta,
            "tie_word_embeddings": self.tie_embeddings,
            "attention_bias": self.attention_bias,
            "max_position_embeddings": self.max_position_embeddings,
            "bos_token_id": self.bos_id,
            "eos_token_id": list(self.eos_ids),
            "hidden_act": "silu",
        }
        if self.rope_freq_factors:
            d["rope_freq_factors"] = list(self.rope_freq_factors)  # not an HF key; read back by from_hf
        if self.rope_scaling:
            d["rope_scaling"] = {"rope_type": "llama3", **dataclasses.asdict(self.rope_scaling)}
        return d
