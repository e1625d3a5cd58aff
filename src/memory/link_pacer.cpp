#include "xlshare/memory/link_pacer.hpp"

#include <algorithm>

namespace xlshare {

std::uint64_t LinkPacer::reserve(std::uint64_t bytes) noexcept {
  const std::uint64_t now = clock_->now_ns();
  if (bytes == 0 || !paced()) return now;
  // Chunks are reserved back to back from now: between two of them, other readers'
  // reservations interleave, as with copies over one link.
  std::uint64_t complete = now;
  bool first = true;
  for (std::uint64_t done = 0; done < bytes;) {
    const std::uint64_t n = std::min<std::uint64_t>(params_.chunk_bytes, bytes - done);
    const ChunkTiming t = reserve_chunk(*link_, params_, now, n, first);
    complete = t.complete_ns;
    done += n;
    first = false;
  }
  link_field(link_->bytes_total).fetch_add(bytes, std::memory_order_relaxed);
  link_field(link_->transfers_total).fetch_add(1, std::memory_order_relaxed);
  return complete;
}

std::uint64_t LinkPacer::reserve_urgent(std::uint64_t bytes) noexcept {
  const std::uint64_t now = clock_->now_ns();
  if (bytes == 0 || !paced()) return now;
  const ChunkTiming own = plan_chunk(params_, now, now, bytes, true);
  const std::uint64_t occupancy = own.link_free_ns - own.start_ns;
  auto free_ns = link_field(link_->link_free_ns);
  std::uint64_t observed = free_ns.load(std::memory_order_acquire);
  for (;;) {
    const bool foreign = observed > now && observed - now > kMaxLinkAheadNs;
    const std::uint64_t base = foreign || observed < now ? now : observed;
    if (free_ns.compare_exchange_weak(observed, base + occupancy, std::memory_order_acq_rel,
                                      std::memory_order_acquire)) {
      if (foreign) link_field(link_->clock_clamps_total).fetch_add(1, std::memory_order_relaxed);
      break;
    }
  }
  link_field(link_->busy_ns_total).fetch_add(occupancy, std::memory_order_relaxed);
  link_field(link_->bytes_total).fetch_add(bytes, std::memory_order_relaxed);
  link_field(link_->transfers_total).fetch_add(1, std::memory_order_relaxed);
  return own.complete_ns;
}

std::uint64_t LinkPacer::wait_until(std::uint64_t complete_ns) noexcept {
  const std::uint64_t now = clock_->now_ns();
  if (complete_ns <= now) return 0;
  clock_->sleep_until_ns(complete_ns);
  return clock_->now_ns() - now;
}

}  // namespace xlshare
