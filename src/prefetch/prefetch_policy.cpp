#include "xlshare/prefetch/prefetch_policy.hpp"

namespace xlshare {

std::span<const TensorKey> PrefetchPolicy::plan(const PrefetchContext& ctx) {
  proposed_.clear();
  planned_.clear();
  do_plan(ctx, proposed_);
  ++stats_.plans;
  stats_.keys_proposed += proposed_.size();
  if (seen_.size() < ctx.cache.key_count()) seen_.resize(ctx.cache.key_count());
  std::uint64_t bytes = 0;
  bool over_budget = false;
  for (TensorKey k : proposed_) {
    if (k >= ctx.cache.key_count() || seen_[k]) {  // out of range, or named twice
      ++stats_.keys_dropped_invalid;
      continue;
    }
    seen_[k] = true;
    if (ctx.cache.state(k) != EntryState::kAbsent) {
      ++stats_.keys_dropped_present;
      continue;
    }
    const std::uint64_t b = ctx.cache.key_bytes(k);
    if (over_budget || bytes + b > ctx.budget_bytes) {
      over_budget = true;  // keep the order: nothing after the first key that does not fit
      ++stats_.keys_dropped_budget;
      continue;
    }
    bytes += b;
    planned_.push_back(k);
  }
  for (TensorKey k : proposed_) {
    if (k < seen_.size()) seen_[k] = false;
  }
  stats_.keys_planned += planned_.size();
  stats_.bytes_planned += bytes;
  return planned_;
}

void LookaheadPolicy::do_plan(const PrefetchContext& ctx, std::vector<TensorKey>& out) {
  if (k_ == 0) return;
  std::size_t s = ctx.step;
  for (std::size_t i = 0; i <= k_ && s < ctx.schedule.size(); ++i) {
    const auto& keys = ctx.schedule.step(s).keys;
    out.insert(out.end(), keys.begin(), keys.end());
    s = ctx.schedule.next(s);
    if (s == ctx.step) break;  // wrapped all the way round
  }
}

}  // namespace xlshare
