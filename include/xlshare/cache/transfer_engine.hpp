// TransferEngine: moves tensors from the pool into a DeviceCache on its own threads — the
// copy engine of a GPU.
//
// A request is one tensor; it is copied in chunks (`chunk_bytes`), and between chunks a
// prefetch yields to any waiting demand fetch, so compute never queues behind the
// prefetcher. Each chunk is read over the pool's backend (the emulated link where there
// is one). Faults are handled as the fault model of docs/design.md says:
//   * a transient error is retried with exponential backoff (`max_retries`, then the
//     replica, then failure);
//   * a poisoned range or an offline device goes to the replica pool at once (an offline
//     primary is remembered: later requests go straight to the replica);
//   * with `verify_checksums`, a tensor whose bytes do not match the catalog's XXH3 is
//     re-read (`max_rereads`), then read from the replica; never delivered wrong.
// A request that still fails completes as failed: the cache entry goes back to absent and
// failure_reason() says why.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <mutex>
#include <nlohmann/json_fwd.hpp>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "xlshare/cache/device_cache.hpp"
#include "xlshare/memory/pool.hpp"

namespace xlshare {

struct TransferConfig {
  /// Copy threads. Default 2.
  unsigned threads = 2;
  /// Bytes per chunk; a prefetch can be overtaken at chunk boundaries. Default 4 MiB.
  std::uint64_t chunk_bytes = 4u << 20;
  /// Check every tensor against its catalog checksum on arrival. Default true.
  bool verify_checksums = true;
  /// Retries of a transient error before giving up on a pool. Default 8.
  unsigned max_retries = 8;
  /// First backoff after a transient error, doubled each retry up to backoff_max_ns.
  /// Defaults 10 µs and 2 ms.
  std::uint64_t backoff_initial_ns = 10'000;
  std::uint64_t backoff_max_ns = 2'000'000;
  /// Re-reads of a tensor whose checksum does not match before trying the replica.
  /// Default 2.
  unsigned max_rereads = 2;
};

/// Where tensor k lives: in the primary pool, and optionally in a replica pool.
struct TensorSource {
  TensorInfo primary;
  std::optional<TensorInfo> replica;
};

/// A snapshot of an engine's counters.
struct TransferStats {
  std::uint64_t requests_demand = 0;
  std::uint64_t requests_prefetch = 0;
  std::uint64_t completed = 0;
  std::uint64_t failed = 0;
  std::uint64_t link_bytes = 0;   ///< bytes read over the link (re-reads included)
  std::uint64_t busy_ns = 0;      ///< wall time with at least one transfer in progress
  std::uint64_t transfer_ns = 0;  ///< request durations summed over threads
  std::uint64_t retries = 0;      ///< transient errors retried
  std::uint64_t checksum_mismatches = 0;
  std::uint64_t rereads = 0;
  std::uint64_t failovers = 0;    ///< chunks or tensors served by the replica
  std::uint64_t preemptions = 0;  ///< prefetches that yielded to a demand fetch
  /// link_bytes / busy_ns: the rate the link delivered while it was in use.
  double link_gbps() const noexcept {
    return busy_ns ? static_cast<double>(link_bytes) / static_cast<double>(busy_ns) : 0.0;
  }
};
/// Every counter, and "link_gbps".
void to_json(nlohmann::json& j, const TransferStats& s);

/// What a Prefetcher asks of a copy engine. TransferEngine moves bytes on its threads; the
/// planner's VirtualTransfers schedule the same requests on a VirtualClock and move none.
class Transfers {
 public:
  virtual ~Transfers() = default;
  /// Starts a prefetch of `key` if the cache agrees; false when it is present, in flight
  /// or there is no room.
  virtual bool prefetch(TensorKey key) = 0;
  /// Starts a demand fetch of `key` (waits for cache room) unless it is present or in
  /// flight; it goes ahead of every prefetch.
  virtual void demand(TensorKey key) = 0;
  /// Why the last transfer of `key` failed (empty when it did not).
  virtual std::string failure_reason(TensorKey key) const = 0;
  virtual TransferStats stats() const noexcept = 0;
};

class TransferEngine final : public Transfers {
 public:
  /// `sources[k]` says where tensor key k lives. `replica` may be null.
  /// @throws ConfigError when sources and cache disagree or the config is impossible.
  TransferEngine(Pool& primary, Pool* replica, std::vector<TensorSource> sources,
                 DeviceCache& cache, TransferConfig config = {});
  ~TransferEngine() override;
  TransferEngine(const TransferEngine&) = delete;
  TransferEngine& operator=(const TransferEngine&) = delete;

  bool prefetch(TensorKey key) override;
  void demand(TensorKey key) override;
  /// Waits until no request is queued or running (and every finished one has reached the
  /// cache).
  void wait_idle();

  std::string failure_reason(TensorKey key) const override;
  TransferStats stats() const noexcept override;
  const TransferConfig& config() const noexcept { return config_; }
  /// Sends every later request straight to the replica (as if the primary were offline).
  void fail_over() noexcept { primary_down_.store(true); }

 private:
  struct Request {
    TensorKey key;
    FetchKind kind;
    std::span<std::byte> buffer;
    std::uint64_t done_bytes = 0;
    std::uint64_t checked_bytes = 0;  // verified tile by tile, as the chunks land
    std::uint64_t start_ns = 0;
    bool on_replica = false;
    unsigned rereads = 0;
  };
  void run() noexcept;
  // Reads one chunk with retries and failover. False: give up (reason set).
  bool read_chunk(Request& r, std::uint64_t offset, std::span<std::byte> dst);
  void finish(Request& r, bool ok, std::string reason = {});
  void mark_busy(bool starting) noexcept;

  Pool& primary_;
  Pool* replica_;
  std::vector<TensorSource> sources_;
  DeviceCache& cache_;
  TransferConfig config_;
  std::atomic<bool> primary_down_{false};

  mutable std::mutex mu_;
  std::condition_variable work_;
  std::condition_variable idle_;
  std::deque<Request> demand_queue_, prefetch_queue_;
  unsigned running_ = 0;
  bool stopping_ = false;
  std::vector<std::string> failure_reasons_;
  std::uint64_t busy_since_ns_ = 0;
  TransferStats stats_;
  std::vector<std::thread> threads_;
};

}  // namespace xlshare
