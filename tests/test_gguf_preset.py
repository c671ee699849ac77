"""The `gguf` preset (the default for GGUF checkpoints): every tensor at the precision its file gives it — 4-bit
blocks exactly (int4 + block offsets), Q8_0 tables exactly (embedding_byte), others int8 per channel — in memory,
through quantize_and_save and in the .pte. Tiny llama checkpoints written by tests/checkpoints.py as llama.cpp would."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from gguf import GGMLQuantizationType as T

from common.pipeline import load_model, prepare_quantized
from common.quant import preset
from models.llama3.model import FAMILY
from tests.helpers import kl_per_position

IDS = [1, 17, 42, 99, 5, 250, 31, 64, 7, 300, 12, 8]


@pytest.fixture(scope="module")
def ggufs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The same tiny llama as Q4_1, Q4_0 and Q8_0 GGUFs (2-D tensors in the type, norms F32)."""
    from common.tokenizer import load_tokenizer
    from tests.checkpoints import write_gguf, write_tiny

    root = tmp_path_factory.mktemp("gguf-preset")
    hf, hf_dir, _ = write_tiny("llama", root / "tiny")
    tok = load_tokenizer(hf_dir)
    return {q.name: write_gguf(root / f"{q.name}.gguf", hf, "llama", tok, qtype=q) for q in (T.Q4_1, T.Q4_0, T.Q8_0)}


def _logits(model: torch.nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model(torch.tensor([IDS]), torch.tensor([0]))[0]


def _schemes(model: torch.nn.Module) -> dict[str, str]:
    from common.quant.embedding import QuantizedEmbedding
    from common.quant.offset_linear import BlockOffsetLinear
    from common.quant.tied_head import TiedQ8Head

    kinds = {}
    wrapped = {n for n, m in model.named_modules() if isinstance(m, BlockOffsetLinear)}
    for name, mod in model.named_modules():
        if name.rpartition(".")[0] in wrapped:
            continue  # a q4 linear's parts
        if isinstance(mod, BlockOffsetLinear):
            kinds[name] = "q4"
        elif isinstance(mod, QuantizedEmbedding):
            kinds[name] = f"emb{mod.bits}"
        elif isinstance(mod, TiedQ8Head):
            kinds[name] = "tied8"
        elif isinstance(mod, torch.nn.Linear) and hasattr(mod.weight, "qdata"):
            kinds[name] = "int8" if mod.weight.target_dtype == torch.int8 else "int4"
    return kinds


@pytest.mark.parametrize("qtype, linears, embedding", [("Q4_1", "q4", "emb8"), ("Q4_0", "q4", "emb8"),
                                                       ("Q8_0", "int8", "emb8")])
def test_each_tensor_keeps_its_files_precision(ggufs, qtype: str, linears: str, embedding: str) -> None:
    model, _ = prepare_quantized(FAMILY, str(ggufs[qtype]), preset("gguf"), max_context_len=32)
    kinds = _schemes(model)
    assert kinds.pop("model.embed_tokens") == embedding
    assert kinds.pop("lm_head") == "tied8"  # the tied head reads the embedding's int8 table: one copy
    assert set(kinds.values()) == {linears}, kinds  # fused q/k/v and gate/up included


@pytest.mark.parametrize("qtype", ["Q4_1", "Q4_0"])
def test_4bit_blocks_are_kept_not_requantized(ggufs, qtype: str) -> None:
    """Against the file's own dequantized weights in fp32, the gguf preset loses only what int8 dynamic activations
    lose; re-quantizing onto a fresh int4 grid (the 8da4w preset) loses several times more."""
    path = str(ggufs[qtype])
    ref = _logits(load_model(FAMILY, path, max_context_len=32)[0])
    kept = kl_per_position(ref, _logits(prepare_quantized(FAMILY, path, preset("gguf"), max_context_len=32)[0]))
    requantized = kl_per_position(ref, _logits(prepare_quantized(FAMILY, path, preset("8da4w"), max_context_len=32)[0]))
    assert kept.mean() * 3 < requantized.mean(), (kept.mean(), requantized.mean())


def test_every_family(tmp_path: Path) -> None:
    """The preset is family-agnostic: a qwen3 GGUF (q/k-norm, no q/k permutation) keeps its blocks too, and the
    result computes what the file does within int8-activation noise."""
    from common.tokenizer import load_tokenizer
    from models.qwen3.model import FAMILY as QWEN3
    from tests.checkpoints import write_gguf, write_tiny

    hf, hf_dir, _ = write_tiny("qwen3", tmp_path / "tiny")
    path = str(write_gguf(tmp_path / "q.gguf", hf, "qwen3", load_tokenizer(hf_dir), qtype=T.Q4_1))
    model, _ = prepare_quantized(QWEN3, path, preset("gguf"), max_context_len=32)
    assert set(_schemes(model).values()) == {"q4", "emb8", "tied8"}
    ref = _logits(load_model(QWEN3, path, max_context_len=32)[0])
    requantized = _logits(prepare_quantized(QWEN3, path, preset("8da4w"), max_context_len=32)[0])
    assert kl_per_position(ref, _logits(model)).mean() * 3 < kl_per_position(ref, requantized).mean()


def test_quantize_and_save_round_trip(ggufs, tmp_path: Path) -> None:
    """A gguf-preset quantize_and_save directory loads as the same model (same modules, same logits) and records
    the recipe resolved per tensor."""
    import json

    from common.cli import quantize_main, run_cli

    out = tmp_path / "q"
    assert run_cli(quantize_main(FAMILY), ["--checkpoint", str(ggufs["Q4_1"]), "--output", str(out)]) == 0
    recipe = json.loads((out / "config.json").read_text())["zoo_quantization"]
    assert recipe["name"] == "gguf" and {r["scheme"] for r in recipe["rules"]} == {"q4", "emb8", "tied8"}
    in_memory, _ = prepare_quantized(FAMILY, str(ggufs["Q4_1"]), preset("gguf"), max_context_len=32)
    loaded, _, _ = load_model(FAMILY, str(out), max_context_len=32)
    assert _schemes(loaded) == _schemes(in_memory)
    assert torch.equal(_logits(loaded), _logits(in_memory))
