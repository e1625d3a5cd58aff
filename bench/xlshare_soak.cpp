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

#include <nlohmann/json.hpp>

#include "bench_report.hpp"
#include "xlshare/engine/inference_engine.hpp"
#include "xlshare/engine/worker_group.hpp"
#include "xlshare/error.hpp"
#include "xlshare/memory/backend_uri.hpp"
#include "xlshare/option_checks.hpp"  // tools/xlshare: the CLI's option checks

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

// One soak worker, in its own process: an engine with its own fault seed, serving the
// prompts for a while and checking every answer, then closed so that what it leaks shows.
class SoakWorker final : public ProcessWorker {
 public:
  SoakWorker(EngineConfig config, const std::vector<std::vector<std::int32_t>>& prompts,
             const std::vector<std::vector<std::int32_t>>& answers, unsigned index)
      : prompts_(prompts), answers_(answers), index_(index), fds_before_(count_fds()) {
    engine_ = std::make_unique<InferenceEngine>(std::move(config));
    engine_->attach_model("soak");
  }

  // "serve SECONDS": requests until then; "close": the engine destroyed, descriptors counted.
  std::string handle(std::string_view message) override {
    if (message == "close") {
      engine_.reset();
      return nlohmann::json{{"fds_before", fds_before_}, {"fds_after", count_fds()}}.dump();
    }
    const double seconds = std::stod(std::string(message.substr(6)));
    std::uint64_t requests = 0, wrong = 0, errors = 0;
    std::vector<double> t, rss;
    const auto t0 = SteadyClock::now();
    auto last_sample = t0;
    for (std::size_t i = 0;; ++i) {
      const double elapsed = std::chrono::duration<double>(SteadyClock::now() - t0).count();
      if (elapsed >= seconds) break;
      const std::size_t k = (i + index_) % prompts_.size();
      try {
        if (engine_->generate(prompts_[k], 6) != answers_[k]) ++wrong;
      } catch (const std::exception& e) {
        ++errors;
        fmt::print(stderr, "worker {}: request {}: {}\n", index_, i, e.what());
      }
      ++requests;
      if (std::chrono::duration<double>(SteadyClock::now() - last_sample).count() >= 1.0 ||
          i == 0) {
        last_sample = SteadyClock::now();
        t.push_back(elapsed);
        rss.push_back(static_cast<double>(rss_kb()));
      }
    }
    const auto s = engine_->stats().workers[0].transfers;
    // Slope after warm-up: the last two thirds of the samples.
    const std::size_t from = t.size() / 3;
    const auto tail = [from](const std::vector<double>& v) {
      return std::vector<double>(v.begin() + static_cast<long>(from), v.end());
    };
    return nlohmann::json{{"requests", requests},
                          {"wrong", wrong},
                          {"errors", errors},
                          {"retries", s.retries},
                          {"checksum_mismatches", s.checksum_mismatches},
                          {"rss_first_kb", rss.empty() ? 0.0 : rss[from < rss.size() ? from : 0]},
                          {"rss_last_kb", rss.empty() ? 0.0 : rss.back()},
                          {"rss_slope_kb_per_s", slope(tail(t), tail(rss))}}
        .dump();
  }

 private:
  std::unique_ptr<InferenceEngine> engine_;
  const std::vector<std::vector<std::int32_t>>& prompts_;
  const std::vector<std::vector<std::int32_t>>& answers_;
  unsigned index_;
  std::size_t fds_before_;
};

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"xlshare soak: worker processes under faults, checked for loss, errors and leaks"};
  unsigned workers = 2;
  double seconds = 5;
  double transient = 0.02, flips = 0.01;
  app.add_option("--workers", workers, "worker processes")
      ->capture_default_str()
      ->check(xlshare::cli::integer_in(1, 32));
  app.add_option("--seconds", seconds, "how long the workers serve")
      ->capture_default_str()
      ->check(xlshare::cli::real_in(1.0, 86400.0));
  app.add_option("--transient-rate", transient, "transient link error probability per transfer")
      ->capture_default_str()
      ->check(xlshare::cli::real_in(0.0, 1.0));
  app.add_option("--bit-flip-rate", flips, "silent bit flip probability per transfer")
      ->capture_default_str()
      ->check(xlshare::cli::real_in(0.0, 1.0));
  bool json = false;
  app.add_flag("--json", json, "print the results as JSON instead of a table");
  CLI11_PARSE(app, argc, argv);

  const std::string prefix = fmt::format("xlshare-soak-{}", ::getpid());
  const std::string uri = "shm://" + prefix;
  int rc = 0;
  try {
    bench::Report report(json);
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
    // The copy path: every weight crosses the emulated link, where the faults are injected
    // (in place, the default on this host, reads the mapping and would see none).
    config.placement = Placement::kCopy;
    config.cache_bytes = model_bytes / 6;
    config.faults.transient_error_rate = transient;
    config.faults.bit_flip_rate = flips;

    // Every worker serves at once; then each is closed and its descriptors counted.
    std::uint64_t total = 0, wrong = 0, errors = 0, lost = 0, faults_met = 0;
    {
      WorkerGroup group(
          [&](unsigned w) {
            EngineConfig c = config;
            c.faults.seed = w + 1;
            return std::make_unique<SoakWorker>(c, prompts, answers, w);
          },
          {.workers = workers});
      for (unsigned w = 0; w < workers; ++w) group.send(w, fmt::format("serve {}", seconds));
      report.table("workers", {"worker", "requests", "wrong", "errors", "retries", "mismatch",
                               "RSS MiB", "RSS end MiB", "slope KiB/s", "fds +/-"});
      for (unsigned w = 0; w < workers; ++w) {
        try {
          const auto r = nlohmann::json::parse(group.receive(w));
          const auto fds = nlohmann::json::parse(group.call(w, "close"));
          const long leaked = fds.at("fds_after").get<long>() - fds.at("fds_before").get<long>();
          total += r.at("requests").get<std::uint64_t>();
          wrong += r.at("wrong").get<std::uint64_t>();
          errors += r.at("errors").get<std::uint64_t>();
          faults_met += r.at("retries").get<std::uint64_t>() +
                        r.at("checksum_mismatches").get<std::uint64_t>();
          report.row({bench::cell(w), bench::cell(r.at("requests").get<std::uint64_t>()),
                      bench::cell(r.at("wrong").get<std::uint64_t>()),
                      bench::cell(r.at("errors").get<std::uint64_t>()),
                      bench::cell(r.at("retries").get<std::uint64_t>()),
                      bench::cell(r.at("checksum_mismatches").get<std::uint64_t>()),
                      bench::cell(r.at("rss_first_kb").get<double>() / 1024, 1),
                      bench::cell(r.at("rss_last_kb").get<double>() / 1024, 1),
                      bench::cell(r.at("rss_slope_kb_per_s").get<double>(), 2),
                      bench::cell(leaked)});
          if (leaked != 0) {
            report.note(fmt::format("worker {} leaked {} file descriptors", w, leaked));
            rc = 1;
          }
        } catch (const WorkerError& e) {
          ++lost;
          report.note(fmt::format("worker {} lost: {}", w, e.what()));
        }
      }
      for (const auto& line : group.stop()) {
        report.note(line);
        rc = 1;
      }
    }
    remove_backend(uri);
    const auto left = shm_objects(prefix);
    const std::size_t fds_end = count_fds();
    report.note(fmt::format(
        "{} requests by {} workers in {:.0f} s: {} wrong, {} failed, {} workers lost; shm "
        "objects left: {}; parent fds {} -> {}",
        total, workers, seconds, wrong, errors, lost, left.size(), fds_start, fds_end));
    for (const auto& [key, value] :
         {std::pair{"requests", total}, std::pair{"wrong", wrong}, std::pair{"failed", errors},
          std::pair{"workers_lost", lost},
          std::pair<const char*, std::uint64_t>{"shm_objects_left", left.size()}}) {
      report.set(key, value);
    }
    if (wrong || errors || lost || !left.empty() || fds_end != fds_start || total == 0) rc = 1;
    if ((transient > 0 || flips > 0) && faults_met == 0) {
      report.note("faults were asked for and none was met: this run proves nothing about them");
      rc = 1;
    }
    report.set("ok", rc == 0);
  } catch (const std::exception& e) {
    fmt::print(stderr, "xlshare_soak: error: {}\n", e.what());
    if (backend_exists(uri)) remove_backend(uri);
    return 1;
  }
  if (!json) fmt::print("{}\n", rc == 0 ? "soak: OK" : "soak: FAILED");
  return rc;
}
