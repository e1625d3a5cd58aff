#include "xlshare/planner/planner.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <nlohmann/json.hpp>
#include <numeric>

#include "xlshare/cache/eviction_policy.hpp"
#include "xlshare/error.hpp"
#include "xlshare/model/model_file.hpp"
#include "xlshare/model/synthetic.hpp"
#include "xlshare/planner/virtual_near_tier.hpp"
#include "xlshare/prefetch/prefetch_policy.hpp"

namespace xlshare {
namespace {

LlamaConfig llama(std::uint32_t dim, std::uint32_t layers, std::uint32_t heads,
                  std::uint32_t kv_heads, std::uint32_t ffn, std::uint32_t vocab,
                  std::uint32_t context, double rope_theta) {
  LlamaConfig c;
  c.dim = dim;
  c.n_layers = layers;
  c.n_heads = heads;
  c.n_kv_heads = kv_heads;
  c.head_dim = dim / heads;
  c.ffn_dim = ffn;
  c.vocab = vocab;
  c.context = context;
  c.rope_theta = rope_theta;
  return c;
}

// The shapes of the models' own config.json files on Hugging Face.
const std::vector<ModelPreset>& presets() {
  static const std::vector<ModelPreset> p = {
      {"llama-2-7b", llama(4096, 32, 32, 32, 11008, 32000, 4096, 10000.0),
       "meta-llama/Llama-2-7b-hf config.json"},
      {"llama-2-13b", llama(5120, 40, 40, 40, 13824, 32000, 4096, 10000.0),
       "meta-llama/Llama-2-13b-hf config.json"},
      {"llama-2-70b", llama(8192, 80, 64, 8, 28672, 32000, 4096, 10000.0),
       "meta-llama/Llama-2-70b-hf config.json"},
      {"llama-3-8b", llama(4096, 32, 32, 8, 14336, 128256, 8192, 500000.0),
       "meta-llama/Meta-Llama-3-8B config.json"},
      {"llama-3-70b", llama(8192, 80, 64, 8, 28672, 128256, 8192, 500000.0),
       "meta-llama/Meta-Llama-3-70B config.json"},
      {"mistral-7b", llama(4096, 32, 32, 8, 14336, 32000, 32768, 10000.0),
       "mistralai/Mistral-7B-v0.1 config.json"},
  };
  return p;
}

// Peak figures from each vendor's datasheet; the efficiencies are this planner's assumption
// (docs/planner.md): 60% of dense peak for a GEMM, 80% of memory bandwidth for a GEMV.
const std::vector<DeviceSpec>& devices() {
  static const std::vector<DeviceSpec> d = {
      {"a100-80gb", 312.0, 2039.0, 80.0, 32.0, 0.6, 0.8, 20'000, 0.0, 0.0,
       "NVIDIA A100 Tensor Core GPU datasheet (A100 80GB SXM): FP16 Tensor Core 312 TFLOPS "
       "dense, HBM2e 2,039 GB/s, 80 GB; PCIe Gen4 x16 (64 GB/s both directions)"},
      {"h100-sxm", 989.0, 3350.0, 80.0, 64.0, 0.6, 0.8, 20'000, 0.0, 0.0,
       "NVIDIA H100 Tensor Core GPU datasheet (H100 SXM): FP16 Tensor Core 1,979 TFLOPS with "
       "sparsity (989 dense), HBM3 3.35 TB/s, 80 GB; PCIe Gen5 x16 (128 GB/s both directions)"},
      {"l40s", 362.0, 864.0, 48.0, 32.0, 0.6, 0.8, 20'000, 0.0, 0.0,
       "NVIDIA L40S datasheet: FP16 Tensor Core 733 TFLOPS with sparsity (362 dense), GDDR6 "
       "864 GB/s, 48 GB; PCIe Gen4 x16 (64 GB/s both directions)"},
      {"mi300x", 1307.4, 5300.0, 192.0, 64.0, 0.6, 0.8, 20'000, 0.0, 0.0,
       "AMD Instinct MI300X data sheet: FP16 1,307.4 TFLOPS dense, HBM3 5.3 TB/s, 192 GB; "
       "PCIe Gen5 x16 (128 GB/s both directions)"},
  };
  return d;
}

std::string names_of(auto const& list) {
  std::string out;
  for (const auto& p : list) out += (out.empty() ? "" : ", ") + std::string(p.name);
  return out;
}

DType matrix_dtype(std::string_view dtype, const TensorSpec& spec, const LlamaConfig& c) {
  if (dtype == "q4_k_m") return q4_k_m_dtype(spec, c);
  const auto d = parse_dtype(dtype);
  if (!d || (*d != DType::kF32 && *d != DType::kF16 && *d != DType::kBF16 && *d != DType::kQ8_0 &&
             *d != DType::kQ4_K && *d != DType::kQ6_K)) {
    throw ConfigError(
        fmt::format("dtype '{}' is not one of f32, f16, bf16, q8_0, q4_k, q6_k, q4_k_m", dtype));
  }
  return *d;
}

// splitmix64, for the token rows a planned step looks up.
constexpr std::uint64_t mix(std::uint64_t x) noexcept {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

double ms(std::uint64_t ns) { return static_cast<double>(ns) / 1e6; }

}  // namespace

std::uint64_t ModelShape::total_bytes() const noexcept {
  std::uint64_t n = 0;
  for (const auto& t : tensors) n += t.bytes;
  return n;
}

std::span<const ModelPreset> model_presets() { return presets(); }

ModelShape model_shape(const LlamaConfig& config, std::string_view dtype, std::string name) {
  config.validate(name);
  ModelShape m;
  m.name = std::move(name);
  m.config = config;
  m.dtype = std::string(dtype);
  for (const TensorSpec& spec : llama_tensor_specs(config)) {
    PlanTensor t;
    t.name = spec.name;
    t.elements = std::accumulate(spec.shape.begin(), spec.shape.end(), std::uint64_t{1},
                                 std::multiplies<>());
    t.rows = spec.shape.size() == 2 ? spec.shape[1] : 1;
    const DType d = spec.shape.size() == 2 ? matrix_dtype(dtype, spec, config) : DType::kF32;
    if (spec.shape[0] % dtype_block_elements(d) != 0) {
      throw ConfigError(fmt::format("{}: tensor '{}' has rows of {} values, not whole {} blocks",
                                    m.name, spec.name, spec.shape[0], to_string(d)));
    }
    t.bytes = dtype_bytes(d, t.elements).value_or(0);
    m.tensors.push_back(std::move(t));
  }
  return m;
}

ModelShape model_shape_preset(std::string_view name, std::string_view dtype) {
  for (const auto& p : presets()) {
    if (p.name == name) return model_shape(p.config, dtype, std::string(name));
  }
  throw ConfigError(fmt::format("unknown model '{}' (known: {}; or a GGUF file or config.json)",
                                name, names_of(presets())));
}

ModelShape model_shape_from_file(const std::filesystem::path& path, std::string_view dtype) {
  const bool is_config = path.filename() == "config.json";
  if (is_config) {
    return model_shape(read_hf_config_file(path), dtype,
                       std::filesystem::absolute(path).parent_path().filename().string());
  }
  const ModelFile f = open_model_file(path);
  ModelShape m;
  m.name = path.filename().string();
  m.config = f.config;
  m.dtype = "file";
  for (const auto& ft : f.tensors) {
    PlanTensor t;
    t.name = ft.name;
    t.bytes = ft.size_bytes;
    t.elements = 1;
    for (std::uint32_t i = 0; i < ft.n_dims; ++i) t.elements *= ft.shape[i];
    t.rows = ft.n_dims == 2 ? ft.shape[1] : 1;
    m.tensors.push_back(std::move(t));
  }
  return m;
}

std::span<const DeviceSpec> device_presets() { return devices(); }

DeviceSpec device_preset(std::string_view name) {
  for (const auto& d : devices()) {
    if (d.name == name) return d;
  }
  throw ConfigError(fmt::format("unknown device '{}' (known: {})", name, names_of(devices())));
}

std::uint64_t roofline_ns(const DeviceSpec& d, std::uint64_t elements, std::uint64_t bytes,
                          std::uint64_t tokens) noexcept {
  // 1 TFLOP/s is 1e3 FLOP per ns; 1 GB/s is one byte per ns.
  const double flops = 2.0 * static_cast<double>(elements) * static_cast<double>(tokens);
  const double f_rate = d.peak_tflops * 1e3 * d.flops_efficiency;
  const double b_rate = d.mem_gbps * d.mem_efficiency;
  const double t = std::max(f_rate > 0 ? flops / f_rate : 0.0,
                            b_rate > 0 ? static_cast<double>(bytes) / b_rate : 0.0);
  // Saturates far below 2^64 ns, so that sums of such times cannot wrap.
  return t < kMaxComputeNs ? static_cast<std::uint64_t>(std::ceil(t)) : kMaxComputeNs;
}

namespace {

void check_config(const PlanConfig& c) {
  auto bad = [](std::string what) { throw ConfigError("plan: " + what); };
  if (c.model.tensors.empty()) bad("the model has no tensors");
  if (c.requests.size() > 64) bad("at most 64 requests");
  for (const PlanRequest& q : c.requests) {
    if (q.prompt_tokens < 1 || q.prompt_tokens > (1u << 20) || q.new_tokens > 4096)
      bad("a request needs 1..1048576 prompt tokens and 0..4096 new tokens");
  }
  if (c.devices < 1 || c.devices > 1024) bad(fmt::format("{} devices (1..1024)", c.devices));
  if (!(c.cache_fraction > 0.0 && c.cache_fraction <= 1.0))
    bad(fmt::format("cache fraction {} is not in (0, 1]", c.cache_fraction));
  if (c.batch < 1 || c.batch > 4096) bad(fmt::format("batch {} (1..4096)", c.batch));
  if (c.prompt_tokens < 1 || c.prompt_tokens > (1u << 20))
    bad(fmt::format("prompt of {} tokens (1..1048576)", c.prompt_tokens));
  if (c.decode_tokens < 1 || c.decode_tokens > 4096)
    bad(fmt::format("{} decode tokens (1..4096)", c.decode_tokens));
  if (c.lookahead > 4096) bad(fmt::format("lookahead {} (0..4096)", c.lookahead));
  if (c.copy_threads < 1 || c.copy_threads > 64) bad("copy threads must be 1..64");
  if (c.chunk_bytes == 0) bad("chunk bytes must be > 0");
  if (c.shared_gbps && !(*c.shared_gbps >= 0.0 && std::isfinite(*c.shared_gbps)))
    bad("the shared link's bandwidth must be finite and >= 0");
  const DeviceSpec& d = c.device;
  for (double v : {d.peak_tflops, d.mem_gbps, d.mem_gib, d.host_link_gbps, d.copy_gbps_per_thread,
                   d.copy_gbps_total})
    if (!(v >= 0.0) || !std::isfinite(v)) bad("device figures must be finite and >= 0");
  // Rates below 1 MB/s (or 1 GFLOP/s) would make simulated time run past what 64 bits hold.
  for (double v :
       {d.host_link_gbps, d.copy_gbps_per_thread, d.copy_gbps_total, c.shared_gbps.value_or(0.0)})
    if (v != 0.0 && v < 1e-3) bad("a link or copy rate must be 0 (none) or at least 0.001 GB/s");
  if (d.peak_tflops < 1e-3 || d.mem_gbps < 1e-3)
    bad("a device needs at least 0.001 TFLOP/s and 0.001 GB/s");
  if (d.flops_efficiency < 1e-3 || d.mem_efficiency < 1e-3)
    bad("device efficiencies must be at least 0.001");
  if (!(d.flops_efficiency > 0.0 && d.flops_efficiency <= 1.0) ||
      !(d.mem_efficiency > 0.0 && d.mem_efficiency <= 1.0))
    bad("device efficiencies must be in (0, 1]");
}

// What one simulated device runs: its keys, schedule, policies and costs.
struct DevicePlan {
  std::vector<std::uint64_t> key_bytes, key_elements, key_tiles;
  std::vector<std::size_t> key_tensor;
  std::vector<std::string> key_names;
  std::vector<std::vector<TensorKey>> pieces;  // by tensor
  std::vector<std::uint64_t> rows_per_piece;   // by tensor
  Schedule schedule;
  std::uint64_t cache_bytes = 0;
};

DevicePlan cut_keys(const PlanConfig& c) {
  DevicePlan p;
  const ModelShape& m = c.model;
  p.cache_bytes = static_cast<std::uint64_t>(
      std::ceil(c.cache_fraction * static_cast<double>(m.total_bytes())));
  // As a Worker cuts them: pieces of whole rows of at most 1/8 of the cache (the embedding's
  // of at most 1 MiB, read by lookups), so that the streaming part of the cache holds several.
  const std::uint64_t max_piece = std::max<std::uint64_t>(p.cache_bytes / 8, 64 * 1024);
  const bool tied = m.config.tie_embeddings;
  p.pieces.resize(m.tensors.size());
  p.rows_per_piece.resize(m.tensors.size(), 1);
  for (std::size_t i = 0; i < m.tensors.size(); ++i) {
    const PlanTensor& t = m.tensors[i];
    const bool embedding = t.name == "token_embd.weight";
    const std::uint64_t limit =
        embedding && !tied ? std::min<std::uint64_t>(max_piece, 1u << 20) : max_piece;
    std::uint64_t pieces = t.rows > 1 && t.bytes > limit ? (t.bytes + limit - 1) / limit : 1;
    pieces = std::min(pieces, t.rows);
    const std::uint64_t per = (t.rows + pieces - 1) / pieces;
    const std::uint64_t row_bytes = t.bytes / t.rows;
    p.rows_per_piece[i] = per;
    // The TensorTiling's tiles: whole rows up to kTileTargetBytes (a vector: one tile).
    const std::uint64_t tile =
        t.rows > 1 ? std::max<std::uint64_t>(1, (64 * 1024) / row_bytes) * row_bytes : t.bytes;
    for (std::uint64_t r0 = 0; r0 < t.rows; r0 += per) {
      const std::uint64_t rows = std::min(per, t.rows - r0);
      p.pieces[i].push_back(static_cast<TensorKey>(p.key_bytes.size()));
      p.key_bytes.push_back(pieces == 1 ? t.bytes : rows * row_bytes);
      p.key_tiles.push_back(std::min(tile, p.key_bytes.back()));
      p.key_elements.push_back(pieces == 1 ? t.elements : t.elements / t.rows * rows);
      p.key_tensor.push_back(i);
      p.key_names.push_back(pieces == 1 ? t.name : fmt::format("{}#{}", t.name, r0 / per));
    }
  }
  std::vector<std::string> names;
  for (const auto& t : m.tensors) names.push_back(t.name);
  const Schedule by_tensor = Schedule::for_transformer(names);
  std::vector<ScheduleStep> steps;
  for (const auto& step : by_tensor.steps()) {
    ScheduleStep s{step.name, {}};
    for (TensorKey index : step.keys) {
      const bool embedding = m.tensors[index].name == "token_embd.weight";
      if (embedding && step.name == "embedding") continue;  // read by lookups
      s.keys.insert(s.keys.end(), p.pieces[index].begin(), p.pieces[index].end());
    }
    if (tied && step.name == "head") {
      for (std::size_t i = 0; i < m.tensors.size(); ++i) {
        if (m.tensors[i].name == "token_embd.weight")
          s.keys.insert(s.keys.end(), p.pieces[i].begin(), p.pieces[i].end());
      }
    }
    steps.push_back(std::move(s));
  }
  p.schedule = Schedule(std::move(steps), true);
  return p;
}

// One pass of the schedule: tokens per sequence, and the attention context they see.
struct Pass {
  std::uint64_t tokens = 1;  // per sequence
  bool prompt = false;
  std::uint64_t context = 0;  // decode: cached positions each token attends to
};

std::vector<Pass> passes_of(const PlanConfig& c) {
  std::vector<Pass> out;
  if (c.requests.empty()) {
    out.push_back({1, false, c.prompt_tokens});  // warm-up
    out.push_back({c.prompt_tokens, true, 0});   // the prompts: time to first token
    for (std::size_t i = 0; i < c.decode_tokens; ++i)
      out.push_back({1, false, c.prompt_tokens + 1 + i});
    return out;
  }
  for (const PlanRequest& r : c.requests) {
    out.push_back({r.prompt_tokens, true, 0});
    for (std::size_t i = 1; i < r.new_tokens; ++i) out.push_back({1, false, r.prompt_tokens + i});
  }
  return out;
}

struct Workload {
  const PlanConfig* c;
  const DevicePlan* p;
  std::vector<Pass> passes;
  std::size_t embd = SIZE_MAX;  // the token embedding's tensor index
  std::size_t head = SIZE_MAX;  // the output matrix's (the embedding's when tied)
  // Tokens that pass through the matrices in `pass`, over the whole batch.
  std::uint64_t tokens(std::size_t pass) const { return passes[pass].tokens * c->batch; }
};

std::vector<VirtualWorkerSpec> worker_specs(const PlanConfig& c, const DevicePlan& p,
                                            std::size_t n) {
  const ModelShape& m = c.model;
  auto w = std::make_shared<Workload>();
  w->c = &c;
  w->p = &p;
  w->passes = passes_of(c);
  for (std::size_t i = 0; i < m.tensors.size(); ++i) {
    if (m.tensors[i].name == "token_embd.weight") w->embd = i;
    if (m.tensors[i].name == "output.weight") w->head = i;
  }
  if (m.config.tie_embeddings) w->head = w->embd;
  const std::uint64_t q_dim = std::uint64_t{m.config.n_heads} * m.config.head_dim;
  const std::uint64_t kv_dim = std::uint64_t{m.config.n_kv_heads} * m.config.head_dim;
  VirtualWorkerSpec spec;
  spec.schedule = &p.schedule;
  spec.key_bytes = p.key_bytes;
  spec.key_tile_bytes = p.key_tiles;
  spec.cache_bytes = p.cache_bytes;
  spec.copy_threads = c.copy_threads;
  spec.chunk_bytes = c.chunk_bytes;
  spec.copy_gbps = c.device.copy_gbps_per_thread;
  spec.copy_gbps_total = c.device.copy_gbps_total;
  spec.passes = w->passes.size();
  const std::size_t k = c.lookahead;
  spec.prefetch = c.prefetch_policy
                      ? c.prefetch_policy
                      : PrefetchPolicyFactory([k] { return std::make_unique<LookaheadPolicy>(k); });
  if (c.eviction_policy_factory) {
    auto factory = c.eviction_policy_factory;
    spec.eviction = [factory, &p] {
      return factory(CacheKeys{p.schedule, p.key_bytes, p.key_names, p.cache_bytes});
    };
  } else {
    const std::string name = c.eviction;
    spec.eviction = [name, &p] {
      std::vector<TensorKey> keep;
      if (name == "fixed") keep = p.schedule.fixed_set_for_cache(p.key_bytes, p.cache_bytes);
      return make_eviction_policy(name, p.schedule.trace(), true, keep);
    };
  }
  const DeviceSpec d = c.device;
  spec.key_ns = [w, d](std::size_t pass, TensorKey key) -> std::uint64_t {
    const std::size_t tensor = w->p->key_tensor[key];
    if (tensor == w->embd && !w->c->model.config.tie_embeddings) return 0;  // a lookup
    // The head computes logits for the last position of each sequence only.
    const std::uint64_t tokens = tensor == w->head ? w->c->batch : w->tokens(pass);
    return roofline_ns(d, w->p->key_elements[key], w->p->key_bytes[key], tokens);
  };
  spec.step_ns = [w, d, q_dim, kv_dim](std::size_t pass, std::size_t s) -> std::uint64_t {
    const std::string& name = w->p->schedule.step(s).name;
    if (!name.starts_with("block.")) return d.step_overhead_ns;
    // Attention over the KV cache (F16): decode reads every cached position of every
    // sequence; a prompt attends causally within itself.
    const double b = static_cast<double>(w->c->batch);
    const Pass& ps = w->passes[pass];
    double flops = 0, bytes = 0;
    if (ps.prompt) {
      const double len = static_cast<double>(ps.tokens);
      flops = 4.0 * b * len * len / 2.0 * static_cast<double>(q_dim);
      bytes = b * len * 2.0 * static_cast<double>(kv_dim) * 2.0;
    } else {
      const double ctx = static_cast<double>(ps.context);
      flops = 4.0 * b * ctx * static_cast<double>(q_dim);
      bytes = b * ctx * 2.0 * static_cast<double>(kv_dim) * 2.0;
    }
    const double t = std::max(flops / (d.peak_tflops * 1e3 * d.flops_efficiency),
                              bytes / (d.mem_gbps * d.mem_efficiency));
    return t < kMaxComputeNs ? d.step_overhead_ns + static_cast<std::uint64_t>(std::ceil(t))
                             : kMaxComputeNs;
  };
  spec.lookups = [w](std::size_t pass, std::size_t s) {
    std::vector<TensorKey> keys;
    if (s != 0 || w->embd == SIZE_MAX || w->c->model.config.tie_embeddings) return keys;
    const auto& pieces = w->p->pieces[w->embd];
    const std::uint64_t rows = w->c->model.tensors[w->embd].rows;
    const std::uint64_t per = w->p->rows_per_piece[w->embd];
    // Far more tokens than pieces touch every piece: no need to draw them (a prompt of a
    // million tokens would take that many draws).
    if (w->tokens(pass) >= 64 * pieces.size()) return std::vector<TensorKey>(pieces);
    std::vector<bool> seen(pieces.size(), false);
    for (std::uint64_t i = 0; i < w->tokens(pass); ++i) {
      const std::uint64_t piece = mix(pass * 0x10000000ULL + i) % rows / per;
      if (!seen[piece]) keys.push_back(pieces[piece]);
      seen[piece] = true;
    }
    return keys;
  };
  return std::vector<VirtualWorkerSpec>(n, spec);
}

}  // namespace

PlanResult plan(const PlanConfig& c) {
  const auto wall0 = std::chrono::steady_clock::now();
  check_config(c);
  const DevicePlan p = cut_keys(c);
  LinkParams port = link_preset(c.link);
  const double preset_gbps = port.bandwidth_gbps;
  if (c.device.host_link_gbps > 0.0 &&
      (port.bandwidth_gbps <= 0.0 || c.device.host_link_gbps < port.bandwidth_gbps)) {
    port.bandwidth_gbps = c.device.host_link_gbps;
  }
  if (c.link_chunk_bytes > 0) {
    port.chunk_bytes = c.link_chunk_bytes;
  } else if (c.model.total_bytes() > (4ull << 30)) {
    port.chunk_bytes = std::max(port.chunk_bytes, c.chunk_bytes);
  }
  const double shared = c.shared_gbps.value_or(preset_gbps);

  PlanResult r;
  r.model = c.model.name;
  r.dtype = c.model.dtype;
  r.device = c.device.name;
  r.link = c.link;
  r.eviction = c.eviction_policy_factory ? "user" : c.eviction;
  r.devices = c.devices;
  r.batch = c.batch;
  r.prompt_tokens = c.prompt_tokens;
  r.decode_tokens = c.decode_tokens;
  r.lookahead = c.lookahead;
  r.cache_fraction = c.cache_fraction;
  r.port_gbps = port.bandwidth_gbps;
  r.shared_gbps = shared;

  const VirtualRunResult run = run_virtual_workers(worker_specs(c, p, c.devices), port, shared);
  if (run.end_ns >= kMaxComputeNs) {
    throw ConfigError(fmt::format(
        "plan: the simulated run takes more than {:.0f} days: the device or the workload is "
        "out of any useful range",
        static_cast<double>(kMaxComputeNs) / 86400e9));
  }
  // The measured window: the decode steps after the warm-up and the prompts (serving), or
  // the last request. Figures are averaged over the devices.
  const std::vector<Pass> passes = passes_of(c);
  std::size_t first = 2;  // the window's first pass
  std::uint64_t window_tokens = c.batch * c.decode_tokens;
  if (!c.requests.empty()) {
    const PlanRequest& last = c.requests.back();
    first = passes.size() - std::max<std::size_t>(last.new_tokens, 1);
    window_tokens = c.batch * last.new_tokens;
  }
  const std::size_t steps = passes.size() - first;
  auto window_of = [&](const VirtualWorkerResult& w) {
    const std::uint64_t start = first == 0 ? 0 : w.pass_end_ns[first - 1];
    const Counters from = first == 0 ? Counters{} : w.pass_counters[first - 1];
    return std::pair{w.pass_end_ns.back() - start, figures_between(from, w.pass_counters.back())};
  };
  double tok_s = 0, ttft = 0, step = 0, stall = 0, ready = 0, reuse = 0, acc = 0, gbps = 0,
         bytes = 0, req_ms = 0, req_stall = 0, busy_gbps = 0;
  std::uint64_t window_max = 0, link_window = 0;
  for (const auto& w : run.workers) {
    const auto [window, f] = window_of(w);
    window_max = std::max(window_max, window);
    tok_s += 1e9 * static_cast<double>(window_tokens) / static_cast<double>(window);
    ttft += c.requests.empty()
                ? ms(w.pass_end_ns[1] - w.pass_end_ns[0])
                : ms(w.pass_end_ns[first] - (first == 0 ? 0 : w.pass_end_ns[first - 1]));
    step += ms(window) / static_cast<double>(steps);
    stall += f.stall_ms / static_cast<double>(steps);
    ready += f.ready_rate;
    reuse += f.reuse_rate;
    acc += f.prefetch_accuracy;
    gbps += static_cast<double>(f.link_bytes) / static_cast<double>(window);
    bytes += static_cast<double>(f.link_bytes) / static_cast<double>(steps);
    link_window += f.link_bytes;
    req_ms += ms(window);
    req_stall += f.stall_ms;
    busy_gbps += f.link_gbps;
  }
  const double n = static_cast<double>(run.workers.size());
  r.decode_tok_s_per_device = tok_s / n;
  r.decode_tok_s_total = tok_s;
  r.ttft_ms = ttft / n;
  r.step_ms = step / n;
  r.stall_ms_per_step = stall / n;
  r.ready_rate = ready / n;
  r.reuse_rate = reuse / n;
  r.prefetch_accuracy = acc / n;
  r.link_gbps_per_device = gbps / n;
  r.link_bytes_per_step = bytes / n;
  r.link_utilisation = shared > 0.0 && window_max > 0 ? static_cast<double>(link_window) / shared /
                                                            static_cast<double>(window_max)
                                                      : 0.0;
  if (!c.requests.empty()) {
    r.request_ms = req_ms / n;
    r.request_stall_ms = req_stall / n;
    r.request_link_gbps = busy_gbps / n;
  }
  {
    // Compute alone: the roofline of the window's passes, as the workers ran them.
    const auto spec = worker_specs(c, p, 1).front();
    std::uint64_t t = 0;
    for (std::size_t pass = first; pass < spec.passes; ++pass) {
      for (std::size_t s = 0; s < p.schedule.size(); ++s) {
        t += spec.step_ns(pass, s);
        for (TensorKey k : spec.lookups(pass, s)) t += spec.key_ns(pass, k);
        for (TensorKey k : p.schedule.step(s).keys) t += spec.key_ns(pass, k);
      }
    }
    r.compute_ms_per_step = ms(t) / static_cast<double>(steps);
  }
  if (shared > 0.0) {
    // One device alone on its port: its link demand, and how many of those the shared link
    // carries.
    const VirtualRunResult alone = run_virtual_workers(worker_specs(c, p, 1), port, 0.0);
    const auto [window, f] = window_of(alone.workers.front());
    const double demand = static_cast<double>(f.link_bytes) / static_cast<double>(window);
    r.max_devices_before_saturation =
        demand > 0.0 ? static_cast<std::size_t>(std::max(1.0, std::floor(shared / demand))) : 0;
  }
  const LlamaConfig& mc = c.model.config;
  r.model_bytes = c.model.total_bytes();
  r.cache_bytes = p.cache_bytes;
  // The longest sequence a device holds: a serving batch's, or the longest request's.
  std::uint64_t positions = c.requests.empty() ? c.prompt_tokens + c.decode_tokens : 0;
  for (const PlanRequest& q : c.requests)
    positions = std::max<std::uint64_t>(positions, q.prompt_tokens + q.new_tokens);
  r.kv_bytes = static_cast<std::uint64_t>(c.batch) * positions * mc.n_layers * 2ull *
               mc.n_kv_heads * mc.head_dim * 2ull;
  r.device_bytes = r.cache_bytes + r.kv_bytes;
  r.replicated_bytes = r.model_bytes + r.kv_bytes;
  r.device_capacity_bytes = static_cast<std::uint64_t>(c.device.mem_gib * 1024.0 * 1024.0 * 1024.0);
  r.fits = r.device_capacity_bytes == 0 || r.device_bytes <= r.device_capacity_bytes;
  r.replicated_fits = r.device_capacity_bytes == 0 || r.replicated_bytes <= r.device_capacity_bytes;
  r.events = run.events;
  r.simulated_ms = ms(run.end_ns);
  r.wall_ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - wall0).count();
  return r;
}

void to_json(nlohmann::json& j, const PlanResult& r) {
  j = nlohmann::json{{"model", r.model},
                     {"dtype", r.dtype},
                     {"device", r.device},
                     {"link", r.link},
                     {"eviction", r.eviction},
                     {"devices", r.devices},
                     {"batch", r.batch},
                     {"prompt_tokens", r.prompt_tokens},
                     {"decode_tokens", r.decode_tokens},
                     {"lookahead", r.lookahead},
                     {"cache_fraction", r.cache_fraction},
                     {"port_gbps", r.port_gbps},
                     {"shared_gbps", r.shared_gbps},
                     {"decode_tok_s_per_device", r.decode_tok_s_per_device},
                     {"decode_tok_s_total", r.decode_tok_s_total},
                     {"ttft_ms", r.ttft_ms},
                     {"request_ms", r.request_ms},
                     {"request_stall_ms", r.request_stall_ms},
                     {"request_link_gbps", r.request_link_gbps},
                     {"step_ms", r.step_ms},
                     {"compute_ms_per_step", r.compute_ms_per_step},
                     {"stall_ms_per_step", r.stall_ms_per_step},
                     {"ready_rate", r.ready_rate},
                     {"reuse_rate", r.reuse_rate},
                     {"prefetch_accuracy", r.prefetch_accuracy},
                     {"link_gbps_per_device", r.link_gbps_per_device},
                     {"link_bytes_per_step", r.link_bytes_per_step},
                     {"link_utilisation", r.link_utilisation},
                     {"max_devices_before_saturation", r.max_devices_before_saturation},
                     {"model_bytes", r.model_bytes},
                     {"cache_bytes", r.cache_bytes},
                     {"kv_bytes", r.kv_bytes},
                     {"device_bytes", r.device_bytes},
                     {"replicated_bytes", r.replicated_bytes},
                     {"device_capacity_bytes", r.device_capacity_bytes},
                     {"fits", r.fits},
                     {"replicated_fits", r.replicated_fits},
                     {"events", r.events},
                     {"simulated_ms", r.simulated_ms},
                     {"wall_ms", r.wall_ms}};
}

}  // namespace xlshare
