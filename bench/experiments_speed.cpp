// Experiments 3, 4, 6 and 8: cache policies, prefetch, batching, and the pool against
// resident weights.
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

// Belady's MIN on the worker's real cache-key trace (with each key's bytes), repeated
// `passes` times: on a miss, evict the resident keys whose next use is farthest until the
// key fits. Hit rate over passes 2..passes. Optimal for equal sizes; with unequal sizes a
// near-optimal reference.
double belady(const std::vector<TensorKey>& pass, const std::vector<std::uint64_t>& bytes,
              std::uint64_t budget, int passes) {
  std::vector<TensorKey> trace;
  for (int p = 0; p < passes; ++p) trace.insert(trace.end(), pass.begin(), pass.end());
  // next_use[i]: the next position after i where trace[i] is used again.
  std::vector<std::size_t> next_use(trace.size(), SIZE_MAX), last(bytes.size(), SIZE_MAX);
  for (std::size_t i = trace.size(); i-- > 0;) {
    next_use[i] = last[trace[i]];
    last[trace[i]] = i;
  }
  std::vector<std::size_t> resident_next(bytes.size(), 0);  // 0: not resident; else next use + 1
  std::uint64_t used = 0, hits = 0, counted = 0;
  for (std::size_t i = 0; i < trace.size(); ++i) {
    const TensorKey k = trace[i];
    const bool hit = resident_next[k] != 0;
    if (!hit) {
      while (used + bytes[k] > budget) {
        TensorKey victim = 0;
        std::size_t far = 0;
        for (TensorKey j = 0; j < bytes.size(); ++j) {
          if (resident_next[j] != 0 && resident_next[j] >= far) {
            far = resident_next[j];
            victim = j;
          }
        }
        if (far == 0) break;
        used -= bytes[victim];
        resident_next[victim] = 0;
      }
      if (used + bytes[k] <= budget) used += bytes[k];
    }
    if (hit || used >= bytes[k])
      resident_next[k] = next_use[i] == SIZE_MAX ? SIZE_MAX : next_use[i] + 1;
    if (i >= pass.size()) {
      hits += hit;
      ++counted;
    }
  }
  return counted ? static_cast<double>(hits) / static_cast<double>(counted) : 0.0;
}

}  // namespace

json e3_policies(const Setup& s, Report& rep) {
  const std::vector<int> pcts = s.quick ? std::vector<int>{30, 60, 100}
                                        : std::vector<int>{10, 20, 30, 40, 50, 60, 70, 80, 90, 100};
  json rows = json::array();
  std::vector<std::vector<double>> plot_decode, plot_prefill;
  rep.md << "\n## 3. Cache policies\n\n"
         << "One worker, lookahead 0 (fetch on demand only, so the policy alone decides), link "
            "`none`. Decode: a "
            "warm-up request, then a measured one of 1 prompt token + 3 new tokens; prefill: a "
            "warm-up prompt, then "
            "a measured 32-token prompt. reuse_rate = acquisitions served by bytes already "
            "resident from an earlier "
            "use; ready_rate = acquisitions that found the tensor resident (a hit). OPT = Belady's "
            "MIN simulated on "
            "the worker's real cache-key trace (tensors and tensor pieces, with their sizes) over "
            "8 passes: the "
            "optimum for equal sizes, a near-optimal reference for these unequal ones. Measured "
            "rates also count "
            "the embedding lookup's acquisitions, which the simulated trace leaves out. The fixed "
            "set (the default "
            "policy) keeps the largest pieces that fit its rule, chosen to cut link bytes, not "
            "acquisitions: it is "
            "never above 80% of the cache, and its reuse_rate, a count, undersells the bytes it "
            "saves.\n\n"
         << "| cache % | mode | lru reuse | fifo reuse | schedule reuse | fixed reuse | OPT | "
            "schedule ready |\n"
            "|---|---|---|---|---|---|---|---|\n";
  for (int pct : pcts) {
    for (const char* mode : {"decode", "prefill"}) {
      std::vector<double> reuse;
      double ready_sched = 0, opt = 0;
      for (const char* policy : {"lru", "fifo", "schedule", "fixed"}) {
        EngineConfig c = base_config(s);
        c.link_preset = "none";
        c.lookahead = 0;
        c.eviction_policy = policy;
        c.cache_bytes = s.model_bytes * static_cast<std::uint64_t>(pct) / 100;
        InferenceEngine e(c);
        e.attach_model("bench");
        InferenceRequest r;
        r.id = "warm";
        const bool decode = std::string(mode) == "decode";
        r.prompt = prompt_of(s, decode ? 1 : 32);
        r.max_new_tokens = decode ? 3 : 0;
        e.inference(r);
        const auto res = e.inference(r);
        reuse.push_back(res.reuse_rate);
        if (std::string(policy) == "schedule") {
          ready_sched = res.ready_rate;
          const auto [trace, bytes] = e.cache_trace();
          opt = belady(trace, bytes, c.cache_bytes, 8);
        }
      }
      rep.md << fmt::format("| {} | {} | {:.3f} | {:.3f} | {:.3f} | {:.3f} | {:.3f} | {:.3f} |\n",
                            pct, mode, reuse[0], reuse[1], reuse[2], reuse[3], opt, ready_sched);
      rows.push_back({{"cache_pct", pct},
                      {"mode", mode},
                      {"lru", reuse[0]},
                      {"fifo", reuse[1]},
                      {"schedule", reuse[2]},
                      {"fixed", reuse[3]},
                      {"opt", opt},
                      {"schedule_ready", ready_sched}});
      (std::string(mode) == "decode" ? plot_decode : plot_prefill)
          .push_back({static_cast<double>(pct), reuse[0], reuse[1], reuse[2], reuse[3], opt});
    }
  }
  for (const auto& [mode, rows3] :
       {std::pair{"decode", &plot_decode}, {"prefill", &plot_prefill}}) {
    rep.plot({.name = fmt::format("e3_policies_{}", mode),
              .title = fmt::format("reuse_rate against cache size ({})", mode),
              .xlabel = "cache size (% of the model)",
              .rows = *rows3,
              .panels = {{"reuse_rate (0..1)",
                          {{"lru", 1}, {"fifo", 2}, {"schedule", 3}, {"fixed", 4}, {"OPT", 5}},
                          {}}},
              .integer_x = true});
  }
  return rows;
}

json e4_prefetch(const Setup& s, Report& rep, double& best_accuracy, double& decode_ready) {
  json rows = json::array();
  const std::vector<std::string> presets =
      s.quick ? std::vector<std::string>{"cxl-x8"}
              : std::vector<std::string>{"cxl-x8", "cxl-x16", "cxl-switched"};
  rep.md << "\n## 4. Prefetch\n\n"
         << "One worker, cache = 1/4 of the model, LRU (it keeps nothing of a cyclic pass, so what "
            "is ready was "
            "prefetched: the prefetcher alone is measured; the default fixed set would keep part "
            "of the model), 2 "
            "transfer threads, 2 compute threads. Decode: 1 prompt token "
            "+ 8 new tokens (transfer-bound: little compute per byte); prefill: one 128-token "
            "prompt (compute-bound). "
            "stall_ms = time compute waited for tensors; overlap = 1 − stall / link busy time; "
            "prefetch_accuracy = "
            "prefetched bytes used before eviction / prefetched bytes. Second of two identical "
            "requests.\n\n"
         << "| preset | mode | lookahead | stall ms | overlap | ready_rate | tokens/s | "
            "prefetch_accuracy | link GB/s |\n"
         << "|---|---|---|---|---|---|---|---|---|\n";
  best_accuracy = 0;
  std::vector<std::vector<double>> plot_decode, plot_prefill;
  for (const auto& preset : presets) {
    for (const char* mode : {"decode", "prefill"}) {
      const bool decode = std::string(mode) == "decode";
      for (std::size_t k : {0u, 1u, 2u, 4u}) {
        EngineConfig c = base_config(s);
        c.link_preset = preset;
        c.lookahead = k;
        c.compute_threads = 2;
        c.eviction_policy = "lru";
        InferenceEngine e(c);
        e.attach_model("bench");
        InferenceRequest r;
        r.id = "p";
        r.prompt = prompt_of(s, decode ? 1 : (s.quick ? 32 : 128));
        r.max_new_tokens = decode ? (s.quick ? 3 : 8) : 0;
        e.inference(r);
        const auto res = e.inference(r);
        const double tokens =
            decode ? static_cast<double>(r.max_new_tokens) : static_cast<double>(r.prompt.size());
        const double tps = 1000.0 * tokens / res.latency_ms;
        if (k > 0) best_accuracy = std::max(best_accuracy, res.prefetch_accuracy);
        if (decode && k == 2 && preset == presets.front()) decode_ready = res.ready_rate;
        rep.md << fmt::format(
            "| {} | {} | {} | {:.1f} | {:.2f} | {:.3f} | {:.1f} | {:.3f} | {:.1f} |\n", preset,
            mode, k, res.stall_ms, res.overlap, res.ready_rate, tps, res.prefetch_accuracy,
            res.link_gbps);
        rows.push_back({{"preset", preset},
                        {"mode", mode},
                        {"lookahead", k},
                        {"stall_ms", res.stall_ms},
                        {"overlap", res.overlap},
                        {"ready_rate", res.ready_rate},
                        {"tokens_per_s", tps},
                        {"prefetch_accuracy", res.prefetch_accuracy},
                        {"link_gbps", res.link_gbps}});
        if (preset == presets.front()) {
          (decode ? plot_decode : plot_prefill)
              .push_back({static_cast<double>(k), res.stall_ms, res.overlap * 100, tps});
        }
      }
    }
  }
  for (const auto& [mode, rows4] :
       {std::pair{"decode", &plot_decode}, {"prefill", &plot_prefill}}) {
    rep.plot({.name = fmt::format("e4_prefetch_{}", mode),
              .title = fmt::format("{} on {} against lookahead",
                                   mode == std::string("decode") ? "Decode" : "Prefill",
                                   presets.front()),
              .xlabel = "lookahead (steps)",
              .rows = *rows4,
              .panels = {{"stall (ms)", {{"stall", 1}}, {}},
                         {"overlap (%)", {{"overlap", 2}}, {{"all link time hidden", 100}}},
                         {"speed (tokens/s)", {{"tokens/s", 3}}, {}}},
              .integer_x = true});
  }
  return rows;
}

json e6_batching(const Setup& s, Report& rep, double& p50_single) {
  const std::vector<int> sizes =
      s.quick ? std::vector<int>{1, 2, 4} : std::vector<int>{1, 2, 4, 8, 16};
  const int repeats = s.quick ? 2 : 5;
  const std::size_t n_new = s.quick ? 4 : 16;
  EngineConfig c = base_config(s);
  c.compute_threads = 2;
  InferenceEngine e(c);
  e.attach_model("bench");
  json rows = json::array();
  std::vector<std::vector<double>> plot;
  rep.md << "\n## 6. Latency and batching\n\n"
         << fmt::format(
                "One worker (cache 1/4, the fixed set, lookahead 2, cxl-x8, 2 compute threads). A "
                "request: "
                "16 prompt tokens + {} new tokens. A batch of B requests runs together (each "
                "step's weights fetched "
                "once). Latency: the batch's wall time, after a warm-up batch; p50 / p99 over {} "
                "batches "
                "(with so few samples p99 is the slowest). Throughput = B × {} / latency.\n\n",
                n_new, repeats, n_new)
         << "| batch | p50 ms | p99 ms | tokens/s | link MiB per batch |\n|---|---|---|---|---|\n";
  for (int b : sizes) {
    std::vector<InferenceRequest> reqs;
    for (int i = 0; i < b; ++i) {
      InferenceRequest r;
      r.id = fmt::format("b{}", i);
      r.prompt = prompt_of(s, 16, static_cast<std::uint32_t>(i + 1));
      r.max_new_tokens = n_new;
      reqs.push_back(r);
    }
    e.batch_inference(reqs);
    std::vector<double> lat;
    std::uint64_t link = 0;
    for (int i = 0; i < repeats; ++i) {
      const auto res = e.batch_inference(reqs);
      lat.push_back(res[0].latency_ms);
      link = res[0].link_bytes;
    }
    const double p50 = percentile(lat, 50), p99 = percentile(lat, 99);
    if (b == 1) p50_single = p50;
    const double tps = 1000.0 * b * static_cast<double>(n_new) / p50;
    rep.md << fmt::format("| {} | {:.0f} | {:.0f} | {:.1f} | {:.0f} |\n", b, p50, p99, tps,
                          mib(static_cast<double>(link)));
    rows.push_back({{"batch", b},
                    {"p50_ms", p50},
                    {"p99_ms", p99},
                    {"tokens_per_s", tps},
                    {"link_bytes", link}});
    plot.push_back({static_cast<double>(b), p50, tps});
  }
  rep.plot({.name = "e6_batching",
            .title = "Latency and throughput against batch size",
            .xlabel = "batch size (requests)",
            .rows = plot,
            .panels = {{"p50 latency (ms)", {{"p50 latency", 1}}, {}},
                       {"throughput (tokens/s)", {{"tokens/s", 2}}, {}}},
            .integer_x = true,
            .logx = true});
  return rows;
}

json e8_local(const Setup& s, Report& rep, double& decode_pool, double& decode_in_place,
              double& decode_local) {
  json rows = json::array();
  rep.md << "\n## 8. Through the pool against every weight resident\n\n"
         << "One worker, 2 compute threads. Pool: copy placement, cache 1/4 of the model, "
            "lookahead 2, cxl-x8, with "
            "the default eviction (the fixed set) and with LRU (which keeps nothing of a cyclic "
            "pass). Resident: no "
            "cache, the executor reads the pool's mapping directly (as weights in local memory). "
            "In place: "
            "placement in_place on cxl-x8, every piece paced on the link (default lookahead), a "
            "hot set of 1/4 of "
            "the model, complete before the measured requests. Prefill: one "
            "128-token prompt; decode: 1 + 16 tokens. Second of two identical requests. llama.cpp "
            "on the same "
            "shape and machine type (F32, 2 threads; docs/results.md): prefill 128 at 581–660 "
            "tokens/s, decode at "
            "55–61 tokens/s.\n\n"
         << "| weights | prefill tokens/s | decode tokens/s |\n|---|---|---|\n";
  for (const char* how : {"pool (cache 1/4, fixed set)", "pool (cache 1/4, LRU)",
                          "in place (hot set 1/4)", "resident"}) {
    EngineConfig c = base_config(s);
    c.compute_threads = 2;
    if (std::string(how).ends_with("LRU)")) c.eviction_policy = "lru";
    if (std::string(how) == "resident") c.cache_bytes = 0;
    if (std::string(how).starts_with("in place")) c.placement = Placement::kInPlace;
    InferenceEngine e(c);
    e.attach_model("bench");
    InferenceRequest pre;
    pre.id = "prefill";
    pre.prompt = prompt_of(s, s.quick ? 32 : 128);
    e.inference(pre);
    wait_hot_set(e);
    const auto rp = e.inference(pre);
    InferenceRequest dec;
    dec.id = "decode";
    dec.prompt = prompt_of(s, 1);
    dec.max_new_tokens = s.quick ? 4 : 16;
    e.inference(dec);
    const auto rd = e.inference(dec);
    const double p = 1000.0 * static_cast<double>(pre.prompt.size()) / rp.latency_ms;
    const double d = 1000.0 * static_cast<double>(dec.max_new_tokens) / rd.latency_ms;
    const std::string h = how;
    if (!h.ends_with("LRU)")) {
      (h == "resident"             ? decode_local
       : h.starts_with("in place") ? decode_in_place
                                   : decode_pool) = d;
    }
    rep.md << fmt::format("| {} | {:.0f} | {:.1f} |\n", how, p, d);
    rows.push_back({{"weights", how}, {"prefill_tokens_per_s", p}, {"decode_tokens_per_s", d}});
  }
  rep.plot({.name = "e8_local",
            .title = "Decode through the pool against resident weights",
            .xlabel = "",
            .rows = {{1, rows[0]["decode_tokens_per_s"].get<double>()},
                     {2, rows[1]["decode_tokens_per_s"].get<double>()},
                     {3, rows[2]["decode_tokens_per_s"].get<double>()}},
            .panels = {{"decode (tokens/s)",
                        {{"decode", 1}},
                        {{"resident", rows[3]["decode_tokens_per_s"].get<double>()}}}},
            .categories = {"pool, copy (fixed set)", "pool, copy (LRU)", "in place"}});
  return rows;
}

}  // namespace xlshare::experiments
