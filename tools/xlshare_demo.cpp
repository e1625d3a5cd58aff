// `make demo`: one copy of a model's weights in a shared pool on an emulated CXL link,
// served by four worker processes, each with a small near cache.
//
//   build/bin/xlshare_demo [--model FILE] [--workers 4] [--preset cxl-x8] [--cache-fraction 0.25]
//
// Loads the model once (a synthetic Llama unless --model names a GGUF file or Hugging Face
// directory), starts the workers as separate processes that attach to the pool and
// generate, and prints per worker the latency, ready and reuse rates, stall, link traffic
// and PSS (from /proc), and at the bottom the memory used against private copies.
#include <malloc.h>
#include <sys/wait.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <vector>

#include <fmt/format.h>

#include "xlshare/engine/inference_engine.hpp"
#include "xlshare/error.hpp"
#include "xlshare/memory/backend_uri.hpp"
#include "xlshare/memory/checksum.hpp"
#include "xlshare/proc_memory.hpp"

namespace {

using Clock = std::chrono::steady_clock;

struct Report {
  double attach_ms = 0, latency_ms = 0, ready = 0, reuse = 0, stall_ms = 0;
  std::uint64_t link_bytes = 0, tokens = 0, output_hash = 0;
  int ok = 0;
};

double mib(std::uint64_t b) { return static_cast<double>(b) / (1 << 20); }

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"xlshare demo: one shared copy of a model, served by worker processes"};
  std::string model_path, preset = "cxl-x8", policy = "lru";
  int workers = 4;
  double cache_fraction = 0.25;
  std::size_t tokens = 16, lookahead = 2;
  bool keep = false;
  app.add_option("--model", model_path, "GGUF file or Hugging Face directory (default: a synthetic Llama)");
  app.add_option("--workers", workers, "worker processes")->capture_default_str()->check(CLI::Range(1, 16));
  app.add_option("--preset", preset, "emulated link: none, cxl-x8, cxl-x16, cxl-switched")->capture_default_str();
  app.add_option("--policy", policy, "eviction policy: lru, fifo, schedule")->capture_default_str();
  app.add_option("--lookahead", lookahead, "prefetch lookahead (steps)")->capture_default_str();
  app.add_option("--cache-fraction", cache_fraction, "near cache per worker, as a fraction of the model")
      ->capture_default_str()
      ->check(CLI::Range(0.01, 1.0));
  app.add_option("--tokens", tokens, "tokens each worker generates")->capture_default_str();
  app.add_flag("--keep", keep, "leave the pool in place");
  CLI11_PARSE(app, argc, argv);

  const std::string uri = fmt::format("shm://xlshare-demo-{}", ::getpid());
  try {
    xlshare::EngineConfig config;
    config.pool_uri = uri;
    config.link_preset = preset;
    config.eviction_policy = policy;
    config.lookahead = lookahead;

    // 1. Load once.
    const auto t_load = Clock::now();
    std::string source;
    {
      xlshare::InferenceEngine loader(config);
      if (model_path.empty()) {
        const auto m = xlshare::create_sample_transformer_model(512, 8, 8, 4, 1376, 8000, 42);
        loader.register_model(m, "demo");
        source = "synthetic Llama (dim 512, 8 layers, 8 heads, 4 kv heads, ffn 1376, vocab 8000, F32)";
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
    config.cache_bytes = static_cast<std::uint64_t>(static_cast<double>(model_bytes) * cache_fraction);
    const auto link = xlshare::link_preset(preset);
    fmt::print("xlshare demo\n  model  {} — {:.1f} MiB, loaded into {} once in {:.0f} ms\n", source, mib(model_bytes), uri,
               load_ms);
    fmt::print("  link   {} ({} GB/s, {} ns; this host copies {:.1f} GB/s per thread)\n", preset,
               link.bandwidth_gbps, link.latency_ns, xlshare::CxlEmulator::host_copy_gbps());
    fmt::print("  {} worker processes, each with a {:.1f} MiB cache ({:.0f}% of the model), {} eviction, lookahead {}\n\n",
               workers, mib(config.cache_bytes), cache_fraction * 100, policy, lookahead);

    std::vector<std::int32_t> prompt;
    for (int i = 0; i < 8; ++i) prompt.push_back(static_cast<std::int32_t>((i * 977 + 13) % vocab));

    // 2. Workers attach and generate, each in its own process.
    struct Child {
      pid_t pid;
      int report_fd, release_fd;
    };
    std::vector<Child> children;
    for (int w = 0; w < workers; ++w) {
      int report[2], release[2];
      if (::pipe(report) != 0 || ::pipe(release) != 0) throw xlshare::Error("pipe failed");
      const pid_t pid = ::fork();
      if (pid == 0) {
        ::close(report[0]);
        ::close(release[1]);
        Report r;
        int rc = 0;
        try {
          const auto t0 = Clock::now();
          xlshare::InferenceEngine engine(config);
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
          r.output_hash = xlshare::checksum64(res.output_tokens.data(), res.output_tokens.size() * 4);
          r.ok = 1;
          (void)!::write(report[1], &r, sizeof r);
          char c;
          (void)!::read(release[0], &c, 1);  // stay attached until measured
        } catch (const std::exception& e) {
          fmt::print(stderr, "worker {}: {}\n", w, e.what());
          (void)!::write(report[1], &r, sizeof r);
          rc = 1;
        }
        ::_exit(rc);
      }
      ::close(report[1]);
      ::close(release[0]);
      children.push_back({pid, report[0], release[1]});
    }
    std::vector<Report> reports(children.size());
    for (std::size_t i = 0; i < children.size(); ++i) {
      if (::read(children[i].report_fd, &reports[i], sizeof(Report)) != static_cast<ssize_t>(sizeof(Report))) {
        throw xlshare::Error(fmt::format("worker {} died before reporting", i));
      }
    }
    // 3. Measure while every worker is attached.
    const std::string shm_path = "/dev/shm/" + uri.substr(6);
    fmt::print("{:>6} {:>7} {:>9} {:>10} {:>7} {:>6} {:>6} {:>8} {:>9} {:>8} {:>9}\n", "worker", "pid", "attach ms",
               "latency ms", "tok/s", "ready", "reuse", "stall ms", "link MiB", "PSS MiB", "pool PSS");
    std::uint64_t pss_total = 0, pool_pss_total = 0;
    bool all_ok = true, identical = true;
    for (std::size_t i = 0; i < children.size(); ++i) {
      const Report& r = reports[i];
      const auto proc = xlshare::read_proc_memory(children[i].pid).value_or(xlshare::ProcMemory{});
      const auto mapped = xlshare::read_mapping_memory(children[i].pid, shm_path).value_or(xlshare::ProcMemory{});
      pss_total += proc.pss;
      pool_pss_total += mapped.pss;
      all_ok = all_ok && r.ok;
      identical = identical && r.output_hash == reports[0].output_hash;
      fmt::print("{:>6} {:>7} {:>9.1f} {:>10.1f} {:>7.1f} {:>6.2f} {:>6.2f} {:>8.1f} {:>9.1f} {:>8.1f} {:>9.1f}\n", i,
                 children[i].pid, r.attach_ms, r.latency_ms,
                 r.latency_ms > 0 ? 1000.0 * static_cast<double>(r.tokens) / r.latency_ms : 0.0, r.ready, r.reuse,
                 r.stall_ms, mib(r.link_bytes), mib(proc.pss), mib(mapped.pss));
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
    const double copies = static_cast<double>(workers) * static_cast<double>(model_bytes);
    fmt::print("\nmemory: the {} workers together {:.1f} MiB PSS ({:.1f} MiB of it the shared pool);\n", workers,
               mib(pss_total), mib(pool_pss_total));
    fmt::print("        {} private copies of the weights alone would be {:.1f} MiB: memory_efficiency {:.2f}x\n",
               workers, copies / (1 << 20), copies / static_cast<double>(std::max<std::uint64_t>(pss_total, 1)));
    fmt::print("outputs: {}\n", identical ? "every worker generated the same tokens" : "WORKERS DISAGREE");
    if (!keep) xlshare::remove_backend(uri);
    if (!all_ok || failures || !identical) return 1;
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
