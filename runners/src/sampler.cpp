#include "zoo/sampler.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "zoo/errors.h"

namespace zoo {

Sampler::Sampler(const SamplerConfig& config) : config_(config), rng_(config.seed) {
  if (!(config.temperature >= 0) || !(config.top_p > 0 && config.top_p <= 1) || config.top_k < 0)
    throw UsageError("invalid sampling settings: need --temperature >= 0, 0 < --top-p <= 1, --top-k >= 0");
}

int64_t Sampler::operator()(const float* logits, int64_t n) {
  if (config_.temperature == 0) return std::max_element(logits, logits + n) - logits;  // first maximum
  float max_logit = *std::max_element(logits, logits + n);
  scratch_.resize(static_cast<size_t>(n));
  double total = 0;
  for (int64_t i = 0; i < n; ++i) {
    float p = std::exp((logits[i] - max_logit) / config_.temperature);
    scratch_[i] = {p, i};
    total += p;
  }
  auto by_prob = [](const auto& a, const auto& b) { return a.first > b.first || (a.first == b.first && a.second < b.second); };
  size_t keep = scratch_.size();
  if (config_.top_k > 0) keep = std::min(keep, static_cast<size_t>(config_.top_k));
  if (config_.top_p < 1 || keep < scratch_.size()) {
    std::sort(scratch_.begin(), scratch_.end(), by_prob);
    if (config_.top_p < 1) {  // keep tokens whose preceding mass is below top_p (the one crossing it included)
      double cumulative = 0;
      size_t k = 0;
      while (k < keep && cumulative / total < config_.top_p) cumulative += scratch_[k++].first;
      keep = std::max<size_t>(k, 1);
    }
  }
  double mass = 0;
  for (size_t i = 0; i < keep; ++i) mass += scratch_[i].first;
  double r = std::uniform_real_distribution<double>(0.0, mass)(rng_);
  for (size_t i = 0; i < keep; ++i) {
    r -= scratch_[i].first;
    if (r < 0) return scratch_[i].second;
  }
  return scratch_[keep - 1].second;
}

}  // namespace zoo
