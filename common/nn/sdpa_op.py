"""`zoo::custom_sdpa`: ExecuTorch's `llama::custom_sdpa` (same schema, same meaning) under the zoo's name.

Exports with `--custom-ops` name this op, so a `.pte` runs the zoo's attention kernel (runners/kernels/sdpa.h)
in the Python runtime as well as in the C++ runners: ExecuTorch's own kernel registers the `llama::` name in the
Python runtime, a second registration of a name aborts, and the zoo's kernel is 2-7x faster at decode
(`python -m bench.sdpa_kernel`). Eager and export run ExecuTorch's own implementation of the llama op; its kernel
library is "sdpa" in common/kernels.py.
"""

from __future__ import annotations

import torch

from common.kernels import library_for
from common.oplib import out_variant

library_for("llama::custom_sdpa").load()  # the eager/meta implementations this op forwards to

_SIGNATURE = ("Tensor query, Tensor key, Tensor value, SymInt start_pos, Tensor? attn_mask=None, "
              "float dropout_p=0.0, bool is_causal=False, float? scale=None")
# A fragment: the zoo namespace is shared with the tied head's and AQLM's ops (common/quant).
_LIB = torch.library.Library("zoo", "FRAGMENT")
_LIB.define(f"custom_sdpa({_SIGNATURE}) -> Tensor")
_LIB.define(f"custom_sdpa.out({_SIGNATURE}, *, Tensor(a!) out) -> Tensor(a!)")


def _custom_sdpa(query, key, value, start_pos, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None):
    # float16 caches (--kv-cache-dtype fp16) widened to the query's float32, as the zoo's kernel reads them: the llama
    # op takes one dtype for all three
    key, value = key.to(query.dtype), value.to(query.dtype)
    return torch.ops.llama.custom_sdpa(query, key, value, start_pos, attn_mask, dropout_p, is_causal, scale)


_LIB.impl("custom_sdpa", _custom_sdpa, "CompositeExplicitAutograd")
_LIB.impl("custom_sdpa.out", out_variant(_custom_sdpa), "CompositeExplicitAutograd")
_LIB.impl("custom_sdpa", _custom_sdpa, "Meta")  # the llama op's meta checks and shape

# `zoo::update_cache(_with_indices)`: llama::update_cache's schema and meaning, and a float32 value may be written
# into a float16 cache (rounded as it is copied: runners/kernels/cache.h). A cast in the graph instead ran as a
# portable op, XNNPACK taking no dtype conversions: ~8 ms of every 128-token SmolLM2 prefill chunk.
_LIB.define("update_cache(Tensor value, Tensor(a!) cache, SymInt start_pos) -> Tensor")
_LIB.define("update_cache.out(Tensor value, Tensor(a!) cache, SymInt start_pos, *, Tensor(b!) out) -> Tensor(b!)")
_LIB.define("update_cache_with_indices(Tensor value, Tensor(a!) cache, SymInt start_pos, Tensor indices) -> Tensor")
_LIB.define("update_cache_with_indices.out(Tensor value, Tensor(a!) cache, SymInt start_pos, Tensor indices, *, "
            "Tensor(b!) out) -> Tensor(b!)")


def _update_cache(value, cache, start_pos):
    return torch.ops.llama.update_cache(value.to(cache.dtype), cache, start_pos)


def _update_cache_with_indices(value, cache, start_pos, indices):
    return torch.ops.llama.update_cache_with_indices(value.to(cache.dtype), cache, start_pos, indices)


def _update_cache_out(value, cache, start_pos, *, out):
    _update_cache(value, cache, start_pos)
    return out


def _update_cache_with_indices_out(value, cache, start_pos, indices, *, out):
    _update_cache_with_indices(value, cache, start_pos, indices)
    return out


def _update_meta(value, cache, start_pos, indices=None):
    return torch.empty((1,), dtype=value.dtype, device="meta")  # llama::update_cache's placeholder result


_LIB.impl("update_cache", _update_cache, "CompositeExplicitAutograd")
_LIB.impl("update_cache.out", _update_cache_out, "CompositeExplicitAutograd")
_LIB.impl("update_cache_with_indices", _update_cache_with_indices, "CompositeExplicitAutograd")
_LIB.impl("update_cache_with_indices.out", _update_cache_with_indices_out, "CompositeExplicitAutograd")
_LIB.impl("update_cache", _update_meta, "Meta")
_LIB.impl("update_cache_with_indices", _update_meta, "Meta")
