// The near tier on a VirtualClock against the real one: the same DeviceCache, policies and
// Prefetcher, once with VirtualTransfers (no bytes) and once with a real TransferEngine
// reading a real pool through the CxlEmulator, whose link runs on a ManualClock.
#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <limits>
#include <thread>

#include <fmt/format.h>

#include "xlshare/cache/device_cache.hpp"
#include "xlshare/cache/eviction_policy.hpp"
#include "xlshare/cache/transfer_engine.hpp"
#include "xlshare/error.hpp"
#include "xlshare/memory/backend_uri.hpp"
#include "xlshare/memory/cxl_emulator.hpp"
#include "xlshare/memory/pool.hpp"
#include "xlshare/planner/virtual_clock.hpp"
#include "xlshare/planner/virtual_near_tier.hpp"
#include "xlshare/prefetch/prefetch_policy.hpp"
#include "xlshare/prefetch/prefetcher.hpp"

namespace xlshare {
namespace {

// --- VirtualClock ---------------------------------------------------------------------

TEST(VirtualClock, ThreadsInterleaveInTimeOrder) {
  VirtualClock clock;
  std::vector<std::string> log;
  auto sleeper = [&](std::string name, std::uint64_t step) {
    return [&, name, step] {
      for (int i = 0; i < 3; ++i) {
        clock.sleep_until_ns(clock.now_ns() + step);
        log.push_back(fmt::format("{}@{}", name, clock.now_ns()));
      }
    };
  };
  clock.at(25, [&] { log.push_back(fmt::format("event@{}", clock.now_ns())); });
  clock.run({sleeper("a", 10), sleeper("b", 15)});
  EXPECT_EQ(log,
            (std::vector<std::string>{"a@10", "b@15", "a@20", "event@25", "b@30", "a@30", "b@45"}));
  EXPECT_EQ(clock.now_ns(), 45u);
}

TEST(VirtualClock, AWaitEndsWhenAnEventMakesItsConditionTrue) {
  VirtualClock clock;
  bool flag = false;
  std::uint64_t woke = 0;
  clock.run({[&] {
    clock.at(1000, [&] {
      flag = true;
      clock.notify();
    });
    clock.wait_for([&] { return flag; });
    woke = clock.now_ns();
  }});
  EXPECT_EQ(woke, 1000u);
}

// Callbacks run on whichever thread holds the baton; they are not that thread's simulated
// thread: a sleep there only moves the clock, and the thread's own wait stays intact.
TEST(VirtualClock, ACallbackIsNotASimulatedThread) {
  VirtualClock clock;
  bool flag = false;
  std::uint64_t woke = 0;
  clock.run({[&] {
    clock.at(100, [&] {
      clock.sleep_until_ns(200);
      flag = true;
      clock.notify();
    });
    clock.wait_for([&] { return flag; });
    woke = clock.now_ns();
  }});
  EXPECT_EQ(woke, 200u);
}

TEST(VirtualClock, ADeadlockThrowsInsteadOfHanging) {
  VirtualClock clock;
  EXPECT_THROW(clock.run({[&] { clock.wait_for([] { return false; }); }}), Error);
}

TEST(VirtualClock, AnExceptionInOneThreadLetsTheOthersFinish) {
  VirtualClock clock;
  bool other_done = false;
  EXPECT_THROW(clock.run({[] { throw ConfigError("boom"); },
                          [&] {
                            clock.sleep_until_ns(100);
                            other_done = true;
                          }}),
               ConfigError);
  EXPECT_TRUE(other_done);
}

// --- the near tier's claims, on exact time ------------------------------------------------

// Twelve steps of one 512 KiB tensor, a cache of four, LRU, a 1 GB/s link: with compute per
// tensor about its link time, lookahead hides the transfers behind compute.
TEST(VirtualNearTier, LookaheadHidesTransfersBehindCompute) {
  std::vector<ScheduleStep> steps;
  for (TensorKey k = 0; k < 12; ++k) steps.push_back({fmt::format("block.{}", k), {k}});
  const Schedule schedule(steps);
  LinkParams link;
  link.bandwidth_gbps = 1.0;
  link.latency_ns = 1000;
  auto stall_ms = [&](std::size_t lookahead) {
    VirtualWorkerSpec spec;
    spec.schedule = &schedule;
    spec.key_bytes.assign(12, 512 * 1024);
    spec.cache_bytes = 4 * 512 * 1024;
    spec.eviction = [] { return make_eviction_policy("lru"); };
    spec.prefetch = [lookahead] { return std::make_unique<LookaheadPolicy>(lookahead); };
    spec.passes = 2;
    spec.key_ns = [](std::size_t, TensorKey) { return std::uint64_t{600'000}; };
    const auto r = run_virtual_workers({spec}, link);
    return figures_between({}, r.workers.front().counters).stall_ms;
  };
  const double none = stall_ms(0), one = stall_ms(1), two = stall_ms(2);
  // Every tensor on demand: 24 transfers of 524288 ns + 1000 ns of latency, all stalled.
  EXPECT_DOUBLE_EQ(none, 24 * (524'288 + 1'000) / 1e6);
  EXPECT_LT(one, 0.2 * none);
  EXPECT_LT(two, 0.2 * none);
}

// --- user policies that record what they are told and decide -------------------------

struct Trace {
  std::vector<std::string> events;
};

// A user's LRU, written against the public EvictionPolicy contract only.
class RecordingLru final : public EvictionPolicy {
 public:
  explicit RecordingLru(Trace& t) : t_(t) {}
  std::string_view name() const noexcept override { return "recording-lru"; }

 protected:
  std::optional<std::size_t> do_choose_victim(std::span<const TensorKey> candidates,
                                              TensorKey incoming, bool) override {
    std::size_t best = 0;
    for (std::size_t i = 1; i < candidates.size(); ++i) {
      if (use(candidates[i]) < use(candidates[best])) best = i;
    }
    t_.events.push_back(fmt::format("victim {} for {}", candidates[best], incoming));
    return best;
  }
  void do_on_insert(TensorKey k) override {
    t_.events.push_back(fmt::format("insert {}", k));
    touch(k);
  }
  void do_on_access(TensorKey k) override {
    t_.events.push_back(fmt::format("access {}", k));
    touch(k);
  }
  void do_on_remove(TensorKey k) override { t_.events.push_back(fmt::format("remove {}", k)); }

 private:
  std::uint64_t use(TensorKey k) const { return k < last_.size() ? last_[k] : 0; }
  void touch(TensorKey k) {
    if (k >= last_.size()) last_.resize(k + 1, 0);
    last_[k] = ++clock_;
  }
  Trace& t_;
  std::vector<std::uint64_t> last_;
  std::uint64_t clock_ = 0;
};

// A user's lookahead that records every plan it proposes.
class RecordingLookahead final : public PrefetchPolicy {
 public:
  RecordingLookahead(Trace& t, std::size_t k) : t_(t), k_(k) {}
  std::string_view name() const noexcept override { return "recording-lookahead"; }

 protected:
  void do_plan(const PrefetchContext& ctx, std::vector<TensorKey>& out) override {
    std::size_t s = ctx.step;
    for (std::size_t i = 0; i <= k_ && s < ctx.schedule.size(); ++i) {
      if (i > 0 || k_ > 0) {
        for (TensorKey key : ctx.schedule.step(s).keys) out.push_back(key);
      }
      s = ctx.schedule.next(s);
    }
    std::string plan = fmt::format("plan step {} budget {} free {}:", ctx.step, ctx.budget_bytes,
                                   ctx.cache.bytes_free());
    for (TensorKey key : out) plan += fmt::format(" {}", key);
    t_.events.push_back(plan);
  }

 private:
  Trace& t_;
  std::size_t k_;
};

// --- a real pool on an emulated link with a manual clock --------------------------------

// A CacheWaiter for the real run: waits by polling (the transfer thread changes the cache)
// and times on the ManualClock, so that the real run's stall is in the same time as the
// virtual run's.
class ManualWaiter final : public CacheWaiter {
 public:
  explicit ManualWaiter(ManualClock& c) : c_(c) {}
  Clock& clock() noexcept override { return c_; }
  void wait_for(const std::function<bool()>& done) override {
    while (!done()) std::this_thread::sleep_for(std::chrono::microseconds(20));
  }

 private:
  ManualClock& c_;
};

struct Scenario {
  std::size_t lookahead = 0;
  double cache_share = 0.5;  // of the model
  int passes = 3;
  bool builtin_fixed = false;  // FixedSetPolicy instead of the recording LRU
};

struct Outcome {
  Trace trace;
  CacheStats cache;
  Counters counters;
  PrefetchStats prefetch;
  std::vector<std::uint64_t> pass_end_ns;
};

constexpr std::uint64_t kStepNs = 10'000'000;  // longer than any step's prefetches take
std::uint64_t key_ns(std::uint64_t bytes) { return 2000 + bytes / 16; }

class VirtualAgainstReal : public ::testing::Test {
 protected:
  void SetUp() override {
    uri_ = fmt::format("shm://xlshare-planner-test-{}", ::getpid());
    if (backend_exists(uri_)) remove_backend(uri_);
    static constexpr std::uint64_t kFloats[3] = {3000, 12000, 40000};
    std::vector<std::string> names;
    {
      auto pool = create_pool(uri_, 8u << 20);
      ModelWriter w = pool->begin_model("m");
      for (std::size_t s = 0; s < kSteps; ++s) {
        for (std::size_t t = 0; t < 3; ++t) {
          const std::uint64_t shape[] = {kFloats[(s + t) % 3]};
          names.push_back(fmt::format("blk.{}.w{}", s, t));
          auto bytes = w.add_tensor(names.back(), DType::kF32, shape);
          for (std::size_t i = 0; i < bytes.size(); ++i)
            bytes[i] = static_cast<std::byte>(i * 7 + s);
        }
      }
      w.seal();
    }
    link_.bandwidth_gbps = 1.0;  // one byte per ns
    link_.latency_ns = 500;
    link_.overhead_ns = 100;
    link_.chunk_bytes = 16 * 1024;
    EmulatorOptions o;
    o.link = link_;
    o.clock = &clock_;
    o.check_host_rate = false;
    pool_ = Pool::attach(std::make_unique<CxlEmulator>(open_backend(uri_), o), PoolRole::kReader);
    const auto view = pool_->model("m");
    for (const auto& name : names) {
      const TensorInfo& t = view->at(name);
      sources_.push_back(TensorSource{t, std::nullopt});
      key_bytes_.push_back(t.size_bytes);
      key_tiles_.push_back(t.tile_bytes);
      total_ += t.size_bytes;
    }
    schedule_ = Schedule::for_transformer(names);
  }
  void TearDown() override {
    pool_.reset();
    if (backend_exists(uri_)) remove_backend(uri_);
  }

  std::unique_ptr<EvictionPolicy> eviction(const Scenario& sc, Trace& t, std::uint64_t cache) {
    if (!sc.builtin_fixed) return std::make_unique<RecordingLru>(t);
    return std::make_unique<FixedSetPolicy>(schedule_.fixed_set_for_cache(key_bytes_, cache));
  }
  std::uint64_t cache_bytes(const Scenario& sc) const {
    return static_cast<std::uint64_t>(sc.cache_share * static_cast<double>(total_));
  }

  Outcome real(const Scenario& sc) {
    Outcome out;
    const std::uint64_t cache_size = cache_bytes(sc);
    ManualWaiter waiter(clock_);
    DeviceCache cache(cache_size, key_bytes_, eviction(sc, out.trace, cache_size),
                      HostMemory::instance(), &waiter);
    TransferConfig tc;
    tc.threads = 1;
    tc.chunk_bytes = 40 * 1024;
    TransferEngine engine(*pool_, nullptr, sources_, cache, tc);
    Prefetcher pf(schedule_, std::make_unique<RecordingLookahead>(out.trace, sc.lookahead), engine,
                  cache, StepResidency::kOneTensorAtATime);
    const std::uint64_t t0 = clock_.now_ns();
    for (int pass = 0; pass < sc.passes; ++pass) {
      for (std::size_t s = 0; s < schedule_.size(); ++s) {
        const std::uint64_t step_start = clock_.now_ns();
        pf.begin_step(s);
        // The prefetches land while the step's own compute runs (kStepNs outlasts them).
        engine.wait_idle();
        EXPECT_LE(clock_.now_ns(), step_start + kStepNs);
        clock_.advance_to(step_start + kStepNs);
        for (TensorKey k : schedule_.step(s).keys) {
          DeviceCache::Lease lease = pf.acquire(k);
          EXPECT_TRUE(lease);
          clock_.advance_to(clock_.now_ns() + key_ns(key_bytes_[k]));
        }
        pf.end_step(s);
      }
      out.pass_end_ns.push_back(clock_.now_ns() - t0);
    }
    out.cache = cache.stats();
    out.counters = pf.counters();
    out.prefetch = pf.policy().stats();
    EXPECT_EQ(cache.check(), "");
    return out;
  }

  Outcome simulated(const Scenario& sc) {
    Outcome out;
    VirtualWorkerSpec spec;
    spec.schedule = &schedule_;
    spec.key_bytes = key_bytes_;
    spec.key_tile_bytes = key_tiles_;
    spec.cache_bytes = cache_bytes(sc);
    spec.eviction = [&, sc] { return eviction(sc, out.trace, spec.cache_bytes); };
    spec.prefetch = [&, sc] {
      return std::make_unique<RecordingLookahead>(out.trace, sc.lookahead);
    };
    spec.copy_threads = 1;
    spec.chunk_bytes = 40 * 1024;
    spec.passes = static_cast<std::size_t>(sc.passes);
    spec.step_ns = [](std::size_t, std::size_t) { return kStepNs; };
    spec.key_ns = [&](std::size_t, TensorKey k) { return key_ns(key_bytes_[k]); };
    const VirtualRunResult r = run_virtual_workers({spec}, link_, 0.0);
    const auto& w = r.workers.front();
    out.cache = w.cache;
    out.counters = w.counters;
    out.prefetch = w.prefetch;
    out.pass_end_ns = w.pass_end_ns;
    return out;
  }

  void expect_same(const Outcome& v, const Outcome& r) {
    EXPECT_EQ(v.trace.events, r.trace.events);
    EXPECT_EQ(v.pass_end_ns, r.pass_end_ns);
    EXPECT_EQ(v.cache.acquires, r.cache.acquires);
    EXPECT_EQ(v.cache.acquires_ready, r.cache.acquires_ready);
    EXPECT_EQ(v.cache.acquires_reused, r.cache.acquires_reused);
    EXPECT_EQ(v.cache.fetches_demand, r.cache.fetches_demand);
    EXPECT_EQ(v.cache.fetches_prefetch, r.cache.fetches_prefetch);
    EXPECT_EQ(v.cache.prefetches_refused, r.cache.prefetches_refused);
    EXPECT_EQ(v.cache.evictions, r.cache.evictions);
    EXPECT_EQ(v.cache.bytes_prefetched, r.cache.bytes_prefetched);
    EXPECT_EQ(v.cache.bytes_prefetched_used, r.cache.bytes_prefetched_used);
    EXPECT_EQ(v.cache.peak_bytes, r.cache.peak_bytes);
    // Not compared: acquires_waited and wait_ns. After a demand fetch the real transfer
    // thread (whose link sleeps cost no real time) may land the tensor before compute
    // looks again; the stall over the whole acquisition is the same either way.
    EXPECT_EQ(v.counters.ready, r.counters.ready);
    EXPECT_EQ(v.counters.reused, r.counters.reused);
    EXPECT_EQ(v.counters.stall_ns, r.counters.stall_ns);
    EXPECT_EQ(v.counters.link_bytes, r.counters.link_bytes);
    EXPECT_EQ(v.prefetch.keys_planned, r.prefetch.keys_planned);
    EXPECT_EQ(v.prefetch.keys_dropped_present, r.prefetch.keys_dropped_present);
    EXPECT_EQ(v.prefetch.keys_dropped_budget, r.prefetch.keys_dropped_budget);
    EXPECT_EQ(v.prefetch.bytes_planned, r.prefetch.bytes_planned);
  }

  static constexpr std::size_t kSteps = 6;
  std::string uri_;
  ManualClock clock_{1'000'000};
  LinkParams link_;
  std::unique_ptr<Pool> pool_;
  std::vector<TensorSource> sources_;
  std::vector<std::uint64_t> key_bytes_, key_tiles_;
  std::uint64_t total_ = 0;
  Schedule schedule_;
};

TEST_F(VirtualAgainstReal, DemandOnlySameTraceCountsAndTimes) {
  const Scenario sc{.lookahead = 0, .cache_share = 0.5, .passes = 3};
  const Outcome v = simulated(sc);
  const Outcome r = real(sc);
  expect_same(v, r);
  // Not trivially equal: everything came on demand, with stalls and evictions.
  EXPECT_GT(v.cache.fetches_demand, 0u);
  EXPECT_GT(v.cache.evictions, 0u);
  EXPECT_GT(v.counters.stall_ns, 0u);
  EXPECT_EQ(v.cache.fetches_prefetch, 0u);
}

TEST_F(VirtualAgainstReal, LookaheadInATightCacheSameDecisions) {
  // Room for little more than the heaviest step: prefetches are refused and compute evicts.
  const Scenario sc{.lookahead = 2, .cache_share = 0.3, .passes = 3};
  const Outcome v = simulated(sc);
  const Outcome r = real(sc);
  expect_same(v, r);
  EXPECT_GT(v.cache.fetches_prefetch, 0u);
  EXPECT_GT(v.prefetch.keys_dropped_budget, 0u);
  EXPECT_GT(v.cache.acquires_ready, 0u);
  EXPECT_GT(v.cache.evictions, 0u);
}

TEST_F(VirtualAgainstReal, BuiltInFixedSetSameDecisions) {
  const Scenario sc{.lookahead = 1, .cache_share = 0.6, .passes = 4, .builtin_fixed = true};
  const Outcome v = simulated(sc);
  const Outcome r = real(sc);
  expect_same(v, r);
  EXPECT_GT(v.cache.acquires_reused, 0u);
}

TEST_F(VirtualAgainstReal, AVirtualRunIsDeterministic) {
  const Scenario sc{.lookahead = 2, .cache_share = 0.3, .passes = 3};
  const Outcome a = simulated(sc);
  const Outcome b = simulated(sc);
  expect_same(a, b);
}

// Two workers on one shared link: each gets about half, and together they never exceed it.
TEST_F(VirtualAgainstReal, WorkersShareTheLink) {
  VirtualWorkerSpec spec;
  spec.schedule = &schedule_;
  spec.key_bytes = key_bytes_;
  spec.cache_bytes = total_ / 4;
  spec.eviction = [] { return make_eviction_policy("lru"); };
  spec.prefetch = [] { return std::make_unique<LookaheadPolicy>(2); };
  spec.passes = 3;
  LinkParams port = link_;
  port.latency_ns = 0;
  port.overhead_ns = 0;
  const auto one = run_virtual_workers({spec}, port, 1.0);
  const auto two = run_virtual_workers({spec, spec}, port, 1.0);
  // Transfer-bound: the link carries the pass, so two workers take about twice as long.
  const double ratio = static_cast<double>(two.end_ns) / static_cast<double>(one.end_ns);
  EXPECT_GT(ratio, 1.8);
  EXPECT_LT(ratio, 2.2);
  // Never more than one byte per ns over the shared link.
  EXPECT_LE(two.link_bytes, two.end_ns + 1);
  EXPECT_EQ(two.workers[0].counters.link_bytes, two.workers[1].counters.link_bytes);
}

// A host's copy rate caps what the link could carry: per channel, and all channels together.
TEST_F(VirtualAgainstReal, CopyRatesCapTheChannels) {
  VirtualWorkerSpec spec;
  spec.schedule = &schedule_;
  spec.key_bytes = key_bytes_;
  spec.cache_bytes = 2 * total_;  // room to prefetch far ahead: both channels busy
  spec.eviction = [] { return make_eviction_policy("lru"); };
  spec.prefetch = [] { return std::make_unique<LookaheadPolicy>(4); };
  spec.passes = 1;
  LinkParams fast;  // an unpaced link: only the copy rates cost time
  auto bytes_per_ns = [&](double per_channel, double total) {
    VirtualWorkerSpec s = spec;
    s.copy_gbps = per_channel;
    s.copy_gbps_total = total;
    const auto r = run_virtual_workers({s}, fast);
    return static_cast<double>(r.link_bytes) / static_cast<double>(r.end_ns);
  };
  const double free_copy = bytes_per_ns(0, 0);
  const double two_channels = bytes_per_ns(0.5, 0);  // two channels of 0.5 GB/s
  const double capped = bytes_per_ns(0.5, 0.5);      // ... that share 0.5 GB/s
  EXPECT_EQ(free_copy, std::numeric_limits<double>::infinity());
  EXPECT_LE(two_channels, 1.0 + 1e-6);
  EXPECT_GT(two_channels, 0.6);  // both channels busy most of the time
  EXPECT_LE(capped, 0.5 + 1e-6);
  EXPECT_GT(capped, 0.4);
}

}  // namespace
}  // namespace xlshare
