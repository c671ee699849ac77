"""Quantization recipes (torchao for linears, ExecuTorch's quantized_decomposed ops for embeddings).

Only recipes whose lowered outputs are tested are offered: torchao weight-only intx lowered to
XNNPACK gives wrong numbers with executorch 1.5.1, so it is not here.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from common.errors import UserError

LINEAR_RECIPES = ("fp32", "8da4w", "8da8w")
GROUP_SIZES = (32, 64, 128)


@dataclass(frozen=True)
class QuantRecipe:
    linear: str = "fp32"  # fp32 | 8da4w (int8 dynamic act, int4 grouped weight) | 8da8w (per-channel int8)
    group_size: int = 32  # 8da4w weight group size
    embedding_bits: int | None = None  # 4 or 8: quantized embedding table (group-wise, symmetric)
    embedding_group_size: int = 32

    def __post_init__(self):
        if self.linear not in LINEAR_RECIPES:
            raise UserError(f"--quantize {self.linear!r}: expected one of {', '.join(LINEAR_RECIPES)}")
        if self.group_size not in GROUP_SIZES:
            raise UserError(f"--group-size {self.group_size}: expected one of {GROUP_SIZES}")
        if self.embedding_bits not in (None, 4, 8):
            raise UserError(f"--embedding-bits {self.embedding_bits}: expected 4 or 8")

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def name(self) -> str:
        s = self.linear + (f"-g{self.group_size}" if self.linear == "8da4w" else "")
        return s + (f"-emb{self.embedding_bits}" if self.embedding_bits else "")


class QuantizedEmbedding(nn.Module):
    """Embedding table stored as grouped int4/int8 + fp32 scales; lowers to quantized_decomposed.embedding_{4bit,byte}."""

    def __init__(self, num_embeddings: int, dim: int, bits: int, group_size: int):
        super().__init__()
        self.bits, self.group_size = bits, group_size
        cols = dim // 2 if bits == 4 else dim
        self.register_buffer("qweight", torch.zeros(num_embeddings, cols, dtype=torch.uint8 if bits == 4 else torch.int8))
        self.register_buffer("scales", torch.ones(num_embeddings, dim // group_size))

    @classmethod
    def from_float(cls, weight: torch.Tensor, bits: int, group_size: int) -> QuantizedEmbedding:
        from executorch.exir.passes._quant_patterns_and_replacements import _pack_embedding_weight

        n, dim = weight.shape
        if dim % group_size:
            raise UserError(f"embedding dim {dim} is not a multiple of --embedding-group-size {group_size}")
        q, scales = quantize_groups(weight.detach().float().reshape(n, dim // group_size, group_size), bits)
        q = q.reshape(n, dim)
        mod = cls(n, dim, bits, group_size)
        mod.qweight = _pack_embedding_weight(q, bits) if bits == 4 else q
        mod.scales = scales.squeeze(-1)
        return mod

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        import executorch.exir.passes._quant_patterns_and_replacements  # noqa: F401  registers the ops

        qmax = 2 ** (self.bits - 1) - 1
        op = torch.ops.quantized_decomposed.embedding_4bit if self.bits == 4 else torch.ops.quantized_decomposed.embedding_byte
        return op.dtype(self.qweight, self.scales, None, -qmax - 1, qmax, tokens, dtype=torch.float32)


def _linear_config(recipe: QuantRecipe):
    from torchao.quantization import Int8DynamicActivationIntxWeightConfig
    from torchao.quantization.granularity import PerAxis, PerGroup

    if recipe.linear == "8da4w":
        return Int8DynamicActivationIntxWeightConfig(weight_dtype=torch.int4, weight_granularity=PerGroup(recipe.group_size))
    return Int8DynamicActivationIntxWeightConfig(weight_dtype=torch.int8, weight_granularity=PerAxis(0))


def quantize_model(model: nn.Module, recipe: QuantRecipe) -> nn.Module:
    """Quantize `model` in place (linears with torchao, the embedding table with QuantizedEmbedding)."""
    if recipe.linear != "fp32":
        from torchao.quantization import quantize_

        if recipe.linear == "8da4w":
            for name, mod in model.named_modules():
                if isinstance(mod, nn.Linear) and mod.in_features % recipe.group_size:
                    raise UserError(
                        f"--group-size {recipe.group_size} does not divide in_features {mod.in_features} of {name}; "
                        f"use one of {[g for g in GROUP_SIZES if mod.in_features % g == 0]}"
                    )
        with torch.no_grad():
            floats = {mod: mod.weight.detach() for mod in model.modules() if isinstance(mod, nn.Linear)}
            quantize_(model, _linear_config(recipe), filter_fn=lambda m, _: isinstance(m, nn.Linear))
            if recipe.linear == "8da4w":
                for mod, w in floats.items():
                    _fit_int4_groups(mod.weight, w, recipe.group_size)
    if recipe.embedding_bits:
        apply_embedding_structure(model, recipe, weights_from_float=True)
    return model


# Candidate scales per group: absmax * f / d. Plain absmax / qmax wastes levels on an outlier, and weights that
# were already quantized (a Q4_1 GGUF: 16 asymmetric levels per block of 32) suffer most: on SmolLM2 the search
# takes 8da4w perplexity on the bench text from 31.2 to 24.8 (fp32: 18.8), at no cost at run time.
_FIT_FACTORS = torch.linspace(0.5, 1.0, 21)


def quantize_groups(groups: torch.Tensor, bits: int, bf16: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric `bits`-bit quantization of groups [..., group_size]: (int8 values, scales [..., 1]).

    Each group's scale minimises the squared rounding error over [-2^(bits-1), 2^(bits-1) - 1] (the search
    llama.cpp's quantizers do); bf16 rounds the scales as XNNPACK stores 8da4w scales, so eager computes what
    the .pte runs."""
    qmin, qmax = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    amax = groups.abs().amax(-1, keepdim=True).clamp(min=1e-9)
    best_s, best_err = None, None
    for d in (qmax, qmax + 1):
        for f in _FIT_FACTORS:
            s = amax * (f / d)
            if bf16:
                s = s.to(torch.bfloat16).float()
            err = ((groups / s).round().clamp(qmin, qmax) * s - groups).square().sum(-1, keepdim=True)
            if best_s is None:
                best_s, best_err = s, err
            else:
                better = err < best_err
                best_s, best_err = torch.where(better, s, best_s), torch.where(better, err, best_err)
    return (groups / best_s).round().clamp(qmin, qmax).to(torch.int8), best_s


def _fit_int4_groups(qweight, weight: torch.Tensor, group_size: int) -> None:
    """Replace torchao's absmax int4 groups of `qweight` (IntxUnpackedToInt8Tensor) with fitted ones."""
    q, scales = quantize_groups(weight.float().reshape(weight.shape[0], -1, group_size), 4, bf16=True)
    qweight.qdata.copy_(q.reshape(qweight.qdata.shape))
    qweight.scale.copy_(scales.reshape(qweight.scale.shape))

def apply_embedding_structure(model: nn.Module, recipe: QuantRecipe, weights_from_float: bool = False) -> None:
    """Swap nn.Embedding modules for QuantizedEmbedding (quantizing the weights, or empty shells for loading)."""
    for mod in list(model.modules()):
        for child_name, child in list(mod.named_children()):
            if isinstance(child, nn.Embedding):
                if weights_from_float:
                    new = QuantizedEmbedding.from_float(child.weight, recipe.embedding_bits, recipe.embedding_group_size)
                else:
                    new = QuantizedEmbedding(child.num_embeddings, child.embedding_dim, recipe.embedding_bits,
                                             recipe.embedding_group_size)
                setattr(mod, child_name, new)
