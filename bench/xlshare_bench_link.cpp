// Read throughput of each MemoryBackend, and through the CxlEmulator at each preset with
// 1, 2 and 4 concurrent readers: achieved against configured GB/s. And the host's cost per
// byte of the copy placement's work (BM_HostCopy): copying DRAM to DRAM in 256 KiB chunks,
// hashing each 64 KiB tile just copied (XXH3, as the TransferEngine verifies), or both.
//
//   build/bin/xlshare_bench_link --benchmark_repetitions=3 --benchmark_report_aggregates_only=true
//   [--json]
//
// Each iteration reads 64 MiB in 1 MiB transfers into a per-thread buffer. GB/s is 1e9
// bytes per second of wall time, summed over the readers.
#include <benchmark/benchmark.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <vector>

#include <fmt/format.h>

#include "xlshare/memory/backend_uri.hpp"
#include "xlshare/memory/checksum.hpp"
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
  state.counters["GBps"] = benchmark::Counter(
      static_cast<double>(state.iterations() * kRegion) / 1e9, benchmark::Counter::kIsRate);
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
  state.counters["late_chunks"] = benchmark::Counter(static_cast<double>(emu.stats().late_chunks),
                                                     benchmark::Counter::kAvgThreads);
}

// One thread: 512 MiB of source through a 128 MiB destination ring (both far beyond the
// caches), as a copy worker moves a token's weights into its near cache.
enum class HostWork { kCopy, kHashCopiedTile, kCopyAndHash };
void BM_HostCopy(benchmark::State& state, HostWork work) {
  constexpr std::size_t kSource = 512u << 20, kRing = 128u << 20, kChunk = 256u << 10,
                        kTile = 64u << 10;
  static std::vector<std::byte> source(kSource, std::byte{1}), ring(kRing, std::byte{2});
  std::uint64_t sink = 0;
  for (auto _ : state) {
    for (std::size_t at = 0; at < kSource; at += kChunk) {
      std::byte* dst = ring.data() + at % kRing;
      if (work != HostWork::kHashCopiedTile) std::memcpy(dst, source.data() + at, kChunk);
      if (work == HostWork::kCopy) continue;
      for (std::size_t t = 0; t < kChunk; t += kTile)
        sink += xlshare::checksum64(std::span<const std::byte>(dst + t, kTile));
    }
  }
  benchmark::DoNotOptimize(sink);
  state.counters["GBps"] = benchmark::Counter(
      static_cast<double>(state.iterations() * kSource) / 1e9, benchmark::Counter::kIsRate);
}

}  // namespace

BENCHMARK_CAPTURE(BM_HostCopy, copy, HostWork::kCopy)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_HostCopy, hash_copied_tiles, HostWork::kHashCopiedTile)
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_HostCopy, copy_and_hash, HostWork::kCopyAndHash)
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_Backend, shm, std::string("shm"))
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_Backend, file, std::string("file"))
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_Backend, numa0, std::string("numa"))
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_Emulated, none, std::string("none"))
    ->ThreadRange(1, 4)
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_Emulated, cxl_x8, std::string("cxl-x8"))
    ->ThreadRange(1, 4)
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_Emulated, cxl_x16, std::string("cxl-x16"))
    ->ThreadRange(1, 4)
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_Emulated, cxl_switched, std::string("cxl-switched"))
    ->ThreadRange(1, 4)
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

// Google Benchmark's main, with --json (as every xlshare bench takes) standing for
// --benchmark_format=json.
int main(int argc, char** argv) {
  std::vector<char*> args(argv, argv + argc);
  static char json_format[] = "--benchmark_format=json";
  for (auto& a : args) {
    if (std::strcmp(a, "--json") == 0) a = json_format;
  }
  int n = static_cast<int>(args.size());
  benchmark::Initialize(&n, args.data());
  if (benchmark::ReportUnrecognizedArguments(n, args.data())) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
