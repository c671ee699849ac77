// AQLM 2x8 weights: `zoo::code2x8_lut_matmat.out` (../shared/specs/aqlm.md; common/quant/aqlm.py defines the op).
//
//   input [..., I] float, codes [O, I/8, 2] int8 (code % 256), codebooks [2, 256, 1, 8] float, scales [O, 1, 1, 1]
//   float, bias [O] float or none -> out [..., O] float
//   out[m, o] = scales[o] * sum_j <books[0, codes[o, j, 0]] + books[1, codes[o, j, 1]], input[m, 8j : 8j + 8]> + bias[o]
//
// Two paths, by the number of input rows M:
//  - decode (M < kGemmRows): per input row, each output a dot product with its weights dequantized in registers:
//    two codewords per group of 8 weights, straight from the codebooks (L1) into FMAs; the weights are read as 2
//    bits each. Parallel over blocks of 4 output rows (each output written by one thread: no shared +=).
//  - prefill (M >= kGemmRows): dequantize once, 16 output rows at a time, into a transposed tile [I][16], and
//    multiply it, 128 input columns at a time (L1), with 6 input rows at a time in registers (GCC vector types:
//    one zmm on AVX-512, two ymm on AVX2, four q registers on NEON: a compile flag away). Parallel over tiles of
//    output rows.
//
// A self-registering kernel file (runners/kernels/README.md): linked into every runner as an object file, and
// built as a shared library the Python runtime loads (common/kernels.py, library "aqlm").
#include <algorithm>
#include <cstdint>
#include <cstring>
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
constexpr int64_t kGemmRows = 8;  // input rows from which dequantize-once + GEMM beats a dot-product pass per row
constexpr int64_t kNR = 16, kMR = 6;  // GEMM register tile: 16 outputs x 6 input rows
constexpr int64_t kKC = 128;  // GEMM input columns per pass over the rows (tests: I = 200 spans two)
static_assert(kNR % kGroup == 0, "dequantize_tile transposes 8-row halves");

typedef float v16 __attribute__((vector_size(64)));  // 16 floats: the compiler maps it to the target's registers
typedef float v8 __attribute__((vector_size(32)));   // one codeword: a ymm on AVX2 / AVX-512, two q registers on NEON

inline v8 load8(const float* p) {
  v8 v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

struct Aqlm {
  const int8_t* codes;  // [O, G, 2]
  const float* books;   // [2, 256, 8]
  const float* scales;  // [O]
  const float* bias;    // [O] or null
  int64_t O, G;
};

// Decode: R output rows (R <= 4) for one input row x, each a dot product with its weights dequantized in registers.
// A group's 8 weights are scales[o] * (books[0, c0] + books[1, c1]); the two codewords (32 bytes each, from the
// 16 KiB of codebooks that stay in L1) go straight into two FMAs with the group's 8 inputs, into two accumulators per
// row (no add on the chain, and no per-weight dequantization pass). Four groups' codes are one 8-byte load split
// with shifts; their 4 x 8 inputs are loaded once for the R rows. y[o] = scales[o] * sum + bias[o].
// Measured single-threaded on the 2-core EPYC (576 -> 1536, one row): 58 us, against 184 us for 2 table reads per
// group from a per-row lookup table <x_group, codeword> (the spec's LUT GEMV, this kernel until 2026-11-29; its
// table, I/8 x 2 KiB, is L2-sized, and building it costs 512 x I multiply-adds) and 100 us for the table read by
// 16-row AVX-512 gathers over group-major codes.
template <int R>
void dot_rows(const Aqlm& w, const float* x, int64_t o0, float* y) {
  const auto* codes = reinterpret_cast<const uint8_t*>(w.codes) + o0 * w.G * kBooks;
  const float* b0 = w.books;
  const float* b1 = w.books + kCodes * kGroup;
  v8 a0[R], a1[R];
  for (int r = 0; r < R; ++r) a0[r] = a1[r] = v8{};
  const int64_t full = w.G / 4 * 4;
  for (int64_t j = 0; j < full; j += 4) {
    v8 xv[4];
    std::memcpy(xv, x + j * kGroup, sizeof(xv));
    for (int r = 0; r < R; ++r) {
      uint64_t c;  // c0 c1 of groups j .. j + 3, low byte first (little-endian: x86, Arm)
      std::memcpy(&c, codes + (r * w.G + j) * kBooks, 8);
#pragma GCC unroll 4
      for (int g = 0; g < 4; ++g) {
        a0[r] += load8(b0 + ((c >> (16 * g)) & 255) * kGroup) * xv[g];
        a1[r] += load8(b1 + ((c >> (16 * g + 8)) & 255) * kGroup) * xv[g];
      }
    }
  }
  for (int64_t j = full; j < w.G; ++j) {
    const v8 xv = load8(x + j * kGroup);
    for (int r = 0; r < R; ++r) {
      const uint8_t* c = codes + (r * w.G + j) * kBooks;
      a0[r] += load8(b0 + c[0] * kGroup) * xv;
      a1[r] += load8(b1 + c[1] * kGroup) * xv;
    }
  }
  for (int r = 0; r < R; ++r) {
    const v8 a = a0[r] + a1[r];
    const float sum = ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7]));
    y[o0 + r] = sum * w.scales[o0 + r] + (w.bias ? w.bias[o0 + r] : 0.0f);
  }
}

using DotRows = void (*)(const Aqlm&, const float*, int64_t, float*);
constexpr int64_t kDotRows = 4;
constexpr DotRows kDot[kDotRows + 1] = {nullptr, dot_rows<1>, dot_rows<2>, dot_rows<3>, dot_rows<4>};

// Each input row: parallel over blocks of 4 output rows (each output written by one thread: no shared +=).
void decode_rows(const Aqlm& w, const float* x, int64_t M, float* y) {
  const int64_t I = w.G * kGroup, blocks = (w.O + kDotRows - 1) / kDotRows;
  for (int64_t m = 0; m < M; ++m)
    executorch::extension::parallel_for(0, blocks, 8, [&](int64_t begin, int64_t end) {
      for (int64_t b = begin; b < end; ++b) {
        const int64_t o0 = b * kDotRows;
        kDot[std::min(kDotRows, w.O - o0)](w, x + m * I, o0, y + m * w.O);
      }
    });
}

// Lanes of two v8 picked by 8 constant indices (0-7: a, 8-15: b): GCC has __builtin_shuffle since 4.7 (its
// __builtin_shufflevector only since 12: Ubuntu 22.04's GCC 11 lacks it), clang only __builtin_shufflevector.
#if defined(__clang__)
#define ZOO_SHUFFLE8(a, b, ...) __builtin_shufflevector(a, b, __VA_ARGS__)
#else
typedef int32_t lanes8 __attribute__((vector_size(32)));  // the shuffle mask type for v8
#define ZOO_SHUFFLE8(a, b, ...) __builtin_shuffle(a, b, lanes8{__VA_ARGS__})
#endif

// r[c][e] -> r[e][c] for an 8x8 block in three rounds of two-input shuffles (24 in all).
inline void transpose8(v8 r[8]) {
  v8 t[8];
  for (int k = 0; k < 8; k += 2) {  // pairs of rows interleaved: t[k] = r[k][0] r[k+1][0] r[k][1] r[k+1][1] | [4] [5]
    t[k] = ZOO_SHUFFLE8(r[k], r[k + 1], 0, 8, 1, 9, 4, 12, 5, 13);
    t[k + 1] = ZOO_SHUFFLE8(r[k], r[k + 1], 2, 10, 3, 11, 6, 14, 7, 15);
  }
  for (int k = 0; k < 8; k += 4) {  // quads: r[k] = column 0 of rows k..k+3 | column 4, r[k+1] columns 1 | 5, ...
    r[k] = ZOO_SHUFFLE8(t[k], t[k + 2], 0, 1, 8, 9, 4, 5, 12, 13);
    r[k + 1] = ZOO_SHUFFLE8(t[k], t[k + 2], 2, 3, 10, 11, 6, 7, 14, 15);
    r[k + 2] = ZOO_SHUFFLE8(t[k + 1], t[k + 3], 0, 1, 8, 9, 4, 5, 12, 13);
    r[k + 3] = ZOO_SHUFFLE8(t[k + 1], t[k + 3], 2, 3, 10, 11, 6, 7, 14, 15);
  }
  for (int k = 0; k < 4; ++k) {  // halves joined: t[e] = column e of all 8 rows
    t[k] = ZOO_SHUFFLE8(r[k], r[k + 4], 0, 1, 2, 3, 8, 9, 10, 11);
    t[k + 4] = ZOO_SHUFFLE8(r[k], r[k + 4], 4, 5, 6, 7, 12, 13, 14, 15);
  }
  for (int k = 0; k < 8; ++k) r[k] = t[k];
}

// Output rows [o0, o0 + 16) dequantized into wt [I][16] (rows past O as zeros). Per group, each half-tile's 8 rows
// are dequantized as vectors and transposed in registers, then stored as 8 whole lines: 2.3x faster than 128 scalar
// stores per group (measured, 576 -> 1536: 152 against 352 us a call, single-threaded), which at 128 input rows was
// 14 % of the GEMM's time.
void dequantize_tile(const Aqlm& w, int64_t o0, float* wt) {
  const auto* codes = reinterpret_cast<const uint8_t*>(w.codes);
  const int64_t n = std::min<int64_t>(kNR, w.O - o0);
  for (int64_t j = 0; j < w.G; ++j) {
    float* dst = wt + j * kGroup * kNR;
    for (int64_t h = 0; h < kNR; h += kGroup) {
      v8 r[kGroup];
      for (int64_t c = 0; c < kGroup; ++c) {
        if (h + c >= n) {
          r[c] = v8{};
          continue;
        }
        const uint8_t* code = codes + ((o0 + h + c) * w.G + j) * kBooks;
        const v8 sum = load8(w.books + code[0] * kGroup) + load8(w.books + (kCodes + code[1]) * kGroup);
        r[c] = w.scales[o0 + h + c] * sum;
      }
      transpose8(r);
      for (int64_t e = 0; e < kGroup; ++e) std::memcpy(dst + e * kNR + h, &r[e], sizeof(v8));
    }
  }
}

// acc[r] (+)= sum_{i < K} x[r, i] wt[i, :] for R <= 6 rows (x with row stride ldx): R x 16 accumulators in
// registers, kept between column blocks in acc [R][16] (`first`: start from zero).
template <int R>
void micro(const float* x, int64_t ldx, int64_t K, const float* wt, bool first, float* acc) {
  v16 a[R];
  for (int r = 0; r < R; ++r) {
    if (first)
      a[r] = v16{};
    else
      std::memcpy(&a[r], acc + r * kNR, sizeof(v16));
  }
  for (int64_t i = 0; i < K; ++i) {
    v16 wv;
    std::memcpy(&wv, wt + i * kNR, sizeof(wv));
#pragma GCC unroll 6
    for (int r = 0; r < R; ++r) a[r] += x[r * ldx + i] * wv;
  }
  for (int r = 0; r < R; ++r) std::memcpy(acc + r * kNR, &a[r], sizeof(v16));
}

using Micro = void (*)(const float*, int64_t, int64_t, const float*, bool, float*);
constexpr Micro kMicro[kMR + 1] = {nullptr, micro<1>, micro<2>, micro<3>, micro<4>, micro<5>, micro<6>};

// Per tile of 16 outputs: dequantize it, then for each block of kKC input columns (the tile's [kKC][16] slice,
// 8 KiB, stays in L1 while every input row passes) all rows, 6 at a time; the sums live in acc [M][16].
void gemm_rows(const Aqlm& w, const float* x, int64_t M, float* y) {
  const int64_t I = w.G * kGroup, tiles = (w.O + kNR - 1) / kNR;
  executorch::extension::parallel_for(0, tiles, 1, [&](int64_t begin, int64_t end) {
    thread_local std::vector<float> tile, acc;  // this thread's [I][16] and [M][16] (grow once to the largest)
    tile.resize(static_cast<size_t>(I * kNR));
    acc.resize(static_cast<size_t>(M * kNR));
    for (int64_t t = begin; t < end; ++t) {
      const int64_t o0 = t * kNR, n = std::min<int64_t>(kNR, w.O - o0);
      dequantize_tile(w, o0, tile.data());
      for (int64_t k0 = 0; k0 < I; k0 += kKC) {
        const int64_t K = std::min<int64_t>(kKC, I - k0);
        for (int64_t m = 0; m < M; m += kMR)
          kMicro[std::min<int64_t>(kMR, M - m)](x + m * I + k0, I, K, tile.data() + k0 * kNR, k0 == 0,
                                                 acc.data() + m * kNR);
      }
      for (int64_t m = 0; m < M; ++m)
        for (int64_t c = 0; c < n; ++c) y[m * w.O + o0 + c] = acc[m * kNR + c] + (w.bias ? w.bias[o0 + c] : 0.0f);
    }
  });
}

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
  const Aqlm w{codes.const_data_ptr<int8_t>(), codebooks.const_data_ptr<float>(), scales.const_data_ptr<float>(), bp,
               O, G};
  const float* xp = input.const_data_ptr<float>();
  float* yp = out.mutable_data_ptr<float>();
  if (M == 0 || O == 0) return out;
  if (M >= kGemmRows) {
    gemm_rows(w, xp, M, yp);
    return out;
  }
  decode_rows(w, xp, M, yp);
  return out;
}

constexpr char kCode2x8[] = "zoo::code2x8_lut_matmat.out";

const executorch::runtime::Kernel kKernels[] = {
    executorch::extension::make_boxed_kernel(kCode2x8, EXECUTORCH_FN(code2x8_lut_matmat_out, kCode2x8)),
};
const bool kRegistered = executorch::runtime::register_kernels({kKernels, 1}) == Error::Ok;

}  // namespace
