"""Checkpoint -> (quantized) model -> `.pte` / safetensors: the steps every model's CLIs share."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from common.checkpoint import QUANT_KEY, checkpoint_kind, read_config
from common.config import ModelConfig
from common.errors import UserError
from common.export import ExportSummary, contract_metadata, export_pte
from common.io import atomic_dir
from common.quant import QuantRecipe, apply_embedding_structure, quantize_model
from common.spec import ModelSpec
from common.tokenizer import Tokenizer, load_tokenizer
from common.transformer import Transformer


def resolve_checkpoint(spec: ModelSpec, checkpoint: str | None) -> str:
    if checkpoint:
        return checkpoint
    if spec.default_checkpoint is None:
        raise UserError(f"--checkpoint is required for {spec.title} (no bundled weights)")
    return spec.default_checkpoint()


def check_architecture(spec: ModelSpec, checkpoint: str) -> None:
    """Refuse a checkpoint of another family (e.g. a qwen3 GGUF handed to the llama3 CLI)."""
    if checkpoint_kind(checkpoint) == "gguf":
        from common.gguf_loader import gguf_metadata, open_gguf

        arch = gguf_metadata(open_gguf(checkpoint)).get("general.architecture")
        if arch not in spec.gguf_archs:
            raise UserError(f"{checkpoint}: GGUF architecture {arch!r}, but {spec.title} expects {spec.gguf_archs}")
    else:
        model_type = json.loads((Path(checkpoint) / "config.json").read_text()).get("model_type")
        if model_type not in spec.hf_model_types:
            raise UserError(f"{checkpoint}: config.json model_type {model_type!r}, but {spec.title} expects {spec.hf_model_types}")


def load_model(
    spec: ModelSpec,
    checkpoint: str,
    max_context_len: int = 2048,
    use_custom_ops: bool = False,
    last_logits_only: bool = False,
) -> tuple[Transformer, ModelConfig, QuantRecipe | None]:
    """Build the model and stream weights in; a quantize_and_save dir comes back already quantized."""
    check_architecture(spec, checkpoint)
    cfg, saved = read_config(checkpoint)
    recipe = QuantRecipe(**saved) if saved else None
    from common.checkpoint import load_weights

    with torch.device("meta"):
        model = Transformer(cfg, max_context_len, use_custom_ops, last_logits_only)
        if recipe and recipe.embedding_bits:
            apply_embedding_structure(model, recipe)
    load_weights(model, checkpoint, cfg)
    model.init_buffers()
    return model.eval(), cfg, recipe


def prepare_quantized(
    spec: ModelSpec, checkpoint: str, recipe: QuantRecipe, **kwargs
) -> tuple[Transformer, ModelConfig]:
    """Load, fuse q/k/v and gate/up, and quantize with `recipe`; a pre-quantized checkpoint must carry the same
    recipe (and stays unfused: its int4 groups are already fixed per linear)."""
    model, cfg, saved = load_model(spec, checkpoint, **kwargs)
    if saved is not None:
        if recipe.linear != "fp32" and saved != recipe:
            raise UserError(f"{checkpoint}: already quantized as {saved.name}; drop --quantize or pass {saved.linear}")
        return model, cfg
    return quantize_model(model.fuse_projections(), recipe), cfg


def export_model(
    spec: ModelSpec,
    checkpoint: str,
    output: str,
    recipe: QuantRecipe,
    backend: str = "xnnpack",
    max_seq_len: int = 128,
    max_context_len: int = 2048,
    use_custom_ops: bool = True,
    tokenizer_path: str | None = None,
) -> tuple[ExportSummary, Tokenizer]:
    """Export to `output` (.pte) and write tokenizer.json + tokenizer_config.json beside it."""
    if not output.endswith(".pte"):
        raise UserError(f"--output {output}: expected a path ending in .pte")
    check_architecture(spec, checkpoint)  # a bad checkpoint is reported as such, before its tokenizer
    tokenizer = load_tokenizer(tokenizer_path or checkpoint)
    model, cfg = prepare_quantized(
        spec, checkpoint, recipe, max_context_len=max_context_len, use_custom_ops=use_custom_ops, last_logits_only=True
    )
    eos = tuple(dict.fromkeys(cfg.eos_ids + tokenizer.eos_ids))
    summary = export_pte(model, output, contract_metadata(cfg, max_seq_len, max_context_len, eos), backend, max_seq_len)
    tokenizer.save(os.path.dirname(os.path.abspath(output)))
    return summary, tokenizer


def quantize_and_save(spec: ModelSpec, checkpoint: str, output: str, recipe: QuantRecipe) -> Path:
    """Write `output`/ with config.json (+ recipe), model.safetensors (torchao tensors) and the tokenizer."""
    from safetensors.torch import save_file
    from torchao.prototype.safetensors.safetensors_support import flatten_tensor_state_dict

    check_architecture(spec, checkpoint)
    tokenizer = load_tokenizer(checkpoint)
    model, cfg, saved = load_model(spec, checkpoint, max_context_len=1)
    if saved is not None:
        raise UserError(f"{checkpoint}: already quantized ({saved.name}); quantize the original checkpoint")
    quantize_model(model, recipe)
    state = model.state_dict()
    if state["lm_head.weight"] is state.get("model.embed_tokens.weight"):  # absent with --embedding-bits
        del state["lm_head.weight"]  # still tied (fp32 linears): safetensors refuses shared storage
    tensors, metadata = flatten_tensor_state_dict(state)
    with atomic_dir(output) as tmp:
        save_file({k: v.contiguous() for k, v in tensors.items()}, tmp / "model.safetensors", metadata=metadata)
        hf = cfg.to_hf() | {QUANT_KEY: recipe.to_dict()}
        (tmp / "config.json").write_text(json.dumps(hf, indent=2) + "\n")
        tokenizer.save(tmp)
    return Path(output)
