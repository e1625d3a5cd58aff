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
#include <limits>
#include <random>
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

nlohmann::json quantiles(const std::vector<double>& v) {
  return {{"p50", bench::percentile(v, 50)},
          {"p90", bench::percentile(v, 90)},
          {"p99", bench::percentile(v, 99)}};
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"xlshare: serving under load (Poisson arrivals, continuous batching)"};
  std::string model_file, placement = "copy", preset = "cxl-x8", rate_text = "inf";
  std::string prompt_text = "16:64", gen_text = "32:32";
  double cache_fraction = 0.25;
  std::uint64_t requests = 16, seed = 1, threads = 2, workers = 1, max_batch = 32;
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
  app.add_flag("--quick", quick, "a small synthetic model: a smoke test");
  app.add_flag("--json", json, "print one JSON object instead of markdown");
  CLI11_PARSE(app, argc, argv);

  const std::string uri = fmt::format("shm://xlshare-bench-serve-{}", ::getpid());
  try {
    double rate = std::numeric_limits<double>::infinity();
    if (rate_text != "inf") {
      const CLI::Validator v = cli::real_in(1e-6, 1e6);
      const std::string err = v(rate_text);
      if (!err.empty()) throw ConfigError(fmt::format("--rate: {}", err));
      rate = std::stod(rate_text);
    }
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
    {  // warm-up: the cache, the HotSet, the buffers
      InferenceRequest w = load.front();
      w.id = "warm-up";
      (void)engine.inference(w);
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
    std::vector<double> ttft, tpot, e2e;
    std::uint64_t out_tokens = 0;
    for (auto& h : handles) {
      const InferenceResult r = h.wait();
      out_tokens += r.output_tokens.size();
      ttft.push_back(r.ttft_ms);
      if (r.output_tokens.size() > 1) tpot.push_back(r.tpot_ms);
      e2e.push_back(r.latency_ms);
    }
    const double seconds = std::chrono::duration<double>(WallClock::now() - t0).count();
    const EngineStats after = engine.stats();
    const double steps = static_cast<double>(after.serving.steps - before.serving.steps);
    const double mean_batch =
        steps > 0
            ? static_cast<double>(after.serving.step_sequences - before.serving.step_sequences) /
                  steps
            : 0.0;

    bench::Report report(json);
    const double output_tok_s = static_cast<double>(out_tokens) / seconds;
    report.set("rate", std::isinf(rate) ? nlohmann::json("inf") : nlohmann::json(rate));
    report.set("requests", requests);
    report.set("duration_s", seconds);
    report.set("output_tokens", out_tokens);
    report.set("output_tok_s", output_tok_s);
    report.set("requests_per_s", static_cast<double>(requests) / seconds);
    report.set("ttft_ms", quantiles(ttft));
    report.set("tpot_ms", quantiles(tpot));
    report.set("e2e_ms", quantiles(e2e));
    report.set("mean_batch_sequences", mean_batch);
    report.set("preemptions", after.serving.preemptions - before.serving.preemptions);
    report.note(fmt::format(
        "{} requests at {} req/s, prompt {} and generation {} tokens, seed {}; model {} MiB, "
        "placement {}, cache {:.2f} of it, link {}, {} worker(s) x {} compute threads",
        requests, rate_text, prompt_text, gen_text, seed, model_bytes >> 20, placement,
        cache_fraction, preset, workers, threads));
    report.table("serving", {"output tok/s", "requests/s", "mean batch", "TTFT p50/p90/p99 ms",
                             "TPOT p50/p90/p99 ms", "e2e p50/p90/p99 ms"});
    const auto q = [](const std::vector<double>& v) {
      return bench::cell(fmt::format("{:.1f} / {:.1f} / {:.1f}", bench::percentile(v, 50),
                                     bench::percentile(v, 90), bench::percentile(v, 99)));
    };
    report.row({bench::cell(output_tok_s, 1),
                bench::cell(static_cast<double>(requests) / seconds, 2), bench::cell(mean_batch, 1),
                q(ttft), q(tpot), q(e2e)});
  } catch (const std::exception& e) {
    if (backend_exists(uri)) remove_backend(uri);
    fmt::print(stderr, "xlshare: error: {}\n", e.what());
    return 1;
  }
  remove_backend(uri);
  return 0;
}
