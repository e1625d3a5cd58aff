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

#include <nlohmann/json.hpp>

#include "xlshare/engine/inference_engine.hpp"
#include "xlshare/engine/worker_group.hpp"
#include "xlshare/error.hpp"
#include "xlshare/memory/backend_uri.hpp"
#include "xlshare/memory/checksum.hpp"
#include "xlshare/option_checks.hpp"  // tools/xlshare: the CLI's option checks
#include "xlshare/proc_memory.hpp"

namespace {

using xlshare::cli::integer_in;
using xlshare::cli::real_in;

using Clock = std::chrono::steady_clock;

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

  // Writes to a worker that died fail with EPIPE (WorkerGroup sends with MSG_NOSIGNAL); no
  // other write of the demo may kill it with SIGPIPE either, its pool left behind.
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

    // 2. Workers attach, each in its own process, and generate together. A worker that
    // fails is one line naming it and why (WorkerError's message); the group stops the rest.
    auto group = xlshare::WorkerGroup::serving(config, "demo", {.workers = workers});
    std::vector<xlshare::InferenceRequest> requests(workers);
    for (unsigned w = 0; w < workers; ++w) {
      requests[w].id = fmt::format("worker-{}", w);
      requests[w].prompt = prompt;
      requests[w].max_new_tokens = tokens;
    }
    const auto results = group->infer_all(requests);

    // 3. Measure while every worker is attached.
    fmt::print("{:>6} {:>7} {:>9} {:>10} {:>7} {:>6} {:>6} {:>8} {:>9} {:>8} {:>9}\n", "worker",
               "pid", "attach ms", "latency ms", "tok/s", "ready", "reuse", "stall ms", "link MiB",
               "PSS MiB", "pool PSS");
    std::uint64_t pss_total = 0, pool_pss_total = 0;
    bool identical = true;
    for (unsigned i = 0; i < workers; ++i) {
      const auto& r = results[i];
      const auto proc = group->memory(i);
      const auto mapped = group->mapping_memory(i, shm_path);
      const double attach_ms =
          nlohmann::json::parse(group->ready_report(i)).at("attach_ms").get<double>();
      pss_total += proc.pss;
      pool_pss_total += mapped.pss;
      identical = identical && r.output_tokens == results[0].output_tokens;
      fmt::print(
          "{:>6} {:>7} {:>9.1f} {:>10.1f} {:>7.1f} {:>6.2f} {:>6.2f} {:>8.1f} {:>9.1f} {:>8.1f} "
          "{:>9.1f}\n",
          i, group->pid(i), attach_ms, r.latency_ms,
          r.latency_ms > 0 ? 1000.0 * static_cast<double>(r.output_tokens.size()) / r.latency_ms
                           : 0.0,
          r.ready_rate, r.reuse_rate, r.stall_ms, mib(r.link_bytes), mib(proc.pss),
          mib(mapped.pss));
    }
    if (const auto lines = group->stop(); !lines.empty()) return fail(lines.front());
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
  } catch (const std::exception& e) {  // the group, if any, has stopped its workers
    return fail(e.what());
  }
  return 0;
}
