// Placement::kInPlace: a CPU worker computes straight from the pool mapping, each piece
// paced on the shared link. It must produce the very numbers of the resident reference (on
// a synthetic model and on llama.cpp's oracle), account its reservations as the timing
// model says (a fake clock, two processes on one link), and survive faults as copy does.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <set>
#include <thread>

#include "model/model_support.hpp"
#include "support/test_support.hpp"
#include "xlshare/engine/inference_engine.hpp"
#include "xlshare/error.hpp"
#include "xlshare/memory/backend_uri.hpp"
#include "xlshare/memory/checksum.hpp"
#include "xlshare/memory/cxl_emulator.hpp"
#include "xlshare/memory/link_pacer.hpp"
#include "xlshare/memory/pool.hpp"

namespace xlshare {
namespace {

SyntheticModel placement_model() {
  return create_sample_transformer_model(64, 6, 4, 2, 160, 256, 91);
}

struct Output {
  std::vector<std::int32_t> tokens;
  std::vector<float> logits;
};

Output run(InferenceEngine& engine) {
  InferenceRequest r;
  r.id = "r";
  r.prompt = test::some_tokens(256, 5, 3);
  r.max_new_tokens = 6;
  r.return_logits = true;
  r.sampling.temperature = 0.8f;  // sampled, seeded: any difference in logits shows up
  r.sampling.seed = 77;
  auto res = engine.inference(r);
  return {res.output_tokens, res.last_logits};
}

void wait_for_hot_set(InferenceEngine& engine) {
  for (int i = 0; i < 2000; ++i) {
    const auto w = engine.stats().workers[0];
    if (w.hot_set_bytes >= w.hot_set_target_bytes) return;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  ADD_FAILURE() << "the hot set was not built within 10 s";
}

class InPlace : public ::testing::Test {
 protected:
  InPlace()
      : uri_("shm://" + test::unique_name("inplace")),
        replica_uri_("shm://" + test::unique_name("inplace-replica")),
        guard_(uri_),
        replica_guard_(replica_uri_) {
    for (const auto& u : {uri_, replica_uri_}) {
      EngineConfig c;
      c.pool_uri = u;
      InferenceEngine(c).register_model(model_, "m");
    }
    for (const auto& d : model_.data) model_bytes_ += d.size() * 4;
    EngineConfig resident = config();
    resident.placement = Placement::kCopy;
    resident.cache_bytes = 0;
    resident.compute_threads = 2;  // as every run below: the same reductions, the same bits
    InferenceEngine reference(resident);
    reference.attach_model("m");
    want_ = run(reference);
  }
  EngineConfig config() const {
    EngineConfig c;
    c.pool_uri = uri_;
    c.placement = Placement::kInPlace;
    c.link_preset = "cxl-x8";
    c.cache_bytes = 0;
    c.compute_threads = 2;
    return c;
  }
  // XORs one byte of the primary's backing object at `offset`.
  void flip(std::uint64_t offset) { test::flip_byte(uri_, offset, 0x5a); }
  TensorInfo tensor(const std::string& name) {
    return Pool::attach(open_backend(uri_))->model("m")->at(name);
  }

  SyntheticModel model_ = placement_model();
  std::string uri_, replica_uri_;
  test::BackendGuard guard_, replica_guard_;
  std::uint64_t model_bytes_ = 0;
  Output want_;
};

TEST_F(InPlace, ProducesTheResidentNumbersWithAndWithoutAHotSet) {
  for (std::uint64_t hot : {std::uint64_t{0}, model_bytes_ / 4, model_bytes_ * 2}) {
    for (std::size_t lookahead : {0u, 2u}) {
      EngineConfig c = config();
      c.cache_bytes = hot;
      c.lookahead = lookahead;
      InferenceEngine engine(c);
      engine.attach_model("m");
      const Output got = run(engine);
      EXPECT_EQ(got.tokens, want_.tokens) << hot << " " << lookahead;
      EXPECT_EQ(got.logits, want_.logits) << hot << " " << lookahead;
      // The HotSet is copied in the background once the first token is out; then the same
      // request, served partly from it, gives the same numbers again.
      wait_for_hot_set(engine);
      const Output again = run(engine);
      EXPECT_EQ(again.tokens, want_.tokens) << hot << " " << lookahead;
      EXPECT_EQ(again.logits, want_.logits) << hot << " " << lookahead;
      const auto w = engine.stats().workers[0];
      EXPECT_EQ(w.placement, "in-place");
      EXPECT_LE(w.hot_set_bytes, hot);
      EXPECT_EQ(w.hot_set_bytes, w.hot_set_target_bytes);
      if (hot >= model_bytes_) {
        EXPECT_GT(w.hot_set_bytes, model_bytes_ / 2);
        EXPECT_GT(w.figures.reuse_rate, 0.25);
      }
      if (hot == 0) {
        EXPECT_EQ(w.hot_set_bytes, 0u);
        EXPECT_GT(w.figures.link_bytes, 0u);
      }
    }
  }
}

TEST_F(InPlace, AHotSetTakesItsBytesOffTheLink) {
  std::uint64_t link_without = 0, link_with = 0, hot = 0;
  for (bool with_hot : {false, true}) {
    EngineConfig c = config();
    c.cache_bytes = with_hot ? model_bytes_ / 2 : 0;
    InferenceEngine engine(c);
    engine.attach_model("m");
    (void)run(engine);
    wait_for_hot_set(engine);
    const std::uint64_t before =
        engine.stats().workers[0].figures.link_bytes;  // the hot set's copy included
    (void)run(engine);
    const auto w = engine.stats().workers[0];
    (with_hot ? link_with : link_without) = w.figures.link_bytes - before;
    if (with_hot) hot = w.hot_set_bytes;
  }
  ASSERT_GT(hot, 0u);
  EXPECT_LT(link_with, link_without);
}

TEST_F(InPlace, ReadsEveryLinkByteIntoThePoolsSharedCounters) {
  EngineConfig c = config();
  InferenceEngine engine(c);
  engine.attach_model("m");
  const std::uint64_t before = engine.stats().pool.link_bytes;
  (void)run(engine);
  const auto s = engine.stats();
  EXPECT_GT(s.workers[0].figures.link_bytes, 0u);
  EXPECT_EQ(s.pool.link_bytes - before, s.workers[0].figures.link_bytes);
}

TEST_F(InPlace, MatchesLlamaCppOnTheOracle) {
  const std::string oracle_uri = "shm://" + test::unique_name("inplace-oracle");
  test::BackendGuard oracle_guard(oracle_uri);
  EngineConfig c;
  c.pool_uri = oracle_uri;
  c.link_preset = "cxl-x8";
  InferenceEngine(c).register_model(
      std::filesystem::path(XLSHARE_TEST_DATA "/oracle/oracle-public-f32.gguf"), "oracle");
  // llama.cpp's logits after all 12 tokens of tests/data/oracle/README.md: row 11 of logits.bin.
  std::vector<float> want(12 * 256);
  {
    std::ifstream f(XLSHARE_TEST_DATA "/oracle/logits.bin", std::ios::binary);
    ASSERT_TRUE(f.read(reinterpret_cast<char*>(want.data()),
                       static_cast<std::streamsize>(want.size() * 4)));
  }
  const std::vector<float> last(want.end() - 256, want.end());
  float scale = 0;
  for (float v : last) scale = std::max(scale, std::abs(v));
  InferenceRequest r;
  r.id = "oracle";
  r.prompt = {5, 200, 33, 7, 255, 0, 64, 128, 9, 17, 250, 3};
  r.max_new_tokens = 8;
  r.return_logits = true;
  std::vector<std::vector<std::int32_t>> outputs;
  for (Placement p : {Placement::kCopy, Placement::kInPlace}) {
    c.placement = p;
    c.cache_bytes = p == Placement::kCopy ? 0 : 64u << 10;
    InferenceEngine engine(c);
    engine.attach_model("oracle");
    InferenceRequest first = r;
    first.max_new_tokens = 1;
    const auto got = engine.inference(first).last_logits;
    ASSERT_EQ(got.size(), 256u);
    for (std::size_t i = 0; i < 256; ++i)
      EXPECT_LE(std::abs(got[i] - last[i]) / scale, 1e-4) << to_string(p) << " " << i;
    outputs.push_back(engine.inference(r).output_tokens);
  }
  EXPECT_EQ(outputs[0], outputs[1]);
  EXPECT_EQ(outputs[0].size(), 8u);
}

// --- the default placement ----------------------------------------------------------------

TEST_F(InPlace, IsTheDefaultOnAHostBackendAndCopyWithAPolicyOfYourOwn) {
  EngineConfig c = config();
  c.placement.reset();
  {
    InferenceEngine engine(c);
    engine.attach_model("m");
    EXPECT_EQ(run(engine).tokens, want_.tokens);
    EXPECT_EQ(engine.stats().workers[0].placement, "in-place");
  }
  c.cache_bytes = model_bytes_ / 2;
  c.prefetch_policy = [] { return std::make_unique<LookaheadPolicy>(1); };
  {
    InferenceEngine engine(c);
    engine.attach_model("m");
    EXPECT_EQ(run(engine).tokens, want_.tokens);
    EXPECT_EQ(engine.stats().workers[0].placement, "copy")
        << "a PrefetchPolicy steers the copy path";
  }
  c.placement = Placement::kInPlace;
  InferenceEngine engine(c);
  try {
    engine.attach_model("m");
    ADD_FAILURE() << "a PrefetchPolicy was silently ignored in place";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("kCopy"), std::string::npos) << e.what();
  }
}

// --- faults ------------------------------------------------------------------------------

TEST_F(InPlace, AFlippedWeightFailsOverToTheReplicaOnFirstUse) {
  const TensorInfo t = tensor("blk.2.ffn_up.weight");
  flip(t.offset_bytes + t.size_bytes / 2);
  EngineConfig c = config();
  c.replica_pool_uri = replica_uri_;
  InferenceEngine engine(c);
  engine.attach_model("m");
  const Output got = run(engine);
  EXPECT_EQ(got.tokens, want_.tokens);
  EXPECT_EQ(got.logits, want_.logits);
  EXPECT_GE(engine.stats().workers[0].figures.failovers, 1u);
}

TEST_F(InPlace, AFlippedWeightWithoutAReplicaFailsTheRequest) {
  const TensorInfo t = tensor("blk.4.attn_k.weight");
  flip(t.offset_bytes + 3);
  InferenceEngine engine(config());
  engine.attach_model("m");  // attach reads only the catalog: the first use finds it
  try {
    (void)run(engine);
    ADD_FAILURE() << "a request computed on a corrupted weight";
  } catch (const PoolError& e) {
    EXPECT_NE(std::string(e.what()).find("blk.4.attn_k.weight"), std::string::npos) << e.what();
  }
}

TEST_F(InPlace, APoisonedRangeIsReadFromTheReplica) {
  const TensorInfo t = tensor("blk.1.attn_q.weight");
  EngineConfig c = config();
  c.replica_pool_uri = replica_uri_;
  c.faults.poisoned_ranges.push_back({t.offset_bytes + 64, 128});
  InferenceEngine engine(c);
  engine.attach_model("m");
  const Output got = run(engine);
  EXPECT_EQ(got.tokens, want_.tokens);
  EXPECT_EQ(got.logits, want_.logits);
  EXPECT_GE(engine.stats().workers[0].figures.failovers, 1u);
  c.replica_pool_uri.clear();
  InferenceEngine alone(c);
  alone.attach_model("m");
  EXPECT_THROW((void)run(alone), PoolError);
}

// --- the TensorTiling: computed at load, read at attach, verified per tile ----------------

// A vocabulary large enough that the token embedding has many tiles: 4096 rows of 256 bytes,
// 256 rows (64 KiB) a tile.
SyntheticModel wide_vocab_model() {
  return create_sample_transformer_model(64, 2, 4, 2, 160, 4096, 93);
}

TEST(TensorTiling, TilesAreWholeRowsAndTheirChecksumsAreTheCatalogs) {
  const std::string uri = "shm://" + test::unique_name("tiling");
  test::BackendGuard guard(uri);
  EngineConfig c;
  c.pool_uri = uri;
  InferenceEngine(c).register_model(wide_vocab_model(), "m");
  auto pool = Pool::attach(open_backend(uri));
  const auto view = pool->model("m");
  std::size_t tiled = 0;
  for (const TensorInfo& t : view->tensors()) {
    ASSERT_GT(t.tile_bytes, 0u) << t.name;
    if (t.tile_bytes != t.size_bytes) {
      EXPECT_EQ(t.tile_bytes % t.row_bytes(), 0u) << t.name << ": tiles of whole rows";
      EXPECT_LE(t.tile_bytes, std::max(kTileTargetBytes, t.row_bytes())) << t.name;
      ++tiled;
    }
    const auto sums = t.tile_checksums();
    ASSERT_EQ(sums.size(), (t.size_bytes + t.tile_bytes - 1) / t.tile_bytes) << t.name;
    const auto bytes = pool->view(t);
    for (std::size_t k = 0; k < sums.size(); ++k) {
      const std::uint64_t at = k * t.tile_bytes;
      EXPECT_EQ(checksum64(bytes.subspan(at, std::min(t.tile_bytes, t.size_bytes - at))), sums[k])
          << t.name << " " << k;
    }
  }
  EXPECT_EQ(view->at("token_embd.weight").tile_checksums().size(), 16u);
  EXPECT_GT(tiled, 1u);
}

class WideVocab : public ::testing::Test {
 protected:
  WideVocab() : uri_("shm://" + test::unique_name("wide")), guard_(uri_) {
    EngineConfig c;
    c.pool_uri = uri_;
    InferenceEngine(c).register_model(wide_vocab_model(), "m");
    auto pool = Pool::attach(open_backend(uri_));
    const auto view = pool->model("m");
    embd_ = view->at("token_embd.weight");
    total_bytes_ = view->total_bytes();
  }
  EngineConfig config() const {
    EngineConfig c;
    c.pool_uri = uri_;
    c.link_preset = "cxl-x8";
    c.cache_bytes = 0;
    c.scrub_bytes_per_s = 0;  // the test runs the passes
    return c;
  }
  // The embedding tiles holding rows `tokens`.
  std::set<std::uint64_t> tiles_of(const std::vector<std::int32_t>& tokens) const {
    std::set<std::uint64_t> out;
    for (auto t : tokens)
      out.insert(static_cast<std::uint64_t>(t) * embd_.row_bytes() / embd_.tile_bytes);
    return out;
  }
  std::string uri_;
  test::BackendGuard guard_;
  TensorInfo embd_;
  std::uint64_t total_bytes_ = 0;
  // Rows in tiles 0 and 9 only.
  const std::vector<std::int32_t> prompt_ = {3, 17, 2400, 2401};
};

TEST_F(WideVocab, InPlaceVerifiesAndScrubsOnlyTheEmbeddingTilesItReads) {
  InferenceEngine engine(config());  // in place: the default on a host backend
  engine.attach_model("m");
  const auto out = engine.generate(prompt_, 3);
  auto w = engine.stats().workers[0];
  ASSERT_EQ(w.placement, "in-place");
  const std::uint64_t others = total_bytes_ - embd_.size_bytes;
  std::vector<std::int32_t> read = prompt_;
  read.insert(read.end(), out.begin(), out.end());
  EXPECT_GE(w.scrub.verify_bytes, others + tiles_of(prompt_).size() * embd_.tile_bytes);
  EXPECT_LE(w.scrub.verify_bytes, others + tiles_of(read).size() * embd_.tile_bytes);
  EXPECT_LT(w.scrub.verify_bytes, total_bytes_);
  // A scrub re-checks what was verified, not the tiles no lookup touched.
  EXPECT_EQ(engine.scrub_now(), 0u);
  w = engine.stats().workers[0];
  EXPECT_EQ(w.scrub.bytes_scrubbed, w.scrub.verify_bytes);
}

TEST_F(WideVocab, CopyPiecesOfWholeTilesGiveTheResidentNumbers) {
  // A cache of 1.5 MiB cuts the 1 MiB output head (16 tiles of 256 rows) into pieces of
  // whole tiles: 1280, 1280, 1280 and 256 rows, not four equal quarters.
  EngineConfig resident = config();
  resident.placement = Placement::kCopy;
  InferenceEngine reference(resident);
  reference.attach_model("m");
  const Output want = run(reference);
  EngineConfig c = config();
  c.placement = Placement::kCopy;
  c.cache_bytes = 1536u << 10;
  InferenceEngine engine(c);
  engine.attach_model("m");
  const Output got = run(engine);
  EXPECT_EQ(got.tokens, want.tokens);
  EXPECT_EQ(got.logits, want.logits);
  EXPECT_GT(engine.stats().workers[0].transfers.completed, 0u);
}

TEST_F(WideVocab, ADamagedEmbeddingRowFailsOnlyTheRequestsThatReadIt) {
  std::vector<std::int32_t> want;
  {
    InferenceEngine clean(config());
    clean.attach_model("m");
    want = clean.generate(prompt_, 3);
  }
  // A row of the first tile the request does not read is damaged.
  std::vector<std::int32_t> read = prompt_;
  read.insert(read.end(), want.begin(), want.end());
  const auto used = tiles_of(read);
  const std::uint64_t rows_per_tile = embd_.tile_bytes / embd_.row_bytes();
  std::uint64_t tile = 0;
  while (used.contains(tile)) ++tile;
  ASSERT_LT(tile, 16u);
  const auto damaged = static_cast<std::int32_t>(tile * rows_per_tile + 10);
  const std::uint64_t at =
      embd_.offset_bytes + static_cast<std::uint64_t>(damaged) * embd_.row_bytes() + 5;
  test::flip_byte(uri_, at, 0x5a);
  InferenceEngine engine(config());
  engine.attach_model("m");
  EXPECT_EQ(engine.generate(prompt_, 3), want);
  EXPECT_EQ(engine.stats().workers[0].scrub.mismatches, 0u);
  try {
    (void)engine.generate(std::vector<std::int32_t>{damaged}, 1);
    ADD_FAILURE() << "computed on a damaged embedding row";
  } catch (const PoolError& e) {
    EXPECT_NE(std::string(e.what()).find("token_embd.weight"), std::string::npos) << e.what();
  }
}

// --- the reservation accounting, against the timing model on a fake clock ----------------

TEST(LinkPacer, ReservesAsACopyOfThatSizeWouldAndAccountsIt) {
  LinkState link{};
  ManualClock clock(1000);
  const LinkParams p{1.0, 100, 50, 1000};  // 1 GB/s = 1 byte/ns, 100 ns latency, 50 ns overhead
  LinkPacer a(link, p, clock), b(link, p, clock);
  // 2500 bytes in chunks of 1000: the overhead once, then bytes / bandwidth, then latency.
  const std::uint64_t done_a = a.reserve(2500);
  EXPECT_EQ(done_a, 1000u + 50 + 2500 + 100);
  EXPECT_EQ(link_field(link.link_free_ns).load(), 1000u + 50 + 2500);
  // A second reader at the same instant queues behind the first: they contend on one link.
  const std::uint64_t done_b = b.reserve(1000);
  EXPECT_EQ(done_b, 1000u + 50 + 2500 + 50 + 1000 + 100);
  EXPECT_EQ(link_field(link.bytes_total).load(), 3500u);
  EXPECT_EQ(link_field(link.transfers_total).load(), 2u);
  EXPECT_EQ(link_field(link.busy_ns_total).load(), 50u + 2500 + 50 + 1000);
  // Waiting is the stall; a reservation whose time has passed costs none.
  EXPECT_EQ(a.wait_until(done_a), done_a - 1000);
  EXPECT_EQ(clock.now_ns(), done_a);
  EXPECT_EQ(b.wait_until(done_a - 1), 0u);
  // An unpaced link costs nothing and counts nothing.
  LinkPacer free_link(link, LinkParams{0.0, 0, 0, 1000}, clock);
  EXPECT_EQ(free_link.reserve(1u << 20), clock.now_ns());
  EXPECT_EQ(link_field(link.bytes_total).load(), 3500u);
}

TEST(LinkPacer, TwoProcessesShareOnePoolsLink) {
  const std::string uri = "shm://" + test::unique_name("pacer");
  test::BackendGuard guard(uri);
  (void)create_pool(uri, 8u << 20,
                    PoolOptions{.max_models = 1, .max_tensors = 4, .data_alignment = 4096});
  const LinkParams p{2.0, 0, 0, 4096};  // 2 bytes/ns
  const std::uint64_t t0 = 1'000'000;
  auto pace = [&](std::uint64_t bytes) {
    auto pool = Pool::attach(open_backend(uri));
    ManualClock clock(t0);
    return LinkPacer(pool->link_state(), p, clock).reserve(bytes);
  };
  test::Signal reserved;
  const pid_t child = test::spawn([&] {
    const std::uint64_t done = pace(8192);
    reserved.notify();
    return done == t0 + 4096 ? 0 : 1;
  });
  ASSERT_TRUE(reserved.wait());
  // This process reserves at the same instant: it starts where the other one's bytes end.
  EXPECT_EQ(pace(4096), t0 + 4096 + 2048);
  EXPECT_EQ(test::wait_exit(child), 0);
  EXPECT_EQ(link_field(Pool::attach(open_backend(uri))->link_state().bytes_total).load(),
            8192u + 4096);
}

}  // namespace
}  // namespace xlshare
