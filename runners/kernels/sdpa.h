// The zoo's attention kernel: `custom_sdpa.out` as ExecuTorch's llama custom ops define it (op_sdpa.cpp), for
// the way the zoo calls it: caches [B, L, Hkv, D] (sequence before heads), query [B, S, Hq, D] at positions
// start_pos .. start_pos + S - 1, grouped-query (head h reads kv head h / (Hq / Hkv)), causal, or with an additive
// float mask [S, L] over all L cache slots instead, start_pos then unused (Gemma's sliding-window rings, written
// slot by slot with update_cache_with_indices). The caches are float32, or float16 (export --kv-cache-dtype fp16:
// half the bytes a deep decode reads; each row is widened to float32 as it is loaded, all arithmetic stays fp32).
//
// Registered twice, from one body: as `llama::custom_sdpa.out` (llama.cpp, for `.pte` files that name
// ExecuTorch's op, such as export_llm's) and as `zoo::custom_sdpa.out` (sdpa.cpp, the op the zoo's exports name,
// so the Python runtime runs this kernel too: ExecuTorch's own registers the llama:: name there, and a second
// registration of a name aborts). bench/sdpa_kernel.py measures both kernels; tests/test_llama_kernels.py checks
// this one against torch.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include <executorch/runtime/kernel/kernel_includes.h>
#include <executorch/runtime/kernel/thread_parallel_interface.h>

#if defined(__F16C__)
#include <immintrin.h>
#endif

namespace zoo_sdpa {

using executorch::aten::optional;
using executorch::aten::ScalarType;
using executorch::aten::Tensor;
using executorch::runtime::Error;
using executorch::runtime::KernelRuntimeContext;

inline bool is_float_4d(const Tensor& t) { return t.dim() == 4 && t.scalar_type() == ScalarType::Float; }
inline bool is_cache_4d(const Tensor& t) {
  return t.dim() == 4 && (t.scalar_type() == ScalarType::Float || t.scalar_type() == ScalarType::Half);
}

// Eight floats as one GCC/Clang vector (AVX2/AVX-512 ymm, two NEON registers): the arithmetic below is written
// with it, not left to the auto-vectorizer, which (GCC 12, -O3 -march=native) reduced dot products lane by lane,
// kept the value accumulators on the stack and left exp scalar.
using f8 = float __attribute__((vector_size(32)));
using i8 = int32_t __attribute__((vector_size(32)));
using h8 = _Float16 __attribute__((vector_size(16)));  // eight halves: one F16C / NEON fcvtl conversion to an f8

inline f8 load8(const float* p) {
  f8 v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
inline void store8(float* p, f8 v) { std::memcpy(p, &v, sizeof v); }
inline f8 splat8(float x) { return f8{x, x, x, x, x, x, x, x}; }
inline float hsum8(f8 v) { return ((v[0] + v[1]) + (v[2] + v[3])) + ((v[4] + v[5]) + (v[6] + v[7])); }
inline f8 max8(f8 a, f8 b) { return a > b ? a : b; }
inline float hmax8(f8 v) { return std::max(std::max(std::max(v[0], v[1]), std::max(v[2], v[3])),
                                           std::max(std::max(v[4], v[5]), std::max(v[6], v[7]))); }
inline bool any_finite8(f8 v) {  // any lane above -inf (a mask chunk that shows a slot)
  const i8 m = v > splat8(-INFINITY);
  return ((m[0] | m[1]) | (m[2] | m[3])) | ((m[4] | m[5]) | (m[6] | m[7]));
}
// {hsum8(a[0]), ..., hsum8(a[7])}: three rounds of pairwise sums of interleaved lanes (a transpose as it adds).
inline f8 reduce8(const f8* a) {
  auto pairs = [](f8 x, f8 y) {  // {x01, y01, x23, y23, x45, y45, x67, y67}, xij = x[i] + x[j]
    return __builtin_shufflevector(x, y, 0, 8, 2, 10, 4, 12, 6, 14) +
           __builtin_shufflevector(x, y, 1, 9, 3, 11, 5, 13, 7, 15);
  };
  auto quads = [](f8 x, f8 y) {  // of two pairs() results: {x0..3 sums of lanes 0-3 | 4-7 ...}
    return __builtin_shufflevector(x, y, 0, 1, 8, 9, 4, 5, 12, 13) +
           __builtin_shufflevector(x, y, 2, 3, 10, 11, 6, 7, 14, 15);
  };
  const f8 lo = quads(pairs(a[0], a[1]), pairs(a[2], a[3]));  // {a0..a3 over lanes 0-3, a0..a3 over lanes 4-7}
  const f8 hi = quads(pairs(a[4], a[5]), pairs(a[6], a[7]));
  return __builtin_shufflevector(lo, hi, 0, 1, 2, 3, 8, 9, 10, 11) +
         __builtin_shufflevector(lo, hi, 4, 5, 6, 7, 12, 13, 14, 15);
}

// exp(x) for x <= 0 (scores less their row's max), eight at a time: Cephes' expf (x = k ln2 + r in two parts,
// k rounded by the 1.5 * 2^23 trick, a degree-5 polynomial, 2^k built in the exponent bits), about 2 ulp.
// Below -87.3 (the smallest normal's log), and -inf, it gives exactly 0.
inline f8 exp8_nonpositive(f8 x) {
  const i8 under = !(x >= -87.3f);
  x = (f8)(((i8)x & ~under) | ((i8)splat8(-87.3f) & under));
  const f8 k = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;  // round(x / ln2), |k| <= 126
  const f8 r = (x - k * 0.693359375f) + k * 2.12194440e-4f;
  f8 p = splat8(1.9875691500e-4f);
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const i8 two_k = (__builtin_convertvector(k, i8) + 127) << 23;
  return (f8)((i8)(p * (f8)two_k) & ~under);
}

// x[j] = exp(x[j] - m) for x <= m, in place (the tail through a padded copy); returns their sum.
inline float exp_shifted_sum(float* x, int64_t n, float m) {
  f8 sum{};
  int64_t j = 0;
  for (; j + 8 <= n; j += 8) {
    const f8 e = exp8_nonpositive(load8(x + j) - m);
    store8(x + j, e);
    sum += e;
  }
  if (j < n) {
    float tail[8];
    std::fill(tail, tail + 8, -INFINITY);
    std::copy(x + j, x + n, tail);
    const f8 e = exp8_nonpositive(load8(tail) - m);
    store8(tail, e);
    std::copy(tail, tail + (n - j), x + j);
    sum += e;
  }
  return hsum8(sum);
}
inline float exp_nonpositive(float x) { return x >= -87.3f ? std::exp(x) : 0.0f; }  // one value (-inf: 0)

// The shape of one custom_sdpa call. Query rows are (position i, head h); the G = Hq / Hkv heads of one kv head
// are taken together so each key and value row is read once for all of them. T: the caches' element type.
template <typename T>
struct Sdpa {
  const float* q;  // [S, Hq, D]
  const T *k, *v;  // [L, Hkv, D]
  const float* mask;  // [S, L] or null
  int64_t S, Hq, Hkv, G, D, L, start_pos, mask_stride;
  float scale;
  // keys query position i may see: 0 .. keys(i) - 1 (causal), or every slot (the mask decides)
  int64_t keys(int64_t i) const { return mask ? L : start_pos + i + 1; }
};

// Online-softmax state of one query row over a range of keys (flash attention): the running max m, the sum l of
// exp(score - m) and the accumulated exp(score - m)-weighted values acc[D].
struct Partial {
  float* m;
  float* l;
  float* acc;  // [rows, D]
};

constexpr int64_t kKeyTile = 64;     // keys per tile: scores [rows, 64] and acc [rows, D] stay in L1
constexpr int64_t kQueryBlock = 8;   // query positions per task in a prefill call

// Chunk c (floats 8c .. 8c + 7) of a row of d floats; past the row's end, zeros (a head size not a multiple of 8).
inline f8 load_chunk(const float* row, int64_t c, int64_t d) {
  if (8 * c + 8 <= d) return load8(row + 8 * c);
  f8 v{};
  std::memcpy(&v, row + 8 * c, static_cast<size_t>(d - 8 * c) * sizeof(float));
  return v;
}
inline f8 load_chunk(const _Float16* row, int64_t c, int64_t d) {
  h8 h{};
  if (8 * c + 8 <= d) {
    std::memcpy(&h, row + 8 * c, sizeof h);  // a constant size: one load, not a call to memcpy
  } else {
    std::memcpy(&h, row + 8 * c, static_cast<size_t>(d - 8 * c) * sizeof(_Float16));
  }
#if defined(__F16C__)
  // GCC 12 turns __builtin_convertvector of halves into eight library calls (7x slower at depth 8063)
  __m128i bits;
  std::memcpy(&bits, &h, sizeof bits);
  const __m256 wide = _mm256_cvtph_ps(bits);
  f8 out;
  std::memcpy(&out, &wide, sizeof out);
  return out;
#else
  return __builtin_convertvector(h, f8);
#endif
}
inline void store_chunk(float* row, int64_t c, int64_t d, f8 v) {
  if (8 * c + 8 <= d) return store8(row + 8 * c, v);
  std::memcpy(row + 8 * c, &v, static_cast<size_t>(d - 8 * c) * sizeof(float));
}

constexpr int64_t kMaxHeadDim = 512;  // Gemma 4's global heads; the runtime-size path keeps rows on the stack

// Vector registers the compiler may use: AVX-512VL and NEON have 32, AVX2 16. The value pass keeps R rows'
// accumulators (R * D / 8 vectors) and the value row's chunks live at once.
#if defined(__AVX512VL__) || defined(__aarch64__)
constexpr int64_t kVectorRegisters = 32;
#else
constexpr int64_t kVectorRegisters = 16;
#endif

// Rows whose value accumulators a compile-time head size DC keeps in registers together: 3 for D = 64 on AVX-512
// (SmolLM2's 3 query heads per kv head), 1 for D >= 128 or on AVX2, 1 for a run-time size.
constexpr int64_t value_rows(int64_t DC) {
  return DC <= 0 ? 1 : std::max<int64_t>(1, std::min<int64_t>(4, (kVectorRegisters - 8) / ((DC + 7) / 8)));
}

// Asks for 8 rows of d values, `stride` apart, to be brought into L2: a tile of one kv head's keys or values reads
// 4 lines of every 12 (SmolLM2's [L, 3, 64] float cache), a pattern the hardware's prefetchers follow poorly; at
// depth 8063 this took a decode call from 1.13 to 0.84 ms. Prefetches never fault, even past the end.
template <typename T>
inline void prefetch_rows(const T* p, int64_t stride, int64_t d) {
  constexpr int64_t kLine = 64 / sizeof(T);  // elements in a 64-byte line
  for (int64_t u = 0; u < 8; ++u)
    for (int64_t x = 0; x < d; x += kLine) __builtin_prefetch(p + u * stride + x, 0, 2);
}

// A thread's working rows for one kv head's tile, qb * G rows of them.
struct Scratch {
  explicit Scratch(int64_t rows)
      : scores(static_cast<size_t>(rows * kKeyTile)), alpha(static_cast<size_t>(rows)), seen(static_cast<size_t>(rows)),
        part_row(static_cast<size_t>(rows)) {}
  std::vector<float> scores;  // [rows, kKeyTile]: a tile's scores, then its softmax weights
  std::vector<float> alpha;   // [rows]: how much earlier tiles' acc and l shrink, exp(m_old - m_new)
  std::vector<int64_t> seen;  // [rows]: keys of the tile a row sees (its later weights are 0)
  std::vector<int64_t> part_row;  // [rows]: the row's index in the block's Partial, (i - i0) * Hq + h
};

// One tile of keys [t0, t0 + nt) for `rows` query rows of kv head kvh: rows lr = (i - i0) * G + g, each with its
// online-softmax state in part at row part_row[lr] (recorded here for the value pass). Scores first, row by row;
// then values, R rows at a time, so a value row read from L1 serves R rows' accumulators (and gives R * D / 8
// independent FMA chains, not D / 8).
template <int64_t DC, typename T>
void attend_tile(const Sdpa<T>& a, int64_t kvh, int64_t i0, int64_t i1, int64_t t0, int64_t nt, Partial part,
                 Scratch& scratch) {
  constexpr int64_t R = value_rows(DC);
  const int64_t D = DC > 0 ? DC : a.D;
  const int64_t V = (D + 7) / 8;  // vectors per row
  const int64_t G = a.G, rows = (i1 - i0) * G, kv_stride = a.Hkv * D;
  const T* kbase = a.k + (t0 * a.Hkv + kvh) * D;
  const T* vbase = a.v + (t0 * a.Hkv + kvh) * D;
  float* scores = scratch.scores.data();
  float* alpha = scratch.alpha.data();
  int64_t* seen = scratch.seen.data();
  int64_t* part_row = scratch.part_row.data();
  // Row lr is (position i, head kvh * G + g), counted rather than divided out of lr: an integer divide costs tens
  // of cycles, and this runs for every row of every tile.
  for (int64_t i = i0, lr = 0; i < i1; ++i)
    for (int64_t g = 0; g < G; ++g, ++lr) {
      const int64_t h = kvh * G + g, r = (i - i0) * a.Hq + h;
      part_row[lr] = r;
      const float* mrow = a.mask ? a.mask + i * a.mask_stride + t0 : nullptr;
      const int64_t visible = std::max<int64_t>(0, std::min(nt, a.keys(i) - t0));  // causal: later keys hidden
      float* s = scores + lr * kKeyTile;
      std::fill(s + visible, s + nt, 0.0f);
      seen[lr] = visible;
      alpha[lr] = 1.0f;
      f8 q[DC > 0 ? (DC + 7) / 8 : kMaxHeadDim / 8];
      for (int64_t c = 0; c < V; ++c) q[c] = load_chunk(a.q + (i * a.Hq + h) * D, c, D) * a.scale;
      // Eight keys at a time: eight independent dot products (one FMA chain each, where a single key's two chains
      // left the FMA units waiting on latency), summed across lanes together by reduce8.
      f8 mx8 = splat8(-INFINITY);
      int64_t t = 0;
      for (; t + 8 <= visible; t += 8) {
        const f8 m8 = mrow ? load8(mrow + t) : f8{};
        // Slots the mask hides cost no dot products: in a ring of window - 1 + max_seq_len slots most are hidden
        // from an early query.
        if (mrow && !any_finite8(m8)) {
          store8(s + t, m8);
          continue;
        }
        const T* krow = kbase + t * kv_stride;
        if (lr == 0 && t0 + kKeyTile < a.L) {  // the next tile's rows of this kv head, into L2 as this one computes
          prefetch_rows(krow + kKeyTile * kv_stride, kv_stride, D);
          prefetch_rows(vbase + (t + kKeyTile) * kv_stride, kv_stride, D);
        }
        f8 acc[8] = {};  // fully unrolled: GCC 12 otherwise kept 5 of the 8 on the stack (Zen 4), 1.45x slower
#pragma GCC unroll 64
        for (int64_t c = 0; c < V; ++c)
#pragma GCC unroll 8
          for (int64_t u = 0; u < 8; ++u) acc[u] += q[c] * load_chunk(krow + u * kv_stride, c, D);
        const f8 s8 = reduce8(acc) + m8;
        store8(s + t, s8);
        mx8 = max8(mx8, s8);
      }
      float mx = hmax8(mx8);
      for (; t < visible; ++t) {
        if (mrow && mrow[t] == -INFINITY) {
          s[t] = -INFINITY;
          continue;
        }
        const T* krow = kbase + t * kv_stride;
        f8 acc0{};
        for (int64_t c = 0; c < V; ++c) acc0 += q[c] * load_chunk(krow, c, D);
        s[t] = hsum8(acc0) + (mrow ? mrow[t] : 0.0f);
        mx = std::max(mx, s[t]);
      }
      const float m_new = std::max(part.m[r], mx);
      if (m_new == -INFINITY) {  // nothing visible yet: no weights
        std::fill(s, s + nt, 0.0f);
        continue;
      }
      const float sum = exp_shifted_sum(s, visible, m_new);
      const float old = exp_nonpositive(part.m[r] - m_new);  // rescale what earlier tiles accumulated
      part.l[r] = part.l[r] * old + sum;
      part.m[r] = m_new;
      alpha[lr] = old;
    }
  // acc = acc * alpha + sum_t p[t] v[t], R rows at a time
  for (int64_t lr0 = 0; lr0 < rows; lr0 += R) {
    const int64_t nr = std::min(R, rows - lr0);
    float* out[R];
    const float* p[R];
    f8 o[R][DC > 0 ? (DC + 7) / 8 : kMaxHeadDim / 8];
    int64_t upto = 0;
    for (int64_t u = 0; u < R; ++u) {
      const int64_t lr = lr0 + std::min(u, nr - 1);  // past the last row: repeat it (its weights, not stored)
      out[u] = part.acc + part_row[lr] * D;
      p[u] = scores + lr * kKeyTile;
      for (int64_t c = 0; c < V; ++c) o[u][c] = load_chunk(out[u], c, D) * alpha[lr];
      upto = std::max(upto, seen[lr]);
    }
    for (int64_t t = 0; t < upto; ++t) {
      if (a.mask) {  // a slot hidden from all R rows (a ring's mask) costs nothing
        bool any = false;
        for (int64_t u = 0; u < R; ++u) any |= p[u][t] != 0.0f;
        if (!any) continue;
      }
      f8 w[R];
      for (int64_t u = 0; u < R; ++u) w[u] = splat8(p[u][t]);
      const T* vrow = vbase + t * kv_stride;
      for (int64_t c = 0; c < V; ++c) {
        const f8 vc = load_chunk(vrow, c, D);
        for (int64_t u = 0; u < R; ++u) o[u][c] += w[u] * vc;
      }
    }
    for (int64_t u = 0; u < nr; ++u)
      for (int64_t c = 0; c < V; ++c) store_chunk(out[u], c, D, o[u][c]);
  }
}

// Attention of query positions [i0, i1) (at most kQueryBlock), every head, over keys [j0, j1), into `part` (row
// r = (i - i0) * Hq + h): tile by tile, and within a tile kv head by kv head, so the caches are read in the order
// they lie in memory ([L, Hkv, D]: a tile of every kv head is one contiguous range). DC: the head size when known
// at compile time (custom_sdpa_out dispatches the common ones; 0: a.D at run time), so a row's query and value
// accumulators stay in registers across a tile's keys.
template <int64_t DC, typename T>
void attend_block(const Sdpa<T>& a, int64_t i0, int64_t i1, int64_t j0, int64_t j1, Partial part,
                  Scratch& scratch) {
  const int64_t rows = (i1 - i0) * a.Hq;
  std::fill(part.m, part.m + rows, -INFINITY);
  std::fill(part.l, part.l + rows, 0.0f);
  std::fill(part.acc, part.acc + rows * a.D, 0.0f);
  j1 = std::min(j1, a.keys(i1 - 1));  // the block's last position sees the most keys
  for (int64_t t0 = j0; t0 < j1; t0 += kKeyTile)
    for (int64_t kvh = 0; kvh < a.Hkv; ++kvh)
      attend_tile<DC>(a, kvh, i0, i1, t0, std::min(kKeyTile, j1 - t0), part, scratch);
}

// out rows of query positions [i0, i1) from `splits` partials over disjoint key ranges:
// sum_s exp(m_s - M) acc_s / sum_s exp(m_s - M) l_s. A row that sees no key at all gets zeros.
template <typename T>
void combine(const Sdpa<T>& a, int64_t i0, int64_t i1, const Partial* parts, int64_t splits, float* out) {
  const int64_t D = a.D, rows = (i1 - i0) * a.Hq;
  for (int64_t r = 0; r < rows; ++r) {
    float M = -INFINITY;
    for (int64_t s = 0; s < splits; ++s) M = std::max(M, parts[s].m[r]);
    float* orow = out + (i0 * a.Hq + r) * D;
    std::fill(orow, orow + D, 0.0f);
    if (M == -INFINITY) continue;
    float l = 0;
    for (int64_t s = 0; s < splits; ++s) {
      const float w = exp_nonpositive(parts[s].m[r] - M);
      if (w == 0.0f) continue;
      l += w * parts[s].l[r];
      const float* acc = parts[s].acc + r * D;
      for (int64_t d = 0; d < D; ++d) orow[d] += w * acc[d];
    }
    const float inv = 1.0f / l;
    for (int64_t d = 0; d < D; ++d) orow[d] *= inv;
  }
}

// The call's attention into `op` [S, Hq, D]: the tasks below, each on a thread of ExecuTorch's pool.
template <typename T>
void run(const Sdpa<T>& a, float* op) {
  const int64_t S = a.S, Hq = a.Hq, D = a.D;
  // Tasks: (block of query positions, range of keys), every head. Prefill has blocks enough for every thread; a
  // decode call (one position) has not, so its keys are split into ranges whose partial softmaxes are combined
  // after (flash decoding).
  const int64_t qb = std::min(kQueryBlock, S), blocks = (S + qb - 1) / qb, rows = qb * Hq;
  const int64_t threads = std::max<int64_t>(1, executorch::extension::get_thread_count());
  const int64_t max_keys = a.keys(S - 1);
  // Range s is tiles [s * n / splits, (s + 1) * n / splits) of the n tiles: whole tiles, balanced to one tile (equal
  // ranges of keys left a ragged tile in each, its last keys run one by one). A range is at least a tile: ranges of
  // at least 256 keys, as before, left a call under 512 keys on one thread, and SmolLM2 8da4w decoding at 6.0 ms a
  // token at depth 384 against 4.9 at depth 512 (Zen 4, 2 cores).
  const int64_t n_tiles = (max_keys + kKeyTile - 1) / kKeyTile;
  const int64_t splits_wanted = blocks < 2 * threads ? (2 * threads + blocks - 1) / blocks : 1;
  int64_t splits = std::min(splits_wanted, n_tiles);
  if (splits > threads) splits -= splits % threads;  // as many ranges per thread (3 on 2 threads: 2 wait for 1)
  auto range_start = [&](int64_t s) { return std::min(max_keys, s * n_tiles / splits * kKeyTile); };
  const int64_t tasks = blocks * splits;
  // Per task: m and l [rows], acc [rows, D]; and per thread a Scratch.
  const int64_t part_floats = rows * (2 + D);
  std::vector<float> state(static_cast<size_t>(tasks * part_floats));
  auto partial = [&](int64_t task) {
    float* base = state.data() + task * part_floats;
    return Partial{base, base + rows, base + 2 * rows};
  };
  executorch::extension::parallel_for(0, tasks, 1, [&](int64_t begin, int64_t end) {
    Scratch scratch(qb * a.G);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t s = task % splits, i0 = (task / splits) * qb, i1 = std::min(S, i0 + qb);
      const int64_t j0 = range_start(s), j1 = range_start(s + 1);
      const Partial part = partial(task);
      switch (D) {  // the head sizes of the zoo's families get a compile-time D
        case 64: attend_block<64>(a, i0, i1, j0, j1, part, scratch); break;
        case 128: attend_block<128>(a, i0, i1, j0, j1, part, scratch); break;
        case 256: attend_block<256>(a, i0, i1, j0, j1, part, scratch); break;
        case 512: attend_block<512>(a, i0, i1, j0, j1, part, scratch); break;
        default: attend_block<0>(a, i0, i1, j0, j1, part, scratch);
      }
      if (splits == 1) combine(a, i0, i1, &part, 1, op);  // its own rows, on this thread
    }
  });
  if (splits > 1) {
    std::vector<Partial> parts(static_cast<size_t>(splits));
    for (int64_t b = 0; b < blocks; ++b) {  // block b's splits are tasks b * splits + s
      for (int64_t s = 0; s < splits; ++s) parts[s] = partial(b * splits + s);
      combine(a, b * qb, std::min(S, b * qb + qb), parts.data(), splits, op);
    }
  }
}

inline Tensor& custom_sdpa_out(KernelRuntimeContext& ctx, const Tensor& q, const Tensor& k, const Tensor& v,
                               int64_t start_pos, const optional<Tensor>& attn_mask, double dropout_p, bool is_causal,
                               optional<double> scale, Tensor& out) {
  ET_KERNEL_CHECK_MSG(ctx, is_float_4d(q) && is_cache_4d(k) && is_cache_4d(v) && k.scalar_type() == v.scalar_type(),
                      InvalidArgument, out, "custom_sdpa: expected a 4-D float query and float or half caches");
  // Two calls: causal by position (no mask), or an additive float mask [S, L] over every cache slot (a sliding
  // window's ring), which replaces the causal rule and start_pos as ExecuTorch's own kernel does.
  const bool masked = attn_mask.has_value();
  ET_KERNEL_CHECK_MSG(ctx, dropout_p == 0.0 && is_causal != masked, InvalidArgument, out,
                      "custom_sdpa: this kernel supports the causal call and the masked one, without dropout");
  const int64_t S = q.size(1), Hq = q.size(2), D = q.size(3), L = k.size(1), Hkv = k.size(2);
  ET_KERNEL_CHECK_MSG(ctx,
                      q.size(0) == 1 && k.size(0) == 1 && v.size(1) == L && v.size(2) == Hkv && k.size(3) == D &&
                          v.size(3) == D && D <= kMaxHeadDim && Hkv > 0 && Hq % Hkv == 0 && start_pos >= 0 &&
                          (masked || start_pos + S <= L),
                      InvalidArgument, out, "custom_sdpa: query/cache shapes do not match (head size at most 512)");
  ET_KERNEL_CHECK_MSG(ctx,
                      !masked || (attn_mask->dim() == 2 && attn_mask->scalar_type() == ScalarType::Float &&
                                  attn_mask->size(0) == S && attn_mask->size(1) == L),
                      InvalidArgument, out, "custom_sdpa: expected a float mask [S, cache length]");
  ET_KERNEL_CHECK(ctx, executorch::runtime::resize_tensor(out, q.sizes()) == Error::Ok, InvalidArgument, out);
  const float* mask = masked ? attn_mask->const_data_ptr<float>() : nullptr;
  const int64_t mask_stride = masked ? attn_mask->size(1) : 0;
  const float sc = scale.has_value() ? static_cast<float>(scale.value()) : 1.0f / std::sqrt(static_cast<float>(D));
  float* op = out.mutable_data_ptr<float>();
  if (k.scalar_type() == ScalarType::Half) {  // executorch::aten::Half is IEEE binary16, as _Float16
    static_assert(sizeof(executorch::aten::Half) == sizeof(_Float16));
    run(Sdpa<_Float16>{q.const_data_ptr<float>(), reinterpret_cast<const _Float16*>(k.const_data_ptr()),
                       reinterpret_cast<const _Float16*>(v.const_data_ptr()), mask, S, Hq, Hkv, Hq / Hkv, D, L,
                       start_pos, mask_stride, sc},
        op);
  } else {
    run(Sdpa<float>{q.const_data_ptr<float>(), k.const_data_ptr<float>(), v.const_data_ptr<float>(), mask, S, Hq,
                    Hkv, Hq / Hkv, D, L, start_pos, mask_stride, sc},
        op);
  }
  return out;
}

}  // namespace zoo_sdpa
