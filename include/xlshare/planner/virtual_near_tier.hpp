// The near tier on a VirtualClock: N simulated workers, each with the real DeviceCache (on
// UnbackedMemory), the real EvictionPolicy and PrefetchPolicy (any user subclass), the real
// Prefetcher, and VirtualTransfers over one VirtualLink they share. Compute is a time per
// step and per tensor; a worker holds what it acquires while it computes with it.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "xlshare/cache/device_cache.hpp"
#include "xlshare/cache/eviction_policy.hpp"
#include "xlshare/cache/transfer_engine.hpp"
#include "xlshare/figures.hpp"
#include "xlshare/memory/cxl_emulator.hpp"
#include "xlshare/prefetch/prefetch_policy.hpp"
#include "xlshare/prefetch/prefetcher.hpp"
#include "xlshare/prefetch/schedule.hpp"

namespace xlshare {

/// One simulated worker. Compute runs each pass of the schedule: for each step,
/// Prefetcher::begin_step, step_ns, then every lookup key and every key of the step in order:
/// acquire, key_ns, release; then end_step.
struct VirtualWorkerSpec {
  const Schedule* schedule = nullptr;  ///< not owned; outlives the run
  std::vector<std::uint64_t> key_bytes;
  /// Per key: the tile a verifying read is made of (TensorInfo::tile_bytes); empty or 0:
  /// reads of chunk_bytes.
  std::vector<std::uint64_t> key_tile_bytes;
  std::uint64_t cache_bytes = 0;
  std::function<std::unique_ptr<EvictionPolicy>()> eviction;
  std::function<std::unique_ptr<PrefetchPolicy>()> prefetch;
  StepResidency residency = StepResidency::kOneTensorAtATime;
  unsigned copy_threads = 2;             ///< TransferConfig::threads
  std::uint64_t chunk_bytes = 4u << 20;  ///< TransferConfig::chunk_bytes
  double copy_gbps = 0.0;                ///< per channel cap (0: none), see VirtualTransfers
  double copy_gbps_total = 0.0;          ///< all channels together (0: none)
  std::size_t passes = 1;
  /// Compute before a step's first tensor (norms, attention over the KV cache). Optional.
  std::function<std::uint64_t(std::size_t pass, std::size_t step)> step_ns;
  /// Compute with tensor `key`. Optional (0).
  std::function<std::uint64_t(std::size_t pass, TensorKey key)> key_ns;
  /// Keys a step reads outside the schedule, before its own (the embedding pieces a lookup
  /// needs). Optional.
  std::function<std::vector<TensorKey>(std::size_t pass, std::size_t step)> lookups;
};

struct VirtualWorkerResult {
  Counters counters;  ///< as Prefetcher::counters(): figures_between({}, counters)
  CacheStats cache;
  TransferStats transfers;
  PrefetchStats prefetch;
  EvictionStats eviction;
  std::vector<std::uint64_t> pass_end_ns;  ///< when each pass ended (the run starts at 0)
  std::vector<Counters> pass_counters;     ///< the counters at the end of each pass
};

struct VirtualRunResult {
  std::vector<VirtualWorkerResult> workers;
  std::uint64_t end_ns = 0;        ///< the last worker's last pass
  std::uint64_t link_busy_ns = 0;  ///< the shared link's (or the only port's) occupancy
  std::uint64_t link_bytes = 0;
  std::uint64_t events = 0;  ///< what the VirtualClock processed
};

/// Runs `workers` together on a fresh VirtualClock: every port is `port`; `shared_gbps` > 0
/// adds one link they all share. Deterministic: the same inputs give the same result.
/// @throws ConfigError for an impossible set-up (a step that cannot fit, a missing policy),
/// Error for a deadlock, and what a policy throws (PolicyError).
VirtualRunResult run_virtual_workers(const std::vector<VirtualWorkerSpec>& workers,
                                     const LinkParams& port, double shared_gbps = 0.0);

}  // namespace xlshare
