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
//
// Remote pools (when built with UCX): BM_Remote/ucx_tcp and /ucx_sm read a pool served by
// an `xlshare pool serve` process (beside this binary) on 127.0.0.1 with UCX_TLS=tcp, or the
// shared-memory transports (sm: CMA, posix, sysv); BM_UcxPerftest/* is the anchor: UCX's
// own `ucx_perftest -t ucp_get -s 1048576` between two processes on the same transport.
#include <arpa/inet.h>
#include <benchmark/benchmark.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>

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
#include "xlshare/memory/pool.hpp"
#include "xlshare/remote/pool_server.hpp"

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
  // A pool served over UCX with UCX_TLS=`tls` by an `xlshare pool serve` child, and a client
  // of it; `first` is the offset of the 64 MiB tensor it holds. Null when it cannot be made.
  xlshare::Pool* remote(const std::string& tls, std::uint64_t& first, std::string& why) {
    std::lock_guard lock(mu_);
    auto& slot = remotes_[tls];
    if (!slot.pool && slot.why.empty()) {
      try {
        start_remote(tls, slot);
      } catch (const std::exception& e) {
        slot.why = e.what();
      }
    }
    first = slot.first;
    why = slot.why;
    return slot.pool.get();
  }
  ~Backends() {
    for (auto& [tls, r] : remotes_) {
      r.pool.reset();
      if (r.server > 0) {
        ::kill(r.server, SIGTERM);
        ::waitpid(r.server, nullptr, 0);
      }
    }
    emulators_.clear();
    backends_.clear();
    for (const auto& uri : uris_) {
      try {
        xlshare::remove_backend(uri);
      } catch (...) {
      }
    }
    if (!token_file_.empty()) std::filesystem::remove(token_file_);
  }

 private:
  std::string uri_for(const std::string& kind) {
    const std::string name = fmt::format("xlshare-bench-{}-{}", ::getpid(), counter_++);
    if (kind == "shm") return "shm://" + name;
    if (kind == "numa") return "numa://0/" + name;
    return "file://" + (std::filesystem::temp_directory_path() / name).string();
  }
  struct Remote {
    std::unique_ptr<xlshare::Pool> pool;
    std::uint64_t first = 0;
    pid_t server = -1;
    std::string why;
  };
  void start_remote(const std::string& tls, Remote& r) {
    if (!xlshare::ucx_available()) throw std::runtime_error("built without UCX");
    const std::string uri = uri_for("shm");
    {
      auto pool = xlshare::create_pool(uri, kRegion + (16u << 20));
      uris_.push_back(uri);
      auto w = pool->begin_model("bench");
      const std::uint64_t shape[] = {kRegion / 4};
      auto bytes = w.add_tensor("blob", xlshare::DType::kF32, shape);
      for (std::uint64_t i = 0; i < kRegion; i += 64) bytes[i] = std::byte(i >> 6);
      w.seal();
    }
    const auto dir = std::filesystem::temp_directory_path();
    token_file_ = (dir / fmt::format("xlshare-bench-token-{}", ::getpid())).string();
    {
      std::ofstream(token_file_) << "bench-token-" << ::getpid() << "-0123456789abcdef\n";
      ::chmod(token_file_.c_str(), 0600);
    }
    const auto cli = std::filesystem::read_symlink("/proc/self/exe").parent_path() / "xlshare";
    int out[2];
    if (::pipe(out) != 0) throw std::runtime_error("pipe failed");
    r.server = ::fork();
    if (r.server == 0) {
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      ::setenv("UCX_TLS", tls.c_str(), 1);
      ::dup2(out[1], STDOUT_FILENO);
      ::close(out[0]);
      ::close(out[1]);
      ::execl(cli.c_str(), cli.c_str(), "--token-file", token_file_.c_str(), "pool", "serve",
              uri.c_str(), "--listen", "127.0.0.1:0", static_cast<char*>(nullptr));
      ::_exit(97);
    }
    ::close(out[1]);
    std::string line;
    while (line.find("serving pool ") == std::string::npos ||
           line.find('\n', line.find("serving pool ")) == std::string::npos) {
      pollfd p{out[0], POLLIN, 0};
      if (::poll(&p, 1, 20000) <= 0) break;
      char buf[256];
      const ssize_t n = ::read(out[0], buf, sizeof buf);
      if (n <= 0) break;
      line.append(buf, static_cast<std::size_t>(n));
    }
    ::close(out[0]);
    const auto at = line.find(" as ", line.find("serving pool "));
    if (at == std::string::npos) throw std::runtime_error("the server did not start: " + line);
    const std::string remote_uri = line.substr(at + 4, line.find('\n', at) - at - 4);
    ::setenv("UCX_TLS", tls.c_str(), 1);  // read when the client's UCX context starts
    xlshare::BackendOptions o;
    o.token_file = token_file_;
    r.pool = xlshare::Pool::attach(xlshare::open_backend(remote_uri, o));
    ::unsetenv("UCX_TLS");
    r.first = r.pool->model("bench")->at("blob").offset_bytes;
  }
  std::mutex mu_;
  std::map<std::string, Remote> remotes_;
  std::string token_file_;
  int counter_ = 0;
  std::map<std::string, std::unique_ptr<xlshare::MemoryBackend>> backends_;
  std::map<std::string, std::unique_ptr<xlshare::CxlEmulator>> emulators_;
  std::vector<std::string> uris_;
};

void read_region(benchmark::State& state, xlshare::MemoryBackend& b, std::uint64_t first = 0) {
  std::vector<std::byte> buf(kTransfer);
  for (auto _ : state) {
    for (std::uint64_t off = 0; off < kRegion; off += kTransfer) {
      if (b.read(first + off, buf) != xlshare::ReadStatus::kOk) state.SkipWithError("read failed");
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

void BM_Remote(benchmark::State& state, const std::string& tls) {
  std::uint64_t first = 0;
  std::string why;
  xlshare::Pool* pool = Backends::get().remote(tls, first, why);
  if (pool == nullptr) {
    state.SkipWithError(why.c_str());
    for (auto _ : state) {
    }
    return;
  }
  read_region(state, pool->backend(), first);
  state.counters["configured_GBps"] = benchmark::Counter(0.0, benchmark::Counter::kAvgThreads);
}

// A free TCP port on 127.0.0.1 (bound, read, closed: free unless someone takes it at once).
int free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  int port = 0;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0 &&
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0)
    port = ntohs(a.sin_port);
  ::close(fd);
  return port;
}

// UCX's own benchmark on the same transport: ucx_perftest's server in the background, its
// client here; the "Final:" line's overall bandwidth (MB/s of 2^20 bytes) as GB/s.
void BM_UcxPerftest(benchmark::State& state, const std::string& tls) {
  double gbps = 0;
  for (auto _ : state) {
    const int port = free_port();
    const std::string server = fmt::format(
        "UCX_TLS={} timeout 60 ucx_perftest -p {} >/dev/null 2>&1 & sleep 1; ", tls, port);
    const std::string client = fmt::format(
        "UCX_TLS={} timeout 60 ucx_perftest 127.0.0.1 -p {} -t ucp_get -s 1048576 -n 2000 -w 200 "
        "2>&1 | grep Final: ; wait",
        tls, port);
    FILE* p = ::popen(("(" + server + client + ")").c_str(), "r");
    if (p == nullptr) {
      state.SkipWithError("cannot run ucx_perftest");
      return;
    }
    char line[512] = {};
    std::string final;
    while (std::fgets(line, sizeof line, p) != nullptr) final += line;
    ::pclose(p);
    // Final: iterations lat_typical lat_avg lat_overall bw_avg bw_overall rate_avg rate_overall
    double v[8] = {};
    if (std::sscanf(final.c_str(), " Final: %lf %lf %lf %lf %lf %lf %lf %lf", &v[0], &v[1], &v[2],
                    &v[3], &v[4], &v[5], &v[6], &v[7]) != 8) {
      state.SkipWithError(
          ("ucx_perftest printed no Final line (is ucx-utils installed?): " + final.substr(0, 200))
              .c_str());
      return;
    }
    gbps = v[5] * 1048576.0 / 1e9;
  }
  state.counters["GBps"] = gbps;
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
BENCHMARK_CAPTURE(BM_Remote, ucx_tcp, std::string("tcp"))
    ->ThreadRange(1, 2)
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_Remote, ucx_sm, std::string("sm,tcp"))
    ->ThreadRange(1, 2)
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_UcxPerftest, tcp, std::string("tcp"))
    ->Iterations(1)
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_UcxPerftest, sm, std::string("sm"))
    ->Iterations(1)
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
