// The Prefetcher with built-in and user policies over a real pool and emulated link.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include "support/pool_fixture.hpp"
#include "xlshare/error.hpp"
#include "xlshare/memory/checksum.hpp"
#include "xlshare/prefetch/prefetcher.hpp"
#include "xlshare/testing/prefetch_policy_conformance.hpp"

namespace xlshare {
namespace {

using namespace xlshare::conformance;

// Records every call the Prefetcher makes, and plans the step after next only.
class RecordingPolicy final : public PrefetchPolicy {
 public:
  std::vector<std::string> calls;
  std::vector<std::size_t> steps_planned;
  std::string_view name() const noexcept override { return "recording"; }

 protected:
  void do_on_model_loaded(const Schedule& s) override {
    calls.push_back(fmt::format("loaded:{}", s.size()));
  }
  void do_on_step_begin(std::size_t step) override {
    calls.push_back(fmt::format("begin:{}", step));
  }
  void do_on_step_end(std::size_t step) override { calls.push_back(fmt::format("end:{}", step)); }
  void do_plan(const PrefetchContext& ctx, std::vector<TensorKey>& out) override {
    calls.push_back(fmt::format("plan:{}", ctx.step));
    steps_planned.push_back(ctx.step);
    // The budget less what compute holds of the step about to run (its one tensor, key = step).
    EXPECT_EQ(ctx.budget_bytes,
              ctx.cache.budget_bytes() - ctx.cache.key_bytes(static_cast<TensorKey>(ctx.step)));
    EXPECT_GT(ctx.cache.key_bytes(static_cast<TensorKey>(ctx.step)), 0u);
    const std::size_t target = ctx.schedule.next(ctx.schedule.next(ctx.step));
    if (target < ctx.schedule.size()) {
      for (TensorKey k : ctx.schedule.step(target).keys) out.push_back(k);
    }
  }
};

Schedule one_tensor_per_step(std::size_t n) {
  std::vector<ScheduleStep> steps;
  for (std::size_t i = 0; i < n; ++i)
    steps.push_back({fmt::format("block.{}", i), {static_cast<TensorKey>(i)}});
  return Schedule(std::move(steps), /*repeats=*/true);
}

TEST(Prefetcher, AUserPolicyIsCalledInOrderAndItsPlanIsHonoured) {
  constexpr std::size_t kSteps = 6;
  test::ModelPool model(kSteps, 16 * 1024);
  auto pool = model.attach();
  auto sources = test::ModelPool::sources(*pool);
  DeviceCache cache(4 * 64 * 1024, test::ModelPool::sizes(sources), std::make_unique<LruPolicy>());
  TransferEngine engine(*pool, nullptr, sources, cache);
  const Schedule schedule = one_tensor_per_step(kSteps);
  auto policy = std::make_unique<RecordingPolicy>();
  auto* rec = policy.get();
  Prefetcher prefetcher(schedule, std::move(policy), engine, cache);
  for (std::size_t s = 0; s < kSteps; ++s) {
    if (s >= 2) {
      // Step s was planned two steps ago: it is in the cache or on its way, not absent.
      EXPECT_NE(cache.state(static_cast<TensorKey>(s)), EntryState::kAbsent) << s;
    }
    prefetcher.begin_step(s);
    auto lease = prefetcher.acquire(static_cast<TensorKey>(s));
    EXPECT_EQ(checksum64(lease.bytes()), sources[s].primary.checksum);
    lease.release();
    prefetcher.end_step(s);
  }
  ASSERT_EQ(rec->calls.size(), 1 + 3 * kSteps);
  EXPECT_EQ(rec->calls[0], "loaded:6");
  for (std::size_t s = 0; s < kSteps; ++s) {
    EXPECT_EQ(rec->calls[1 + 3 * s], fmt::format("begin:{}", s));
    EXPECT_EQ(rec->calls[2 + 3 * s], fmt::format("plan:{}", s));
    EXPECT_EQ(rec->calls[3 + 3 * s], fmt::format("end:{}", s));
  }
  const auto f = prefetcher.figures();
  EXPECT_EQ(f.acquires, kSteps);
  EXPECT_GT(rec->stats().keys_planned, 0u);
  EXPECT_GT(f.prefetch_accuracy, 0.5);
}

TEST(Prefetcher, PlanKeepsWithinBudgetAndDropsPresentKeys) {
  test::ModelPool model(4, 1024);
  auto pool = model.attach();
  auto sources = test::ModelPool::sources(*pool);
  DeviceCache cache(2 * 4096, test::ModelPool::sizes(sources), std::make_unique<LruPolicy>());
  const Schedule schedule = one_tensor_per_step(4);
  LookaheadPolicy policy(3);
  ASSERT_TRUE(cache.begin_fetch(0, FetchKind::kDemand));
  cache.complete_fetch(0, true);
  const auto plan = policy.plan(PrefetchContext{schedule, 0, cache, cache.budget_bytes()});
  // Step 0 is resident (dropped); steps 1..3 ask for 3 tensors but 2 fit.
  EXPECT_EQ(std::vector<TensorKey>(plan.begin(), plan.end()), (std::vector<TensorKey>{1, 2}));
  EXPECT_EQ(policy.stats().keys_dropped_present, 1u);
  EXPECT_EQ(policy.stats().keys_dropped_budget, 1u);
}

TEST(Prefetcher, AStepLargerThanTheCacheIsRefusedAtSetUp) {
  test::ModelPool model(3, 1024);
  auto pool = model.attach();
  auto sources = test::ModelPool::sources(*pool);
  DeviceCache cache(4096 + 100, test::ModelPool::sizes(sources), std::make_unique<LruPolicy>());
  TransferEngine engine(*pool, nullptr, sources, cache);
  const Schedule schedule({{"embedding", {0}}, {"block.0", {1, 2}}});
  EXPECT_THROW(Prefetcher(schedule, std::make_unique<LookaheadPolicy>(1), engine, cache),
               ConfigError);
}

// Real arithmetic over a tensor's floats: the synthetic compute step.
double compute(std::span<const std::byte> bytes, int rounds) {
  const auto* f = reinterpret_cast<const float*>(bytes.data());
  const std::size_t n = bytes.size() / 4;
  double acc = 0;
  for (int r = 0; r < rounds; ++r) {
    for (std::size_t i = 0; i < n; ++i) acc += std::sqrt(static_cast<double>(f[i]) + r);
  }
  return acc;
}

struct PassResult {
  double checksum;
  Counters counters;
};

PassResult run_passes(const test::ModelPool& model, std::size_t lookahead, std::size_t steps) {
  EmulatorOptions o;
  // 1 GB/s: a 512 KiB tensor takes ~0.5 ms on the link.
  o.link = {.bandwidth_gbps = 1.0, .latency_ns = 1000, .overhead_ns = 0, .chunk_bytes = 256 * 1024};
  auto pool = model.attach(o);
  auto sources = test::ModelPool::sources(*pool);
  DeviceCache cache(4 * 512 * 1024, test::ModelPool::sizes(sources), std::make_unique<LruPolicy>());
  TransferEngine engine(*pool, nullptr, sources, cache);
  const Schedule schedule = one_tensor_per_step(steps);
  Prefetcher prefetcher(schedule, std::make_unique<LookaheadPolicy>(lookahead), engine, cache);
  double sum = 0;
  for (int pass = 0; pass < 2; ++pass) {
    for (std::size_t s = 0; s < steps; ++s) {
      prefetcher.begin_step(s);
      auto lease = prefetcher.acquire(static_cast<TensorKey>(s));
      sum += compute(lease.bytes(), 2);
      lease.release();
      prefetcher.end_step(s);
    }
  }
  engine.wait_idle();
  return {sum, prefetcher.counters()};
}

// On real threads and a real (paced) link: prefetching changes when bytes arrive, never the
// numbers. How much of the link time it hides is a question of timing, checked exactly on
// the virtual clock (tests/planner/virtual_near_tier_test.cpp,
// VirtualNearTier.LookaheadHidesTransfersBehindCompute), not here.
TEST(Prefetcher, LookaheadChangesWhenBytesArriveNotTheNumbers) {
  constexpr std::size_t kSteps = 12;
  test::ModelPool model(kSteps, 128 * 1024);  // 512 KiB per step
  const auto none = run_passes(model, 0, kSteps);
  const auto one = run_passes(model, 1, kSteps);
  const auto two = run_passes(model, 2, kSteps);
  EXPECT_EQ(none.checksum, one.checksum);
  EXPECT_EQ(none.checksum, two.checksum);
  // Without lookahead nothing is prefetched and nothing is ready (LRU keeps nothing of a
  // cyclic pass three times the cache); with it, the prefetcher brings steps ahead.
  EXPECT_EQ(none.counters.bytes_prefetched, 0u);
  EXPECT_EQ(none.counters.ready, 0u);
  EXPECT_GT(one.counters.bytes_prefetched, 0u);
  EXPECT_GT(two.counters.bytes_prefetched, one.counters.bytes_prefetched / 2);
  EXPECT_EQ(none.counters.acquires, 2 * kSteps);
  EXPECT_EQ(two.counters.acquires, 2 * kSteps);
}

TEST(Schedule, GroupsTransformerTensorsIntoSteps) {
  const std::vector<std::string> names = {
      "token_embd.weight",  "blk.0.attn_q.weight", "blk.1.attn_q.weight",  "blk.0.ffn_up.weight",
      "output_norm.weight", "output.weight",       "blk.10.attn_q.weight", "blk.2.attn_q.weight"};
  const Schedule s = Schedule::for_transformer(names);
  ASSERT_EQ(s.size(), 6u);
  EXPECT_EQ(s.step(0).name, "embedding");
  EXPECT_EQ(s.step(1).name, "block.0");
  EXPECT_EQ(s.step(1).keys, (std::vector<TensorKey>{1, 3}));
  EXPECT_EQ(s.step(3).name, "block.2");
  EXPECT_EQ(s.step(4).name, "block.10");
  EXPECT_EQ(s.step(5).name, "head");
  EXPECT_EQ(s.step(5).keys, (std::vector<TensorKey>{4, 5}));
  EXPECT_EQ(s.next(5), 0u);
  EXPECT_EQ(s.trace().size(), names.size());
}

TEST(Schedule, AFixedSetFitsItsBytesCountsEachKeyOnceAndEvensOutWhatStreams) {
  // Step 0: keys 0 (40) and 1 (10); step 1: key 2 (30), key 0 again; step 2: keys 3, 4 (20 each).
  const Schedule s({{"a", {0, 1}}, {"b", {2, 0}}, {"c", {3, 4}}});
  const std::vector<std::uint64_t> bytes = {40, 10, 30, 20, 20};
  EXPECT_TRUE(s.fixed_set(bytes, 0).empty());
  EXPECT_TRUE(s.fixed_set(bytes, 9).empty()) << "nothing fits";
  // 60: the heaviest step (c: 40, a: 50) first: a's 40, then c's 20 (c 40 > b 30 > a 10).
  EXPECT_EQ(s.fixed_set(bytes, 60), (std::vector<TensorKey>{0, 3}));
  // Everything fits: every key exactly once, key 0 counted in step a only.
  auto all = s.fixed_set(bytes, 120);
  std::sort(all.begin(), all.end());
  EXPECT_EQ(all, (std::vector<TensorKey>{0, 1, 2, 3, 4}));
  for (std::uint64_t budget = 0; budget <= 130; budget += 5) {
    std::uint64_t sum = 0;
    for (TensorKey k : s.fixed_set(bytes, budget)) sum += bytes[k];
    EXPECT_LE(sum, budget);
  }
}

TEST(Schedule, TheFixedSetForACacheLeavesRoomForTheHeaviestStepToStream) {
  const Schedule s({{"a", {0, 1}}, {"b", {2, 0}}, {"c", {3, 4}}});
  const std::vector<std::uint64_t> bytes = {40, 10, 30, 20, 20};
  EXPECT_EQ(s.heaviest_step_outside(bytes, {}), 50u);  // a: 40 + 10 (b's key 0 counted in a)
  const TensorKey zero[] = {0};
  EXPECT_EQ(s.heaviest_step_outside(bytes, zero), 40u);  // c
  // A cache of 100: the sets of 80% ... 50% all leave less than 1.4x their heaviest step
  // outside; 45% keeps key 0 (40), leaving 60 >= 1.4 x 40.
  EXPECT_EQ(s.fixed_set_for_cache(bytes, 100), (std::vector<TensorKey>{0}));
  // A cache of 70: 40% (28) keeps key 1 (a's 40 does not fit), leaving 60 >= 1.4 x c's 40.
  EXPECT_EQ(s.fixed_set_for_cache(bytes, 70), (std::vector<TensorKey>{1}));
  // A cache of 60: no set leaves 1.4x; 45% (27) keeps key 1, leaving 50 >= 1x c's 40.
  EXPECT_EQ(s.fixed_set_for_cache(bytes, 60), (std::vector<TensorKey>{1}));
  EXPECT_TRUE(s.fixed_set_for_cache(bytes, 10).empty()) << "too small to keep anything";
}

TEST(Figures, EveryFigureFromTwoSnapshotsWithOneDefinition) {
  Counters a, b;
  Figures f = figures_between(a, b);
  EXPECT_EQ(f.acquires, 0u);
  EXPECT_EQ(f.ready_rate, 1.0) << "nothing acquired: nothing waited";
  EXPECT_EQ(f.reuse_rate, 0.0) << "nothing acquired: nothing served again";
  EXPECT_EQ(f.overlap, 1.0) << "no link time: nothing to hide";
  EXPECT_EQ(f.prefetch_accuracy, 0.0);
  a = {10, 5, 2, 1'000'000, 4'000'000, 1000, 100, 50, 1, 0, 0};
  b = {30, 20, 12, 3'000'000, 12'000'000, 9000, 300, 350, 4, 1, 2};
  f = figures_between(a, b);
  EXPECT_EQ(f.acquires, 20u);
  EXPECT_DOUBLE_EQ(f.ready_rate, 15.0 / 20);
  EXPECT_DOUBLE_EQ(f.reuse_rate, 10.0 / 20);
  EXPECT_DOUBLE_EQ(f.stall_ms, 2.0);
  EXPECT_DOUBLE_EQ(f.transfer_ms, 8.0);
  EXPECT_DOUBLE_EQ(f.overlap, 1.0 - 2.0 / 8.0);
  EXPECT_EQ(f.link_bytes, 8000u);
  EXPECT_DOUBLE_EQ(f.link_gbps, 8000.0 / 8'000'000);
  EXPECT_EQ(f.prefetch_accuracy, 1.0) << "300 used of 200 prefetched in the window: capped";
  EXPECT_EQ(f.retries, 3u);
  EXPECT_EQ(f.failovers, 1u);
  EXPECT_EQ(f.checksum_mismatches, 2u);
  b.stall_ns = 20'000'000;  // more stall than link time: no overlap, not a negative one
  EXPECT_EQ(figures_between(a, b).overlap, 0.0);
}

// The installed conformance suite, for the built-in policy fetching on demand and ahead.
template <std::size_t K>
struct LookaheadKind {
  static std::unique_ptr<PrefetchPolicy> make() { return std::make_unique<LookaheadPolicy>(K); }
};
using BuiltinPolicies = ::testing::Types<LookaheadKind<0>, LookaheadKind<2>>;
INSTANTIATE_TYPED_TEST_SUITE_P(Builtin, PrefetchPolicyConformance, BuiltinPolicies);

}  // namespace
}  // namespace xlshare
