// AQLM 2x8 weights: `zoo::code2x8_lut_matmat.out` (../shared/specs/aqlm.md; common/quant/aqlm.py defines the op).
//
//   input [..., I] float, codes [O, I/8, 2] int8 (code % 256), codebooks [2, 256, 1, 8] float, scales [O, 1, 1, 1]
//   float, bias [O] float or none -> out [..., O] float
//   out[m, o] = scales[o] * sum_j (LUT[m, j, 0, codes[o, j, 0]] + LUT[m, j, 1, codes[o, j, 1]]) + bias[o]
//   LUT[m, j, c, k] = <input[m, 8j : 8j + 8], codebooks[c, k]>
//
// Per input row the lookup table (I/8 x 2 x 256 floats) replaces per-weight dequantization: the weights are read
// as 2 bits each. Parallel over output rows (each output is written by one thread: no shared +=). This is the
// plain version, vectorised only by the compiler (-O3 -march=native); the tuned decode/prefill paths are issue 14.
//
// A self-registering kernel file (runners/kernels/README.md): linked into every runner as an object file, and
// built as a shared library the Python runtime loads (common/kernels.py, library "aqlm").
#include <cstdint>
#include <optional>
#include <vector>

#include <executorch/extension/kernel_util/make_boxed_from_unboxed_functor.h>
#include <executorch/runtime/kernel/kernel_includes.h>
#include <executorch/runtime/kernel/thread_parallel_interface.h>

namespace {

using executorch::aten::ScalarType;
using executorch::aten::Tensor;
using executorch::runtime::Error;
using executorch::runtime::KernelRuntimeContext;

constexpr int64_t kGroup = 8, kCodes = 256, kBooks = 2;

Tensor& code2x8_lut_matmat_out(KernelRuntimeContext& ctx, const Tensor& input, const Tensor& codes,
                               const Tensor& codebooks, const Tensor& scales, const std::optional<Tensor>& bias,
                               Tensor& out) {
  ET_KERNEL_CHECK_MSG(
      ctx,
      input.scalar_type() == ScalarType::Float && codes.scalar_type() == ScalarType::Char &&
          codebooks.scalar_type() == ScalarType::Float && scales.scalar_type() == ScalarType::Float &&
          codes.dim() == 3 && codes.size(2) == kBooks && codebooks.numel() == kBooks * kCodes * kGroup &&
          input.dim() >= 1,
      InvalidArgument, out,
      "code2x8_lut_matmat: expected float input, int8 codes [O, I/8, 2], float codebooks [2, 256, 1, 8], scales");
  const int64_t O = codes.size(0), G = codes.size(1), I = G * kGroup;
  ET_KERNEL_CHECK_MSG(ctx, input.size(input.dim() - 1) == I && scales.numel() == O, InvalidArgument, out,
                      "code2x8_lut_matmat: input [..., %zd] does not match codes [%zd, %zd, 2] / scales",
                      static_cast<ssize_t>(input.size(input.dim() - 1)), static_cast<ssize_t>(O),
                      static_cast<ssize_t>(G));
  const float* bp = nullptr;
  if (bias.has_value()) {
    ET_KERNEL_CHECK_MSG(ctx, bias->scalar_type() == ScalarType::Float && bias->numel() == O, InvalidArgument, out,
                        "code2x8_lut_matmat: bias must be float [O]");
    bp = bias->const_data_ptr<float>();
  }
  executorch::aten::SizesType sizes[executorch::runtime::kTensorDimensionLimit];
  for (int64_t d = 0; d + 1 < input.dim(); ++d) sizes[d] = input.size(d);
  sizes[input.dim() - 1] = static_cast<executorch::aten::SizesType>(O);
  ET_KERNEL_CHECK(ctx,
                  executorch::runtime::resize_tensor(out, {sizes, static_cast<size_t>(input.dim())}) == Error::Ok,
                  InvalidArgument, out);

  const int64_t M = input.numel() / I;
  const int8_t* cp = codes.const_data_ptr<int8_t>();
  const float* cb = codebooks.const_data_ptr<float>();
  const float* sp = scales.const_data_ptr<float>();
  const float* xp = input.const_data_ptr<float>();
  float* yp = out.mutable_data_ptr<float>();
  std::vector<float> lut(static_cast<size_t>(G * kBooks * kCodes));  // one input row's table: 2 KiB per group
  for (int64_t m = 0; m < M; ++m) {
    const float* x = xp + m * I;
    for (int64_t j = 0; j < G; ++j)
      for (int64_t c = 0; c < kBooks * kCodes; ++c) {  // codebooks [2, 256, 1, 8] = rows c of 8
        const float* w = cb + c * kGroup;
        float dot = 0;
        for (int64_t b = 0; b < kGroup; ++b) dot += x[j * kGroup + b] * w[b];
        lut[j * kBooks * kCodes + c] = dot;
      }
    float* y = yp + m * O;
    executorch::extension::parallel_for(0, O, 64, [&](int64_t begin, int64_t end) {
      for (int64_t o = begin; o < end; ++o) {
        const int8_t* code = cp + o * G * kBooks;
        float sum = 0;
        for (int64_t j = 0; j < G; ++j) {
          const float* t = lut.data() + j * kBooks * kCodes;
          sum += t[static_cast<uint8_t>(code[2 * j])] + t[kCodes + static_cast<uint8_t>(code[2 * j + 1])];
        }
        y[o] = sum * sp[o] + (bp ? bp[o] : 0.0f);
      }
    });
  }
  return out;
}

constexpr char kCode2x8[] = "zoo::code2x8_lut_matmat.out";

const executorch::runtime::Kernel kKernels[] = {
    executorch::extension::make_boxed_kernel(kCode2x8, EXECUTORCH_FN(code2x8_lut_matmat_out, kCode2x8)),
};
const bool kRegistered = executorch::runtime::register_kernels({kKernels, 1}) == Error::Ok;

}  // namespace
