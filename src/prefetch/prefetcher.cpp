#include "xlshare/prefetch/prefetcher.hpp"

#include <fmt/format.h>

#include <algorithm>

#include "xlshare/error.hpp"

namespace xlshare {

Prefetcher::Prefetcher(const Schedule& schedule, std::unique_ptr<PrefetchPolicy> policy,
                       Transfers& engine, DeviceCache& cache, StepResidency residency)
    : schedule_(schedule), policy_(std::move(policy)), engine_(engine), cache_(cache) {
  if (!policy_) throw ConfigError("prefetcher: no prefetch policy");
  for (const auto& step : schedule_.steps()) {
    std::uint64_t pinned = 0;
    if (residency == StepResidency::kWholeStep) {
      cache_.check_fits(step.keys, fmt::format("step '{}'", step.name));
      for (TensorKey k : step.keys) pinned += cache_.key_bytes(k);
    } else {
      for (TensorKey k : step.keys) {
        cache_.check_fits(std::span(&k, 1), fmt::format("a tensor of step '{}'", step.name));
        pinned = std::max(pinned, cache_.key_bytes(k));
      }
    }
    pinned_bytes_.push_back(pinned);
  }
  policy_->on_model_loaded(schedule_);
}

void Prefetcher::begin_step(std::size_t step) {
  // The plan may use the budget less what compute holds of the step about to run.
  const std::uint64_t pinned = step < pinned_bytes_.size() ? pinned_bytes_[step] : 0;
  const PrefetchContext ctx{schedule_, step, cache_,
                            cache_.budget_bytes() - std::min(pinned, cache_.budget_bytes())};
  std::span<const TensorKey> plan;
  call_policy([&] {
    policy_->on_step_begin(step);
    plan = policy_->plan(ctx);
  });
  for (TensorKey k : plan) {
    if (!engine_.prefetch(k)) break;  // no room now: the rest would not fit either
  }
}

void Prefetcher::throw_if_policy_failed() {
  if (!cache_.policy().failed()) return;
  std::string what = cache_.take_policy_error();
  throw PolicyError(what.empty() ? "an eviction policy hook threw (its message could not be kept)"
                                 : what);
}

DeviceCache::Lease Prefetcher::acquire(TensorKey key) {
  bool ready = false;
  // The stall includes a wait for a transfer in flight, not only for a demand fetch.
  const std::uint64_t t0 = cache_.clock().now_ns();
  auto lease = cache_.acquire(key, &ready);
  throw_if_policy_failed();
  if (lease && ready) return lease;
  for (int attempt = 0; !lease && attempt < 2; ++attempt) {
    engine_.demand(key);
    lease = cache_.acquire(key, nullptr, /*after_demand=*/true);
  }
  stall_ns_ += cache_.clock().now_ns() - t0;
  throw_if_policy_failed();
  if (!lease) {
    std::string reason = engine_.failure_reason(key);
    throw InjectedFault(reason.empty() ? fmt::format("tensor key {} could not be fetched", key)
                                       : reason);
  }
  return lease;
}

void Prefetcher::end_step(std::size_t step) {
  call_policy([&] { policy_->on_step_end(step); });
}

Counters Prefetcher::counters() const {
  const CacheStats c = cache_.stats();
  const TransferStats t = engine_.stats();
  Counters n;
  n.acquires = c.acquires;
  n.ready = c.acquires_ready;
  n.reused = c.acquires_reused;
  n.stall_ns = stall_ns_;
  n.busy_ns = t.busy_ns;
  n.link_bytes = t.link_bytes;
  n.bytes_prefetched = c.bytes_prefetched;
  n.bytes_prefetched_used = c.bytes_prefetched_used;
  n.retries = t.retries;
  n.failovers = t.failovers;
  n.checksum_mismatches = t.checksum_mismatches;
  return n;
}

Figures Prefetcher::figures() const { return figures_between({}, counters()); }

}  // namespace xlshare
