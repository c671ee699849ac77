"""What a model's linear weights take in the program: bytes as the backend stores them, and bits a weight.

The `.pte`'s size counts everything (embedding table, LM head, norms); the AQLM bar and the spec's figures are about
the transformer blocks' linears, the modules a weight format replaces, so that is what `block_linears` counts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
from torch import nn

from common.quant.aqlm import AqlmLinear
from common.quant.aqlm_lut8 import AqlmLut8Linear
from common.quant.offset_linear import BlockOffsetLinear

_BITS = {torch.int4: 4, torch.int8: 8}  # torchao intx target dtype -> bits a code
_BLOCK = re.compile(r"(?:^|\.)layers\.\d+\.")


@dataclass(frozen=True)
class Footprint:
    bytes: int  # weights with their scales / codebooks; biases not counted
    weights: int  # in_features * out_features, summed

    @property
    def bits(self) -> float:
        return 8 * self.bytes / self.weights if self.weights else 0.0


def weight_bytes(module: nn.Module) -> int:
    """Bytes `module`'s weight takes in the program: AQLM codes (2 bits a weight), codebooks and scales as stored;
    a torchao intx weight as XNNPACK serializes it (int4 two codes a byte with bf16 group scales, int8 with fp32
    per-channel scales: executorch/backends/xnnpack/operators/node_visitor.py); a float weight as it is."""
    if isinstance(module, AqlmLinear):
        return sum(t.numel() * t.element_size() for t in (module.codes, module.codebooks, module.scales))
    if isinstance(module, AqlmLut8Linear):  # the same, repacked (codes padded to 64 rows and 8 groups)
        return sum(t.numel() * t.element_size() for t in (module.codes, module.books, module.scales))
    if isinstance(module, BlockOffsetLinear):  # a GGUF's int4 blocks: the symmetric part, group sums and offsets
        return sum(weight_bytes(m) for m in (module.linear, module.group_sums, module.offsets))
    w = module.weight
    if hasattr(w, "qdata"):
        grouped = w.block_size[-1] < w.shape[-1]
        return w.qdata.numel() * _BITS[w.target_dtype] // 8 + w.scale.numel() * (2 if grouped else 4)
    return w.numel() * w.element_size()


def block_linears(model: nn.Module) -> Footprint:
    """The footprint of the linears inside the transformer blocks (`layers.N.`), the LM head and embeddings not."""
    total, weights, done = 0, 0, ()
    for name, mod in model.named_modules():
        if not _BLOCK.search(name) or name.startswith(done):
            continue
        if isinstance(mod, (nn.Linear, AqlmLinear, AqlmLut8Linear, BlockOffsetLinear)):
            total += weight_bytes(mod)
            weights += mod.in_features * mod.out_features
            done = (f"{name}.",)  # a BlockOffsetLinear's own linears are counted with it
    return Footprint(total, weights)
