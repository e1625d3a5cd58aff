// VirtualTransfers: TransferEngine's scheduling on a VirtualClock, with a simulated copy.
//
// The same requests a Prefetcher gives a TransferEngine, served the same way: demand
// fetches ahead of every prefetch, `threads` copy channels, each request read in chunks of
// `chunk_bytes`, a prefetch yielding to a waiting demand fetch at a chunk boundary. A chunk
// costs what CxlEmulator::read would: its pieces of LinkParams::chunk_bytes are reserved one
// after another on the VirtualLink (plan_chunk, the emulator's timing model), the reader
// released when each leaves the link and, after the last, its latency. No bytes move: the
// cache's buffers are never touched (UnbackedMemory gives it address space only).
//
// VirtualLink: each device's port (LinkParams) and, optionally, one switch or pool link that
// every device shares (its bandwidth in GB/s). A piece occupies its port as the emulator's
// link would (plan_chunk from when the reader asks and the port is free) and the shared link
// for bytes / shared bandwidth from when the reader asks and the shared link is free; it is
// through when both have carried it (a fluid model: the shared link serves other devices
// while one port is busy). With one device and no shared link, or a shared link as fast as
// the port, this is exactly the emulator's link.
#pragma once

#include <cstdint>
#include <deque>
#include <string>
#include <vector>

#include "xlshare/cache/device_cache.hpp"
#include "xlshare/cache/local_memory.hpp"
#include "xlshare/cache/transfer_engine.hpp"
#include "xlshare/memory/cxl_emulator.hpp"
#include "xlshare/planner/virtual_clock.hpp"

namespace xlshare {

/// Address space without memory: allocate() reserves pages that are never backed (touching
/// one faults). For a simulated cache of any size.
class UnbackedMemory final : public LocalMemory {
 public:
  std::byte* allocate(std::uint64_t bytes) noexcept override;
  void deallocate(std::byte* p, std::uint64_t bytes) noexcept override;
  const char* name() const noexcept override { return "unbacked"; }
  static UnbackedMemory& instance() noexcept;
};

class VirtualLink {
 public:
  /// `devices` ports of `port` each; `shared_gbps` > 0 adds the shared link (0: none).
  VirtualLink(const LinkParams& port, double shared_gbps, std::size_t devices);
  /// Reserves `bytes` for `device` asked at `now_ns` (`first`: the per-transfer overhead).
  ChunkTiming reserve(std::size_t device, std::uint64_t now_ns, std::uint64_t bytes,
                      bool first) noexcept;
  const LinkParams& port() const noexcept { return port_; }
  double shared_gbps() const noexcept { return shared_gbps_; }
  /// Time the shared link (or, without one, device 0's port) was occupied.
  std::uint64_t busy_ns() const noexcept { return busy_ns_; }
  std::uint64_t bytes() const noexcept { return bytes_; }

 private:
  LinkParams port_;
  double shared_gbps_;
  std::vector<std::uint64_t> port_free_;
  std::uint64_t shared_free_ = 0;
  std::uint64_t busy_ns_ = 0;
  std::uint64_t bytes_ = 0;
};

class VirtualTransfers final : public Transfers {
 public:
  /// `copy_gbps` > 0 caps what one channel delivers (a host whose copy, checksum included, is
  /// slower than the link); 0: the link alone decides. `key_tile_bytes[k]` > 0: key k is
  /// verified tile by tile, so its reads are whole tiles (TransferEngine's rule).
  /// `copy_gbps_total` > 0 caps all channels together (one serial copy resource: a host
  /// whose memory system does not give each copy thread its own rate).
  /// @throws ConfigError for zero threads or chunk bytes.
  VirtualTransfers(VirtualClock& clock, VirtualLink& link, std::size_t device, DeviceCache& cache,
                   unsigned threads = 2, std::uint64_t chunk_bytes = 4u << 20,
                   double copy_gbps = 0.0, std::vector<std::uint64_t> key_tile_bytes = {},
                   double copy_gbps_total = 0.0);
  ~VirtualTransfers() override;

  bool prefetch(TensorKey key) override;
  void demand(TensorKey key) override;
  std::string failure_reason(TensorKey) const override { return {}; }
  /// The counters; busy_ns includes a busy period still going on (as TransferEngine's).
  TransferStats stats() const noexcept override;

 private:
  struct Request {
    TensorKey key;
    FetchKind kind;
    std::uint64_t bytes;
    std::uint64_t done = 0;
    std::uint64_t start_ns = 0;
  };
  struct Channel {
    bool active = false;
    Request r{};
    std::uint64_t read_start_ns = 0, read_bytes = 0, link_done = 0;
  };
  void dispatch();
  void begin_read(Channel& c);
  void next_piece(Channel& c);
  void end_read(Channel& c);
  void set_busy(bool starting) noexcept;

  VirtualClock& clock_;
  VirtualLink& link_;
  std::size_t device_;
  DeviceCache& cache_;
  std::uint64_t chunk_bytes_;
  double copy_gbps_;
  std::vector<std::uint64_t> key_tile_bytes_;
  double copy_gbps_total_;
  std::uint64_t copy_free_ns_ = 0;
  std::vector<Channel> channels_;
  std::deque<Request> demand_queue_, prefetch_queue_;
  unsigned running_ = 0;
  std::uint64_t busy_since_ns_ = 0;
  bool dispatch_pending_ = false;
  TransferStats stats_;
};

}  // namespace xlshare
