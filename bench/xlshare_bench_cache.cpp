// The near tier under load:
//  (a) reuse_rate against cache size (10%..100% of the model) on the layer-cyclic decode
//      trace of a 12-block model, for lru, fifo, schedule, and the OPT bound (an
//      independent Belady MIN simulation);
//  (b) stall and overlap against lookahead {0,1,2,4} for each emulator preset, with a
//      real compute step (a matrix-vector product over each block's weights, the work of
//      one decode token) on a pool-backed 12-block model, cache = 1/4 of the model.
//
//   build/bin/xlshare_bench_cache [--quick] [--repeats N]
//
// Prints markdown tables (medians of --repeats runs for (b)).
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <random>
#include <vector>

#include <fmt/format.h>

#include "bench_report.hpp"
#include "xlshare/cache/device_cache.hpp"
#include "xlshare/cache/transfer_engine.hpp"
#include "xlshare/memory/backend_uri.hpp"
#include "xlshare/memory/cxl_emulator.hpp"
#include "xlshare/memory/pool.hpp"
#include "xlshare/prefetch/prefetcher.hpp"

namespace {

using namespace xlshare;

// --- (a) policies ---------------------------------------------------------------------

// One DeviceCache of `capacity` equal blocks; demand fetches complete at once. Returns
// the reuse rate over passes 2..passes (the first pass is cold for every policy).
double simulate(std::unique_ptr<EvictionPolicy> policy, std::size_t blocks, std::size_t capacity,
                int passes) {
  DeviceCache cache(capacity * 64, std::vector<std::uint64_t>(blocks, 64), std::move(policy));
  std::uint64_t hits = 0, accesses = 0;
  for (int p = 0; p < passes; ++p) {
    for (TensorKey k = 0; k < blocks; ++k) {
      const bool hit = cache.state(k) == EntryState::kResident;
      if (!hit) {
        cache.begin_fetch(k, FetchKind::kDemand);
        cache.complete_fetch(k, true);
      }
      cache.acquire(k);
      if (p > 0) {
        hits += hit;
        ++accesses;
      }
    }
  }
  return static_cast<double>(hits) / static_cast<double>(accesses);
}

// Belady's MIN on the unrolled trace, written independently of ScheduleAwarePolicy.
double opt_bound(std::size_t blocks, std::size_t capacity, int passes) {
  std::vector<TensorKey> trace;
  for (int p = 0; p < passes; ++p) {
    for (TensorKey k = 0; k < blocks; ++k) trace.push_back(k);
  }
  std::vector<TensorKey> cached;
  std::uint64_t hits = 0, accesses = 0;
  for (std::size_t i = 0; i < trace.size(); ++i) {
    const TensorKey k = trace[i];
    const bool hit = std::find(cached.begin(), cached.end(), k) != cached.end();
    if (!hit) {
      if (cached.size() == capacity) {
        std::size_t victim = 0, farthest = 0;
        for (std::size_t c = 0; c < cached.size(); ++c) {
          std::size_t next = i + 1;
          while (next < trace.size() && trace[next] != cached[c]) ++next;
          if (next >= farthest) {
            farthest = next;
            victim = c;
          }
        }
        cached.erase(cached.begin() + static_cast<long>(victim));
      }
      cached.push_back(k);
    }
    if (i >= blocks) {
      hits += hit;
      ++accesses;
    }
  }
  return static_cast<double>(hits) / static_cast<double>(accesses);
}

void policy_table(bench::Report& report, int passes) {
  constexpr std::size_t kBlocks = 12;
  std::vector<TensorKey> cycle(kBlocks);
  for (std::size_t i = 0; i < kBlocks; ++i) cycle[i] = static_cast<TensorKey>(i);
  report.note("### (a) reuse_rate against cache size, layer-cyclic trace of a 12-block model");
  report.note(fmt::format(
      "Cache size in whole blocks (a block is one cache unit); reuse over passes 2..{}.", passes));
  report.table("reuse_rate",
               {"cache (% of model)", "blocks", "lru", "fifo", "schedule", "OPT bound"});
  for (int pct : {10, 20, 30, 40, 50, 60, 70, 80, 90, 100}) {
    const std::size_t cap = std::max<std::size_t>(1, kBlocks * static_cast<std::size_t>(pct) / 100);
    report.row(
        {bench::cell(pct), bench::cell(cap),
         bench::cell(simulate(std::make_unique<LruPolicy>(), kBlocks, cap, passes), 3),
         bench::cell(simulate(std::make_unique<FifoPolicy>(), kBlocks, cap, passes), 3),
         bench::cell(
             simulate(std::make_unique<ScheduleAwarePolicy>(cycle, true), kBlocks, cap, passes), 3),
         bench::cell(opt_bound(kBlocks, cap, passes), 3)});
  }
}

// --- (b) lookahead ---------------------------------------------------------------------

struct Model {
  std::string uri;
  std::size_t blocks;
  std::uint64_t dim, ffn;
};

// A 12-block model: per block wq, wk, wv, wo (dim x dim) and w1, w3 (ffn x dim), w2 (dim x ffn).
Model make_model(std::uint64_t dim, std::uint64_t ffn) {
  Model m{fmt::format("shm://xlshare-bench-cache-{}", ::getpid()), 12, dim, ffn};
  const std::uint64_t block_floats = 4 * dim * dim + 3 * dim * ffn;
  auto pool = Pool::create(create_backend(m.uri, m.blocks * block_floats * 4 + (64u << 20)),
                           PoolOptions{.max_models = 2, .max_tensors = 256});
  auto w = pool->begin_model("bench");
  std::mt19937 rng(3);
  for (std::size_t b = 0; b < m.blocks; ++b) {
    for (const char* name : {"wq", "wk", "wv", "wo", "w1", "w3", "w2"}) {
      const bool ffn_in = name[1] == '1' || name[1] == '3';
      const bool ffn_out = name[1] == '2';
      const std::uint64_t shape[] = {ffn_out ? ffn : dim, ffn_in ? ffn : dim};
      auto bytes = w.add_tensor(fmt::format("blk.{}.{}", b, name), DType::kF32, shape);
      auto* f = reinterpret_cast<float*>(bytes.data());
      for (std::uint64_t i = 0; i < bytes.size() / 4; ++i)
        f[i] = static_cast<float>(rng() % 2001) * 1e-3f - 1.0f;
    }
  }
  w.seal();
  return m;
}

// y = W x for a row-major [rows x cols] matrix: the decode-token work for one tensor.
float matvec(std::span<const std::byte> bytes, std::uint64_t cols, const std::vector<float>& x) {
  const auto* w = reinterpret_cast<const float*>(bytes.data());
  const std::uint64_t rows = bytes.size() / 4 / cols;
  float acc = 0;
  for (std::uint64_t r = 0; r < rows; ++r) {
    float dot = 0;
    for (std::uint64_t c = 0; c < cols; ++c) dot += w[r * cols + c] * x[c];
    acc += dot;
  }
  return acc;
}

struct LookaheadResult {
  double stall_ms, overlap, ms_per_token, link_gbps, transfer_ms, compute_ms;
};

LookaheadResult run_lookahead(const Model& m, const std::string& preset, std::size_t k,
                              int tokens) {
  EmulatorOptions o;
  o.link = link_preset(preset);
  o.check_host_rate = false;
  auto pool = Pool::attach(std::make_unique<CxlEmulator>(open_backend(m.uri), o));
  auto model = pool->model("bench");
  std::vector<TensorSource> sources;
  std::vector<std::uint64_t> sizes;
  std::vector<std::string> names;
  for (const auto& t : model->tensors()) {
    sources.push_back({t, std::nullopt});
    sizes.push_back(t.size_bytes);
    names.push_back(t.name);
  }
  const Schedule schedule = Schedule::for_transformer(names);
  DeviceCache cache(model->total_bytes() / 4, sizes, std::make_unique<LruPolicy>());
  TransferConfig tc;
  TransferEngine engine(*pool, nullptr, sources, cache, tc);
  Prefetcher prefetcher(schedule, std::make_unique<LookaheadPolicy>(k), engine, cache);
  std::vector<float> x(std::max(m.dim, m.ffn), 0.01f);
  float sink = 0;
  std::uint64_t compute_ns = 0;
  const auto t0 = std::chrono::steady_clock::now();
  for (int t = 0; t < tokens; ++t) {
    for (std::size_t s = 0; s < schedule.size(); ++s) {
      prefetcher.begin_step(s);
      for (TensorKey key : schedule.step(s).keys) {
        auto lease = prefetcher.acquire(key);
        const auto c0 = std::chrono::steady_clock::now();
        sink += matvec(lease.bytes(), sources[key].primary.shape[0], x);
        compute_ns += static_cast<std::uint64_t>((std::chrono::steady_clock::now() - c0).count());
      }
      prefetcher.end_step(s);
    }
  }
  const double total_ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  engine.wait_idle();
  if (sink == 12345.678f) fmt::print(" ");
  const Figures f = prefetcher.figures();
  return {f.stall_ms, f.overlap, total_ms / tokens, f.link_gbps, f.transfer_ms, compute_ns / 1e6};
}

void lookahead_table(bench::Report& report, bool quick, int repeats) {
  const std::uint64_t dim = quick ? 256 : 768, ffn = quick ? 704 : 2048;
  const int tokens = quick ? 2 : 4;
  Model m = make_model(dim, ffn);
  report.note(
      "### (b) stall and overlap against lookahead, decode (one token = one pass over 12 blocks)");
  report.note(fmt::format(
      "Model: 12 blocks, dim {}, ffn {}, F32 ({:.0f} MiB); cache 1/4 of the model, LRU; 2 "
      "transfer threads; compute = a matrix-vector product over every weight of the block; {} "
      "tokens per run; medians of {} runs.",
      dim, ffn, 12.0 * (4 * dim * dim + 3 * dim * ffn) * 4 / (1 << 20), tokens, repeats));
  report.table("lookahead", {"preset", "lookahead", "stall ms/token", "overlap", "ms/token",
                             "compute ms/token", "link busy ms/token", "link GB/s"});
  for (const char* preset : {"cxl-x8", "cxl-x16", "cxl-switched"}) {
    for (std::size_t k : {0u, 1u, 2u, 4u}) {
      std::vector<double> stall, overlap, ms, gbps, busy, compute;
      for (int r = 0; r < repeats; ++r) {
        const auto res = run_lookahead(m, preset, k, tokens);
        stall.push_back(res.stall_ms / tokens);
        overlap.push_back(res.overlap);
        ms.push_back(res.ms_per_token);
        gbps.push_back(res.link_gbps);
        busy.push_back(res.transfer_ms / tokens);
        compute.push_back(res.compute_ms / tokens);
      }
      using bench::cell;
      using bench::median;
      report.row({cell(preset), cell(k), cell(median(stall), 2), cell(median(overlap), 2),
                  cell(median(ms), 2), cell(median(compute), 2), cell(median(busy), 2),
                  cell(median(gbps), 1)});
    }
  }
  remove_backend(m.uri);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"xlshare near-tier benchmark: eviction policies and lookahead"};
  bool quick = false;
  int repeats = 3;
  app.add_flag("--quick", quick, "small model, one run: a smoke test");
  app.add_option("--repeats", repeats, "runs per lookahead configuration (median reported)")
      ->check(CLI::Range(1, 50));
  bool json = false;
  app.add_flag("--json", json, "print the tables as JSON instead of markdown");
  CLI11_PARSE(app, argc, argv);
  if (quick) repeats = 1;
  try {
    bench::Report report(json);
    policy_table(report, 10);
    lookahead_table(report, quick, repeats);
  } catch (const std::exception& e) {
    fmt::print(stderr, "xlshare_bench_cache: {}\n", e.what());
    return 1;
  }
  return 0;
}
