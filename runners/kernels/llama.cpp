// Kernels for ExecuTorch's `llama::update_cache.out`, `llama::update_cache_with_indices.out` and
// `llama::custom_sdpa.out`, which the pip wheel's C++
// SDK lacks (its own live in a library that needs libtorch). With them the C++ runner runs the same
// custom-ops `.pte` as the Python runtime.
//
// Semantics follow executorch/extension/llm/custom_ops (op_update_cache.cpp, op_sdpa.cpp) for the way the zoo
// calls them: caches [B, L, Hkv, D] (sequence before heads), query [B, S, Hq, D] at positions
// start_pos .. start_pos + S - 1, grouped-query (head h reads kv head h / (Hq / Hkv)), causal, or with an
// additive float mask [S, L] over all L cache slots instead, start_pos then unused (Gemma's sliding-window rings,
// written slot by slot with update_cache_with_indices).
//
// A self-registering kernel file (runners/kernels/README.md): linked into every runner as an object file, it
// registers its kernels before main. Declared for Python in common/kernels.py (library "llama").
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include <executorch/extension/kernel_util/make_boxed_from_unboxed_functor.h>
#include <executorch/runtime/kernel/kernel_includes.h>
#include <executorch/runtime/kernel/thread_parallel_interface.h>

namespace {

using executorch::aten::optional;
using executorch::aten::ScalarType;
using executorch::aten::Tensor;
using executorch::runtime::Error;
using executorch::runtime::KernelRuntimeContext;

bool is_float_4d(const Tensor& t) { return t.dim() == 4 && t.scalar_type() == ScalarType::Float; }

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

// Dot product of two length-n rows; eight independent accumulators so the compiler vectorizes it.
inline float dot(const float* a, const float* b, int64_t n) {
  float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t d = 0;
  for (; d + 8 <= n; d += 8)
    for (int l = 0; l < 8; ++l) acc[l] += a[d + l] * b[d + l];
  float s = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
  for (; d < n; ++d) s += a[d] * b[d];
  return s;
}

Tensor& custom_sdpa_out(KernelRuntimeContext& ctx, const Tensor& q, const Tensor& k, const Tensor& v,
                        int64_t start_pos, const optional<Tensor>& attn_mask, double dropout_p, bool is_causal,
                        optional<double> scale, Tensor& out) {
  ET_KERNEL_CHECK_MSG(ctx, is_float_4d(q) && is_float_4d(k) && is_float_4d(v), InvalidArgument, out,
                      "custom_sdpa: expected 4-D float query and caches");
  // Two calls: causal by position (no mask), or an additive float mask [S, L] over every cache slot (a sliding
  // window's ring), which replaces the causal rule and start_pos as ExecuTorch's own kernel does.
  const bool masked = attn_mask.has_value();
  ET_KERNEL_CHECK_MSG(ctx, dropout_p == 0.0 && is_causal != masked, InvalidArgument, out,
                      "custom_sdpa: this kernel supports the causal call and the masked one, without dropout");
  const int64_t S = q.size(1), Hq = q.size(2), D = q.size(3), L = k.size(1), Hkv = k.size(2);
  ET_KERNEL_CHECK_MSG(ctx,
                      q.size(0) == 1 && k.size(0) == 1 && v.size(1) == L && v.size(2) == Hkv && k.size(3) == D &&
                          v.size(3) == D && Hkv > 0 && Hq % Hkv == 0 && start_pos >= 0 &&
                          (masked || start_pos + S <= L),
                      InvalidArgument, out, "custom_sdpa: query/cache shapes do not match");
  ET_KERNEL_CHECK_MSG(ctx,
                      !masked || (attn_mask->dim() == 2 && attn_mask->scalar_type() == ScalarType::Float &&
                                  attn_mask->size(0) == S && attn_mask->size(1) == L),
                      InvalidArgument, out, "custom_sdpa: expected a float mask [S, cache length]");
  ET_KERNEL_CHECK(ctx, executorch::runtime::resize_tensor(out, q.sizes()) == Error::Ok, InvalidArgument, out);
  const float* mp = masked ? attn_mask->const_data_ptr<float>() : nullptr;
  const int64_t mask_stride = masked ? attn_mask->size(1) : 0;

  const float sc = scale.has_value() ? static_cast<float>(scale.value()) : 1.0f / std::sqrt(static_cast<float>(D));
  const int64_t group = Hq / Hkv;
  const float* qp = q.const_data_ptr<float>();
  const float* kp = k.const_data_ptr<float>();
  const float* vp = v.const_data_ptr<float>();
  float* op = out.mutable_data_ptr<float>();
  // One task per (query position, head): scores over keys 0 .. start_pos + i (or every slot), softmax, weighted
  // sum of values.
  executorch::extension::parallel_for(0, S * Hq, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> scores(static_cast<size_t>(masked ? L : start_pos + S));
    for (int64_t task = begin; task < end; ++task) {
      // keys 0 .. n-1: up to the query's own position (causal), or every slot (the mask decides)
      const int64_t i = task / Hq, h = task % Hq, kvh = h / group, n = masked ? L : start_pos + i + 1;
      const float* qrow = qp + (i * Hq + h) * D;
      const float* mrow = masked ? mp + i * mask_stride : nullptr;
      // A slot the mask hides (-inf: outside the window, or not written yet) costs nothing: in a ring of
      // window - 1 + max_seq_len slots most are hidden from an early query, and skipping them is exact (weight 0).
      float mx = -INFINITY;
      for (int64_t j = 0; j < n; ++j) {
        if (mrow && mrow[j] == -INFINITY) {
          scores[j] = -INFINITY;
          continue;
        }
        scores[j] = dot(qrow, kp + (j * Hkv + kvh) * D, D) * sc + (mrow ? mrow[j] : 0.0f);
        mx = std::max(mx, scores[j]);
      }
      float sum = 0;
      for (int64_t j = 0; j < n; ++j) sum += (scores[j] = scores[j] == -INFINITY ? 0.0f : std::exp(scores[j] - mx));
      float* orow = op + (i * Hq + h) * D;
      std::fill(orow, orow + D, 0.0f);
      for (int64_t j = 0; j < n; ++j) {
        if (scores[j] == 0.0f) continue;
        const float p = scores[j] / sum;
        const float* vrow = vp + (j * Hkv + kvh) * D;
        for (int64_t d = 0; d < D; ++d) orow[d] += p * vrow[d];
      }
    }
  });
  return out;
}

constexpr char kUpdateCache[] = "llama::update_cache.out";
constexpr char kUpdateCacheWithIndices[] = "llama::update_cache_with_indices.out";
constexpr char kCustomSdpa[] = "llama::custom_sdpa.out";

const executorch::runtime::Kernel kKernels[] = {
    executorch::extension::make_boxed_kernel(kUpdateCache, EXECUTORCH_FN(update_cache_out, kUpdateCache)),
    executorch::extension::make_boxed_kernel(kUpdateCacheWithIndices,
                                             EXECUTORCH_FN(update_cache_with_indices_out, kUpdateCacheWithIndices)),
    executorch::extension::make_boxed_kernel(kCustomSdpa, EXECUTORCH_FN(custom_sdpa_out, kCustomSdpa)),
};
// Nothing else in the runner registers these names (ExecuTorch aborts on a duplicate registration).
const bool kRegistered = executorch::runtime::register_kernels({kKernels, 3}) == Error::Ok;

}  // namespace
