"""Weight-by-weight I/O for `quantize_and_save`: read one checkpoint tensor at a time, write a safetensors file one
tensor at a time, so peak memory is one unit of work (a decoder layer or one top-level tensor), not the model.

safetensors' own `save_file` needs every tensor in memory at once (its header, which comes first, lists them all):
`SafetensorsWriter` appends tensor bytes to a scratch file and writes header + bytes at the end. Reading reopens the
shard for each tensor (`safe_open` maps the whole file; a mapping kept open would keep every page read resident).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from common.errors import UserError

# torch dtype -> safetensors dtype name (the spec's names)
_DTYPES = {torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
           torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
           torch.bool: "BOOL"}
_COPY_CHUNK = 16 << 20  # bytes per copy of the scratch file into the final one


def return_freed_memory(first: bool = False) -> None:
    """Free a written unit now and hand the memory back to the OS. A quantized module's tensors sit in reference
    cycles, which only the cycle collector frees (without it: 40 MB kept per decoder layer of a synthetic Gemma 4).
    `first`: also pin glibc's mmap threshold at 4 MiB; glibc otherwise raises it after the first large free and
    later unit-sized tensors come from a heap that does not shrink. Not lower: every temporary above the threshold
    is a fresh mapping, page-faulted in and unmapped again (at 128 KiB, three quarters of the time went to the
    kernel), and the quantizers' temporaries are kept around 1 MiB (common.quant.scales)."""
    gc.collect()
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        if first:
            libc.mallopt(-3, 4 << 20)  # M_MMAP_THRESHOLD
        libc.malloc_trim(0)
    except (OSError, AttributeError):
        pass


class SafetensorsWriter:
    """`add(name, tensor)` as tensors are ready, then `close(metadata)`: a standard safetensors file at `path`."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._scratch = open(self.path.with_name(self.path.name + ".data"), "wb+")
        self._entries: dict[str, dict[str, Any]] = {}
        self._offset = 0

    def add(self, name: str, tensor: torch.Tensor) -> None:
        if name in self._entries:
            raise ValueError(f"tensor {name!r} written twice")
        t = tensor.detach().contiguous()
        raw = t.reshape(-1).view(torch.uint8).numpy() if t.numel() else b""
        self._scratch.write(memoryview(raw))
        n = t.numel() * t.element_size()
        self._entries[name] = {"dtype": _DTYPES[t.dtype], "shape": list(t.shape),
                               "data_offsets": [self._offset, self._offset + n]}
        self._offset += n

    def close(self, metadata: dict[str, str] | None = None) -> None:
        header = json.dumps({**({"__metadata__": metadata} if metadata else {}), **self._entries},
                            separators=(",", ":")).encode()
        header += b" " * (-len(header) % 8)  # the data starts 8-byte aligned
        with open(self.path, "wb") as out:
            out.write(len(header).to_bytes(8, "little") + header)
            self._scratch.seek(0)
            shutil.copyfileobj(self._scratch, out, _COPY_CHUNK)
        self._discard()

    def _discard(self) -> None:
        self._scratch.close()
        os.unlink(self._scratch.name)

    def __enter__(self) -> SafetensorsWriter:
        return self

    def __exit__(self, kind, *_) -> None:
        if kind is not None and not self._scratch.closed:
            self._discard()


def hf_tensor_files(path: str) -> dict[str, Path]:
    """Tensor name -> the safetensors file holding it, for an HF checkpoint directory (one file or shards)."""
    from safetensors import safe_open

    d = Path(path)
    index = d / "model.safetensors.index.json"
    if index.is_file():
        return {k: d / v for k, v in json.loads(index.read_text())["weight_map"].items()}
    try:
        with safe_open(d / "model.safetensors", framework="pt") as f:
            return dict.fromkeys(f.keys(), d / "model.safetensors")
    except Exception as e:  # safetensors.SafetensorError: a corrupt header
        raise UserError(f"{path}: corrupt safetensors file ({e})") from None


def read_hf_tensor(file: Path, name: str) -> torch.Tensor:
    """One tensor, read through its own short-lived mapping of `file`."""
    from safetensors import safe_open

    try:
        with safe_open(file, framework="pt") as f:
            return f.get_tensor(name)
    except FileNotFoundError:
        raise UserError(f"{file}: a file the checkpoint's index names is missing") from None
    except Exception as e:
        if type(e).__name__ != "SafetensorError":
            raise
        raise UserError(f"{file}: corrupt safetensors file ({e})") from None


def tensor_reader(ckpt, family, cfg, expected: dict[str, torch.Tensor]) -> Callable[[str], torch.Tensor]:
    """read(fqn): the checkpoint's tensor for the model's state-dict key `fqn`, as the model's dtype (the family's
    GGUF fixes applied; a tied lm_head reads the embedding). Unknown and missing tensors are refused up front."""
    from common import gguf_loader
    from common.checkpoint import _hf_key, fit_tensor

    if ckpt.kind == "gguf":
        sources = {fqn: t for t in ckpt.reader.tensors if (fqn := family.gguf_name(t.name))}

        def raw(fqn: str) -> torch.Tensor:
            return family.fix_gguf_tensor(fqn, gguf_loader.dequantize(sources[fqn]), cfg)
    else:
        files = {fqn: f for name, f in hf_tensor_files(ckpt.path).items() if (fqn := _hf_key(name))}
        sources = files

        def raw(fqn: str) -> torch.Tensor:
            return read_hf_tensor(files[fqn], fqn)

    alias = {}
    if getattr(cfg, "tie_embeddings", False) and "lm_head.weight" not in sources:
        alias["lm_head.weight"] = "model.embed_tokens.weight"
    for fqn in sources:
        if fqn not in expected:
            raise UserError(f"{ckpt.path}: unexpected tensor {fqn!r} for this model config")
    for fqn in expected:
        if alias.get(fqn, fqn) not in sources:
            raise UserError(f"{ckpt.path}: Weight {fqn!r} not found in checkpoint")

    def read(fqn: str) -> torch.Tensor:
        return fit_tensor(ckpt.path, expected, fqn, raw(alias.get(fqn, fqn)))

    return read
