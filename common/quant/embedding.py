"""Embedding tables stored as grouped int4/int8 + fp32 scales (ExecuTorch's quantized_decomposed embedding ops)."""

from __future__ import annotations

import torch
from torch import nn

from common.errors import UserError
from common.quant.scales import quantize_groups


class QuantizedEmbedding(nn.Module):
    """Lowers to quantized_decomposed.embedding_{4bit,byte}, which the pip runtime has kernels for."""

    def __init__(self, num_embeddings: int, dim: int, bits: int, group_size: int):
        super().__init__()
        self.bits, self.group_size = bits, group_size
        cols = dim // 2 if bits == 4 else dim
        self.register_buffer("qweight", torch.zeros(num_embeddings, cols, dtype=torch.uint8 if bits == 4 else torch.int8))
        self.register_buffer("scales", torch.ones(num_embeddings, dim // group_size))

    @classmethod
    def from_float(cls, weight: torch.Tensor, bits: int, group_size: int, method: str = "lsq") -> QuantizedEmbedding:
        n, dim = weight.shape
        if dim % group_size:
            raise UserError(f"embedding dim {dim} is not a multiple of the embedding group size {group_size}")
        q, scales = quantize_groups(weight.detach().float().reshape(n, dim // group_size, group_size), bits,
                                    method=method)
        return cls.from_codes(q.reshape(n, dim), scales.squeeze(-1), bits)

    @classmethod
    def from_codes(cls, codes: torch.Tensor, scales: torch.Tensor, bits: int) -> QuantizedEmbedding:
        """From signed integer codes [n, dim] and their group scales [n, dim / group] (row = scale * code)."""
        from executorch.exir.passes._quant_patterns_and_replacements import _pack_embedding_weight

        (n, dim), groups = codes.shape, scales.shape[1]
        mod = cls(n, dim, bits, dim // groups)
        mod.qweight = _pack_embedding_weight(codes, bits) if bits == 4 else codes.to(torch.int8)
        mod.scales = scales.float()
        return mod

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        import executorch.exir.passes._quant_patterns_and_replacements  # noqa: F401  registers the ops

        qmax = 2 ** (self.bits - 1) - 1
        op = torch.ops.quantized_decomposed.embedding_4bit if self.bits == 4 else torch.ops.quantized_decomposed.embedding_byte
        return op.dtype(self.qweight, self.scales, None, -qmax - 1, qmax, tokens, dtype=torch.float32)
