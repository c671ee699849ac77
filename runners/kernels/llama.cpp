// Kernels for ExecuTorch's `llama::update_cache.out`, `llama::update_cache_with_indices.out` and
// `llama::custom_sdpa.out`, which the pip wheel's C++ SDK lacks (its own live in a library that needs libtorch).
// With them the C++ runner runs `.pte` files that name ExecuTorch's llama custom ops, as the Python runtime does.
// The attention kernel is the zoo's own (sdpa.h), also registered as `zoo::custom_sdpa.out` by sdpa.cpp.
//
// Semantics follow executorch/extension/llm/custom_ops (op_update_cache.cpp) for the way the zoo calls them:
// caches [B, L, Hkv, D] (sequence before heads), written at start_pos, or slot by slot at the given indices.
//
// A self-registering kernel file (runners/kernels/README.md): linked into every runner as an object file, it
// registers its kernels before main. Declared for Python in common/kernels.py (library "llama").
#include <cstdint>
#include <cstring>

#include <executorch/extension/kernel_util/make_boxed_from_unboxed_functor.h>
#include <executorch/runtime/kernel/kernel_includes.h>

#include "sdpa.h"

namespace {

using executorch::aten::ScalarType;
using executorch::aten::Tensor;
using executorch::runtime::Error;
using executorch::runtime::KernelRuntimeContext;

// The caches are copied as bytes: float32 ones, and an int8 cache with its float32 scales and int8 zero points
// (export --quantize-kv-cache writes all three with these ops).
bool same_4d(const Tensor& value, const Tensor& cache) {
  return value.dim() == 4 && cache.dim() == 4 && value.scalar_type() == cache.scalar_type();
}

Tensor& update_cache_out(KernelRuntimeContext& ctx, const Tensor& value, Tensor& cache, int64_t start_pos,
                         Tensor& out) {
  ET_KERNEL_CHECK_MSG(ctx, same_4d(value, cache), InvalidArgument, out,
                      "update_cache: expected a 4-D value and cache of one dtype");
  const int64_t seq_len = value.size(1);
  ET_KERNEL_CHECK_MSG(ctx,
                      value.size(0) == 1 && cache.size(0) == 1 && value.size(2) == cache.size(2) &&
                          value.size(3) == cache.size(3) && start_pos >= 0 && start_pos + seq_len <= cache.size(1),
                      InvalidArgument, out, "update_cache: value [1, %zd, H, D] does not fit the cache at %zd",
                      static_cast<ssize_t>(seq_len), static_cast<ssize_t>(start_pos));
  const size_t row = static_cast<size_t>(value.size(2) * value.size(3)) * value.element_size();  // bytes per position
  std::memcpy(static_cast<char*>(cache.mutable_data_ptr()) + start_pos * row, value.const_data_ptr(), seq_len * row);
  return out;  // a 1-element placeholder in the graph; nothing reads it
}

Tensor& update_cache_with_indices_out(KernelRuntimeContext& ctx, const Tensor& value, Tensor& cache,
                                      int64_t start_pos, const Tensor& indices, Tensor& out) {
  (void)start_pos;  // the indices say where each position goes
  ET_KERNEL_CHECK_MSG(ctx, same_4d(value, cache), InvalidArgument, out,
                      "update_cache_with_indices: expected a 4-D value and cache of one dtype");
  const int64_t seq_len = value.size(1), slots = cache.size(1);
  ET_KERNEL_CHECK_MSG(ctx,
                      value.size(0) == 1 && cache.size(0) == 1 && value.size(2) == cache.size(2) &&
                          value.size(3) == cache.size(3) && indices.dim() == 2 &&
                          indices.scalar_type() == ScalarType::Long && indices.size(0) == 1 &&
                          indices.size(1) == seq_len,
                      InvalidArgument, out, "update_cache_with_indices: expected value [1, S, H, D], indices [1, S]");
  const size_t row = static_cast<size_t>(value.size(2) * value.size(3)) * value.element_size();  // bytes per position
  const int64_t* idx = indices.const_data_ptr<int64_t>();
  for (int64_t s = 0; s < seq_len; ++s)
    ET_KERNEL_CHECK_MSG(ctx, idx[s] >= 0 && idx[s] < slots, InvalidArgument, out,
                        "update_cache_with_indices: slot %zd outside the cache's %zd", static_cast<ssize_t>(idx[s]),
                        static_cast<ssize_t>(slots));
  for (int64_t s = 0; s < seq_len; ++s)
    std::memcpy(static_cast<char*>(cache.mutable_data_ptr()) + idx[s] * row,
                static_cast<const char*>(value.const_data_ptr()) + s * row, row);
  return out;
}

constexpr char kUpdateCache[] = "llama::update_cache.out";
constexpr char kUpdateCacheWithIndices[] = "llama::update_cache_with_indices.out";
constexpr char kCustomSdpa[] = "llama::custom_sdpa.out";

const executorch::runtime::Kernel kKernels[] = {
    executorch::extension::make_boxed_kernel(kUpdateCache, EXECUTORCH_FN(update_cache_out, kUpdateCache)),
    executorch::extension::make_boxed_kernel(kUpdateCacheWithIndices,
                                             EXECUTORCH_FN(update_cache_with_indices_out, kUpdateCacheWithIndices)),
    executorch::extension::make_boxed_kernel(kCustomSdpa, EXECUTORCH_FN(zoo_sdpa::custom_sdpa_out, kCustomSdpa)),
};
// Nothing else in the runner registers these names (ExecuTorch aborts on a duplicate registration).
const bool kRegistered = executorch::runtime::register_kernels({kKernels, 3}) == Error::Ok;

}  // namespace
