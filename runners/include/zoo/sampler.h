// Next-token sampling: greedy, or temperature with optional top-k / top-p / min-p, a repetition penalty, seeded.
// The same algorithm and RNG as common/sampler.py: a seed picks the same tokens in Python and C++.
#pragma once

#include <cstddef>
#include <cstdint>
#include <utility>
#include <vector>

namespace zoo {

struct SamplerConfig {
  float temperature = 0.0f;  // 0 = greedy (argmax, first index on ties, like torch.argmax)
  double top_p = 1.0;        // 1 = off; else keep the smallest prefix whose mass reaches top_p
  int top_k = 0;             // 0 = off
  uint64_t seed = 0;
  double min_p = 0.0;               // 0 = off; keep tokens at least min_p times as likely as the likeliest
  float repetition_penalty = 1.0f;  // 1 = off; each distinct token already in the context, once
};

// SplitMix64 (Steele, Lea & Flood): the RNG common/sampler.py uses too.
class SplitMix64 {
 public:
  explicit SplitMix64(uint64_t seed) : state_(seed) {}
  uint64_t next() {
    uint64_t z = (state_ += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  double uniform() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }  // [0, 1)

 private:
  uint64_t state_;
};

class Sampler {
 public:
  explicit Sampler(const SamplerConfig& config);  // throws zoo::UsageError on invalid settings
  // The next token from `logits` [vocab_size]; `seen`: the distinct ids in the context so far (for the penalty).
  int64_t operator()(const float* logits, int64_t vocab_size, const std::vector<int64_t>& seen = {});
  const SamplerConfig& config() const { return config_; }

 private:
  int64_t draw(size_t keep);  // one of scratch_[0..keep) by weight
  SamplerConfig config_;
  SplitMix64 rng_;
  std::vector<float> penalized_;
  std::vector<std::pair<double, int64_t>> scratch_;
};

// The distinct ids of a context, in first-seen order (what Sampler's `seen` takes), kept up to date token by token.
class SeenTokens {
 public:
  void add(int64_t id);
  void add(const std::vector<int64_t>& ids) {
    for (int64_t id : ids) add(id);
  }
  const std::vector<int64_t>& ids() const { return ids_; }

 private:
  std::vector<int64_t> ids_;
  std::vector<bool> member_;
};

}  // namespace zoo
