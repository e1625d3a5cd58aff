// The Eigen forward pass against a naive double reference, against itself (prefill vs
// decode, GGUF vs safetensors, stored dtypes), and against llama.cpp (the shared oracle).
#include <gtest/gtest.h>
#include <pthread.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "model/compute_team.hpp"
#include "model/model_support.hpp"
#include "model/reference_forward.hpp"
#include "xlshare/error.hpp"
#include "xlshare/model/dtype_convert.hpp"

namespace xlshare {
namespace {

struct Shape {
  std::uint32_t dim, layers, heads, kv, ffn, vocab;
};

class ExecutorShapes : public ::testing::TestWithParam<Shape> {};

TEST_P(ExecutorShapes, MatchesTheDoubleReference) {
  const Shape s = GetParam();
  const auto m =
      make_synthetic_llama(test::small_config(s.dim, s.layers, s.heads, s.kv, s.ffn, s.vocab), 42);
  const auto tokens = test::some_tokens(s.vocab, 9, 3);
  const auto ref = test::reference_forward(m, tokens);
  EXPECT_LT(test::relative_error(test::run_in_memory(m, tokens), ref), 1e-5);
  EXPECT_LT(test::relative_error(test::run_in_memory(m, tokens, false, 2), ref), 1e-5)
      << "2 threads";
}

TEST_P(ExecutorShapes, PrefillEqualsTokenByTokenDecode) {
  const Shape s = GetParam();
  const auto m =
      make_synthetic_llama(test::small_config(s.dim, s.layers, s.heads, s.kv, s.ffn, s.vocab), 7);
  const auto tokens = test::some_tokens(s.vocab, 11, 5);
  EXPECT_LT(test::relative_error(test::run_in_memory(m, tokens, true),
                                 test::run_in_memory(m, tokens, false)),
            1e-5);
}

INSTANTIATE_TEST_SUITE_P(Shapes, ExecutorShapes,
                         ::testing::Values(Shape{64, 2, 4, 4, 160, 256},  // multi-head attention
                                           Shape{64, 2, 4, 2, 160, 256},  // GQA 2:1
                                           Shape{96, 3, 6, 2, 200,
                                                 300},  // GQA 3:1, non-power-of-two
                                           Shape{48, 1, 3, 1, 100, 97},  // MQA, odd vocab
                                           Shape{128, 2, 8, 2, 344, 512}));

// --- ComputeTeam: the Executor's own threads ------------------------------------------

TEST(ComputeTeam, EveryShareRunsOnceEachStepSpinningOrSleeping) {
  for (std::uint32_t spin_us : {0u, 50u}) {
    ComputeTeam team(3, spin_us);
    std::vector<std::atomic<int>> runs(3);
    for (int step = 0; step < 5000; ++step) {
      team.run([&](unsigned t, unsigned n) {
        EXPECT_EQ(n, 3u);
        runs[t].fetch_add(1, std::memory_order_relaxed);
      });
      // Run returned: every member's share of this step is done.
      ASSERT_EQ(runs[0].load() + runs[1].load() + runs[2].load(), 3 * (step + 1)) << spin_us;
    }
  }
}

TEST(ComputeTeam, AShareThatThrowsIsRethrownAfterEveryShareFinished) {
  ComputeTeam team(3, 0);
  for (unsigned thrower : {0u, 2u}) {
    std::atomic<int> finished{0};
    try {
      team.run([&](unsigned t, unsigned) {
        if (t == thrower) throw ConfigError("share " + std::to_string(t));
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
        finished.fetch_add(1);
      });
      ADD_FAILURE() << "no exception";
    } catch (const ConfigError& e) {
      EXPECT_EQ(std::string(e.what()), "share " + std::to_string(thrower));
    }
    EXPECT_EQ(finished.load(), 2) << "run returned while a share was still running";
  }
  std::atomic<int> runs{0};
  team.run([&](unsigned, unsigned) { runs.fetch_add(1); });  // still usable
  EXPECT_EQ(runs.load(), 3);
}

// A member held in a signal handler stands for one the OS has not scheduled (its core
// busy with a transfer thread): the caller runs its share.
std::atomic<bool> g_held{false}, g_release{false};
void hold_here(int) {
  g_held.store(true);
  while (!g_release.load()) {
  }
}

TEST(ComputeTeam, AMemberThatDoesNotRunDoesNotHoldUpTheStep) {
  ComputeTeam team(2, 0);
  // Find the member thread: the two shares wait for each other, so they run on two threads
  // (whichever claims first), one of them the caller.
  std::atomic<int> started{0};
  pthread_t ran_on[2]{};
  team.run([&](unsigned t, unsigned) {
    ran_on[t] = ::pthread_self();
    started.fetch_add(1);
    while (started.load() < 2) {
    }
  });
  const pthread_t member = ::pthread_equal(ran_on[0], ::pthread_self()) ? ran_on[1] : ran_on[0];
  ASSERT_FALSE(::pthread_equal(member, ::pthread_self()));
  struct sigaction sa {
  }, old{};
  sa.sa_handler = hold_here;
  ASSERT_EQ(::sigaction(SIGUSR1, &sa, &old), 0);
  g_held = false;
  g_release = false;
  ASSERT_EQ(::pthread_kill(member, SIGUSR1), 0);
  while (!g_held.load()) std::this_thread::yield();
  for (int step = 0; step < 100; ++step) {
    std::vector<int> ran(2, 0);
    std::vector<pthread_t> on(2);
    team.run([&](unsigned t, unsigned n) {
      EXPECT_EQ(n, 2u);
      ++ran[t];
      on[t] = ::pthread_self();
    });
    ASSERT_EQ(ran, (std::vector<int>{1, 1})) << step;
    EXPECT_TRUE(::pthread_equal(on[0], ::pthread_self()) &&
                ::pthread_equal(on[1], ::pthread_self()));
  }
  g_release = true;
  // Back: the team goes on with both threads, each share once per step.
  std::atomic<int> runs{0};
  for (int step = 0; step < 100; ++step) team.run([&](unsigned, unsigned) { runs.fetch_add(1); });
  EXPECT_EQ(runs.load(), 200);
  ::sigaction(SIGUSR1, &old, nullptr);
}

TEST(ComputeTeam, SplitsRowsAsAStaticSchedule) {
  std::vector<int> owner(10, -1);
  for (unsigned t = 0; t < 3; ++t) {
    const auto [b, e] = ComputeTeam::static_range(10, t, 3);
    for (std::size_t r = b; r < e; ++r) owner[r] = static_cast<int>(t);
  }
  EXPECT_EQ(owner, (std::vector<int>{0, 0, 0, 0, 1, 1, 1, 1, 2, 2}));
  EXPECT_EQ(ComputeTeam::static_range(2, 2, 3), (std::pair<std::size_t, std::size_t>{2, 2}));
}

TEST(ComputeTeam, SleepingOrSpinningAndAForkedChildGiveTheSameNumbers) {
  const auto m = make_synthetic_llama(test::small_config(64, 2, 4, 2, 160, 256), 5);
  const auto tokens = test::some_tokens(256, 6, 2);
  test::InMemoryModel in_memory(m);
  const LlamaModel& model = in_memory.model;
  SpanWeights& weights = in_memory.weights;
  const auto run = [&](Executor& ex) {
    KvCache kv(m.config, 64);
    std::vector<float> logits;
    ex.forward(tokens, kv, logits, true);
    return logits;
  };
  Executor spinning(model, weights, ExecutorOptions{2, 200});
  Executor sleeping(model, weights, ExecutorOptions{2, 0});
  const auto want = run(spinning);
  EXPECT_EQ(run(sleeping), want);
  // A child of fork() has none of the team's threads: it runs every share itself.
  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) ::_exit(run(spinning) == want ? 0 : 1);
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
}

// The holder a provider gives a WeightHandle is released exactly once: when the last handle
// it was moved through is destroyed or reset, never by a moved-from handle.
TEST(WeightHandle, ReleasesItsHolderOnceWhereverItWasMoved) {
  struct Pin {
    int* releases;
    explicit Pin(int* r) noexcept : releases(r) {}
    Pin(Pin&& o) noexcept : releases(std::exchange(o.releases, nullptr)) {}
    ~Pin() {
      if (releases != nullptr) ++*releases;
    }
  };
  const std::byte data[4]{};
  int releases = 0;
  {
    WeightHandle a(std::span<const std::byte>(data, 4), Pin(&releases));
    EXPECT_EQ(a.bytes().data(), data);
    WeightHandle b(std::move(a));
    EXPECT_TRUE(a.bytes().empty());
    EXPECT_EQ(b.bytes().size(), 4u);
    WeightHandle c;
    c = std::move(b);
    EXPECT_EQ(releases, 0);
    c = WeightHandle(std::span<const std::byte>(data, 2), Pin(&releases));
    EXPECT_EQ(releases, 1);  // c's first holder, on assignment
    EXPECT_EQ(c.bytes().size(), 2u);
  }
  EXPECT_EQ(releases, 2);
  WeightHandle d(std::span<const std::byte>(data, 4), Pin(&releases));
  d.reset();
  EXPECT_EQ(releases, 3);
  EXPECT_TRUE(d.bytes().empty());
}

// Every half and every bfloat16 converts to f32 and back to itself (NaN stays NaN), and
// f32 rounds to the nearest half, ties to even, as IEEE 754 says.
TEST(DtypeConvert, HalfAndBfloat16RoundTripAndRoundToNearestEven) {
  for (std::uint32_t bits = 0; bits <= 0xffff; ++bits) {
    const auto h = static_cast<std::uint16_t>(bits);
    const float f = f16_to_f32(h);
    const float b = bf16_to_f32(h);
    if (std::isnan(f)) {
      EXPECT_TRUE(std::isnan(f16_to_f32(f32_to_f16(f)))) << bits;
    } else {
      ASSERT_EQ(f32_to_f16(f), h) << bits;
    }
    if (std::isnan(b)) {
      EXPECT_TRUE(std::isnan(bf16_to_f32(f32_to_bf16(b)))) << bits;
    } else {
      ASSERT_EQ(f32_to_bf16(b), h) << bits;
    }
  }
  EXPECT_EQ(f16_to_f32(0x3c00), 1.0f);
  EXPECT_EQ(f16_to_f32(0x0001), std::ldexp(1.0f, -24));             // the smallest subnormal
  EXPECT_EQ(f32_to_f16(1.0f + std::ldexp(1.0f, -11)), 0x3c00);      // a tie: to even (down)
  EXPECT_EQ(f32_to_f16(1.0f + 3 * std::ldexp(1.0f, -11)), 0x3c02);  // a tie: to even (up)
  EXPECT_EQ(f32_to_f16(65520.0f), 0x7c00);  // rounds past the largest half: infinity
  EXPECT_EQ(f32_to_f16(-65504.0f), 0xfbff);
  EXPECT_EQ(f32_to_bf16(1.0f + std::ldexp(1.0f, -8)), 0x3f80);  // a tie: to even (down)
  EXPECT_EQ(f32_to_bf16(1.0f + 3 * std::ldexp(1.0f, -8)), 0x3f82);
}

TEST(Executor, TiedEmbeddingsUseTheTokenEmbedding) {
  auto c = test::small_config(64, 2, 4, 2, 160, 256);
  c.tie_embeddings = true;
  const auto m = make_synthetic_llama(c, 9);
  const auto tokens = test::some_tokens(256, 6, 1);
  EXPECT_LT(
      test::relative_error(test::run_in_memory(m, tokens), test::reference_forward(m, tokens)),
      1e-5);
}

TEST(Executor, RefusesTokensOutsideTheVocabularyAndAFullKvCache) {
  const auto m = make_synthetic_llama(test::small_config(64, 1, 4, 2, 160, 256), 1);
  test::InMemoryModel in_memory(m);
  const LlamaModel& model = in_memory.model;
  SpanWeights& weights = in_memory.weights;
  Executor ex(model, weights);
  KvCache kv(m.config, 4);
  std::vector<float> logits;
  const std::int32_t bad[] = {256};
  EXPECT_THROW(ex.forward(bad, kv, logits, false), ConfigError);
  const std::int32_t five[] = {1, 2, 3, 4, 5};
  EXPECT_THROW(ex.forward(five, kv, logits, false), ConfigError);
  EXPECT_EQ(kv.size(), 0u);
}

class ModelFiles : public ::testing::Test {
 protected:
  test::TempDir dir_;
};

TEST_F(ModelFiles, GgufAndSafetensorsGiveTheSameLogits) {
  const auto m = make_synthetic_llama(test::small_config(64, 2, 4, 2, 160, 256), 11);
  write_gguf(m, dir_.path() / "m.gguf", DType::kF32);
  write_safetensors(m, dir_.path() / "hf", DType::kF32);
  write_safetensors(m, dir_.path() / "hf-sharded", DType::kF32, 3);
  const auto tokens = test::some_tokens(256, 10, 2);
  const auto gguf = test::run_file(dir_.path() / "m.gguf", tokens);
  EXPECT_LT(test::relative_error(test::run_file(dir_.path() / "hf", tokens), gguf), 1e-6);
  EXPECT_LT(test::relative_error(test::run_file(dir_.path() / "hf-sharded", tokens), gguf), 1e-6);
  EXPECT_LT(
      test::relative_error(test::run_file(dir_.path() / "hf" / "model.safetensors", tokens), gguf),
      1e-6);
  EXPECT_LT(test::relative_error(gguf, test::reference_forward(m, tokens)), 1e-5);
}

TEST_F(ModelFiles, StoredDtypesComputeExactlyTheirRoundedWeights) {
  const auto m = make_synthetic_llama(test::small_config(64, 2, 4, 2, 160, 256), 13);
  const auto tokens = test::some_tokens(256, 12, 4);  // > 8: the tiled path; decode: the fused one
  // `model` stored as `dtype`: exactly what F32 math on the stored (rounded) weights gives,
  // within the storage's rounding (`loose`) of the F32 model, the same in decode.
  const auto check = [&](const SyntheticModel& model, DType dtype, double loose) {
    const auto path = dir_.path() / fmt::format("m{}-{}.gguf", model.config.dim, to_string(dtype));
    write_gguf(model, path, dtype);
    const auto got = test::run_file(path, tokens);
    EXPECT_LT(
        test::relative_error(got, test::reference_forward(round_weights(model, dtype), tokens)),
        1e-5)
        << to_string(dtype);
    const double err = test::relative_error(got, test::reference_forward(model, tokens));
    EXPECT_LT(err, loose) << to_string(dtype);
    EXPECT_GT(err, 1e-7) << to_string(dtype) << " did not round at all";
    EXPECT_LT(test::relative_error(test::run_file(path, tokens, /*one_at_a_time=*/true), got), 1e-5)
        << to_string(dtype) << ": decode differs from prefill";
    // 2..8 tokens a step: the fused kernels' instances for each token count.
    for (std::size_t n = 2; n <= 8; ++n) {
      const std::vector<std::int32_t> few(tokens.begin(), tokens.begin() + static_cast<long>(n));
      EXPECT_LT(test::relative_error(test::run_file(path, few),
                                     test::reference_forward(round_weights(model, dtype), few)),
                1e-5)
          << to_string(dtype) << ", " << n << " tokens";
    }
  };
  check(m, DType::kF16, 5e-3);
  check(m, DType::kBF16, 4e-2);
  check(m, DType::kQ8_0, 4e-2);
  // The K-family writers (blocks of 256 values: a wider model).
  const auto wide = make_synthetic_llama(test::small_config(256, 1, 4, 2, 512, 256), 14);
  check(wide, DType::kQ6_K, 5e-2);
  check(wide, DType::kQ4_K, 2e-1);
  write_safetensors(m, dir_.path() / "hf-bf16", DType::kBF16);
  EXPECT_LT(test::relative_error(test::run_file(dir_.path() / "hf-bf16", tokens),
                                 test::reference_forward(round_weights(m, DType::kBF16), tokens)),
            1e-5);
}

// --- the shared oracle: llama.cpp's logits ------------------------------------------------

std::vector<float> read_floats(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::vector<float> v(std::filesystem::file_size(p) / 4);
  in.read(reinterpret_cast<char*>(v.data()), static_cast<std::streamsize>(v.size() * 4));
  return v;
}

const std::vector<std::int32_t> kOracleTokens = {5, 200, 33, 7, 255, 0, 64, 128, 9, 17, 250, 3};

double worst_position_error(const std::vector<float>& got, const std::vector<float>& want,
                            std::size_t vocab) {
  // Pass bar of the oracle's README: max |diff| / max |llama.cpp| at every position.
  double worst = 0;
  for (std::size_t row = 0; row * vocab < want.size(); ++row) {
    std::vector<float> a(got.begin() + static_cast<long>(row * vocab),
                         got.begin() + static_cast<long>((row + 1) * vocab));
    std::vector<float> b(want.begin() + static_cast<long>(row * vocab),
                         want.begin() + static_cast<long>((row + 1) * vocab));
    worst = std::max(worst, test::relative_error(a, b));
  }
  return worst;
}

TEST(Oracle, GgufMatchesLlamaCpp) {
  const std::filesystem::path dir = XLSHARE_TEST_DATA "/oracle";
  const auto want = read_floats(dir / "logits.bin");
  ASSERT_EQ(want.size(), 12u * 256);
  const auto got = test::run_file(dir / "oracle-public-f32.gguf", kOracleTokens);
  EXPECT_LT(worst_position_error(got, want, 256), 1e-4);
  const auto decoded =
      test::run_file(dir / "oracle-public-f32.gguf", kOracleTokens, /*one_at_a_time=*/true);
  EXPECT_LT(worst_position_error(decoded, read_floats(dir / "logits_kvcache.bin"), 256), 1e-4);
}

TEST(Oracle, HuggingFaceDirectoryMatchesLlamaCpp) {
  const std::filesystem::path dir = XLSHARE_TEST_DATA "/oracle";
  const auto want = read_floats(dir / "logits.bin");
  const auto got = test::run_file(dir / "hf", kOracleTokens);
  EXPECT_LT(worst_position_error(got, want, 256), 1e-4);
  const auto decoded = test::run_file(dir / "hf", kOracleTokens, /*one_at_a_time=*/true);
  EXPECT_LT(worst_position_error(decoded, read_floats(dir / "logits_kvcache.bin"), 256), 1e-4);
}

TEST(Sampling, GreedyTopKAndSeededSampling) {
  const std::vector<float> logits = {0.1f, 2.0f, -1.0f, 1.9f, 0.5f};
  std::mt19937_64 rng(1);
  EXPECT_EQ(sample_token(logits, {}, rng), 1);
  SamplingOptions topk1{.temperature = 1.0f, .top_k = 1, .top_p = 1.0f, .seed = 0};
  for (int i = 0; i < 20; ++i) EXPECT_EQ(sample_token(logits, topk1, rng), 1);
  SamplingOptions hot{.temperature = 1.0f, .top_k = 0, .top_p = 1.0f, .seed = 0};
  std::mt19937_64 a(5), b(5);
  std::vector<int> seen(5, 0);
  for (int i = 0; i < 400; ++i) {
    const auto x = sample_token(logits, hot, a);
    EXPECT_EQ(x, sample_token(logits, hot, b));
    ++seen[static_cast<std::size_t>(x)];
  }
  EXPECT_GT(seen[3], 50);  // the runner-up is sampled often
  EXPECT_GT(seen[2], 0);
  SamplingOptions nucleus{.temperature = 1.0f, .top_k = 0, .top_p = 0.5f, .seed = 0};
  for (int i = 0; i < 50; ++i) {
    const auto x = sample_token(logits, nucleus, a);
    EXPECT_TRUE(x == 1 || x == 3) << x;
  }
}

}  // namespace
}  // namespace xlshare

namespace xlshare {
namespace {

TEST(Executor, ABatchEqualsEachSequenceAlone) {
  const auto m = make_synthetic_llama(test::small_config(64, 2, 4, 2, 160, 256), 21);
  test::InMemoryModel in_memory(m);
  const LlamaModel& model = in_memory.model;
  SpanWeights& weights = in_memory.weights;
  Executor ex(model, weights, ExecutorOptions{2});
  const std::vector<std::vector<std::int32_t>> prompts = {
      test::some_tokens(256, 5, 1), test::some_tokens(256, 9, 2), test::some_tokens(256, 1, 3)};
  // Alone.
  std::vector<std::vector<float>> alone(3);
  for (std::size_t i = 0; i < 3; ++i) {
    KvCache kv(m.config, 64);
    ex.forward(prompts[i], kv, alone[i], true);
  }
  // Together, then one more decode step together.
  std::vector<KvCache> kvs;
  for (int i = 0; i < 3; ++i) kvs.emplace_back(m.config, 64);
  std::vector<std::vector<float>> together(3);
  std::vector<Executor::Segment> segs;
  for (std::size_t i = 0; i < 3; ++i) segs.push_back({prompts[i], &kvs[i], true, &together[i]});
  ex.forward_batch(segs);
  for (std::size_t i = 0; i < 3; ++i)
    EXPECT_LT(test::relative_error(together[i], alone[i]), 1e-5) << i;
  const std::int32_t next[3] = {7, 8, 9};
  std::vector<std::vector<float>> step(3);
  for (std::size_t i = 0; i < 3; ++i) segs[i] = {std::span(&next[i], 1), &kvs[i], false, &step[i]};
  ex.forward_batch(segs);
  for (std::size_t i = 0; i < 3; ++i) {
    auto seq = prompts[i];
    seq.push_back(next[i]);
    KvCache kv(m.config, 64);
    std::vector<float> ref;
    ex.forward(seq, kv, ref, false);
    EXPECT_LT(test::relative_error(step[i], ref), 1e-5) << i;
  }
  // Two segments may not share a cache.
  segs[1].kv = segs[0].kv;
  EXPECT_THROW(ex.forward_batch(segs), ConfigError);
}

}  // namespace
}  // namespace xlshare

namespace xlshare {
namespace {

TEST(KvCache, TakesBlocksAsItGrowsAllOrNothingAndGivesThemBack) {
  const auto c = test::small_config(64, 2, 4, 2, 160, 256);
  auto pool = std::make_shared<KvBlockPool>(c, 3, 4);  // 12 tokens in all
  EXPECT_EQ(pool->block_bytes(), KvBlockPool::token_bytes(c) * 4);
  KvCache a(pool, c, 64), b(pool, c, 64);
  EXPECT_TRUE(a.reserve(5));  // two blocks
  EXPECT_EQ(a.blocks_held(), 2u);
  EXPECT_EQ(pool->free_blocks(), 1u);
  EXPECT_FALSE(b.reserve(5));  // needs two, one is free: takes none
  EXPECT_EQ(pool->free_blocks(), 1u);
  EXPECT_EQ(b.blocks_held(), 0u);
  EXPECT_TRUE(b.reserve(4));
  EXPECT_EQ(pool->used_bytes(), pool->capacity_bytes());
  KvCache moved = std::move(a);  // the blocks move with it
  EXPECT_EQ(moved.blocks_held(), 2u);
  moved.clear();
  EXPECT_EQ(pool->free_blocks(), 2u);
  { KvCache gone = std::move(b); }
  EXPECT_EQ(pool->free_blocks(), 3u);
  KvCache small(pool, c, 6);
  EXPECT_FALSE(small.reserve(7));  // beyond its capacity
  // Another model's shape cannot use the pool.
  EXPECT_THROW(KvCache(pool, test::small_config(64, 3, 4, 2, 160, 256), 8), ConfigError);
  EXPECT_THROW(KvBlockPool(c, 0), ConfigError);
}

TEST(KvCache, AForwardPassFailsCleanlyWhenThePoolIsFull) {
  const auto m = make_synthetic_llama(test::small_config(64, 2, 4, 2, 160, 256), 21);
  test::InMemoryModel in_memory(m);
  Executor ex(in_memory.model, in_memory.weights);
  auto pool = std::make_shared<KvBlockPool>(m.config, 1, 4);
  KvCache kv(pool, m.config, 64);
  std::vector<float> logits, alone;
  const auto prompt = test::some_tokens(256, 4, 3);
  ex.forward(prompt, kv, logits, false);
  const std::int32_t next = 5;
  EXPECT_THROW(ex.forward(std::span(&next, 1), kv, logits, false), ConfigError);
  EXPECT_EQ(kv.size(), 4u);  // unchanged
  // A pool of its own or a shared one: the same numbers.
  KvCache own(m.config, 64);
  ex.forward(prompt, own, alone, false);
  EXPECT_EQ(logits, alone);
}

}  // namespace
}  // namespace xlshare
