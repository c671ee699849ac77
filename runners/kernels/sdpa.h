// The zoo's attention kernel: `custom_sdpa.out` as ExecuTorch's llama custom ops define it (op_sdpa.cpp), for
// the way the zoo calls it: caches [B, L, Hkv, D] (sequence before heads), query [B, S, Hq, D] at positions
// start_pos .. start_pos + S - 1, grouped-query (head h reads kv head h / (Hq / Hkv)), causal, or with an additive
// float mask [S, L] over all L cache slots instead, start_pos then unused (Gemma's sliding-window rings, written
// slot by slot with update_cache_with_indices).
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

namespace zoo_sdpa {

using executorch::aten::optional;
using executorch::aten::ScalarType;
using executorch::aten::Tensor;
using executorch::runtime::Error;
using executorch::runtime::KernelRuntimeContext;

inline bool is_float_4d(const Tensor& t) { return t.dim() == 4 && t.scalar_type() == ScalarType::Float; }

// Eight floats as one GCC/Clang vector (AVX2/AVX-512 ymm, two NEON registers): the arithmetic below is written
// with it, not left to the auto-vectorizer, which (GCC 12, -O3 -march=native) reduced dot products lane by lane,
// kept the value accumulators on the stack and left exp scalar.
using f8 = float __attribute__((vector_size(32)));
using i8 = int32_t __attribute__((vector_size(32)));

inline f8 load8(const float* p) {
  f8 v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
inline void store8(float* p, f8 v) { std::memcpy(p, &v, sizeof v); }
inline f8 splat8(float x) { return f8{} + x; }
inline float hsum8(f8 v) { return ((v[0] + v[1]) + (v[2] + v[3])) + ((v[4] + v[5]) + (v[6] + v[7])); }

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

// x[j] = exp(x[j]) for x <= 0, in place (the tail through a padded copy).
inline void exp_nonpositive(float* x, int64_t n) {
  int64_t j = 0;
  for (; j + 8 <= n; j += 8) store8(x + j, exp8_nonpositive(load8(x + j)));
  if (j < n) {
    float tail[8];
    std::fill(tail, tail + 8, -INFINITY);
    std::copy(x + j, x + n, tail);
    store8(tail, exp8_nonpositive(load8(tail)));
    std::copy(tail, tail + (n - j), x + j);
  }
}

// The shape of one custom_sdpa call. Query rows are (position i, head h); the G = Hq / Hkv heads of one kv head
// are taken together so each key and value row is read once for all of them.
struct Sdpa {
  const float *q, *k, *v, *mask;  // q [S, Hq, D], k/v [L, Hkv, D], mask [S, L] or null
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
constexpr int64_t kMinSplitKeys = 256;  // a decode call splits its keys across threads in ranges of at least this

// Chunk c (floats 8c .. 8c + 7) of a row of d floats; past the row's end, zeros (a head size not a multiple of 8).
inline f8 load_chunk(const float* row, int64_t c, int64_t d) {
  if (8 * c + 8 <= d) return load8(row + 8 * c);
  f8 v{};
  std::memcpy(&v, row + 8 * c, static_cast<size_t>(d - 8 * c) * sizeof(float));
  return v;
}
inline void store_chunk(float* row, int64_t c, int64_t d, f8 v) {
  if (8 * c + 8 <= d) return store8(row + 8 * c, v);
  std::memcpy(row + 8 * c, &v, static_cast<size_t>(d - 8 * c) * sizeof(float));
}

constexpr int64_t kMaxHeadDim = 512;  // Gemma 4's global heads; the runtime-size path keeps rows on the stack

// Attention of query positions [i0, i1) of kv head kvh over keys [j0, j1), into `part` (rows (i - i0) * G + g),
// a tile of kKeyTile keys at a time. DC: the head size when known at compile time (custom_sdpa_out dispatches the
// common ones; 0: a.D at run time), so a row's query and value accumulator stay in registers across a tile's keys.
template <int64_t DC>
void attend_block(const Sdpa& a, int64_t kvh, int64_t i0, int64_t i1, int64_t j0, int64_t j1, Partial part,
                  float* scores) {
  const int64_t D = DC > 0 ? DC : a.D;
  const int64_t V = (D + 7) / 8;  // vectors per row
  const int64_t G = a.G, rows = (i1 - i0) * G, kv_stride = a.Hkv * D;
  std::fill(part.m, part.m + rows, -INFINITY);
  std::fill(part.l, part.l + rows, 0.0f);
  std::fill(part.acc, part.acc + rows * D, 0.0f);
  j1 = std::min(j1, a.keys(i1 - 1));  // the block's last position sees the most keys
  const float* kbase = a.k + kvh * D;
  const float* vbase = a.v + kvh * D;
  for (int64_t t0 = j0; t0 < j1; t0 += kKeyTile) {
    const int64_t nt = std::min(kKeyTile, j1 - t0);
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t i = i0 + r / G, h = kvh * G + r % G;
      const float* mrow = a.mask ? a.mask + i * a.mask_stride + t0 : nullptr;
      const int64_t visible = std::max<int64_t>(0, std::min(nt, a.keys(i) - t0));  // causal: later keys hidden
      float* s = scores + r * kKeyTile;
      f8 q[DC > 0 ? (DC + 7) / 8 : kMaxHeadDim / 8];
      for (int64_t c = 0; c < V; ++c) q[c] = load_chunk(a.q + (i * a.Hq + h) * D, c, D) * a.scale;
      float mx = -INFINITY;
      for (int64_t t = 0; t < visible; ++t) {
        // A slot the mask hides (outside the window, or not written yet) costs no dot product: in a ring of
        // window - 1 + max_seq_len slots most are hidden from an early query.
        if (mrow && mrow[t] == -INFINITY) {
          s[t] = -INFINITY;
          continue;
        }
        const float* krow = kbase + (t0 + t) * kv_stride;
        f8 acc0{}, acc1{};
        int64_t c = 0;
        for (; c + 1 < V; c += 2) {
          acc0 += q[c] * load_chunk(krow, c, D);
          acc1 += q[c + 1] * load_chunk(krow, c + 1, D);
        }
        if (c < V) acc0 += q[c] * load_chunk(krow, c, D);
        s[t] = hsum8(acc0 + acc1) + (mrow ? mrow[t] : 0.0f);
        mx = std::max(mx, s[t]);
      }
      const float m_new = std::max(part.m[r], mx);
      if (m_new == -INFINITY) continue;  // nothing visible yet
      for (int64_t t = 0; t < visible; ++t) s[t] -= m_new;
      exp_nonpositive(s, visible);
      float sum = 0;
      for (int64_t t = 0; t < visible; ++t) sum += s[t];
      float old = part.m[r] - m_new;  // rescale what earlier tiles accumulated
      exp_nonpositive(&old, 1);
      part.l[r] = part.l[r] * old + sum;
      part.m[r] = m_new;
      // acc = acc * old + sum_t p[t] v[t]; the tile's value rows stay in L1 for the block's other rows
      float* out = part.acc + r * D;
      f8 o[DC > 0 ? (DC + 7) / 8 : kMaxHeadDim / 8];
      for (int64_t c = 0; c < V; ++c) o[c] = load_chunk(out, c, D) * old;
      for (int64_t t = 0; t < visible; ++t) {
        if (s[t] == 0.0f) continue;  // hidden by the mask
        const f8 p = splat8(s[t]);
        const float* vrow = vbase + (t0 + t) * kv_stride;
        for (int64_t c = 0; c < V; ++c) o[c] += p * load_chunk(vrow, c, D);
      }
      for (int64_t c = 0; c < V; ++c) store_chunk(out, c, D, o[c]);
    }
  }
}

// out rows of query positions [i0, i1) of kv head kvh from `splits` partials over disjoint key ranges:
// sum_s exp(m_s - M) acc_s / sum_s exp(m_s - M) l_s. A row that sees no key at all gets zeros.
inline void combine(const Sdpa& a, int64_t kvh, int64_t i0, int64_t i1, const Partial* parts, int64_t splits,
                    float* out) {
  const int64_t G = a.G, D = a.D, rows = (i1 - i0) * G;
  for (int64_t r = 0; r < rows; ++r) {
    float M = -INFINITY;
    for (int64_t s = 0; s < splits; ++s) M = std::max(M, parts[s].m[r]);
    float* orow = out + ((i0 + r / G) * a.Hq + kvh * G + r % G) * D;
    std::fill(orow, orow + D, 0.0f);
    if (M == -INFINITY) continue;
    float l = 0;
    for (int64_t s = 0; s < splits; ++s) {
      float w = parts[s].m[r] - M;
      exp_nonpositive(&w, 1);
      if (w == 0.0f) continue;
      l += w * parts[s].l[r];
      const float* acc = parts[s].acc + r * D;
      for (int64_t d = 0; d < D; ++d) orow[d] += w * acc[d];
    }
    const float inv = 1.0f / l;
    for (int64_t d = 0; d < D; ++d) orow[d] *= inv;
  }
}

inline Tensor& custom_sdpa_out(KernelRuntimeContext& ctx, const Tensor& q, const Tensor& k, const Tensor& v,
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
                          v.size(3) == D && D <= kMaxHeadDim && Hkv > 0 && Hq % Hkv == 0 && start_pos >= 0 &&
                          (masked || start_pos + S <= L),
                      InvalidArgument, out, "custom_sdpa: query/cache shapes do not match (head size at most 512)");
  ET_KERNEL_CHECK_MSG(ctx,
                      !masked || (attn_mask->dim() == 2 && attn_mask->scalar_type() == ScalarType::Float &&
                                  attn_mask->size(0) == S && attn_mask->size(1) == L),
                      InvalidArgument, out, "custom_sdpa: expected a float mask [S, cache length]");
  ET_KERNEL_CHECK(ctx, executorch::runtime::resize_tensor(out, q.sizes()) == Error::Ok, InvalidArgument, out);
  const Sdpa a{q.const_data_ptr<float>(), k.const_data_ptr<float>(), v.const_data_ptr<float>(),
               masked ? attn_mask->const_data_ptr<float>() : nullptr, S, Hq, Hkv, Hq / Hkv, D, L, start_pos,
               masked ? attn_mask->size(1) : 0,
               scale.has_value() ? static_cast<float>(scale.value()) : 1.0f / std::sqrt(static_cast<float>(D))};
  float* op = out.mutable_data_ptr<float>();

  // Tasks: (kv head, block of query positions, range of keys). Prefill has blocks enough for every thread; a
  // decode call (one position, a few kv heads) has not, so its keys are split into ranges whose partial softmaxes
  // are combined after (flash decoding).
  const int64_t qb = std::min(kQueryBlock, S), blocks = (S + qb - 1) / qb, rows = qb * a.G;
  const int64_t threads = std::max<int64_t>(1, executorch::extension::get_thread_count());
  const int64_t max_keys = a.keys(S - 1);
  int64_t splits = 1;
  if (Hkv * blocks < 2 * threads)
    splits = std::max<int64_t>(1, std::min((2 * threads + Hkv * blocks - 1) / (Hkv * blocks),
                                           max_keys / kMinSplitKeys));
  const int64_t span = (max_keys + splits - 1) / splits;  // keys per range
  const int64_t tasks = Hkv * blocks * splits;
  // Per task: m and l [rows], acc [rows, D]; and per thread-task a scores tile [rows, kKeyTile].
  const int64_t part_floats = rows * (2 + D);
  std::vector<float> state(static_cast<size_t>(tasks * part_floats));
  auto partial = [&](int64_t task) {
    float* base = state.data() + task * part_floats;
    return Partial{base, base + rows, base + 2 * rows};
  };
  executorch::extension::parallel_for(0, tasks, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> scores(static_cast<size_t>(rows * kKeyTile));
    for (int64_t task = begin; task < end; ++task) {
      const int64_t s = task % splits, b = (task / splits) % blocks, kvh = task / (splits * blocks);
      const int64_t i0 = b * qb, i1 = std::min(S, i0 + qb);
      const int64_t j0 = s * span, j1 = std::min(max_keys, (s + 1) * span);
      const Partial part = partial(task);
      switch (D) {  // the head sizes of the zoo's families get a compile-time D
        case 64: attend_block<64>(a, kvh, i0, i1, j0, j1, part, scores.data()); break;
        case 128: attend_block<128>(a, kvh, i0, i1, j0, j1, part, scores.data()); break;
        case 256: attend_block<256>(a, kvh, i0, i1, j0, j1, part, scores.data()); break;
        case 512: attend_block<512>(a, kvh, i0, i1, j0, j1, part, scores.data()); break;
        default: attend_block<0>(a, kvh, i0, i1, j0, j1, part, scores.data());
      }
      if (splits == 1) combine(a, kvh, i0, i1, &part, 1, op);  // its own rows, on this thread
    }
  });
  if (splits > 1) {
    std::vector<Partial> parts(static_cast<size_t>(splits));
    for (int64_t kb = 0; kb < Hkv * blocks; ++kb) {  // kb = kvh * blocks + b; its splits are tasks kb * splits + s
      for (int64_t s = 0; s < splits; ++s) parts[s] = partial(kb * splits + s);
      const int64_t i0 = (kb % blocks) * qb;
      combine(a, kb / blocks, i0, std::min(S, i0 + qb), parts.data(), splits, op);
    }
  }
  return out;
}

}  // namespace zoo_sdpa
