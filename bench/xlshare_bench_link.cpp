// Read throughput of each MemoryBackend, and through the CxlEmulator at each preset with
// 1, 2 and 4 concurrent readers: achieved against configured GB/s.
//
//   build/bin/xlshare_bench_link --benchmark_repetitions=3 --benchmark_report_aggregates_only=true
//
// Each iteration reads 64 MiB in 1 MiB transfers into a per-thread buffer. GB/s is 1e9
// bytes per second of wall time, summed over the readers.
#include <benchmark/benchmark.h>
#include <unistd.h>

#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <vector>

#include <fmt/format.h>

#include "xlshare/memory/backend_uri.hpp"
#include "xlshare/memory/cxl_emulator.hpp"

namespace {

constexpr std::uint64_t kRegion = 64u << 20;
constexpr std::uint64_t kTransfer = 1u << 20;

// Backends are made once per process and removed at exit.
class Backends {
 public:
  static Backends& get() {
    static Backends b;
    return b;
  }
  xlshare::MemoryBackend& backend(const std::string& kind) {
    std::lock_guard lock(mu_);
    auto& slot = backends_[kind];
    if (!slot) {
      const std::string uri = uri_for(kind);
      auto b = xlshare::create_backend(uri, kRegion);
      auto m = b->map(0, kRegion, xlshare::Access::kReadWrite);
      for (std::uint64_t i = 0; i < kRegion; i += 64) m.data()[i] = std::byte(i >> 6);
      uris_.push_back(uri);
      slot = std::move(b);
    }
    return *slot;
  }
  xlshare::CxlEmulator& emulator(const std::string& preset) {
    std::lock_guard lock(mu_);
    auto& slot = emulators_[preset];
    if (!slot) {
      const std::string uri = uri_for("shm");
      {
        auto b = xlshare::create_backend(uri, kRegion);
        auto m = b->map(0, kRegion, xlshare::Access::kReadWrite);
        std::memset(m.data(), 1, kRegion);
      }
      uris_.push_back(uri);
      xlshare::EmulatorOptions o;
      o.link = xlshare::link_preset(preset);
      slot = std::make_unique<xlshare::CxlEmulator>(xlshare::open_backend(uri), o);
    }
    return *slot;
  }
  ~Backends() {
    emulators_.clear();
    backends_.clear();
    for (const auto& uri : uris_) {
      try {
        xlshare::remove_backend(uri);
      } catch (...) {
      }
    }
  }

 private:
  std::string uri_for(const std::string& kind) {
    const std::string name = fmt::format("xlshare-bench-{}-{}", ::getpid(), counter_++);
    if (kind == "shm") return "shm://" + name;
    if (kind == "numa") return "numa://0/" + name;
    return "file://" + (std::filesystem::temp_directory_path() / name).string();
  }
  std::mutex mu_;
  int counter_ = 0;
  std::map<std::string, std::unique_ptr<xlshare::MemoryBackend>> backends_;
  std::map<std::string, std::unique_ptr<xlshare::CxlEmulator>> emulators_;
  std::vector<std::string> uris_;
};

void read_region(benchmark::State& state, xlshare::MemoryBackend& b) {
  std::vector<std::byte> buf(kTransfer);
  for (auto _ : state) {
    for (std::uint64_t off = 0; off < kRegion; off += kTransfer) {
      if (b.read(off, buf) != xlshare::ReadStatus::kOk) state.SkipWithError("read failed");
      benchmark::DoNotOptimize(buf.data());
    }
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * kRegion));
  state.counters["GBps"] = benchmark::Counter(static_cast<double>(state.iterations() * kRegion) / 1e9,
                                              benchmark::Counter::kIsRate);
}

void BM_Backend(benchmark::State& state, const std::string& kind) {
  read_region(state, Backends::get().backend(kind));
  state.counters["configured_GBps"] = benchmark::Counter(0.0, benchmark::Counter::kAvgThreads);
}

void BM_Emulated(benchmark::State& state, const std::string& preset) {
  auto& emu = Backends::get().emulator(preset);
  read_region(state, emu);
  state.counters["configured_GBps"] =
      benchmark::Counter(emu.link_params().bandwidth_gbps, benchmark::Counter::kAvgThreads);
  state.counters["late_chunks"] =
      benchmark::Counter(static_cast<double>(emu.stats().late_chunks), benchmark::Counter::kAvgThreads);
}

}  // namespace

BENCHMARK_CAPTURE(BM_Backend, shm, std::string("shm"))->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_Backend, file, std::string("file"))->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_Backend, numa0, std::string("numa"))->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_Emulated, none, std::string("none"))->ThreadRange(1, 4)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_Emulated, cxl_x8, std::string("cxl-x8"))->ThreadRange(1, 4)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_Emulated, cxl_x16, std::string("cxl-x16"))->ThreadRange(1, 4)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_Emulated, cxl_switched, std::string("cxl-switched"))->ThreadRange(1, 4)->UseRealTime()->Unit(benchmark::kMillisecond);

BENCHMARK_MAIN();
