"""Llama `.pte` exports of the tiny checkpoints through the export CLI, checked against eager (two exports)."""

from __future__ import annotations

import pytest
import torch

from common.cli import export_main, quantize_main, run_cli
from common.errors import UserError
from common.pipeline import load_model, prepare_quantized
from common.quant import preset
from common.runtime import EagerModel, PteModel
from models.llama3.model import FAMILY
from tests.helpers import cli_stdout, greedy, step_logits

pytestmark = pytest.mark.slow

MAX_SEQ_LEN, MAX_CONTEXT_LEN, DECODE_STEPS = 8, 64, 16
# KL per position, eager vs .pte, for int8-dynamic programs of the tiny checkpoints. Measured 2026-11-26 (AVX-512
# VNNI, eager on AVX-512 and on ATEN_CPU_CAPABILITY=avx2): below 1e-13; the mixed-recipe .pte against the eager model
# under the plain 8da4w preset (the recipe's rules not applied): 0.007-0.014.
KL_MAX_TINY_INT8 = 1e-6


def _export(tmp_path_factory, checkpoint: str, name: str, *flags: str):
    out = tmp_path_factory.mktemp(f"llama_{name}") / "model.pte"
    argv = ["--checkpoint", checkpoint, "--max-seq-len", str(MAX_SEQ_LEN), "--max-context-len", str(MAX_CONTEXT_LEN),
            "--output", str(out), *flags]
    return out, cli_stdout(lambda: run_cli(export_main(FAMILY), argv))


def _prompt(tiny) -> list[int]:
    ids = tiny.tokenizer.encode("The capital of France is Paris, and the capital of Italy is")
    assert MAX_SEQ_LEN < len(ids) < MAX_CONTEXT_LEN - DECODE_STEPS  # prefill takes two chunks
    return ids


def test_fp32_pte_matches_eager(tiny, tmp_path_factory) -> None:
    """fp32 XNNPACK .pte (plain SDPA, llama3 RoPE scaling, tied head) vs eager: prefill + 16 decode steps <= 1e-4."""
    t = tiny["tied"]
    path, stdout = _export(tmp_path_factory, t.gguf, "fp32", "--quantize", "fp32", "--no-custom-ops")
    assert "delegated ops:" in stdout and "custom_sdpa" not in stdout
    pte = PteModel(path)
    eager = EagerModel(load_model(FAMILY, t.dir, max_context_len=MAX_CONTEXT_LEN)[0], (), MAX_SEQ_LEN)
    prompt = _prompt(t)
    tokens = greedy(eager, prompt, DECODE_STEPS)
    ref, out = step_logits(eager, prompt, tokens), step_logits(pte, prompt, tokens)
    assert out.shape == (DECODE_STEPS + 1, t.hf.config.vocab_size)
    assert (out - ref).abs().max() <= 1e-4
    assert pte.eos_ids[0] == t.tokenizer.eos_ids[0] and pte._const("get_bos_id") == t.tokenizer.bos_id
    with pytest.raises(UserError, match="takes token ids only; export it with --embeddings-input"):
        pte.forward_embeddings(torch.zeros(1, 2, t.hf.config.hidden_size), 0)


def test_quantize_and_save_then_export_matches_in_memory(tiny, tmp_path_factory) -> None:
    """quantize_and_save -> export (custom ops) gives the greedy tokens of the model quantized in memory."""
    t = tiny["untied"]
    saved = tmp_path_factory.mktemp("llama_q") / "q8da4w"
    cli_stdout(lambda: run_cli(quantize_main(FAMILY), ["--checkpoint", t.dir, "--quantize", "8da4w", "--output",
                                                      str(saved)]))
    path, stdout = _export(tmp_path_factory, str(saved), "from_saved")
    assert "custom_sdpa" in stdout
    fresh, _ = prepare_quantized(FAMILY, t.dir, preset("8da4w"), max_context_len=MAX_CONTEXT_LEN)
    prompt = _prompt(t)
    tokens = greedy(EagerModel(fresh, (), MAX_SEQ_LEN), prompt, DECODE_STEPS)
    assert greedy(PteModel(path), prompt, DECODE_STEPS) == tokens


def test_recipe_file_export_matches_eager(tiny, tmp_path_factory) -> None:
    """--recipe FILE (YAML): a mixed recipe (int8 embeddings, int8 down_proj in layer 0, HQQ int4 groups elsewhere,
    one float v_proj) exports and runs as the eager model quantized by the same rules. int8-dynamic GEMMs: logits
    along the eager greedy tokens within int8 noise (KL), not bit-equal."""
    from common.quant import load_recipe
    from tests.helpers import kl_per_position

    t = tiny["untied"]
    recipe = tmp_path_factory.mktemp("recipe") / "mixed.yaml"
    recipe.write_text(
        "name: mixed\n"
        "rules:\n"
        "  - {pattern: 'model\\.embed_tokens', scheme: emb8}\n"
        "  - {pattern: '.*\\.mlp\\.down_proj', scheme: 8da8w, layers: [0, 1]}\n"
        "  - {pattern: '.*\\.self_attn\\.v_proj', scheme: fp32, layers: [1, 2]}\n"
        "  - {pattern: '.*', scheme: 8da4w, group_size: 32, scale_method: hqq}\n"
    )
    path, stdout = _export(tmp_path_factory, t.dir, "recipe", "--recipe", str(recipe))
    assert "(mixed, fp32, xnnpack" in stdout
    fresh, _ = prepare_quantized(FAMILY, t.dir, load_recipe(str(recipe)), max_context_len=MAX_CONTEXT_LEN)
    assert "qkv_proj" not in dict(fresh.model.layers[1].self_attn.named_children())  # v stays float there
    eager = EagerModel(fresh, (), MAX_SEQ_LEN)
    prompt = _prompt(t)
    tokens = greedy(eager, prompt, DECODE_STEPS)
    kl = kl_per_position(step_logits(eager, prompt, tokens), step_logits(PteModel(path), prompt, tokens))
    assert kl.max() <= KL_MAX_TINY_INT8, kl


def test_embeddings_input_prefill_equals_token_prefill(tiny, tmp_path_factory) -> None:
    """--embeddings-input: prefilling the table's rows through forward_embeddings, then decoding token ids through
    forward (the one shared KV cache), gives the token path's logits; the weights are stored once, not per method."""
    from common.runtime import generate
    from common.sampler import Sampler

    t = tiny["tied"]
    path, _ = _export(tmp_path_factory, t.gguf, "emb", "--quantize", "fp32", "--embeddings-input")
    pte = PteModel(path)
    eager, _, _ = load_model(FAMILY, t.gguf)
    prompt = _prompt(t)
    embeddings = eager.model.embed_tokens(torch.tensor([prompt])).detach()
    by_tokens = generate(pte, prompt, Sampler(), DECODE_STEPS, keep_logits=True, ignore_eos=True)
    by_embeddings = generate(pte, prompt, Sampler(), DECODE_STEPS, keep_logits=True, ignore_eos=True,
                             embeddings=embeddings)
    assert by_embeddings.tokens == by_tokens.tokens
    assert max(float((a - b).abs().max()) for a, b in zip(by_tokens.logits, by_embeddings.logits, strict=True)) <= 1e-5
    weights = sum(p.numel() * 4 for p in eager.parameters())
    assert path.stat().st_size < 1.3 * weights, (path.stat().st_size, weights)

