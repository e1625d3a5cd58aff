// ExtentAllocator: first-fit (or last-fit) allocation of byte extents inside a pool's data area.
//
// The allocator keeps no state of its own: its free list is an ExtentTable that lives in
// the pool (so that every loader process sees the same one), sorted by offset and always
// coalesced (no two free extents touch). The pool guards it with its process-shared
// robust mutex; the allocator itself is not thread-safe.
//
// Every extent's offset and size are multiples of the alignment given at init(). A table
// of capacity C can describe any pattern of up to C - 1 allocated extents: the free list
// never has more entries than there are allocated extents plus one.
#pragma once

#include <cstdint>
#include <nlohmann/json_fwd.hpp>
#include <optional>
#include <span>
#include <string>

namespace xlshare {

struct FreeExtent {
  std::uint64_t offset_bytes;
  std::uint64_t size_bytes;
};

/// The shared free list, as laid out in a pool. `extents` has `capacity` slots.
struct ExtentTable {
  std::uint64_t capacity;
  std::uint64_t count;
  std::uint64_t begin_bytes;      ///< start of the managed range
  std::uint64_t end_bytes;        ///< end of the managed range
  std::uint64_t alignment_bytes;  ///< power of two
  std::uint64_t bytes_used;
  FreeExtent extents[1];  ///< really `capacity` entries

  static constexpr std::uint64_t bytes_for(std::uint64_t capacity) noexcept {
    return sizeof(ExtentTable) + (capacity - 1) * sizeof(FreeExtent);
  }
};

/// Allocator statistics.
struct ExtentStats {
  std::uint64_t bytes_total = 0;
  std::uint64_t bytes_used = 0;
  std::uint64_t bytes_free = 0;
  std::uint64_t largest_free_extent = 0;
  std::uint64_t free_extents = 0;
  /// 1 - largest_free_extent / bytes_free: 0 when all free space is one extent.
  double fragmentation = 0.0;
};
void to_json(nlohmann::json& j, const ExtentStats& s);

class ExtentAllocator {
 public:
  explicit ExtentAllocator(ExtentTable& table) noexcept : table_(table) {}

  /// Makes [begin, end) one free extent. `alignment` must be a power of two and `begin`
  /// and `end` multiples of it. @throws ConfigError otherwise.
  static void init(ExtentTable& table, std::uint64_t capacity, std::uint64_t begin_bytes,
                   std::uint64_t end_bytes, std::uint64_t alignment_bytes);

  /// `bytes` rounded up to the alignment (at least one unit).
  std::uint64_t round_up(std::uint64_t bytes) const noexcept;

  /// First fit. Returns the offset, or nothing when no free extent is large enough.
  std::optional<std::uint64_t> allocate(std::uint64_t bytes) noexcept;
  /// As allocate(), but last fit: the highest free extent large enough, carved from its
  /// end. Long-lived extents taken from the top keep them apart from short-lived ones
  /// taken first fit from the bottom, so that these do not fragment the space in between.
  std::optional<std::uint64_t> allocate_last(std::uint64_t bytes) noexcept;

  /// Returns [offset, offset + round_up(bytes)) to the free list, coalescing with its
  /// neighbours. @throws PoolError if the extent is not wholly allocated (a double free or
  /// a foreign range).
  void free(std::uint64_t offset_bytes, std::uint64_t bytes);

  /// Throws away the free list and rebuilds it as the complement of `allocated`
  /// (offset, size pairs, any order). Used after a loader died holding the lock.
  /// @throws PoolError if the extents overlap or leave the managed range.
  void rebuild(std::span<const FreeExtent> allocated);

  /// Checks the table's invariants (sorted, coalesced, aligned, in range, counts).
  /// Returns an empty string when it is sound, or the first problem found.
  std::string check() const;

  ExtentStats stats() const noexcept;

 private:
  ExtentTable& table_;
};

}  // namespace xlshare
