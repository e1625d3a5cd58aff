// The measured figures of DESIGN.md, as one plain snapshot. Every benchmark reports these
// names with these definitions.
#pragma once

#include <cstdint>
#include <string>

namespace xlshare {

struct Figures {
  std::uint64_t acquires = 0;     ///< tensor acquisitions by compute
  /// Acquisitions that found the tensor resident and complete (no wait).
  double ready_rate = 0.0;
  /// Acquisitions served by bytes already resident from an earlier use (no link transfer
  /// since): what the cache saves.
  double reuse_rate = 0.0;
  /// Prefetched bytes acquired before eviction / prefetched bytes (0 when nothing was
  /// prefetched).
  double prefetch_accuracy = 0.0;
  /// Time compute waited for tensors, in ms.
  double stall_ms = 0.0;
  /// 1 - stall / transfer time: the share of link time hidden behind compute.
  double overlap = 0.0;
  /// Bytes moved over the link, and the rate while it was busy (GB/s = 1e9 B/s).
  std::uint64_t link_bytes = 0;
  double link_gbps = 0.0;
  /// Time the link was busy, in ms (the transfer time of `overlap`).
  double transfer_ms = 0.0;
  std::uint64_t retries = 0;        ///< transient faults retried
  std::uint64_t failovers = 0;      ///< reads served by the replica pool
  std::uint64_t checksum_mismatches = 0;

  std::string to_json() const;
};

}  // namespace xlshare
