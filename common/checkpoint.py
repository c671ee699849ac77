"""One `Checkpoint`, opened once per command: an HF dir (config.json + safetensors), a GGUF file, or a
`quantize_and_save` dir. It knows its kind, its raw config (config.json dict or GGUF metadata), its tensors
(streamed), and, for a GGUF, the raw quantized blocks a GGUF-exact quantizer needs.

Streaming and assignment into a model are ExecuTorch's (`extension/llm/export/load.py`); the family supplies
the config parsing, the GGUF -> state-dict name map and llama.cpp's tensor fixes (common.family.Family).
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from common import gguf_loader
from common.errors import UserError

QUANT_KEY = "zoo_quantization"  # config.json entry written by quantize_and_save


def _read_json_object(file: Path) -> dict:
    try:
        data = json.loads(file.read_bytes().decode("utf-8"))
    except UnicodeDecodeError:
        raise UserError(f"{file}: not UTF-8 text") from None
    except json.JSONDecodeError as e:
        raise UserError(f"{file}: not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise UserError(f"{file}: expected a JSON object, got {type(data).__name__}")
    return data


def _check_index(file: Path) -> None:
    """model.safetensors.index.json maps tensor names to shard files in its own directory."""
    weight_map = _read_json_object(file).get("weight_map")
    if not isinstance(weight_map, dict) or not all(
        isinstance(k, str) and isinstance(v, str) and v and Path(v).name == v for k, v in weight_map.items()
    ):
        raise UserError(f"{file}: expected a 'weight_map' of tensor names to shard file names in its directory")


@dataclass
class Checkpoint:
    path: str
    kind: str  # 'gguf' | 'hf' | 'quantized'
    hf_config: dict | None = None  # config.json (hf, quantized)
    gguf_meta: dict | None = None  # scalar GGUF metadata (gguf)
    reader: Any = field(default=None, repr=False)  # gguf.GGUFReader (gguf)

    @classmethod
    def open(cls, path: str | os.PathLike) -> Checkpoint:
        p = Path(path)
        if p.is_file():
            if p.suffix != ".gguf":
                raise UserError(f"{p}: expected a .gguf file or a checkpoint directory with config.json")
            reader = gguf_loader.open_gguf(p)
            return cls(os.fspath(p), "gguf", gguf_meta=gguf_loader.gguf_metadata(reader), reader=reader)
        if p.is_dir():
            if not (p / "config.json").is_file():
                raise UserError(f"{p}: checkpoint directory has no config.json")
            if not (p / "model.safetensors").is_file() and not (p / "model.safetensors.index.json").is_file():
                raise UserError(f"{p}: checkpoint directory has no model.safetensors or model.safetensors.index.json")
            hf = _read_json_object(p / "config.json")
            if (p / "model.safetensors.index.json").is_file():
                _check_index(p / "model.safetensors.index.json")
            return cls(os.fspath(p), "quantized" if QUANT_KEY in hf else "hf", hf_config=hf)
        raise UserError(f"{p}: no such checkpoint (expected a .gguf file or an HF checkpoint directory)")

    @property
    def architecture(self) -> str | None:
        """GGUF `general.architecture`, or config.json `model_type`."""
        return (self.gguf_meta if self.kind == "gguf" else self.hf_config).get(
            "general.architecture" if self.kind == "gguf" else "model_type"
        )

    @property
    def saved_recipe(self) -> dict | None:
        """The quantization recipe a quantize_and_save dir was written with."""
        return (self.hf_config or {}).get(QUANT_KEY)

    @functools.cached_property
    def gguf_tensors(self) -> dict[str, Any]:
        """GGUF tensor name -> `gguf.ReaderTensor` (raw blocks, type and shape)."""
        return {t.name: t for t in self.reader.tensors}

    def gguf_tensor(self, name: str) -> torch.Tensor | None:
        """One GGUF tensor dequantized to fp32, or None if the file has none of that name."""
        t = self.gguf_tensors.get(name)
        return None if t is None else gguf_loader.dequantize(t)

    def iter_gguf(self, _path: str | None = None) -> Iterator[tuple[str, torch.Tensor]]:
        """(gguf name, fp32 tensor) for every tensor, from the already-open reader."""
        return gguf_loader.iter_dequantized(self.reader, self.path)


def fit_tensor(path: str, expected: dict[str, torch.Tensor], fqn: str, t: torch.Tensor) -> torch.Tensor:
    """Checkpoint tensor `fqn` in the model's dtype (a bf16 checkpoint runs as the fp32 model), if the model
    (`expected`: its state dict) has that name and shape; else a UserError naming the checkpoint."""
    if fqn not in expected:
        raise UserError(f"{path}: unexpected tensor {fqn!r} for this model config")
    if tuple(t.shape) != tuple(expected[fqn].shape):
        raise UserError(f"{path}: tensor {fqn!r} has shape {tuple(t.shape)}, config expects "
                        f"{tuple(expected[fqn].shape)}")
    want = expected[fqn]
    if type(t) is torch.Tensor and type(want) is torch.Tensor and t.is_floating_point() != want.is_floating_point():
        raise UserError(f"{path}: tensor {fqn!r} is {t.dtype}, expected {want.dtype}")  # e.g. float AQLM codes
    return t if type(t) is not torch.Tensor or not t.is_floating_point() else t.to(want.dtype)


def load_weights(model: nn.Module, ckpt: Checkpoint, family, cfg) -> None:
    """Stream a checkpoint into `model` (built on the meta device or not); all parameters must be found."""
    from executorch.extension.llm.export.load import load_checkpoint

    tie = {"model.embed_tokens.weight": ("lm_head.weight", False)} if cfg.tie_embeddings else None
    expected = model.state_dict()

    def checked(fqn: str, t: torch.Tensor) -> torch.Tensor:
        return fit_tensor(ckpt.path, expected, fqn, t)

    try:
        if ckpt.kind == "gguf":
            load_checkpoint(ckpt.path, model, key_map=family.gguf_name, tie_map=tie, raw_iter=ckpt.iter_gguf,
                            convert=lambda fqn, t: family.fix_gguf_tensor(fqn, checked(fqn, t), cfg))
        else:
            load_checkpoint(ckpt.path, model, key_map=_hf_key, convert=checked, tie_map=tie)
    except RuntimeError as e:
        if "not found in checkpoint" in str(e):
            raise UserError(f"{ckpt.path}: {e}") from None
        raise
    except FileNotFoundError as e:  # a shard model.safetensors.index.json names that is not there
        raise UserError(f"{ckpt.path}: a file the checkpoint names is missing ({e})") from None
    except Exception as e:  # safetensors.SafetensorError: empty, truncated, huge or garbage header
        if type(e).__name__ != "SafetensorError":
            raise
        raise UserError(f"{ckpt.path}: corrupt safetensors file ({e})") from None
    # ExecuTorch's loader insists on parameters only: a buffer (AQLM codebooks, int8 tables) may still be missing
    missing = [k for k, t in model.state_dict().items() if t.is_meta]
    if missing:
        raise UserError(f"{ckpt.path}: tensor {missing[0]!r} not found in checkpoint"
                        + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))


def _hf_key(name: str) -> str | None:
    return None if name.endswith("rotary_emb.inv_freq") else name
