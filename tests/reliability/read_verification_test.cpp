// Every read path verifies (issue 10, items 1-3): weights changed in the pool's backing file
// (before attach or while a worker runs), a replica that holds another model, and a damaged
// piece of a split tensor. Never a wrong token: the replica's copy, or a clear PoolError.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <thread>

#include "support/test_support.hpp"
#include "xlshare/engine/inference_engine.hpp"
#include "xlshare/error.hpp"
#include "xlshare/model/model_loader.hpp"

namespace xlshare {
namespace {

// Big enough that a small cache splits the token embedding (1024 x 64 f32: 256 KiB) into pieces.
SyntheticModel verify_model(std::uint64_t seed = 7) {
  return create_sample_transformer_model(64, 4, 4, 2, 160, 1024, seed);
}

using test::flip_byte;

class ReadVerification : public ::testing::Test {
 protected:
  ReadVerification()
      : uri_("shm://" + test::unique_name("verify")),
        replica_uri_("shm://" + test::unique_name("verify-replica")),
        guard_(uri_),
        replica_guard_(replica_uri_) {
    const auto m = verify_model();
    for (const auto& u : {uri_, replica_uri_}) {
      EngineConfig c;
      c.pool_uri = u;
      InferenceEngine(c).register_model(m, "m");
    }
    for (const auto& d : m.data) model_bytes_ += d.size() * 4;
    InferenceEngine reference(config(0));
    reference.attach_model("m");
    want_ = reference.generate(prompt_, 8);
  }
  EngineConfig config(std::uint64_t cache_bytes, bool with_replica = false) const {
    EngineConfig c;
    c.placement = Placement::kCopy;  // the near-cache path (a GPU's); in place has its own tests
    c.pool_uri = uri_;
    c.link_preset = "none";
    c.cache_bytes = cache_bytes;
    c.scrub_bytes_per_s = 0;  // passes run by the test (scrub_now) unless it says otherwise
    if (with_replica) c.replica_pool_uri = replica_uri_;
    return c;
  }
  static TensorInfo tensor(const std::string& uri, const std::string& name) {
    return Pool::attach(open_backend(uri))->find_tensor("m/" + name);
  }
  // Flips the exponent of two f32 weights of `name` in the pool `uri`: numbers that change
  // every token when they reach compute.
  static void corrupt(const std::string& uri, const std::string& name, std::uint64_t element = 5) {
    const TensorInfo t = tensor(uri, name);
    ASSERT_LT((element + 8) * 4, t.size_bytes);
    flip_byte(uri, t.offset_bytes + element * 4 + 3, 0x40);
    flip_byte(uri, t.offset_bytes + (element + 7) * 4 + 3, 0x40);
    ASSERT_FALSE(Pool::attach(open_backend(uri))->verify(t));
  }
  // Runs `body` and expects a PoolError whose message names each of `needles`.
  template <class F>
  static void expect_pool_error(F&& body, std::initializer_list<std::string> needles) {
    try {
      body();
      ADD_FAILURE() << "no error: served from weights that do not verify";
    } catch (const PoolError& e) {
      for (const auto& n : needles)
        EXPECT_NE(std::string(e.what()).find(n), std::string::npos) << e.what();
    }
  }

  std::string uri_, replica_uri_;
  test::BackendGuard guard_, replica_guard_;
  std::uint64_t model_bytes_ = 0;
  const std::vector<std::int32_t> prompt_ = {3, 14, 15, 92, 65};
  std::vector<std::int32_t> want_;
};

TEST_F(ReadVerification, FlippedWeightsWithoutAReplicaAreRefusedWithNoTokens) {
  corrupt(uri_, "blk.1.attn_q.weight");
  std::vector<std::int32_t> got;
  expect_pool_error(
      [&] {
        InferenceEngine engine(config(0));
        engine.attach_model("m");
        got = engine.generate(prompt_, 8);
      },
      {uri_, "'m'", "blk.1.attn_q.weight"});
  EXPECT_TRUE(got.empty());
  // The one-shot path (`xlshare eval --pool`) verifies too.
  auto pool = Pool::attach(open_backend(uri_));
  auto view = pool->model("m");
  expect_pool_error([&] { (void)pool_weights(*pool, *view); },
                    {uri_, "'m'", "blk.1.attn_q.weight"});
}

TEST_F(ReadVerification, FlippedWeightsAreReadFromACleanReplica) {
  corrupt(uri_, "blk.1.attn_q.weight");
  corrupt(uri_, "output.weight", 100);
  InferenceEngine engine(config(0, true));
  engine.attach_model("m");
  EXPECT_EQ(engine.generate(prompt_, 8), want_);
  const ScrubStats s = engine.stats().workers[0].scrub;
  EXPECT_EQ(s.mismatches, 2u);
  EXPECT_EQ(s.failovers, 2u);
  EXPECT_EQ(s.failed, 0u);
  EXPECT_GE(s.verify_bytes, model_bytes_);
  EXPECT_NE(engine.stats().to_json().find("\"scrub\""), std::string::npos);
}

TEST_F(ReadVerification, ATensorBadInBothPoolsIsRefusedNamingBoth) {
  corrupt(uri_, "blk.2.ffn_up.weight");
  corrupt(replica_uri_, "blk.2.ffn_up.weight", 9);
  expect_pool_error(
      [&] {
        InferenceEngine engine(config(0, true));
        engine.attach_model("m");
        engine.generate(prompt_, 8);
      },
      {uri_, replica_uri_, "blk.2.ffn_up.weight"});
}

TEST_F(ReadVerification, AReplicaHoldingAnotherModelIsRefusedAtAttach) {
  const std::string other_uri = "shm://" + test::unique_name("verify-other");
  test::BackendGuard other_guard(other_uri);
  {
    EngineConfig c;
    c.pool_uri = other_uri;
    InferenceEngine(c).register_model(verify_model(8), "m");  // same shapes, other weights
  }
  corrupt(uri_, "blk.0.attn_k.weight");  // as in the report: the primary needs its replica
  for (std::uint64_t cache : {std::uint64_t{0}, model_bytes_ / 4}) {
    expect_pool_error(
        [&] {
          EngineConfig c = config(cache);
          c.replica_pool_uri = other_uri;
          InferenceEngine engine(c);
          engine.attach_model("m");
          engine.generate(prompt_, 8);
        },
        {other_uri, "different model", "'m'", "token_embd.weight", "checksum"});
  }
  // A model of another shape says which tensor and what differs.
  const std::string shape_uri = "shm://" + test::unique_name("verify-shape");
  test::BackendGuard shape_guard(shape_uri);
  {
    EngineConfig c;
    c.pool_uri = shape_uri;
    InferenceEngine(c).register_model(create_sample_transformer_model(64, 4, 4, 2, 192, 1024, 7),
                                      "m");
  }
  expect_pool_error(
      [&] {
        EngineConfig c = config(0);
        c.replica_pool_uri = shape_uri;
        InferenceEngine engine(c);
        engine.attach_model("m");
      },
      {shape_uri, "different model", "blk.0.ffn_gate.weight", "shape"});
}

TEST_F(ReadVerification, ADamagedPieceOfASplitTensorFailsOverAloneToTheReplica) {
  // A small cache splits the token embedding into pieces; one flipped byte in the row of
  // a prompt token used to make the worker refuse to start even with a clean replica.
  const std::uint64_t cache = model_bytes_ / 4;
  const TensorInfo embd = tensor(uri_, "token_embd.weight");
  ASSERT_GT(embd.size_bytes, std::max<std::uint64_t>(cache / 4, 64 * 1024))
      << "the embedding would not be split";
  const std::uint64_t row_bytes = embd.size_bytes / embd.shape[1];
  flip_byte(uri_, embd.offset_bytes + static_cast<std::uint64_t>(prompt_[0]) * row_bytes + 3, 0x40);
  InferenceEngine engine(config(cache, true));
  engine.attach_model("m");
  EXPECT_EQ(engine.generate(prompt_, 8), want_);
  const TransferStats t = engine.stats().workers[0].transfers;
  EXPECT_GT(t.failovers, 0u);
  EXPECT_GT(t.checksum_mismatches, 0u);
  EXPECT_EQ(t.failed, 0u);
  // Only the damaged piece came from the replica: the prompt's other pieces did not.
  EXPECT_LT(t.failovers, t.completed);
  // Without a replica: still a clear refusal, when the damaged piece is needed (attach
  // reads only the catalog: its tiles' checksums).
  InferenceEngine alone(config(cache));
  alone.attach_model("m");
  try {
    alone.generate(prompt_, 8);
    ADD_FAILURE() << "no error: served from weights that do not verify";
  } catch (const Error& e) {
    for (const std::string& needle : {uri_, std::string("token_embd.weight"),
                                      std::string("checksum"), std::string("no replica")}) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  }
}

TEST_F(ReadVerification, AFlipWhileServingIsFoundByAScrubAndServedFromTheReplica) {
  InferenceEngine engine(config(0, true));
  engine.attach_model("m");
  ASSERT_EQ(engine.generate(prompt_, 8), want_);
  corrupt(uri_, "blk.3.ffn_down.weight");
  EXPECT_EQ(engine.scrub_now(), 1u);
  EXPECT_EQ(engine.generate(prompt_, 8), want_);
  const ScrubStats s = engine.stats().workers[0].scrub;
  EXPECT_EQ(s.mismatches, 1u);
  EXPECT_EQ(s.failovers, 1u);
  EXPECT_GE(s.bytes_scrubbed, model_bytes_);
  EXPECT_EQ(engine.scrub_now(), 0u) << "the replica's copy is what is checked now";
}

TEST_F(ReadVerification, AFlipWhileServingWithoutAReplicaFailsTheNextRequest) {
  EngineConfig c = config(0);
  c.workers = 2;  // they share one verified mapping: both stop answering
  InferenceEngine engine(c);
  engine.attach_model("m");
  ASSERT_EQ(engine.generate(prompt_, 8), want_);
  corrupt(uri_, "output_norm.weight", 0);
  EXPECT_EQ(engine.scrub_now(), 1u);
  for (int i = 0; i < 2; ++i) {
    expect_pool_error([&] { engine.generate(prompt_, 8); },
                      {uri_, "'m'", "output_norm.weight", "no replica"});
  }
  EXPECT_EQ(engine.stats().workers[1].scrub.failed, 1u);
}

TEST_F(ReadVerification, TheBackgroundScrubberFindsAFlipOnItsOwn) {
  EngineConfig c = config(0, true);
  c.scrub_bytes_per_s = 64ull << 20;  // the whole model in about 20 ms
  InferenceEngine engine(c);
  engine.attach_model("m");
  corrupt(uri_, "blk.2.attn_v.weight");
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (engine.stats().workers[0].scrub.failovers == 0 &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  const ScrubStats s = engine.stats().workers[0].scrub;
  ASSERT_EQ(s.failovers, 1u);
  EXPECT_GT(s.bytes_scrubbed, 0u);
  EXPECT_EQ(engine.generate(prompt_, 8), want_);
}

}  // namespace
}  // namespace xlshare
