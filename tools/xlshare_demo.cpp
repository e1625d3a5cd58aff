// `make demo`: one copy of some weights in a pool on an emulated CXL link, read by several
// worker processes at once. Prints what each worker read, the link rate it achieved, and
// what the memory really cost, from /proc (PSS), against one private copy per worker.
#include <sys/wait.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <random>
#include <vector>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "xlshare/error.hpp"
#include "xlshare/memory/backend_uri.hpp"
#include "xlshare/memory/checksum.hpp"
#include "xlshare/memory/cxl_emulator.hpp"
#include "xlshare/memory/pool.hpp"
#include "xlshare/proc_memory.hpp"

namespace {

using Clock = std::chrono::steady_clock;

struct WorkerReport {
  std::uint64_t bytes = 0;
  std::uint64_t ns = 0;
  std::uint32_t tensors = 0;
  std::uint32_t checksum_failures = 0;
  std::uint32_t read_errors = 0;
  std::uint64_t late_chunks = 0;
};

double mib(std::uint64_t b) { return static_cast<double>(b) / (1 << 20); }

// One worker: attach through the emulated link, read every tensor into a small buffer (its
// "near memory"), check every checksum, report, then stay attached until measured.
void run_worker(const std::string& uri, const xlshare::LinkParams& link, int repeats,
                int report_fd, int release_fd) {
  xlshare::EmulatorOptions o;
  o.link = link;
  o.check_host_rate = false;  // the parent already said what this host can do
  auto pool = xlshare::Pool::attach(
      std::make_unique<xlshare::CxlEmulator>(xlshare::open_backend(uri), o));
  auto model = pool->model("demo");
  std::vector<std::byte> near(4u << 20);
  WorkerReport r;
  const auto t0 = Clock::now();
  for (int rep = 0; rep < repeats; ++rep) {
    for (const auto& t : model->tensors()) {
      xlshare::Checksum64 sum;
      for (std::uint64_t off = 0; off < t.size_bytes; off += near.size()) {
        auto piece = std::span(near).first(std::min<std::uint64_t>(near.size(), t.size_bytes - off));
        if (pool->read(t, off, piece) != xlshare::ReadStatus::kOk) {
          ++r.read_errors;
          break;
        }
        sum.update(piece);
        r.bytes += piece.size();
      }
      r.checksum_failures += sum.digest() != t.checksum;
      ++r.tensors;
    }
  }
  r.ns = static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - t0).count());
  auto* emu = dynamic_cast<xlshare::CxlEmulator*>(&pool->backend());
  r.late_chunks = emu != nullptr ? emu->stats().late_chunks : 0;
  (void)!::write(report_fd, &r, sizeof r);
  char c;
  (void)!::read(release_fd, &c, 1);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"xlshare demo: one copy of the weights in a pool, shared by worker processes"};
  std::string uri = fmt::format("shm://xlshare-demo-{}", ::getpid());
  std::string preset = "cxl-x8";
  std::uint64_t model_mib = 256;
  int workers = 2;
  int repeats = 2;
  bool keep = false;
  app.add_option("--pool", uri, "pool URI")->capture_default_str();
  app.add_option("--preset", preset, "emulated link: none, cxl-x8, cxl-x16, cxl-switched")->capture_default_str();
  app.add_option("--model-mib", model_mib, "synthetic weights to load, MiB")->capture_default_str()->check(CLI::Range(16, 8192));
  app.add_option("--workers", workers, "worker processes")->capture_default_str()->check(CLI::Range(1, 16));
  app.add_option("--repeats", repeats, "passes over the weights per worker")->capture_default_str()->check(CLI::Range(1, 100));
  app.add_flag("--keep", keep, "leave the pool in place afterwards");
  CLI11_PARSE(app, argc, argv);

  try {
    const xlshare::LinkParams link = xlshare::link_preset(preset);
    constexpr std::uint64_t kTensorMib = 16;
    const std::uint64_t n_tensors = model_mib / kTensorMib;
    const std::uint64_t weight_bytes = n_tensors * (kTensorMib << 20);

    fmt::print("xlshare demo: {} MiB of weights in {}, {} workers on emulated link '{}'\n",
               weight_bytes >> 20, uri, workers, preset);
    fmt::print("  link: {} GB/s, {} ns latency; this host copies {:.1f} GB/s on one thread\n\n",
               link.bandwidth_gbps, link.latency_ns, xlshare::CxlEmulator::host_copy_gbps());

    // 1. Load once.
    const auto t_load = Clock::now();
    {
      auto pool = xlshare::Pool::create(xlshare::create_backend(uri, weight_bytes + (16u << 20)),
                                        xlshare::PoolOptions{.max_models = 4, .max_tensors = 1024});
      auto writer = pool->begin_model("demo");
      std::mt19937 rng(42);
      std::normal_distribution<float> normal(0.0f, 0.02f);
      for (std::uint64_t i = 0; i < n_tensors; ++i) {
        const std::uint64_t shape[] = {2048, (kTensorMib << 20) / 4 / 2048};
        auto bytes = writer.add_tensor(fmt::format("blk.{}.weight", i), xlshare::DType::kF32, shape);
        auto* f = reinterpret_cast<float*>(bytes.data());
        for (std::uint64_t k = 0; k < bytes.size() / 4; ++k) f[k] = normal(rng);
      }
      writer.set_metadata(R"({"kind":"demo","note":"synthetic weights"})");
      writer.seal();
    }  // the loader unmaps: from here on only the workers map the pool
    const double load_ms = std::chrono::duration<double, std::milli>(Clock::now() - t_load).count();
    fmt::print("loaded {} tensors ({} MiB) into the pool once, in {:.0f} ms\n\n", n_tensors,
               weight_bytes >> 20, load_ms);

    // 2. Workers attach and read concurrently.
    struct Child {
      pid_t pid;
      int report_fd;
      int release_fd;
    };
    std::vector<Child> children;
    for (int w = 0; w < workers; ++w) {
      int report[2], release[2];
      if (::pipe(report) != 0 || ::pipe(release) != 0) throw xlshare::Error("pipe failed");
      const pid_t pid = ::fork();
      if (pid == 0) {
        ::close(report[0]);
        ::close(release[1]);
        int rc = 0;
        try {
          run_worker(uri, link, repeats, report[1], release[0]);
        } catch (const std::exception& e) {
          fmt::print(stderr, "worker {}: {}\n", w, e.what());
          rc = 1;
        }
        ::_exit(rc);
      }
      ::close(report[1]);
      ::close(release[0]);
      children.push_back({pid, report[0], release[1]});
    }
    std::vector<WorkerReport> reports(children.size());
    for (std::size_t i = 0; i < children.size(); ++i) {
      if (::read(children[i].report_fd, &reports[i], sizeof reports[i]) != sizeof reports[i]) {
        throw xlshare::Error(fmt::format("worker {} died before reporting", i));
      }
    }
    // 3. Measure while every worker is still attached.
    const std::string shm_path = uri.rfind("shm://", 0) == 0 ? "/dev/shm/" + uri.substr(6) : uri.substr(uri.find("://") + 3);
    fmt::print("{:>6} {:>8} {:>10} {:>9} {:>9} {:>10} {:>11} {:>11} {:>10}\n", "worker", "pid",
               "read MiB", "time ms", "GB/s", "checksums", "PSS MiB", "pool PSS", "private");
    std::uint64_t pss_total = 0, bytes_total = 0, ns_max = 0;
    bool all_ok = true;
    for (std::size_t i = 0; i < children.size(); ++i) {
      const auto& r = reports[i];
      const auto proc = xlshare::read_proc_memory(children[i].pid).value_or(xlshare::ProcMemory{});
      const auto mapped = xlshare::read_mapping_memory(children[i].pid, shm_path).value_or(xlshare::ProcMemory{});
      pss_total += proc.pss;
      bytes_total += r.bytes;
      ns_max = std::max(ns_max, r.ns);
      const bool ok = r.checksum_failures == 0 && r.read_errors == 0 && r.tensors > 0;
      all_ok = all_ok && ok;
      fmt::print("{:>6} {:>8} {:>10.0f} {:>9.1f} {:>9.2f} {:>10} {:>11.1f} {:>11.1f} {:>10.1f}\n", i,
                 children[i].pid, mib(r.bytes), r.ns / 1e6,
                 r.ns ? static_cast<double>(r.bytes) / static_cast<double>(r.ns) : 0.0,
                 ok ? fmt::format("{} ok", r.tensors) : fmt::format("{} BAD", r.checksum_failures + r.read_errors),
                 mib(proc.pss), mib(mapped.pss), mib(proc.private_bytes()));
    }
    for (const auto& c : children) {
      (void)!::write(c.release_fd, "x", 1);
      ::close(c.release_fd);
      ::close(c.report_fd);
    }
    int failures = 0;
    for (const auto& c : children) {
      int status = 0;
      ::waitpid(c.pid, &status, 0);
      failures += !(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    }
    fmt::print("\nlink: {:.2f} GB/s together over {} workers (configured {} GB/s{})\n",
               ns_max ? static_cast<double>(bytes_total) / static_cast<double>(ns_max) : 0.0,
               workers, link.bandwidth_gbps == 0 ? std::string("unlimited") : fmt::format("{}", link.bandwidth_gbps),
               link.bandwidth_gbps > xlshare::CxlEmulator::host_copy_gbps()
                   ? "; above this host's copy rate, so the host is the bottleneck" : "");
    fmt::print("memory: all {} workers together {:.0f} MiB PSS; {} private copies would be {:.0f} MiB "
               "(the weights alone)\n",
               workers, mib(pss_total), workers, mib(weight_bytes * static_cast<std::uint64_t>(workers)));
    if (!keep) xlshare::remove_backend(uri);
    if (!all_ok || failures) {
      fmt::print(stderr, "demo: a worker failed\n");
      return 1;
    }
  } catch (const std::exception& e) {
    fmt::print(stderr, "xlshare_demo: error: {}\n", e.what());
    try {
      if (!keep && xlshare::backend_exists(uri)) xlshare::remove_backend(uri);
    } catch (...) {
    }
    return 1;
  }
  return 0;
}
