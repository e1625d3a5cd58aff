// Serving under load: requests arrive at random (Poisson) moments with random prompt and
// generation lengths, against one engine whose scheduler batches them continuously; the
// figures vLLM's serving benchmark reports: output tokens/s, requests/s, and the p50, p90
// and p99 of time to first token (TTFT), time per output token (TPOT) and end to end.
//
//   build/bin/xlshare_bench_serve --model /tmp/bench.gguf --rate inf --requests 16
//                                             (the bench shape, cache 1/4, cxl-x8)
//   build/bin/xlshare_bench_serve --quick     (a small synthetic model: the smoke test)
//
// --rate R: arrivals at R requests/s on average (exponential gaps from --seed); inf: all at
// once. The model is loaded into a pool of this process's own, removed at exit; one
// request runs first to warm the cache (not counted).
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <limits>
#include <random>
#include <sstream>
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
#include "xlshare/option_checks.hpp"  // tools/xlshare: the CLI's option checks

namespace {

using namespace xlshare;
using WallClock = std::chrono::steady_clock;

struct Range {
  std::size_t lo = 0, hi = 0;
};

// "A:B" (or "A") with 1 <= A <= B <= max.
Range parse_range(const std::string& text, const char* what, std::size_t max) {
  const auto colon = text.find(':');
  const auto number = [&](const std::string& s) -> std::size_t {
    if (s.empty() || s.size() > 9 || s.find_first_not_of("0123456789") != std::string::npos)
      throw ConfigError(fmt::format("{} '{}': expected A:B, whole numbers", what, text));
    return std::stoul(s);
  };
  Range r;
  r.lo = number(text.substr(0, colon));
  r.hi = colon == std::string::npos ? r.lo : number(text.substr(colon + 1));
  if (r.lo < 1 || r.lo > r.hi || r.hi > max)
    throw ConfigError(fmt::format("{} '{}': needs 1 <= A <= B <= {}", what, text, max));
  return r;
}

struct LoadFigures {
  double seconds = 0, output_tok_s = 0, requests_per_s = 0, mean_batch = 0;
  std::uint64_t output_tokens = 0, preemptions = 0;
  std::vector<double> ttft, tpot, e2e;
};

// One load: `requests` requests at `rate` per second (inf: all at once), drawn from `seed`.
LoadFigures run_load(InferenceEngine& engine, std::size_t requests, double rate, std::uint64_t seed,
                     Range prompt_len, Range gen_len) {
  const LlamaConfig& c = engine.model().config();
  std::mt19937_64 rng(seed);
  const auto draw = [&](Range r) {
    return std::uniform_int_distribution<std::size_t>(r.lo, r.hi)(rng);
  };
  std::vector<InferenceRequest> load(requests);
  std::vector<double> at_s(requests, 0.0);
  std::exponential_distribution<double> gap(std::isinf(rate) ? 1.0 : rate);
  double t = 0;
  for (std::size_t i = 0; i < requests; ++i) {
    InferenceRequest& r = load[i];
    r.id = fmt::format("r{}", i);
    r.prompt.resize(draw(prompt_len));
    for (auto& tok : r.prompt)
      tok = static_cast<std::int32_t>(
          std::uniform_int_distribution<std::uint32_t>(1, c.vocab - 1)(rng));
    r.max_new_tokens = draw(gen_len);
    if (!std::isinf(rate)) {
      at_s[i] = t;
      t += gap(rng);
    }
  }
  const EngineStats before = engine.stats();
  std::vector<RequestHandle> handles;
  handles.reserve(requests);
  const auto t0 = WallClock::now();
  for (std::size_t i = 0; i < requests; ++i) {
    std::this_thread::sleep_until(t0 + std::chrono::duration_cast<WallClock::duration>(
                                           std::chrono::duration<double>(at_s[i])));
    handles.push_back(engine.submit(load[i]));
  }
  LoadFigures f;
  for (auto& h : handles) {
    const InferenceResult r = h.wait();
    f.output_tokens += r.output_tokens.size();
    f.ttft.push_back(r.ttft_ms);
    if (r.output_tokens.size() > 1) f.tpot.push_back(r.tpot_ms);
    f.e2e.push_back(r.latency_ms);
  }
  f.seconds = std::chrono::duration<double>(WallClock::now() - t0).count();
  const EngineStats after = engine.stats();
  const double steps = static_cast<double>(after.serving.steps - before.serving.steps);
  f.mean_batch =
      steps > 0
          ? static_cast<double>(after.serving.step_sequences - before.serving.step_sequences) /
                steps
          : 0.0;
  f.preemptions = after.serving.preemptions - before.serving.preemptions;
  f.output_tok_s = static_cast<double>(f.output_tokens) / f.seconds;
  f.requests_per_s = static_cast<double>(requests) / f.seconds;
  return f;
}

double parse_rate(const std::string& text) {
  if (text == "inf") return std::numeric_limits<double>::infinity();
  const std::string err = cli::real_in(1e-6, 1e6)(text);
  if (!err.empty()) throw ConfigError(fmt::format("--rate: {}", err));
  return std::stod(text);
}

// Medians over repeated loads of each quantile and rate.
struct Point {
  std::string rate;
  double output_tok_s, requests_per_s, mean_batch, ttft[3], tpot[3], e2e[3];
};

Point median_of(const std::string& rate, const std::vector<LoadFigures>& runs) {
  Point p{};
  p.rate = rate;
  const auto med = [&](auto get) {
    std::vector<double> v;
    for (const auto& f : runs) v.push_back(get(f));
    return bench::median(v);
  };
  p.output_tok_s = med([](const LoadFigures& f) { return f.output_tok_s; });
  p.requests_per_s = med([](const LoadFigures& f) { return f.requests_per_s; });
  p.mean_batch = med([](const LoadFigures& f) { return f.mean_batch; });
  const double qs[3] = {50, 90, 99};
  for (int i = 0; i < 3; ++i) {
    p.ttft[i] = med([&](const LoadFigures& f) { return bench::percentile(f.ttft, qs[i]); });
    p.tpot[i] = med([&](const LoadFigures& f) { return bench::percentile(f.tpot, qs[i]); });
    p.e2e[i] = med([&](const LoadFigures& f) { return bench::percentile(f.e2e, qs[i]); });
  }
  return p;
}

nlohmann::json three(const double (&v)[3]) { return {{"p50", v[0]}, {"p90", v[1]}, {"p99", v[2]}}; }

// The throughput-latency curve (vLLM's serving plot) with gnuplot, as SVG and PNG.
void plot(const std::vector<Point>& points, const std::string& prefix, const std::string& title) {
  {
    std::ofstream dat(prefix + ".dat");
    for (const auto& p : points) {
      dat << p.output_tok_s << " " << p.ttft[0] << " " << p.ttft[2] << " " << p.tpot[0] << " "
          << p.tpot[2] << " " << p.e2e[0] << " " << p.e2e[2] << " \"" << p.rate << "\"\n";
    }
    if (!dat) throw BackendError(fmt::format("{}.dat: write failed", prefix));
  }
  for (const auto& [term, ext] :
       {std::pair<std::string, std::string>{"svg size 800,800 dynamic font 'Sans,12'", "svg"},
        {"pngcairo size 800,800 font 'Sans,11'", "png"}}) {
    std::string g = fmt::format(
        "set terminal {}\nset output '{}.{}'\nset termoption noenhanced\n"
        "set multiplot layout 3,1 title '{}'\nset grid\nset key top left\nset lmargin 12\n"
        "set yrange [0:*]\nset xrange [0:*]\n",
        term, prefix, ext, title);
    const char* panels[3][3] = {{"TTFT ms", "2", "3"}, {"TPOT ms", "4", "5"}, {"e2e ms", "6", "7"}};
    for (int i = 0; i < 3; ++i) {
      g += fmt::format(
          "set ylabel '{}'\nset xlabel '{}'\nplot '{}.dat' using 1:{} with linespoints lw 2 title "
          "'p50', '' using 1:{} with linespoints lw 2 title 'p99', '' using 1:{}:8 with labels "
          "offset 0,1 notitle\n",
          panels[i][0], i == 2 ? "output tokens/s (labels: offered requests/s)" : "", prefix,
          panels[i][1], panels[i][2], panels[i][1]);
    }
    g += "unset multiplot\n";
    FILE* gp = ::popen("gnuplot", "w");
    if (gp == nullptr) throw ConfigError("gnuplot: cannot run it (apt-get install gnuplot-nox)");
    std::fputs(g.c_str(), gp);
    if (::pclose(gp) != 0)
      throw ConfigError(fmt::format("gnuplot failed drawing {}.{}", prefix, ext));
  }
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"xlshare: serving under load (Poisson arrivals, continuous batching)"};
  std::string model_file, placement = "copy", preset = "cxl-x8", rate_text = "inf";
  std::string prompt_text = "16:64", gen_text = "32:32";
  double cache_fraction = 0.25;
  std::uint64_t requests = 16, seed = 1, threads = 2, workers = 1, max_batch = 32;
  std::string sweep_text, plot_prefix;
  std::uint64_t repeats = 1;
  bool quick = false, json = false;
  app.add_option("--model", model_file, "GGUF or safetensors file (not needed with --quick)");
  app.add_option("--placement", placement, "copy (a near cache over the link) or in-place")
      ->check(CLI::IsMember({"copy", "in-place"}));
  app.add_option("--preset", preset, "emulated link preset")
      ->check(CLI::IsMember({"none", "cxl-x8", "cxl-x16", "cxl-switched"}));
  app.add_option("--cache-fraction", cache_fraction, "near cache per worker, fraction of the model")
      ->check(cli::real_in(0.0, 1.0));
  app.add_option("--rate", rate_text, "arrivals per second (Poisson), or inf: all at once");
  app.add_option("--requests", requests, "requests to send")->check(cli::integer_in(1, 100000));
  app.add_option("--prompt-len", prompt_text, "prompt tokens, drawn from A:B");
  app.add_option("--gen-len", gen_text, "tokens to generate, drawn from A:B");
  app.add_option("--seed", seed, "random seed of arrivals, lengths and prompts")
      ->check(cli::integer_in(0, std::numeric_limits<std::uint32_t>::max()));
  app.add_option("--threads", threads, "compute threads per worker")
      ->check(cli::integer_in(1, 256));
  app.add_option("--workers", workers, "workers (threads of this process)")
      ->check(cli::integer_in(1, 64));
  app.add_option("--max-batch", max_batch, "sequences a worker runs together at most")
      ->check(cli::integer_in(1, 1024));
  app.add_option("--sweep", sweep_text,
                 "rates to run one after another, e.g. 0.5,1,2,4,inf (instead of --rate)");
  app.add_option("--repeats", repeats, "loads per rate, seeds from --seed (medians reported)")
      ->check(cli::integer_in(1, 100));
  app.add_option("--plot", plot_prefix,
                 "with --sweep: write PREFIX.dat, PREFIX.svg and PREFIX.png (gnuplot)");
  app.add_flag("--quick", quick, "a small synthetic model: a smoke test");
  app.add_flag("--json", json, "print one JSON object instead of markdown");
  CLI11_PARSE(app, argc, argv);

  const std::string uri = fmt::format("shm://xlshare-bench-serve-{}", ::getpid());
  try {
    std::vector<std::string> rates;
    if (sweep_text.empty()) {
      rates.push_back(rate_text);
    } else {
      std::stringstream in(sweep_text);
      for (std::string r; std::getline(in, r, ',');) rates.push_back(r);
    }
    if (rates.empty() || rates.size() > 64) throw ConfigError("--sweep: 1 to 64 rates");
    for (const auto& r : rates) (void)parse_rate(r);
    if (!plot_prefix.empty() && sweep_text.empty()) throw ConfigError("--plot needs --sweep");
    if (!quick && model_file.empty()) throw ConfigError("--model FILE is needed (or --quick)");
    EngineConfig config;
    config.pool_uri = uri;
    config.link_preset = preset;
    config.placement = parse_placement(placement);
    config.compute_threads = static_cast<unsigned>(threads);
    config.workers = static_cast<unsigned>(workers);
    config.max_batch_sequences = static_cast<unsigned>(max_batch);
    config.max_step_tokens = std::max<std::uint32_t>(512, static_cast<std::uint32_t>(max_batch));
    {
      InferenceEngine loader(config);
      if (quick) {
        loader.register_model(make_synthetic_llama(bench::bench_shape(true), 1), "m");
      } else {
        loader.register_model(model_file, "m");
      }
    }
    std::uint64_t model_bytes = 0;
    {
      auto pool = Pool::attach(open_backend(uri));
      model_bytes = pool->model("m")->total_bytes();
    }
    config.cache_bytes =
        static_cast<std::uint64_t>(cache_fraction * static_cast<double>(model_bytes));
    InferenceEngine engine(config);
    engine.attach_model("m");
    const LlamaConfig& c = engine.model().config();
    const std::size_t context = std::min<std::size_t>(config.max_context, c.context);
    const Range prompt_len = parse_range(prompt_text, "--prompt-len", context);
    const Range gen_len = parse_range(gen_text, "--gen-len", context);
    if (prompt_len.hi + gen_len.hi > context) {
      throw ConfigError(
          fmt::format("--prompt-len and --gen-len: {} + {} tokens exceed the context of {}",
                      prompt_len.hi, gen_len.hi, context));
    }

    {  // warm-up: the cache, the HotSet, the buffers
      InferenceRequest w;
      w.id = "warm-up";
      w.prompt.assign(prompt_len.lo, 1);
      w.max_new_tokens = gen_len.lo;
      (void)engine.inference(w);
    }
    std::vector<Point> points;
    std::uint64_t preemptions = 0;
    for (const auto& r : rates) {
      std::vector<LoadFigures> runs;
      for (std::uint64_t k = 0; k < repeats; ++k) {
        runs.push_back(run_load(engine, requests, parse_rate(r), seed + k, prompt_len, gen_len));
        preemptions += runs.back().preemptions;
      }
      points.push_back(median_of(r, runs));
    }
    const std::string setup = fmt::format(
        "{} requests per load, prompt {} and generation {} tokens, seeds {}..{} (medians of {} "
        "loads per rate); model {} MiB, placement {}, cache {:.2f} of it, link {}, {} worker(s) "
        "x {} compute threads, at most {} sequences per step",
        requests, prompt_text, gen_text, seed, seed + repeats - 1, repeats, model_bytes >> 20,
        placement, cache_fraction, preset, workers, threads, max_batch);
    bench::Report report(json);
    if (points.size() == 1) {  // one rate: its figures at the top level
      const Point& p = points.front();
      report.set("rate",
                 p.rate == "inf" ? nlohmann::json("inf") : nlohmann::json(parse_rate(p.rate)));
      report.set("requests", requests);
      report.set("output_tok_s", p.output_tok_s);
      report.set("requests_per_s", p.requests_per_s);
      report.set("ttft_ms", three(p.ttft));
      report.set("tpot_ms", three(p.tpot));
      report.set("e2e_ms", three(p.e2e));
      report.set("mean_batch_sequences", p.mean_batch);
      report.set("preemptions", preemptions);
    }
    report.note(setup);
    report.table("serving", {"rate req/s", "output tok/s", "requests/s", "mean batch",
                             "TTFT p50/p90/p99 ms", "TPOT p50/p90/p99 ms", "e2e p50/p90/p99 ms"});
    const auto q = [](const double(&v)[3]) {
      return bench::cell(fmt::format("{:.1f} / {:.1f} / {:.1f}", v[0], v[1], v[2]));
    };
    for (const auto& p : points) {
      report.row({bench::cell(p.rate), bench::cell(p.output_tok_s, 1),
                  bench::cell(p.requests_per_s, 2), bench::cell(p.mean_batch, 1), q(p.ttft),
                  q(p.tpot), q(p.e2e)});
    }
    if (!plot_prefix.empty()) plot(points, plot_prefix, "Serving: latency against throughput");
  } catch (const std::exception& e) {
    if (backend_exists(uri)) remove_backend(uri);
    fmt::print(stderr, "xlshare: error: {}\n", e.what());
    return 1;
  }
  remove_backend(uri);
  return 0;
}
