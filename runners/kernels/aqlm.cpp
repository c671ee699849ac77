// AQLM 2x8 weights: `zoo::code2x8_lut_matmat.out` (../shared/specs/aqlm.md; common/quant/aqlm.py defines the op).
//
//   input [..., I] float, codes [O, I/8, 2] int8 (code % 256), codebooks [2, 256, 1, 8] float, scales [O, 1, 1, 1]
//   float, bias [O] float or none -> out [..., O] float
//   out[m, o] = scales[o] * sum_j (LUT[m, j, 0, codes[o, j, 0]] + LUT[m, j, 1, codes[o, j, 1]]) + bias[o]
//   LUT[m, j, c, k] = <input[m, 8j : 8j + 8], codebooks[c, k]>
//
// Two paths, by the number of input rows M:
//  - decode (M < kGemmRows): per row, the lookup table (I/8 x 2 x 256 floats, from the kernel context's temp
//    allocator) replaces per-weight dequantization: the weights are read as 2 bits each; each output is a sum of
//    2 table reads per group (8 groups per AVX-512 gather; scalar reads elsewhere). Parallel over output rows
//    (each output written by one thread: no shared +=), the table built in parallel over groups.
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

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

#include <executorch/extension/kernel_util/make_boxed_from_unboxed_functor.h>
#include <executorch/runtime/kernel/kernel_includes.h>
#include <executorch/runtime/kernel/thread_parallel_interface.h>

namespace {

using executorch::aten::ScalarType;
using executorch::aten::Tensor;
using executorch::runtime::Error;
using executorch::runtime::KernelRuntimeContext;

constexpr int64_t kGroup = 8, kCodes = 256, kBooks = 2, kTable = kBooks * kCodes;  // table floats per group
constexpr int64_t kGemmRows = 8;  // input rows from which dequantize-once + GEMM beats one table per row
constexpr int64_t kNR = 16, kMR = 6;  // GEMM register tile: 16 outputs x 6 input rows
constexpr int64_t kKC = 128;  // GEMM input columns per pass over the rows (tests: I = 200 spans two)

typedef float v16 __attribute__((vector_size(64)));  // 16 floats: the compiler maps it to the target's registers

struct Aqlm {
  const int8_t* codes;  // [O, G, 2]
  const float* books;   // [2, 256, 8]
  const float* scales;  // [O]
  const float* bias;    // [O] or null
  int64_t O, G;
};

// lut[j * 512 + c * 256 + k] = <x[8j : 8j + 8], books[c, k]>, with books_t = books as [2][8][256] (k fastest).
void build_lut(const float* x, const float* books_t, int64_t G, float* lut) {
  executorch::extension::parallel_for(0, G, 8, [&](int64_t begin, int64_t end) {
    for (int64_t j = begin; j < end; ++j)
      for (int64_t c = 0; c < kBooks; ++c) {
        float* t = lut + j * kTable + c * kCodes;
        const float* bt = books_t + c * kGroup * kCodes;
        for (int64_t k = 0; k < kCodes; ++k) t[k] = x[j * kGroup] * bt[k];
        for (int64_t b = 1; b < kGroup; ++b) {
          const float xb = x[j * kGroup + b];
          const float* row = bt + b * kCodes;
          for (int64_t k = 0; k < kCodes; ++k) t[k] += xb * row[k];
        }
      }
  });
}

// y[o] = scales[o] * sum_j (lut[j, 0, code[o, j, 0]] + lut[j, 1, code[o, j, 1]]) + bias[o] for o in [begin, end).
// Loop order: a block of kRowBlock rows sweeps the table kChunk groups at a time, so the 16 KiB of table being
// read stays in L1 (the whole table, I/8 x 2 KiB, is L2-sized: gathering from it row by row was 5x slower). Each
// row keeps a vector of partial sums, reduced once at the end. HF's layout needs no transposition: a row's codes
// for one chunk are 16 contiguous bytes.
constexpr int64_t kChunk = 8, kRowBlock = 128;

void lut_rows(const float* lut, const uint8_t* codes, const Aqlm& w, int64_t begin, int64_t end, float* y) {
  const int64_t G = w.G, full = G / kChunk * kChunk;
  for (int64_t ob = begin; ob < end; ob += kRowBlock) {
    const int64_t n = std::min(kRowBlock, end - ob);
    float sums[kRowBlock];
#if defined(__AVX512F__)
    // 8 groups per gather: codes c0 c1 c0 c1 ... -> table offsets g * 512 + c * 256 + code. Measured in the Python
    // runtime on our 2-core Xeon (576 x 1536, 1 row): 190 us, against 355 us for the scalar reads below (which win,
    // 130 vs 200 us, single-threaded outside ExecuTorch's thread pool: its spinning workers share the core)
    __m512 acc[kRowBlock];
    for (int64_t r = 0; r < n; ++r) acc[r] = _mm512_setzero_ps();
    const __m512i off = _mm512_setr_epi32(0, 256, 512, 768, 1024, 1280, 1536, 1792, 2048, 2304, 2560, 2816, 3072,
                                          3328, 3584, 3840);
    for (int64_t j0 = 0; j0 < full; j0 += kChunk) {
      const float* t = lut + j0 * kTable;
      const uint8_t* c = codes + (ob * G + j0) * kBooks;
      for (int64_t r = 0; r < n; ++r, c += G * kBooks) {
        __m512i idx = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(c)));
        acc[r] = _mm512_add_ps(acc[r], _mm512_i32gather_ps(_mm512_add_epi32(idx, off), t, 4));
      }
    }
    for (int64_t r = 0; r < n; ++r) sums[r] = _mm512_reduce_add_ps(acc[r]);
#else
    // scalar table reads, 4 partial sums per row breaking the add chain; 16 codes in two 8-byte loads split with
    // shifts (ALU work instead of a load per code)
    for (int64_t r = 0; r < n; ++r) sums[r] = 0;
    for (int64_t j0 = 0; j0 < full; j0 += kChunk) {
      const float* t = lut + j0 * kTable;
      const uint8_t* c = codes + (ob * G + j0) * kBooks;
      for (int64_t r = 0; r < n; ++r, c += G * kBooks) {
        uint64_t lo, hi;
        std::memcpy(&lo, c, 8);
        std::memcpy(&hi, c + 8, 8);
        float p[4] = {0, 0, 0, 0};
        for (int g = 0; g < 4; ++g) {  // groups g (codes from lo) and g + 4 (from hi)
          p[g] += t[g * kTable + ((lo >> (16 * g)) & 255)] + t[g * kTable + kCodes + ((lo >> (16 * g + 8)) & 255)];
          p[g] += t[(g + 4) * kTable + ((hi >> (16 * g)) & 255)] +
                  t[(g + 4) * kTable + kCodes + ((hi >> (16 * g + 8)) & 255)];
        }
        sums[r] += (p[0] + p[1]) + (p[2] + p[3]);
      }
    }
#endif
    for (int64_t r = 0; r < n; ++r) {  // the groups past the last full chunk
      const uint8_t* c = codes + (ob + r) * G * kBooks;
      for (int64_t j = full; j < G; ++j) sums[r] += lut[j * kTable + c[2 * j]] + lut[j * kTable + kCodes + c[2 * j + 1]];
      const int64_t o = ob + r;
      y[o] = sums[r] * w.scales[o] + (w.bias ? w.bias[o] : 0.0f);
    }
  }
}

void decode_rows(const Aqlm& w, const float* x, int64_t M, float* y, float* lut) {
  alignas(64) float books_t[kBooks * kGroup * kCodes];
  for (int64_t c = 0; c < kBooks; ++c)
    for (int64_t k = 0; k < kCodes; ++k)
      for (int64_t b = 0; b < kGroup; ++b) books_t[(c * kGroup + b) * kCodes + k] = w.books[(c * kCodes + k) * kGroup + b];
  const int64_t I = w.G * kGroup;
  const auto* codes = reinterpret_cast<const uint8_t*>(w.codes);
  for (int64_t m = 0; m < M; ++m) {
    build_lut(x + m * I, books_t, w.G, lut);
    float* ym = y + m * w.O;
    executorch::extension::parallel_for(0, w.O, 64, [&](int64_t begin, int64_t end) {
      lut_rows(lut, codes, w, begin, end, ym);
    });
  }
}

// Output rows [o0, o0 + 16) dequantized into wt [I][16] (rows past O as zeros). Group-outer: a group's 8 tile
// lines are written whole while they are in L1 (row-outer touched every line of the tile 16 times).
void dequantize_tile(const Aqlm& w, int64_t o0, float* wt) {
  const auto* codes = reinterpret_cast<const uint8_t*>(w.codes);
  const int64_t n = std::min<int64_t>(kNR, w.O - o0);
  for (int64_t j = 0; j < w.G; ++j) {
    float* dst = wt + j * kGroup * kNR;
    for (int64_t c = 0; c < kNR; ++c) {
      if (c >= n) {
        for (int64_t e = 0; e < kGroup; ++e) dst[e * kNR + c] = 0;
        continue;
      }
      const uint8_t* code = codes + ((o0 + c) * w.G + j) * kBooks;
      const float* a = w.books + code[0] * kGroup;
      const float* b = w.books + (kCodes + code[1]) * kGroup;
      const float s = w.scales[o0 + c];
      for (int64_t e = 0; e < kGroup; ++e) dst[e * kNR + c] = s * (a[e] + b[e]);
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
  // the table (G * 2 KiB) from the method's temp allocator; a runtime that gives a kernel none (NotFound) gets
  // this thread's heap buffer instead
  const size_t bytes = static_cast<size_t>(G * kTable) * sizeof(float);
  auto temp = ctx.allocate_temp(bytes, 64);
  ET_KERNEL_CHECK_MSG(ctx, temp.ok() || temp.error() == Error::NotFound, MemoryAllocationFailed, out,
                      "code2x8_lut_matmat: cannot allocate its %zu-byte lookup table", bytes);
  thread_local std::vector<float> fallback;
  float* lut = nullptr;
  if (temp.ok()) {
    lut = static_cast<float*>(temp.get());
  } else {
    fallback.resize(static_cast<size_t>(G * kTable));
    lut = fallback.data();
  }
  decode_rows(w, xp, M, yp, lut);
  return out;
}

constexpr char kCode2x8[] = "zoo::code2x8_lut_matmat.out";

const executorch::runtime::Kernel kKernels[] = {
    executorch::extension::make_boxed_kernel(kCode2x8, EXECUTORCH_FN(code2x8_lut_matmat_out, kCode2x8)),
};
const bool kRegistered = executorch::runtime::register_kernels({kKernels, 1}) == Error::Ok;

}  // namespace
