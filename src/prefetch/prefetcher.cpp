#include "xlshare/prefetch/prefetcher.hpp"

#include <fmt/format.h>

#include <algorithm>

#include "xlshare/error.hpp"

namespace xlshare {

Prefetcher::Prefetcher(const Schedule& schedule, std::unique_ptr<PrefetchPolicy> policy,
                       TransferEngine& engine, DeviceCache& cache, StepResidency residency)
    : schedule_(schedule), policy_(std::move(policy)), engine_(engine), cache_(cache) {
  if (!policy_) throw ConfigError("prefetcher: no prefetch policy");
  for (const auto& step : schedule_.steps()) {
    if (residency == StepResidency::kWholeStep) {
      cache_.check_fits(step.keys, fmt::format("step '{}'", step.name));
    } else {
      for (TensorKey k : step.keys) cache_.check_fits(std::span(&k, 1), fmt::format("a tensor of step '{}'", step.name));
    }
  }
  policy_->on_model_loaded(schedule_);
}

void Prefetcher::begin_step(std::size_t step) {
  policy_->on_step_begin(step);
  const PrefetchContext ctx{schedule_, step, cache_, cache_.budget_bytes()};
  for (TensorKey k : policy_->plan(ctx)) {
    if (!engine_.prefetch(k)) break;  // no room now: the rest would not fit either
  }
}

DeviceCache::Lease Prefetcher::acquire(TensorKey key) {
  bool ready = false;
  auto lease = cache_.acquire(key, &ready);
  if (lease && ready) return lease;
  const auto t0 = std::chrono::steady_clock::now();
  for (int attempt = 0; !lease && attempt < 2; ++attempt) {
    engine_.demand(key);
    lease = cache_.acquire(key, nullptr, /*after_demand=*/true);
  }
  stall_ns_ += static_cast<std::uint64_t>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - t0).count());
  if (!lease) {
    std::string reason = engine_.failure_reason(key);
    throw InjectedFault(reason.empty() ? fmt::format("tensor key {} could not be fetched", key) : reason);
  }
  return lease;
}

void Prefetcher::end_step(std::size_t step) { policy_->on_step_end(step); }

Figures Prefetcher::figures() const {
  const CacheStats c = cache_.stats();
  const TransferStats t = engine_.stats();
  Figures f;
  f.acquires = c.acquires;
  const double n = static_cast<double>(std::max<std::uint64_t>(c.acquires, 1));
  f.ready_rate = static_cast<double>(c.acquires_ready) / n;
  f.reuse_rate = static_cast<double>(c.acquires_reused) / n;
  f.prefetch_accuracy = c.bytes_prefetched ? static_cast<double>(c.bytes_prefetched_used) /
                                                 static_cast<double>(c.bytes_prefetched)
                                           : 0.0;
  f.stall_ms = static_cast<double>(stall_ns_) / 1e6;
  f.transfer_ms = static_cast<double>(t.busy_ns) / 1e6;
  f.overlap = t.busy_ns ? std::clamp(1.0 - static_cast<double>(stall_ns_) / static_cast<double>(t.busy_ns), 0.0, 1.0)
                        : 1.0;
  f.link_bytes = t.link_bytes;
  f.link_gbps = t.link_gbps();
  f.retries = t.retries;
  f.failovers = t.failovers;
  f.checksum_mismatches = t.checksum_mismatches;
  return f;
}

}  // namespace xlshare
