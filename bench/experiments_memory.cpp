// Experiments 1, 2, 5 and 7: memory shared by processes, workers that fit, time to first
// token, one link shared by N workers.
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

json e1_memory(const Setup& s, Report& rep, std::vector<double>& per_process_overhead) {
  const std::vector<int> ns = s.quick ? std::vector<int>{1, 2} : std::vector<int>{1, 2, 4, 8};
  EngineConfig c = base_config(s);
  c.cache_bytes = s.model_bytes / 8;
  EngineConfig in_place = base_config(s);
  in_place.placement = Placement::kInPlace;
  in_place.cache_bytes = 0;
  EngineConfig hot = in_place;
  hot.cache_bytes = s.model_bytes / 4;
  struct Kind {
    const char* weights;
    const char* placement;
    const EngineConfig* config;  // null: the mmap baseline
  };
  const std::vector<Kind> kinds = {{"copy, cache 1/8", "copy", &c},
                                   {"in place, no hot set", "in-place", &in_place},
                                   {"in place, hot set 1/4", "in-place", &hot},
                                   {"mmap of the GGUF file", "mmap", nullptr}};
  const std::string pool_path = "/dev/shm/" + s.uri.substr(6);
  json rows = json::array();
  std::vector<std::vector<double>> plot;
  rep.md << "## 1. Memory efficiency\n\n"
         << "N worker processes attach to one pool (cache = 1/8 of the model each), generate 2 "
            "tokens and stay "
            "attached while PSS is read from /proc/PID/smaps_rollup. memory_efficiency = (N × "
            "model bytes) / "
            "total PSS of the N workers. \"pool PSS\" is the part of it that maps the pool.\n\n"
         << "The same for in-place workers (placement in_place, cxl-x8): without a hot set (cache "
            "0: every weight "
            "read from the pool's mapping) and with a hot set of 1/4 of the model (local copies, "
            "complete before "
            "PSS is read): a hot set buys speed with memory. And the mmap baseline, what N "
            "llama.cpp processes "
            "sharing one GGUF through the page cache cost: N plain processes that each map the "
            "model's GGUF file "
            "(MAP_SHARED, PROT_READ) and serve from it as llama.cpp does by default: the same "
            "executor computes on the "
            "mapped tensors with a KV cache sized as the engine sizes a request's and one compute "
            "thread, a 4-token prompt and 2 generated tokens; "
            "they stay alive while their PSS is read the same way; their \"pool PSS\" is the PSS "
            "of the file's "
            "mapping.\n\n"
         << "| workers | weights | total PSS MiB | pool PSS MiB | N private copies MiB | "
            "memory_efficiency "
            "|\n|---|---|---|---|---|---|\n";
  for (int n : ns) {
    std::vector<double> point{static_cast<double>(n)};
    const double copies = static_cast<double>(n) * static_cast<double>(s.model_bytes);
    for (const Kind& kind : kinds) {
      const std::string mapped = kind.config ? pool_path : s.gguf.string();
      auto [reports, memory] = run_processes(n, mapped, [&](int, std::shared_ptr<void>& keep) {
        if (kind.config == nullptr) return mmap_file_report(s.gguf, s, keep);
        auto e = std::make_shared<InferenceEngine>(*kind.config);
        keep = e;
        e->attach_model("bench");
        const ChildReport r = generate_report(*e, s, 4, 2);
        wait_hot_set(*e);  // nothing to wait for without a hot set
        return r;
      });
      std::uint64_t total = 0, pool = 0;
      for (const auto& m : memory) {
        total += m.pss;
        pool += m.pool_pss;
      }
      const double eff = copies / static_cast<double>(total);
      const std::uint64_t local = kind.config ? kind.config->cache_bytes : 0;
      if (kind.config == &c) {
        per_process_overhead.push_back(static_cast<double>(total - pool) / n -
                                       static_cast<double>(c.cache_bytes));
      }
      rep.md << fmt::format("| {} | {} | {:.1f} | {:.1f} | {:.1f} | {:.2f}x |\n", n, kind.weights,
                            mib(total), mib(pool), mib(copies), eff);
      rows.push_back({{"workers", n},
                      {"weights", kind.weights},
                      {"placement", kind.placement},
                      {"local_bytes", local},
                      {"total_pss_bytes", total},
                      {"pool_pss_bytes", pool},
                      {"memory_efficiency", eff}});
      point.push_back(mib(total));
    }
    point.push_back(mib(copies));
    plot.push_back(point);
  }
  rep.plot({.name = "e1_memory",
            .title = "Memory: N workers sharing one pool vs N private copies",
            .xlabel = "worker processes",
            .rows = plot,
            .panels = {{"total PSS of the N processes (MiB)",
                        {{"xlshare copy", 1},
                         {"xlshare in place", 2},
                         {"in place + hot set 1/4", 3},
                         {"mmap GGUF", 4},
                         {"N private copies", 5}},
                        {{"one copy of the model", mib(static_cast<double>(s.model_bytes))}}}},
            .integer_x = true});
  return rows;
}

json e2_scalability(const Setup& s, Report& rep, double overhead) {
  EngineConfig c = base_config(s);
  c.cache_bytes = s.model_bytes / 8;
  const double budget = 4.0 * static_cast<double>(s.model_bytes);
  const double per_worker = static_cast<double>(c.cache_bytes) + std::max(overhead, 0.0);
  const int fit_xlshare =
      static_cast<int>((budget - static_cast<double>(s.model_bytes)) / per_worker);
  const int fit_replica =
      static_cast<int>(budget / (static_cast<double>(s.model_bytes) + std::max(overhead, 0.0)));
  const int run_n = std::min(fit_xlshare, s.quick ? 2 : 8);
  const std::size_t tokens = s.quick ? 2 : 4;
  auto aggregate = [&](int n, std::uint64_t cache) {
    EngineConfig cc = c;
    cc.cache_bytes = cache;
    const auto t0 = SteadyClock::now();
    auto [reports, memory] =
        run_processes(n, "/dev/shm/" + s.uri.substr(6), [&](int, std::shared_ptr<void>& keep) {
          auto e = std::make_shared<InferenceEngine>(cc);
          keep = e;
          e->attach_model("bench");
          return generate_report(*e, s, 4, tokens);
        });
    const double wall = ms_since(t0) / 1000.0;
    return static_cast<double>(n) * static_cast<double>(tokens) / wall;
  };
  const double tput_x = aggregate(run_n, c.cache_bytes);
  const double tput_r = aggregate(fit_replica, 0);
  rep.md << "\n## 2. Scalability under a fixed memory budget\n\n"
         << fmt::format(
                "Budget: 4 × model = {:.0f} MiB. An xlshare worker costs its cache (1/8 of the "
                "model) plus "
                "its process overhead measured in experiment 1 ({:.1f} MiB); the pool is paid "
                "once. A replica "
                "costs a whole copy plus the same overhead. Aggregate throughput: the workers run "
                "at once, "
                "each generating {} tokens; tokens/s = all tokens / wall time. Replicas are "
                "modelled by "
                "workers with every weight resident (no cache, no link).\n\n",
                mib(budget), mib(overhead), tokens)
         << "| | workers that fit | workers run | aggregate tokens/s |\n|---|---|---|---|\n"
         << fmt::format("| xlshare | {} | {} | {:.1f} |\n| replication | {} | {} | {:.1f} |\n",
                        fit_xlshare, run_n, tput_x, fit_replica, fit_replica, tput_r)
         << (run_n < fit_xlshare
                 ? fmt::format("\n{} xlshare workers fit; {} were run (this host has 2 cores: more "
                               "processes only share them).\n",
                               fit_xlshare, run_n)
                 : "");
  rep.plot({.name = "e2_scalability",
            .title = "Workers that fit in 4x the memory of the model",
            .xlabel = "",
            .rows = {{1, static_cast<double>(fit_replica), tput_r},
                     {2, static_cast<double>(fit_xlshare), tput_x}},
            .panels = {{"workers that fit", {{"workers", 1}}, {}},
                       {"aggregate (tokens/s)", {{"tokens/s", 2}}, {}}},
            .categories = {"replication", "xlshare"}});
  return {{"budget_bytes", budget},         {"fit_xlshare", fit_xlshare},
          {"fit_replication", fit_replica}, {"run_xlshare", run_n},
          {"tokens_per_s_xlshare", tput_x}, {"tokens_per_s_replication", tput_r}};
}

json e5_cold_start(const Setup& s, Report& rep, double& attach_first_token_ms,
                   double& attach_in_place_ms, double& cold_ms) {
  const fs::path& file = s.gguf;
  const int repeats = s.quick ? 1 : 3;
  auto first_token = [&](const std::string& how) {
    std::vector<double> ms;
    for (int i = 0; i < repeats; ++i) {
      const std::string fresh_uri = fmt::format("shm://xlshare-exp-cold-{}-{}", ::getpid(), i);
      if (how == "cold") {  // drop the file's pages from the page cache
        const int fd = ::open(file.c_str(), O_RDONLY);
        ::fdatasync(fd);
        ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
        ::close(fd);
      }
      const auto t0 = SteadyClock::now();
      auto [reports, memory] = run_processes(1, "/dev/shm/none", [&](int, std::shared_ptr<void>&) {
        const bool attach = how.starts_with("attach");
        EngineConfig c = base_config(s);
        c.pool_uri = attach ? s.uri : fresh_uri;
        c.link_preset = "none";
        if (how == "attach in place") c.placement = Placement::kInPlace;
        InferenceEngine e(c);
        if (!attach) e.register_model(file, "bench");
        e.attach_model("bench");
        e.generate(prompt_of(s, 4), 1);
        return ChildReport{};
      });
      ms.push_back(ms_since(t0));
      if (backend_exists(fresh_uri)) remove_backend(fresh_uri);
    }
    return median(ms);
  };
  const double cold = first_token("cold"), warm = first_token("warm"),
               attach = first_token("attach");
  const double attach_in_place = first_token("attach in place");
  attach_first_token_ms = attach;
  attach_in_place_ms = attach_in_place;
  cold_ms = cold;
  rep.md << "\n## 5. Cold start against attach\n\n"
         << fmt::format(
                "Time from starting a worker process to its first generated token (4-token "
                "prompt), median "
                "of {}. Cold: the {:.0f} MiB GGUF file's pages dropped from the page cache "
                "(posix_fadvise DONTNEED) before the load; warm: the file in the page cache; "
                "attach: the "
                "model already in the pool, nothing loaded (copy: the first token's weights copied "
                "through "
                "the near cache, cache 1/4; in place: computed from the pool's mapping, the hot "
                "set of 1/4 "
                "copied after the first token).\n\n",
                repeats, mib(static_cast<double>(s.model_bytes)))
         << "| start | time to first token ms |\n|---|---|\n"
         << fmt::format(
                "| load file, cold page cache | {:.0f} |\n| load file, warm page cache | {:.0f} "
                "|\n| attach to "
                "the loaded pool | {:.0f} |\n| attach to the loaded pool, in place | {:.0f} |\n",
                cold, warm, attach, attach_in_place);
  rep.plot({.name = "e5_cold_start",
            .title = "Time to first token",
            .xlabel = "",
            .rows = {{1, cold}, {2, warm}, {3, attach}, {4, attach_in_place}},
            .panels = {{"time to first token (ms)", {{"time to first token", 1}}, {}}},
            .categories = {"cold load", "warm load", "attach", "attach, in place"}});
  return {{"cold_ms", cold},
          {"warm_ms", warm},
          {"attach_ms", attach},
          {"attach_in_place_ms", attach_in_place}};
}

json e7_contention(const Setup& s, Report& rep, double& in_place_peak_gbps, double& limit_gbps) {
  const std::vector<int> ns = s.quick ? std::vector<int>{1, 2} : std::vector<int>{1, 2, 4, 8};
  EngineConfig c = base_config(s);
  c.cache_bytes = s.model_bytes / 8;
  EngineConfig in_place = base_config(s);
  in_place.placement = Placement::kInPlace;
  in_place.cache_bytes = 0;
  limit_gbps = link_preset(c.link_preset).bandwidth_gbps;
  in_place_peak_gbps = 0;
  const std::size_t tokens = s.quick ? 2 : 4;
  const std::string pool_path = "/dev/shm/" + s.uri.substr(6);
  json rows = json::array();
  std::vector<std::vector<double>> plot;
  rep.md
      << "\n## 7. Link contention\n\n"
      << fmt::format(
             "N worker processes on one emulated cxl-x8 link (36 GB/s), cache 1/8, lookahead 2, "
             "each "
             "generating {} tokens. Per worker: link_gbps = its link bytes / the time its link was "
             "busy; "
             "aggregate = all link bytes / wall time; stall per worker.\n\n",
             tokens)
      << fmt::format(
             "In place: N in-place worker processes (no hot set, default lookahead) on the same "
             "link. Each "
             "attaches and generates 1 token (first use: verification, page mapping), then all "
             "wait for "
             "each other and run together the request the copy workers run (4-token prompt, {} "
             "tokens). "
             "Decode window = from the first worker's start to the later of the last worker's end "
             "and "
             "the link finishing every reservation made by then (the pool's shared link_free "
             "time); "
             "decode-window aggregate = the link bytes of those requests / the window, checked "
             "against "
             "the link's {:.0f} GB/s.\n\n",
             tokens, limit_gbps)
      << "| workers | placement | per-worker link GB/s (median) | aggregate link GB/s | stall ms "
         "per worker (median) "
         "| tokens/s per worker | decode-window aggregate GB/s |\n|---|---|---|---|---|---|---|\n";
  // Where in-place workers wait for each other: shared by the forked processes.
  void* shared = ::mmap(nullptr, sizeof(std::atomic<int>), PROT_READ | PROT_WRITE,
                        MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (shared == MAP_FAILED) throw Error("mmap failed");
  std::shared_ptr<void> unmap(shared, [](void* p) { ::munmap(p, sizeof(std::atomic<int>)); });
  auto* arrived = new (shared) std::atomic<int>(0);
  for (int n : ns) {
    std::vector<double> point{static_cast<double>(n)};
    for (const char* placement : {"copy", "in-place"}) {
      const bool copy = std::string(placement) == "copy";
      arrived->store(0);
      const auto t0 = SteadyClock::now();
      auto [reports, memory] = run_processes(n, pool_path, [&](int, std::shared_ptr<void>& keep) {
        auto e = std::make_shared<InferenceEngine>(copy ? c : in_place);
        keep = e;
        if (copy) {
          e->attach_model("bench");
          return generate_report(*e, s, 4, tokens);
        }
        ChildReport warm;
        try {
          e->attach_model("bench");
          warm = generate_report(*e, s, 4, 1);
        } catch (...) {
          arrived->fetch_add(1);  // the others must not wait for this one
          throw;
        }
        arrived->fetch_add(1);
        const auto waited = SteadyClock::now();
        while (arrived->load() < n) {
          if (ms_since(waited) > 120000) throw Error("the other workers did not arrive in 120 s");
          std::this_thread::sleep_for(std::chrono::microseconds(100));
        }
        const std::uint64_t start = monotonic_ns();
        ChildReport r = generate_report(*e, s, 4, tokens);
        r.end_ns = monotonic_ns();
        r.start_ns = start;
        r.link_free_ns = link_field(e->pool().link_state().link_free_ns).load();
        r.warm_link_bytes = warm.link_bytes;
        return r;
      });
      const double wall = ms_since(t0) / 1000.0;
      std::vector<double> gbps, stall, tps;
      double bytes = 0, all_bytes = 0;
      std::uint64_t start = UINT64_MAX, end = 0;
      for (const auto& r : reports) {
        gbps.push_back(r.link_gbps);
        stall.push_back(r.stall_ms);
        tps.push_back(r.tokens_per_s);
        bytes += static_cast<double>(r.link_bytes);
        all_bytes += static_cast<double>(r.link_bytes + r.warm_link_bytes);
        start = std::min(start, r.start_ns);
        end = std::max({end, r.end_ns, r.link_free_ns});
      }
      const double agg = all_bytes / wall / 1e9;
      json row = {{"workers", n},
                  {"placement", placement},
                  {"per_worker_gbps", median(gbps)},
                  {"aggregate_gbps", agg},
                  {"stall_ms", median(stall)},
                  {"tokens_per_s_per_worker", median(tps)}};
      std::string window_cell = "–";
      if (!copy) {
        const double window_gbps =
            end > start ? bytes / static_cast<double>(end - start) : 0.0;  // bytes/ns = GB/s
        const bool within = window_gbps <= limit_gbps;
        in_place_peak_gbps = std::max(in_place_peak_gbps, window_gbps);
        window_cell = fmt::format("{:.2f} ({} {:.0f})", window_gbps, within ? "within" : "EXCEEDS",
                                  limit_gbps);
        row["decode_window_gbps"] = window_gbps;
        row["decode_window_ms"] = static_cast<double>(end - start) / 1e6;
        row["link_limit_gbps"] = limit_gbps;
        row["within_link_limit"] = within;
        fmt::print(
            stderr,
            "  e7: {} in-place workers together: {:.2f} GB/s in the decode window, {} the link's "
            "{:.0f} GB/s\n",
            n, window_gbps, within ? "within" : "EXCEEDING", limit_gbps);
        point.push_back(window_gbps);
      } else {
        point.push_back(median(gbps));
        point.push_back(agg);
      }
      rep.md << fmt::format("| {} | {} | {:.2f} | {:.2f} | {:.1f} | {:.2f} | {} |\n", n, placement,
                            median(gbps), agg, median(stall), median(tps), window_cell);
      rows.push_back(row);
    }
    plot.push_back(point);
  }
  rep.plot({.name = "e7_contention",
            .title = "One emulated link shared by N workers",
            .xlabel = "worker processes",
            .rows = plot,
            .panels = {{"link traffic (GB/s)",
                        {{"per worker (copy)", 1},
                         {"aggregate (copy)", 2},
                         {"in place, all together (decode window)", 3}},
                        {{"the link's rate", limit_gbps}}}},
            .integer_x = true,
            .logx = true});
  return rows;
}

}  // namespace xlshare::experiments
