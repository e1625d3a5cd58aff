#include "xlshare/figures.hpp"

#include <nlohmann/json.hpp>

#include <algorithm>

namespace xlshare {

Figures figures_between(const Counters& a, const Counters& b) noexcept {
  Figures f;
  f.acquires = b.acquires - a.acquires;
  const auto n = static_cast<double>(f.acquires);
  f.ready_rate = f.acquires ? static_cast<double>(b.ready - a.ready) / n : 1.0;
  f.reuse_rate = f.acquires ? static_cast<double>(b.reused - a.reused) / n : 0.0;
  const std::uint64_t prefetched = b.bytes_prefetched - a.bytes_prefetched;
  f.prefetch_accuracy =
      prefetched
          ? std::min(1.0, static_cast<double>(b.bytes_prefetched_used - a.bytes_prefetched_used) /
                              static_cast<double>(prefetched))
          : 0.0;
  const auto stall = static_cast<double>(b.stall_ns - a.stall_ns);
  const auto busy = static_cast<double>(b.busy_ns - a.busy_ns);
  f.stall_ms = stall / 1e6;
  f.transfer_ms = busy / 1e6;
  f.overlap = busy > 0 ? std::clamp(1.0 - stall / busy, 0.0, 1.0) : 1.0;
  f.link_bytes = b.link_bytes - a.link_bytes;
  f.link_gbps = busy > 0 ? static_cast<double>(f.link_bytes) / busy : 0.0;  // bytes/ns = GB/s
  f.retries = b.retries - a.retries;
  f.failovers = b.failovers - a.failovers;
  f.checksum_mismatches = b.checksum_mismatches - a.checksum_mismatches;
  return f;
}

}  // namespace xlshare
