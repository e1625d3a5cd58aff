#include "xlshare/memory/extent_allocator.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "xlshare/error.hpp"

namespace xlshare {
namespace {

bool is_pow2(std::uint64_t v) { return v != 0 && (v & (v - 1)) == 0; }

}  // namespace

void ExtentAllocator::init(ExtentTable& table, std::uint64_t capacity, std::uint64_t begin_bytes,
                           std::uint64_t end_bytes, std::uint64_t alignment_bytes) {
  if (!is_pow2(alignment_bytes) || begin_bytes % alignment_bytes != 0 ||
      end_bytes % alignment_bytes != 0 || end_bytes < begin_bytes || capacity < 2) {
    throw ConfigError(
        fmt::format("extent allocator: bad range [{}, {}) for alignment {} and capacity {}",
                    begin_bytes, end_bytes, alignment_bytes, capacity));
  }
  table.capacity = capacity;
  table.begin_bytes = begin_bytes;
  table.end_bytes = end_bytes;
  table.alignment_bytes = alignment_bytes;
  table.bytes_used = 0;
  table.count = 0;
  if (end_bytes > begin_bytes) {
    table.extents[0] = FreeExtent{begin_bytes, end_bytes - begin_bytes};
    table.count = 1;
  }
}

std::uint64_t ExtentAllocator::round_up(std::uint64_t bytes) const noexcept {
  const std::uint64_t a = table_.alignment_bytes;
  if (bytes == 0) return a;
  if (bytes > UINT64_MAX - (a - 1)) return 0;  // cannot be satisfied
  return (bytes + a - 1) & ~(a - 1);
}

std::optional<std::uint64_t> ExtentAllocator::allocate(std::uint64_t bytes) noexcept {
  const std::uint64_t need = round_up(bytes);
  if (need == 0) return std::nullopt;
  for (std::uint64_t i = 0; i < table_.count; ++i) {
    FreeExtent& e = table_.extents[i];
    if (e.size_bytes < need) continue;
    const std::uint64_t offset = e.offset_bytes;
    if (e.size_bytes == need) {
      std::memmove(&table_.extents[i], &table_.extents[i + 1],
                   (table_.count - i - 1) * sizeof(FreeExtent));
      --table_.count;
    } else {
      e.offset_bytes += need;
      e.size_bytes -= need;
    }
    table_.bytes_used += need;
    return offset;
  }
  return std::nullopt;
}

std::optional<std::uint64_t> ExtentAllocator::allocate_last(std::uint64_t bytes) noexcept {
  const std::uint64_t need = round_up(bytes);
  if (need == 0) return std::nullopt;
  for (std::uint64_t i = table_.count; i-- > 0;) {
    FreeExtent& e = table_.extents[i];
    if (e.size_bytes < need) continue;
    const std::uint64_t offset = e.offset_bytes + e.size_bytes - need;
    if (e.size_bytes == need) {
      std::memmove(&table_.extents[i], &table_.extents[i + 1],
                   (table_.count - i - 1) * sizeof(FreeExtent));
      --table_.count;
    } else {
      e.size_bytes -= need;
    }
    table_.bytes_used += need;
    return offset;
  }
  return std::nullopt;
}

void ExtentAllocator::free(std::uint64_t offset_bytes, std::uint64_t bytes) {
  const std::uint64_t size = round_up(bytes);
  if (size == 0 || offset_bytes % table_.alignment_bytes != 0 ||
      offset_bytes < table_.begin_bytes || offset_bytes > table_.end_bytes ||
      size > table_.end_bytes - offset_bytes) {
    throw PoolError(fmt::format("extent allocator: cannot free [{}, +{}): outside the data area",
                                offset_bytes, bytes));
  }
  // First free extent that starts after offset.
  std::uint64_t i = 0;
  while (i < table_.count && table_.extents[i].offset_bytes <= offset_bytes) ++i;
  const std::uint64_t end = offset_bytes + size;
  const bool touches_prev =
      i > 0 &&
      table_.extents[i - 1].offset_bytes + table_.extents[i - 1].size_bytes >= offset_bytes;
  const bool touches_next = i < table_.count && table_.extents[i].offset_bytes <= end;
  if ((i > 0 &&
       table_.extents[i - 1].offset_bytes + table_.extents[i - 1].size_bytes > offset_bytes) ||
      (i < table_.count && table_.extents[i].offset_bytes < end)) {
    throw PoolError(
        fmt::format("extent allocator: cannot free [{}, +{}): part of it is already free",
                    offset_bytes, bytes));
  }
  if (touches_prev && touches_next) {
    table_.extents[i - 1].size_bytes += size + table_.extents[i].size_bytes;
    std::memmove(&table_.extents[i], &table_.extents[i + 1],
                 (table_.count - i - 1) * sizeof(FreeExtent));
    --table_.count;
  } else if (touches_prev) {
    table_.extents[i - 1].size_bytes += size;
  } else if (touches_next) {
    table_.extents[i].offset_bytes = offset_bytes;
    table_.extents[i].size_bytes += size;
  } else {
    if (table_.count >= table_.capacity) {
      // Cannot happen when capacity > number of allocations; refuse rather than corrupt.
      throw PoolError("extent allocator: free list is full");
    }
    std::memmove(&table_.extents[i + 1], &table_.extents[i],
                 (table_.count - i) * sizeof(FreeExtent));
    table_.extents[i] = FreeExtent{offset_bytes, size};
    ++table_.count;
  }
  table_.bytes_used -= size;
}

void ExtentAllocator::rebuild(std::span<const FreeExtent> allocated) {
  std::vector<FreeExtent> used(allocated.begin(), allocated.end());
  for (auto& e : used) e.size_bytes = round_up(e.size_bytes);
  std::sort(used.begin(), used.end(), [](const FreeExtent& a, const FreeExtent& b) {
    return a.offset_bytes < b.offset_bytes;
  });
  std::uint64_t cursor = table_.begin_bytes;
  std::uint64_t count = 0, bytes_used = 0;
  for (const auto& e : used) {
    if (e.size_bytes == 0 || e.offset_bytes < cursor || e.offset_bytes > table_.end_bytes ||
        e.size_bytes > table_.end_bytes - e.offset_bytes) {
      throw PoolError(fmt::format(
          "extent allocator: allocated extent [{}, +{}) overlaps another or leaves the data area",
          e.offset_bytes, e.size_bytes));
    }
    if (e.offset_bytes > cursor) {
      if (count >= table_.capacity) throw PoolError("extent allocator: free list is full");
      table_.extents[count++] = FreeExtent{cursor, e.offset_bytes - cursor};
    }
    cursor = e.offset_bytes + e.size_bytes;
    bytes_used += e.size_bytes;
  }
  if (cursor < table_.end_bytes) {
    if (count >= table_.capacity) throw PoolError("extent allocator: free list is full");
    table_.extents[count++] = FreeExtent{cursor, table_.end_bytes - cursor};
  }
  table_.count = count;
  table_.bytes_used = bytes_used;
}

std::string ExtentAllocator::check() const {
  const auto& t = table_;
  if (!is_pow2(t.alignment_bytes)) return "alignment is not a power of two";
  if (t.count > t.capacity) return fmt::format("count {} exceeds capacity {}", t.count, t.capacity);
  if (t.end_bytes < t.begin_bytes) return "range ends before it begins";
  std::uint64_t free_bytes = 0;
  std::uint64_t prev_end = t.begin_bytes;
  for (std::uint64_t i = 0; i < t.count; ++i) {
    const auto& e = t.extents[i];
    if (e.size_bytes == 0) return fmt::format("free extent {} is empty", i);
    if (e.offset_bytes % t.alignment_bytes || e.size_bytes % t.alignment_bytes) {
      return fmt::format("free extent {} is misaligned", i);
    }
    if (e.offset_bytes < prev_end || (i > 0 && e.offset_bytes == prev_end)) {
      return fmt::format("free extent {} overlaps or touches the one before", i);
    }
    if (e.offset_bytes > t.end_bytes || e.size_bytes > t.end_bytes - e.offset_bytes) {
      return fmt::format("free extent {} leaves the data area", i);
    }
    prev_end = e.offset_bytes + e.size_bytes;
    free_bytes += e.size_bytes;
  }
  if (free_bytes + t.bytes_used != t.end_bytes - t.begin_bytes) {
    return fmt::format("free {} + used {} != total {}", free_bytes, t.bytes_used,
                       t.end_bytes - t.begin_bytes);
  }
  return {};
}

ExtentStats ExtentAllocator::stats() const noexcept {
  ExtentStats s;
  s.bytes_total = table_.end_bytes - table_.begin_bytes;
  s.bytes_used = table_.bytes_used;
  s.free_extents = table_.count;
  for (std::uint64_t i = 0; i < table_.count; ++i) {
    s.bytes_free += table_.extents[i].size_bytes;
    s.largest_free_extent = std::max(s.largest_free_extent, table_.extents[i].size_bytes);
  }
  s.fragmentation = s.bytes_free == 0 ? 0.0
                                      : 1.0 - static_cast<double>(s.largest_free_extent) /
                                                  static_cast<double>(s.bytes_free);
  return s;
}

}  // namespace xlshare
