// Kernels writing a KV cache [1, L, H, D] (sequence before heads) at start_pos, or slot by slot at given indices:
// the semantics of ExecuTorch's `llama::update_cache(_with_indices).out` (op_update_cache.cpp) for the way the
// zoo calls them, plus one case of its own: a float32 value written into a float16 cache (export
// --kv-cache-dtype fp16), rounded to nearest even as it is copied. As a separate cast in the graph that rounding
// ran as a portable `_to_dim_order_copy` (XNNPACK takes no dtype conversions), ~5 ns a value: 8 ms of every
// 128-token prefill chunk of SmolLM2. Registered as `llama::` by llama.cpp and as `zoo::` by sdpa.cpp.
#pragma once

#include <cstdint>
#include <cstring>

#include <executorch/runtime/kernel/kernel_includes.h>

#if defined(__F16C__)
#include <immintrin.h>
#endif

namespace zoo_cache {

using executorch::aten::ScalarType;
using executorch::aten::Tensor;
using executorch::runtime::KernelRuntimeContext;

// A value the cache can hold: its own dtype (bytes copied: float32, an int8 cache's int8 values, float32 scales
// and int8 zero points), or float32 into float16.
inline bool writable(const Tensor& value, const Tensor& cache) {
  return value.dim() == 4 && cache.dim() == 4 &&
         (value.scalar_type() == cache.scalar_type() ||
          (value.scalar_type() == ScalarType::Float && cache.scalar_type() == ScalarType::Half));
}

// `n` values from `src` (the value's dtype) to `dst` (the cache's).
inline void store(const Tensor& value, const void* src, const Tensor& cache, void* dst, size_t n) {
  if (value.scalar_type() == cache.scalar_type()) {
    std::memcpy(dst, src, n * value.element_size());
    return;
  }
  const float* s = static_cast<const float*>(src);
  _Float16* d = static_cast<_Float16*>(dst);
  size_t i = 0;
#if defined(__F16C__)
  for (; i + 8 <= n; i += 8) {
    const __m128i h = _mm256_cvtps_ph(_mm256_loadu_ps(s + i), _MM_FROUND_TO_NEAREST_INT);
    std::memcpy(d + i, &h, sizeof h);
  }
#endif
  for (; i < n; ++i) d[i] = static_cast<_Float16>(s[i]);
}

inline Tensor& update_cache_out(KernelRuntimeContext& ctx, const Tensor& value, Tensor& cache, int64_t start_pos,
                                Tensor& out) {
  ET_KERNEL_CHECK_MSG(ctx, writable(value, cache), InvalidArgument, out,
                      "update_cache: expected a 4-D value and cache of one dtype (or float32 into float16)");
  const int64_t seq_len = value.size(1);
  ET_KERNEL_CHECK_MSG(ctx,
                      value.size(0) == 1 && cache.size(0) == 1 && value.size(2) == cache.size(2) &&
                          value.size(3) == cache.size(3) && start_pos >= 0 && start_pos + seq_len <= cache.size(1),
                      InvalidArgument, out, "update_cache: value [1, %zd, H, D] does not fit the cache at %zd",
                      static_cast<ssize_t>(seq_len), static_cast<ssize_t>(start_pos));
  const size_t row = static_cast<size_t>(value.size(2) * value.size(3));  // values per position
  store(value, value.const_data_ptr(), cache,
        static_cast<char*>(cache.mutable_data_ptr()) + start_pos * row * cache.element_size(), seq_len * row);
  return out;  // a 1-element placeholder in the graph; nothing reads it
}

inline Tensor& update_cache_with_indices_out(KernelRuntimeContext& ctx, const Tensor& value, Tensor& cache,
                                             int64_t start_pos, const Tensor& indices, Tensor& out) {
  (void)start_pos;  // the indices say where each position goes
  ET_KERNEL_CHECK_MSG(ctx, writable(value, cache), InvalidArgument, out,
                      "update_cache_with_indices: expected a 4-D value and cache of one dtype (or float32 into "
                      "float16)");
  const int64_t seq_len = value.size(1), slots = cache.size(1);
  ET_KERNEL_CHECK_MSG(ctx,
                      value.size(0) == 1 && cache.size(0) == 1 && value.size(2) == cache.size(2) &&
                          value.size(3) == cache.size(3) && indices.dim() == 2 &&
                          indices.scalar_type() == ScalarType::Long && indices.size(0) == 1 &&
                          indices.size(1) == seq_len,
                      InvalidArgument, out, "update_cache_with_indices: expected value [1, S, H, D], indices [1, S]");
  const size_t row = static_cast<size_t>(value.size(2) * value.size(3));  // values per position
  const int64_t* idx = indices.const_data_ptr<int64_t>();
  for (int64_t s = 0; s < seq_len; ++s)
    ET_KERNEL_CHECK_MSG(ctx, idx[s] >= 0 && idx[s] < slots, InvalidArgument, out,
                        "update_cache_with_indices: slot %zd outside the cache's %zd", static_cast<ssize_t>(idx[s]),
                        static_cast<ssize_t>(slots));
  for (int64_t s = 0; s < seq_len; ++s)
    store(value, static_cast<const char*>(value.const_data_ptr()) + s * row * value.element_size(), cache,
          static_cast<char*>(cache.mutable_data_ptr()) + idx[s] * row * cache.element_size(), row);
  return out;
}

}  // namespace zoo_cache
