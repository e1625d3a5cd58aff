// LinkPacer: the emulated link for a reader that does not copy (the in-place placement).
//
// A CPU worker reads CXL memory in place, with loads; nothing is copied. The emulated link
// must still cost what the real one would: reading a piece in place reserves its bytes on
// the pool's shared link exactly as a copy of that size would (the same chunks, the same
// compare-and-swap on LinkState::link_free_ns, so N processes contend as in copy mode), and
// compute may not use the piece before the reservation's completion time. A reservation
// made ahead (prefetch in this placement) costs no stall once its time has passed.
//
// What this models: bandwidth, contention between every attached process, the per-transfer
// overhead and a latency per piece. What it cannot: a latency per load (real CXL adds
// ~250 ns to every cache-line miss; here bytes come from DRAM at DRAM latency once the
// reservation is over), and prefetchers or caches of the CPU between the link and compute.
#pragma once

#include <cstdint>

#include "xlshare/memory/clock.hpp"
#include "xlshare/memory/cxl_emulator.hpp"
#include "xlshare/memory/link_state.hpp"

namespace xlshare {

/// Reserves link time for reads that copy nothing. Thread-safe (state is in LinkState).
class LinkPacer {
 public:
  /// Paces on `link` (the pool's, shared by every attached process) with `params`, on `clock`.
  LinkPacer(LinkState& link, const LinkParams& params, Clock& clock) noexcept
      : link_(&link), params_(params), clock_(&clock) {}

  /// Reserves `bytes` on the link from now, chunk by chunk as a copy of that size would, and
  /// accounts them in the link's counters. Returns when they are usable (ns on the clock).
  std::uint64_t reserve(std::uint64_t bytes) noexcept;
  /// A small demand read (a few embedding rows) that the link arbitrates ahead of bulk
  /// transfers queued earlier, as a fabric that interleaves requests does: its bytes still
  /// occupy the link (everything queued moves back by their time), but it completes after
  /// its own occupancy and latency from now, not behind the queue. Returns when usable.
  std::uint64_t reserve_urgent(std::uint64_t bytes) noexcept;
  /// Waits until `complete_ns`; returns how long it waited (the stall), in ns.
  std::uint64_t wait_until(std::uint64_t complete_ns) noexcept;

  Clock& clock() const noexcept { return *clock_; }
  const LinkParams& params() const noexcept { return params_; }
  /// Whether reservations cost time at all (a link with no bandwidth limit, latency or
  /// overhead is not paced).
  bool paced() const noexcept {
    return params_.bandwidth_gbps > 0.0 || params_.latency_ns > 0 || params_.overhead_ns > 0;
  }

 private:
  LinkState* link_;
  LinkParams params_;
  Clock* clock_;
};

}  // namespace xlshare
