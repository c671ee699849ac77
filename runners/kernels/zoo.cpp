// The zoo's own weight-format kernels: `zoo::linear_q8.out`, a linear over an int8 table with per-group scales
// (GGUF's Q8_0 layout: row n, group g of `group` columns -> scales[n, g] * codes[n, g*group : (g+1)*group]).
//
// Why: a tied LM head whose table is Q8_0 would otherwise be stored twice: once for the embedding lookup
// (quantized_decomposed::embedding_byte, outside the delegate) and once re-quantized inside XNNPACK's blob
// (XNNPACK's int8 weights are per channel only). This kernel reads the embedding's own table, exactly, so the
// .pte holds one copy.
//
// Semantics (common/quant/tied_head.py defines the op for eager and export):
//   input [..., K] float, codes [N, K] int8, scales [N, K / group] float -> out [..., N] float
//   out[m, n] = sum_g scales[n, g] * sum_{k in group g} codes[n, k] * input[m, k]
//
// A self-registering kernel file (runners/kernels/README.md): linked into every runner as an object file, and
// built as a shared library the Python runtime loads (common/kernels.py, library "zoo").
#include <cstdint>

#if defined(__AVX2__) || defined(__AVX512F__)
#include <immintrin.h>
#endif

#include <executorch/extension/kernel_util/make_boxed_from_unboxed_functor.h>
#include <executorch/runtime/kernel/kernel_includes.h>
#include <executorch/runtime/kernel/thread_parallel_interface.h>

#include "shape.h"

namespace {

using executorch::aten::ScalarType;
using executorch::aten::Tensor;
using executorch::runtime::Error;
using executorch::runtime::KernelRuntimeContext;

// Dot product of one row of codes with x over `groups` groups of `group` columns, each group's partial sum
// scaled by its scale: the plain loop (any group size; the scalar build's group-32 path too).
inline float q8_dot_any(const int8_t* code, const float* scale, int64_t group, const float* x, int64_t groups) {
  float sum = 0;
  for (int64_t g = 0; g < groups; ++g, code += group, x += group) {
    float part = 0;
    for (int64_t k = 0; k < group; ++k) part += static_cast<float>(code[k]) * x[k];
    sum += scale[g] * part;
  }
  return sum;
}

// Dot product of one row of group-32 codes with x, each group's partial sum scaled by its scale:
//   sum_g scale[g] * sum_{k < 32} code[32 g + k] * x[32 g + k]
// AVX-512 / AVX2 (compiled for the building CPU: -march=native), a scalar loop elsewhere (NEON: the same shape).
inline float q8_dot32(const int8_t* code, const float* scale, const float* x, int64_t groups) {
#if defined(__AVX512F__)
  __m512 acc = _mm512_setzero_ps();
  for (int64_t g = 0; g < groups; ++g, code += 32, x += 32) {
    const __m512 c0 = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(code))));
    const __m512 c1 =
        _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(code + 16))));
    const __m512 part = _mm512_fmadd_ps(c1, _mm512_loadu_ps(x + 16), _mm512_mul_ps(c0, _mm512_loadu_ps(x)));
    acc = _mm512_fmadd_ps(part, _mm512_set1_ps(scale[g]), acc);
  }
  return _mm512_reduce_add_ps(acc);
#elif defined(__AVX2__) && defined(__FMA__)
  __m256 acc = _mm256_setzero_ps();
  for (int64_t g = 0; g < groups; ++g, code += 32, x += 32) {
    __m256 part = _mm256_setzero_ps();
    for (int j = 0; j < 32; j += 8) {
      const __m256 c = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(code + j))));
      part = _mm256_fmadd_ps(c, _mm256_loadu_ps(x + j), part);
    }
    acc = _mm256_fmadd_ps(part, _mm256_set1_ps(scale[g]), acc);
  }
  const __m128 half = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
  const __m128 quad = _mm_add_ps(half, _mm_movehl_ps(half, half));
  return _mm_cvtss_f32(_mm_add_ss(quad, _mm_shuffle_ps(quad, quad, 1)));
#else
  return q8_dot_any(code, scale, 32, x, groups);
#endif
}

Tensor& linear_q8_out(KernelRuntimeContext& ctx, const Tensor& input, const Tensor& codes, const Tensor& scales,
                      Tensor& out) {
  ET_KERNEL_CHECK_MSG(ctx,
                      input.scalar_type() == ScalarType::Float && codes.scalar_type() == ScalarType::Char &&
                          scales.scalar_type() == ScalarType::Float && codes.dim() == 2 && scales.dim() == 2 &&
                          input.dim() >= 1,
                      InvalidArgument, out, "linear_q8: expected float input, int8 codes [N, K], float scales [N, G]");
  const int64_t N = codes.size(0), K = codes.size(1), G = scales.size(1);
  ET_KERNEL_CHECK_MSG(ctx, input.size(input.dim() - 1) == K && scales.size(0) == N && G > 0 && K % G == 0,
                      InvalidArgument, out, "linear_q8: input [..., %zd] does not match codes [%zd, %zd] / scales",
                      static_cast<ssize_t>(input.size(input.dim() - 1)), static_cast<ssize_t>(N),
                      static_cast<ssize_t>(K));
  ET_KERNEL_CHECK(ctx, zoo_shape::resize_last_dim(input, N, out), InvalidArgument, out);

  const int64_t M = input.numel() / K, group = K / G;
  const int8_t* cp = codes.const_data_ptr<int8_t>();
  const float* sp = scales.const_data_ptr<float>();
  const float* xp = input.const_data_ptr<float>();
  float* yp = out.mutable_data_ptr<float>();
  // Parallel over output rows (each row's table bytes are read once for all M input rows: decode is M = 1 and
  // bound by reading the table).
  executorch::extension::parallel_for(0, N, 64, [&](int64_t begin, int64_t end) {
    for (int64_t n = begin; n < end; ++n) {
      const int8_t* code = cp + n * K;
      const float* scale = sp + n * G;
      for (int64_t m = 0; m < M; ++m)
        yp[m * N + n] = group == 32 ? q8_dot32(code, scale, xp + m * K, G) : q8_dot_any(code, scale, group, xp + m * K, G);
    }
  });
  return out;
}

constexpr char kLinearQ8[] = "zoo::linear_q8.out";

const executorch::runtime::Kernel kKernels[] = {
    executorch::extension::make_boxed_kernel(kLinearQ8, EXECUTORCH_FN(linear_q8_out, kLinearQ8)),
};
const bool kRegistered = executorch::runtime::register_kernels({kKernels, 1}) == Error::Ok;

}  // namespace
