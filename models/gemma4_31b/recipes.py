"""Gemma's `--quantize default` and `--quantize sensitive`: upstream's gemma4_31b recipes as rule data
(common.quant.Rule), made into what XNNPACK runs (../shared/specs/gemma4.md).

Upstream (executorch/examples/models/gemma4_31b/quantize_and_save.py, CUDA/MLX): `default` = int4 g32 asymmetric
min-max linears + int8 per-axis embedding; `sensitive` = int8 g32 for v_proj and down_proj in the first and last
quarter of the layers (the most quantization-sensitive), int4 HQQ elsewhere. XNNPACK's 4-bit weights are symmetric
groups and its 8-bit weights per channel only, so here: int4 symmetric g32 (least-squares or HQQ scales) with int8
dynamic activations, 8da8w per channel for the sensitive projections. The embedding becomes int8 groups of 32 and
the tied LM head reads that same table (zoo::linear_q8): Gemma's 262k-row table is stored once, where upstream
stores it twice.
"""

from __future__ import annotations

from common.quant import TIED_TABLE, Recipe, Rule

SENSITIVE = r".*\.(v_proj|down_proj)"  # upstream's sensitive projections


def _table() -> tuple[Rule, ...]:
    return Rule(TIED_TABLE.replace(".", r"\."), "emb8", 32), Rule("lm_head", "tied8")


def default(cfg) -> Recipe:
    """int4 g32 linears (8da4w, least-squares scales), int8 embedding shared with the tied head."""
    return Recipe("default", (*_table(), Rule(".*", "8da4w", 32, "lsq")))


def sensitive(cfg) -> Recipe:
    """as default, with 8da8w v_proj/down_proj in the first and last quarter of the layers and HQQ scales."""
    quarter = max(cfg.n_layers // 4, 1)  # upstream: layers 0-14 and 45-59 of 60
    edges = (Rule(SENSITIVE, "8da8w", layers=(0, quarter)), Rule(SENSITIVE, "8da8w", layers=(cfg.n_layers - quarter,
                                                                                             cfg.n_layers)))
    return Recipe("sensitive", (*_table(), *edges, Rule(".*", "8da4w", 32, "hqq")))


RECIPES = {"default": default, "sensitive": sensitive}
