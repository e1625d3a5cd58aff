// Eviction policies through a real DeviceCache: LRU and FIFO orders, pins, and the
// schedule-aware and fixed-set policies against a brute-force optimum.
#include <gtest/gtest.h>

#include <cstring>
#include <functional>
#include <map>
#include <random>
#include <set>

#include "xlshare/cache/device_cache.hpp"
#include "xlshare/error.hpp"
#include "xlshare/testing/eviction_policy_conformance.hpp"

namespace xlshare {
namespace {

using namespace xlshare::conformance;

// A cache of `capacity` unit-size tensors over `keys` keys, with synchronous fetches.
class SimCache {
 public:
  SimCache(std::size_t keys, std::uint64_t capacity, std::unique_ptr<EvictionPolicy> policy)
      : cache_(capacity * 64, std::vector<std::uint64_t>(keys, 64), std::move(policy)) {}
  // Returns whether the access hit.
  bool access(TensorKey key) {
    const bool hit = cache_.state(key) == EntryState::kResident;
    if (!hit) {
      auto buf = cache_.begin_fetch(key, FetchKind::kDemand);
      EXPECT_TRUE(buf.has_value());
      cache_.complete_fetch(key, true);
    }
    auto lease = cache_.acquire(key);
    EXPECT_TRUE(lease);
    EXPECT_EQ(cache_.check(), "");
    return hit;
  }
  std::set<TensorKey> resident() const {
    std::set<TensorKey> r;
    for (TensorKey k = 0; k < cache_.key_count(); ++k) {
      if (cache_.state(k) == EntryState::kResident) r.insert(k);
    }
    return r;
  }
  int run(const std::vector<TensorKey>& trace) {
    int hits = 0;
    for (TensorKey k : trace) hits += access(k);
    return hits;
  }
  DeviceCache& cache() { return cache_; }

 private:
  DeviceCache cache_;
};

// The most hits any demand-paging policy can get: every choice of victim, explored.
int brute_force_opt(const std::vector<TensorKey>& trace, std::size_t capacity) {
  std::map<std::pair<std::size_t, std::uint64_t>, int> memo;
  std::function<int(std::size_t, std::uint64_t)> best = [&](std::size_t pos,
                                                            std::uint64_t set) -> int {
    if (pos == trace.size()) return 0;
    auto it = memo.find({pos, set});
    if (it != memo.end()) return it->second;
    const std::uint64_t bit = std::uint64_t{1} << trace[pos];
    int result;
    if (set & bit) {
      result = 1 + best(pos + 1, set);
    } else if (static_cast<std::size_t>(__builtin_popcountll(set)) < capacity) {
      result = best(pos + 1, set | bit);
    } else {
      result = 0;
      for (std::uint64_t s = set; s; s &= s - 1) {
        const std::uint64_t victim = s & -s;
        result = std::max(result, best(pos + 1, (set & ~victim) | bit));
      }
    }
    memo[{pos, set}] = result;
    return result;
  };
  return best(0, 0);
}

TEST(LruPolicy, EvictsTheLeastRecentlyUsed) {
  SimCache c(5, 3, std::make_unique<LruPolicy>());
  c.run({0, 1, 2, 0});  // 1 is now the least recently used
  c.access(3);
  EXPECT_EQ(c.resident(), (std::set<TensorKey>{0, 2, 3}));
  c.access(2);
  c.access(4);  // evicts 0
  EXPECT_EQ(c.resident(), (std::set<TensorKey>{2, 3, 4}));
}

TEST(FifoPolicy, EvictsTheFirstInEvenIfUsedSince) {
  SimCache c(5, 3, std::make_unique<FifoPolicy>());
  c.run({0, 1, 2, 0, 0});
  c.access(3);  // 0 came first: out, though it was just used
  EXPECT_EQ(c.resident(), (std::set<TensorKey>{1, 2, 3}));
  c.access(4);
  EXPECT_EQ(c.resident(), (std::set<TensorKey>{2, 3, 4}));
}

TEST(DeviceCache, PinnedEntriesSurviveAnyPressure) {
  DeviceCache cache(3 * 64, std::vector<std::uint64_t>(10, 64), std::make_unique<LruPolicy>());
  ASSERT_TRUE(cache.begin_fetch(0, FetchKind::kDemand));
  cache.complete_fetch(0, true);
  auto pinned = cache.acquire(0);
  ASSERT_TRUE(pinned);
  std::memset(const_cast<std::byte*>(pinned.bytes().data()), 0x5a, 64);
  for (TensorKey k = 1; k < 10; ++k) {
    ASSERT_TRUE(cache.begin_fetch(k, FetchKind::kDemand)) << k;
    cache.complete_fetch(k, true);
    EXPECT_EQ(cache.state(0), EntryState::kResident);
  }
  EXPECT_EQ(pinned.bytes()[63], std::byte{0x5a});
  // With 0 pinned and two more pinned, a prefetch finds no room and does not wait.
  auto a = cache.acquire(8), b = cache.acquire(9);
  ASSERT_TRUE(a && b);
  EXPECT_FALSE(cache.begin_fetch(1, FetchKind::kPrefetch));
  EXPECT_EQ(cache.stats().prefetches_refused, 1u);
  EXPECT_EQ(cache.check(), "");
}

TEST(DeviceCache, AStepThatCannotFitIsAClearErrorAtSetUp) {
  DeviceCache cache(100, {60, 60, 30}, std::make_unique<LruPolicy>());
  const TensorKey ok[] = {0, 2};
  const TensorKey too_big[] = {0, 1};
  EXPECT_NO_THROW(cache.check_fits(ok, "step a"));
  try {
    cache.check_fits(too_big, "step 'block.0'");
    FAIL();
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("block.0"), std::string::npos);
    EXPECT_NE(std::string(e.what()).find("120"), std::string::npos);
  }
  DeviceCache small(50, {60}, std::make_unique<LruPolicy>());
  EXPECT_THROW(small.begin_fetch(0, FetchKind::kDemand), OutOfMemory);
}

TEST(ScheduleAwarePolicy, MatchesBruteForceOptOnRandomTraces) {
  std::mt19937 rng(2024);
  for (int round = 0; round < 60; ++round) {
    const std::size_t keys = 3 + rng() % 4;       // 3..6 distinct tensors
    const std::size_t capacity = 2 + rng() % 2;   // 2..3 slots
    std::vector<TensorKey> trace(8 + rng() % 8);  // 8..15 accesses
    for (auto& k : trace) k = static_cast<TensorKey>(rng() % keys);
    SimCache c(keys, capacity, std::make_unique<ScheduleAwarePolicy>(trace, /*cyclic=*/false));
    const int hits = c.run(trace);
    EXPECT_EQ(hits, brute_force_opt(trace, capacity)) << "round " << round;
  }
}

// Keys 0 .. layers-1 in order (one pass), and `passes` of them one after another.
std::vector<TensorKey> one_pass(std::size_t layers) {
  std::vector<TensorKey> cycle(layers);
  for (std::size_t i = 0; i < layers; ++i) cycle[i] = static_cast<TensorKey>(i);
  return cycle;
}
std::vector<TensorKey> passes_of(const std::vector<TensorKey>& cycle, int passes) {
  std::vector<TensorKey> trace;
  for (int r = 0; r < passes; ++r) trace.insert(trace.end(), cycle.begin(), cycle.end());
  return trace;
}

TEST(ScheduleAwarePolicy, MatchesOptOnCyclicLayerTracesWhereLruGetsNothing) {
  for (std::size_t layers : {5u, 6u, 8u}) {
    for (std::size_t capacity : {2u, 3u, 4u}) {
      const std::vector<TensorKey> cycle = one_pass(layers), trace = passes_of(cycle, 3);

      SimCache opt(layers, capacity, std::make_unique<ScheduleAwarePolicy>(cycle, /*cyclic=*/true));
      const int schedule_hits = opt.run(trace);
      EXPECT_EQ(schedule_hits, brute_force_opt(trace, capacity)) << layers << "/" << capacity;
      EXPECT_GT(schedule_hits, 0);

      SimCache lru(layers, capacity, std::make_unique<LruPolicy>());
      EXPECT_EQ(lru.run(trace), 0) << "LRU on a cyclic scan longer than the cache";
      SimCache fifo(layers, capacity, std::make_unique<FifoPolicy>());
      EXPECT_EQ(fifo.run(trace), 0);
    }
  }
}

TEST(ScheduleAwarePolicy, RefusesAPrefetchThatWouldEvictSomethingNeededSooner) {
  // Cycle 0 1 2 3, cache of 2; after using 0 and 1, the next uses are 2 3 0 1.
  auto policy = std::make_unique<ScheduleAwarePolicy>(std::vector<TensorKey>{0, 1, 2, 3}, true);
  auto* raw = policy.get();
  SimCache c(4, 2, std::move(policy));
  c.run({0, 1});
  EXPECT_EQ(raw->next_use_distance(2), 0u);
  EXPECT_EQ(raw->next_use_distance(0), 2u);
  // Prefetching 3 (needed in 1) may evict 1 (needed last): allowed.
  ASSERT_TRUE(c.cache().begin_fetch(3, FetchKind::kPrefetch));
  c.cache().complete_fetch(3, true);
  EXPECT_EQ(c.resident(), (std::set<TensorKey>{0, 3}));
  // Prefetching 1 back (needed in 3) would evict 0 (in 2) or 3 (in 1): refused.
  EXPECT_FALSE(c.cache().begin_fetch(1, FetchKind::kPrefetch));
  EXPECT_EQ(raw->stats().refusals, 1u);
}

TEST(FixedSetPolicy, OnACyclicTraceEveryPassHitsExactlyTheKeptKeysWithinOneOfOpt) {
  for (std::size_t layers : {5u, 6u, 8u}) {
    for (std::size_t capacity : {2u, 3u, 4u}) {
      const std::vector<TensorKey> cycle = one_pass(layers);
      // Keep capacity - 1 keys (one slot streams the rest), spread over the cycle.
      std::vector<TensorKey> keep;
      for (std::size_t i = 0; i + 1 < capacity; ++i) keep.push_back(static_cast<TensorKey>(i * 2));
      SimCache c(layers, capacity, std::make_unique<FixedSetPolicy>(keep));
      EXPECT_EQ(c.run(cycle), 0) << "the first pass brings everything in";
      for (int pass = 0; pass < 3; ++pass) {
        EXPECT_EQ(c.run(cycle), static_cast<int>(keep.size()))
            << layers << "/" << capacity << " pass " << pass;
        for (TensorKey k : keep) EXPECT_EQ(c.cache().state(k), EntryState::kResident) << k;
      }
      // OPT, which may change its set as it goes, gets at most one hit more per pass.
      const int passes = 4;
      const std::vector<TensorKey> trace = passes_of(cycle, passes);
      SimCache again(layers, capacity, std::make_unique<FixedSetPolicy>(keep));
      const int hits = again.run(trace), opt = brute_force_opt(trace, capacity);
      EXPECT_LE(hits, opt);
      EXPECT_GE(hits, opt - (passes - 1)) << layers << "/" << capacity;
    }
  }
}

TEST(FixedSetPolicy, APrefetchNeverEvictsAKeptKeyButComputeMayWhenNothingElseCanGo) {
  auto policy = std::make_unique<FixedSetPolicy>(std::vector<TensorKey>{0, 1});
  auto* raw = policy.get();
  EXPECT_TRUE(raw->kept(0) && raw->kept(1));
  EXPECT_FALSE(raw->kept(2) || raw->kept(100));
  SimCache c(5, 2, std::move(policy));
  c.run({0, 1});
  EXPECT_FALSE(c.cache().begin_fetch(2, FetchKind::kPrefetch)) << "only kept keys could make room";
  EXPECT_EQ(raw->stats().refusals, 1u);
  EXPECT_EQ(c.resident(), (std::set<TensorKey>{0, 1}));
  c.run({0, 2});  // compute: 1 (the least recently used kept key) goes
  EXPECT_EQ(c.resident(), (std::set<TensorKey>{0, 2}));
  c.access(1);  // back: 2 goes, being outside the set, though 0 is older
  EXPECT_EQ(c.resident(), (std::set<TensorKey>{0, 1}));
}

TEST(EvictionPolicy, SelectableByName) {
  EXPECT_EQ(make_eviction_policy("lru")->name(), "lru");
  EXPECT_EQ(make_eviction_policy("fifo")->name(), "fifo");
  EXPECT_EQ(make_eviction_policy("schedule", {0, 1})->name(), "schedule");
  EXPECT_EQ(make_eviction_policy("fixed")->name(), "fixed");
  const TensorKey keep[] = {3};
  auto fixed = make_eviction_policy("fixed", {}, true, keep);
  EXPECT_TRUE(dynamic_cast<FixedSetPolicy&>(*fixed).kept(3));
  EXPECT_THROW(make_eviction_policy("random"), ConfigError);
  EXPECT_THROW(make_eviction_policy("schedule"), ConfigError);  // needs the schedule
}

// What the conformance suite holds policies to: the base corrects a choice outside the
// candidates, or a refusal where none is allowed, and counts it.
TEST(EvictionPolicyBase, CorrectsAndCountsInvalidChoices) {
  class Wild final : public EvictionPolicy {
   public:
    std::optional<std::size_t> answer;
    std::string_view name() const noexcept override { return "wild"; }

   protected:
    std::optional<std::size_t> do_choose_victim(std::span<const TensorKey>, TensorKey,
                                                bool) override {
      return answer;
    }
  };
  Wild p;
  const TensorKey candidates[] = {4, 5, 6};
  p.answer = 999;
  EXPECT_EQ(p.choose_victim(candidates, 1, false), 0u);
  EXPECT_EQ(p.choose_victim(candidates, 1, true), std::nullopt);
  p.answer = std::nullopt;
  EXPECT_EQ(p.choose_victim(candidates, 1, false), 0u);
  EXPECT_EQ(p.stats().invalid_choices, 3u);
  EXPECT_EQ(p.choose_victim(candidates, 1, true), std::nullopt);  // a refusal it may make
  p.answer = 2;
  EXPECT_EQ(p.choose_victim(candidates, 1, false), 2u);
  EXPECT_EQ(p.stats().invalid_choices, 3u);
}

// The installed conformance suite, for every built-in policy as the engine makes it.
struct LruKind {
  static std::unique_ptr<EvictionPolicy> make(const CacheKeys&) {
    return make_eviction_policy("lru");
  }
};
struct FifoKind {
  static std::unique_ptr<EvictionPolicy> make(const CacheKeys&) {
    return make_eviction_policy("fifo");
  }
};
struct ScheduleKind {
  static std::unique_ptr<EvictionPolicy> make(const CacheKeys& keys) {
    return make_eviction_policy("schedule", keys.schedule.trace(), keys.schedule.repeats());
  }
};
struct FixedKind {
  static std::unique_ptr<EvictionPolicy> make(const CacheKeys& keys) {
    const auto keep = keys.schedule.fixed_set_for_cache(keys.key_bytes, keys.cache_bytes);
    return make_eviction_policy("fixed", {}, true, keep);
  }
};
using BuiltinPolicies = ::testing::Types<LruKind, FifoKind, ScheduleKind, FixedKind>;
INSTANTIATE_TYPED_TEST_SUITE_P(Builtin, EvictionPolicyConformance, BuiltinPolicies);

}  // namespace
}  // namespace xlshare
