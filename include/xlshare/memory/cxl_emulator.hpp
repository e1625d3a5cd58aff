// CxlEmulator: a MemoryBackend decorator that makes reads behave like transfers over a CXL
// link — latency, bandwidth, a fixed per-transfer overhead, ONE link shared by every process
// attached to the pool, and injected faults.
//
// Timing model (a pure function, `plan_chunk`): the link is one serial resource. A transfer
// of B bytes is cut into chunks; each chunk occupies the link for bytes / bandwidth (plus the
// per-transfer overhead on the first chunk), starting when both the reader and the link are
// ready. A transfer is usable `latency_ns` after its last chunk leaves the link (latency is
// pipelined: it does not occupy the link). Link time is reserved with a compare-and-swap on
// LinkState::link_free_ns in the pool's shared link area, so N readers in any number of
// processes together never exceed the configured bandwidth, and two readers each get half.
//
// Real time: each chunk's bytes are really copied from the inner backend, then the reader
// waits until the chunk's reserved end. If the copy itself takes longer than the emulated
// time, the host cannot emulate the configured link: such chunks are counted (`late_chunks`)
// and a warning says so once, at construction, when the configured bandwidth exceeds what
// this host measured it can copy.
//
// Faults are deterministic under `FaultConfig::seed`: the n-th transfer of an emulator
// instance decides from hash(seed, n) whether it fails transiently or has one bit flipped.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <nlohmann/json_fwd.hpp>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "xlshare/memory/clock.hpp"
#include "xlshare/memory/link_state.hpp"
#include "xlshare/memory/memory_backend.hpp"

namespace xlshare {

/// What one emulated link does. All fields default to an ideal link (no pacing).
struct LinkParams {
  /// Link bandwidth in GB/s (1e9 bytes per second; 1 GB/s is one byte per ns).
  /// 0 means unlimited. Default 0.
  double bandwidth_gbps = 0.0;
  /// Latency of a transfer in ns: from its last byte leaving the link to the data being
  /// usable. Pipelined (does not occupy the link). Default 0.
  std::uint64_t latency_ns = 0;
  /// Fixed link occupancy per transfer in ns (request set-up, DMA descriptor). Default 0.
  std::uint64_t overhead_ns = 0;
  /// Link time is reserved in chunks of this many bytes, so that concurrent readers
  /// interleave instead of one waiting for another's whole transfer. Default 256 KiB.
  std::uint64_t chunk_bytes = 256 * 1024;
};

/// A named LinkParams with the source its numbers come from (see docs/emulator.md).
struct LinkPreset {
  std::string_view name;
  LinkParams params;
  std::string_view description;
};

/// The built-in presets: none, cxl-x8, cxl-x16, cxl-switched.
std::span<const LinkPreset> link_presets() noexcept;
/// The preset called `name`. @throws ConfigError listing the known names.
LinkParams link_preset(std::string_view name);

/// When one chunk of a transfer occupies the link and when it is usable.
struct ChunkTiming {
  std::uint64_t start_ns = 0;      ///< the chunk starts on the link
  std::uint64_t link_free_ns = 0;  ///< the chunk leaves the link (the link's next free time)
  std::uint64_t complete_ns = 0;   ///< the chunk is usable (link_free_ns + latency)
};

/// The timing model: a chunk of `bytes` requested at `now_ns` on a link free from
/// `link_free_ns`. `first_chunk` adds the per-transfer overhead.
constexpr ChunkTiming plan_chunk(const LinkParams& p, std::uint64_t now_ns,
                                 std::uint64_t link_free_ns, std::uint64_t bytes,
                                 bool first_chunk) noexcept {
  ChunkTiming t;
  t.start_ns = now_ns > link_free_ns ? now_ns : link_free_ns;
  std::uint64_t occupancy_ns = first_chunk ? p.overhead_ns : 0;
  if (p.bandwidth_gbps > 0.0) {
    // bytes / (GB/s) = ns. Round up so that no chunk is free.
    const double ns = static_cast<double>(bytes) / p.bandwidth_gbps;
    occupancy_ns += static_cast<std::uint64_t>(ns) +
                    (ns > static_cast<double>(static_cast<std::uint64_t>(ns)) ? 1 : 0);
  }
  t.link_free_ns = t.start_ns + occupancy_ns;
  t.complete_ns = t.link_free_ns + p.latency_ns;
  return t;
}

/// Reserves link time for one chunk atomically (CAS on link.link_free_ns) and accounts the
/// occupancy in link.busy_ns_total. A stored link_free_ns more than kMaxLinkAheadNs after
/// `now_ns` came from another clock: it is taken as `now_ns` and counted in
/// link.clock_clamps_total, so no reader ever waits on a time it cannot reach.
ChunkTiming reserve_chunk(LinkState& link, const LinkParams& p, std::uint64_t now_ns,
                          std::uint64_t bytes, bool first_chunk) noexcept;

/// A byte range of the backend.
struct ByteRange {
  std::uint64_t offset_bytes = 0;
  std::uint64_t length_bytes = 0;
};

/// Faults to inject. All default to none.
struct FaultConfig {
  /// Seed of every random decision. Default 0.
  std::uint64_t seed = 0;
  /// Probability per transfer that it fails with ReadStatus::kTransientError. Default 0.
  double transient_error_rate = 0.0;
  /// Probability per transfer that one bit of the delivered bytes is flipped silently.
  double bit_flip_rate = 0.0;
  /// Backend ranges that hold poisoned memory: a read overlapping one returns kPoisoned.
  std::vector<ByteRange> poisoned_ranges;
  /// The device goes offline when this many transfers have been attempted (0: never).
  std::uint64_t offline_after_transfers = 0;
};

/// Everything the emulator needs; defaults give an ideal link with no faults.
struct EmulatorOptions {
  LinkParams link;
  FaultConfig faults;
  /// The clock of the timing model; nullptr means MonotonicClock::instance(). Not owned.
  Clock* clock = nullptr;
  /// Measure this host's copy rate once and warn if the link is configured faster.
  /// Default true; tests with a ManualClock turn it off.
  bool check_host_rate = true;
};

/// A snapshot of one emulator's counters.
struct EmulatorStats {
  std::uint64_t transfers = 0;         ///< read calls that delivered bytes
  std::uint64_t bytes = 0;             ///< bytes delivered
  std::uint64_t read_ns = 0;           ///< wall time spent inside those read calls, summed
  std::uint64_t transient_errors = 0;  ///< injected transient failures
  std::uint64_t poisoned_reads = 0;    ///< reads refused because they touched poison
  std::uint64_t bit_flips = 0;         ///< silent single-bit corruptions injected
  std::uint64_t offline_reads = 0;     ///< reads refused because the device is offline
  std::uint64_t late_chunks = 0;       ///< chunks whose real copy outlasted the emulated time
  double configured_gbps = 0.0;        ///< LinkParams::bandwidth_gbps (0: unlimited)
  double achieved_gbps = 0.0;          ///< bytes / read_ns: the rate one reader saw on average
  double host_copy_gbps = 0.0;         ///< this host's single-thread copy rate (0: not measured)
  /// The same fields as a JSON object.
  std::string to_json() const;
};
void to_json(nlohmann::json& j, const EmulatorStats& s);

class CxlEmulator final : public MemoryBackend {
 public:
  /// Wraps `inner`. Until a Pool binds the shared link, the emulator uses a private one.
  /// @throws ConfigError for a negative or non-finite rate, or a zero chunk size.
  CxlEmulator(std::unique_ptr<MemoryBackend> inner, EmulatorOptions options);
  ~CxlEmulator() override;

  const std::string& uri() const noexcept override { return inner_->uri(); }
  std::uint64_t size_bytes() const noexcept override { return inner_->size_bytes(); }
  std::uint64_t alignment_bytes() const noexcept override { return inner_->alignment_bytes(); }
  bool is_host() const noexcept override { return inner_->is_host(); }
  bool maps_data() const noexcept override { return inner_->maps_data(); }
  bool is_writable() const noexcept override { return inner_->is_writable(); }
  Mapping map(std::uint64_t offset_bytes, std::uint64_t length_bytes, Access access) override {
    return inner_->map(offset_bytes, length_bytes, access);
  }
  void bind_link_state(LinkState* link) noexcept override;

  /// Takes the device offline (every read returns kOffline) or brings it back.
  void set_offline(bool offline) noexcept { offline_.store(offline, std::memory_order_release); }
  bool is_offline() const noexcept { return offline_.load(std::memory_order_acquire); }

  EmulatorStats stats() const noexcept;
  const LinkParams& link_params() const noexcept { return options_.link; }
  /// The clock of the timing model.
  Clock& clock() const noexcept { return *clock_; }
  /// Whether [offset, offset + length) touches a poisoned range (for readers that read the
  /// mapping in place and so never pass through read()).
  bool poisoned(std::uint64_t offset_bytes, std::uint64_t length_bytes) const noexcept;
  /// The shared link (mutable: in-place readers reserve time on it).
  LinkState& shared_link() noexcept { return *link_; }
  const FaultConfig& fault_config() const noexcept { return options_.faults; }
  /// The link this emulator reserves time on (the pool's, once bound).
  const LinkState& link_state() const noexcept { return *link_; }
  MemoryBackend& inner() noexcept { return *inner_; }

  /// This host's single-thread memcpy rate in GB/s, measured once per process (~30 ms).
  static double host_copy_gbps();

 protected:
  ReadStatus do_read(std::uint64_t offset_bytes, std::span<std::byte> dst) noexcept override;

 private:
  std::unique_ptr<MemoryBackend> inner_;
  EmulatorOptions options_;
  Clock* clock_;
  LinkState private_link_{};
  LinkState* link_;
  double host_copy_gbps_ = 0.0;
  std::atomic<bool> offline_{false};
  std::atomic<std::uint64_t> sequence_{0};
  std::atomic<std::uint64_t> transfers_{0}, bytes_{0}, read_ns_{0}, transient_errors_{0},
      poisoned_reads_{0}, bit_flips_{0}, offline_reads_{0}, late_chunks_{0};
};

}  // namespace xlshare
