// An EvictionPolicy of your own: GreedyDual-Size with the link's cost. A miss of tensor k
// costs one transfer, a fixed latency plus size/bandwidth, so per byte kept a small tensor
// saves more than a large one. Each resident key carries a credit, set on insert and on
// access to inflation + cost(k)/bytes(k); the victim is the candidate with the least credit,
// and the inflation rises to it, so keys not used for a while age out whatever their size.
//
// The factory is given the worker's cache keys (CacheKeys): their sizes, the tensor (or
// piece of one) each holds and the schedule over them. This policy uses the sizes for its
// costs and the tensor names to report what it evicted most.
#pragma once

#include <algorithm>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "xlshare/cache/eviction_policy.hpp"
#include "xlshare/engine/worker.hpp"

namespace example {

class GreedyDualSize final : public xlshare::EvictionPolicy {
 public:
  /// `latency_bytes`: the link's fixed cost per transfer, in bytes it could have moved
  /// meanwhile (latency x bandwidth; about 1 µs x 25 GB/s here).
  explicit GreedyDualSize(const xlshare::CacheKeys& keys, double latency_bytes = 25e3)
      : bytes_(keys.key_bytes.begin(), keys.key_bytes.end()),
        names_(keys.key_tensors.begin(), keys.key_tensors.end()),
        latency_bytes_(latency_bytes),
        credit_(bytes_.size(), 0.0),
        evicted_(bytes_.size(), 0) {}

  std::string_view name() const noexcept override { return "greedy-dual-size"; }

  /// The `n` tensors evicted most often, with their counts (a report for the user).
  std::vector<std::pair<std::string, std::uint64_t>> most_evicted(std::size_t n) const {
    std::vector<std::pair<std::string, std::uint64_t>> out;
    for (std::size_t k = 0; k < names_.size(); ++k) {
      if (evicted_[k] > 0) out.emplace_back(names_[k], evicted_[k]);
    }
    std::sort(out.begin(), out.end(),
              [](const auto& a, const auto& b) { return a.second > b.second; });
    if (out.size() > n) out.resize(n);
    return out;
  }

 protected:
  // Candidates are resident and unpinned, never empty. This policy never refuses: a
  // prefetch may push out anything with less credit than what it brings.
  std::optional<std::size_t> do_choose_victim(std::span<const xlshare::TensorKey> candidates,
                                              xlshare::TensorKey, bool) override {
    std::size_t best = 0;
    for (std::size_t i = 1; i < candidates.size(); ++i) {
      if (credit_[candidates[i]] < credit_[candidates[best]]) best = i;
    }
    inflation_ = std::max(inflation_, credit_[candidates[best]]);
    ++evicted_[candidates[best]];
    return best;
  }
  void do_on_insert(xlshare::TensorKey key) override { refresh(key); }
  void do_on_access(xlshare::TensorKey key) override { refresh(key); }

 private:
  void refresh(xlshare::TensorKey key) {
    const double bytes = static_cast<double>(std::max<std::uint64_t>(bytes_.at(key), 1));
    credit_[key] = inflation_ + (latency_bytes_ + bytes) / bytes;
  }

  std::vector<std::uint64_t> bytes_;
  std::vector<std::string> names_;
  double latency_bytes_;
  std::vector<double> credit_;
  std::vector<std::uint64_t> evicted_;
  double inflation_ = 0.0;
};

}  // namespace example
