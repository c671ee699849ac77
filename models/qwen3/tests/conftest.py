"""Tiny random Qwen3 checkpoints in every format the CLIs read, built once per session (a few seconds)."""

from __future__ import annotations

import shutil
from dataclasses import dataclass

import pytest

# Both on tests.checkpoints.TINY["qwen3"] (hidden 64, 2 layers, vocab 384, rope_theta 1e6, 327-id BPE tokenizer
# with the Qwen3 chat template).
VARIANTS = {
    # GQA 4:2, head_dim 32 (not 64 / 4), tied embeddings (like 0.6B-4B)
    "tied": dict(num_attention_heads=4, num_key_value_heads=2, head_dim=32, tie_word_embeddings=True),
    # GQA 8:2, head_dim 16 (not 64 / 8), untied LM head (like 8B-32B)
    "untied": dict(num_attention_heads=8, num_key_value_heads=2, head_dim=16, tie_word_embeddings=False),
}


@dataclass(frozen=True)
class Tiny:
    name: str
    hf: object  # transformers.Qwen3ForCausalLM, eval mode
    tokenizer: object  # common.tokenizer.Tokenizer read back from `dir`
    dir: str  # HF checkpoint dir: config.json + model.safetensors + tokenizer files
    sharded: str  # the same, sharded with model.safetensors.index.json
    gguf: str  # F32 GGUF, arch qwen3, with tokenizer metadata and chat template
    gguf_q8: str  # Q8_0 GGUF (2-D weights; norms F32), same metadata


@pytest.fixture(scope="session")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Tiny]:
    import gguf

    from common.tokenizer import load_tokenizer
    from tests.checkpoints import save_hf_checkpoint, write_gguf, write_tiny

    root = tmp_path_factory.mktemp("qwen3_tiny")
    out = {}
    for seed, (name, variant) in enumerate(VARIANTS.items()):
        hf, hf_dir, f32 = write_tiny("qwen3", root / name, seed=seed, **variant)
        sharded = save_hf_checkpoint(hf, root / name / "sharded", max_shard_size="40KB")
        for f in hf_dir.iterdir():
            if f.name.startswith("tokenizer") or f.name == "chat_template.jinja":
                shutil.copy(f, sharded)
        tok = load_tokenizer(hf_dir)
        q8 = write_gguf(root / name / "model.q8_0.gguf", hf, "qwen3", tok, qtype=gguf.GGMLQuantizationType.Q8_0)
        out[name] = Tiny(name, hf, tok, str(hf_dir), str(sharded), str(f32), str(q8))
    return out
