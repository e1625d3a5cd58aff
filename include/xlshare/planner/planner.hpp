// The scale planner: the real cache and prefetch code on a virtual clock, for models and
// device counts this machine cannot hold (docs/planner.md).
//
// A plan runs N simulated devices (run_virtual_workers) with the model's tensors cut into
// cache keys as a Worker cuts them, the real EvictionPolicy and PrefetchPolicy, the link's
// timing model, and compute from a roofline device model. Its workload, the serving one:
// one decode step from a cold cache (warm-up), the prompt of every sequence of the batch
// (prefill: the time to first token), then `decode_tokens` decode steps of the whole batch
// (measured). Or, as the experiments measure, requests one after another (PlanRequest).
#pragma once

#include <cstdint>
#include <filesystem>
#include <nlohmann/json_fwd.hpp>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "xlshare/dtype.hpp"
#include "xlshare/engine/worker.hpp"
#include "xlshare/memory/cxl_emulator.hpp"
#include "xlshare/model/llama_config.hpp"

namespace xlshare {

/// One tensor of a planned model: its name, bytes as stored, elements and rows.
struct PlanTensor {
  std::string name;
  std::uint64_t bytes = 0;
  std::uint64_t elements = 0;
  std::uint64_t rows = 1;  ///< a matrix's rows (shape[1]); 1 for a vector
};

/// A model's shape and tensor sizes: no weights.
struct ModelShape {
  std::string name;
  LlamaConfig config;
  std::string dtype;                ///< "f16", "q8_0", "q4_k", "q4_k_m", or "file"
  std::vector<PlanTensor> tensors;  ///< in llama_tensor_specs() order
  std::uint64_t total_bytes() const noexcept;
};

/// A named model shape with the source of its numbers.
struct ModelPreset {
  std::string_view name;
  LlamaConfig config;
  std::string_view source;
};
/// llama-2-7b, llama-2-13b, llama-2-70b, llama-3-8b, llama-3-70b, mistral-7b.
std::span<const ModelPreset> model_presets();
/// `config` with every matrix stored as `dtype` ("f32", "f16", "bf16", "q8_0", "q4_k", "q6_k",
/// or "q4_k_m": llama.cpp's mix of Q4_K and Q6_K); norms stay F32.
/// @throws ConfigError for another dtype or a matrix whose rows are not whole blocks.
ModelShape model_shape(const LlamaConfig& config, std::string_view dtype, std::string name);
/// A preset by name. @throws ConfigError listing the known names.
ModelShape model_shape_preset(std::string_view name, std::string_view dtype);
/// From a GGUF file's header or a Hugging Face config.json (or a directory holding one); a
/// GGUF file keeps its tensors' own types and sizes, config.json needs `dtype`.
/// @throws FormatError or ConfigError naming the file.
ModelShape model_shape_from_file(const std::filesystem::path& path, std::string_view dtype);

/// A compute device: public peak figures and the share of them a decode or prefill reaches.
struct DeviceSpec {
  std::string name;
  double peak_tflops = 0.0;       ///< dense FP16/BF16 tensor FLOP/s, 1e12
  double mem_gbps = 0.0;          ///< device memory bandwidth, GB/s (1e9 B/s)
  double mem_gib = 0.0;           ///< device memory capacity
  double host_link_gbps = 0.0;    ///< the device's link to the pool (PCIe), GB/s per direction
  double flops_efficiency = 0.6;  ///< share of peak FLOP/s a GEMM reaches
  double mem_efficiency = 0.8;    ///< share of memory bandwidth a GEMV reaches
  std::uint64_t step_overhead_ns = 20'000;  ///< per step (layer): launches, norms, syncs
  /// A host whose copy (checksum included) is slower than its link: the most one copy
  /// thread delivers, GB/s, and all of a device's copy threads together; 0: the link decides.
  double copy_gbps_per_thread = 0.0;
  double copy_gbps_total = 0.0;
  std::string source;  ///< where the figures come from
};
/// a100-80gb, h100-sxm, l40s, mi300x (datasheet figures, cited in the source).
std::span<const DeviceSpec> device_presets();
/// A preset by name. @throws ConfigError listing the known names.
DeviceSpec device_preset(std::string_view name);

/// The longest compute time a plan takes for one tensor or step, and the longest run: 2^60 ns
/// (36 years). A plan whose run would be longer is refused.
inline constexpr std::uint64_t kMaxComputeNs = std::uint64_t{1} << 60;

/// Compute time in ns of a matrix of `elements` weights and `bytes` bytes applied to `tokens`
/// tokens: the roofline max(FLOPs / reachable FLOP/s, bytes / reachable bandwidth), at most
/// kMaxComputeNs.
std::uint64_t roofline_ns(const DeviceSpec& d, std::uint64_t elements, std::uint64_t bytes,
                          std::uint64_t tokens) noexcept;

/// A request of an experiment's kind: one pass over the prompt, then one decode pass per
/// further new token (a request with 0 or 1 new tokens is the prompt pass alone).
struct PlanRequest {
  std::size_t prompt_tokens = 1;
  std::size_t new_tokens = 0;
};

struct PlanConfig {
  ModelShape model;
  DeviceSpec device;
  std::size_t devices = 1;       ///< N devices sharing the pool
  std::string link = "cxl-x16";  ///< link preset of each device's port (cxl_emulator.hpp)
  /// The link every device shares (the pool's, or a switch's), GB/s. Unset: the link
  /// preset's bandwidth (one pool device behind one link, as the emulator models it).
  std::optional<double> shared_gbps;
  double cache_fraction = 0.1;      ///< each device's cache, as a share of the model's bytes
  std::size_t batch = 1;            ///< sequences decoded together
  std::size_t prompt_tokens = 128;  ///< per sequence
  std::size_t decode_tokens = 4;    ///< measured decode steps
  std::size_t lookahead = 2;        ///< LookaheadPolicy's k
  std::string eviction = "fixed";   ///< fixed, lru, fifo, schedule
  unsigned copy_threads = 2;        ///< transfer threads per device
  std::uint64_t chunk_bytes = 4u << 20;
  /// Granularity of the link model, bytes (LinkParams::chunk_bytes). 0: the preset's, raised
  /// to chunk_bytes for models over 4 GiB so that a 70B plan takes well under a second.
  std::uint64_t link_chunk_bytes = 0;
  /// Instead of the serving workload: these requests, one after another from a cold cache
  /// on every device; request_ms is the last one's latency.
  std::vector<PlanRequest> requests;
  /// Optional user policies (as EngineConfig's), made once per device.
  PrefetchPolicyFactory prefetch_policy;
  EvictionPolicyFactory eviction_policy_factory;
};

struct PlanResult {
  // what was planned
  std::string model, dtype, device, link, eviction;
  std::size_t devices = 0, batch = 0, prompt_tokens = 0, decode_tokens = 0, lookahead = 0;
  double cache_fraction = 0.0, port_gbps = 0.0, shared_gbps = 0.0;
  // speed
  double decode_tok_s_per_device = 0.0;  ///< batch x decode steps / their time
  double decode_tok_s_total = 0.0;       ///< x devices
  double ttft_ms = 0.0;                  ///< the batch's prompt (warm cache)
  double request_ms = 0.0;               ///< with `requests`: the last one's latency
  double request_stall_ms = 0.0;         ///< ... the time it waited for tensors
  double request_link_gbps = 0.0;        ///< ... its link bytes / the time its link was busy
  double step_ms = 0.0;                  ///< one decode step of the batch
  double compute_ms_per_step = 0.0;      ///< of which compute (the roofline alone)
  double stall_ms_per_step = 0.0;        ///< compute waiting for tensors, per decode step
  double ready_rate = 0.0, reuse_rate = 0.0, prefetch_accuracy = 0.0;
  double link_gbps_per_device = 0.0;  ///< link bytes / time of the measured steps
  double link_bytes_per_step = 0.0;   ///< per device, per decode step
  double link_utilisation = 0.0;      ///< shared link busy / time of the measured steps
  /// The most devices the shared link feeds at the speed one device alone reaches (its link
  /// demand at N = 1 into the shared bandwidth); 0 when no link is shared.
  std::size_t max_devices_before_saturation = 0;
  // memory, bytes per device
  std::uint64_t model_bytes = 0, cache_bytes = 0, kv_bytes = 0;
  std::uint64_t device_bytes = 0;      ///< cache + KV
  std::uint64_t replicated_bytes = 0;  ///< the whole model + KV (every device its own copy)
  std::uint64_t device_capacity_bytes = 0;
  bool fits = false, replicated_fits = false;
  // the simulation
  std::uint64_t events = 0;
  double simulated_ms = 0.0;
  double wall_ms = 0.0;
};
/// Every field by its name.
void to_json(nlohmann::json& j, const PlanResult& r);

/// Plans one point. @throws ConfigError for an impossible one (a step whose tensors do not
/// fit the cache, zero devices, a cache fraction outside (0, 1]).
PlanResult plan(const PlanConfig& config);

}  // namespace xlshare
