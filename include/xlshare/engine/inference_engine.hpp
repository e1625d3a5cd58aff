// InferenceEngine: the public face of xlshare. Put a model into a pool once; serve it from
// one or more workers, each with a small near cache filled by a prefetcher over the
// (emulated) CXL link; see what the cache, the prefetcher and the link did.
//
//   xlshare::EngineConfig config;
//   config.pool_uri = "shm://weights";
//   config.cache_bytes = 64 << 20;
//   xlshare::InferenceEngine engine(config);
//   engine.register_model("model.gguf", "llama");   // loads once; later calls find it
//   engine.attach_model("llama");
//   auto out = engine.generate({1, 2, 3}, 32);
//
// Serving: submit() queues a request and returns a handle at once; tokens stream to a
// callback as they come. Each worker's scheduler runs all the sequences it holds in one
// forward pass per step, admitting and retiring them at any step (continuous batching).
//
// Thread-safe: submit(), inference(), batch_inference() and generate() may be called from
// several threads; requests go to whichever worker (config.workers of them) has room.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "xlshare/engine/request.hpp"
#include "xlshare/engine/worker.hpp"
#include "xlshare/memory/cxl_emulator.hpp"
#include "xlshare/memory/pool.hpp"
#include "xlshare/model/executor.hpp"
#include "xlshare/model/model_loader.hpp"
#include "xlshare/model/synthetic.hpp"
#include "xlshare/model/tokenizer.hpp"

namespace xlshare {

struct EngineConfig {
  /// The pool holding the weights. Default "shm://xlshare".
  std::string pool_uri = "shm://xlshare";
  /// Size of the pool when register_model has to create it; 0: sized to the model.
  std::uint64_t pool_bytes = 0;
  /// How workers use far memory: Placement::kCopy (a near cache filled over the link, the
  /// model of a GPU) or Placement::kInPlace (a CPU worker computes from the pool mapping,
  /// paced on the link; cache_bytes is then its HotSet). Unset: default_placement() of the
  /// pool's backend, which is kInPlace on every host backend (shm, file, dax, numa), or
  /// kCopy when prefetch_policy or eviction_policy_factory is set (they steer the copy path).
  std::optional<Placement> placement;
  /// Near memory per worker in bytes; 0: no cache (compute from the pool mapping).
  /// With kInPlace: the HotSet's budget. Default 256 MiB.
  std::uint64_t cache_bytes = 256ull << 20;
  /// Emulated link: a preset ("none", "cxl-x8", "cxl-x16", "cxl-switched") ...
  std::string link_preset = "cxl-x8";
  /// ... or custom parameters, which win when set.
  std::optional<LinkParams> link;
  /// Faults the emulator injects on the primary pool. Default none.
  FaultConfig faults;
  /// Eviction policy by name: "fixed" (default: a fixed set for the repeating schedule), "lru",
  /// "fifo", "schedule".
  std::string eviction_policy = "fixed";
  /// Transfer threads per worker. Default 2.
  unsigned prefetch_threads = 2;
  /// Steps ahead: the default prefetch policy's k (copy; default 2), or the steps whose link
  /// time is reserved ahead (in_place; default 4: a reservation costs no memory, and the
  /// link must keep working while compute runs on the HotSet). Unset: the placement's default.
  std::optional<std::size_t> lookahead;
  /// Verify checksums of every tensor on arrival. Default true.
  bool verify_checksums = true;
  /// A second pool holding the same model, read when the primary fails; attach refuses
  /// one whose tensor table, shapes, dtypes or checksums differ. Default none.
  std::string replica_pool_uri;
  /// Without a cache (cache_bytes 0): bytes per second of the mapped weights the background
  /// Scrubber re-verifies (0: off; they are verified once at attach either way). Default
  /// 256 MiB/s.
  std::uint64_t scrub_bytes_per_s = Scrubber::kDefaultBytesPerSecond;
  /// Workers (emulated GPUs) in this process. Default 1.
  unsigned workers = 1;
  /// Compute threads per worker. Default 1.
  unsigned compute_threads = 1;
  /// Q8_0/Q4_K/Q6_K products against 8-bit activations, as llama.cpp computes them
  /// (ExecutorOptions::quantized_activations): faster, not exactly the dequantized model.
  /// Default false.
  bool quantized_activations = false;
  /// How attention rounds (ExecutorOptions::attention): kGgmlF16 reproduces llama.cpp's
  /// F16 KV cache to 2e-5. Default kF32.
  AttentionNumerics attention = AttentionNumerics::kF32;
  /// Longest sequence (prompt + generated) a request may have. Default 1024.
  std::uint32_t max_context = 1024;
  /// A user prefetch policy, made once per worker (overrides `lookahead`).
  PrefetchPolicyFactory prefetch_policy;
  /// A user eviction policy, made once per worker (overrides `eviction_policy`).
  EvictionPolicyFactory eviction_policy_factory;
  /// Makes the backend of `pool_uri` and of `replica_pool_uri` (called with that string)
  /// instead of open_backend(): for a backend built in code rather than named by a URI
  /// scheme (for a scheme, register_backend_scheme() is the simpler way). The URIs are then
  /// only labels. register_model creates a pool in the backend when its first bytes are
  /// blank, and attaches to the one there otherwise; the engine never removes it. Creating
  /// is not guarded against a second process creating at the same moment: let one process
  /// register the model (as a loader does) before others attach.
  std::function<std::unique_ptr<MemoryBackend>(const std::string& uri)> backend_factory;

  // Serving: each worker's scheduler runs every request it holds in one forward pass per
  // step (continuous batching; see submit()).
  /// KV memory per worker, bytes: sequences are admitted while their KV fits, and grow
  /// into it block by block. 0: room for max_batch_sequences sequences of max_context.
  std::uint64_t kv_cache_bytes = 0;
  /// Tokens per KV block. Default 32.
  std::uint32_t kv_block_tokens = 32;
  /// Sequences a worker runs together at most. Default 32.
  unsigned max_batch_sequences = 32;
  /// Tokens one step computes at most: one per generating sequence, the rest chunks of
  /// prompts (chunked prefill). At least max_batch_sequences. Default 512.
  std::uint32_t max_step_tokens = 512;
};

/// What a worker's scheduler did (EngineStats::serving: the sum over workers).
struct ServingStats {
  std::uint64_t running = 0;         ///< sequences in the batch now
  std::uint64_t waiting = 0;         ///< requests queued for admission now (engine only)
  std::uint64_t steps = 0;           ///< forward passes run
  std::uint64_t step_sequences = 0;  ///< sequences over every step (/ steps: batch size)
  std::uint64_t step_tokens = 0;     ///< tokens over every step: prompt chunks and decodes
  std::uint64_t output_tokens = 0;   ///< tokens generated
  std::uint64_t preemptions = 0;     ///< sequences whose KV was freed to let others grow
  std::uint64_t cancelled = 0, failed = 0;
  std::uint64_t kv_used_bytes = 0, kv_capacity_bytes = 0;  ///< KV blocks held / budget
  double mean_batch_sequences = 0;                         ///< step_sequences / steps
  double output_tokens_per_s = 0;  ///< output_tokens over the time since attach
};

void to_json(nlohmann::json& j, const ServingStats& s);

struct WorkerReport {
  unsigned index = 0;
  Figures figures;
  CacheStats cache;
  TransferStats transfers;
  ScrubStats
      scrub;  ///< without a cache: verification of the mapped weights (shared by the workers)
  std::string placement;                   ///< "copy" or "in-place"
  std::uint64_t hot_set_bytes = 0;         ///< in-place: the HotSet's local copies so far
  std::uint64_t hot_set_target_bytes = 0;  ///< ... and when complete (built after the first token)
  std::uint64_t requests = 0;
  std::uint64_t tokens = 0;  ///< prompt + generated tokens processed
  ServingStats serving;
};

void to_json(nlohmann::json& j, const WorkerReport& w);

struct EngineStats {
  PoolStats pool;
  std::string model;
  std::uint64_t model_bytes = 0;
  double attach_ms = 0;        ///< the last attach_model: pools attached, model checked, workers up
  std::uint64_t requests = 0;  ///< requests answered since attach, every worker
  /// Request latency (submit to answer, ms) over the last kLatencyWindow requests: the
  /// median and the 99th percentile (nearest rank); 0 with no request yet.
  double latency_p50_ms = 0, latency_p99_ms = 0;
  static constexpr std::size_t kLatencyWindow = 4096;
  ServingStats serving;  ///< every worker's, summed (waiting: the engine's queue)
  std::vector<WorkerReport> workers;
  std::string to_json() const;
  /// The same figures in the Prometheus text format (a /metrics body): families named
  /// xlshare_*, counters ending in _total, every sample labelled with the model and, per
  /// worker, the worker's index.
  std::string to_prometheus() const;
};
/// Everything above, each worker's cache, transfer, link and scrub figures included.
void to_json(nlohmann::json& j, const EngineStats& s);

/// The sample model of the seed: a Llama of the given shape with seeded random weights.
SyntheticModel create_sample_transformer_model(std::uint32_t dim = 256, std::uint32_t n_layers = 4,
                                               std::uint32_t n_heads = 8,
                                               std::uint32_t n_kv_heads = 4,
                                               std::uint32_t ffn_dim = 688,
                                               std::uint32_t vocab = 1024, std::uint64_t seed = 1);

class Scheduler;

class InferenceEngine {
 public:
  /// @throws ConfigError for an impossible configuration.
  explicit InferenceEngine(EngineConfig config);
  ~InferenceEngine();
  InferenceEngine(const InferenceEngine&) = delete;
  InferenceEngine& operator=(const InferenceEngine&) = delete;

  /// Loads `file` into the pool as `name` (creating the pool when there is none). When the
  /// pool already holds a sealed model `name`, nothing is opened or read and false is
  /// returned. @throws FormatError, PoolError, OutOfMemory.
  bool register_model(const std::filesystem::path& file, const std::string& name,
                      const LoadProgress& progress = {});
  /// Same, from a model in memory (matrices stored as `dtype`).
  bool register_model(const SyntheticModel& model, const std::string& name,
                      DType dtype = DType::kF32);

  /// Attaches to model `name` in the pool and starts the workers. Without a cache every
  /// weight is verified here (first use), and a tensor that fails is read from the replica
  /// when its copy verifies. @throws PoolError naming the pool, the model and the tensor
  /// when one has no verified copy, or when the replica holds a different model.
  void attach_model(const std::string& name);

  /// Queues a request and returns at once: a worker's scheduler admits it (first come,
  /// first served, while its KV fits the worker's budget), runs it in one forward pass per
  /// step with every other sequence it holds, and calls `callbacks.on_token` with each
  /// token as it comes. Wait for the result or cancel it through the handle.
  /// A request with prompt_text is tokenized here first.
  /// @throws ConfigError at once for a request that could never run (empty prompt, longer
  /// than the context, a token outside the vocabulary, more KV than a worker's budget, text
  /// for a model without a tokenizer, both text and ids).
  RequestHandle submit(InferenceRequest request, RequestCallbacks callbacks = {});
  /// Same as handle.cancel().
  void cancel(const RequestHandle& handle) { handle.cancel(); }

  /// submit() and wait(). @throws PoolError (naming the pool, the model and the tensor)
  /// once a weight has no verified copy left; never answers from weights found changed.
  InferenceResult inference(const InferenceRequest& request);
  /// Submits the requests together (all are checked first) and waits for every one: the
  /// scheduler batches them, so each layer's weights are fetched once per step for all.
  /// @throws as inference(), what failed the first that failed (after all have finished).
  std::vector<InferenceResult> batch_inference(const std::vector<InferenceRequest>& requests);
  /// Generates `n` tokens after `prompt`.
  std::vector<std::int32_t> generate(std::span<const std::int32_t> prompt, std::size_t n,
                                     const SamplingOptions& sampling = {});

  /// Re-verifies every weight the workers compute from in place now, on this thread (a
  /// whole Scrubber pass; nothing to do with a cache). Returns the mismatches found.
  std::uint64_t scrub_now();

  EngineStats stats() const;
  /// Worker 0's cache trace (see Worker::cache_trace).
  std::pair<std::vector<TensorKey>, std::vector<std::uint64_t>> cache_trace() const;
  const LlamaModel& model() const;
  /// The attached model's tokenizer (kept in the pool with it), or nullptr when it has none.
  /// Valid until the next attach_model.
  const Tokenizer* tokenizer() const noexcept { return tokenizer_.get(); }
  const EngineConfig& config() const noexcept { return config_; }
  Pool& pool();

 private:
  /// Turns a request's prompt_text into its prompt. @throws ConfigError.
  InferenceRequest with_prompt_tokens(InferenceRequest request) const;
  std::unique_ptr<Pool> open_reader(const std::string& uri, bool primary) const;
  std::unique_ptr<MemoryBackend> open_pool_backend(const std::string& uri) const;
  /// The pool register_model writes to: the existing one, or a new one of size_if_new()
  /// bytes, `*created_by_uri` set when it was created by URI (and is removed on failure).
  /// `*existing_has` is set when the existing pool holds a sealed model `name`.
  /// After a failed load: removes the pool when this call created it and it holds no model.
  void discard_created_pool(std::unique_ptr<Pool> pool, bool created) const noexcept;
  std::unique_ptr<Pool> writer_pool(const std::string& name,
                                    const std::function<std::uint64_t()>& size_if_new,
                                    bool* created_by_uri, bool* existing_has) const;

  EngineConfig config_;
  std::unique_ptr<Pool> pool_, replica_;
  std::shared_ptr<const ModelView> view_;
  std::unique_ptr<LlamaModel> model_;
  std::unique_ptr<const Tokenizer> tokenizer_;
  std::vector<std::unique_ptr<Worker>> workers_;
  std::unique_ptr<Scheduler> scheduler_;  // one thread per worker; stopped before them
  double attach_ms_ = 0;
  mutable std::mutex stats_mu_;
};

}  // namespace xlshare
