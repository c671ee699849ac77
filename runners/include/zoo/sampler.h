// Next-token sampling: greedy, or temperature with optional top-k / top-p (nucleus), seeded.
#pragma once

#include <cstdint>
#include <random>
#include <vector>

namespace zoo {

struct SamplerConfig {
  float temperature = 0.0f;  // 0 = greedy (argmax, first index on ties, like torch.argmax)
  float top_p = 1.0f;        // 1 = off; else keep the smallest prefix whose mass reaches top_p
  int top_k = 0;             // 0 = off
  uint64_t seed = 0;
};

class Sampler {
 public:
  explicit Sampler(const SamplerConfig& config);  // throws zoo::UsageError on invalid settings
  int64_t operator()(const float* logits, int64_t vocab_size);

 private:
  SamplerConfig config_;
  std::mt19937_64 rng_;
  std::vector<std::pair<float, int64_t>> scratch_;
};

}  // namespace zoo
