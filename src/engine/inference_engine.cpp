#include "xlshare/engine/inference_engine.hpp"

#include "engine/scheduler.hpp"

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <functional>
#include <optional>
#include <thread>

#include "xlshare/error.hpp"
#include "xlshare/log.hpp"
#include "xlshare/memory/backend_uri.hpp"
#include "xlshare/model/dtype_convert.hpp"

namespace xlshare {
namespace {

double ms_since(SteadyClock::time_point t0) {
  return std::chrono::duration<double, std::milli>(SteadyClock::now() - t0).count();
}

// Pool size for a model of `bytes` in `tensors` tensors.
std::uint64_t pool_size_for(std::uint64_t bytes, std::size_t tensors) {
  return bytes + tensors * 4096 + (16u << 20);
}

}  // namespace

const char* to_string(FinishReason r) noexcept {
  switch (r) {
    case FinishReason::kStop:
      return "stop";
    case FinishReason::kCancelled:
      return "cancelled";
    case FinishReason::kError:
      return "error";
    case FinishReason::kLength:
      break;
  }
  return "length";
}

SyntheticModel create_sample_transformer_model(std::uint32_t dim, std::uint32_t n_layers,
                                               std::uint32_t n_heads, std::uint32_t n_kv_heads,
                                               std::uint32_t ffn_dim, std::uint32_t vocab,
                                               std::uint64_t seed) {
  LlamaConfig c;
  c.dim = dim;
  c.n_layers = n_layers;
  c.n_heads = n_heads;
  c.n_kv_heads = n_kv_heads;
  c.head_dim = n_heads ? dim / n_heads : 0;
  c.ffn_dim = ffn_dim;
  c.vocab = vocab;
  c.context = 2048;
  return make_synthetic_llama(c, seed);
}

std::string EngineStats::to_json() const { return nlohmann::json(*this).dump(2); }

InferenceEngine::InferenceEngine(EngineConfig config) : config_(std::move(config)) {
  if (config_.workers == 0 || config_.workers > 64)
    throw ConfigError("engine: workers must be 1..64");
  if (config_.prefetch_threads == 0) throw ConfigError("engine: prefetch_threads must be > 0");
  if (config_.compute_threads == 0) throw ConfigError("engine: compute_threads must be > 0");
  if (config_.max_context == 0) throw ConfigError("engine: max_context must be > 0");
  if (config_.backend_factory) {
    if (config_.pool_uri.empty()) throw ConfigError("engine: pool_uri must name the pool");
  } else {
    (void)parse_backend_uri(config_.pool_uri);
    if (!config_.replica_pool_uri.empty()) (void)parse_backend_uri(config_.replica_pool_uri);
  }
  if (!config_.link) (void)link_preset(config_.link_preset);
}

InferenceEngine::~InferenceEngine() {
  scheduler_.reset();  // its threads use the workers
  workers_.clear();
  view_.reset();
}

std::unique_ptr<MemoryBackend> InferenceEngine::open_pool_backend(const std::string& uri) const {
  if (!config_.backend_factory) return open_backend(uri);
  auto backend = config_.backend_factory(uri);
  if (!backend)
    throw ConfigError(fmt::format("engine: the backend factory made nothing for '{}'", uri));
  return backend;
}

std::unique_ptr<Pool> InferenceEngine::open_reader(const std::string& uri, bool primary) const {
  EmulatorOptions o;
  o.link = config_.link ? *config_.link : link_preset(config_.link_preset);
  if (primary) o.faults = config_.faults;
  o.check_host_rate = false;
  return Pool::attach(std::make_unique<CxlEmulator>(open_pool_backend(uri), o), PoolRole::kReader);
}

namespace {

// Whether a backend's first bytes are blank: no pool was ever made in it.
bool blank_backend(MemoryBackend& backend) {
  const Mapping first = backend.map(0, backend.alignment_bytes(), Access::kReadOnly);
  const std::size_t n = std::min<std::size_t>(first.size_bytes(), 64);
  return std::all_of(first.data(), first.data() + n, [](std::byte b) { return b == std::byte{0}; });
}

}  // namespace

std::unique_ptr<Pool> InferenceEngine::writer_pool(
    const std::string& name, const std::function<std::uint64_t()>& size_if_new,
    bool* created_by_uri, bool* existing_has) const {
  *created_by_uri = *existing_has = false;
  std::unique_ptr<Pool> pool;
  if (config_.backend_factory) {
    auto backend = open_pool_backend(config_.pool_uri);
    if (blank_backend(*backend)) return Pool::create(std::move(backend));
    pool = Pool::attach(std::move(backend), PoolRole::kWriter);
  } else if (backend_exists(config_.pool_uri)) {
    pool = Pool::attach(open_backend(config_.pool_uri), PoolRole::kWriter);
  } else {
    pool = create_pool(config_.pool_uri, config_.pool_bytes ? config_.pool_bytes : size_if_new());
    *created_by_uri = true;  // crash-safe: renamed into place
    return pool;
  }
  const auto names = pool->model_names();
  *existing_has = std::find(names.begin(), names.end(), name) != names.end();
  return pool;
}

void InferenceEngine::discard_created_pool(std::unique_ptr<Pool> pool,
                                           bool created) const noexcept {
  // Only a pool this call created, and only while it holds no model (another process may
  // have attached and sealed one since it was published); what removing it throws must not
  // hide why the load failed.
  try {
    const bool empty = pool && pool->model_names().empty();
    pool.reset();
    if (created && empty) remove_pool(config_.pool_uri);  // refuses while others are attached
  } catch (const std::exception& e) {
    logger().warn("{}: the pool made for the failed load stays: {}", config_.pool_uri, e.what());
  }
}

bool InferenceEngine::register_model(const std::filesystem::path& file, const std::string& name,
                                     const LoadProgress& progress) {
  // An existing sealed model is served as it is: the file is not even opened.
  std::optional<ModelFile> f;
  bool created = false, present = false;
  auto pool = writer_pool(
      name,
      [&] {
        f = open_model_file(file);
        return pool_size_for(f->total_bytes(), f->tensors.size());
      },
      &created, &present);
  if (present) return false;
  const auto t0 = SteadyClock::now();
  try {
    if (!f) f = open_model_file(file);
    load_model_into_pool(*f, *pool, name, progress);
  } catch (...) {
    discard_created_pool(std::move(pool), created);
    throw;
  }
  logger().info("loaded model '{}' ({} tensors, {} bytes) from {} into {}{} in {:.0f} ms", name,
                f->tensors.size(), f->total_bytes(), file.string(), created ? "a new pool " : "",
                config_.pool_uri, ms_since(t0));
  return true;
}

bool InferenceEngine::register_model(const SyntheticModel& model, const std::string& name,
                                     DType dtype) {
  bool created = false, present = false;
  auto pool = writer_pool(
      name,
      [&] {
        std::uint64_t bytes = 0;
        for (const auto& d : model.data) bytes += d.size() * 4;
        return pool_size_for(bytes, model.specs.size());
      },
      &created, &present);
  if (present) return false;
  try {
    ModelWriter w = pool->begin_model(name);
    std::vector<TensorDesc> descs;
    for (std::size_t i = 0; i < model.specs.size(); ++i) {
      const auto& s = model.specs[i];
      const DType t = s.shape.size() == 2 ? dtype : DType::kF32;
      auto dst = w.add_tensor(s.name, t, s.shape);
      from_f32(t, model.data[i].data(), dst.data(), model.data[i].size());
      descs.push_back({s.name, t, s.shape, dst.size()});
    }
    w.set_metadata(model_metadata(LlamaModel(model.config, descs, name), "memory", "memory"));
    w.seal();
  } catch (...) {
    discard_created_pool(std::move(pool), created);
    throw;
  }
  return true;
}

void InferenceEngine::attach_model(const std::string& name) {
  const auto t0 = SteadyClock::now();
  {  // stopped and gone before stats() can see them half torn down
    std::unique_ptr<Scheduler> scheduler;
    std::vector<std::unique_ptr<Worker>> workers;
    {
      std::lock_guard g(stats_mu_);
      scheduler = std::move(scheduler_);
      workers = std::move(workers_);
      workers_.clear();
    }
    scheduler.reset();  // its threads use the workers
  }
  view_.reset();
  pool_ = open_reader(config_.pool_uri, true);
  if (!config_.replica_pool_uri.empty()) replica_ = open_reader(config_.replica_pool_uri, false);
  view_ = pool_->model(name);
  model_ = std::make_unique<LlamaModel>(LlamaModel::from_pool(*view_));
  tokenizer_.reset();
  if (auto vocabulary = pool_tokenizer(*view_)) {
    tokenizer_ =
        std::make_unique<const Tokenizer>(std::move(*vocabulary), fmt::format("model '{}'", name));
  }
  WorkerOptions wo;
  wo.placement = config_.placement;
  wo.cache_bytes = config_.cache_bytes;
  wo.eviction_policy = config_.eviction_policy;
  wo.prefetch_threads = config_.prefetch_threads;
  wo.lookahead = config_.lookahead;
  wo.verify_checksums = config_.verify_checksums;
  wo.compute_threads = config_.compute_threads;
  wo.quantized_activations = config_.quantized_activations;
  wo.attention = config_.attention;
  wo.scrub_bytes_per_s = config_.scrub_bytes_per_s;
  wo.prefetch_factory = config_.prefetch_policy;
  wo.eviction_factory = config_.eviction_policy_factory;
  // Made apart and put in place only when every one is up: a worker that fails to start
  // leaves the engine without workers, never with some and stats sized for none.
  std::vector<std::unique_ptr<Worker>> made;
  for (unsigned i = 0; i < config_.workers; ++i) {
    // Without a cache the workers share one verified mapping: verified once per process.
    made.push_back(std::make_unique<Worker>(*pool_, replica_.get(), view_, *model_, wo,
                                            i > 0 ? made[0].get() : nullptr));
  }
  SchedulerOptions so;
  so.kv_bytes = config_.kv_cache_bytes;
  if (so.kv_bytes == 0) {
    const LlamaConfig& c = model_->config();
    so.kv_bytes = KvBlockPool::token_bytes(c) * config_.max_batch_sequences *
                  std::min<std::uint64_t>(config_.max_context, c.context);
  }
  so.kv_block_tokens = config_.kv_block_tokens;
  so.max_batch_sequences = config_.max_batch_sequences;
  so.max_step_tokens = config_.max_step_tokens;
  so.max_context = config_.max_context;
  so.pool_uri = config_.pool_uri;
  so.model_name = name;
  std::vector<Worker*> ws;
  for (auto& w : made) ws.push_back(w.get());
  auto scheduler = std::make_unique<Scheduler>(std::move(ws), model_->config(), std::move(so));
  {
    std::lock_guard g(stats_mu_);
    workers_ = std::move(made);
    scheduler_ = std::move(scheduler);
    attach_ms_ = ms_since(t0);
  }
  logger().info(
      "attached model '{}' of {}{}: {} worker(s), placement {}, near memory {} bytes each", name,
      config_.pool_uri,
      config_.replica_pool_uri.empty() ? "" : " (replica " + config_.replica_pool_uri + ")",
      workers_.size(), to_string(workers_.front()->placement()), config_.cache_bytes);
}

InferenceRequest InferenceEngine::with_prompt_tokens(InferenceRequest r) const {
  if (r.prompt_text.empty()) return r;
  if (!r.prompt.empty()) {
    throw ConfigError(
        fmt::format("request '{}': give prompt_text or prompt token ids, not both", r.id));
  }
  if (!tokenizer_) {
    throw ConfigError(
        fmt::format("request '{}': model '{}' has no tokenizer; give the prompt as token ids", r.id,
                    view_ ? view_->name() : std::string()));
  }
  r.prompt = tokenizer_->encode(r.prompt_text, true);
  r.prompt_text.clear();
  return r;
}

RequestHandle InferenceEngine::submit(InferenceRequest request, RequestCallbacks callbacks) {
  if (!scheduler_) throw ConfigError("engine: no model attached (call attach_model first)");
  std::vector<InferenceRequest> one;
  one.push_back(with_prompt_tokens(std::move(request)));
  std::vector<RequestCallbacks> cbs;
  cbs.push_back(std::move(callbacks));
  return scheduler_->submit(std::move(one), std::move(cbs)).front();
}

InferenceResult InferenceEngine::inference(const InferenceRequest& request) {
  return submit(request).wait();
}

std::vector<InferenceResult> InferenceEngine::batch_inference(
    const std::vector<InferenceRequest>& requests) {
  std::vector<InferenceResult> results(requests.size());
  if (requests.empty()) return results;
  if (!scheduler_) throw ConfigError("engine: no model attached (call attach_model first)");
  std::vector<InferenceRequest> tokenized;
  tokenized.reserve(requests.size());
  for (const auto& r : requests) tokenized.push_back(with_prompt_tokens(r));
  const auto handles = scheduler_->submit(std::move(tokenized), {});
  std::exception_ptr first;
  for (std::size_t i = 0; i < handles.size(); ++i) {
    try {
      results[i] = handles[i].wait();
    } catch (...) {
      if (!first) first = std::current_exception();
    }
  }
  if (first) std::rethrow_exception(first);
  return results;
}

std::vector<std::int32_t> InferenceEngine::generate(std::span<const std::int32_t> prompt,
                                                    std::size_t n,
                                                    const SamplingOptions& sampling) {
  InferenceRequest r;
  r.id = "generate";
  r.prompt.assign(prompt.begin(), prompt.end());
  r.max_new_tokens = n;
  r.sampling = sampling;
  return inference(r).output_tokens;
}

std::uint64_t InferenceEngine::scrub_now() {
  std::uint64_t found = 0;
  std::vector<const Scrubber*> done;  // workers share one: one pass each
  for (auto& w : workers_) {
    if (w->scrubber() == nullptr ||
        std::find(done.begin(), done.end(), w->scrubber()) != done.end())
      continue;
    done.push_back(w->scrubber());
    found += w->scrub_now();
  }
  return found;
}

EngineStats InferenceEngine::stats() const {
  EngineStats s;
  if (pool_) s.pool = pool_->stats();
  if (view_) {
    s.model = view_->name();
    s.model_bytes = view_->total_bytes();
  }
  std::lock_guard g(stats_mu_);
  s.attach_ms = attach_ms_;
  if (!scheduler_) return s;
  std::vector<double> sorted = scheduler_->latencies();
  if (!sorted.empty()) {
    std::sort(sorted.begin(), sorted.end());
    const auto rank = [&](double p) {  // nearest rank
      const auto r = static_cast<std::size_t>(std::ceil(p * static_cast<double>(sorted.size())));
      return sorted[std::clamp<std::size_t>(r, 1, sorted.size()) - 1];
    };
    s.latency_p50_ms = rank(0.50);
    s.latency_p99_ms = rank(0.99);
  }
  double batch_steps = 0;
  for (unsigned i = 0; i < workers_.size(); ++i) {
    WorkerReport w;
    w.index = i;
    w.figures = workers_[i]->figures();
    w.cache = workers_[i]->cache_stats();
    w.transfers = workers_[i]->transfer_stats();
    w.scrub = workers_[i]->scrub_stats();
    w.placement = to_string(workers_[i]->placement());
    w.hot_set_bytes = workers_[i]->hot_set_bytes();
    w.hot_set_target_bytes = workers_[i]->hot_set_target_bytes();
    w.requests = scheduler_->requests(i);
    w.tokens = scheduler_->tokens(i);
    w.serving = scheduler_->stats(i);
    s.requests += w.requests;
    ServingStats& t = s.serving;
    const ServingStats& v = w.serving;
    t.running += v.running;
    t.steps += v.steps;
    t.step_sequences += v.step_sequences;
    t.step_tokens += v.step_tokens;
    t.output_tokens += v.output_tokens;
    t.preemptions += v.preemptions;
    t.cancelled += v.cancelled;
    t.failed += v.failed;
    t.kv_used_bytes += v.kv_used_bytes;
    t.kv_capacity_bytes += v.kv_capacity_bytes;
    t.output_tokens_per_s += v.output_tokens_per_s;
    batch_steps += static_cast<double>(v.steps);
    s.workers.push_back(w);
  }
  s.serving.waiting = scheduler_->waiting();
  s.serving.mean_batch_sequences =
      batch_steps > 0 ? static_cast<double>(s.serving.step_sequences) / batch_steps : 0.0;
  return s;
}

std::pair<std::vector<TensorKey>, std::vector<std::uint64_t>> InferenceEngine::cache_trace() const {
  if (workers_.empty()) throw ConfigError("engine: no model attached");
  return workers_[0]->cache_trace();
}

const LlamaModel& InferenceEngine::model() const {
  if (!model_) throw ConfigError("engine: no model attached");
  return *model_;
}

Pool& InferenceEngine::pool() {
  if (!pool_) throw ConfigError("engine: no pool attached");
  return *pool_;
}

}  // namespace xlshare
