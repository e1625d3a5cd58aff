// The budget invariant under thousands of random operations from several threads.
// Also run under the tsan preset.
#include <gtest/gtest.h>

#include <atomic>
#include <cstring>
#include <random>
#include <thread>

#include "xlshare/cache/device_cache.hpp"

namespace xlshare {
namespace {

TEST(DeviceCacheConcurrency, BudgetHoldsUnderRandomOperationsFromManyThreads) {
  constexpr int kThreads = 4, kOps = 4000;
  std::vector<std::uint64_t> sizes(40);
  std::mt19937 size_rng(7);
  for (auto& s : sizes) s = 64 + size_rng() % 4000;
  const std::uint64_t budget = 20000;  // >= 4 threads x the largest tensor: no deadlock
  DeviceCache cache(budget, sizes, std::make_unique<LruPolicy>());
  std::atomic<bool> violated{false};
  std::atomic<std::uint64_t> max_seen{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937 rng(100 + t);
      for (int i = 0; i < kOps; ++i) {
        const TensorKey k = rng() % sizes.size();
        switch (rng() % 4) {
          case 0:
          case 1: {  // fetch, fill, complete (fails one time in ten)
            const auto kind = rng() % 2 ? FetchKind::kDemand : FetchKind::kPrefetch;
            if (auto buf = cache.begin_fetch(k, kind)) {
              std::memset(buf->data(), static_cast<int>(k), buf->size());
              cache.complete_fetch(k, rng() % 10 != 0);
            }
            break;
          }
          case 2: {  // compute uses it for a moment
            if (auto lease = cache.acquire(k)) {
              for (std::byte b : lease.bytes().first(16)) {
                if (b != std::byte(k & 0xff)) violated = true;  // someone else's bytes
              }
            }
            break;
          }
          default: {
            const auto s = cache.stats();
            const std::uint64_t used = s.bytes_resident + s.bytes_in_flight;
            if (used > budget) violated = true;
            std::uint64_t m = max_seen.load();
            while (used > m && !max_seen.compare_exchange_weak(m, used)) {
            }
            if (rng() % 200 == 0) cache.clear();
          }
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_FALSE(violated.load());
  EXPECT_EQ(cache.check(), "");
  const auto s = cache.stats();
  EXPECT_LE(s.peak_bytes, budget);
  EXPECT_GT(s.evictions, 100u);
  EXPECT_GT(s.fetches_failed, 10u);
  EXPECT_GT(s.acquires, 500u);
}

TEST(DeviceCacheConcurrency, ADemandFetchWaitsForAPinToBeReleased) {
  DeviceCache cache(100, {100, 100}, std::make_unique<LruPolicy>());
  ASSERT_TRUE(cache.begin_fetch(0, FetchKind::kDemand));
  cache.complete_fetch(0, true);
  auto lease = cache.acquire(0);
  std::atomic<bool> fetched{false};
  std::thread other([&] {
    auto buf = cache.begin_fetch(1, FetchKind::kDemand);  // must wait: 0 is pinned
    fetched = buf.has_value();
    cache.complete_fetch(1, true);
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  EXPECT_FALSE(fetched.load());
  EXPECT_EQ(cache.state(0), EntryState::kResident);
  lease.release();
  other.join();
  EXPECT_TRUE(fetched.load());
  EXPECT_EQ(cache.state(0), EntryState::kAbsent);
  EXPECT_EQ(cache.state(1), EntryState::kResident);
}

TEST(DeviceCacheConcurrency, AcquireWaitsForAnInFlightTransfer) {
  DeviceCache cache(1000, {100}, std::make_unique<LruPolicy>());
  auto buf = cache.begin_fetch(0, FetchKind::kPrefetch);
  ASSERT_TRUE(buf);
  std::thread filler([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
    std::memset(buf->data(), 7, buf->size());
    cache.complete_fetch(0, true);
  });
  bool ready = true;
  auto lease = cache.acquire(0, &ready);
  filler.join();
  ASSERT_TRUE(lease);
  EXPECT_FALSE(ready);
  EXPECT_EQ(lease.bytes()[99], std::byte{7});
  EXPECT_EQ(cache.stats().acquires_waited, 1u);
  EXPECT_EQ(cache.stats().bytes_prefetched_used, 100u);
}

}  // namespace
}  // namespace xlshare
