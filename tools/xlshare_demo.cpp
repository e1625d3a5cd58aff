// `make demo`: one copy of a model's weights in a shared pool on an emulated CXL link,
// served by four worker processes, each with a small near cache.
//
//   build/bin/xlshare_demo [--model FILE] [--workers 4] [--preset cxl-x8] [--cache-fraction 0.25]
//                          [--pool shm://NAME]
//
// Loads the model once (a synthetic Llama unless --model names a GGUF file or Hugging Face
// directory), starts the workers as separate processes that attach to the pool and
// generate, and prints per worker the latency, ready and reuse rates, stall, link traffic
// and PSS (from /proc), and at the bottom the memory used against private copies.
//
// The pool is the demo's own: it refuses one that exists, and removes it on every way out
// (success, error, a failed worker, SIGINT, SIGTERM, SIGHUP) unless --keep. When a worker
// fails it prints one line, "xlshare: error: worker N (pid P) ...", and no table.
#include <malloc.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <vector>

#include <fmt/format.h>

#include "xlshare/engine/inference_engine.hpp"
#include "xlshare/error.hpp"
#include "xlshare/memory/backend_uri.hpp"
#include "xlshare/memory/checksum.hpp"
#include "xlshare/option_checks.hpp"  // tools/xlshare: the CLI's option checks
#include "xlshare/proc_memory.hpp"

namespace {

using xlshare::cli::integer_in;
using xlshare::cli::real_in;

using Clock = std::chrono::steady_clock;

// What a worker sends back through its pipe: its figures, or why it failed.
struct Report {
  double attach_ms = 0, latency_ms = 0, ready = 0, reuse = 0, stall_ms = 0;
  std::uint64_t link_bytes = 0, tokens = 0, output_hash = 0;
  int ok = 0;
  char error[512] = {};
};

double mib(std::uint64_t b) { return static_cast<double>(b) / (1 << 20); }

// The pool's /dev/shm path and the demo's pid, for the signal handler: unlink and getpid are
// async-signal-safe, remove_backend is not. Empty path: nothing to remove (--keep).
char g_pool_path[300] = {};
pid_t g_demo_pid = 0;

extern "C" void remove_pool_and_die(int sig) {
  if (g_pool_path[0] != '\0' && ::getpid() == g_demo_pid) ::unlink(g_pool_path);
  ::signal(sig, SIG_DFL);
  ::raise(sig);
}

// Removes the pool when main returns, whichever way (the workers leave with _exit and so
// never run it).
class PoolGuard {
 public:
  PoolGuard(std::string uri, bool keep) : uri_(std::move(uri)), keep_(keep), owner_(::getpid()) {}
  ~PoolGuard() {
    if (keep_ || ::getpid() != owner_) return;
    try {
      if (xlshare::backend_exists(uri_)) xlshare::remove_backend(uri_);
    } catch (...) {
    }
  }
  PoolGuard(const PoolGuard&) = delete;
  PoolGuard& operator=(const PoolGuard&) = delete;

 private:
  std::string uri_;
  bool keep_;
  pid_t owner_;
};

// Reads exactly sizeof(Report); false when the worker closed its pipe first (it died).
bool read_report(int fd, Report& r) {
  auto* p = reinterpret_cast<char*>(&r);
  std::size_t got = 0;
  while (got < sizeof r) {
    const ssize_t n = ::read(fd, p + got, sizeof r - got);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    got += static_cast<std::size_t>(n);
  }
  return true;
}

std::string describe_exit(int status) {
  if (WIFSIGNALED(status)) {
    return fmt::format("killed by signal {} ({})", WTERMSIG(status), ::strsignal(WTERMSIG(status)));
  }
  if (WIFEXITED(status)) return fmt::format("exit status {}", WEXITSTATUS(status));
  return "stopped";
}

int fail(const std::string& what) {
  std::string line = what;
  std::replace(line.begin(), line.end(), '\n', ' ');
  fmt::print(stderr, "xlshare: error: {}\n", line);
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"xlshare demo: one shared copy of a model, served by worker processes"};
  std::string model_path, preset = "cxl-x8", policy = "fixed", uri, placement_name;
  unsigned workers = 4;
  double cache_fraction = 0.25;
  std::size_t tokens = 16;
  std::optional<std::size_t> lookahead;
  bool keep = false;
  app.add_option("--model", model_path,
                 "GGUF file or Hugging Face directory (default: a synthetic Llama)");
  app.add_option("--pool", uri,
                 "the demo's pool, shm://NAME; must not exist (default: shm://xlshare-demo-PID)");
  app.add_option("--workers", workers, "worker processes")
      ->capture_default_str()
      ->check(integer_in(1, 16));
  app.add_option("--preset", preset, "emulated link: none, cxl-x8, cxl-x16, cxl-switched")
      ->capture_default_str();
  app.add_option(
         "--policy", policy,
         "eviction policy: fixed (a fixed set stays, the rest streams), lru, fifo, schedule")
      ->capture_default_str();
  app.add_option("--placement", placement_name,
                 "in-place (default here: workers compute from the pool, --cache-fraction is their "
                 "hot set) or copy "
                 "(a near cache filled over the link, the model of a GPU)")
      ->check(CLI::IsMember({"copy", "in-place", "in_place"}));
  app.add_option("--lookahead", lookahead,
                 "steps ahead: prefetched (copy, default 2) or reserved (in-place, default 4)")
      ->check(integer_in(0, 1024));
  app.add_option("--cache-fraction", cache_fraction,
                 "near memory per worker, as a fraction of the model: the hot set (in-place) or "
                 "the cache (copy)")
      ->capture_default_str()
      ->check(real_in(0.01, 1.0));
  // The engine's default context (1024) less the 8-token prompt.
  app.add_option("--tokens", tokens, "tokens each worker generates")
      ->capture_default_str()
      ->check(integer_in(1, 1016));
  app.add_flag("--keep", keep, "leave the pool in place");
  try {
    app.parse(argc, argv);
  } catch (const CLI::Success& e) {
    return app.exit(e);  // --help
  } catch (const CLI::ParseError& e) {
    return fail(e.what());
  }

  // A worker that dies makes writes to its pipe fail with EPIPE, which the code below checks;
  // the default SIGPIPE would kill the demo instead, pool left behind.
  ::signal(SIGPIPE, SIG_IGN);
  g_demo_pid = ::getpid();
  if (uri.empty()) uri = fmt::format("shm://xlshare-demo-{}", g_demo_pid);
  try {
    const auto parsed = xlshare::parse_backend_uri(uri);
    if (parsed.scheme != xlshare::BackendUri::Scheme::kShm) {
      return fail(fmt::format(
          "--pool {}: the demo needs a shm://NAME pool (it measures /dev/shm/NAME)", uri));
    }
    if (xlshare::backend_exists(uri)) {
      return fail(
          fmt::format("--pool {}: already exists; the demo makes and removes its own pool", uri));
    }
  } catch (const std::exception& e) {
    return fail(e.what());
  }
  const std::string shm_path = "/dev/shm/" + uri.substr(6);
  if (!keep) {
    fmt::format_to_n(g_pool_path, sizeof g_pool_path - 1, "{}", shm_path);
    struct sigaction sa {};
    sa.sa_handler = remove_pool_and_die;
    ::sigemptyset(&sa.sa_mask);
    for (int sig : {SIGINT, SIGTERM, SIGHUP}) ::sigaction(sig, &sa, nullptr);
  }
  PoolGuard guard(uri, keep);

  struct Child {
    pid_t pid;
    int report_fd, release_fd;
  };
  std::vector<Child> children;
  // Lets every worker go (a dead one's EPIPE is ignored), then reaps them; their exit statuses.
  auto release_and_reap = [&children] {
    for (auto& c : children) {
      if (c.release_fd >= 0) {
        (void)!::write(c.release_fd, "x", 1);
        ::close(c.release_fd);
        c.release_fd = -1;
      }
      if (c.report_fd >= 0) {
        ::close(c.report_fd);
        c.report_fd = -1;
      }
    }
    std::vector<int> statuses;
    for (const auto& c : children) {
      int status = 0;
      while (::waitpid(c.pid, &status, 0) < 0 && errno == EINTR) {
      }
      statuses.push_back(status);
    }
    children.clear();
    return statuses;
  };

  try {
    xlshare::EngineConfig config;
    config.pool_uri = uri;
    config.link_preset = preset;
    config.eviction_policy = policy;
    config.lookahead = lookahead;
    if (!placement_name.empty()) config.placement = xlshare::parse_placement(placement_name);

    // 1. Load once.
    const auto t_load = Clock::now();
    std::string source;
    {
      xlshare::InferenceEngine loader(config);
      if (model_path.empty()) {
        const auto m = xlshare::create_sample_transformer_model(512, 8, 8, 4, 1376, 8000, 42);
        loader.register_model(m, "demo");
        source =
            "synthetic Llama (dim 512, 8 layers, 8 heads, 4 kv heads, ffn 1376, vocab 8000, F32)";
      } else {
        loader.register_model(model_path, "demo");
        source = model_path;
      }
    }
    const double load_ms = std::chrono::duration<double, std::milli>(Clock::now() - t_load).count();
    ::malloc_trim(0);  // give the loader's freed memory back: the workers must not inherit it
    std::uint64_t model_bytes = 0;
    std::uint32_t vocab = 0;
    {
      auto pool = xlshare::Pool::attach(xlshare::open_backend(uri));
      auto view = pool->model("demo");
      model_bytes = view->total_bytes();
      vocab = xlshare::LlamaModel::from_pool(*view).config().vocab;
    }
    config.cache_bytes =
        static_cast<std::uint64_t>(static_cast<double>(model_bytes) * cache_fraction);
    const auto link = xlshare::link_preset(preset);
    fmt::print("xlshare demo\n  model  {} — {:.1f} MiB, loaded into {} once in {:.0f} ms\n", source,
               mib(model_bytes), uri, load_ms);
    fmt::print("  link   {} ({} GB/s, {} ns; this host copies {:.1f} GB/s per thread)\n", preset,
               link.bandwidth_gbps, link.latency_ns, xlshare::CxlEmulator::host_copy_gbps());
    const xlshare::Placement placement = config.placement.value_or(xlshare::Placement::kInPlace);
    if (placement == xlshare::Placement::kInPlace) {
      fmt::print(
          "  {} worker processes, each computing in place from the pool with a {:.1f} MiB hot set "
          "({:.0f}% of "
          "the model), lookahead {}\n\n",
          workers, mib(config.cache_bytes), cache_fraction * 100, lookahead.value_or(4));
    } else {
      fmt::print(
          "  {} worker processes, each with a {:.1f} MiB cache ({:.0f}% of the model), {} "
          "eviction, lookahead {}\n\n",
          workers, mib(config.cache_bytes), cache_fraction * 100, policy, lookahead.value_or(2));
    }
    std::fflush(stdout);  // the header shows while the workers run

    std::vector<std::int32_t> prompt;
    for (int i = 0; i < 8; ++i) prompt.push_back(static_cast<std::int32_t>((i * 977 + 13) % vocab));

    // 2. Workers attach and generate, each in its own process.
    for (unsigned w = 0; w < workers; ++w) {
      int report[2], release[2];
      if (::pipe(report) != 0) throw xlshare::Error(xlshare::errno_message("pipe", errno));
      if (::pipe(release) != 0) {
        const int err = errno;
        ::close(report[0]);
        ::close(report[1]);
        throw xlshare::Error(xlshare::errno_message("pipe", err));
      }
      const pid_t pid = ::fork();
      if (pid < 0) {
        const int err = errno;
        for (int fd : {report[0], report[1], release[0], release[1]}) ::close(fd);
        throw xlshare::Error(xlshare::errno_message("fork", err));
      }
      if (pid == 0) {
        // A terminal's ^C reaches the workers too: they just die; the demo removes the pool.
        for (int sig : {SIGINT, SIGTERM, SIGHUP}) ::signal(sig, SIG_DFL);
        // And a worker never outlives the demo (killed by a signal it could not handle).
        ::prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (::getppid() != g_demo_pid) ::_exit(1);
        // The earlier workers' pipe ends: holding them would keep those workers from seeing EOF.
        for (const auto& c : children) {
          ::close(c.report_fd);
          ::close(c.release_fd);
        }
        ::close(report[0]);
        ::close(release[1]);
        Report r;
        int rc = 0;
        // Lives until the worker is released: it must stay attached (its cache and its
        // mapping of the pool resident) while the parent measures its PSS.
        std::unique_ptr<xlshare::InferenceEngine> attached;
        try {
          const auto t0 = Clock::now();
          attached = std::make_unique<xlshare::InferenceEngine>(config);
          xlshare::InferenceEngine& engine = *attached;
          engine.attach_model("demo");
          r.attach_ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
          xlshare::InferenceRequest req;
          req.id = fmt::format("worker-{}", w);
          req.prompt = prompt;
          req.max_new_tokens = tokens;
          const auto res = engine.inference(req);
          r.latency_ms = res.latency_ms;
          r.ready = res.ready_rate;
          r.reuse = res.reuse_rate;
          r.stall_ms = res.stall_ms;
          r.link_bytes = res.link_bytes;
          r.tokens = res.output_tokens.size();
          r.output_hash =
              xlshare::checksum64(res.output_tokens.data(), res.output_tokens.size() * 4);
          r.ok = 1;
        } catch (const std::exception& e) {
          fmt::format_to_n(r.error, sizeof r.error - 1, "{}", e.what());
          rc = 1;
        } catch (...) {
          fmt::format_to_n(r.error, sizeof r.error - 1, "unknown exception");
          rc = 1;
        }
        if (::write(report[1], &r, sizeof r) == static_cast<ssize_t>(sizeof r) && r.ok) {
          char c;
          (void)!::read(release[0], &c, 1);  // stay attached until measured
        }
        ::_exit(rc);
      }
      ::close(report[1]);
      ::close(release[0]);
      children.push_back({pid, report[0], release[1]});
    }
    std::vector<Report> reports(children.size());
    std::vector<bool> reported(children.size());
    for (std::size_t i = 0; i < children.size(); ++i)
      reported[i] = read_report(children[i].report_fd, reports[i]);
    std::vector<pid_t> pids;
    std::size_t n_failed = 0, first_failed = children.size();
    for (std::size_t i = 0; i < children.size(); ++i) {
      pids.push_back(children[i].pid);
      if (!reported[i] || !reports[i].ok) {
        ++n_failed;
        first_failed = std::min(first_failed, i);
      }
    }
    // A failed worker: no table, no claims; one line naming it and why.
    if (n_failed > 0) {
      const std::size_t i = first_failed;
      const auto statuses = release_and_reap();
      const std::string why = reported[i]
                                  ? std::string(reports[i].error)
                                  : "died before reporting (" + describe_exit(statuses[i]) + ")";
      return fail(fmt::format(
          "worker {} (pid {}) failed: {}{}", i, pids[i], why,
          n_failed > 1 ? fmt::format(" ({} of {} workers failed)", n_failed, pids.size()) : ""));
    }

    // 3. Measure while every worker is attached.
    fmt::print("{:>6} {:>7} {:>9} {:>10} {:>7} {:>6} {:>6} {:>8} {:>9} {:>8} {:>9}\n", "worker",
               "pid", "attach ms", "latency ms", "tok/s", "ready", "reuse", "stall ms", "link MiB",
               "PSS MiB", "pool PSS");
    std::uint64_t pss_total = 0, pool_pss_total = 0;
    bool identical = true;
    for (std::size_t i = 0; i < children.size(); ++i) {
      const Report& r = reports[i];
      const auto proc = xlshare::read_proc_memory(children[i].pid).value_or(xlshare::ProcMemory{});
      const auto mapped =
          xlshare::read_mapping_memory(children[i].pid, shm_path).value_or(xlshare::ProcMemory{});
      pss_total += proc.pss;
      pool_pss_total += mapped.pss;
      identical = identical && r.output_hash == reports[0].output_hash;
      fmt::print(
          "{:>6} {:>7} {:>9.1f} {:>10.1f} {:>7.1f} {:>6.2f} {:>6.2f} {:>8.1f} {:>9.1f} {:>8.1f} "
          "{:>9.1f}\n",
          i, children[i].pid, r.attach_ms, r.latency_ms,
          r.latency_ms > 0 ? 1000.0 * static_cast<double>(r.tokens) / r.latency_ms : 0.0, r.ready,
          r.reuse, r.stall_ms, mib(r.link_bytes), mib(proc.pss), mib(mapped.pss));
    }
    const auto statuses = release_and_reap();
    for (std::size_t i = 0; i < statuses.size(); ++i) {
      if (!(WIFEXITED(statuses[i]) && WEXITSTATUS(statuses[i]) == 0)) {
        return fail(fmt::format("worker {} (pid {}) failed after reporting: {}", i, pids[i],
                                describe_exit(statuses[i])));
      }
    }
    const double copies = static_cast<double>(workers) * static_cast<double>(model_bytes);
    fmt::print(
        "\nmemory: the {} workers together {:.1f} MiB PSS ({:.1f} MiB of it the shared pool);\n",
        workers, mib(pss_total), mib(pool_pss_total));
    fmt::print(
        "        {} private copies of the weights alone would be {:.1f} MiB: memory_efficiency "
        "{:.2f}x\n",
        workers, copies / (1 << 20),
        copies / static_cast<double>(std::max<std::uint64_t>(pss_total, 1)));
    if (!identical) return fail("the workers generated different tokens from the same prompt");
    fmt::print("outputs: every worker generated the same tokens\n");
  } catch (const std::exception& e) {
    release_and_reap();  // workers must not outlive the pool they use
    return fail(e.what());
  }
  return 0;
}
