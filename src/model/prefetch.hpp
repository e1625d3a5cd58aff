// Software prefetch of a weight stream. A decode step reads every weight once, row after
// row; on some CPUs the hardware prefetchers alone do not keep enough of it in flight (on
// the Intel VMs xlshare is developed on, asking ahead made int8 decode 30-80% faster:
// docs/results.md). So before a row is computed, the cache lines of one row's length,
// kPrefetchBytes further on, are asked for: the stream stays that far ahead of the loads,
// whatever the row's length or type.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>

namespace xlshare {

/// How far ahead of the row being computed its weight stream is fetched: chosen by
/// measurement (2-8 KiB did equally well, 1 KiB less: `xlshare_bench_model --decode-only`).
inline constexpr std::size_t kPrefetchBytes = 4096;

/// Asks for the lines of [row + kPrefetchBytes, + row_bytes), never past `end` (the end of
/// the rows this thread reads). Only a hint: nothing is read or written.
inline void prefetch_next_rows(const std::byte* row, std::size_t row_bytes,
                               const std::byte* end) noexcept {
#if defined(__GNUC__)
  constexpr std::uintptr_t kLine = 64;
  const auto limit = reinterpret_cast<std::uintptr_t>(end);
  const std::uintptr_t from = reinterpret_cast<std::uintptr_t>(row) + kPrefetchBytes;
  const std::uintptr_t to = std::min(from + row_bytes, limit);
  for (std::uintptr_t p = from & ~(kLine - 1); p < to; p += kLine)
    __builtin_prefetch(reinterpret_cast<const void*>(p), 0, 3);
#else
  (void)row;
  (void)row_bytes;
  (void)end;
#endif
}

/// Asks for the line kPrefetchBytes after `at` when it lies before `end`, into L2 only
/// (prefetcht1): for the F16/BF16 stream, asked for a line at a time, this measured 20%
/// faster than into L1 as well (prefetcht0), on one thread and on two (Intel VM,
/// docs/results.md); the row-at-a-time requests above measured no better that way.
inline void prefetch_line_ahead(const void* at, const std::byte* end) noexcept {
#if defined(__GNUC__)
  const std::uintptr_t p = reinterpret_cast<std::uintptr_t>(at) + kPrefetchBytes;
  if (p < reinterpret_cast<std::uintptr_t>(end))
    __builtin_prefetch(reinterpret_cast<const void*>(p), 0, 2);
#else
  (void)at;
  (void)end;
#endif
}

}  // namespace xlshare
