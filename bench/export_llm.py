"""ExecuTorch's own `export_llm` pipeline on the same weights as our builds, for the bench's `export_llm` row.

export_llm reads a Meta-format llama checkpoint as a `.pth` through `torch.load` and a params.json. We write both
from the weights our loader reads from the GGUF (dequantized to fp32, HF layout): names mapped to Meta's, q/k
rows permuted from HF's rotate-half layout back to Meta's interleaved one (the inverse of what transformers'
and torchtune's converters do). The `.pth` is a pickle, which this project otherwise never writes or reads: this
one is ours, made here from our own tensors, and loaded by export_llm with torch's default weights_only=True.

Then `python -m executorch.extension.llm.export.export_llm` with the settings its docs give for a llama on
XNNPACK: KV cache, the custom SDPA op, dynamic shapes, 8da4w linears (group 32) and a 4-bit embedding (group 32),
the same prefill chunk (max_seq_length) and context as our builds.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from bench.artefacts import CACHE, ROOT, STATS, export_key, made_once
from common.errors import UserError

# ours -> export_llm (examples/models/llama: Meta's names); {} is the layer index
META_NAMES = {
    "model.embed_tokens.weight": "tok_embeddings.weight",
    "model.norm.weight": "norm.weight",
    "lm_head.weight": "output.weight",
    "model.layers.{}.self_attn.q_proj.weight": "layers.{}.attention.wq.weight",
    "model.layers.{}.self_attn.k_proj.weight": "layers.{}.attention.wk.weight",
    "model.layers.{}.self_attn.v_proj.weight": "layers.{}.attention.wv.weight",
    "model.layers.{}.self_attn.o_proj.weight": "layers.{}.attention.wo.weight",
    "model.layers.{}.mlp.gate_proj.weight": "layers.{}.feed_forward.w1.weight",
    "model.layers.{}.mlp.down_proj.weight": "layers.{}.feed_forward.w2.weight",
    "model.layers.{}.mlp.up_proj.weight": "layers.{}.feed_forward.w3.weight",
    "model.layers.{}.input_layernorm.weight": "layers.{}.attention_norm.weight",
    "model.layers.{}.post_attention_layernorm.weight": "layers.{}.ffn_norm.weight",
}


def to_meta(name: str) -> str | None:
    """Meta's name for one of our state-dict names (None: not a checkpoint tensor, e.g. a buffer)."""
    layer = re.search(r"\.layers\.(\d+)\.", name)
    key = name.replace(f".layers.{layer.group(1)}.", ".layers.{}.") if layer else name
    meta = META_NAMES.get(key)
    return meta.format(layer.group(1)) if meta and layer else meta


def hf_to_interleaved(w, n_heads: int):
    """q/k rows from HF's rotate-half order (per head: the first halves of the pairs, then the second halves) to
    Meta's interleaved pairs."""
    out_dim, dim = w.shape
    head_dim = out_dim // n_heads
    return w.view(n_heads, 2, head_dim // 2, dim).transpose(1, 2).reshape(out_dim, dim)


def write_checkpoint(gguf: str, out_dir: Path) -> tuple[Path, Path]:
    """(checkpoint.pth, params.json) of the llama-architecture GGUF for export_llm."""
    import torch

    from common.pipeline import load_model
    from models.llama3.model import FAMILY

    model, cfg, _ = load_model(FAMILY, gguf, max_context_len=8)
    if cfg.qk_norm or cfg.attention_bias or cfg.layer_windows or cfg.rope_scaling or cfg.rope_freq_factors:
        raise UserError(f"{gguf}: export_llm's row covers plain llama checkpoints (no qk-norm, biases, sliding "
                        "windows or rope scaling)")
    state = {}
    for name, t in model.state_dict().items():
        meta = to_meta(name)
        if meta is None:
            continue
        if meta.endswith(("attention.wq.weight", "attention.wk.weight")):
            t = hf_to_interleaved(t, cfg.n_heads if meta.endswith("wq.weight") else cfg.n_kv_heads)
        state[meta] = t.detach().float().contiguous().clone()
    if "output.weight" not in state:  # tied: export_llm's llama has its own output linear
        state["output.weight"] = state["tok_embeddings.weight"]
    params = {"dim": cfg.dim, "n_layers": cfg.n_layers, "n_heads": cfg.n_heads, "n_kv_heads": cfg.n_kv_heads,
              "vocab_size": cfg.vocab_size, "hidden_dim": cfg.hidden_dim, "head_dim": cfg.head_dim,
              "norm_eps": cfg.norm_eps, "rope_theta": cfg.rope_theta, "use_scaled_rope": False, "use_hf_rope": False}
    out_dir.mkdir(parents=True, exist_ok=True)
    ckpt, params_path = out_dir / "checkpoint.pth", out_dir / "params.json"
    torch.save(state, ckpt)
    params_path.write_text(json.dumps(params, indent=2))
    return ckpt, params_path


def export_args(ckpt: Path, params: Path, out_dir: Path, max_seq_len: int, max_context_len: int) -> list[str]:
    """export_llm's hydra overrides for its documented XNNPACK 8da4w llama recipe."""
    return ["base.model_class=llama3", f"base.checkpoint={ckpt}", f"base.params={params}",
            "model.use_kv_cache=True", "model.use_sdpa_with_kv_cache=True", "model.enable_dynamic_shape=True",
            "quantization.qmode=8da4w", "quantization.group_size=32", "quantization.embedding_quantize='4,32'",
            "backend.xnnpack.enabled=True", "backend.xnnpack.extended_ops=True",
            f"export.max_seq_length={max_seq_len}", f"export.max_context_length={max_context_len}",
            f"export.output_dir={out_dir}", f"export.output_name={out_dir / 'model.pte'}"]  # a bare name lands in the cwd


def cached_export_llm(gguf: str, max_seq_len: int, max_context_len: int, cache: Path = CACHE, log=None) -> Path:
    """export_llm's `.pte` of `gguf` (see the module docstring), cached like our exports, with its wall time and
    the export process's own peak RSS beside it (bench.artefacts.export_stats reads them)."""
    name = "export-llm"
    cache = Path(cache).resolve()  # the export runs in a directory of its own
    key = export_key("llama3", gguf, [name, str(max_seq_len), str(max_context_len)])
    out_dir = cache / f"{name}-{key}"
    out = out_dir / "model.pte"

    def make() -> None:
        work = out_dir / "work"
        ckpt, params = write_checkpoint(gguf, work)
        t0 = time.perf_counter()
        # export_llm as `python -m`, its process printing its own peak RSS at exit (common.io.peak_rss_mib)
        shim = ("import atexit, runpy, sys; from common.io import peak_rss_mib; "
                "atexit.register(lambda: print(f'peak RSS {peak_rss_mib():.0f} MiB', file=sys.stderr)); "
                "sys.argv = ['export_llm', *sys.argv[1:]]; "
                "runpy.run_module('executorch.extension.llm.export.export_llm', run_name='__main__')")
        cmd = [sys.executable, "-c", shim, *export_args(ckpt, params, work, max_seq_len, max_context_len)]
        # run in `work`: hydra writes its outputs/ folder into the cwd
        env = os.environ | {"HYDRA_FULL_ERROR": "1", "PYTHONPATH": os.pathsep.join(filter(None, [
            str(ROOT), os.environ.get("PYTHONPATH")]))}
        res = subprocess.run(cmd, cwd=work, capture_output=True, text=True, env=env)
        seconds = time.perf_counter() - t0
        peak = re.search(r"peak RSS (\d+) MiB", res.stderr)
        if res.returncode != 0 or not (work / "model.pte").is_file() or not peak:
            raise UserError(f"export_llm failed (exit {res.returncode}): {res.stderr.strip()[-600:]}")
        (work / "model.pte").replace(out)
        (out_dir / STATS).write_text(json.dumps({"seconds": seconds, "peak_rss_mib": float(peak.group(1))}))
        ckpt.unlink()  # 0.5 GB of fp32 for SmolLM2; the .pte is what the bench keeps

    return made_once(out, cache / f"{name}.lock", make, log and (lambda: log(f"exporting with ExecuTorch's "
                                                                              f"export_llm: {out}")))
