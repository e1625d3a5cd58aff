// The experiments' shared machinery: worker processes, helpers, and the plots.
#include <fcntl.h>
#include <malloc.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <new>
#include <sstream>
#include <thread>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "experiments.hpp"
#include "xlshare/engine/inference_engine.hpp"
#include "xlshare/engine/worker_group.hpp"
#include "xlshare/error.hpp"
#include "xlshare/memory/backend_uri.hpp"
#include "xlshare/memory/checksum.hpp"
#include "xlshare/memory/link_state.hpp"
#include "xlshare/proc_memory.hpp"

namespace xlshare::experiments {

namespace {

// A worker process that runs an experiment's body once, when it is made, and keeps what the
// body must hold (attached, resident) until the group stops it: after its memory is read.
class BodyWorker final : public ProcessWorker {
 public:
  BodyWorker(int index, const std::function<ChildReport(int, std::shared_ptr<void>&)>& body)
      : report_(body(index, keep_)) {
    report_.ok = 1;
  }
  std::string ready_report() override {
    return std::string(reinterpret_cast<const char*>(&report_), sizeof report_);
  }
  std::string handle(std::string_view) override { throw Error("a body worker takes no messages"); }

 private:
  std::shared_ptr<void> keep_;  // declared before report_: the body fills it first
  ChildReport report_;
};

}  // namespace

// Runs `body` in `n` worker processes at once; each reports, then stays alive until all
// are measured (PSS from /proc). Returns reports and memory, in worker order.
std::pair<std::vector<ChildReport>, std::vector<ChildMemory>> run_processes(
    int n, const std::string& pool_path,
    const std::function<ChildReport(int, std::shared_ptr<void>&)>& body) {
  static_assert(std::is_trivially_copyable_v<ChildReport>);
  ::malloc_trim(0);  // the workers must not inherit what this process freed
  WorkerGroup group(
      [&body](unsigned i) { return std::make_unique<BodyWorker>(static_cast<int>(i), body); },
      {.workers = static_cast<unsigned>(n)});
  std::vector<ChildReport> reports(static_cast<std::size_t>(n));
  std::vector<ChildMemory> memory(static_cast<std::size_t>(n));
  for (unsigned i = 0; i < group.size(); ++i) {
    const std::string& bytes = group.ready_report(i);
    if (bytes.size() != sizeof(ChildReport)) throw Error("a worker's report has the wrong size");
    std::memcpy(&reports[i], bytes.data(), sizeof(ChildReport));
    const auto p = group.memory(i);
    const auto m = read_mapping_memory(group.pid(i), pool_path).value_or(ProcMemory{});
    memory[i] = {p.pss, m.pss, p.private_bytes()};
  }
  if (const auto lines = group.stop(); !lines.empty()) {
    throw Error(
        fmt::format("{} of {} worker processes failed: {}", lines.size(), n, lines.front()));
  }
  return {reports, memory};
}

EngineConfig base_config(const Setup& s) {
  EngineConfig c;
  c.pool_uri = s.uri;
  // The near-cache path (a GPU's) unless a row says in place: the default on this host
  // backend would be in place.
  c.placement = Placement::kCopy;
  c.link_preset = "cxl-x8";
  c.cache_bytes = s.model_bytes / 4;
  c.max_context = 1024;
  return c;
}

SyntheticModel load_bench_model(Setup& s) {
  SyntheticModel model = make_synthetic_llama(s.shape, 1);
  EngineConfig c;
  c.pool_uri = s.uri;
  InferenceEngine loader(c);
  loader.register_model(model, "bench");
  loader.attach_model("bench");
  s.model_bytes = loader.model().total_bytes();
  return model;
}

std::vector<std::int32_t> prompt_of(const Setup& s, std::size_t n, std::uint32_t seed) {
  std::vector<std::int32_t> p(n);
  for (std::size_t i = 0; i < n; ++i)
    p[i] = static_cast<std::int32_t>((seed * 7919 + i * 104729) % s.shape.vocab);
  return p;
}

// CLOCK_MONOTONIC in ns: the clock of the pool's link times, the same in every process.
std::uint64_t monotonic_ns() {
  timespec ts{};
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<std::uint64_t>(ts.tv_sec) * 1'000'000'000ull +
         static_cast<std::uint64_t>(ts.tv_nsec);
}

// In place, the HotSet is copied in the background after the first token: waits until it
// is complete, so that what is measured next runs (and is resident) with all of it.
void wait_hot_set(InferenceEngine& engine) {
  const auto t0 = SteadyClock::now();
  for (;;) {
    const auto w = engine.stats().workers[0];
    if (w.hot_set_bytes >= w.hot_set_target_bytes) return;
    if (ms_since(t0) > 120000) {
      throw Error(fmt::format("the hot set is incomplete after 120 s ({} of {} bytes)",
                              w.hot_set_bytes, w.hot_set_target_bytes));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

// The mmap baseline (what N llama.cpp processes sharing one GGUF through the page cache
// cost): maps the file read-only and shared and serves from it as llama.cpp does by
// default: the executor computes on the mapped tensors (GGUF bytes are used as stored),
// with a KV cache sized as the engine sizes a request's and one compute thread, a 4-token
// prompt and 2 generated tokens; everything stays alive until the process is measured.
ChildReport mmap_file_report(const fs::path& file, const Setup& s, std::shared_ptr<void>& keep) {
  const std::size_t size = fs::file_size(file);
  const int fd = ::open(file.c_str(), O_RDONLY);
  if (fd < 0) throw Error(fmt::format("cannot open {}", file.string()));
  void* p = ::mmap(nullptr, size, PROT_READ, MAP_SHARED, fd, 0);
  ::close(fd);
  if (p == MAP_FAILED) throw Error(fmt::format("cannot map {}", file.string()));
  struct Served {
    std::shared_ptr<void> mapping;
    ModelFile file;
    std::unique_ptr<LlamaModel> model;
    std::unique_ptr<SpanWeights> weights;
    std::unique_ptr<Executor> executor;
    std::unique_ptr<KvCache> kv;
  };
  auto served = std::make_shared<Served>();
  served->mapping = std::shared_ptr<void>(p, [size](void* q) { ::munmap(q, size); });
  served->file = open_model_file(file);
  std::vector<std::span<const std::byte>> spans;
  for (const auto& t : served->file.tensors) {
    if (t.permute_heads != 0 || t.offset_bytes > size || t.size_bytes > size - t.offset_bytes) {
      throw Error(fmt::format("{}: tensor '{}' cannot be used as mapped", file.string(), t.name));
    }
    spans.emplace_back(static_cast<const std::byte*>(p) + t.offset_bytes, t.size_bytes);
  }
  served->model = std::make_unique<LlamaModel>(LlamaModel::from_file(served->file));
  served->weights = std::make_unique<SpanWeights>(std::move(spans));
  served->executor =
      std::make_unique<Executor>(*served->model, *served->weights, ExecutorOptions{1});
  served->kv =
      std::make_unique<KvCache>(served->model->config(), 4 + 2);  // as the engine sizes a request's
  std::vector<float> logits;
  const auto prompt = prompt_of(s, 4);
  const auto t0 = std::chrono::steady_clock::now();
  served->executor->forward(prompt, *served->kv, logits, false);
  std::int32_t next = 0;
  for (int i = 0; i < 2; ++i) {
    next =
        static_cast<std::int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
    served->executor->forward(std::span(&next, 1), *served->kv, logits, false);
  }
  ChildReport r;
  r.latency_ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  r.tokens = 2;
  r.hash = static_cast<std::uint64_t>(next);
  keep = served;
  return r;
}

ChildReport generate_report(InferenceEngine& engine, const Setup& s, std::size_t prompt,
                            std::size_t n) {
  InferenceRequest r;
  r.id = "x";
  r.prompt = prompt_of(s, prompt);
  r.max_new_tokens = n;
  const auto res = engine.inference(r);
  ChildReport c;
  c.latency_ms = res.latency_ms;
  c.tokens = res.output_tokens.size();
  c.tokens_per_s = res.latency_ms > 0 ? 1000.0 * static_cast<double>(n) / res.latency_ms : 0;
  c.ready = res.ready_rate;
  c.reuse = res.reuse_rate;
  c.stall_ms = res.stall_ms;
  c.link_bytes = res.link_bytes;
  c.link_gbps = res.link_gbps;
  c.overlap = res.overlap;
  c.hash = checksum64(res.output_tokens.data(), res.output_tokens.size() * 4);
  return c;
}

namespace {

// `text` as a gnuplot single-quoted string (a quote inside is doubled).
std::string quoted(const std::string& text) {
  std::string out = "'";
  for (char c : text) out += c == '\'' ? std::string("''") : std::string(1, c);
  return out + "'";
}

}  // namespace

void Report::plot(const Figure& f) {
  const fs::path dat = s_.out / (f.name + ".dat");
  {
    std::ofstream out(dat);
    for (const auto& r : f.rows) {
      for (std::size_t i = 0; i < r.size(); ++i) out << (i ? " " : "") << r[i];
      out << "\n";
    }
  }
  const bool bars = !f.categories.empty();
  const int height = 160 + 240 * static_cast<int>(f.panels.size());
  for (const auto& [term, ext] :
       {std::pair<std::string, std::string>{
            fmt::format("svg size 800,{} dynamic font 'Sans,12'", height), "svg"},
        {fmt::format("pngcairo size 800,{} font 'Sans,11'", height), "png"}}) {
    std::ostringstream g;
    g << "set terminal " << term << "\n"
      << "set output '" << (s_.out / (f.name + "." + ext)).string() << "'\n"
      << "set termoption noenhanced\n"
      << "set multiplot layout " << f.panels.size() << ",1 title " << quoted(f.title) << "\n"
      << "set grid\nset key below horizontal\nset lmargin 12\nset rmargin 4\nset yrange [0:*]\n";
    if (bars) {
      g << "set xrange [0.5:" << f.categories.size() + 0.5 << "]\nset xtics (";
      for (std::size_t i = 0; i < f.categories.size(); ++i)
        g << (i ? ", " : "") << quoted(f.categories[i]) << " " << i + 1;
      g << ")\nset style fill solid 0.6\nset boxwidth 0.6\n";
    } else {
      if (f.logx) g << "set logscale x 2\n";
      if (f.integer_x) g << (f.logx ? "" : "set xtics 1\n") << "set format x '%.0f'\n";
    }
    for (std::size_t p = 0; p < f.panels.size(); ++p) {
      const Panel& panel = f.panels[p];
      g << "set ylabel " << quoted(panel.ylabel) << "\n"
        << "set xlabel " << quoted(p + 1 == f.panels.size() ? f.xlabel : "") << "\nplot ";
      std::size_t n = 0;
      for (const auto& [title, column] : panel.series) {
        g << (n++ ? ", " : "") << "'" << dat.string() << "' using 1:" << column + 1
          << (bars ? " with boxes" : " with linespoints lw 2") << " title " << quoted(title);
      }
      for (const auto& [title, y] : panel.references) {
        g << (n++ ? ", " : "") << y << " with lines dt 2 lw 2 lc rgb 'gray40' title "
          << quoted(title);
      }
      g << "\n";
    }
    g << "unset multiplot\n";
    FILE* pipe = ::popen("gnuplot", "w");
    if (pipe == nullptr) throw Error("cannot run gnuplot");
    const std::string text = g.str();
    std::fwrite(text.data(), 1, text.size(), pipe);
    if (::pclose(pipe) != 0) throw Error(fmt::format("gnuplot failed on {}", f.name));
  }
  fs::remove(dat);
  md << fmt::format("\n![{}]({}.png)\n", f.title, f.name);
}

}  // namespace xlshare::experiments
