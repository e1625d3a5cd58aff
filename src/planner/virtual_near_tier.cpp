#include "xlshare/planner/virtual_near_tier.hpp"

#include <fmt/format.h>

#include "xlshare/error.hpp"
#include "xlshare/planner/virtual_clock.hpp"
#include "xlshare/planner/virtual_transfers.hpp"

namespace xlshare {
namespace {
// now + ns, saturating (a compute time near 2^64 ends the run at the end of time instead of
// wrapping to the past).
std::uint64_t later(std::uint64_t now, std::uint64_t ns) noexcept {
  return ns > UINT64_MAX - now ? UINT64_MAX : now + ns;
}
}  // namespace

VirtualRunResult run_virtual_workers(const std::vector<VirtualWorkerSpec>& workers,
                                     const LinkParams& port, double shared_gbps) {
  if (workers.empty()) throw ConfigError("virtual run: no workers");
  VirtualClock clock;
  VirtualLink link(port, shared_gbps, workers.size());
  struct Tier {
    std::unique_ptr<DeviceCache> cache;
    std::unique_ptr<VirtualTransfers> transfers;
    std::unique_ptr<Prefetcher> prefetcher;
    VirtualWorkerResult result;
  };
  std::vector<Tier> tiers(workers.size());
  std::vector<std::function<void()>> bodies;
  for (std::size_t w = 0; w < workers.size(); ++w) {
    const VirtualWorkerSpec& spec = workers[w];
    if (spec.schedule == nullptr || !spec.eviction || !spec.prefetch) {
      throw ConfigError(fmt::format("virtual run: worker {} lacks a schedule or a policy", w));
    }
    Tier& t = tiers[w];
    t.cache = std::make_unique<DeviceCache>(spec.cache_bytes, spec.key_bytes, spec.eviction(),
                                            UnbackedMemory::instance(), &clock);
    t.transfers = std::make_unique<VirtualTransfers>(clock, link, w, *t.cache, spec.copy_threads,
                                                     spec.chunk_bytes, spec.copy_gbps,
                                                     spec.key_tile_bytes, spec.copy_gbps_total);
    t.prefetcher = std::make_unique<Prefetcher>(*spec.schedule, spec.prefetch(), *t.transfers,
                                                *t.cache, spec.residency);
    bodies.emplace_back([&spec, &t, &clock] {
      const Schedule& schedule = *spec.schedule;
      for (std::size_t pass = 0; pass < spec.passes; ++pass) {
        for (std::size_t s = 0; s < schedule.size(); ++s) {
          t.prefetcher->begin_step(s);
          if (spec.step_ns) clock.sleep_until_ns(later(clock.now_ns(), spec.step_ns(pass, s)));
          auto use = [&](TensorKey k) {
            DeviceCache::Lease lease = t.prefetcher->acquire(k);
            if (spec.key_ns) clock.sleep_until_ns(later(clock.now_ns(), spec.key_ns(pass, k)));
          };
          if (spec.lookups) {
            for (TensorKey k : spec.lookups(pass, s)) use(k);
          }
          for (TensorKey k : schedule.step(s).keys) use(k);
          t.prefetcher->end_step(s);
        }
        t.result.pass_end_ns.push_back(clock.now_ns());
        t.result.pass_counters.push_back(t.prefetcher->counters());
      }
    });
  }
  clock.run(std::move(bodies));
  VirtualRunResult out;
  for (auto& t : tiers) {
    t.result.counters = t.prefetcher->counters();
    t.result.cache = t.cache->stats();
    t.result.transfers = t.transfers->stats();
    t.result.prefetch = t.prefetcher->policy().stats();
    t.result.eviction = t.cache->policy().stats();
    if (!t.result.pass_end_ns.empty())
      out.end_ns = std::max(out.end_ns, t.result.pass_end_ns.back());
    out.workers.push_back(std::move(t.result));
  }
  out.link_busy_ns = link.busy_ns();
  out.link_bytes = link.bytes();
  out.events = clock.events();
  // Tear down while the clock lives: the transfers release what is left in the caches.
  for (auto& t : tiers) {
    t.prefetcher.reset();
    t.transfers.reset();
    t.cache.reset();
  }
  return out;
}

}  // namespace xlshare
