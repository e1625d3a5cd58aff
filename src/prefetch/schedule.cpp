#include "xlshare/prefetch/schedule.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <charconv>
#include <map>

#include "xlshare/error.hpp"

namespace xlshare {

Schedule::Schedule(std::vector<ScheduleStep> steps, bool repeats)
    : steps_(std::move(steps)), repeats_(repeats) {
  if (steps_.empty()) throw ConfigError("a schedule needs at least one step");
  bool any = false;
  for (const auto& s : steps_) any = any || !s.keys.empty();
  // A step may need nothing from the cache (the embedding lookup reads single rows), but
  // a schedule that needs nothing at all is a mistake.
  if (!any) throw ConfigError("a schedule needs at least one tensor");
}

std::size_t Schedule::next(std::size_t i) const noexcept {
  if (i + 1 < steps_.size()) return i + 1;
  return repeats_ ? 0 : steps_.size();
}

std::vector<TensorKey> Schedule::trace() const {
  std::vector<TensorKey> t;
  for (const auto& s : steps_) t.insert(t.end(), s.keys.begin(), s.keys.end());
  return t;
}

namespace {
// The keys of each step, each key in the first step that uses it only (keys without a
// size left out): how the fixed set counts what a step streams.
std::vector<std::vector<TensorKey>> keys_by_first_step(std::span<const ScheduleStep> steps,
                                                       std::size_t key_count) {
  std::vector<bool> seen(key_count, false);
  std::vector<std::vector<TensorKey>> by_step(steps.size());
  for (std::size_t s = 0; s < steps.size(); ++s) {
    for (TensorKey k : steps[s].keys) {
      if (k >= key_count || seen[k]) continue;
      seen[k] = true;
      by_step[s].push_back(k);
    }
  }
  return by_step;
}
}  // namespace

std::vector<TensorKey> Schedule::fixed_set(std::span<const std::uint64_t> key_bytes,
                                           std::uint64_t bytes) const {
  auto outside = keys_by_first_step(steps_, key_bytes.size());  // by step: largest first
  std::vector<std::uint64_t> outside_bytes(steps_.size(), 0);
  for (std::size_t s = 0; s < steps_.size(); ++s) {
    for (TensorKey k : outside[s]) outside_bytes[s] += key_bytes[k];
    std::stable_sort(outside[s].begin(), outside[s].end(),
                     [&](TensorKey a, TensorKey b) { return key_bytes[a] > key_bytes[b]; });
  }
  std::vector<TensorKey> set;
  std::uint64_t left = bytes;
  for (;;) {
    std::size_t best = steps_.size();
    for (std::size_t s = 0; s < steps_.size(); ++s) {
      const bool fits = std::any_of(outside[s].begin(), outside[s].end(),
                                    [&](TensorKey k) { return key_bytes[k] <= left; });
      if (fits && (best == steps_.size() || outside_bytes[s] > outside_bytes[best])) best = s;
    }
    if (best == steps_.size()) return set;
    auto& keys = outside[best];
    const auto it =
        std::find_if(keys.begin(), keys.end(), [&](TensorKey k) { return key_bytes[k] <= left; });
    set.push_back(*it);
    left -= key_bytes[*it];
    outside_bytes[best] -= key_bytes[*it];
    keys.erase(it);
  }
}

std::uint64_t Schedule::heaviest_step_outside(std::span<const std::uint64_t> key_bytes,
                                              std::span<const TensorKey> set) const {
  std::vector<bool> in_set(key_bytes.size(), false);
  for (TensorKey k : set) {
    if (k < in_set.size()) in_set[k] = true;
  }
  std::uint64_t heaviest = 0;
  for (const auto& keys : keys_by_first_step(steps_, key_bytes.size())) {
    std::uint64_t outside = 0;
    for (TensorKey k : keys) outside += in_set[k] ? 0 : key_bytes[k];
    heaviest = std::max(heaviest, outside);
  }
  return heaviest;
}

std::vector<TensorKey> Schedule::fixed_set_for_cache(std::span<const std::uint64_t> key_bytes,
                                                     std::uint64_t cache_bytes) const {
  for (const double room : {1.4, 1.0}) {
    for (std::uint64_t percent = 80; percent > 0; percent -= 5) {
      auto set =
          fixed_set(key_bytes, cache_bytes / 100 * percent + cache_bytes % 100 * percent / 100);
      std::uint64_t kept = 0;
      for (TensorKey k : set) kept += key_bytes[k];
      if (static_cast<double>(cache_bytes - kept) >=
          room * static_cast<double>(heaviest_step_outside(key_bytes, set))) {
        return set;
      }
    }
  }
  return {};
}

namespace {
// The N of "blk.N." or "layers.N.", or -1.
long block_index(std::string_view name) {
  for (std::string_view marker : {"blk.", "layers."}) {
    const auto at = name.find(marker);
    if (at == std::string_view::npos) continue;
    const char* begin = name.data() + at + marker.size();
    const char* end = name.data() + name.size();
    long n = -1;
    auto [p, ec] = std::from_chars(begin, end, n);
    if (ec == std::errc() && p < end && *p == '.') return n;
  }
  return -1;
}
}  // namespace

Schedule Schedule::for_transformer(std::span<const std::string> names, bool repeats) {
  std::vector<TensorKey> embedding, head;
  std::map<long, std::vector<TensorKey>> blocks;
  for (TensorKey k = 0; k < names.size(); ++k) {
    const long b = block_index(names[k]);
    if (b >= 0) {
      blocks[b].push_back(k);
    } else if (names[k].find("emb") != std::string::npos) {
      embedding.push_back(k);
    } else {
      head.push_back(k);
    }
  }
  std::vector<ScheduleStep> steps;
  if (!embedding.empty()) steps.push_back({"embedding", embedding});
  for (auto& [n, keys] : blocks) steps.push_back({fmt::format("block.{}", n), std::move(keys)});
  if (!head.empty()) steps.push_back({"head", head});
  return Schedule(std::move(steps), repeats);
}

}  // namespace xlshare
