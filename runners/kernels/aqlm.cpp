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
// `zoo::code2x8_lut8_matmat.out` (common/quant/aqlm_lut8.py; `export --aqlm-kernel lut8`): the same weights with
// codes in units of 8 groups x 64 outputs and bf16 codebooks; decode rows on int8 lookup tables, prefill rows on the GEMM
// above in bf16 (below, before the registrations).
//
// A self-registering kernel file (runners/kernels/README.md): linked into every runner as an object file, and
// built as a shared library the Python runtime loads (common/kernels.py, library "aqlm").
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <optional>
#include <vector>

#if defined(__AVX512F__)
#include <immintrin.h>
#endif
#if defined(__AVX512VBMI__) && defined(__AVX512BW__)
#define ZOO_LUT8_VBMI 1
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

constexpr int64_t kLanes = 64;  // code2x8_lut8_matmat: outputs per unit of codes (one zmm of code bytes)
constexpr int64_t kBlockGroups = 8;  // and groups: a table scale's; 16 reads of <= 255 a block: no 16-bit overflow

struct Aqlm {
  // [O, G, 2], or packed (code2x8_lut8_matmat): [ceil(G/8), ceil(O/64), 8, 2, 64], units of 8 groups x 64 outputs
  // block-major; lane 2j of a unit output 64b + j and lane 2j + 1 output 64b + 32 + j (the lookup kernel widens
  // even and odd bytes apart: this order comes out sorted)
  const int8_t* codes;
  const float* books;   // [2, 256, 8]
  const float* scales;  // [O]
  const float* bias;    // [O] or null
  int64_t O, G;
  bool packed = false;
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
  static_assert(kLanes / 2 % kNR == 0, "a tile's outputs share one half of a packed block: codes a fixed stride apart");
  const int64_t n = std::min<int64_t>(kNR, w.O - o0);
  // the tile's codes of group j = 8a + r, book c, output o0 + i:
  // codes[a * step_a + r * step_g + c * step_c + i * step_o]
  const auto* codes = reinterpret_cast<const uint8_t*>(w.codes);
  int64_t step_g = kBooks, step_c = 1, step_o = w.G * kBooks, step_a = kBlockGroups * step_g;
  if (w.packed) {
    const int64_t j0 = o0 % kLanes;
    codes += o0 / kLanes * kBlockGroups * kBooks * kLanes + (j0 < kLanes / 2 ? 2 * j0 : 2 * (j0 - kLanes / 2) + 1);
    step_g = kBooks * kLanes, step_c = kLanes, step_o = 2;
    step_a = (w.O + kLanes - 1) / kLanes * kBlockGroups * step_g;
  } else {
    codes += o0 * w.G * kBooks;
  }
  for (int64_t j = 0; j < w.G; ++j) {
    float* dst = wt + j * kGroup * kNR;
    const uint8_t* cj = codes + j / kBlockGroups * step_a + j % kBlockGroups * step_g;
    for (int64_t h = 0; h < kNR; h += kGroup) {
      v8 r[kGroup];
      for (int64_t c = 0; c < kGroup; ++c) {
        if (h + c >= n) {
          r[c] = v8{};
          continue;
        }
        const uint8_t* code = cj + (h + c) * step_o;
        const v8 sum = load8(w.books + code[0] * kGroup) + load8(w.books + (kCodes + code[step_c]) * kGroup);
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

#if defined(__AVX512BF16__) && defined(__AVX512BW__)
#define ZOO_AQLM_BF16 1
#endif

// A float's bf16 bits, rounded to nearest even as torch's .bfloat16() (finite values: the kernels' inputs).
inline uint16_t bf16_bits(float v) {
  uint32_t u;
  std::memcpy(&u, &v, sizeof(u));
  return static_cast<uint16_t>((u + 0x7FFF + ((u >> 16) & 1)) >> 16);
}

inline float bf16_to_float(uint16_t h) {
  const uint32_t u = static_cast<uint32_t>(h) << 16;
  float v;
  std::memcpy(&v, &u, sizeof(v));
  return v;
}

inline float round_bf16(float v) { return bf16_to_float(bf16_bits(v)); }

// n floats (n a multiple of 8) in bf16: with AVX512_BF16 as bf16 halves into `out` (a row's pairs are its uint32s),
// else as floats rounded to bf16.
inline void to_bf16(const float* x, int64_t n, float* out) {
#if ZOO_AQLM_BF16
  auto* halves = reinterpret_cast<uint16_t*>(out);
  int64_t i = 0;
  for (; i + 16 <= n; i += 16)
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(halves + i), (__m256i)_mm512_cvtneps_pbh(_mm512_loadu_ps(x + i)));
  for (; i < n; ++i) halves[i] = bf16_bits(x[i]);
#else
  for (int64_t i = 0; i < n; ++i) out[i] = round_bf16(x[i]);
#endif
}

#if ZOO_AQLM_BF16
// acc[r] (+)= sum_{p < K2} x[r, 2p : 2p + 2] . wt[p, :, :] with vdpbf16ps: two products a lane an instruction, twice
// the fp32 FMA's multiply-adds. x: bf16 pairs as uint32 (row stride ldx pairs), wt [K2][16 outputs][2] bf16.
template <int R>
void micro_bf16(const uint32_t* x, int64_t ldx, int64_t K2, const uint16_t* wt, bool first, float* acc) {
  __m512 a[R];
  for (int r = 0; r < R; ++r) a[r] = first ? _mm512_setzero_ps() : _mm512_loadu_ps(acc + r * kNR);
  for (int64_t p = 0; p < K2; ++p) {
    const __m512bh wv = (__m512bh)_mm512_loadu_si512(wt + p * 2 * kNR);
#pragma GCC unroll 6
    for (int r = 0; r < R; ++r)
      a[r] = _mm512_dpbf16_ps(a[r], (__m512bh)_mm512_set1_epi32(static_cast<int>(x[r * ldx + p])), wv);
  }
  for (int r = 0; r < R; ++r) _mm512_storeu_ps(acc + r * kNR, a[r]);
}

using MicroBf16 = void (*)(const uint32_t*, int64_t, int64_t, const uint16_t*, bool, float*);
constexpr MicroBf16 kMicroBf16[kMR + 1] = {nullptr, micro_bf16<1>, micro_bf16<2>, micro_bf16<3>,
                                           micro_bf16<4>, micro_bf16<5>, micro_bf16<6>};

// A float tile [I][16] as bf16 pairs [I/2][16][2]: input rows 2p and 2p + 1 interleaved per output.
void pack_tile_bf16(const float* tile, int64_t I, uint16_t* out) {
  const __m512i order = _mm512_set_epi16(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8, 23, 7, 22, 6,
                                         21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
  for (int64_t p = 0; p < I / 2; ++p) {
    const __m512bh both = _mm512_cvtne2ps_pbh(_mm512_loadu_ps(tile + (2 * p + 1) * kNR), _mm512_loadu_ps(tile + 2 * p * kNR));
    _mm512_storeu_si512(out + p * 2 * kNR, _mm512_permutexvar_epi16(order, (__m512i)both));
  }
}
#endif

// Per tile of 16 outputs: dequantize it, then for each block of kKC input columns (the tile's [kKC][16] slice,
// 8 KiB, stays in L1 while every input row passes) all rows, 6 at a time; the sums live in acc [M][16].
// `bf16`: the lut8 op's prefill, both operands rounded to bf16 and multiplied in fp32 (vdpbf16ps where the CPU has
// it; elsewhere the fp32 kernel on the rounded values: the same products, summed in another order).
void gemm_rows(const Aqlm& w, const float* x, int64_t M, float* y, bool bf16 = false) {
  const int64_t I = w.G * kGroup, tiles = (w.O + kNR - 1) / kNR;
  thread_local std::vector<float> xr;  // the calling thread's x in bf16: pairs (AVX512_BF16) or rounded floats
  if (bf16) {
    xr.resize(static_cast<size_t>(M * I));
    to_bf16(x, M * I, xr.data());
  }
#if ZOO_AQLM_BF16
  const auto* x_pairs = reinterpret_cast<const uint32_t*>(xr.data());  // the workers read the caller's through this
#else
  if (bf16) x = xr.data();
#endif
  executorch::extension::parallel_for(0, tiles, 1, [&](int64_t begin, int64_t end) {
    thread_local std::vector<float> tile, acc;  // this thread's [I][16] and [M][16] (grow once to the largest)
    thread_local std::vector<uint16_t> tile_bf16;
    tile.resize(static_cast<size_t>(I * kNR));
    acc.resize(static_cast<size_t>(M * kNR));
    for (int64_t t = begin; t < end; ++t) {
      const int64_t o0 = t * kNR, n = std::min<int64_t>(kNR, w.O - o0);
      dequantize_tile(w, o0, tile.data());
#if ZOO_AQLM_BF16
      if (bf16) {
        tile_bf16.resize(static_cast<size_t>(I * kNR));
        pack_tile_bf16(tile.data(), I, tile_bf16.data());
        for (int64_t k0 = 0; k0 < I; k0 += kKC) {
          const int64_t K = std::min<int64_t>(kKC, I - k0);
          for (int64_t m = 0; m < M; m += kMR)
            kMicroBf16[std::min<int64_t>(kMR, M - m)](x_pairs + (m * I + k0) / 2, I / 2, K / 2,
                                                      tile_bf16.data() + k0 * kNR, k0 == 0, acc.data() + m * kNR);
        }
      } else
#endif
      {
        if (bf16)
          for (auto& v : tile) v = round_bf16(v);
        for (int64_t k0 = 0; k0 < I; k0 += kKC) {
          const int64_t K = std::min<int64_t>(kKC, I - k0);
          for (int64_t m = 0; m < M; m += kMR)
            kMicro[std::min<int64_t>(kMR, M - m)](x + m * I + k0, I, K, tile.data() + k0 * kNR, k0 == 0,
                                                   acc.data() + m * kNR);
        }
      }
      for (int64_t m = 0; m < M; ++m)
        for (int64_t c = 0; c < n; ++c) y[m * w.O + o0 + c] = acc[m * kNR + c] + (w.bias ? w.bias[o0 + c] : 0.0f);
    }
  });
}

// Both ops' bias check and output resize ([..., O]); false (the context's error set) on a bad bias or resize.
bool resize_output(KernelRuntimeContext& ctx, const char* op, const Tensor& input, const std::optional<Tensor>& bias,
                   int64_t O, Tensor& out, const float** bp) {
  if (bias.has_value()) {
    ET_KERNEL_CHECK_MSG(ctx, bias->scalar_type() == ScalarType::Float && bias->numel() == O, InvalidArgument, false,
                        "%s: bias must be float [O]", op);
    *bp = bias->const_data_ptr<float>();
  }
  ET_KERNEL_CHECK(ctx, zoo_shape::resize_last_dim(input, O, out), InvalidArgument, false);
  return true;
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
  if (!resize_output(ctx, "code2x8_lut_matmat", input, bias, O, out, &bp)) return out;
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

// ---- code2x8_lut8_matmat: decode rows on 8-bit lookup tables (common/quant/aqlm_lut8.py) ----
//
// Per input row, the spec's table LUT[g, c, k] = <x[8g : 8g + 8], codebook c's codeword k> (bf16 inputs times bf16
// codebooks, fp32 sums: vdpbf16ps where the CPU has AVX512_BF16, else fp32 FMAs on the same values), rounded to int8
// with one scale per block of 8 groups (64 inputs: s = max |LUT| / 127 over the block, as 8da4w rounds its
// activations per token); per output, the block's 16 table reads sum exactly in integers:
//   out[o] = scales[o] * sum_blocks s_block * sum_{g in block, c} q[g, c, codes[o, g, c]] + bias[o].
// What makes it fast: a table of 256 bytes is four zmm registers, so AVX-512 VBMI reads it for 64 outputs at once
// (two `vpermi2b` and a blend on the code's top bit), where fp32 tables need gathers (1.3 cycles a read on Zen 4)
// and the exact kernel above two codeword loads and two FMAs a group. Without VBMI the same tables are read a byte
// at a time: the same numbers, slower. From kGemmRows input rows the op runs the GEMM above with both operands
// rounded to bf16 (prefill): tables built per row would cost more than the dequantize-once GEMM.
// Parallel over units (a block of 8 groups for 64 outputs: 1 KiB of codes), block-major, in equal consecutive
// shares: each thread builds the tables it reads (no barrier; a block two threads share is built by both) and
// streams its codes in order; each part sums into its own partial sums, added in part order at the end.

constexpr int64_t kTable = kBooks * kCodes;  // bytes of one group's two tables

// fp32 tables of groups xg (R of them, 8 inputs each, `stride` apart) for codebook c into f (R x 256, 256 apart),
// half the codewords at a time: R x 8 accumulators in registers, each books vector loaded once for the R groups.
template <int R>
inline void fp32_tables(const float* bt, int64_t c, const float* xg, int64_t stride, float* f, v16& amax) {
  constexpr int64_t kHalf = kCodes / 2 / 16;  // vectors of 16 codewords in half a table
  for (int64_t h = 0; h < 2; ++h) {
    v16 acc[R][kHalf];
    for (int r = 0; r < R; ++r)
      for (int64_t v = 0; v < kHalf; ++v) acc[r][v] = v16{};
    for (int64_t e = 0; e < kGroup; ++e) {
      const float* row = bt + (c * kGroup + e) * kCodes + h * kCodes / 2;
#pragma GCC unroll 8
      for (int64_t v = 0; v < kHalf; ++v) {
        v16 bv;
        std::memcpy(&bv, row + 16 * v, sizeof(bv));
        for (int r = 0; r < R; ++r) acc[r][v] += bv * xg[r * stride + e];
      }
    }
    for (int r = 0; r < R; ++r)
      for (int64_t v = 0; v < kHalf; ++v) {
        std::memcpy(f + r * kTable + h * kCodes / 2 + 16 * v, &acc[r][v], sizeof(v16));
        const v16 mag = acc[r][v] < 0 ? -acc[r][v] : acc[r][v];
        amax = amax > mag ? amax : mag;
      }
  }
}

#if ZOO_AQLM_BF16
// fp32_tables with vdpbf16ps: two products a lane an instruction. bb: books as bf16 [2][4][256][2] (codeword k's
// coordinates 2q, 2q + 1 at [c][q][k]); xp: the R groups' inputs as bf16 pairs (4 a group, `stride` apart).
template <int R>
inline void bf16_tables(const uint16_t* bb, int64_t c, const uint32_t* xp, int64_t stride, float* f, v16& amax) {
  constexpr int64_t kHalf = kCodes / 2 / 16, kPairs = kGroup / 2;
  for (int64_t h = 0; h < 2; ++h) {
    __m512 acc[R][kHalf];
    for (int r = 0; r < R; ++r)
      for (int64_t v = 0; v < kHalf; ++v) acc[r][v] = _mm512_setzero_ps();
    for (int64_t q = 0; q < kPairs; ++q) {
      const uint16_t* row = bb + ((c * kPairs + q) * kCodes + h * kCodes / 2) * 2;
      __m512bh xq[R];
      for (int r = 0; r < R; ++r) xq[r] = (__m512bh)_mm512_set1_epi32(static_cast<int>(xp[r * stride + q]));
#pragma GCC unroll 8
      for (int64_t v = 0; v < kHalf; ++v) {
        const __m512bh bv = (__m512bh)_mm512_loadu_si512(row + 32 * v);
        for (int r = 0; r < R; ++r) acc[r][v] = _mm512_dpbf16_ps(acc[r][v], xq[r], bv);
      }
    }
    for (int r = 0; r < R; ++r)
      for (int64_t v = 0; v < kHalf; ++v) {
        _mm512_store_ps(f + r * kTable + h * kCodes / 2 + 16 * v, acc[r][v]);
#if defined(__AVX512DQ__)
        amax = (v16)_mm512_range_ps((__m512)amax, acc[r][v], 0x0B);  // imm 0b1011: larger |.|, sign cleared
#else
        amax = (v16)_mm512_max_ps((__m512)amax, _mm512_abs_ps(acc[r][v]));
#endif
      }
  }
}
#endif

// One input row's inputs and books for the tables: bf16 pairs and books where the CPU has AVX512_BF16, else the
// same values as floats (inputs rounded to bf16, books [2][8][256]) for fp32 FMAs.
struct TableInputs {
  const void* x;
  const void* books;
};

// Tables of one input row for block b (groups 8b .. 8b + 7): t[g - 8b][c][k] = q + 128 (unsigned bytes, q in
// [-127, 127]); returns the block's scale. fp32 entries first (two groups at a time), then the scale, then rounding.
float build_tables(const TableInputs& in, int64_t G, int64_t b, uint8_t* t) {
  alignas(64) float f[kBlockGroups * kTable];
  const int64_t g0 = b * kBlockGroups, n = std::min(kBlockGroups, G - g0);
  v16 amax{};
  for (int64_t g = 0; g < n; g += 2)
    for (int64_t c = 0; c < kBooks; ++c) {
      float* fg = f + g * kTable + c * kCodes;
#if ZOO_AQLM_BF16
      const auto* xg = static_cast<const uint32_t*>(in.x) + (g0 + g) * kGroup / 2;
      const auto* bb = static_cast<const uint16_t*>(in.books);
      if (g + 1 < n)
        bf16_tables<2>(bb, c, xg, kGroup / 2, fg, amax);
      else
        bf16_tables<1>(bb, c, xg, kGroup / 2, fg, amax);
#else
      const float* xg = static_cast<const float*>(in.x) + (g0 + g) * kGroup;
      const auto* bt = static_cast<const float*>(in.books);
      if (g + 1 < n)
        fp32_tables<2>(bt, c, xg, kGroup, fg, amax);
      else
        fp32_tables<1>(bt, c, xg, kGroup, fg, amax);
#endif
    }
  float m = 0.0f;
  for (int i = 0; i < 16; ++i) m = std::max(m, amax[i]);
  const float inv = m > 0.0f ? 127.0f / m : 0.0f;
#if ZOO_LUT8_VBMI
  // 64 entries at a time: cvtps rounds half to even (MXCSR's default), as torch.round; two saturating packs (no
  // entry saturates: |q| <= 127) leave entry 16j + 4i + k at byte 16i + 4j + k (packs work within 128-bit lanes),
  // which one vpermb puts back; xor 0x80 is the +128.
  alignas(64) static constexpr uint8_t kUnpack[64] = {  // [e]: the byte the packs left entry e at
      0, 1, 2,  3,  16, 17, 18, 19, 32, 33, 34, 35, 48, 49, 50, 51, 4,  5,  6,  7,  20, 21,
      22, 23, 36, 37, 38, 39, 52, 53, 54, 55, 8,  9,  10, 11, 24, 25, 26, 27, 40, 41, 42, 43,
      56, 57, 58, 59, 12, 13, 14, 15, 28, 29, 30, 31, 44, 45, 46, 47, 60, 61, 62, 63};
  const __m512 iv = _mm512_set1_ps(inv);
  const __m512i order = _mm512_load_si512(kUnpack), flip = _mm512_set1_epi8(static_cast<char>(0x80));
  for (int64_t i = 0; i < n * kTable; i += 64) {
    __m512i q[4];
    for (int j = 0; j < 4; ++j) q[j] = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_load_ps(f + i + 16 * j), iv));
    const __m512i bytes = _mm512_packs_epi16(_mm512_packs_epi32(q[0], q[1]), _mm512_packs_epi32(q[2], q[3]));
    _mm512_storeu_si512(t + i, _mm512_xor_si512(_mm512_permutexvar_epi8(order, bytes), flip));
  }
#else
  for (int64_t i = 0; i < n * kTable; ++i)  // nearbyint: round half to even, as torch.round
    t[i] = static_cast<uint8_t>(static_cast<int32_t>(std::nearbyint(f[i] * inv)) + 128);
#endif
  return m / 127.0f;
}

// f[0..64) += s * (sum over groups [0, n) of the block's table reads), outputs in order: codes [n][2][64] (one
// unit's), t [n][2][256].
#if ZOO_LUT8_VBMI
inline void read_block(const int8_t* codes, const uint8_t* t, int64_t n, float s, __m512 f[4]) {
  // Unsigned bytes v summed in 16-bit lanes wrap modulo 2^16: lanes = 256 * sum(odd bytes) + sum(even bytes), each
  // sum at most 16 x 255 < 2^12, so the even sums are lanes - 256 * odd (mod 2^16), one add and one shift a read.
  __m512i lanes = _mm512_setzero_si512(), odd = _mm512_setzero_si512();
  for (int64_t g = 0; g < n; ++g)
    for (int64_t c = 0; c < kBooks; ++c) {
      const uint8_t* tc = t + (g * kBooks + c) * kCodes;
      const __m512i idx = _mm512_loadu_si512(codes + (g * kBooks + c) * kLanes);
      // the part's codes are one stream: fetch 2 KiB ahead into L1 and 16 KiB ahead into L2 (a decode step of
      // SmolLM2's linears with the weights out of cache: 20 % faster in a harness; a prefetch past the end does
      // not fault)
      _mm_prefetch(reinterpret_cast<const char*>(codes + (g * kBooks + c) * kLanes + 2048), _MM_HINT_T0);
      _mm_prefetch(reinterpret_cast<const char*>(codes + (g * kBooks + c) * kLanes + 16384), _MM_HINT_T1);
      const __m512i lo = _mm512_permutex2var_epi8(_mm512_loadu_si512(tc), idx, _mm512_loadu_si512(tc + 64));
      const __m512i hi = _mm512_permutex2var_epi8(_mm512_loadu_si512(tc + 128), idx, _mm512_loadu_si512(tc + 192));
      const __m512i v = _mm512_mask_blend_epi8(_mm512_movepi8_mask(idx), lo, hi);  // code bit 7: upper 128
      lanes = _mm512_add_epi16(lanes, v);
      odd = _mm512_add_epi16(odd, _mm512_srli_epi16(v, 8));
    }
  const __m512i bias = _mm512_set1_epi16(static_cast<int16_t>(128 * kBooks * n));  // the +128 of every read
  const __m512i even = _mm512_sub_epi16(_mm512_sub_epi16(lanes, _mm512_slli_epi16(odd, 8)), bias);
  odd = _mm512_sub_epi16(odd, bias);
  const __m512 sv = _mm512_set1_ps(s);
  const __m512i halves[4] = {even, even, odd, odd};  // even lanes: outputs 0..31, odd lanes: 32..63
  for (int h = 0; h < 4; ++h) {
    const __m256i part = h % 2 ? _mm512_extracti64x4_epi64(halves[h], 1) : _mm512_castsi512_si256(halves[h]);
    f[h] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_cvtepi16_epi32(part)), sv, f[h]);
  }
}
#endif

// One part: units [u0, u1) of every row, a unit being one output block's reads of one block of groups (block-major:
// unit u = block u / OB, output block u % OB), so that parts split evenly even where the blocks do not; a block that
// two parts share has its tables built by both. `rows`: the input rows as TableInputs' x, I floats apart; `books`:
// TableInputs'. Partial sums p [M][O] (written, not added to).
void run_part(const Aqlm& w, const void* books, const float* rows, int64_t M, int64_t u0, int64_t u1, float* p) {
  const int64_t I = w.G * kGroup, OB = (w.O + kLanes - 1) / kLanes;
  thread_local std::vector<uint8_t> tables;  // one block's
  thread_local std::vector<float> sums;  // one row's [OB][64]
  tables.resize(static_cast<size_t>(kBlockGroups * kTable));
  sums.resize(static_cast<size_t>(OB * kLanes));
  for (int64_t m = 0; m < M; ++m) {
    const TableInputs in{rows + m * I, books};
    std::fill(sums.begin(), sums.end(), 0.0f);
    // block by block: its 8 groups' tables (8 KiB) stay in L1 while the part's output blocks read them
    for (int64_t u = u0; u < u1;) {
      const int64_t b = u / OB, g0 = b * kBlockGroups, n = std::min(kBlockGroups, w.G - g0);
      const int64_t ob_end = std::min(OB, u1 - b * OB);
      const float scale = build_tables(in, w.G, b, tables.data());
      for (int64_t ob = u - b * OB; ob < ob_end; ++ob) {
        const int8_t* codes = w.codes + (b * OB + ob) * kBlockGroups * kBooks * kLanes;  // one unit, 1 KiB
        float* f = sums.data() + ob * kLanes;
#if ZOO_LUT8_VBMI
        __m512 acc[4];
        for (int h = 0; h < 4; ++h) acc[h] = _mm512_loadu_ps(f + 16 * h);
        read_block(codes, tables.data(), n, scale, acc);
        for (int h = 0; h < 4; ++h) _mm512_storeu_ps(f + 16 * h, acc[h]);
#else
        for (int64_t lane = 0; lane < kLanes; ++lane) {
          int32_t sum = 0;
          for (int64_t g = 0; g < n; ++g)
            for (int64_t c = 0; c < kBooks; ++c) {
              const auto code = static_cast<uint8_t>(codes[(g * kBooks + c) * kLanes + lane]);
              sum += static_cast<int32_t>(tables[(g * kBooks + c) * kCodes + code]) - 128;
            }
          const int64_t out = lane % 2 ? kLanes / 2 + lane / 2 : lane / 2;  // the VBMI path's order
          f[out] = std::fma(static_cast<float>(sum), scale, f[out]);
        }
#endif
      }
      u = (b + 1) * OB;
    }
    std::memcpy(p + m * w.O, sums.data(), static_cast<size_t>(w.O) * sizeof(float));
  }
}

void lut8_rows(const Aqlm& w, const uint16_t* books, const float* x, int64_t M, float* y) {
  const void* table_books = books;
#if !ZOO_AQLM_BF16
  thread_local std::vector<float> books_f32;  // [2][8][256], coordinate e of codeword k at [c][e][k]: once a call,
  books_f32.resize(static_cast<size_t>(kBooks * kGroup * kCodes));  // the workers read the caller's
  for (int64_t c = 0; c < kBooks; ++c)
    for (int64_t e = 0; e < kGroup; ++e)
      for (int64_t k = 0; k < kCodes; ++k)
        books_f32[(c * kGroup + e) * kCodes + k] = bf16_to_float(books[((c * kGroup / 2 + e / 2) * kCodes + k) * 2 + e % 2]);
  table_books = books_f32.data();
#endif
  const int64_t I = w.G * kGroup;
  thread_local std::vector<float> bf16_rows;  // the input rows in bf16 (pairs, or rounded floats), I floats apart:
  bf16_rows.resize(static_cast<size_t>(M * I));  // once a call, as the books; the workers read them through `rows`
  for (int64_t m = 0; m < M; ++m) to_bf16(x + m * I, I, bf16_rows.data() + m * I);
  const float* rows = bf16_rows.data();
  const int64_t units = (w.G + kBlockGroups - 1) / kBlockGroups * ((w.O + kLanes - 1) / kLanes);
  const int64_t parts = std::max<int64_t>(1, std::min(executorch::extension::get_thread_count(), units));
  thread_local std::vector<float> partial;  // the calling thread's: the workers see it through `rest`
  const int64_t n = M * w.O;
  partial.resize(static_cast<size_t>((parts - 1) * n));
  float* rest = partial.data();
  executorch::extension::parallel_for(0, parts, 1, [&](int64_t begin, int64_t end) {
    for (int64_t part = begin; part < end; ++part)
      run_part(w, table_books, rows, M, part * units / parts, (part + 1) * units / parts,
               part == 0 ? y : rest + (part - 1) * n);
  });
  float* __restrict out = y;
  for (int64_t part = 1; part < parts; ++part) {  // in part order
    const float* __restrict r = rest + (part - 1) * n;
    for (int64_t i = 0; i < n; ++i) out[i] += r[i];
  }
  const float* __restrict scales = w.scales;
  for (int64_t m = 0; m < M; ++m, out += w.O) {
    for (int64_t o = 0; o < w.O; ++o) out[o] *= scales[o];
    if (w.bias)
      for (int64_t o = 0; o < w.O; ++o) out[o] += w.bias[o];
  }
}

// The op's books, bf16 [2][4][256][2], as codewords [2][256][8] of floats (the GEMM path's layout).
void unpack_books(const uint16_t* bb, float* books) {
  for (int64_t c = 0; c < kBooks; ++c)
    for (int64_t q = 0; q < kGroup / 2; ++q)
      for (int64_t k = 0; k < kCodes; ++k)
        for (int64_t i = 0; i < 2; ++i)
          books[(c * kCodes + k) * kGroup + 2 * q + i] = bf16_to_float(bb[((c * kGroup / 2 + q) * kCodes + k) * 2 + i]);
}

Tensor& code2x8_lut8_matmat_out(KernelRuntimeContext& ctx, const Tensor& input, const Tensor& codes,
                                const Tensor& books, const Tensor& scales, const std::optional<Tensor>& bias,
                                Tensor& out) {
  ET_KERNEL_CHECK_MSG(
      ctx,
      input.scalar_type() == ScalarType::Float && codes.scalar_type() == ScalarType::Char &&
          books.scalar_type() == ScalarType::BFloat16 && scales.scalar_type() == ScalarType::Float &&
          codes.dim() == 5 && codes.size(2) == kBlockGroups && codes.size(3) == kBooks && codes.size(4) == kLanes &&
          books.numel() == kBooks * kCodes * kGroup && input.dim() >= 1,
      InvalidArgument, out,
      "code2x8_lut8_matmat: expected float input, int8 codes [I/64, O/64, 8, 2, 64], bf16 books [2, 4, 256, 2], "
      "scales");
  const int64_t O = scales.numel(), I = input.size(input.dim() - 1), G = I / kGroup;
  ET_KERNEL_CHECK_MSG(ctx, I % kGroup == 0 && codes.size(0) == (G + kBlockGroups - 1) / kBlockGroups &&
                      codes.size(1) == (O + kLanes - 1) / kLanes,
                      InvalidArgument, out,
                      "code2x8_lut8_matmat: input [..., %zd] does not match codes [%zd, %zd, 8, 2, 64] / scales [%zd]",
                      static_cast<ssize_t>(I), static_cast<ssize_t>(codes.size(0)), static_cast<ssize_t>(codes.size(1)),
                      static_cast<ssize_t>(O));
  const float* bp = nullptr;
  if (!resize_output(ctx, "code2x8_lut8_matmat", input, bias, O, out, &bp)) return out;
  const int64_t M = input.numel() / std::max<int64_t>(I, 1);
  if (M == 0 || O == 0) return out;
  const float* xp = input.const_data_ptr<float>();
  float* yp = out.mutable_data_ptr<float>();
  const auto* books_bf16 = reinterpret_cast<const uint16_t*>(books.const_data_ptr());
  if (M >= kGemmRows) {
    thread_local std::vector<float> hf_books;  // the calling thread's; gemm_rows' workers read it through `w`
    hf_books.resize(static_cast<size_t>(kBooks * kCodes * kGroup));
    unpack_books(books_bf16, hf_books.data());
    gemm_rows(Aqlm{codes.const_data_ptr<int8_t>(), hf_books.data(), scales.const_data_ptr<float>(), bp, O, G, true},
              xp, M, yp, /*bf16=*/true);
    return out;
  }
  const Aqlm w{codes.const_data_ptr<int8_t>(), nullptr, scales.const_data_ptr<float>(), bp, O, G, true};
  lut8_rows(w, books_bf16, xp, M, yp);
  return out;
}

constexpr char kCode2x8[] = "zoo::code2x8_lut_matmat.out";
constexpr char kLut8[] = "zoo::code2x8_lut8_matmat.out";

const executorch::runtime::Kernel kKernels[] = {
    executorch::extension::make_boxed_kernel(kCode2x8, EXECUTORCH_FN(code2x8_lut_matmat_out, kCode2x8)),
    executorch::extension::make_boxed_kernel(kLut8, EXECUTORCH_FN(code2x8_lut8_matmat_out, kLut8)),
};
const bool kRegistered = executorch::runtime::register_kernels({kKernels, 2}) == Error::Ok;

}  // namespace
