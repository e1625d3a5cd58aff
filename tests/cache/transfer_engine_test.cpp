// TransferEngine: full passes over a pool through the emulated link, with faults.
#include <gtest/gtest.h>

#include "support/pool_fixture.hpp"
#include "xlshare/error.hpp"
#include "xlshare/memory/checksum.hpp"

namespace xlshare {
namespace {

constexpr std::size_t kTensors = 24;
constexpr std::uint64_t kFloats = 64 * 1024;  // 256 KiB each

struct Rig {
  explicit Rig(const test::ModelPool& model, EmulatorOptions o = {},
               const test::ModelPool* replica_model = nullptr, TransferConfig config = {},
               EmulatorOptions replica_o = {})
      : pool(model.attach(std::move(o))),
        replica(replica_model ? replica_model->attach(std::move(replica_o)) : nullptr),
        sources(test::ModelPool::sources(*pool, replica.get())),
        cache(kTensors * kFloats * 4, test::ModelPool::sizes(sources),
              std::make_unique<LruPolicy>()),
        engine(*pool, replica.get(), sources, cache, config) {}

  // Fetches every tensor (prefetch), then acquires each and checks its bytes.
  int full_pass() {
    for (TensorKey k = 0; k < kTensors; ++k) engine.prefetch(k);
    int intact = 0;
    for (TensorKey k = 0; k < kTensors; ++k) {
      auto lease = cache.acquire(k);
      if (!lease) {
        engine.demand(k);
        lease = cache.acquire(k);
      }
      if (lease && checksum64(lease.bytes()) == sources[k].primary.checksum) ++intact;
    }
    engine.wait_idle();
    return intact;
  }
  std::unique_ptr<Pool> pool, replica;
  std::vector<TensorSource> sources;
  DeviceCache cache;
  TransferEngine engine;
};

TEST(TransferEngine, AFullPassDeliversEveryTensorIntact) {
  test::ModelPool model(kTensors, kFloats);
  EmulatorOptions o;
  o.link = link_preset("cxl-x8");
  Rig rig(model, o);
  EXPECT_EQ(rig.full_pass(), static_cast<int>(kTensors));
  const auto s = rig.engine.stats();
  EXPECT_EQ(s.completed, kTensors);
  EXPECT_EQ(s.link_bytes, kTensors * kFloats * 4);
  EXPECT_GT(s.link_gbps(), 0.0);
  EXPECT_EQ(s.failed, 0u);
}

TEST(TransferEngine, TransientFaultsAtOnePercentAreRetriedAndCounted) {
  test::ModelPool model(kTensors, kFloats);
  EmulatorOptions o;
  o.faults.seed = 11;
  o.faults.transient_error_rate = 0.01;
  TransferConfig config;
  config.chunk_bytes = 16 * 1024;  // many transfers: 16 per tensor
  Rig rig(model, o, nullptr, config);
  for (int pass = 0; pass < 3; ++pass) {
    rig.cache.clear();
    EXPECT_EQ(rig.full_pass(), static_cast<int>(kTensors)) << "pass " << pass;
  }
  const auto s = rig.engine.stats();
  EXPECT_GT(s.retries, 0u);
  EXPECT_EQ(s.failed, 0u);
  EXPECT_EQ(s.retries, dynamic_cast<CxlEmulator&>(rig.pool->backend()).stats().transient_errors);
}

TEST(TransferEngine, SilentBitFlipsAreCaughtByChecksumsAndReRead) {
  test::ModelPool model(kTensors, kFloats);
  EmulatorOptions o;
  o.faults.seed = 5;
  o.faults.bit_flip_rate = 0.2;
  TransferConfig config;
  config.max_rereads = 20;
  Rig rig(model, o, nullptr, config);
  EXPECT_EQ(rig.full_pass(), static_cast<int>(kTensors));
  EXPECT_GT(rig.engine.stats().checksum_mismatches, 0u);
  EXPECT_GT(rig.engine.stats().rereads, 0u);
}

TEST(TransferEngine, APoisonedRangeIsServedFromTheReplica) {
  test::ModelPool model(kTensors, kFloats), copy(kTensors, kFloats);
  auto probe = model.attach();
  const auto t5 = probe->find_tensor("m/blk.5.w");
  EmulatorOptions o;
  o.faults.poisoned_ranges = {{t5.offset_bytes + 1000, 64}};
  Rig rig(model, o, &copy);
  EXPECT_EQ(rig.full_pass(), static_cast<int>(kTensors));
  EXPECT_GE(rig.engine.stats().failovers, 1u);
}

TEST(TransferEngine, WithoutAReplicaAFailureIsClearAndNamesTheTensor) {
  test::ModelPool model(kTensors, kFloats);
  auto probe = model.attach();
  const auto t5 = probe->find_tensor("m/blk.5.w");
  EmulatorOptions o;
  o.faults.poisoned_ranges = {{t5.offset_bytes, 64}};
  Rig rig(model, o);
  EXPECT_EQ(rig.full_pass(), static_cast<int>(kTensors) - 1);
  EXPECT_EQ(rig.engine.stats().failed, 2u);  // the prefetch, then compute's demand fetch
  const std::string why = rig.engine.failure_reason(5);
  EXPECT_NE(why.find("blk.5.w"), std::string::npos) << why;
  EXPECT_NE(why.find("poisoned"), std::string::npos) << why;
  EXPECT_NE(why.find("no replica"), std::string::npos) << why;
  EXPECT_EQ(rig.cache.state(5), EntryState::kAbsent);
}

TEST(TransferEngine, AnOfflinePrimaryFailsOverForGood) {
  test::ModelPool model(kTensors, kFloats), copy(kTensors, kFloats);
  EmulatorOptions o;
  o.faults.offline_after_transfers = 30;
  Rig rig(model, o, &copy);
  for (int pass = 0; pass < 2; ++pass) {
    rig.cache.clear();
    EXPECT_EQ(rig.full_pass(), static_cast<int>(kTensors));
  }
  EXPECT_GE(rig.engine.stats().failovers, 1u);
  EXPECT_EQ(rig.engine.stats().failed, 0u);
}

TEST(TransferEngine, ADemandFetchOvertakesQueuedPrefetches) {
  test::ModelPool model(kTensors, kFloats);
  EmulatorOptions o;
  o.link = {.bandwidth_gbps = 1.0, .latency_ns = 0, .overhead_ns = 0, .chunk_bytes = 64 * 1024};
  TransferConfig config;
  config.threads = 1;
  config.chunk_bytes = 32 * 1024;
  Rig rig(model, o, nullptr, config);
  for (TensorKey k = 0; k + 1 < kTensors; ++k) rig.engine.prefetch(k);  // ~6 ms of link
  rig.engine.demand(kTensors - 1);
  auto lease = rig.cache.acquire(kTensors - 1);
  ASSERT_TRUE(lease);
  // It arrived while most prefetches were still queued or running.
  std::size_t resident = 0;
  for (TensorKey k = 0; k + 1 < kTensors; ++k)
    resident += rig.cache.state(k) == EntryState::kResident;
  EXPECT_LT(resident, kTensors / 2);
  rig.engine.wait_idle();
}

}  // namespace
}  // namespace xlshare
