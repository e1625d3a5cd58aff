// Picking the next token from logits: greedy, or sampled with temperature, top-k and top-p.
#include <algorithm>
#include <cmath>
#include <numeric>

#include "xlshare/error.hpp"
#include "xlshare/model/executor.hpp"

namespace xlshare {

std::int32_t sample_token(std::span<const float> logits, const SamplingOptions& o,
                          std::mt19937_64& rng) {
  if (logits.empty()) throw ConfigError("sample_token: no logits");
  if (o.temperature <= 0.0f) {
    return static_cast<std::int32_t>(std::max_element(logits.begin(), logits.end()) -
                                     logits.begin());
  }
  std::vector<std::int32_t> idx(logits.size());
  std::iota(idx.begin(), idx.end(), 0);
  std::sort(idx.begin(), idx.end(), [&](std::int32_t a, std::int32_t b) {
    return logits[static_cast<std::size_t>(a)] > logits[static_cast<std::size_t>(b)] ||
           (logits[static_cast<std::size_t>(a)] == logits[static_cast<std::size_t>(b)] && a < b);
  });
  std::size_t keep = idx.size();
  if (o.top_k > 0) keep = std::min<std::size_t>(keep, o.top_k);
  std::vector<double> p(keep);
  const double top = logits[static_cast<std::size_t>(idx[0])];
  double sum = 0;
  for (std::size_t i = 0; i < keep; ++i) {
    p[i] = std::exp((logits[static_cast<std::size_t>(idx[i])] - top) / o.temperature);
    sum += p[i];
  }
  if (o.top_p < 1.0f) {
    double acc = 0;
    std::size_t cut = keep;
    for (std::size_t i = 0; i < keep; ++i) {
      acc += p[i] / sum;
      if (acc >= o.top_p) {
        cut = i + 1;
        break;
      }
    }
    keep = cut;
    sum = std::accumulate(p.begin(), p.begin() + static_cast<long>(keep), 0.0);
  }
  std::uniform_real_distribution<double> u(0.0, sum);
  double r = u(rng);
  for (std::size_t i = 0; i < keep; ++i) {
    r -= p[i];
    if (r <= 0) return idx[i];
  }
  return idx[keep - 1];
}

}  // namespace xlshare
