// Soak: N worker processes serve requests for a bounded time with link faults on, and
// afterwards nothing may be lost, wrong or leaked.
//
//   build/bin/xlshare_soak --workers 4 --seconds 300      (the long run in docs/results.md)
//   build/bin/xlshare_soak --workers 2 --seconds 5        (the short run in make test)
//
// Each worker cycles through a fixed set of prompts whose answers were computed up front
// with every weight resident and no faults; every answer is compared. Each worker samples
// its RSS once a second; the slope after warm-up (a third of the run) is reported (a leak
// shows as a steady climb). File descriptors are counted before and after, and /dev/shm is
// checked for objects left behind. Exit status 0 only when nothing was lost, wrong or leaked.
#include <dirent.h>
#include <sys/wait.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <vector>

#include <fmt/format.h>

#include "xlshare/engine/inference_engine.hpp"
#include "xlshare/error.hpp"
#include "xlshare/memory/backend_uri.hpp"

namespace {

using namespace xlshare;
using SteadyClock = std::chrono::steady_clock;

std::size_t count_fds() {
  std::size_t n = 0;
  for (const auto& e : std::filesystem::directory_iterator("/proc/self/fd")) {
    (void)e;
    ++n;
  }
  return n;
}

std::uint64_t rss_kb() {
  std::ifstream in("/proc/self/statm");
  std::uint64_t pages = 0, resident = 0;
  in >> pages >> resident;
  return resident * static_cast<std::uint64_t>(::sysconf(_SC_PAGESIZE)) / 1024;
}

std::vector<std::string> shm_objects(const std::string& prefix) {
  std::vector<std::string> out;
  for (const auto& e : std::filesystem::directory_iterator("/dev/shm")) {
    const auto name = e.path().filename().string();
    if (name.rfind(prefix, 0) == 0) out.push_back(name);
  }
  return out;
}

// Least-squares slope of y over x.
double slope(const std::vector<double>& x, const std::vector<double>& y) {
  if (x.size() < 2) return 0;
  double mx = 0, my = 0;
  for (std::size_t i = 0; i < x.size(); ++i) {
    mx += x[i];
    my += y[i];
  }
  mx /= static_cast<double>(x.size());
  my /= static_cast<double>(y.size());
  double num = 0, den = 0;
  for (std::size_t i = 0; i < x.size(); ++i) {
    num += (x[i] - mx) * (y[i] - my);
    den += (x[i] - mx) * (x[i] - mx);
  }
  return den > 0 ? num / den : 0;
}

struct WorkerResult {
  std::uint64_t requests = 0, wrong = 0, errors = 0, retries = 0, checksum_mismatches = 0;
  std::uint64_t fds_before = 0, fds_after = 0;
  double rss_first_kb = 0, rss_last_kb = 0, rss_slope_kb_per_s = 0;
};

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"xlshare soak: worker processes under faults, checked for loss, errors and leaks"};
  int workers = 2;
  double seconds = 5;
  double transient = 0.02, flips = 0.01;
  app.add_option("--workers", workers, "worker processes")
      ->capture_default_str()
      ->check(CLI::Range(1, 32));
  app.add_option("--seconds", seconds, "how long the workers serve")
      ->capture_default_str()
      ->check(CLI::Range(1.0, 86400.0));
  app.add_option("--transient-rate", transient, "transient link error probability per transfer")
      ->capture_default_str();
  app.add_option("--bit-flip-rate", flips, "silent bit flip probability per transfer")
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);

  const std::string prefix = fmt::format("xlshare-soak-{}", ::getpid());
  const std::string uri = "shm://" + prefix;
  int rc = 0;
  try {
    const std::size_t fds_start = count_fds();
    EngineConfig config;
    config.pool_uri = uri;
    config.link_preset = "cxl-x8";
    {
      InferenceEngine loader(config);
      loader.register_model(create_sample_transformer_model(256, 12, 8, 4, 688, 1024, 9), "soak");
    }
    // The answers, computed with every weight resident and no faults.
    std::vector<std::vector<std::int32_t>> prompts, answers;
    {
      EngineConfig resident = config;
      resident.cache_bytes = 0;
      InferenceEngine reference(resident);
      reference.attach_model("soak");
      for (std::uint32_t i = 0; i < 6; ++i) {
        std::vector<std::int32_t> p;
        for (std::uint32_t k = 0; k < 4 + i; ++k)
          p.push_back(static_cast<std::int32_t>((i * 131 + k * 17) % 1024));
        prompts.push_back(p);
        answers.push_back(reference.generate(p, 6));
      }
    }
    std::uint64_t model_bytes = 0;
    {
      auto pool = Pool::attach(open_backend(uri));
      model_bytes = pool->model("soak")->total_bytes();
    }
    config.cache_bytes = model_bytes / 6;
    config.faults.transient_error_rate = transient;
    config.faults.bit_flip_rate = flips;

    std::vector<std::pair<pid_t, int>> children;
    for (int w = 0; w < workers; ++w) {
      int fds[2];
      if (::pipe(fds) != 0) throw xlshare::Error("pipe failed");
      const pid_t pid = ::fork();
      if (pid == 0) {
        ::close(fds[0]);
        WorkerResult r;
        r.fds_before = count_fds();
        std::vector<double> t, rss;
        {
          EngineConfig c = config;
          c.faults.seed = static_cast<std::uint64_t>(w) + 1;
          InferenceEngine engine(c);
          engine.attach_model("soak");
          const auto t0 = SteadyClock::now();
          auto last_sample = t0;
          for (std::size_t i = 0;; ++i) {
            const double elapsed = std::chrono::duration<double>(SteadyClock::now() - t0).count();
            if (elapsed >= seconds) break;
            const std::size_t k = (i + static_cast<std::size_t>(w)) % prompts.size();
            try {
              if (engine.generate(prompts[k], 6) != answers[k]) ++r.wrong;
            } catch (const std::exception& e) {
              ++r.errors;
              fmt::print(stderr, "worker {}: request {}: {}\n", w, i, e.what());
            }
            ++r.requests;
            if (std::chrono::duration<double>(SteadyClock::now() - last_sample).count() >= 1.0 ||
                i == 0) {
              last_sample = SteadyClock::now();
              t.push_back(elapsed);
              rss.push_back(static_cast<double>(rss_kb()));
            }
          }
          const auto s = engine.stats().workers[0].transfers;
          r.retries = s.retries;
          r.checksum_mismatches = s.checksum_mismatches;
        }
        r.fds_after = count_fds();
        // Slope after warm-up: the last two thirds of the samples.
        const std::size_t from = t.size() / 3;
        r.rss_slope_kb_per_s =
            slope(std::vector<double>(t.begin() + static_cast<long>(from), t.end()),
                  std::vector<double>(rss.begin() + static_cast<long>(from), rss.end()));
        r.rss_first_kb = rss.empty() ? 0 : rss[from < rss.size() ? from : 0];
        r.rss_last_kb = rss.empty() ? 0 : rss.back();
        (void)!::write(fds[1], &r, sizeof r);
        ::_exit(0);
      }
      ::close(fds[1]);
      children.push_back({pid, fds[0]});
    }
    std::uint64_t total = 0, wrong = 0, errors = 0, lost = 0;
    fmt::print("{:>6} {:>9} {:>6} {:>7} {:>8} {:>9} {:>10} {:>10} {:>14} {:>9}\n", "worker",
               "requests", "wrong", "errors", "retries", "mismatch", "RSS MiB", "RSS end",
               "slope KiB/s", "fds +/-");
    for (std::size_t i = 0; i < children.size(); ++i) {
      WorkerResult r;
      const bool got = ::read(children[i].second, &r, sizeof r) == static_cast<ssize_t>(sizeof r);
      ::close(children[i].second);
      int status = 0;
      ::waitpid(children[i].first, &status, 0);
      if (!got || !(WIFEXITED(status) && WEXITSTATUS(status) == 0)) {
        ++lost;
        fmt::print("{:>6} died without reporting\n", i);
        continue;
      }
      total += r.requests;
      wrong += r.wrong;
      errors += r.errors;
      fmt::print("{:>6} {:>9} {:>6} {:>7} {:>8} {:>9} {:>10.1f} {:>10.1f} {:>14.2f} {:>9}\n", i,
                 r.requests, r.wrong, r.errors, r.retries, r.checksum_mismatches,
                 r.rss_first_kb / 1024, r.rss_last_kb / 1024, r.rss_slope_kb_per_s,
                 static_cast<long>(r.fds_after) - static_cast<long>(r.fds_before));
      if (r.fds_after != r.fds_before) {
        fmt::print("worker {} leaked {} file descriptors\n", i,
                   static_cast<long>(r.fds_after) - static_cast<long>(r.fds_before));
        rc = 1;
      }
    }
    remove_backend(uri);
    const auto left = shm_objects(prefix);
    const std::size_t fds_end = count_fds();
    fmt::print(
        "\n{} requests by {} workers in {:.0f} s: {} wrong, {} failed, {} workers lost; shm "
        "objects left: {}; "
        "parent fds {} -> {}\n",
        total, workers, seconds, wrong, errors, lost, left.size(), fds_start, fds_end);
    if (wrong || errors || lost || !left.empty() || fds_end != fds_start || total == 0) rc = 1;
  } catch (const std::exception& e) {
    fmt::print(stderr, "xlshare_soak: error: {}\n", e.what());
    if (backend_exists(uri)) remove_backend(uri);
    return 1;
  }
  fmt::print("{}\n", rc == 0 ? "soak: OK" : "soak: FAILED");
  return rc;
}
