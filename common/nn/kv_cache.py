"""KV caches held as mutable buffers, written in place at a start position.

Layout is [B, S, H, D] (sequence before heads), which is what ExecuTorch's `llama::update_cache` /
`llama::custom_sdpa` kernels expect; the SDPA kernel transposes a view. How a cache is written is the attention
kernel's business (common.nn.attention); which positions attention may read is the cache's (`mask`).

Three layouts: `FlatKVCache` (position p in slot p: full attention), `RingKVCache` (a sliding-window layer's
last `window - 1 + max_seq_len` positions, position p in slot p % size) and `SinkKVCache` (StreamingLLM's sinks
and a ring); each also in int8 (`int8(cls)`: export --quantize-kv-cache) or float16 (export --kv-cache-dtype fp16:
half the bytes a deep decode reads; attention widens them to float32). `NoCache` keeps nothing: attention reads
only the call's own k, v (a stack run over whole sequences, such as an SGT estimator or a training step).
"""

from __future__ import annotations

import torch
from torch import nn


def start_position(input_pos: torch.Tensor, seq_len: int, capacity: int) -> int:
    """input_pos[0] as a symbolic int bounded for export: 0 <= start and start + seq_len <= capacity."""
    start = input_pos[0].item()
    torch._check(start >= 0)
    torch._check(start + seq_len <= capacity)
    return start


def causal_mask(n: int) -> torch.Tensor:
    """Additive [n, n] mask: row i (query at position i) reads positions 0..i of a flat cache."""
    return torch.full((n, n), float("-inf")).triu(1)


class FlatKVCache(nn.Module):
    """Static cache of `max_context_len` positions; position p lives in slot p."""

    def __init__(self, max_context_len: int, n_kv_heads: int, head_dim: int, dtype: torch.dtype = torch.float32):
        super().__init__()
        self.max_context_len = max_context_len
        self.shape = (1, max_context_len, n_kv_heads, head_dim)
        self.dtype = dtype
        self.init_buffers()

    def init_buffers(self) -> None:
        """(Re)create the caches; also used after building the model on the meta device."""
        self.register_buffer("k_cache", torch.zeros(self.shape, dtype=self.dtype), persistent=False)
        self.register_buffer("v_cache", torch.zeros(self.shape, dtype=self.dtype), persistent=False)

    def slots(self, start: int, seq_len: int) -> torch.Tensor | None:
        """[seq_len] int64: where positions start.. go; None where position p is slot p (one write at `start`)."""
        return None

    @staticmethod
    def write(buf: torch.Tensor, start: int, slots: torch.Tensor | None, x: torch.Tensor, kernel) -> None:
        """Write x ([B, S, H, *]) for positions start.. to `buf` at `slots` (see slots) with `kernel`."""
        if slots is None:
            kernel.write_cache(buf, start, x)
        else:
            kernel.write_cache_at(buf, start, slots, x)

    def update(self, start: int, k: torch.Tensor, v: torch.Tensor, kernel) -> tuple[torch.Tensor, torch.Tensor]:
        """Write k, v ([B, S, H, D]) at `start` (see start_position) with `kernel`; return what attention reads."""
        slots = self.slots(start, k.size(1))
        self.write(self.k_cache, start, slots, k, kernel)
        self.write(self.v_cache, start, slots, v, kernel)
        return self.k_cache, self.v_cache

    @staticmethod
    def mask(causal: torch.Tensor, start: int, seq_len: int) -> torch.Tensor:
        """Rows start..start+seq_len of the model's one `causal_mask` table: what those queries may read."""
        return causal.narrow(0, start, seq_len)

    def reset(self) -> None:
        self.k_cache.zero_()
        self.v_cache.zero_()


class Int8Storage:
    """Int8 keys and values for any cache layout (mixed in before it: `int8(cls)`), asymmetric per position and head
    (a float32 scale and an int8 zero point for each [position, head] row of head_dim), with ExecuTorch's
    quantized_decomposed per-token ops (export_llm's --quantize_kv_cache; kernels in the pip runtime and its C++
    quantized kernel library). Attention reads the whole cache dequantized to float32."""

    QMIN, QMAX = -128, 127

    def init_buffers(self) -> None:
        # the ops for eager and export, and their .out variants for to_executorch (the pip wheel's AOT library)
        import executorch.kernels.quantized  # noqa: F401
        from torch.ao.quantization.fx._decomposed import quantized_decomposed_lib  # noqa: F401

        rows = (*self.shape[:3], 1)
        for name in ("k", "v"):
            self.register_buffer(f"{name}_cache", torch.zeros(self.shape, dtype=torch.int8), persistent=False)
            self.register_buffer(f"{name}_scales", torch.ones(rows, dtype=torch.float32), persistent=False)
            self.register_buffer(f"{name}_zeros", torch.zeros(rows, dtype=torch.int8), persistent=False)

    def update(self, start: int, k: torch.Tensor, v: torch.Tensor, kernel) -> tuple[torch.Tensor, torch.Tensor]:
        ops = torch.ops.quantized_decomposed
        slots, out = self.slots(start, k.size(1)), []
        for name, x in (("k", k), ("v", v)):
            scales, zeros = ops.choose_qparams_per_token_asymmetric(x, torch.int8)  # [B, S, H, 1] each
            q = ops.quantize_per_token(x, scales, zeros, self.QMIN, self.QMAX, torch.int8)
            cache, cache_scales, cache_zeros = (getattr(self, f"{name}_{part}") for part in ("cache", "scales", "zeros"))
            self.write(cache, start, slots, q, kernel)
            self.write(cache_scales, start, slots, scales.float(), kernel)
            self.write(cache_zeros, start, slots, zeros.to(torch.int8), kernel)
            out.append(ops.dequantize_per_token(cache, cache_scales.double(), cache_zeros.long(), self.QMIN,
                                                self.QMAX, torch.int8, torch.float32))
        return out[0], out[1]

    def reset(self) -> None:
        for buf in self.buffers():
            buf.zero_()


class NoCache(nn.Module):
    """No cache: `update` hands back this call's k, v; the caller's mask is then [S, S]."""

    def update(self, start: int, k: torch.Tensor, v: torch.Tensor, kernel) -> tuple[torch.Tensor, torch.Tensor]:
        return k, v

    def init_buffers(self) -> None:
        pass

    def reset(self) -> None:
        pass


def ring_size(window: int, max_seq_len: int, max_context_len: int) -> int:
    """Slots a sliding-window layer needs so that every chunk of up to `max_seq_len` tokens is exact.

    A chunk of S tokens at `start` overwrites the slots of positions start + S - 1 - size and earlier; its first
    query still reads back to start - window + 1, so S <= size - window + 1. (ExecuTorch's 2 x window ring breaks
    this for chunks longer than window + 1: ../shared/specs/gemma4.md.) Never more than the context itself."""
    return min(window - 1 + max_seq_len, max_context_len)


class RingKVCache(FlatKVCache):
    """A sliding-window layer's cache of `size` slots (see ring_size); position p lives in slot p % size.

    Positions are written in order from 0 (a new sequence starts at 0): which position a slot holds follows from
    the last one written, so no slot-to-position buffer is kept. Rewinding further back than the ring keeps is
    not possible (those positions were overwritten)."""

    def __init__(self, window: int, size: int, n_kv_heads: int, head_dim: int, dtype: torch.dtype = torch.float32):
        super().__init__(size, n_kv_heads, head_dim, dtype)
        self.window, self.size = window, size

    def slots(self, start: int, seq_len: int) -> torch.Tensor:
        """[seq_len] int64: where positions start.. go."""
        return (torch.arange(seq_len) + start) % self.size

    @staticmethod
    def ring_mask(start: int, seq_len: int, size: int, window: int) -> torch.Tensor:
        """Additive [seq_len, size] mask over the ring's slots after writing positions start .. start+seq_len-1:
        slot j holds position p_j = last - (last - j) mod size (never written when negative); the query at q reads
        it where 0 <= q - p_j < window."""
        last = start + seq_len - 1
        held = last - (last - torch.arange(size)) % size  # [size]: the position each slot holds
        age = (torch.arange(seq_len) + start).unsqueeze(1) - held  # [S, size]: query position - slot position
        ok = (held >= 0) & (age >= 0) & (age < window)
        return torch.where(ok, torch.tensor(0.0), torch.tensor(float("-inf")))


class SinkKVCache(RingKVCache):
    """StreamingLLM's attention sink (export_llm's use_attention_sink): the first `sink` positions kept for good in
    slots [0, sink), then a ring of `size - sink` slots for the positions after them (position p >= sink in slot
    sink + (p - sink) % (size - sink)), so a sequence runs on past the cache. Keys are stored before RoPE: the model
    rotates every slot by its place in the cache at each call (see view)."""

    def __init__(self, sink: int, window: int, size: int, n_kv_heads: int, head_dim: int,
                 dtype: torch.dtype = torch.float32):
        super().__init__(window, size, n_kv_heads, head_dim, dtype)
        self.sink = sink

    def slots(self, start: int, seq_len: int) -> torch.Tensor:
        p = torch.arange(seq_len) + start
        return torch.where(p < self.sink, p, self.sink + (p - self.sink) % (self.size - self.sink))

    @staticmethod
    def held(last: int, sink: int, size: int) -> torch.Tensor:
        """[size]: the position each slot holds once positions 0..last are written (negative: never written)."""
        j = torch.arange(size)
        in_ring = last - (last - j) % (size - sink)  # the last p <= last with (p - sink) % ring == j - sink
        held = torch.where(j < sink, j, in_ring)
        unwritten = (held > last) | ((j >= sink) & (held < sink))
        return torch.where(unwritten, torch.full_like(j, -1), held)

    @staticmethod
    def view(start: int, seq_len: int, sink: int, window: int, size: int) -> tuple[torch.Tensor, torch.Tensor,
                                                                                   torch.Tensor]:
        """What a chunk of positions start.. sees after writing itself: (query RoPE positions [seq_len], key RoPE
        positions [size], mask [seq_len, size]). RoPE uses each token's place in the cache, not its position: the
        sinks sit at 0..sink-1, window keys at their own positions less a shift that puts the chunk's last query at
        most at sink + window - 1. Queries and window keys keep their true distances; a sink key sits
        sink + window - 1 - j before the chunk's last query (StreamingLLM's layout; the chunk's earlier queries see
        the sinks as that query does)."""
        last = start + seq_len - 1
        pos = torch.arange(seq_len) + start
        shift = (pos[-1:] + 1 - sink - window).clamp(min=0)  # [1]
        held = SinkKVCache.held(last, sink, size)
        key_pos = torch.where(held < sink, held, held - shift).clamp(min=0)
        return pos - shift, key_pos, SinkKVCache.sink_mask(held, start, seq_len, sink, window)

    @staticmethod
    def sink_mask(held: torch.Tensor, start: int, seq_len: int, sink: int, window: int) -> torch.Tensor:
        """Additive [seq_len, size] mask: the query at q reads a written slot holding h <= q that is a sink
        (h < sink) or in its window (q - h < window)."""
        q = (torch.arange(seq_len) + start).unsqueeze(1)
        age = q - held
        ok = (held >= 0) & (age >= 0) & ((held < sink) | (age < window))
        return torch.where(ok, torch.tensor(0.0), torch.tensor(float("-inf")))


class QuantizedKVCache(Int8Storage, FlatKVCache):
    """A flat cache of int8 keys and values."""


class QuantizedRingKVCache(Int8Storage, RingKVCache):
    """A sliding-window layer's ring of int8 keys and values."""


class QuantizedSinkKVCache(Int8Storage, SinkKVCache):
    """An attention-sink cache of int8 keys (before RoPE) and values."""


def int8(cls: type[FlatKVCache]) -> type[FlatKVCache]:
    """The int8 form of a cache class (flat, ring or sink)."""
    return {FlatKVCache: QuantizedKVCache, RingKVCache: QuantizedRingKVCache, SinkKVCache: QuantizedSinkKVCache}[cls]


KV_DTYPES = {"fp32": torch.float32, "fp16": torch.float16}  # export --kv-cache-dtype


def make_cache(cls: type[FlatKVCache], args: tuple, n_kv_heads: int, head_dim: int, cfg) -> FlatKVCache:
    """`cls(*args, n_kv_heads, head_dim)` stored as `cfg` says: int8 (cfg.kv_cache_int8), else cfg.kv_cache_dtype."""
    if cfg.kv_cache_int8:
        return int8(cls)(*args, n_kv_heads, head_dim)
    return cls(*args, n_kv_heads, head_dim, dtype=KV_DTYPES[cfg.kv_cache_dtype])
