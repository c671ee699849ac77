"""Load weights into a zoo model from an HF dir/safetensors, a GGUF file, or a `quantize_and_save` dir.

Streaming and assignment are ExecuTorch's (`extension/llm/export/load.py`); this module only
supplies the readers, the GGUF -> HF name map, llama.cpp's q/k un-permutation and the tie map.
"""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from common import gguf_loader
from common.config import ModelConfig
from common.errors import UserError

QUANT_KEY = "zoo_quantization"  # config.json entry written by quantize_and_save


def checkpoint_kind(path: str | os.PathLike) -> str:
    """'gguf', 'hf' (dir with config.json + safetensors), or 'quantized' (quantize_and_save output)."""
    p = Path(path)
    if p.is_file():
        if p.suffix == ".gguf":
            return "gguf"
        raise UserError(f"{p}: expected a .gguf file or a checkpoint directory with config.json")
    if p.is_dir():
        cfg = p / "config.json"
        if not cfg.is_file():
            raise UserError(f"{p}: checkpoint directory has no config.json")
        if not (p / "model.safetensors").is_file() and not (p / "model.safetensors.index.json").is_file():
            raise UserError(f"{p}: checkpoint directory has no model.safetensors or model.safetensors.index.json")
        return "quantized" if QUANT_KEY in json.loads(cfg.read_text()) else "hf"
    raise UserError(f"{p}: no such checkpoint (expected a .gguf file or an HF checkpoint directory)")


def read_config(path: str | os.PathLike) -> tuple[ModelConfig, dict | None]:
    """(ModelConfig, quantization recipe dict or None) for any supported checkpoint."""
    kind = checkpoint_kind(path)
    if kind == "gguf":
        reader = gguf_loader.open_gguf(path)
        meta = gguf_loader.gguf_metadata(reader)
        cfg = gguf_loader.config_from_gguf(meta, str(path))
        names = {t.name: t for t in reader.tensors}
        emb = names.get("token_embd.weight")
        if emb is None:
            raise UserError(f"{path}: GGUF has no token_embd.weight tensor")
        cfg = replace(cfg, vocab_size=int(emb.shape[1]), tie_embeddings="output.weight" not in names)
        if "rope_freqs.weight" in names:
            factors = gguf_loader.dequantize(names["rope_freqs.weight"]).flatten().tolist()
            cfg = replace(cfg, rope_freq_factors=tuple(factors))
        return cfg, None
    try:
        hf = json.loads((Path(path) / "config.json").read_text())
    except json.JSONDecodeError as e:
        raise UserError(f"{path}/config.json: not valid JSON ({e})") from None
    return ModelConfig.from_hf(hf), hf.get(QUANT_KEY)


def load_weights(model: nn.Module, path: str | os.PathLike, cfg: ModelConfig) -> None:
    """Stream a checkpoint into `model` (built on the meta device or not); all parameters must be found."""
    from executorch.extension.llm.export.load import load_checkpoint

    path = os.fspath(path)
    tie = {"model.embed_tokens.weight": ("lm_head.weight", False)} if cfg.tie_embeddings else None
    expected = {name: tuple(p.shape) for name, p in model.state_dict().items()}

    def checked(fqn: str, t: torch.Tensor) -> torch.Tensor:
        if fqn not in expected:
            raise UserError(f"{path}: unexpected tensor {fqn!r} for this model config")
        if tuple(t.shape) != expected[fqn]:
            raise UserError(f"{path}: tensor {fqn!r} has shape {tuple(t.shape)}, config expects {expected[fqn]}")
        return t

    try:
        if checkpoint_kind(path) == "gguf":
            arch = gguf_loader.gguf_metadata(gguf_loader.open_gguf(path)).get("general.architecture")

            def convert(fqn: str, t: torch.Tensor) -> torch.Tensor:
                t = checked(fqn, t)
                if arch == "llama" and fqn.endswith("self_attn.q_proj.weight"):
                    return gguf_loader.unpermute_rope(t, cfg.n_heads)
                if arch == "llama" and fqn.endswith("self_attn.k_proj.weight"):
                    return gguf_loader.unpermute_rope(t, cfg.n_kv_heads)
                return t

            load_checkpoint(path, model, key_map=gguf_loader.hf_name, convert=convert, tie_map=tie,
                            raw_iter=gguf_loader.iter_gguf_dequantized)
        else:
            load_checkpoint(path, model, key_map=_hf_key, convert=checked, tie_map=tie)
    except RuntimeError as e:
        if "not found in checkpoint" in str(e):
            raise UserError(f"{path}: {e}") from None
        raise


def _hf_key(name: str) -> str | None:
    return None if name.endswith("rotary_emb.inv_freq") else name
