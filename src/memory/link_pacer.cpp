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

std::uint64_t LinkPacer::wait_until(std::uint64_t complete_ns) noexcept {
  const std::uint64_t now = clock_->now_ns();
  if (complete_ns <= now) return 0;
  clock_->sleep_until_ns(complete_ns);
  return clock_->now_ns() - now;
}

}  // namespace xlshare
