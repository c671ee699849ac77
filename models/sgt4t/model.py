"""Stained Glass Transform for Text (SGT): a learned, stochastic transform of a base LLM's input embeddings that
runs on the client (../shared/specs/sgt4t.md; arXiv 2506.09452). Our own implementation of the published idea.

For tokens t, embeddings x = E[t], noise mask m and attention mask a:

    mu    = MeanEstimator(x, a)       [1, S, H]
    sigma = StdEstimator(x, a)        [1, S, H], in (s_min, s_max)
    x~    = x + mu + sigma * eps,  eps ~ N(0, I)   where m and a are set; x~ = x elsewhere (bit for bit)

Each estimator is N causal decoder layers of the base's own architecture (common.decoder.DecoderLayer: RMSNorm,
RoPE with the base's scaling, GQA, SwiGLU), a final RMSNorm and a Linear H -> H with bias; both start from the
base's layer 0, the mean head at zero and the std head at a small constant. Any family whose model is the shared
llama-style decoder (llama3, qwen3) can be a base.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from common.decoder import DecoderLayer, ModelConfig
from common.errors import UserError
from common.nn.attention import SDPA
from common.nn.kv_cache import NoCache
from common.nn.norm import RMSNorm
from common.nn.rope import inv_frequencies, rope_tables, rotate_half_matrix

VERSION = "0.1.0"  # of this package's transform and .pte layout (the `get_version` constant method)
MEAN_PARAMS = ("identity", "bounded")
STD_PARAMS = ("cloak", "direct")
CONFIG_FILE, WEIGHTS_FILE = "config.json", "model.safetensors"


@dataclass(frozen=True)
class SgtConfig:
    base: ModelConfig  # the base model's config: the embedding table's shape and the estimator layers'
    name: str = "sgt"
    base_name: str = "base"  # what the base model is called (get_model_name)
    base_family: str = "llama3"  # the models/<name> family that reads the base checkpoint
    n_layers: int = 1  # decoder layers per estimator
    mean_param: str = "bounded"  # identity: mu = r; bounded: mu = B tanh(r / B)
    mean_bound: float = 1.0  # B, in units of the embedding table's element std (set by from_base)
    std_param: str = "cloak"  # cloak: s_min + (s_max - s_min)(1 + tanh(rho / shallow)) / 2; direct: clamp(rho)
    s_min: float = 1e-3
    s_max: float = 1.0
    shallow: float = 1.0
    std_init: float = 0.1  # sigma where training starts

    def __post_init__(self) -> None:
        if self.mean_param not in MEAN_PARAMS:
            raise UserError(f"sgt config: mean_param {self.mean_param!r}: expected one of {MEAN_PARAMS}")
        if self.std_param not in STD_PARAMS:
            raise UserError(f"sgt config: std_param {self.std_param!r}: expected one of {STD_PARAMS}")
        if not 0 <= self.s_min < self.std_init < self.s_max:
            raise UserError(f"sgt config: need 0 <= s_min < std_init < s_max, got {self.s_min}, {self.std_init}, "
                            f"{self.s_max}")
        if self.n_layers < 1:
            raise UserError(f"sgt config: n_layers must be at least 1, got {self.n_layers}")

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["base"] = self.base.to_hf()
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any], source: str = CONFIG_FILE) -> SgtConfig:
        try:
            return cls(**(d | {"base": ModelConfig.from_hf(d["base"])}))
        except (KeyError, TypeError) as e:
            raise UserError(f"{source}: not an SGT config ({type(e).__name__}: {e})") from None


class Estimator(nn.Module):
    """N causal decoder layers of the base's architecture (no KV cache), a final RMSNorm, a Linear H -> H + bias."""

    def __init__(self, base: ModelConfig, n_layers: int):
        super().__init__()
        self.layers = nn.ModuleList(DecoderLayer(base, 0, SDPA, cache=NoCache()) for _ in range(n_layers))
        self.norm = RMSNorm(base.dim, base.norm_eps)
        self.head = nn.Linear(base.dim, base.dim, bias=True)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, rot: torch.Tensor | None,
                mask: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x, 0, cos, sin, rot, mask)
        return self.head(self.norm(x))


def attention_bias(attention_mask: torch.Tensor) -> torch.Tensor:
    """Additive [S, S] mask from attention_mask [1, S]: causal, padded keys hidden. A query always reads itself,
    so a padded row stays finite (its output is the clean embedding anyway). arange comparisons, not vmap, so the
    exported graph passes the edge IR check."""
    pos = torch.arange(attention_mask.size(1))
    allowed = (pos.unsqueeze(0) <= pos.unsqueeze(1)) & attention_mask[0].bool().unsqueeze(0)
    allowed = allowed | (pos.unsqueeze(0) == pos.unsqueeze(1))
    return torch.where(allowed, torch.tensor(0.0), torch.tensor(float("-inf")))


class StainedGlassTransform(nn.Module):
    """forward(input_ids [1, S], noise_mask [1, S] bool, attention_mask [1, S]) -> x~ [1, S, H] (fresh noise each
    call); `mu_sigma` the deterministic part. `max_seq_len` sizes the RoPE tables (the longest input)."""

    def __init__(self, cfg: SgtConfig, max_seq_len: int = 2048):
        super().__init__()
        self.cfg, self.max_seq_len = cfg, max_seq_len
        b = cfg.base
        self.embed_tokens = nn.Embedding(b.vocab_size, b.dim)
        self.mean_estimator = Estimator(b, cfg.n_layers)
        self.std_estimator = Estimator(b, cfg.n_layers)
        self.register_buffer("rope_rot", None, persistent=False)
        self.kernel = SDPA
        self.init_buffers()

    def init_buffers(self) -> None:
        b = self.cfg.base
        cos, sin = rope_tables(self.max_seq_len, inv_frequencies(b.head_dim, b.rope_theta, b.rope_scaling,
                                                                 b.rope_freq_factors))
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)

    def rotate_half_as_matmul(self) -> None:
        """RoPE's rotate-half as a matmul (common.export.xnnpack_source_transforms; same numbers)."""
        self.rope_rot = rotate_half_matrix(self.rope_cos.shape[-1])

    def init_heads(self) -> None:
        """Mean head at zero (mu = 0), std head at the constant that gives sigma = std_init."""
        cfg = self.cfg
        if cfg.std_param == "cloak":
            p = (cfg.std_init - cfg.s_min) / (cfg.s_max - cfg.s_min)
            rho = cfg.shallow * math.atanh(2 * p - 1)
        else:
            rho = cfg.std_init
        with torch.no_grad():
            for head, bias in ((self.mean_estimator.head, 0.0), (self.std_estimator.head, rho)):
                head.weight.zero_()
                head.bias.fill_(bias)

    def mean(self, r: torch.Tensor) -> torch.Tensor:
        if self.cfg.mean_param == "bounded":
            return self.cfg.mean_bound * torch.tanh(r / self.cfg.mean_bound)
        return r

    def std(self, rho: torch.Tensor) -> torch.Tensor:
        c = self.cfg
        if c.std_param == "cloak":
            return c.s_min + (c.s_max - c.s_min) * (1 + torch.tanh(rho / c.shallow)) / 2
        return rho.clamp(c.s_min, c.s_max)

    def estimate(self, x: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mu, sigma) [1, S, H] for clean embeddings x [1, S, H]."""
        seq_len = x.size(1)
        cos, sin = self.rope_cos.narrow(0, 0, seq_len), self.rope_sin.narrow(0, 0, seq_len)
        mask = attention_bias(attention_mask)
        mu = self.mean(self.mean_estimator(x, cos, sin, self.rope_rot, mask))
        sigma = self.std(self.std_estimator(x, cos, sin, self.rope_rot, mask))
        return mu, sigma

    def mu_sigma(self, input_ids: torch.Tensor, noise_mask: torch.Tensor,
                 attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The deterministic part: (mu, sigma) for the tokens (noise_mask is taken so both methods share inputs)."""
        return self.estimate(self.embed_tokens(input_ids), attention_mask)

    def transform(self, x: torch.Tensor, noise_mask: torch.Tensor, attention_mask: torch.Tensor,
                  noise: torch.Tensor | None = None) -> torch.Tensor:
        """x~ for clean embeddings x; `noise` is eps (default: fresh N(0, I)). Outside the masks x~ is x itself."""
        mu, sigma = self.estimate(x, attention_mask)
        # randn, not randn_like: the pip runtime has a kernel for the first only
        eps = torch.randn(x.shape, dtype=x.dtype) if noise is None else noise
        noised = (noise_mask & attention_mask.bool()).unsqueeze(-1)
        return torch.where(noised, x + mu + sigma * eps, x)

    def forward(self, input_ids: torch.Tensor, noise_mask: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.transform(self.embed_tokens(input_ids), noise_mask, attention_mask)


# --- from a base model, to and from disk -----------------------------------------------------------------------

DEFAULT_BOUNDS = {"mean_bound": 1.0, "s_min": 0.01, "s_max": 16.0, "std_init": 0.5}  # x the table's element std


def from_base(base_model: nn.Module, base_cfg: ModelConfig, max_seq_len: int = 2048, **options: Any
              ) -> StainedGlassTransform:
    """A fresh SGT for a loaded base model (common.decoder.Transformer): its embedding table, both estimators'
    layers from its layer 0, heads initialised (see init_heads). DEFAULT_BOUNDS' keys in `options` are in units of the
    embedding table's element std e (SmolLM2: e = 0.136, rows 3.15 apart from the origin and ~2.0 from their
    nearest neighbour, so hiding a token takes per-element noise near 1, about 7 e: hence s_max = 16 e)."""
    table = base_model.model.embed_tokens.weight.detach()
    e_std = float(table.float().std())
    in_e = {k: options.pop(k, v) * e_std for k, v in DEFAULT_BOUNDS.items()}
    cfg = SgtConfig(base=base_cfg, **in_e, **options)
    sgt = StainedGlassTransform(cfg, max_seq_len)
    layer0 = base_model.model.layers[0].state_dict()
    with torch.no_grad():
        sgt.embed_tokens.weight.copy_(table)
        for est in (sgt.mean_estimator, sgt.std_estimator):
            for layer in est.layers:
                layer.load_state_dict(layer0)
    sgt.init_heads()
    return sgt.eval()


BASE_FAMILIES = ("llama3", "qwen3")  # families whose model is common.decoder.Transformer


def load_base(checkpoint: str, max_context_len: int = 256):
    """(base model, its config, its family, its tokenizer) for a llama-style base checkpoint (GGUF or HF dir)."""
    from common.checkpoint import Checkpoint
    from common.pipeline import load_model
    from common.tokenizer import load_tokenizer
    from models import family_of

    ckpt = Checkpoint.open(checkpoint)
    family = family_of(ckpt)
    if family is None or family.name not in BASE_FAMILIES:
        raise UserError(f"{checkpoint}: an SGT base must be a llama-style decoder ({' or '.join(BASE_FAMILIES)} "
                        f"family), got architecture {ckpt.architecture!r}")
    model, cfg, recipe = load_model(family, ckpt, max_context_len=max_context_len)
    if recipe is not None:
        raise UserError(f"{checkpoint}: a quantized directory; an SGT needs the float base model")
    return model, cfg, family, load_tokenizer(checkpoint)


def save(sgt: StainedGlassTransform, directory: str | Path, tokenizer=None, recipe=None) -> Path:
    """config.json + model.safetensors (+ the base's tokenizer), written atomically. A quantized SGT (`recipe`, a
    common.quant.Recipe it was quantized with) is stored as torchao's safetensors tensors, the recipe in config.json
    under the key quantize_and_save writes for every family."""
    from safetensors.torch import save_file

    from common.checkpoint import QUANT_KEY
    from common.io import atomic_dir

    state, metadata = {k: v.contiguous() for k, v in sgt.state_dict().items()}, {"format": "pt"}
    config: dict[str, Any] = {"sgt4t": sgt.cfg.to_json()}
    if recipe is not None:
        from torchao.prototype.safetensors.safetensors_support import flatten_tensor_state_dict

        state, flat = flatten_tensor_state_dict(state)
        metadata |= flat
        config[QUANT_KEY] = recipe.to_dict()
    with atomic_dir(directory, lambda p: (p / CONFIG_FILE).is_file()) as tmp:
        save_file(state, tmp / WEIGHTS_FILE, metadata=metadata)
        (tmp / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
        if tokenizer is not None:
            tokenizer.save(tmp)
    return Path(directory)


def read_config(directory: str | Path) -> SgtConfig:
    """The SgtConfig of an SGT directory (its config.json)."""
    return _read_config(directory)[0]


def saved_recipe(directory: str | Path):
    """The common.quant.Recipe an SGT directory was quantized with (quantize_and_save), or None."""
    return _read_config(directory)[1]


def _read_config(directory: str | Path):
    from common.checkpoint import QUANT_KEY
    from common.quant import Recipe

    d = Path(directory)
    config = d / CONFIG_FILE
    if not config.is_file():
        raise UserError(f"{d}: not an SGT directory (no {CONFIG_FILE})")
    raw = json.loads(config.read_text())
    if "sgt4t" not in raw:
        raise UserError(f"{config}: not an SGT config (no 'sgt4t' key)")
    recipe = Recipe.from_dict(raw[QUANT_KEY], f"{config} {QUANT_KEY}") if QUANT_KEY in raw else None
    return SgtConfig.from_json(raw["sgt4t"], str(config)), recipe


def load(directory: str | Path, max_seq_len: int = 2048) -> StainedGlassTransform:
    """An SGT saved by `save`, quantized as it was saved."""
    from safetensors import safe_open

    from common.quant import check_quantized, quantized_shells

    d = Path(directory)
    cfg, recipe = _read_config(d)
    sgt = StainedGlassTransform(cfg, max_seq_len)
    try:
        with safe_open(d / WEIGHTS_FILE, "pt") as f:
            state, metadata = {k: f.get_tensor(k) for k in f.keys()}, f.metadata() or {}
    except FileNotFoundError:
        raise UserError(f"{d}: {WEIGHTS_FILE} missing") from None
    if recipe is not None:
        from torchao.prototype.safetensors.safetensors_support import unflatten_tensor_state_dict

        quantized_shells(sgt, recipe)
        state, _ = unflatten_tensor_state_dict(state, metadata)
    missing, unexpected = sgt.load_state_dict(state, strict=False, assign=recipe is not None)
    if missing or unexpected:
        raise UserError(f"{d / WEIGHTS_FILE}: missing {sorted(missing)[:3]}, unexpected {sorted(unexpected)[:3]}")
    if recipe is not None:
        check_quantized(sgt, recipe, str(d))
        sgt.requires_grad_(False)  # inference only; export cannot trace int weights that ask for gradients
    return sgt.eval()


# --- what users weigh: size ---------------------------------------------------------------------------------

def size_report(cfg: SgtConfig) -> dict[str, int]:
    """Parameters of the SGT by part (counted on the meta device, so any size works) and of its base model."""
    from common.decoder import Transformer

    with torch.device("meta"):
        sgt = StainedGlassTransform(cfg, max_seq_len=1)
        base = Transformer(cfg.base, max_context_len=1)

    def count(m: nn.Module) -> int:
        return sum(p.numel() for p in m.parameters())

    layers = sum(count(e.layers) for e in (sgt.mean_estimator, sgt.std_estimator))
    heads = sum(count(e.head) + count(e.norm) for e in (sgt.mean_estimator, sgt.std_estimator))
    base_params = count(base) - (count(base.lm_head) if cfg.base.tie_embeddings else 0)
    return {"embedding": count(sgt.embed_tokens), "estimator_layers": layers, "heads": heads, "total": count(sgt),
            "base": base_params, "pte_8da4w_bytes": pte_bytes(sgt)}


def pte_bytes(sgt: nn.Module, quantize: str = "8da4w", group_size: int = 32) -> int:
    """Weight bytes of the SGT's .pte under an export recipe (works on the meta device): the embedding and every
    non-Linear parameter fp32; Linear weights int4 with a bf16 scale per group (8da4w: XNNPACK's blockwise layout),
    int8 with an fp32 scale per output channel (8da8w), or fp32. The spec's Llama-3.1-8B SGT: 2365.7 MB, the
    vendor's .pte 2365.8 MB (the rest is the program)."""
    linear = [m.weight for m in sgt.modules() if isinstance(m, nn.Linear)]
    n_linear = sum(w.numel() for w in linear)
    rest = 4 * (sum(p.numel() for p in sgt.parameters()) - n_linear)
    if quantize == "8da4w":
        return rest + n_linear // 2 + 2 * (n_linear // group_size)
    if quantize == "8da8w":
        return rest + n_linear + 4 * sum(w.shape[0] for w in linear)
    return rest + 4 * n_linear


def format_size_report(r: dict[str, int]) -> str:
    """The report in millions of parameters and GB at bf16 and fp32."""
    m = lambda n: f"{n / 1e6:.1f}M"  # noqa: E731
    return (f"SGT {m(r['total'])} params = embedding {m(r['embedding'])} + estimator layers "
            f"{m(r['estimator_layers'])} + heads {m(r['heads'])}; {r['total'] * 2 / 1e9:.2f} GB bf16, "
            f"{r['total'] * 4 / 1e9:.2f} GB fp32, {r['pte_8da4w_bytes'] / 1e6:.1f} MB as the export's default .pte "
            f"(8da4w g32 Linears, fp32 embedding); base model {m(r['base'])} ({r['total'] / r['base']:.0%} of it)")
