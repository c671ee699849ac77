"""The llama-style decoder shared by the families that are one (llama3, qwen3): its config and its model.

Config parsing here reads the HF / GGUF fields every llama-style checkpoint has; what tells one family from
another (model_type, GGUF arch, qk-norm, tensor fixes) is the family's, in models/<name>/model.py.

forward(tokens [1, S] int64, input_pos [1] int64) -> logits [1, S, V] (or [1, 1, V] with `last_logits_only`),
with the KV caches as mutable buffers: the causal-LM `.pte` contract (common.pte.contract.CAUSAL_LM).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from common.errors import UserError
from common.nn.attention import SDPA, Attention
from common.nn.kv_cache import (
    FlatKVCache,
    RingKVCache,
    SinkKVCache,
    causal_mask,
    make_cache,
    ring_size,
    start_position,
)
from common.nn.linear import member_names
from common.nn.mlp import GatedMLP
from common.nn.norm import RMSNorm
from common.nn.rope import RopeScaling, inv_frequencies, rope_tables, rotate_half_matrix

MAX_SIZE = 1 << 22  # any one model dimension, layer or vocabulary count: larger is a corrupt file, not a model


def positive_int(value: Any, key: str, source: str) -> int:
    """`value` if it is an int in [1, MAX_SIZE] (bools excluded), else a UserError naming `source` and `key`."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_SIZE:
        raise UserError(f"{source}: {key} must be a positive integer (at most {MAX_SIZE}), got {value!r}")
    return value


def gguf_getter(meta: dict[str, Any], arch: str, path: str) -> Callable[..., Any]:
    """get(key, default=None): GGUF metadata `arch.key`, or a UserError naming the file when absent and no default."""

    def get(key: str, default: Any = None) -> Any:
        value = meta.get(f"{arch}.{key}", default)
        if value is None:
            raise UserError(f"{path}: GGUF metadata lacks '{arch}.{key}'")
        return value

    return get


@dataclass(frozen=True)
class ModelConfig:
    vocab_size: int
    dim: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    hidden_dim: int
    head_dim: int
    norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    rope_scaling: RopeScaling | None = None
    # llama.cpp's `rope_freqs.weight` (Llama 3.1+ GGUFs): per-pair divisors of the inverse frequencies
    rope_freq_factors: tuple[float, ...] | None = None
    tie_embeddings: bool = False
    qk_norm: bool = False  # per-head RMSNorm on q and k before RoPE (Qwen3)
    attention_bias: bool = False
    max_position_embeddings: int = 8192
    bos_id: int | None = None
    eos_ids: tuple[int, ...] = field(default_factory=tuple)
    # each layer's sliding window in positions (0: full attention); () = every layer full. HF's `layer_types` +
    # `sliding_window`, or export --local-global (export_llm's local_global_attention)
    layer_windows: tuple[int, ...] = ()
    # (sink, window): StreamingLLM's attention sink (export --attention-sink); () = none. Not an HF key.
    attention_sink: tuple[int, ...] = ()
    kv_cache_int8: bool = False  # int8 keys and values (export --quantize-kv-cache). Not an HF key.
    kv_cache_dtype: str = "fp32"  # "fp16": float16 keys and values (export --kv-cache-dtype). Not an HF key.

    def __post_init__(self) -> None:
        for key in ("vocab_size", "dim", "n_layers", "n_heads", "n_kv_heads", "hidden_dim", "head_dim"):
            positive_int(getattr(self, key), key, "model config")
        if self.n_heads % self.n_kv_heads:
            raise UserError(f"model config: n_heads {self.n_heads} is not a multiple of n_kv_heads {self.n_kv_heads}")
        check_layer_windows(self.layer_windows, self.n_layers)
        check_attention_sink(self.attention_sink)
        if self.attention_sink and any(self.layer_windows):
            raise UserError("model config: an attention sink and sliding-window layers do not go together")

    def window(self, layer: int) -> int:
        """Layer `layer`'s sliding window (0: full attention)."""
        return self.layer_windows[layer] if self.layer_windows else 0

    @classmethod
    def from_hf(cls, hf: dict[str, Any], **family: Any) -> ModelConfig:
        """Build from the dict of an HF `config.json`; `family` sets what the family knows (e.g. qk_norm=True)."""
        try:
            n_heads = positive_int(hf["num_attention_heads"], "num_attention_heads", "config.json")
            dim = positive_int(hf["hidden_size"], "hidden_size", "config.json")
            rs = hf.get("rope_scaling") or (hf.get("rope_parameters") or {})
            scaling = None
            rope_type = rs.get("rope_type", rs.get("type"))
            if rope_type not in (None, "default", "llama3"):  # e.g. Qwen3's optional YaRN
                raise UserError(f"config.json: rope_type {rope_type!r} is not supported (default or llama3)")
            if rope_type == "llama3":
                scaling = RopeScaling(
                    factor=rs["factor"],
                    low_freq_factor=rs["low_freq_factor"],
                    high_freq_factor=rs["high_freq_factor"],
                    original_max_position_embeddings=rs["original_max_position_embeddings"],
                )
            theta = hf.get("rope_theta", rs.get("rope_theta", 10000.0))
            eos = hf.get("eos_token_id")
            eos_ids = tuple(eos) if isinstance(eos, list) else (() if eos is None else (eos,))
            return cls(
                vocab_size=positive_int(hf["vocab_size"], "vocab_size", "config.json"),
                dim=dim,
                n_layers=positive_int(hf["num_hidden_layers"], "num_hidden_layers", "config.json"),
                n_heads=n_heads,
                n_kv_heads=hf.get("num_key_value_heads") or n_heads,
                hidden_dim=hf["intermediate_size"],
                head_dim=hf.get("head_dim") or dim // n_heads,
                norm_eps=hf.get("rms_norm_eps", 1e-5),
                rope_theta=float(theta),
                rope_scaling=scaling,
                rope_freq_factors=tuple(hf["rope_freq_factors"]) if hf.get("rope_freq_factors") else None,
                tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
                attention_bias=bool(hf.get("attention_bias", False)),
                max_position_embeddings=hf.get("max_position_embeddings", 8192),
                bos_id=hf.get("bos_token_id"),
                eos_ids=eos_ids,
                layer_windows=hf_layer_windows(hf),
                **family,
            )
        except KeyError as e:
            raise UserError(f"config.json is missing required key {e.args[0]!r}") from None
        except (TypeError, ValueError, AttributeError) as e:  # a value of the wrong type (a dict for a number, ...)
            raise UserError(f"config.json: a value of an unexpected type ({type(e).__name__}: {e})") from None

    @classmethod
    def from_gguf(cls, meta: dict[str, Any], arch: str, path: str = "GGUF", **family: Any) -> ModelConfig:
        """Build from GGUF metadata under `arch.*` (llama.cpp's key names); vocab_size comes from the caller."""
        get = gguf_getter(meta, arch, path)

        n_heads = positive_int(get("attention.head_count"), f"{arch}.attention.head_count", path)
        dim = positive_int(get("embedding_length"), f"{arch}.embedding_length", path)
        eos = meta.get("tokenizer.ggml.eos_token_id")
        return cls(
            dim=dim,
            n_layers=positive_int(get("block_count"), f"{arch}.block_count", path),
            n_heads=n_heads,
            n_kv_heads=get("attention.head_count_kv", n_heads),
            hidden_dim=get("feed_forward_length"),
            head_dim=get("attention.key_length", dim // n_heads),
            norm_eps=float(get("attention.layer_norm_rms_epsilon", 1e-5)),
            rope_theta=float(get("rope.freq_base", 10000.0)),
            max_position_embeddings=get("context_length", 8192),
            bos_id=meta.get("tokenizer.ggml.bos_token_id"),
            eos_ids=() if eos is None else (int(eos),),
            **family,
        )

    def to_hf(self) -> dict[str, Any]:
        """The llama-style `config.json` fields (the family adds model_type and architectures)."""
        d = {
            "vocab_size": self.vocab_size,
            "hidden_size": self.dim,
            "num_hidden_layers": self.n_layers,
            "num_attention_heads": self.n_heads,
            "num_key_value_heads": self.n_kv_heads,
            "intermediate_size": self.hidden_dim,
            "head_dim": self.head_dim,
            "rms_norm_eps": self.norm_eps,
            "rope_theta": self.rope_theta,
            "tie_word_embeddings": self.tie_embeddings,
            "attention_bias": self.attention_bias,
            "max_position_embeddings": self.max_position_embeddings,
            "bos_token_id": self.bos_id,
            "eos_token_id": list(self.eos_ids),
            "hidden_act": "silu",
        }
        if self.rope_freq_factors:
            d["rope_freq_factors"] = list(self.rope_freq_factors)  # not an HF key; read back by from_hf
        if any(self.layer_windows):
            windows = {w for w in self.layer_windows if w}
            if len(windows) > 1:
                raise UserError(f"layer windows {sorted(windows)}: an HF config.json holds one sliding_window size")
            d |= {"sliding_window": windows.pop(), "use_sliding_window": True,
                  "layer_types": ["sliding_attention" if w else "full_attention" for w in self.layer_windows]}
        if self.rope_scaling:
            d["rope_scaling"] = {"rope_type": "llama3", **dataclasses.asdict(self.rope_scaling)}
        return d


def hf_layer_windows(hf: dict[str, Any]) -> tuple[int, ...]:
    """Per-layer windows from HF's `layer_types` ('sliding_attention' / 'full_attention') and `sliding_window`;
    without `layer_types`, Qwen2/3's `use_sliding_window` from layer `max_window_layers` on. () when all are full."""
    n, window = hf["num_hidden_layers"], hf.get("sliding_window")
    types = hf.get("layer_types")
    if types is None and hf.get("use_sliding_window"):
        first = hf.get("max_window_layers", 28)  # transformers' Qwen2/3 default
        types = ["sliding_attention" if i >= first else "full_attention" for i in range(n)]
    if not types or all(t == "full_attention" for t in types):
        return ()
    if len(types) != n or set(types) - {"sliding_attention", "full_attention"}:
        raise UserError(f"config.json: layer_types {types}: expected {n} of 'sliding_attention' / 'full_attention'")
    if not isinstance(window, int) or window < 1:
        raise UserError(f"config.json: sliding_window {window!r}: expected a positive int for the sliding layers")
    return tuple(window if t == "sliding_attention" else 0 for t in types)


class DecoderLayer(nn.Module):
    def __init__(self, cfg: ModelConfig, max_context_len: int, kernel, cache: nn.Module | None = None):
        super().__init__()
        cache = cache if cache is not None else FlatKVCache(max_context_len, cfg.n_kv_heads, cfg.head_dim)
        self.window = getattr(cache, "window", 0)  # which of forward's masks this layer reads (a sink: its own)
        self.self_attn = Attention(cfg.dim, cfg.n_heads, cfg.n_kv_heads, cfg.head_dim, cache, kernel,
                                   bias=cfg.attention_bias, qk_norm_eps=cfg.norm_eps if cfg.qk_norm else None)
        self.mlp = GatedMLP(cfg.dim, cfg.hidden_dim, "silu")
        self.input_layernorm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.post_attention_layernorm = RMSNorm(cfg.dim, cfg.norm_eps)

    def forward(self, x, start, cos, sin, rot, mask, key_rope=None):
        x = x + self.self_attn(self.input_layernorm(x), start, cos, sin, rot, mask, key_rope)
        return x + self.mlp(self.post_attention_layernorm(x))


class Body(nn.Module):
    """Holds the HF `model.*` submodules so HF state-dict keys load as they are."""

    def __init__(self, cfg: ModelConfig, max_context_len: int, kernel, max_seq_len: int):
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.layers = nn.ModuleList(DecoderLayer(cfg, max_context_len, kernel, layer_cache(cfg, i, max_seq_len,
                                                                                           max_context_len))
                                    for i in range(cfg.n_layers))
        self.norm = RMSNorm(cfg.dim, cfg.norm_eps)


def layer_cache(cfg: ModelConfig, layer: int, max_seq_len: int, max_context_len: int) -> nn.Module:
    """A full layer's flat cache, or a sliding layer's ring (common.nn.kv_cache.ring_size: exact for every chunk up
    to max_seq_len), or an attention sink's; int8 or float16 as cfg says (make_cache). A window as long as the
    context is full attention."""
    window = cfg.window(layer)
    if cfg.attention_sink:
        sink, window = cfg.attention_sink
        cls, args = SinkKVCache, (sink, window, sink_size(cfg, max_seq_len))
    elif not window or window >= max_context_len:
        cls, args = FlatKVCache, (max_context_len,)
    else:
        cls, args = RingKVCache, (window, ring_size(window, max_seq_len, max_context_len))
    return make_cache(cls, args, cfg.n_kv_heads, cfg.head_dim, cfg)


class DecoderModel(nn.Module):
    """What every decoder family's model shares: HF-named `model.layers` whose attention holds a KV cache and whose
    projections fuse (q/k/v where there is a v_proj; gate/up)."""

    def caches(self) -> list[FlatKVCache]:
        return [layer.self_attn.kv_cache for layer in self.model.layers]

    def reset_cache(self) -> None:
        for cache in self.caches():
            cache.reset()

    def fuse_projections(self, allow: Callable[[list[str]], bool] = lambda names: True,
                         only: int | None = None) -> DecoderModel:
        """Fuse each layer's (or layer `only`'s) q/k/v and gate/up linears where `allow(their names)` (exact;
        state-dict names change: qkv_proj, gate_up_proj). Layers without a v_proj (Gemma 4's K=V) keep q, k apart."""
        for i, layer in enumerate(self.model.layers):
            if only is not None and i != only:
                continue
            attn = layer.self_attn
            if getattr(attn, "v_proj", None) is not None and allow(list(member_names(f"model.layers.{i}.self_attn.qkv_proj"))):
                attn.fuse()
            if allow(list(member_names(f"model.layers.{i}.mlp.gate_up_proj"))):
                layer.mlp.fuse()
        return self


def check_layer_windows(windows: tuple[int, ...], n_layers: int) -> None:
    """A config's layer_windows: () or one window >= 0 per layer (0 = full attention)."""
    if windows and (len(windows) != n_layers or min(windows) < 0):
        raise UserError(f"model config: layer_windows {list(windows)}: expected {n_layers} window sizes >= 0 "
                        "(0 = full attention)")


def check_attention_sink(sink: tuple[int, ...]) -> None:
    """A config's attention_sink: () or (sink, window), both at least 1."""
    if sink and (len(sink) != 2 or min(sink) < 1):
        raise UserError(f"model config: attention_sink {list(sink)}: expected (sink, window), both at least 1")


def sink_size(cfg: ModelConfig, max_seq_len: int) -> int:
    """Slots of an attention-sink cache: the sinks, then a ring that a chunk of max_seq_len never overwrites while
    a query of it still reads the slot (common.nn.kv_cache.ring_size)."""
    sink, window = cfg.attention_sink
    return sink + window - 1 + max_seq_len


SINK_POSITIONS = 1 << 30  # an attention-sink model's input positions: unbounded in practice (bounded for export)


class Transformer(DecoderModel):
    def __init__(self, cfg: ModelConfig, max_context_len: int = 2048, kernel=SDPA, last_logits_only: bool = False,
                 max_seq_len: int | None = None):
        super().__init__()
        self.cfg = cfg
        # an attention sink attends to sink + window positions, whatever the context it was asked for
        self.max_context_len = sum(cfg.attention_sink) if cfg.attention_sink else max_context_len
        self.max_seq_len = min(max_seq_len or max_context_len, self.max_context_len)  # the longest chunk a call takes
        self.kernel = kernel
        self.last_logits_only = last_logits_only
        self.model = Body(cfg, self.max_context_len, kernel, self.max_seq_len)
        self.lm_head = nn.Linear(cfg.dim, cfg.vocab_size, bias=False)
        # rotate-half as a matmul when the XNNPACK lowering sets it (common.export.xnnpack_source_transforms)
        self.register_buffer("rope_rot", None, persistent=False)
        self.init_buffers(caches=False)

    def init_buffers(self, caches: bool = True) -> None:
        """(Re)create the runtime buffers: RoPE tables, causal mask and (with `caches`) the KV caches."""
        cfg, n = self.cfg, self.max_context_len
        # a sink's positions in the cache reach sink + window - 1 + a chunk
        rope_n = sink_size(cfg, self.max_seq_len) + 1 if cfg.attention_sink else n
        cos, sin = rope_tables(rope_n, inv_frequencies(cfg.head_dim, cfg.rope_theta, cfg.rope_scaling,
                                                       cfg.rope_freq_factors))
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.register_buffer("causal_mask", causal_mask(n), persistent=False)
        if caches:
            for cache in self.caches():
                cache.init_buffers()

    def rotate_half_as_matmul(self) -> None:
        """RoPE's rotate-half as a matmul (common.export.xnnpack_source_transforms; same numbers)."""
        self.rope_rot = rotate_half_matrix(self.rope_cos.shape[-1])

    def forward(self, tokens: torch.Tensor, input_pos: torch.Tensor) -> torch.Tensor:
        return self.forward_embeddings(self.model.embed_tokens(tokens), input_pos)

    def forward_embeddings(self, embeddings: torch.Tensor, input_pos: torch.Tensor) -> torch.Tensor:
        """forward from input embeddings [1, S, dim] instead of token ids (HF's `inputs_embeds`; the argument is
        named as the contract's input, which torch.export matches by name)."""
        x, seq_len = embeddings, embeddings.size(1)
        if self.cfg.attention_sink:
            return self.head(self.forward_sink(x, input_pos))
        start = start_position(input_pos, seq_len, self.max_context_len)
        cos = self.rope_cos.narrow(0, start, seq_len)
        sin = self.rope_sin.narrow(0, start, seq_len)
        # full layers: causal by position (no mask where the kernel needs none); sliding layers: their ring's
        masks = {0: FlatKVCache.mask(self.causal_mask, start, seq_len) if self.kernel.needs_mask else None}
        for layer in self.model.layers:
            if layer.window not in masks:
                torch._check(seq_len <= self.max_seq_len)  # longer chunks would overwrite ring slots still to be read
                cache = layer.self_attn.kv_cache
                masks[layer.window] = RingKVCache.ring_mask(start, seq_len, cache.size, cache.window)
            x = layer(x, start, cos, sin, self.rope_rot, masks[layer.window])
        return self.head(x)

    def head(self, x: torch.Tensor) -> torch.Tensor:
        """The final norm and the LM head (on the last position only, with last_logits_only)."""
        x = self.model.norm(x)
        if self.last_logits_only:
            x = x[:, -1:, :]
        return self.lm_head(x)

    def forward_sink(self, x: torch.Tensor, input_pos: torch.Tensor) -> torch.Tensor:
        """The layers with an attention sink (StreamingLLM). Positions run on past the cache; RoPE uses each token's
        place in the cache instead (SinkKVCache.view)."""
        seq_len = x.size(1)
        start = start_position(input_pos, seq_len, SINK_POSITIONS)
        torch._check(seq_len <= self.max_seq_len)  # longer chunks would overwrite ring slots still to be read
        q_pos, key_pos, mask = SinkKVCache.view(start, seq_len, *self.cfg.attention_sink,
                                                sink_size(self.cfg, self.max_seq_len))
        cos, sin = self.rope_cos.index_select(0, q_pos), self.rope_sin.index_select(0, q_pos)
        key_rope = (self.rope_cos.index_select(0, key_pos), self.rope_sin.index_select(0, key_pos))
        for layer in self.model.layers:
            x = layer(x, start, cos, sin, self.rope_rot, mask, key_rope)
        return x
