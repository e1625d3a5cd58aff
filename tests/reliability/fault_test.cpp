// Faults end to end, through the engine: link errors, corruption, a device going offline,
// workers and loaders killed at random points. Never a wrong token; the pool survives.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>

#include <chrono>
#include <random>
#include <thread>

#include "memory/pool_layout.hpp"
#include "model/model_support.hpp"
#include "xlshare/engine/inference_engine.hpp"
#include "xlshare/error.hpp"

namespace xlshare {
namespace {

SyntheticModel fault_model() { return create_sample_transformer_model(64, 12, 4, 2, 160, 256, 31); }

class Faults : public ::testing::Test {
 protected:
  Faults()
      : uri_("shm://" + test::unique_name("faults")),
        replica_uri_("shm://" + test::unique_name("faults-replica")),
        guard_(uri_),
        replica_guard_(replica_uri_) {
    const auto m = fault_model();
    for (const auto& u : {uri_, replica_uri_}) {
      EngineConfig c;
      c.pool_uri = u;
      InferenceEngine(c).register_model(m, "m");
    }
    for (const auto& d : m.data) model_bytes_ += d.size() * 4;
    EngineConfig resident = config();
    resident.cache_bytes = 0;
    InferenceEngine reference(resident);
    reference.attach_model("m");
    want_ = reference.generate(prompt_, 8);
  }
  EngineConfig config() const {
    EngineConfig c;
    c.placement = Placement::kCopy;  // the near-cache path (a GPU's); in place has its own tests
    c.pool_uri = uri_;
    c.link_preset = "none";
    c.cache_bytes = model_bytes_ / 8;
    return c;
  }
  std::string uri_, replica_uri_;
  test::BackendGuard guard_, replica_guard_;
  std::uint64_t model_bytes_ = 0;
  const std::vector<std::int32_t> prompt_ = {3, 14, 15, 92, 65};
  std::vector<std::int32_t> want_;
};

TEST_F(Faults, TransientLinkErrorsAtOneAndTenPercentChangeNothing) {
  for (double rate : {0.01, 0.10}) {
    const auto faults_before = Pool::attach(open_backend(uri_))->stats().link_faults;
    EngineConfig c = config();
    c.faults.seed = 99;
    c.faults.transient_error_rate = rate;
    InferenceEngine engine(c);
    engine.attach_model("m");
    EXPECT_EQ(engine.generate(prompt_, 8), want_) << rate;
    // Prefetches for a next token may still be in flight (a fault is counted by the pool
    // as it happens, the retry after its backoff): compare once they have settled.
    auto stats = engine.stats();
    for (int i = 0;
         i < 500 && stats.pool.link_faults - faults_before != stats.workers[0].transfers.retries;
         ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
      stats = engine.stats();
    }
    const auto s = stats.workers[0].transfers;
    EXPECT_GT(s.retries, 0u) << rate;
    EXPECT_EQ(s.failed, 0u) << rate;
    EXPECT_EQ(stats.pool.link_faults - faults_before, s.retries)
        << "every fault is in the pool's link counters";
  }
}

TEST_F(Faults, SilentBitFlipsAreCaughtAndReRead) {
  EngineConfig c = config();
  c.faults.seed = 5;
  c.faults.bit_flip_rate = 0.2;
  InferenceEngine engine(c);
  engine.attach_model("m");
  EXPECT_EQ(engine.generate(prompt_, 8), want_);
  const auto s = engine.stats().workers[0].transfers;
  EXPECT_GT(s.checksum_mismatches, 0u);
  EXPECT_GT(s.rereads, 0u);
}

TEST_F(Faults, WithoutVerificationABitFlipChangesTheNumbers) {
  // What the docs warn about: verification off lets corruption reach compute.
  EngineConfig c = config();
  c.verify_checksums = false;
  c.faults.seed = 5;
  c.faults.bit_flip_rate = 1.0;  // every transfer
  InferenceEngine engine(c);
  engine.attach_model("m");
  InferenceRequest r;
  r.prompt = prompt_;
  r.max_new_tokens = 1;
  r.return_logits = true;
  const auto got = engine.inference(r);
  EngineConfig clean = config();
  clean.cache_bytes = 0;
  InferenceEngine reference(clean);
  reference.attach_model("m");
  const auto ref = reference.inference(r);
  EXPECT_NE(got.last_logits, ref.last_logits);
}

TEST_F(Faults, CorruptionThatPersistsIsServedFromTheReplica) {
  // Every read of the primary is corrupted: re-reads cannot help; the replica does.
  EngineConfig c = config();
  c.replica_pool_uri = replica_uri_;
  c.faults.bit_flip_rate = 1.0;
  InferenceEngine engine(c);
  engine.attach_model("m");
  EXPECT_EQ(engine.generate(prompt_, 8), want_);
  const auto s = engine.stats().workers[0].transfers;
  EXPECT_GT(s.failovers, 0u);
  EXPECT_EQ(s.failed, 0u);
}

TEST_F(Faults, APoisonedRangeIsServedFromTheReplica) {
  auto probe = Pool::attach(open_backend(uri_));
  const auto t = probe->find_tensor("m/blk.3.ffn_up.weight");
  EngineConfig c = config();
  c.replica_pool_uri = replica_uri_;
  c.faults.poisoned_ranges = {{t.offset_bytes + 128, 64}};
  InferenceEngine engine(c);
  engine.attach_model("m");
  EXPECT_EQ(engine.generate(prompt_, 8), want_);
  EXPECT_GT(engine.stats().workers[0].transfers.failovers, 0u);
  // Without a replica: a clear error naming the tensor.
  c.replica_pool_uri.clear();
  InferenceEngine alone(c);
  alone.attach_model("m");
  try {
    alone.generate(prompt_, 8);
    FAIL() << "generated through poison";
  } catch (const InjectedFault& e) {
    EXPECT_NE(std::string(e.what()).find("blk.3.ffn_up.weight"), std::string::npos) << e.what();
  }
}

TEST_F(Faults, OfflineWithoutAReplicaFailsClearlyAndTheProcessServesOtherPools) {
  EngineConfig c = config();
  c.faults.offline_after_transfers = 20;
  InferenceEngine dying(c);
  dying.attach_model("m");
  EXPECT_THROW(dying.generate(prompt_, 8), InjectedFault);
  EXPECT_THROW(dying.generate(prompt_, 8), InjectedFault);  // still a clear error, no crash
  EngineConfig other = config();
  other.pool_uri = replica_uri_;
  InferenceEngine healthy(other);
  healthy.attach_model("m");
  EXPECT_EQ(healthy.generate(prompt_, 8), want_);
}

// Every tensor of every sealed model still matches its checksum.
void expect_pool_intact(const std::string& uri) {
  auto pool = Pool::attach(open_backend(uri));
  for (const auto& name : pool->model_names()) {
    const auto m = pool->model(name);
    for (const auto& t : m->tensors()) ASSERT_TRUE(pool->verify(t)) << name << "/" << t.name;
  }
}

TEST_F(Faults, WorkersKilledAtRandomPointsHurtNobody) {
  std::mt19937 rng(2026);
  EngineConfig c = config();
  c.link_preset = "cxl-x8";
  for (int round = 0; round < 20; ++round) {
    test::Signal survivor_done;
    // A survivor that generates through the whole round, and a victim killed mid-way.
    const pid_t survivor = test::spawn([&] {
      InferenceEngine e(c);
      e.attach_model("m");
      for (int i = 0; i < 3; ++i) {
        if (e.generate(prompt_, 8) != want_) return 2;
      }
      return 0;
    });
    const pid_t victim = test::spawn([&] {
      InferenceEngine e(c);
      e.attach_model("m");
      for (;;) e.generate(prompt_, 8);
      return 0;
    });
    std::this_thread::sleep_for(std::chrono::microseconds(rng() % 30000));
    ::kill(victim, SIGKILL);
    EXPECT_EQ(test::wait_exit(victim), 128 + SIGKILL);
    EXPECT_EQ(test::wait_exit(survivor), 0) << "round " << round;
  }
  expect_pool_intact(uri_);
  // Dead workers' attach slots are taken back: only this process's observer is attached.
  auto observer = Pool::attach(open_backend(uri_));
  EXPECT_EQ(observer->stats().attached_processes, 1u);
  EngineConfig w = c;
  InferenceEngine after(w);
  after.attach_model("m");
  EXPECT_EQ(after.generate(prompt_, 8), want_);
}

TEST(LoaderFaults, ALoaderKilledDuringLoadLeavesNothingVisibleAndItsExtentsAreReclaimed) {
  test::TempDir dir;
  const auto file = dir.path() / "big.gguf";
  write_gguf(create_sample_transformer_model(256, 12, 8, 4, 688, 1024, 4), file, DType::kF32);
  const std::string uri = "shm://" + test::unique_name("loader");
  test::BackendGuard guard(uri);
  auto pool = Pool::create(create_backend(uri, 96u << 20),
                           PoolOptions{.max_models = 4, .max_tensors = 512});
  const auto empty = pool->stats().extents.bytes_used;
  std::mt19937 rng(7);
  int caught_mid_load = 0;
  for (int round = 0; round < 5; ++round) {
    const pid_t loader = test::spawn([&] {
      auto writer = Pool::attach(open_backend(uri), PoolRole::kWriter);
      load_model_into_pool(open_model_file(file), *writer, "big");
      for (;;) ::pause();  // loaded: wait to be killed
      return 0;
    });
    // Kill it while it loads: once its record shows up as loading (so a slow start, e.g.
    // under a sanitizer, cannot make every kill land before the load), a random moment on.
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    for (;;) {
      const auto entries = pool->list_models();
      if (!entries.empty() || std::chrono::steady_clock::now() > deadline) break;
      std::this_thread::sleep_for(std::chrono::microseconds(100));
    }
    std::this_thread::sleep_for(std::chrono::microseconds(rng() % 4000));
    ::kill(loader, SIGKILL);
    test::wait_exit(loader);
    const auto entries = pool->list_models();
    if (!entries.empty() && entries[0].state == "loading") {
      ++caught_mid_load;
      EXPECT_TRUE(pool->model_names().empty()) << "a half-written model is visible";
      EXPECT_THROW(Pool::attach(open_backend(uri))->model("big"), PoolError);
    }
    pool->reclaim_abandoned();
    if (!pool->model_names().empty()) pool->remove_model("big");
    EXPECT_EQ(pool->stats().extents.bytes_used, empty) << "round " << round;
    EXPECT_EQ(pool->stats().extents.free_extents, 1u);
  }
  EXPECT_GT(caught_mid_load, 0) << "no kill landed during a load; the test proved nothing";
}

// --- security -----------------------------------------------------------------------------

TEST(Security, AWorkerCannotWriteAWeight) {
  const std::string uri = "shm://" + test::unique_name("ro");
  test::BackendGuard guard(uri);
  {
    EngineConfig c;
    c.pool_uri = uri;
    InferenceEngine(c).register_model(fault_model(), "m");
  }
  auto reader = Pool::attach(open_backend(uri));
  const auto t = reader->find_tensor("m/blk.0.attn_q.weight");
  auto* weight = const_cast<std::byte*>(reader->view(t).data());
  // "fast": the child only runs the statement, so it creates (and leaks) nothing.
  GTEST_FLAG_SET(death_test_style, "fast");
  EXPECT_DEATH({ *reinterpret_cast<volatile std::byte*>(weight) = std::byte{1}; }, "");
  EXPECT_TRUE(reader->verify(t));
}

TEST(Security, PoolsAreCreated0600AndAForeignOwnersPoolIsRefused) {
  const std::string name = test::unique_name("owner");
  const std::string uri = "shm://" + name;
  test::BackendGuard guard(uri);
  { auto pool = Pool::create(create_backend(uri, 8u << 20)); }
  struct stat st {};
  ASSERT_EQ(::stat(("/dev/shm/" + name).c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  // Stage another user's pool: as root, give ours away; otherwise any root-owned file will do.
  std::string foreign_uri = uri, owner = "12345";
  if (::geteuid() == 0) {
    ASSERT_EQ(::chown(("/dev/shm/" + name).c_str(), 12345, 12345), 0);
  } else {
    foreign_uri = "file:///etc/passwd";
    owner = "uid 0";
  }
  BackendOptions ro;
  ro.read_only = true;
  try {
    open_backend(foreign_uri, ro);
    FAIL() << "opened another user's pool";
  } catch (const BackendError& e) {
    EXPECT_NE(std::string(e.what()).find(owner), std::string::npos) << e.what();
  }
  ro.allow_foreign_owner = true;
  EXPECT_NO_THROW(open_backend(foreign_uri, ro));
}

}  // namespace
}  // namespace xlshare
