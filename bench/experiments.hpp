// What the experiments of xlshare_experiments share: their setup, what a worker process
// reports, running N worker processes, the report with its plots, and the eight
// experiments (experiments_memory.cpp: 1, 2, 5, 7; experiments_speed.cpp: 3, 4, 6, 8).
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "bench_report.hpp"
#include "xlshare/engine/inference_engine.hpp"

namespace xlshare::experiments {

namespace fs = std::filesystem;
using SteadyClock = std::chrono::steady_clock;
using json = nlohmann::json;
using bench::median;
using bench::percentile;

inline double ms_since(SteadyClock::time_point t0) {
  return std::chrono::duration<double, std::milli>(SteadyClock::now() - t0).count();
}
inline double mib(double b) { return b / (1 << 20); }

struct Setup {
  bool quick = false;
  fs::path out;
  std::string uri;
  LlamaConfig shape;
  std::uint64_t model_bytes = 0;
  std::size_t blocks = 0;
  std::string command;
  fs::path gguf;  // the same model as a GGUF file (the mmap baseline, cold start)
};

// What a worker process reports.
struct ChildReport {
  double attach_ms = 0, latency_ms = 0, tokens_per_s = 0, ready = 0, reuse = 0, stall_ms = 0,
         link_gbps = 0, overlap = 0, first_token_ms = 0;
  std::uint64_t link_bytes = 0, tokens = 0, hash = 0;
  std::uint64_t warm_link_bytes = 0, start_ns = 0, end_ns = 0,
                link_free_ns = 0;  // exp. 7, in place
  int ok = 0;
};

struct ChildMemory {
  std::uint64_t pss = 0, pool_pss = 0, private_bytes = 0;
};

// Runs `body` in `n` worker processes at once; each reports, then stays alive until all
// are measured (PSS from /proc). Returns reports and memory, in worker order.
std::pair<std::vector<ChildReport>, std::vector<ChildMemory>> run_processes(
    int n, const std::string& pool_path,
    const std::function<ChildReport(int, std::shared_ptr<void>&)>& body);

EngineConfig base_config(const Setup& s);

// Loads the synthetic model of s.shape (seed 1) into the pool s.uri as "bench" and sets
// s.model_bytes; returns the model (to write it as a file too).
SyntheticModel load_bench_model(Setup& s);

std::vector<std::int32_t> prompt_of(const Setup& s, std::size_t n, std::uint32_t seed = 1);

// CLOCK_MONOTONIC in ns: the clock of the pool's link times, the same in every process.
std::uint64_t monotonic_ns();

// In place, the HotSet is copied in the background after the first token: waits until it
// is complete, so that what is measured next runs (and is resident) with all of it.
void wait_hot_set(InferenceEngine& engine);

// The mmap baseline (what N llama.cpp processes sharing one GGUF through the page cache
// cost): maps the file read-only and shared and serves from it as llama.cpp does by
// default: the executor computes on the mapped tensors (GGUF bytes are used as stored),
// with a KV cache sized as the engine sizes a request's and one compute thread, a 4-token
// prompt and 2 generated tokens; everything stays alive until the process is measured.
ChildReport mmap_file_report(const fs::path& file, const Setup& s, std::shared_ptr<void>& keep);

ChildReport generate_report(InferenceEngine& engine, const Setup& s, std::size_t prompt,
                            std::size_t n);

class Report {
 public:
  explicit Report(const Setup& s) : s_(s) {}
  std::ostringstream md;
  json data = json::object();

  // One quantity per panel: its axis label names it with its unit ("stall (ms)").
  struct Panel {
    std::string ylabel{};
    std::vector<std::pair<std::string, std::size_t>> series{};  // title, column of the rows
    std::vector<std::pair<std::string, double>> references{};   // a dashed line at y: title, y
  };
  struct Figure {
    std::string name{}, title{}, xlabel{};
    std::vector<std::vector<double>> rows{};  // x, then the columns the panels name (1, 2, ...)
    std::vector<Panel> panels{};              // stacked, sharing the x axis
    std::vector<std::string> categories{};    // x = 1..n named so, drawn as bars; or none
    bool integer_x = false;                   // ticks at whole numbers only (counts, steps)
    bool logx = false;                        // x doubles: 1, 2, 4, 8
  };

  // Writes the rows to a .dat file and draws the figure with gnuplot as SVG and PNG.
  void plot(const Figure& f);

 private:
  const Setup& s_;
};

// --- the experiments ------------------------------------------------------------------

json e1_memory(const Setup& s, Report& rep, std::vector<double>& per_process_overhead);

json e2_scalability(const Setup& s, Report& rep, double overhead);

json e3_policies(const Setup& s, Report& rep);

json e4_prefetch(const Setup& s, Report& rep, double& best_accuracy, double& decode_ready);

json e5_cold_start(const Setup& s, Report& rep, double& attach_first_token_ms,
                   double& attach_in_place_ms, double& cold_ms);

json e6_batching(const Setup& s, Report& rep, double& p50_single);

json e7_contention(const Setup& s, Report& rep, double& in_place_peak_gbps, double& limit_gbps);

json e8_local(const Setup& s, Report& rep, double& decode_pool, double& decode_in_place,
              double& decode_local);

}  // namespace xlshare::experiments
