"""Decoder-only transformer (Llama family: Llama 3, SmolLM2, Qwen3) implementing the zoo's `.pte` contract.

forward(tokens [1, S] int64, input_pos [1] int64) -> logits [1, S, V] (or [1, 1, V] with
`last_logits_only`), with the KV caches as mutable buffers.
"""

from __future__ import annotations

import torch
from torch import nn

from common.attention import Attention
from common.config import ModelConfig
from common.kv_cache import start_position
from common.layers import RMSNorm, SwiGLU
from common.rope import inv_frequencies, rope_tables, rotate_half_matrix


class DecoderLayer(nn.Module):
    def __init__(self, cfg: ModelConfig, max_context_len: int, use_custom_ops: bool):
        super().__init__()
        self.self_attn = Attention(cfg, max_context_len, use_custom_ops)
        self.mlp = SwiGLU(cfg.dim, cfg.hidden_dim)
        self.input_layernorm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.post_attention_layernorm = RMSNorm(cfg.dim, cfg.norm_eps)

    def forward(self, x, start, cos, sin, rot, mask):
        x = x + self.self_attn(self.input_layernorm(x), start, cos, sin, rot, mask)
        return x + self.mlp(self.post_attention_layernorm(x))


class Body(nn.Module):
    """Holds the HF `model.*` submodules so HF state-dict keys load as they are."""

    def __init__(self, cfg: ModelConfig, max_context_len: int, use_custom_ops: bool):
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.layers = nn.ModuleList(
            DecoderLayer(cfg, max_context_len, use_custom_ops) for _ in range(cfg.n_layers)
        )
        self.norm = RMSNorm(cfg.dim, cfg.norm_eps)


class Transformer(nn.Module):
    def __init__(
        self,
        cfg: ModelConfig,
        max_context_len: int = 2048,
        use_custom_ops: bool = False,
        last_logits_only: bool = False,
    ):
        super().__init__()
        self.cfg = cfg
        self.max_context_len = max_context_len
        self.use_custom_ops = use_custom_ops
        self.last_logits_only = last_logits_only
        if use_custom_ops:
            import executorch.extension.llm.custom_ops.custom_ops  # noqa: F401  registers llama::*
        self.model = Body(cfg, max_context_len, use_custom_ops)
        self.lm_head = nn.Linear(cfg.dim, cfg.vocab_size, bias=False)
        self.init_buffers(caches=False)

    def init_buffers(self, caches: bool = True) -> None:
        """(Re)create the runtime buffers: RoPE tables, causal mask and (with `caches`) the KV caches."""
        cfg, n = self.cfg, self.max_context_len
        cos, sin = rope_tables(n, inv_frequencies(cfg.head_dim, cfg.rope_theta, cfg.rope_scaling, cfg.rope_freq_factors))
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.register_buffer("rope_rot", rotate_half_matrix(cfg.head_dim), persistent=False)
        self.register_buffer("causal_mask", torch.full((n, n), float("-inf")).triu(1), persistent=False)
        if caches:
            for layer in self.model.layers:
                layer.self_attn.kv_cache.init_buffers()

    def forward(self, tokens: torch.Tensor, input_pos: torch.Tensor) -> torch.Tensor:
        seq_len = tokens.size(1)
        start = start_position(input_pos, seq_len, self.max_context_len)
        cos = self.rope_cos.narrow(0, start, seq_len)
        sin = self.rope_sin.narrow(0, start, seq_len)
        mask = None if self.use_custom_ops else self.causal_mask.narrow(0, start, seq_len)
        # rotate-half as a matmul lets XNNPACK take all of RoPE, but in the SDPA path (rotated k feeding
        # the in-place cache copy) its partitioner then finds a dependency cycle: slice there instead
        rot = self.rope_rot if self.use_custom_ops else None
        x = self.model.embed_tokens(tokens)
        for layer in self.model.layers:
            x = layer(x, start, cos, sin, rot, mask)
        x = self.model.norm(x)
        if self.last_logits_only:
            x = x[:, -1:, :]
        return self.lm_head(x)

    def fuse_projections(self) -> Transformer:
        """Fuse each layer's q/k/v and gate/up linears (exact; state-dict names change, so after loading)."""
        for layer in self.model.layers:
            layer.self_attn.fuse()
            layer.mlp.fuse()
        return self

    def reset_cache(self) -> None:
        for layer in self.model.layers:
            layer.self_attn.kv_cache.reset()

