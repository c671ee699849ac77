#include "zoo/sampler.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "zoo/errors.h"

namespace zoo {

Sampler::Sampler(const SamplerConfig& config) : config_(config), rng_(config.seed) {
  if (!(config.temperature >= 0) || !(config.top_p > 0 && config.top_p <= 1) || config.top_k < 0 ||
      !(config.min_p >= 0 && config.min_p <= 1) || !(config.repetition_penalty > 0))
    throw UsageError("invalid sampling settings: need --temperature >= 0, 0 < --top-p <= 1, --top-k >= 0, "
                     "0 <= --min-p <= 1, --repetition-penalty > 0");
}

void SeenTokens::add(int64_t id) {
  if (id < 0) return;
  if (static_cast<size_t>(id) >= member_.size()) member_.resize(static_cast<size_t>(id) + 1, false);
  if (!member_[id]) member_[id] = true, ids_.push_back(id);
}

// Step for step as common/sampler.py (its docstring lists the steps), so that the two pick the same tokens.
int64_t Sampler::operator()(const float* logits, int64_t n, const std::vector<int64_t>& seen) {
  if (config_.repetition_penalty != 1.0f && !seen.empty()) {
    penalized_.assign(logits, logits + n);
    for (int64_t id : seen) {
      if (id < 0 || id >= n) continue;
      float& x = penalized_[id];
      x = x > 0 ? x / config_.repetition_penalty : x * config_.repetition_penalty;
    }
    logits = penalized_.data();
  }
  if (config_.temperature == 0) return std::max_element(logits, logits + n) - logits;  // first maximum
  float max_logit = *std::max_element(logits, logits + n);
  scratch_.resize(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i)
    scratch_[i] = {std::exp(static_cast<double>((logits[i] - max_logit) / config_.temperature)), i};
  bool top_k = config_.top_k > 0 && config_.top_k < n;
  if (!top_k && config_.top_p >= 1 && config_.min_p <= 0) return draw(scratch_.size());  // in vocabulary order
  auto by_prob = [](const auto& a, const auto& b) { return a.first > b.first || (a.first == b.first && a.second < b.second); };
  size_t keep = top_k ? static_cast<size_t>(config_.top_k) : scratch_.size();
  if (config_.top_p < 1 || config_.min_p > 0 || keep == scratch_.size())
    std::sort(scratch_.begin(), scratch_.end(), by_prob);
  else  // top-k alone: only the first k need their order
    std::partial_sort(scratch_.begin(), scratch_.begin() + static_cast<std::ptrdiff_t>(keep), scratch_.end(), by_prob);
  if (config_.top_p < 1) {  // keep tokens whose preceding mass is below top_p (the one crossing it included)
    double total = 0;  // of what top-k kept
    for (size_t i = 0; i < keep; ++i) total += scratch_[i].first;
    double before = 0;
    size_t k = 0;
    while (k < keep && before / total < config_.top_p) before += scratch_[k++].first;
    keep = std::max<size_t>(k, 1);
  }
  if (config_.min_p > 0) {
    double floor = config_.min_p * scratch_[0].first;
    size_t k = 0;
    while (k < keep && scratch_[k].first >= floor) ++k;
    keep = std::max<size_t>(k, 1);
  }
  return draw(keep);
}

int64_t Sampler::draw(size_t keep) {
  double mass = 0;
  for (size_t i = 0; i < keep; ++i) mass += scratch_[i].first;
  double r = rng_.uniform() * mass, cumulative = 0;
  for (size_t i = 0; i < keep; ++i) {
    cumulative += scratch_[i].first;
    if (cumulative > r) return scratch_[i].second;
  }
  return scratch_[keep - 1].second;
}

}  // namespace zoo
