// The measured figures of docs/design.md. A worker keeps running totals (Counters); every figure
// is derived from two snapshots of them by one function (figures_between), so a request's
// figures, a worker's and a benchmark's share these names and these definitions.
#pragma once

#include <cstdint>
#include <nlohmann/json_fwd.hpp>
#include <string>

namespace xlshare {

struct Figures {
  std::uint64_t acquires = 0;  ///< tensor acquisitions by compute
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
  std::uint64_t retries = 0;    ///< transient faults retried
  std::uint64_t failovers = 0;  ///< reads served by the replica pool
  std::uint64_t checksum_mismatches = 0;

  std::string to_json() const;
};
/// {"acquires": …, "ready_rate": …, …}: every field by its name.
void to_json(nlohmann::json& j, const Figures& f);

/// Running totals of one worker (or one cache, transfer engine and prefetcher).
struct Counters {
  std::uint64_t acquires = 0;  ///< tensor acquisitions by compute
  std::uint64_t ready = 0;     ///< ... that found the tensor resident and complete
  std::uint64_t reused = 0;    ///< ... served by bytes resident from an earlier use
  std::uint64_t stall_ns = 0;  ///< time compute waited for tensors
  std::uint64_t busy_ns = 0;   ///< time the link was busy
  std::uint64_t link_bytes = 0;
  std::uint64_t bytes_prefetched = 0;
  std::uint64_t bytes_prefetched_used = 0;  ///< prefetched bytes acquired before eviction
  std::uint64_t retries = 0;
  std::uint64_t failovers = 0;
  std::uint64_t checksum_mismatches = 0;
};
void to_json(nlohmann::json& j, const Counters& c);

/// Every figure over the window between two snapshots (`before` = {}: since the start).
/// With no acquisition in the window ready_rate is 1 (nothing waited) and reuse_rate 0
/// (nothing was served again); with no link time overlap is 1 (nothing to hide); with
/// nothing prefetched prefetch_accuracy is 0. prefetch_accuracy is capped at 1: bytes
/// prefetched before a window and used in it would push one window's ratio above.
Figures figures_between(const Counters& before, const Counters& after) noexcept;

}  // namespace xlshare
