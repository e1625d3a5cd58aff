#include "xlshare/planner/virtual_transfers.hpp"

#include <sys/mman.h>

#include <algorithm>
#include <cmath>

#include "xlshare/error.hpp"

namespace xlshare {

std::byte* UnbackedMemory::allocate(std::uint64_t bytes) noexcept {
  void* p = ::mmap(nullptr, std::max<std::uint64_t>(bytes, 1), PROT_NONE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  return p == MAP_FAILED ? nullptr : static_cast<std::byte*>(p);
}

void UnbackedMemory::deallocate(std::byte* p, std::uint64_t bytes) noexcept {
  if (p != nullptr) ::munmap(p, std::max<std::uint64_t>(bytes, 1));
}

UnbackedMemory& UnbackedMemory::instance() noexcept {
  static UnbackedMemory m;
  return m;
}

VirtualLink::VirtualLink(const LinkParams& port, double shared_gbps, std::size_t devices)
    : port_(port), shared_gbps_(shared_gbps), port_free_(std::max<std::size_t>(devices, 1), 0) {
  if (!(shared_gbps >= 0.0) || !std::isfinite(shared_gbps) || !(port.bandwidth_gbps >= 0.0) ||
      !std::isfinite(port.bandwidth_gbps)) {
    throw ConfigError("virtual link: bandwidths must be finite and >= 0");
  }
  if (port_.chunk_bytes == 0) throw ConfigError("virtual link: chunk_bytes must be > 0");
}

namespace {
std::uint64_t occupancy_ns(double gbps, std::uint64_t bytes) noexcept {
  if (gbps <= 0.0) return 0;
  const double ns = static_cast<double>(bytes) / gbps;
  const auto whole = static_cast<std::uint64_t>(ns);
  return whole + (ns > static_cast<double>(whole) ? 1 : 0);
}
}  // namespace

ChunkTiming VirtualLink::reserve(std::size_t device, std::uint64_t now_ns, std::uint64_t bytes,
                                 bool first) noexcept {
  std::uint64_t& port_free = port_free_[device < port_free_.size() ? device : 0];
  // The port's timing is the emulator's (plan_chunk); the shared link carries the same bytes
  // in its own turn, and the piece is through when both have carried it.
  ChunkTiming t = plan_chunk(port_, now_ns, port_free, bytes, first);
  port_free = t.link_free_ns;
  bytes_ += bytes;
  if (shared_gbps_ > 0.0) {
    const std::uint64_t start = std::max(now_ns, shared_free_);
    const std::uint64_t occupancy = occupancy_ns(shared_gbps_, bytes);
    shared_free_ = start + occupancy;
    busy_ns_ += occupancy;
    if (shared_free_ > t.link_free_ns) {
      t.complete_ns += shared_free_ - t.link_free_ns;
      t.link_free_ns = shared_free_;
    }
  } else if (device == 0) {
    busy_ns_ += t.link_free_ns - t.start_ns;
  }
  return t;
}

VirtualTransfers::VirtualTransfers(VirtualClock& clock, VirtualLink& link, std::size_t device,
                                   DeviceCache& cache, unsigned threads, std::uint64_t chunk_bytes,
                                   double copy_gbps, std::vector<std::uint64_t> key_tile_bytes,
                                   double copy_gbps_total)
    : clock_(clock),
      link_(link),
      device_(device),
      cache_(cache),
      chunk_bytes_(chunk_bytes),
      copy_gbps_(copy_gbps),
      key_tile_bytes_(std::move(key_tile_bytes)),
      copy_gbps_total_(copy_gbps_total),
      channels_(threads) {
  if (threads == 0 || threads > 64) throw ConfigError("virtual transfers: threads must be 1..64");
  if (chunk_bytes == 0) throw ConfigError("virtual transfers: chunk_bytes must be > 0");
  if (!(copy_gbps >= 0.0) || !std::isfinite(copy_gbps) || !(copy_gbps_total >= 0.0) ||
      !std::isfinite(copy_gbps_total))
    throw ConfigError("virtual transfers: copy rates must be finite and >= 0");
}

VirtualTransfers::~VirtualTransfers() {
  // Anything still queued or being read never lands: release its cache entry.
  for (auto* q : {&demand_queue_, &prefetch_queue_}) {
    for (auto& r : *q) cache_.complete_fetch(r.key, false);
  }
  for (auto& c : channels_) {
    if (c.active) cache_.complete_fetch(c.r.key, false);
  }
}

TransferStats VirtualTransfers::stats() const noexcept {
  TransferStats s = stats_;
  if (running_ > 0) s.busy_ns += clock_.now_ns() - busy_since_ns_;
  return s;
}

bool VirtualTransfers::prefetch(TensorKey key) {
  auto buffer = cache_.begin_fetch(key, FetchKind::kPrefetch);
  if (!buffer) return false;
  prefetch_queue_.push_back(Request{key, FetchKind::kPrefetch, buffer->size()});
  ++stats_.requests_prefetch;
  dispatch();
  return true;
}

void VirtualTransfers::demand(TensorKey key) {
  auto buffer = cache_.begin_fetch(key, FetchKind::kDemand);
  if (!buffer) return;
  demand_queue_.push_back(Request{key, FetchKind::kDemand, buffer->size()});
  ++stats_.requests_demand;
  dispatch();
}

// Idle channels take the next request (demand first), as a TransferEngine thread woken by
// the request would: at the current time, once the caller gives the simulation back.
void VirtualTransfers::dispatch() {
  if (dispatch_pending_) return;
  dispatch_pending_ = true;
  clock_.at(clock_.now_ns(), [this] {
    dispatch_pending_ = false;
    for (auto& c : channels_) {
      if (c.active) continue;
      auto& q = !demand_queue_.empty() ? demand_queue_ : prefetch_queue_;
      if (q.empty()) break;
      c.r = q.front();
      q.pop_front();
      c.active = true;
      if (c.r.start_ns == 0 && c.r.done == 0) c.r.start_ns = clock_.now_ns();
      set_busy(true);
      begin_read(c);
    }
  });
}

void VirtualTransfers::set_busy(bool starting) noexcept {
  const std::uint64_t now = clock_.now_ns();
  if (starting) {
    if (running_++ == 0) busy_since_ns_ = now;
  } else if (--running_ == 0) {
    stats_.busy_ns += now - busy_since_ns_;
  }
}

void VirtualTransfers::begin_read(Channel& c) {
  c.read_start_ns = clock_.now_ns();
  // A TransferEngine verifying a tiled tensor reads whole tiles: its chunk is rounded down
  // to them (at least one).
  const std::uint64_t tile = c.r.key < key_tile_bytes_.size() ? key_tile_bytes_[c.r.key] : 0;
  const std::uint64_t chunk =
      tile > 0 ? std::max<std::uint64_t>(chunk_bytes_ / tile, 1) * tile : chunk_bytes_;
  c.read_bytes = std::min(chunk, c.r.bytes - c.r.done);
  c.link_done = 0;
  next_piece(c);
}

void VirtualTransfers::next_piece(Channel& c) {
  const std::uint64_t n = std::min(link_.port().chunk_bytes, c.read_bytes - c.link_done);
  const bool first = c.link_done == 0;
  const ChunkTiming t = link_.reserve(device_, clock_.now_ns(), n, first);
  c.link_done += n;
  if (c.link_done < c.read_bytes) {
    clock_.at(t.link_free_ns, [this, &c] { next_piece(c); });
    return;
  }
  std::uint64_t until = t.complete_ns;
  const auto copy_ns = [&](double gbps) {
    return static_cast<std::uint64_t>(std::ceil(static_cast<double>(c.read_bytes) / gbps));
  };
  if (copy_gbps_ > 0.0) until = std::max(until, c.read_start_ns + copy_ns(copy_gbps_));
  if (copy_gbps_total_ > 0.0) {
    copy_free_ns_ = std::max(copy_free_ns_, c.read_start_ns) + copy_ns(copy_gbps_total_);
    until = std::max(until, copy_free_ns_);
  }
  clock_.at(until, [this, &c] { end_read(c); });
}

void VirtualTransfers::end_read(Channel& c) {
  c.r.done += c.read_bytes;
  stats_.link_bytes += c.read_bytes;
  if (c.r.done < c.r.bytes) {
    if (c.r.kind == FetchKind::kPrefetch && !demand_queue_.empty()) {
      // Compute's request overtakes this prefetch, which goes back to the front.
      prefetch_queue_.push_front(c.r);
      ++stats_.preemptions;
      c.active = false;
      set_busy(false);
      dispatch();
      return;
    }
    begin_read(c);
    return;
  }
  stats_.transfer_ns += clock_.now_ns() - c.r.start_ns;
  ++stats_.completed;
  cache_.complete_fetch(c.r.key, true);
  c.active = false;
  set_busy(false);
  dispatch();
}

}  // namespace xlshare
