#include <gtest/gtest.h>

#include <cstring>
#include <thread>
#include <vector>

#include "support/test_support.hpp"
#include "xlshare/error.hpp"
#include "xlshare/memory/backend_uri.hpp"
#include "xlshare/memory/cxl_emulator.hpp"

namespace xlshare {
namespace {

constexpr std::uint64_t kSize = 8u << 20;

class EmulatorTest : public ::testing::Test {
 protected:
  EmulatorTest() : uri_("shm://" + test::unique_name("emu")), guard_(uri_) {
    auto b = create_backend(uri_, kSize);
    Mapping m = b->map(0, kSize, Access::kReadWrite);
    for (std::uint64_t i = 0; i < kSize; ++i) m.data()[i] = std::byte(i % 251);
  }
  std::unique_ptr<CxlEmulator> emulator(LinkParams link, FaultConfig faults = {}) {
    EmulatorOptions o;
    o.link = link;
    o.faults = std::move(faults);
    o.clock = &clock_;
    o.check_host_rate = false;
    return std::make_unique<CxlEmulator>(open_backend(uri_), std::move(o));
  }
  std::string uri_;
  test::BackendGuard guard_;
  ManualClock clock_{1'000'000};
};

TEST(PlanChunk, IsLatencyPlusBytesOverBandwidth) {
  const LinkParams p{
      .bandwidth_gbps = 2.0, .latency_ns = 300, .overhead_ns = 50, .chunk_bytes = 1 << 20};
  constexpr ChunkTiming t = plan_chunk(LinkParams{2.0, 300, 50, 1 << 20}, 1000, 0, 4000, true);
  static_assert(t.start_ns == 1000 && t.link_free_ns == 1000 + 50 + 2000 && t.complete_ns == 3350);
  // A busy link delays the start; later chunks carry no overhead.
  const ChunkTiming u = plan_chunk(p, 1000, 5000, 4000, false);
  EXPECT_EQ(u.start_ns, 5000u);
  EXPECT_EQ(u.link_free_ns, 7000u);
  EXPECT_EQ(u.complete_ns, 7300u);
}

TEST(PlanChunk, TwoReadersOnOneLinkEachGetHalf) {
  // Two readers ask at t=0 for 64 chunks each and alternate on the link.
  const LinkParams p{.bandwidth_gbps = 1.0, .latency_ns = 0, .overhead_ns = 0, .chunk_bytes = 1000};
  LinkState link{};
  std::uint64_t done[2] = {0, 0};
  for (int i = 0; i < 64; ++i) {
    for (int r = 0; r < 2; ++r) done[r] = reserve_chunk(link, p, 0, 1000, i == 0).complete_ns;
  }
  // Alone, each would finish at 64 us; sharing, each takes about twice as long.
  EXPECT_EQ(done[1], 128'000u);
  EXPECT_NEAR(static_cast<double>(done[0]), 128'000.0, 1000.0);
  EXPECT_EQ(link.busy_ns_total, 128'000u);
}

TEST_F(EmulatorTest, OneTransferTakesLatencyPlusBytesOverBandwidth) {
  auto emu = emulator(
      {.bandwidth_gbps = 4.0, .latency_ns = 250, .overhead_ns = 100, .chunk_bytes = 256 * 1024});
  std::vector<std::byte> out(1 << 20);
  const std::uint64_t t0 = clock_.now_ns();
  ASSERT_EQ(emu->read(4096, out), ReadStatus::kOk);
  EXPECT_EQ(clock_.now_ns() - t0, 100u + (1u << 20) / 4 + 250);
  EXPECT_EQ(std::to_integer<int>(out[0]), static_cast<int>(4096 % 251));
  const auto s = emu->stats();
  EXPECT_EQ(s.transfers, 1u);
  EXPECT_EQ(s.bytes, 1u << 20);
  EXPECT_NEAR(s.achieved_gbps, (1 << 20) / double(100 + (1 << 18) + 250), 1e-9);
}

TEST_F(EmulatorTest, ConcurrentReadersNeverExceedTheLinkBandwidth) {
  auto emu = emulator(
      {.bandwidth_gbps = 8.0, .latency_ns = 0, .overhead_ns = 0, .chunk_bytes = 64 * 1024});
  const std::uint64_t t0 = clock_.now_ns();
  constexpr int kThreads = 4, kReads = 8;
  constexpr std::uint64_t kBytes = 512 * 1024;
  std::vector<std::thread> threads;
  for (int i = 0; i < kThreads; ++i) {
    threads.emplace_back([&] {
      std::vector<std::byte> out(kBytes);
      for (int r = 0; r < kReads; ++r) ASSERT_EQ(emu->read(0, out), ReadStatus::kOk);
    });
  }
  for (auto& t : threads) t.join();
  const std::uint64_t total = kThreads * kReads * kBytes;
  // The link was busy exactly total/bandwidth, and no reader finished before that.
  EXPECT_EQ(emu->link_state().busy_ns_total, total / 8);
  EXPECT_GE(clock_.now_ns() - t0, total / 8);
  EXPECT_EQ(emu->link_state().bytes_total, total);
}

TEST_F(EmulatorTest, FaultsAreReproducibleUnderASeed) {
  FaultConfig f;
  f.seed = 7;
  f.transient_error_rate = 0.2;
  f.bit_flip_rate = 0.2;
  auto run = [&](std::uint64_t seed) {
    f.seed = seed;
    auto emu = emulator({}, f);
    std::vector<int> outcome;
    std::vector<std::byte> out(4096);
    for (int i = 0; i < 200; ++i) {
      const auto st = emu->read(static_cast<std::uint64_t>(i) * 4096, out);
      int flipped = 0;
      for (std::size_t k = 0; k < out.size(); ++k) {
        flipped += out[k] != std::byte((static_cast<std::uint64_t>(i) * 4096 + k) % 251);
      }
      outcome.push_back(static_cast<int>(st) * 10 + (st == ReadStatus::kOk ? flipped : 0));
    }
    return std::pair(outcome, emu->stats());
  };
  const auto [a, sa] = run(7);
  const auto [b, sb] = run(7);
  const auto [c, sc] = run(8);
  EXPECT_EQ(a, b);
  EXPECT_NE(a, c);
  EXPECT_GT(sa.transient_errors, 20u);
  EXPECT_LT(sa.transient_errors, 70u);
  EXPECT_GT(sa.bit_flips, 15u);
  EXPECT_EQ(sa.transient_errors, sb.transient_errors);
  EXPECT_EQ(sa.bit_flips, sb.bit_flips);
  for (int v : a) EXPECT_TRUE(v % 10 <= 1) << "at most one bit flipped per transfer";
}

TEST_F(EmulatorTest, PoisonedRangesAndOfflineDevices) {
  FaultConfig f;
  f.poisoned_ranges = {{1u << 20, 4096}};
  f.offline_after_transfers = 5;
  auto emu = emulator({}, f);
  std::vector<std::byte> out(4096);
  EXPECT_EQ(emu->read((1u << 20) - 100, out), ReadStatus::kPoisoned);
  EXPECT_EQ(emu->read((1u << 20) + 4096, out), ReadStatus::kOk);
  EXPECT_EQ(emu->read(0, out), ReadStatus::kOk);
  EXPECT_EQ(emu->read(0, out), ReadStatus::kOk);
  EXPECT_EQ(emu->read(0, out), ReadStatus::kOk);
  EXPECT_EQ(emu->read(0, out), ReadStatus::kOffline);  // the sixth transfer
  EXPECT_TRUE(emu->is_offline());
  emu->set_offline(false);
  EXPECT_EQ(emu->stats().offline_reads, 1u);
  EXPECT_EQ(emu->stats().poisoned_reads, 1u);
  auto on_demand = emulator({});
  on_demand->set_offline(true);
  EXPECT_EQ(on_demand->read(0, out), ReadStatus::kOffline);
}

TEST_F(EmulatorTest, RejectsImpossibleParameters) {
  EXPECT_THROW(emulator({.bandwidth_gbps = -1.0}), ConfigError);
  EXPECT_THROW(emulator({.bandwidth_gbps = 1.0, .chunk_bytes = 0}), ConfigError);
  FaultConfig f;
  f.transient_error_rate = 1.5;
  EXPECT_THROW(emulator({}, f), ConfigError);
  EXPECT_THROW(link_preset("cxl-x32"), ConfigError);
}

TEST(LinkPresets, AreTheDocumentedOnes) {
  EXPECT_EQ(link_preset("cxl-x8").bandwidth_gbps, 36.0);
  EXPECT_EQ(link_preset("cxl-x8").latency_ns, 250u);
  EXPECT_EQ(link_preset("cxl-x16").bandwidth_gbps, 64.0);
  EXPECT_EQ(link_preset("cxl-switched").latency_ns, 600u);
  EXPECT_EQ(link_preset("none").bandwidth_gbps, 0.0);
  EXPECT_EQ(link_presets().size(), 4u);
}

TEST_F(EmulatorTest, RealTimePacingMatchesTheConfiguredRate) {
  // The thin real-time layer: 16 MiB at 4 GB/s should take about 4 ms of wall time.
  EmulatorOptions o;
  o.link = {.bandwidth_gbps = 4.0, .latency_ns = 0, .overhead_ns = 0, .chunk_bytes = 256 * 1024};
  o.check_host_rate = false;
  CxlEmulator emu(open_backend(uri_), o);
  std::vector<std::byte> out(kSize);
  ASSERT_EQ(emu.read(0, out), ReadStatus::kOk);
  ASSERT_EQ(emu.read(0, out), ReadStatus::kOk);
  // Never faster than the link allows (a behavioural bound, not a speed assertion).
  EXPECT_LE(emu.stats().achieved_gbps, 4.0 * 1.01);
}

}  // namespace
}  // namespace xlshare
