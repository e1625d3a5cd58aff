#include <gtest/gtest.h>

#include <map>
#include <random>
#include <vector>

#include "xlshare/error.hpp"
#include "xlshare/memory/extent_allocator.hpp"

namespace xlshare {
namespace {

// An ExtentTable with room for `capacity` entries, in ordinary memory.
class Table {
 public:
  Table(std::uint64_t capacity, std::uint64_t begin, std::uint64_t end, std::uint64_t align)
      : storage_(ExtentTable::bytes_for(capacity) / sizeof(std::uint64_t) + 1) {
    ExtentAllocator::init(table(), capacity, begin, end, align);
  }
  ExtentTable& table() { return *reinterpret_cast<ExtentTable*>(storage_.data()); }

 private:
  std::vector<std::uint64_t> storage_;
};

TEST(ExtentAllocator, FirstFitRoundsToAlignment) {
  Table t(16, 4096, 4096 * 11, 4096);
  ExtentAllocator a(t.table());
  EXPECT_EQ(a.allocate(1), 4096u);
  EXPECT_EQ(a.allocate(4097), 8192u);
  EXPECT_EQ(a.stats().bytes_used, 3u * 4096);
  EXPECT_EQ(a.allocate(8 * 4096), std::nullopt);  // 7 pages left
  EXPECT_EQ(a.allocate(7 * 4096), 4u * 4096);
  EXPECT_EQ(a.stats().bytes_free, 0u);
  EXPECT_EQ(a.check(), "");
}

TEST(ExtentAllocator, LastFitTakesTheEndOfTheHighestExtentThatFits) {
  Table t(16, 0, 4096 * 10, 4096);
  ExtentAllocator a(t.table());
  EXPECT_EQ(a.allocate_last(1), 9u * 4096);
  EXPECT_EQ(a.allocate_last(2 * 4096), 7u * 4096);
  EXPECT_EQ(a.allocate(4096), 0u);  // first fit still from the bottom
  a.free(9 * 4096, 1);              // free: [1, 7) and [9, 10)
  EXPECT_EQ(a.allocate_last(4096), 9u * 4096);
  EXPECT_EQ(a.allocate_last(2 * 4096), 5u * 4096);  // the end of [1, 7)
  EXPECT_EQ(a.allocate_last(5 * 4096), std::nullopt);
  EXPECT_EQ(a.allocate_last(4 * 4096), 1u * 4096);
  EXPECT_EQ(a.stats().bytes_free, 0u);
  EXPECT_EQ(a.check(), "");
}

TEST(ExtentAllocator, FreeCoalescesWithBothNeighbours) {
  Table t(16, 0, 4096 * 10, 4096);
  ExtentAllocator a(t.table());
  auto x = *a.allocate(4096), y = *a.allocate(4096), z = *a.allocate(4096);
  a.free(x, 4096);
  a.free(z, 4096);
  EXPECT_EQ(a.stats().free_extents, 2u);  // [x] and [z..end)
  EXPECT_GT(a.stats().fragmentation, 0.0);
  a.free(y, 4096);
  EXPECT_EQ(a.stats().free_extents, 1u);
  EXPECT_EQ(a.stats().largest_free_extent, 4096u * 10);
  EXPECT_EQ(a.stats().fragmentation, 0.0);
  EXPECT_EQ(a.check(), "");
}

TEST(ExtentAllocator, RefusesDoubleAndForeignFrees) {
  Table t(16, 4096, 4096 * 10, 4096);
  ExtentAllocator a(t.table());
  auto x = *a.allocate(4096);
  a.free(x, 4096);
  EXPECT_THROW(a.free(x, 4096), PoolError);
  EXPECT_THROW(a.free(0, 4096), PoolError);             // before the range
  EXPECT_THROW(a.free(4096 * 10, 4096), PoolError);     // after it
  EXPECT_THROW(a.free(4096 * 2 + 1, 4096), PoolError);  // misaligned
  EXPECT_EQ(a.check(), "");
}

TEST(ExtentAllocator, InitRejectsBadRanges) {
  std::vector<std::uint64_t> storage(64);
  auto& table = *reinterpret_cast<ExtentTable*>(storage.data());
  EXPECT_THROW(ExtentAllocator::init(table, 4, 0, 4096, 3000), ConfigError);
  EXPECT_THROW(ExtentAllocator::init(table, 4, 100, 4096, 4096), ConfigError);
  EXPECT_THROW(ExtentAllocator::init(table, 4, 8192, 4096, 4096), ConfigError);
}

// Thousands of random allocations and frees against a simple model of which units are
// taken: no overlap, alignment held, accounting exact, and everything coalesces back.
TEST(ExtentAllocator, RandomWorkloadMatchesAModel) {
  constexpr std::uint64_t kAlign = 256, kUnits = 4096, kBegin = 8 * kAlign;
  constexpr std::uint64_t kMaxLive = 300;
  Table t(kMaxLive + 2, kBegin, kBegin + kUnits * kAlign, kAlign);
  ExtentAllocator a(t.table());
  std::vector<bool> taken(kUnits, false);
  std::map<std::uint64_t, std::uint64_t> live;  // offset -> requested bytes
  std::mt19937_64 rng(12345);
  std::uint64_t failures = 0;
  for (int step = 0; step < 20000; ++step) {
    const bool do_alloc = live.empty() || (live.size() < kMaxLive && rng() % 100 < 55);
    if (do_alloc) {
      const std::uint64_t bytes = 1 + rng() % (40 * kAlign);
      const auto got = rng() % 3 == 0 ? a.allocate_last(bytes) : a.allocate(bytes);
      const std::uint64_t units = (bytes + kAlign - 1) / kAlign;
      if (!got) {
        // First or last fit fails only when no run of free units is long enough.
        std::uint64_t run = 0, best = 0;
        for (bool u : taken) best = std::max(best, run = u ? 0 : run + 1);
        ASSERT_LT(best, units) << "step " << step;
        ++failures;
        continue;
      }
      ASSERT_EQ(*got % kAlign, 0u);
      ASSERT_GE(*got, kBegin);
      const std::uint64_t first = (*got - kBegin) / kAlign;
      ASSERT_LE(first + units, kUnits);
      for (std::uint64_t u = first; u < first + units; ++u) {
        ASSERT_FALSE(taken[u]) << "overlap at step " << step;
        taken[u] = true;
      }
      live[*got] = bytes;
    } else {
      auto it = live.begin();
      std::advance(it, static_cast<long>(rng() % live.size()));
      a.free(it->first, it->second);
      const std::uint64_t first = (it->first - kBegin) / kAlign;
      for (std::uint64_t u = first; u < first + (it->second + kAlign - 1) / kAlign; ++u)
        taken[u] = false;
      live.erase(it);
    }
    if (step % 97 == 0) {
      ASSERT_EQ(a.check(), "") << "step " << step;
      std::uint64_t used = 0;
      for (bool u : taken) used += u;
      ASSERT_EQ(a.stats().bytes_used, used * kAlign);
    }
  }
  EXPECT_GT(failures, 0u);  // the workload did reach a full pool
  for (auto [offset, bytes] : live) a.free(offset, bytes);
  const auto s = a.stats();
  EXPECT_EQ(s.free_extents, 1u);
  EXPECT_EQ(s.bytes_free, kUnits * kAlign);
  EXPECT_EQ(s.bytes_used, 0u);
  EXPECT_EQ(a.check(), "");
}

TEST(ExtentAllocator, RebuildIsTheComplementOfWhatIsAllocated) {
  Table t(16, 0, 4096 * 16, 4096);
  ExtentAllocator a(t.table());
  const FreeExtent used[] = {{4096 * 3, 4096 * 2}, {0, 100}, {4096 * 10, 4096}};
  a.rebuild(used);
  EXPECT_EQ(a.check(), "");
  const auto s = a.stats();
  EXPECT_EQ(s.bytes_used, 4096u * 4);
  EXPECT_EQ(s.free_extents, 3u);  // [1,3) [5,10) [11,16)
  EXPECT_EQ(a.allocate(4096 * 5), 4096u * 5);
  const FreeExtent overlapping[] = {{0, 8192}, {4096, 4096}};
  EXPECT_THROW(a.rebuild(overlapping), PoolError);
}

}  // namespace
}  // namespace xlshare
