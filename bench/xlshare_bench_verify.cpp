// What read verification costs (issue 10: no placement reads weights that were not verified
// since they were written). On the bench shape (dim 768, 12 layers, ffn 2048, vocab 32000)
// loaded into a fresh shm pool, workers that compute from the pool's mapping (cache 0):
//
//   build/bin/xlshare_bench_verify [--repeats 3] [--dtype f32|f16] [--threads 2] [--quick]
//
// Prints, as medians of --repeats runs in this one process:
//   * attach: a new engine attaching the model (first-use verification of every tensor
//     included) and the verification's own time and rate; the same bytes hashed again once
//     mapped (scrub_now on a warm mapping): what hashing alone costs;
//   * decode (tg64 after a 16-token prompt) with the background Scrubber off, and at
//     64 / 256 (the default) / 1024 MiB/s, with the scrubber thread's CPU share.
// Both cores are shared by compute and the scrubber here: on a bigger host the scrubber's
// share of a core is the figure to read.
#include <unistd.h>
#include <CLI/CLI.hpp>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>

#include "bench_report.hpp"
#include "bench_shape.hpp"

#include "xlshare/engine/inference_engine.hpp"
#include "xlshare/memory/backend_uri.hpp"
#include "xlshare/model/synthetic.hpp"

namespace {

using namespace xlshare;
using WallClock = std::chrono::steady_clock;

double seconds_since(WallClock::time_point t0) {
  return std::chrono::duration<double>(WallClock::now() - t0).count();
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"xlshare: the cost of verifying in-place weights (first use and the Scrubber)"};
  int repeats = 3;
  unsigned threads = 2;
  std::string dtype_name = "f32";
  bool quick = false;
  app.add_option("--repeats", repeats, "runs per figure (median reported)")
      ->check(CLI::Range(1, 50));
  app.add_option("--threads", threads, "compute threads")->check(CLI::Range(1u, 256u));
  app.add_option("--dtype", dtype_name, "weight dtype")->check(CLI::IsMember({"f32", "f16"}));
  app.add_flag("--quick", quick, "a small model, one run: a smoke test");
  bool json = false;
  app.add_flag("--json", json, "print the tables as JSON instead of markdown");
  CLI11_PARSE(app, argc, argv);
  if (quick) repeats = 1;

  const LlamaConfig c = bench::bench_shape(quick);
  const DType dtype = dtype_name == "f16" ? DType::kF16 : DType::kF32;
  const int decode_n = quick ? 8 : 64;

  const std::string uri = fmt::format("shm://xlshare-bench-verify-{}", ::getpid());
  EngineConfig config;
  config.pool_uri = uri;
  config.link_preset = "none";
  config.placement =
      Placement::kCopy;  // cache 0 in copy: every tile verified at attach (the eager form)
  config.cache_bytes = 0;
  config.compute_threads = threads;
  try {
    InferenceEngine(config).register_model(make_synthetic_llama(c, 1), "m", dtype);

    std::vector<double> attach_s, verify_s, verify_gbps, rehash_gbps;
    std::uint64_t model_bytes = 0;
    for (int r = 0; r < repeats; ++r) {
      config.scrub_bytes_per_s = 0;
      const auto t0 = WallClock::now();
      InferenceEngine e(config);
      e.attach_model("m");
      attach_s.push_back(seconds_since(t0));
      const ScrubStats s = e.stats().workers[0].scrub;
      model_bytes = s.verify_bytes;
      verify_s.push_back(static_cast<double>(s.verify_ns) / 1e9);
      verify_gbps.push_back(
          s.verify_ns ? static_cast<double>(s.verify_bytes) / static_cast<double>(s.verify_ns) : 0);
      const auto t1 = WallClock::now();
      e.scrub_now();
      rehash_gbps.push_back(static_cast<double>(s.verify_bytes) / 1e9 / seconds_since(t1));
    }
    bench::Report report(json);
    report.note(fmt::format("model: {} MiB ({}), {} compute threads, median of {} runs",
                            model_bytes >> 20, dtype_name, threads, repeats));
    report.set("model_bytes", model_bytes);
    report.table("attach", {"attach (cache 0) ms", "first-use verification ms", "its rate GB/s",
                            "re-hash of the mapped model GB/s"});
    report.row({bench::cell(bench::median(attach_s) * 1e3, 0),
                bench::cell(bench::median(verify_s) * 1e3, 0),
                bench::cell(bench::median(verify_gbps), 1),
                bench::cell(bench::median(rehash_gbps), 1)});
    report.table("scrubber", {"scrubber MiB/s", fmt::format("decode (tg{}) tok/s", decode_n),
                              "scrubber CPU % of one core", "scrubbed MiB/s"});
    for (std::uint64_t mib : {0ull, 64ull, 256ull, 1024ull}) {
      config.scrub_bytes_per_s = mib << 20;
      InferenceEngine e(config);
      e.attach_model("m");
      std::vector<double> rates;
      std::vector<std::int32_t> prompt(16, 1);
      for (int r = 0; r < repeats; ++r) {
        // Decode alone: a 16-token prompt and one token, then the same with decode_n more.
        const auto t0 = WallClock::now();
        (void)e.generate(prompt, 1);
        const double prompt_s = seconds_since(t0);
        const auto t1 = WallClock::now();
        (void)e.generate(prompt, static_cast<std::size_t>(decode_n) + 1);
        const double decode_s = seconds_since(t1) - prompt_s;
        if (decode_s > 0) rates.push_back(decode_n / decode_s);
      }
      const ScrubStats s = e.stats().workers[0].scrub;
      const double wall = static_cast<double>(s.wall_ns) / 1e9;
      report.row(
          {mib == 0 ? bench::cell("off") : bench::cell(mib),
           rates.empty() ? bench::missing() : bench::cell(bench::median(rates), 1),
           s.wall_ns
               ? bench::cell(100.0 * static_cast<double>(s.cpu_ns) / static_cast<double>(s.wall_ns),
                             1)
               : bench::missing(),
           wall > 0 ? bench::cell(static_cast<double>(s.bytes_scrubbed) / 1048576.0 / wall, 0)
                    : bench::missing()});
    }
  } catch (const std::exception& e) {
    if (backend_exists(uri)) remove_backend(uri);
    fmt::print(stderr, "xlshare: error: {}\n", e.what());
    return 1;
  }
  remove_backend(uri);
  return 0;
}
