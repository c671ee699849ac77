"""Checkpoint -> (quantized) model -> `.pte` / safetensors: the steps every model's CLIs share."""

from __future__ import annotations

import dataclasses
import functools
import json
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

import models as families
from common.checkpoint import QUANT_KEY, Checkpoint, load_weights
from common.contract import causal_lm_constants
from common.errors import UserError
from common.export import (
    DTYPES,
    CastIO,
    ExportDebug,
    ExportSummary,
    bound_method,
    check_dtype,
    check_seq_len,
    export_pte,
)
from common.family import Family
from common.io import atomic_dir, check_output_dir, check_output_file, staged_outputs
from common.nn.attention import SDPA
from common.nn.kv_cache import KV_DTYPES
from common.nn.linear import member_names
from common.quant import (
    TIED_TABLE,
    Recipe,
    check_quantized,
    fuse_agreeing,
    plan,
    quantize_model,
    quantized_shells,
    replace_module,
    resolve_gguf,
)
from common.quant.footprint import block_linears
from common.tokenizer import Tokenizer, load_tokenizer


def is_published_quantized(path: Path) -> bool:
    """Whether `path` is an HF checkpoint dir published quantized (config.json with a `quantization_config`)."""
    try:
        return "quantization_config" in json.loads((path / "config.json").read_text())
    except (OSError, ValueError):
        return False


def is_quantized_dir(path: Path) -> bool:
    """Whether `path` holds a quantize_and_save output (config.json with the zoo's recipe, and nothing else of
    note): the only non-empty directory quantize_and_save may replace."""
    expected = {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "chat_template.jinja"}
    try:
        return QUANT_KEY in json.loads((path / "config.json").read_text()) and {p.name for p in path.iterdir()} <= expected
    except (OSError, ValueError):
        return False


def resolve_checkpoint(family: Family, checkpoint: str | None) -> str:
    if checkpoint:
        return checkpoint
    if family.default_checkpoint is None:
        raise UserError(f"--checkpoint is required for {family.title} (no bundled weights)")
    return family.default_checkpoint()


def open_checkpoint(family: Family, checkpoint: str | Checkpoint) -> Checkpoint:
    """Open `checkpoint` once, refusing one of another family (e.g. a qwen3 GGUF handed to the llama3 CLI)."""
    ckpt = checkpoint if isinstance(checkpoint, Checkpoint) else Checkpoint.open(checkpoint)
    if family.accepts(ckpt):
        return ckpt
    what = "GGUF architecture" if ckpt.kind == "gguf" else "config.json model_type"
    expected = family.gguf_archs if ckpt.kind == "gguf" else family.hf_model_types
    other = families.family_of(ckpt)
    hint = f"; use python -m models.{other.name}.<cli>" if other else ""
    raise UserError(f"{ckpt.path}: {what} {ckpt.architecture!r}, but {family.title} expects {expected}{hint}")


def read_config(family: Family, ckpt: Checkpoint):
    """The family's config for an opened checkpoint (config.json errors name the checkpoint's file)."""
    try:
        return family.config_from_gguf(ckpt) if ckpt.kind == "gguf" else family.config_from_hf(ckpt.hf_config)
    except UserError as e:
        msg = str(e)
        if msg.startswith("config.json"):
            msg = f"{ckpt.path}/{msg}"
        elif msg.startswith("model config"):  # the config's own checks (dataclass __post_init__)
            msg = f"{ckpt.path}: {msg}"
        raise UserError(msg) from None


def load_model(
    family: Family,
    checkpoint: str | Checkpoint,
    max_context_len: int = 2048,
    kernel=SDPA,
    last_logits_only: bool = False,
    max_seq_len: int | None = None,
    local_global: tuple[int, ...] | None = None,
    attention_sink: tuple[int, int] | None = None,
    quantize_kv_cache: bool = False,
    kv_cache_dtype: str = "fp32",
) -> tuple[nn.Module, Any, Recipe | None]:
    """Build the model and stream weights in; a quantize_and_save dir comes back already quantized (and fused as
    it was saved: dirs written before fusing was part of quantize_and_save load unfused). `max_seq_len`: the
    longest chunk one call will take (default: the context). `local_global`: per-layer sliding windows (0: full),
    repeated over the layers, replacing the checkpoint's. `attention_sink`: (sink, window), StreamingLLM's.
    `quantize_kv_cache`: int8 keys and values; `kv_cache_dtype`: "fp16" keeps them as float16."""
    ckpt = open_checkpoint(family, checkpoint)
    cfg = read_config(family, ckpt)
    if local_global is not None:
        if not local_global or min(local_global) < 0:
            raise UserError(f"--local-global {','.join(map(str, local_global))}: expected window sizes >= 0 (0 = full)")
        cfg = with_field(family, cfg, "--local-global", "layer_windows",
                         tuple(local_global[i % len(local_global)] for i in range(cfg.n_layers)))
    if attention_sink is not None:
        cfg = with_field(family, cfg, "--attention-sink", "attention_sink", tuple(attention_sink))
    if quantize_kv_cache:
        cfg = with_field(family, cfg, "--quantize-kv-cache", "kv_cache_int8", True)
    if kv_cache_dtype != "fp32":
        if kv_cache_dtype not in KV_DTYPES:
            raise UserError(f"--kv-cache-dtype {kv_cache_dtype!r}: expected one of {', '.join(KV_DTYPES)}")
        if quantize_kv_cache:
            raise UserError(f"--kv-cache-dtype {kv_cache_dtype}: --quantize-kv-cache stores the cache as int8; pass one")
        cfg = with_field(family, cfg, "--kv-cache-dtype", "kv_cache_dtype", kv_cache_dtype)
    saved = dict(ckpt.saved_recipe or {})
    fused = saved.pop("fused", False)
    recipe = Recipe.from_dict(saved, f"{ckpt.path}/config.json {QUANT_KEY}") if saved else hf_quantized_recipe(ckpt)
    with torch.device("meta"):
        model = family.build(cfg, max_context_len, kernel, last_logits_only, max_seq_len)
        if fused:
            fuse_agreeing(model, recipe)
        if recipe:
            quantized_shells(model, recipe)
    load_weights(model, ckpt, family, cfg)
    if recipe:
        check_quantized(model, recipe, ckpt.path)
        if recipe.needs_calibration:
            from common.quant.aqlm_model import check_tensors

            check_tensors(model, ckpt.path)
    model.init_buffers()
    return model.eval(), cfg, recipe


def with_field(family: Family, cfg, flag: str, name: str, value):
    """`cfg` with its attention field `name` set from export's `flag`; one error line for a family whose config
    has no such field."""
    if not dataclasses.is_dataclass(cfg) or not hasattr(cfg, name):
        raise UserError(f"{flag}: {family.title} models do not take it (their attention layers and caches come from "
                        "the checkpoint)")
    return dataclasses.replace(cfg, **{name: value})


def hf_quantized_recipe(ckpt: Checkpoint) -> Recipe | None:
    """The recipe of an HF checkpoint published quantized (its config.json `quantization_config`: AQLM 2x8)."""
    if ckpt.kind != "hf" or "quantization_config" not in ckpt.hf_config:
        return None  # most checkpoints: no need to import (and register) the AQLM op
    from common.quant.aqlm_model import hf_recipe

    return hf_recipe(ckpt.hf_config, f"{ckpt.path}/config.json")


def prepare_quantized(
    family: Family, checkpoint: str | Checkpoint, recipe: Recipe, **kwargs
) -> tuple[nn.Module, Any]:
    """Load, fuse q/k/v and gate/up (where their rules agree), and quantize with `recipe`; a pre-quantized checkpoint
    comes as it was saved, and a non-float `recipe` must then be the one it was saved with."""
    ckpt = open_checkpoint(family, checkpoint)
    model, cfg, saved = load_model(family, ckpt, **kwargs)
    if saved is not None:
        if not recipe.is_float and recipe.rules != saved.rules:
            raise UserError(f"{getattr(checkpoint, 'path', checkpoint)}: already quantized as {saved.name}; "
                            f"drop --quantize/--recipe or pass the same recipe")
        return model, cfg
    return quantize_from(family, ckpt, cfg, model, recipe)[0], cfg


def quantize_from(family: Family, ckpt: Checkpoint, cfg, model: nn.Module, recipe: Recipe,
                  fuse: bool = True) -> tuple[nn.Module, Recipe]:
    """Quantize a float `model` loaded from `ckpt` by `recipe` (its `gguf` rules resolved against the file's tensor
    types, the file's own blocks at hand), fusing q/k/v and gate/up where the rules agree. Returns the model and the
    resolved recipe (what a quantize_and_save directory records)."""
    recipe, blocks = _resolve(family, ckpt, cfg, model, recipe)
    return quantize_model(fuse_agreeing(model, recipe) if fuse else model, recipe, blocks), recipe


def _resolve(family: Family, ckpt: Checkpoint, cfg, model: nn.Module, recipe: Recipe):
    """(`recipe` with its `gguf` rules resolved against the file's tensor types, the file's own blocks or None)."""
    if ckpt.kind != "gguf":
        return resolve_gguf(recipe, model, {}), None
    sources = gguf_sources(family, ckpt, cfg)
    tied = "lm_head" in sources and sources["lm_head"] is sources.get(TIED_TABLE)
    recipe = resolve_gguf(recipe, model, {name: t.tensor_type for name, t in sources.items()}, tied)
    return recipe, functools.partial(gguf_blocks_of, family, cfg, sources)


def gguf_sources(family: Family, ckpt: Checkpoint, cfg) -> dict[str, Any]:
    """Module name -> the GGUF tensor (`gguf.ReaderTensor`) holding its weight; a tied lm_head -> the embedding's."""
    sources = {}
    for name, tensor in ckpt.gguf_tensors.items():
        fqn = family.gguf_name(name)
        if fqn and fqn.endswith(".weight"):
            sources[fqn.removesuffix(".weight")] = tensor
    if cfg.tie_embeddings and TIED_TABLE in sources:
        sources.setdefault("lm_head", sources[TIED_TABLE])
    return sources


def gguf_blocks_of(family: Family, cfg, sources: dict[str, Any], name: str, kind: str):
    """The file's own blocks for module `name` (a fused linear: its members' stacked by rows), in the model's row
    order (the family's GGUF row fixes, e.g. llama's q/k un-permutation, applied to codes, scales and offsets)."""
    from common.quant import gguf_blocks

    parts = []
    for member in member_names(name):
        t = sources[member]
        shape = (int(t.shape[1]), int(t.shape[0]))  # GGUF lists dims fastest first
        fix = functools.partial(_fix_rows, family, f"{member}.weight", cfg)
        if kind == "int4":
            parts.append(gguf_blocks.int4_blocks(t.data, t.tensor_type, shape).rows(fix))
        else:
            codes, scales = gguf_blocks.int8_blocks(t.data, t.tensor_type, shape)
            parts.append((fix(codes), fix(scales)))
    if kind == "int4":
        return gguf_blocks.Int4Blocks.cat(parts)
    return torch.cat([c for c, _ in parts]), torch.cat([s for _, s in parts])


def _fix_rows(family: Family, key: str, cfg, rows: torch.Tensor) -> torch.Tensor:
    return family.fix_gguf_tensor(key, rows, cfg)


def check_export_dir(output: str) -> None:
    """The tokenizer files an export writes beside its .pte may replace only an earlier export's: refuse a directory
    that holds tokenizer files but no .pte (an HF checkpoint, say), and one whose chat_template.jinja would take
    precedence over the exported tokenizer_config.json's template."""
    d = Path(output).resolve().parent
    if not d.is_dir():
        return
    if (d / "chat_template.jinja").exists():
        raise UserError(f"--output {output}: {d}/chat_template.jinja would override the exported tokenizer's chat "
                        "template; export into another directory")
    theirs = [n for n in ("tokenizer.json", "tokenizer_config.json") if (d / n).exists()]
    if theirs and not any(d.glob("*.pte")):
        raise UserError(f"--output {output}: {d} holds {' and '.join(theirs)} that no export wrote, which the .pte's "
                        "own tokenizer files would replace; export into another directory (nothing was changed)")


def export_model(
    family: Family,
    checkpoint: str,
    output: str,
    recipe: Recipe,
    backend: str = "xnnpack",
    max_seq_len: int = 128,
    max_context_len: int = 2048,
    kernel=SDPA,
    tokenizer_path: str | None = None,
    embeddings_input: bool = False,
    debug: ExportDebug | None = None,
    local_global: tuple[int, ...] | None = None,
    attention_sink: tuple[int, int] | None = None,
    quantize_kv_cache: bool = False,
    dtype: str = "fp32",
    kv_cache_dtype: str = "fp32",
    aqlm_kernel: str = "exact",
) -> tuple[ExportSummary, Tokenizer]:
    """Export to `output` (.pte) and write tokenizer.json + tokenizer_config.json beside it. `embeddings_input`: add
    the contract's optional `forward_embeddings` method (prefill from input embeddings; the KV cache shared).
    `debug`: an ETRecord and a memory-plan trace to write too. `local_global`, `attention_sink`, `quantize_kv_cache`,
    `kv_cache_dtype`: load_model's (a sink's program attends to sink + window positions, and says so in
    `get_attention_sink`).
    `dtype`: what the program computes in (DTYPES; bf16 where its kernels have it), behind fp32 inputs and logits.
    `aqlm_kernel`: "lut8" runs AQLM linears on int8 lookup tables (decode) and in bf16 (prefill): common.quant.aqlm_lut8."""
    if not output.endswith(".pte"):
        raise UserError(f"--output {output}: expected a path ending in .pte")
    check_dtype(dtype, backend, kernel.name == "custom_ops", recipe.is_float, quantize_kv_cache, kv_cache_dtype)
    check_output_file(output)  # before minutes of export, not after
    check_export_dir(output)
    check_seq_len(max_seq_len, max_context_len)
    ckpt = open_checkpoint(family, checkpoint)  # a bad checkpoint is reported as such, before its tokenizer
    tokenizer = load_tokenizer(tokenizer_path or checkpoint)
    t0 = time.perf_counter()
    model, cfg = prepare_quantized(
        family, ckpt, recipe, max_context_len=max_context_len, kernel=kernel, last_logits_only=True,
        max_seq_len=max_seq_len, local_global=local_global, attention_sink=attention_sink,
        quantize_kv_cache=quantize_kv_cache, kv_cache_dtype=kv_cache_dtype)
    if aqlm_kernel == "lut8":
        from common.quant.aqlm_lut8 import use_lut8

        if not use_lut8(model):
            raise UserError(f"--aqlm-kernel lut8: {ckpt.path} has no AQLM linears (an AQLM checkpoint: quantize_and_save "
                            "--quantize aqlm-2x8's output, or an HF dir with quant_method aqlm)")
    elif aqlm_kernel != "exact":
        raise UserError(f"--aqlm-kernel {aqlm_kernel!r}: expected exact or lut8")
    load_s = time.perf_counter() - t0
    eos = tuple(dict.fromkeys(cfg.eos_ids + tokenizer.eos_ids))
    constants = causal_lm_constants(cfg, model.max_seq_len, model.max_context_len, eos)
    if getattr(cfg, "attention_sink", ()):
        constants["get_attention_sink"] = list(cfg.attention_sink)
    out = Path(output)
    with staged_outputs(out.resolve().parent) as stage:  # the .pte and its tokenizer files land together or not
        modules = {"forward": model}
        if embeddings_input:
            if not hasattr(model, "forward_embeddings"):
                raise UserError(f"--embeddings-input: {family.title} models take token ids only")
            modules["forward_embeddings"] = bound_method(model, "forward_embeddings")
        if dtype != "fp32":  # the weights and buffers in place (the bound methods share them), then fp32 around them
            model.to(DTYPES[dtype])
            modules = {name: CastIO(module, DTYPES[dtype]) for name, module in modules.items()}
        linears = block_linears(model)  # after the dtype cast: what the program stores
        summary = export_pte(modules, stage / out.name, family.contract, constants, backend,
                             {"max_seq_len": model.max_seq_len, "hidden": cfg.dim}, share_mutable_buffers=embeddings_input,
                             debug=debug)
        tokenizer.save(stage)
        check_export_dir(output)  # again: the directory may have changed during the export
    return dataclasses.replace(summary, path=out, stages={"load + quantize": load_s} | summary.stages,
                               block_linears=linears), tokenizer


def _units(model: nn.Module, tied: bool) -> list[str]:
    """The pieces quantize_and_save loads, quantizes and writes one at a time: each decoder layer, and every other
    module that owns checkpoint tensors, in state-dict order (a tied lm_head right after the table it shares)."""
    units = []
    for key in model.state_dict():
        owner = key.rpartition(".")[0]
        unit = ".".join(owner.split(".")[:3]) if owner.startswith("model.layers.") else owner
        if unit not in units:
            units.append(unit)
    if tied and "lm_head" in units:
        units.remove("lm_head")
        units.insert(units.index(TIED_TABLE) + 1, "lm_head")
    return units


def _drops_tied_head(model: nn.Module, recipe: Recipe, tied: bool) -> bool:
    """A float head tied to a float table is not written: loading ties it back (common.checkpoint's tie map)."""
    return tied and "lm_head" not in plan(model, recipe, "lm_head") and TIED_TABLE not in plan(model, recipe, TIED_TABLE)


def quantize_and_save(family: Family, checkpoint: str, output: str, recipe: Recipe, fuse: bool = True,
                      progress: bool = True, calibration: Calibration | None = None) -> Path:
    """Write `output`/ with config.json (+ recipe), model.safetensors (torchao tensors) and the tokenizer.

    Streams: the model is built on the meta device and each unit (a decoder layer, the embedding, ...) is read,
    fused, quantized, written and dropped in turn, so peak memory is one unit's, not the model's (README)."""
    import copy

    from executorch.extension.llm.export.load import assign_one
    from torchao.prototype.safetensors.safetensors_support import flatten_tensor_state_dict
    from tqdm import tqdm

    from common.streaming import SafetensorsWriter, return_freed_memory, tensor_reader

    check_output_dir(output, is_quantized_dir)  # before minutes of work, not after
    ckpt = open_checkpoint(family, checkpoint)
    tokenizer = load_tokenizer(checkpoint)
    if ckpt.saved_recipe is not None or hf_quantized_recipe(ckpt) is not None:
        name = (ckpt.saved_recipe or {}).get("name", "aqlm-2x8")
        raise UserError(f"{checkpoint}: already quantized ({name}); quantize the original checkpoint")
    if recipe.needs_calibration:
        return quantize_calibrated(family, ckpt, output, recipe, calibration or Calibration(), progress)
    cfg = read_config(family, ckpt)
    with torch.device("meta"):
        model = family.build(cfg, 1, SDPA, False)
    tied = bool(getattr(cfg, "tie_embeddings", False))
    recipe, blocks = _resolve(family, ckpt, cfg, model, recipe)
    read = tensor_reader(ckpt, family, cfg, model.state_dict())
    head = plan(model, recipe, "lm_head").get("lm_head")
    drop_head = _drops_tied_head(model, recipe, tied)
    metadata: dict[str, Any] = {"tensor_names": []}
    return_freed_memory(first=True)
    with atomic_dir(output, is_quantized_dir) as tmp, SafetensorsWriter(tmp / "model.safetensors") as writer:
        shells = {}  # unit -> the meta module that takes its place once written (dropping the real one)
        for unit in tqdm(_units(model, tied), desc="quantize", unit="unit", disable=not progress):
            shells[unit] = copy.deepcopy(model.get_submodule(unit))
            if not (unit == "lm_head" and head is not None and head.scheme == "tied8"):  # tied8 reads the table
                for key in shells[unit].state_dict(prefix=unit + "."):
                    assign_one(model, key, read(key))
            if unit.startswith("model.layers.") and fuse:
                fuse_agreeing(model, recipe, only=int(unit.split(".")[2]))
            quantize_model(model, recipe, blocks, unit)
            state = {} if unit == "lm_head" and drop_head else model.get_submodule(unit).state_dict(prefix=unit + ".")
            tensors, meta = flatten_tensor_state_dict(state)
            for name, t in tensors.items():
                writer.add(name, t)
            metadata["tensor_names"] += json.loads(meta.pop("tensor_names", "[]"))
            metadata |= meta
            del state, tensors
            if tied and unit == TIED_TABLE:
                continue  # kept until the tied head, which may read it, is written (the next unit)
            replace_module(model, unit, shells.pop(unit))
            if tied and unit == "lm_head":
                replace_module(model, TIED_TABLE, shells.pop(TIED_TABLE))
            return_freed_memory()
        writer.close({**metadata, "tensor_names": json.dumps(metadata["tensor_names"])})
        hf = family.to_hf(cfg) | {QUANT_KEY: recipe.to_dict() | {"fused": fuse}}
        (tmp / "config.json").write_text(json.dumps(hf, indent=2) + "\n")
        tokenizer.save(tmp)
    return Path(output)



@dataclasses.dataclass(frozen=True)
class Calibration:
    """How a recipe that fits to activations (AQLM) is fit: calibration tokens, the layer fit, the tuning."""
    tokens: int | None = None  # None: all of common.calibration's text (4,096 of 18,102 overfit SmolLM2's tuning)
    fit: Any = None  # common.quant.aqlm_fit.FitConfig (None: its defaults)
    tune: Any = None  # common.quant.aqlm_model.TuneConfig (None: its defaults)


def quantize_calibrated(family: Family, ckpt: Checkpoint, output: str, recipe: Recipe, calib: Calibration,
                        progress: bool = True) -> Path:
    """quantize_and_save for a recipe with AQLM rules: the float model loaded whole (its activations calibrate
    the fit, its logits teach the tuning), each AQLM linear fit (kept as it finishes in `output`.aqlm-fits/, so a
    rerun resumes), the codebooks/scales/norms tuned, the recipe's other rules applied, then written: HF's AQLM
    tensor layout and `quantization_config`, plus the zoo's recipe."""
    import copy
    import shutil

    from torchao.prototype.safetensors.safetensors_support import flatten_tensor_state_dict

    from common.calibration import calibration_text
    from common.quant import aqlm_model
    from common.quant.aqlm_fit import FitConfig
    from common.streaming import SafetensorsWriter

    fit, tune = calib.fit or FitConfig(), calib.tune or aqlm_model.TuneConfig()
    tokenizer = load_tokenizer(ckpt.path)
    ids = tokenizer.encode(calibration_text(), add_bos=False)[: calib.tokens]
    model, cfg, _ = load_model(family, ckpt, max_context_len=max(256, tune.seq_len))
    names = [n for n, r in plan(model, recipe).items() if r.scheme == "aqlm"]
    cache = aqlm_model.open_cache(Path(str(output).rstrip("/") + ".aqlm-fits"),  # refused before the work, if not ours
                                  aqlm_model.cache_key(ckpt.path, fit, len(ids), names))
    teacher = copy.deepcopy(model) if tune.steps else None
    stats = aqlm_model.gram_matrices(model, ids, names, progress=progress)
    aqlm_model.fit_layers(model, names, stats, fit, cache, progress)
    if teacher is not None:
        aqlm_model.tune(model, teacher, ids, tune, progress)
        del teacher
    quantize_model(model, recipe)  # the other rules (the AQLM linears are no longer nn.Linear)
    with atomic_dir(output, is_quantized_dir) as tmp, SafetensorsWriter(tmp / "model.safetensors") as writer:
        state = model.state_dict()
        if _drops_tied_head(model, recipe, bool(getattr(cfg, "tie_embeddings", False))):
            del state["lm_head.weight"]
        tensors, meta = flatten_tensor_state_dict(state)
        for name, t in tensors.items():
            writer.add(name, t)
        writer.close(meta)
        hf = family.to_hf(cfg) | {"quantization_config": aqlm_model.hf_config(model),
                                  QUANT_KEY: recipe.to_dict() | {"fused": False}}
        (tmp / "config.json").write_text(json.dumps(hf, indent=2) + "\n")
        tokenizer.save(tmp)
    shutil.rmtree(cache)
    return Path(output)
