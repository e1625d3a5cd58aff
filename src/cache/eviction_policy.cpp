#include "xlshare/cache/eviction_policy.hpp"

#include <fmt/format.h>

#include <algorithm>

#include "xlshare/error.hpp"

namespace xlshare {
namespace {

// Records an event (a use, an insert) of `key` at the next tick of `clock`.
void stamp(std::vector<std::uint64_t>& stamps, std::uint64_t& clock, TensorKey key) {
  if (key >= stamps.size()) stamps.resize(std::size_t{key} + 1, 0);
  stamps[key] = ++clock;
}

// The key's stamp; 0 (the oldest) when it has none.
std::uint64_t stamp_of(const std::vector<std::uint64_t>& stamps, TensorKey key) noexcept {
  return key < stamps.size() ? stamps[key] : 0;
}

// The candidate with the oldest stamp.
std::size_t oldest(std::span<const TensorKey> candidates,
                   const std::vector<std::uint64_t>& stamps) noexcept {
  std::size_t best = 0;
  for (std::size_t i = 1; i < candidates.size(); ++i) {
    if (stamp_of(stamps, candidates[i]) < stamp_of(stamps, candidates[best])) best = i;
  }
  return best;
}

}  // namespace

void EvictionPolicy::note_error(const char* what) noexcept {
  failed_.store(true, std::memory_order_release);
  if (!error_.empty()) return;
  try {
    error_ = fmt::format("eviction policy '{}' threw: {}", name(), what);
  } catch (...) {
    // No memory for the message: the fallback below still keeps the cache consistent.
  }
}

std::optional<std::size_t> EvictionPolicy::choose_victim(std::span<const TensorKey> candidates,
                                                         TensorKey incoming,
                                                         bool may_refuse) noexcept {
  if (candidates.empty()) return std::nullopt;
  std::optional<std::size_t> choice;
  guard([&] { choice = do_choose_victim(candidates, incoming, may_refuse); });
  if ((choice && *choice >= candidates.size()) || (!choice && !may_refuse)) {
    ++stats_.invalid_choices;  // corrected below; the conformance suite holds policies to 0
    if (choice) choice.reset();
  }
  if (!choice) {
    if (may_refuse) {
      ++stats_.refusals;
      return std::nullopt;
    }
    choice = 0;  // a policy may not refuse compute
  }
  ++stats_.victims_chosen;
  return choice;
}

// --- LRU -------------------------------------------------------------------------------

void LruPolicy::touch(TensorKey key) { stamp(last_use_, clock_, key); }

std::optional<std::size_t> LruPolicy::do_choose_victim(std::span<const TensorKey> candidates,
                                                       TensorKey, bool) {
  return oldest(candidates, last_use_);
}

// --- FIFO ------------------------------------------------------------------------------

void FifoPolicy::do_on_insert(TensorKey key) { stamp(inserted_, clock_, key); }

std::optional<std::size_t> FifoPolicy::do_choose_victim(std::span<const TensorKey> candidates,
                                                        TensorKey, bool) {
  return oldest(candidates, inserted_);
}

// --- schedule-aware (Belady) -----------------------------------------------------------

ScheduleAwarePolicy::ScheduleAwarePolicy(std::vector<TensorKey> trace, bool cyclic)
    : trace_(std::move(trace)), cyclic_(cyclic) {
  if (trace_.empty()) throw ConfigError("the schedule-aware eviction policy needs the schedule");
  for (std::uint64_t i = 0; i < trace_.size(); ++i) {
    const TensorKey k = trace_[i];
    if (k >= occurrences_.size()) occurrences_.resize(std::size_t{k} + 1);
    occurrences_[k].push_back(i);
  }
}

std::uint64_t ScheduleAwarePolicy::next_use_distance(TensorKey key) const noexcept {
  if (key >= occurrences_.size() || occurrences_[key].empty()) return UINT64_MAX;
  const auto& occ = occurrences_[key];
  const std::uint64_t n = trace_.size();
  if (!cyclic_ && cycle_ > 0) return UINT64_MAX;  // the one pass is over
  auto it = std::lower_bound(occ.begin(), occ.end(), position_);
  if (it != occ.end()) return *it - position_;
  if (!cyclic_) return UINT64_MAX;
  return n - position_ + occ.front();
}

void ScheduleAwarePolicy::do_on_access(TensorKey key) {
  // Move to just after this access: the next occurrence of `key` at or after the current
  // position (wrapping for a cyclic schedule). An access the schedule does not know
  // leaves the position alone.
  if (key >= occurrences_.size() || occurrences_[key].empty()) return;
  const auto& occ = occurrences_[key];
  auto it = std::lower_bound(occ.begin(), occ.end(), position_);
  std::uint64_t at;
  if (it != occ.end()) {
    at = *it;
  } else if (cyclic_) {
    at = occ.front();
    ++cycle_;
  } else {
    return;
  }
  position_ = at + 1;
  if (position_ == trace_.size()) {
    position_ = 0;
    ++cycle_;
  }
}

std::optional<std::size_t> ScheduleAwarePolicy::do_choose_victim(
    std::span<const TensorKey> candidates, TensorKey incoming, bool may_refuse) {
  std::size_t best = 0;
  std::uint64_t farthest = 0;
  for (std::size_t i = 0; i < candidates.size(); ++i) {
    const std::uint64_t d = next_use_distance(candidates[i]);
    if (i == 0 || d > farthest) {
      farthest = d;
      best = i;
    }
  }
  // A prefetch must not push out something needed sooner than what it brings in.
  if (may_refuse && farthest <= next_use_distance(incoming)) return std::nullopt;
  return best;
}

// --- fixed set ---------------------------------------------------------------------------

FixedSetPolicy::FixedSetPolicy(std::span<const TensorKey> keep) {
  for (TensorKey k : keep) {
    if (k >= keep_.size()) keep_.resize(std::size_t{k} + 1, false);
    keep_[k] = true;
  }
}

void FixedSetPolicy::touch(TensorKey key) { stamp(last_use_, clock_, key); }

std::optional<std::size_t> FixedSetPolicy::do_choose_victim(std::span<const TensorKey> candidates,
                                                            TensorKey, bool may_refuse) {
  // The least recently used key outside the set; a kept one only for compute, and only
  // when every candidate is kept.
  std::optional<std::size_t> best, best_kept;
  std::uint64_t oldest = UINT64_MAX, oldest_kept = UINT64_MAX;
  for (std::size_t i = 0; i < candidates.size(); ++i) {
    const TensorKey k = candidates[i];
    const std::uint64_t t = stamp_of(last_use_, k);
    if (kept(k)) {
      if (t < oldest_kept) oldest_kept = t, best_kept = i;
    } else if (t < oldest) {
      oldest = t, best = i;
    }
  }
  if (best) return best;
  if (may_refuse) return std::nullopt;
  return best_kept;
}

std::unique_ptr<EvictionPolicy> make_eviction_policy(std::string_view name,
                                                     std::vector<TensorKey> trace, bool cyclic,
                                                     std::span<const TensorKey> keep) {
  if (name == "lru") return std::make_unique<LruPolicy>();
  if (name == "fifo") return std::make_unique<FifoPolicy>();
  if (name == "schedule") return std::make_unique<ScheduleAwarePolicy>(std::move(trace), cyclic);
  if (name == "fixed") return std::make_unique<FixedSetPolicy>(keep);
  throw ConfigError(
      fmt::format("unknown eviction policy '{}'; known: lru, fifo, schedule, fixed", name));
}

}  // namespace xlshare
