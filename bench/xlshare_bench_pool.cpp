// Through the pool at resident speed? One model, loaded into a fresh pool, run in one
// process and one run in each placement:
//
//   build/bin/xlshare_bench_pool [--model FILE] [--cache-fraction 0.25] [--preset cxl-x8]
//                                [--threads 2] [--repeats 3] [--json] [--quick]
//
//   resident   every weight in this process's private memory (read from the file)
//   in_place   workers compute from the pool's mapping, each piece paced on the emulated
//              link; the cache fraction is the HotSet
//   copy       a near cache of that fraction, filled over the link by the TransferEngine
//
// For each: prefill of 128 tokens (tok/s), decode (tg64 after a 16-token prompt, tok/s),
// stall (ms, during decode), link GB/s (bytes over the link / link time during decode), and
// attach_first_token_ms: a NEW process (this binary, re-executed) attaching to the loaded
// pool (resident: reading the file into private memory), then a 4-token prompt and one
// generated token. Beside the modes: read_floor_ms, a new process that maps the loaded pool
// and reads every weight byte once (the physical floor of a first token; its pages mapped
// in one kernel pass, the fastest way this host has), and load_ms, the
// model loaded from its file into a fresh pool. Medians of --repeats.
//
// Without --model the bench shape is written to a temporary GGUF: dim 768, 12 layers,
// ffn 2048, vocab 32000, F32 (about 512 MiB).
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>
#include <CLI/CLI.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>

#include <nlohmann/json.hpp>
#include "bench_report.hpp"
#include "bench_shape.hpp"

#include "xlshare/engine/inference_engine.hpp"
#include "xlshare/error.hpp"
#include "xlshare/memory/backend_uri.hpp"
#include "xlshare/memory/pool.hpp"
#include "xlshare/model/model_loader.hpp"
#include "xlshare/model/synthetic.hpp"

extern char** environ;

namespace {

using namespace xlshare;
using WallClock = std::chrono::steady_clock;

double ms_since(WallClock::time_point t0) {
  return std::chrono::duration<double, std::milli>(WallClock::now() - t0).count();
}

using bench::median;

std::vector<std::int32_t> tokens(std::size_t n, std::uint32_t vocab) {
  std::vector<std::int32_t> t(n);
  for (std::size_t i = 0; i < n; ++i) t[i] = static_cast<std::int32_t>((i * 7919 + 13) % vocab);
  return t;
}

struct ModeResult {
  std::vector<double> prefill_tok_s, decode_tok_s, stall_ms, link_gbps, attach_first_token_ms;
  nlohmann::json to_json() const {
    return {{"prefill_tok_s", median(prefill_tok_s)},
            {"decode_tok_s", median(decode_tok_s)},
            {"stall_ms", median(stall_ms)},
            {"link_gbps", median(link_gbps)},
            {"attach_first_token_ms", median(attach_first_token_ms)}};
  }
};

// Prefill and decode through an engine (in_place, copy).
void measure_engine(InferenceEngine& e, std::uint32_t vocab, int decode_n, ModeResult& r) {
  const auto prompt128 = tokens(128, vocab), prompt16 = tokens(16, vocab);
  (void)e.generate(prompt16, 2);  // warm: the first pass maps, verifies and fills
  // In place, the HotSet is copied in the background after the first token: measure on it.
  for (int i = 0; i < 1000; ++i) {
    const auto w = e.stats().workers[0];
    if (w.hot_set_bytes >= w.hot_set_target_bytes) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  std::vector<double> prefill;  // the median of three: one prefill is ~0.2 s on a shared host
  for (int i = 0; i < 3; ++i) {
    const auto t = WallClock::now();
    (void)e.generate(prompt128, 1);  // one forward over the prompt; its logits give the token
    prefill.push_back(128.0 / (ms_since(t) / 1e3));
  }
  r.prefill_tok_s.push_back(median(prefill));
  auto t0 = WallClock::now();
  (void)e.generate(prompt16, 1);
  const double prompt_ms = ms_since(t0);
  const Figures before = e.stats().workers[0].figures;
  t0 = WallClock::now();
  (void)e.generate(prompt16, static_cast<std::size_t>(decode_n) + 1);
  const double decode_ms = ms_since(t0) - prompt_ms;
  const Figures after = e.stats().workers[0].figures;
  r.decode_tok_s.push_back(decode_n / (std::max(decode_ms, 1e-3) / 1e3));
  r.stall_ms.push_back(after.stall_ms - before.stall_ms);
  const double link_ms = after.transfer_ms - before.transfer_ms;
  r.link_gbps.push_back(link_ms > 0 ? static_cast<double>(after.link_bytes - before.link_bytes) /
                                          (link_ms * 1e6)
                                    : 0.0);
}

// Prefill and decode with every weight in private memory.
void measure_resident(const LlamaModel& model, WeightProvider& weights, unsigned threads,
                      int decode_n, ModeResult& r) {
  Executor ex(model, weights, ExecutorOptions{threads});
  const auto& c = model.config();
  std::vector<float> logits;
  {
    std::vector<double> prefill;  // the median of three, as for the engines
    const auto p = tokens(128, c.vocab);
    for (int i = 0; i < 3; ++i) {
      KvCache kv(c, 1024);
      auto t0 = WallClock::now();
      ex.forward(p, kv, logits, false);
      prefill.push_back(128.0 / (ms_since(t0) / 1e3));
    }
    r.prefill_tok_s.push_back(median(prefill));
  }
  KvCache kv(c, 1024);
  ex.forward(tokens(16, c.vocab), kv, logits, false);
  std::int32_t next = 1;
  const auto t0 = WallClock::now();
  for (int i = 0; i < decode_n; ++i) {
    ex.forward(std::span(&next, 1), kv, logits, false);
    next =
        static_cast<std::int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
  }
  r.decode_tok_s.push_back(decode_n / (ms_since(t0) / 1e3));
  r.stall_ms.push_back(0.0);
  r.link_gbps.push_back(0.0);
}

struct PrivateWeights {
  std::vector<std::vector<std::byte>> buffers;
  std::vector<std::span<const std::byte>> spans;
};

PrivateWeights read_private(const ModelFile& f) {
  PrivateWeights w;
  for (const auto& t : f.tensors) {
    w.buffers.emplace_back(t.size_bytes);
    read_tensor_data(t, w.buffers.back());
  }
  for (const auto& b : w.buffers) w.spans.emplace_back(b);
  return w;
}

// --- the child modes: a fresh process each ----------------------------------------------

int child_first_token(const std::string& mode, const std::string& pool,
                      const std::string& model_file, const std::string& preset, double fraction,
                      unsigned threads) {
  const auto t0 = WallClock::now();
  double first_token_ms = 0;  // taken before anything is torn down
  if (mode == "resident") {
    const ModelFile f = open_model_file(model_file);
    PrivateWeights w = read_private(f);
    const LlamaModel model = LlamaModel::from_file(f);
    SpanWeights weights(w.spans);
    Executor ex(model, weights, ExecutorOptions{threads});
    KvCache kv(model.config(), 64);
    std::vector<float> logits;
    ex.forward(tokens(4, model.config().vocab), kv, logits, false);
    first_token_ms = ms_since(t0);
  } else {
    EngineConfig c;
    c.pool_uri = pool;
    c.link_preset = preset;
    c.compute_threads = threads;
    c.placement = parse_placement(mode);
    auto probe = Pool::attach(open_backend(pool));
    const std::uint64_t model_bytes = probe->model("m")->total_bytes();
    probe.reset();
    c.cache_bytes = static_cast<std::uint64_t>(fraction * static_cast<double>(model_bytes));
    InferenceEngine e(c);
    e.attach_model("m");
    (void)e.generate(tokens(4, 32), 1);
    first_token_ms = ms_since(t0);
  }
  fmt::print("{:.3f}\n", first_token_ms);
  return 0;
}

// The floor: map the pool and read every weight byte once, the pages mapped in one kernel
// pass first (MADV_POPULATE_READ: faster than a fault per page, so the stricter floor).
int child_read_floor(const std::string& pool_uri) {
  const auto t0 = WallClock::now();
  auto pool = Pool::attach(open_backend(pool_uri));
  auto view = pool->model("m");
  std::uint64_t sum = 0;
  for (const auto& t : view->tensors()) {
    const auto bytes = pool->view(t);
    prefault_pages(bytes);
    const auto* words = reinterpret_cast<const std::uint64_t*>(bytes.data());
    std::uint64_t s = 0;
    for (std::size_t i = 0; i < bytes.size() / 8; ++i) s += words[i];
    sum += s;
  }
  fmt::print("{:.3f} {}\n", ms_since(t0), sum & 1);
  return 0;
}

// Runs this binary again with `args`; returns the first number it prints.
double run_child(const std::vector<std::string>& args) {
  std::vector<char*> argv;
  const std::string self = std::filesystem::read_symlink("/proc/self/exe").string();
  argv.push_back(const_cast<char*>(self.c_str()));
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  int out[2];
  if (::pipe(out) != 0) throw Error("pipe failed");
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, out[1], 1);
  posix_spawn_file_actions_addclose(&actions, out[0]);
  pid_t pid = 0;
  const int rc = posix_spawn(&pid, self.c_str(), &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  ::close(out[1]);
  if (rc != 0) {
    ::close(out[0]);
    throw Error("cannot start a child process");
  }
  std::string text;
  char buf[256];
  for (ssize_t n; (n = ::read(out[0], buf, sizeof buf)) > 0;)
    text.append(buf, static_cast<std::size_t>(n));
  ::close(out[0]);
  int status = 0;
  ::waitpid(pid, &status, 0);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
    throw Error(fmt::format("child {} failed", args.front()));
  return std::stod(text);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"xlshare: resident, in-place and copy through one pool"};
  std::string model_file, preset = "cxl-x8", child, child_pool;
  double fraction = 0.25;
  unsigned threads = 2;
  double scrub_mib_s = 256;
  int repeats = 3;
  bool json = false, quick = false;
  app.add_option("--model", model_file,
                 "GGUF file or Hugging Face directory (default: the bench shape)");
  app.add_option("--cache-fraction", fraction,
                 "cache (copy) and hot set (in_place) as a fraction of the model")
      ->check(CLI::Range(0.0, 1.0));
  app.add_option("--preset", preset, "emulated link preset")->capture_default_str();
  app.add_option("--threads", threads, "compute threads")->check(CLI::Range(1u, 256u));
  app.add_option("--repeats", repeats, "runs per figure (median reported)")
      ->check(CLI::Range(1, 50));
  app.add_option("--scrub-rate", scrub_mib_s, "in_place: the Scrubber's MiB/s (0: off)")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 1e6));
  app.add_flag("--json", json, "print one JSON object");
  app.add_flag("--quick", quick, "a small model, one run: a smoke test");
  app.add_option("--child", child)->group("");  // internal: a fresh process's measurement
  app.add_option("--child-pool", child_pool)->group("");
  CLI11_PARSE(app, argc, argv);
  try {
    if (!child.empty()) {
      if (child == "floor") return child_read_floor(child_pool);
      return child_first_token(child, child_pool, model_file, preset, fraction, threads);
    }
    if (quick) repeats = 1;
    (void)link_preset(preset);  // a bad preset fails before anything is made
    const std::string tag = fmt::format("xlshare-bench-pool-{}", ::getpid());
    const std::string uri = "shm://" + tag;
    std::filesystem::path temp_file;
    if (model_file.empty()) {
      const LlamaConfig c = bench::bench_shape(quick);
      temp_file = std::filesystem::temp_directory_path() / (tag + ".gguf");
      write_gguf(make_synthetic_llama(c, 1), temp_file, DType::kF32);
      model_file = temp_file.string();
    }
    struct Cleanup {
      std::string uri;
      std::filesystem::path file;
      ~Cleanup() {
        try {
          if (backend_exists(uri)) remove_pool(uri, true);
        } catch (...) {
        }
        std::error_code ec;
        if (!file.empty()) std::filesystem::remove(file, ec);
      }
    } cleanup{uri, temp_file};

    const ModelFile f = open_model_file(model_file);
    const std::uint64_t model_bytes = f.total_bytes();
    const int decode_n = quick ? 8 : 64;
    std::vector<double> load_ms, floor_ms;
    for (int r = 0; r < repeats; ++r) {
      if (backend_exists(uri)) remove_pool(uri, true);
      EngineConfig c;
      c.pool_uri = uri;
      const auto t0 = WallClock::now();
      InferenceEngine(c).register_model(std::filesystem::path(model_file), "m");
      load_ms.push_back(ms_since(t0));
    }
    std::map<std::string, ModeResult> modes;
    const std::uint64_t budget =
        static_cast<std::uint64_t>(fraction * static_cast<double>(model_bytes));
    for (int r = 0; r < repeats; ++r) {
      floor_ms.push_back(run_child({"--child", "floor", "--child-pool", uri}));
      {
        PrivateWeights w = read_private(f);
        SpanWeights weights(w.spans);
        const LlamaModel model = LlamaModel::from_file(f);
        measure_resident(model, weights, threads, decode_n, modes["resident"]);
      }
      for (const char* name : {"in_place", "copy"}) {
        EngineConfig c;
        c.pool_uri = uri;
        c.link_preset = preset;
        c.compute_threads = threads;
        c.placement = parse_placement(name);
        c.cache_bytes = budget;
        c.scrub_bytes_per_s = static_cast<std::uint64_t>(scrub_mib_s * 1048576.0);
        InferenceEngine e(c);
        e.attach_model("m");
        measure_engine(e, f.config.vocab, decode_n, modes[name]);
      }
      for (const char* name : {"resident", "in_place", "copy"}) {
        modes[name].attach_first_token_ms.push_back(run_child(
            {"--child", name == std::string("in_place") ? "in-place" : name, "--child-pool", uri,
             "--model", model_file, "--preset", preset, "--cache-fraction",
             fmt::format("{}", fraction), "--threads", std::to_string(threads)}));
      }
    }
    if (json) {
      nlohmann::json j;
      j["model"] = model_file == temp_file.string() ? "bench shape (synthetic, F32)" : model_file;
      j["model_bytes"] = model_bytes;
      j["preset"] = preset;
      j["cache_fraction"] = fraction;
      j["threads"] = threads;
      j["repeats"] = repeats;
      j["read_floor_ms"] = median(floor_ms);
      j["load_ms"] = median(load_ms);
      for (const auto& [name, m] : modes) j["modes"][name] = m.to_json();
      fmt::print("{}\n", j.dump(2));
    } else {
      fmt::print(
          "model {} MiB, preset {}, cache/hot set {:.2f} of the model, {} threads, median of "
          "{}\n\n",
          model_bytes >> 20, preset, fraction, threads, repeats);
      fmt::print(
          "| placement | prefill 128 tok/s | decode tg{} tok/s | stall ms | link GB/s | attach → "
          "first token ms |\n",
          decode_n);
      fmt::print("|---|---|---|---|---|---|\n");
      for (const char* name : {"resident", "in_place", "copy"}) {
        const ModeResult& m = modes[name];
        fmt::print("| {} | {:.1f} | {:.1f} | {:.1f} | {:.1f} | {:.0f} |\n", name,
                   median(m.prefill_tok_s), median(m.decode_tok_s), median(m.stall_ms),
                   median(m.link_gbps), median(m.attach_first_token_ms));
      }
      fmt::print(
          "\nread floor (a new process reads every weight byte once): {:.0f} ms; load from the "
          "file: {:.0f} ms\n",
          median(floor_ms), median(load_ms));
    }
  } catch (const std::exception& e) {
    fmt::print(stderr, "xlshare: error: {}\n", e.what());
    return 1;
  }
  return 0;
}
