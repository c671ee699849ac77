"""Fusing linears that read the same input into one GEMM."""

from __future__ import annotations

import torch
from torch import nn

# The names fused linears take (common.nn.attention / common.nn.mlp) -> the linears they replace. Recipes match
# rules against the members' names, so a rule written for `.*\.v_proj` still applies after fusing.
FUSED_MEMBERS = {"qkv_proj": ("q_proj", "k_proj", "v_proj"), "gate_up_proj": ("gate_proj", "up_proj")}


def member_names(name: str) -> tuple[str, ...]:
    """The original linears' names of a fused linear's name (the name itself if it is not fused)."""
    prefix, _, last = name.rpartition(".")
    members = FUSED_MEMBERS.get(last)
    return tuple(f"{prefix}.{m}" if prefix else m for m in members) if members else (name,)


def fuse_linears(*linears: nn.Linear) -> nn.Linear:
    """One Linear whose output is the concatenation of `linears`' outputs (weights stacked by rows).

    Exact: each output row keeps its weights, and quantization groups run along rows, so a fused layer
    quantizes to the same values. One GEMM instead of several saves a dynamic activation quantization and an
    XNNPACK operator dispatch per linear per token (decode is dispatch-bound on small models)."""
    bias = linears[0].bias is not None
    fused = nn.Linear(linears[0].in_features, sum(lin.out_features for lin in linears), bias=bias)
    with torch.no_grad():
        fused.weight.copy_(torch.cat([lin.weight for lin in linears]))
        if bias:
            fused.bias.copy_(torch.cat([lin.bias for lin in linears]))
    return fused

