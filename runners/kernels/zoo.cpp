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

#include <executorch/extension/kernel_util/make_boxed_from_unboxed_functor.h>
#include <executorch/runtime/kernel/kernel_includes.h>
#include <executorch/runtime/kernel/thread_parallel_interface.h>

namespace {

using executorch::aten::ScalarType;
using executorch::aten::Tensor;
using executorch::runtime::Error;
using executorch::runtime::KernelRuntimeContext;

constexpr int64_t kLanes = 16;  // float accumulators per row: one AVX-512 register, two AVX2 ones

// One output row for `rows` input rows: acc[m][l] gathers lane l of every group, each group's 16-wide partial
// dot product scaled once. Lane-wise arithmetic only, so the compiler vectorizes it without reassociating.
template <int64_t kGroup>
void q8_row(const int8_t* code, const float* scale, const float* x, int64_t K, int64_t rows, int64_t x_stride,
            float* y, int64_t y_stride) {
  static_assert(kGroup % kLanes == 0, "group must be a multiple of the lane count");
  for (int64_t m = 0; m < rows; ++m) {
    const float* xm = x + m * x_stride;
    float acc[kLanes] = {};
    for (int64_t g = 0; g < K / kGroup; ++g) {
      const int8_t* c = code + g * kGroup;
      const float* xg = xm + g * kGroup;
      float part[kLanes] = {};
      for (int64_t j = 0; j < kGroup; j += kLanes)
        for (int64_t l = 0; l < kLanes; ++l) part[l] += static_cast<float>(c[j + l]) * xg[j + l];
      const float s = scale[g];
      for (int64_t l = 0; l < kLanes; ++l) acc[l] += s * part[l];
    }
    float sum = 0;
    for (int64_t l = 0; l < kLanes; ++l) sum += acc[l];
    y[m * y_stride] = sum;
  }
}

// Any group size: the plain loop (a fallback; the zoo's tables are group 32).
void q8_row_any(const int8_t* code, const float* scale, int64_t group, const float* x, int64_t K, int64_t rows,
                int64_t x_stride, float* y, int64_t y_stride) {
  for (int64_t m = 0; m < rows; ++m) {
    const float* xm = x + m * x_stride;
    float sum = 0;
    for (int64_t g = 0; g < K / group; ++g) {
      float part = 0;
      for (int64_t k = g * group; k < (g + 1) * group; ++k) part += static_cast<float>(code[k]) * xm[k];
      sum += scale[g] * part;
    }
    y[m * y_stride] = sum;
  }
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
  executorch::aten::SizesType sizes[executorch::runtime::kTensorDimensionLimit];
  for (int64_t d = 0; d + 1 < input.dim(); ++d) sizes[d] = input.size(d);
  sizes[input.dim() - 1] = static_cast<executorch::aten::SizesType>(N);
  ET_KERNEL_CHECK(ctx,
                  executorch::runtime::resize_tensor(out, {sizes, static_cast<size_t>(input.dim())}) == Error::Ok,
                  InvalidArgument, out);

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
      if (group == 32)
        q8_row<32>(code, scale, xp, K, M, K, yp + n, N);
      else
        q8_row_any(code, scale, group, xp, K, M, K, yp + n, N);
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
