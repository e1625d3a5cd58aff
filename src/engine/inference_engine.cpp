#include "xlshare/engine/inference_engine.hpp"

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

using SteadyClock = std::chrono::steady_clock;

double ms_since(SteadyClock::time_point t0) {
  return std::chrono::duration<double, std::milli>(SteadyClock::now() - t0).count();
}

void fill_rates(InferenceResult& r, const Counters& a, const Counters& b) {
  const Figures f = figures_between(a, b);
  r.ready_rate = f.ready_rate;
  r.reuse_rate = f.reuse_rate;
  r.stall_ms = f.stall_ms;
  r.link_bytes = f.link_bytes;
  r.link_gbps = f.link_gbps;
  r.overlap = f.overlap;
  r.prefetch_accuracy = f.prefetch_accuracy;
}

// Pool size for a model of `bytes` in `tensors` tensors.
std::uint64_t pool_size_for(std::uint64_t bytes, std::size_t tensors) {
  return bytes + tensors * 4096 + (16u << 20);
}

}  // namespace

const char* to_string(FinishReason r) noexcept {
  return r == FinishReason::kStop ? "stop" : "length";
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
  workers_.clear();
  view_.reset();
  pool_ = open_reader(config_.pool_uri, true);
  if (!config_.replica_pool_uri.empty()) replica_ = open_reader(config_.replica_pool_uri, false);
  view_ = pool_->model(name);
  model_ = std::make_unique<LlamaModel>(LlamaModel::from_pool(*view_));
  WorkerOptions wo;
  wo.placement = config_.placement;
  wo.cache_bytes = config_.cache_bytes;
  wo.eviction_policy = config_.eviction_policy;
  wo.prefetch_threads = config_.prefetch_threads;
  wo.lookahead = config_.lookahead;
  wo.verify_checksums = config_.verify_checksums;
  wo.compute_threads = config_.compute_threads;
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
  {
    std::lock_guard g(stats_mu_);
    workers_ = std::move(made);
    requests_.assign(config_.workers, 0);
    tokens_.assign(config_.workers, 0);
    latencies_ms_.clear();
    latency_next_ = 0;
    attach_ms_ = ms_since(t0);
  }
  logger().info(
      "attached model '{}' of {}{}: {} worker(s), placement {}, near memory {} bytes each", name,
      config_.pool_uri,
      config_.replica_pool_uri.empty() ? "" : " (replica " + config_.replica_pool_uri + ")",
      workers_.size(), to_string(workers_.front()->placement()), config_.cache_bytes);
}

Worker& InferenceEngine::take_worker(std::unique_lock<std::mutex>& lock, unsigned& index) {
  if (workers_.empty()) throw ConfigError("engine: no model attached (call attach_model first)");
  const unsigned n = static_cast<unsigned>(workers_.size());
  const unsigned start = next_worker_.fetch_add(1) % n;
  for (unsigned i = 0; i < n; ++i) {  // a free one if there is one ...
    const unsigned w = (start + i) % n;
    std::unique_lock<std::mutex> l(workers_[w]->busy(), std::try_to_lock);
    if (l.owns_lock()) {
      lock = std::move(l);
      index = w;
      return *workers_[w];
    }
  }
  lock = std::unique_lock<std::mutex>(workers_[start]->busy());  // ... else wait for ours
  index = start;
  return *workers_[start];
}

InferenceResult InferenceEngine::inference(const InferenceRequest& request) {
  auto results = batch_inference({request});
  return std::move(results.front());
}

std::vector<InferenceResult> InferenceEngine::batch_inference(
    const std::vector<InferenceRequest>& requests) {
  std::vector<InferenceResult> results(requests.size());
  if (requests.empty()) return results;
  const auto t_call = SteadyClock::now();
  std::unique_lock<std::mutex> lock;
  unsigned index = 0;
  Worker& worker = take_worker(lock, index);
  const auto t0 = SteadyClock::now();
  const double queue_ms = std::chrono::duration<double, std::milli>(t0 - t_call).count();
  const Counters before = worker.counters();
  const LlamaConfig& c = model_->config();

  for (const auto& r : requests) {
    const std::size_t need = r.prompt.size() + r.max_new_tokens;
    if (r.prompt.empty()) throw ConfigError(fmt::format("request '{}': empty prompt", r.id));
    if (need > config_.max_context || need > c.context) {
      throw ConfigError(fmt::format("request '{}': {} tokens exceed the context of {}", r.id, need,
                                    std::min<std::size_t>(config_.max_context, c.context)));
    }
  }
  worker.check_weights();  // a weight with no verified copy left: one clear line, no answer

  struct Live {
    KvCache kv;
    std::vector<float> logits;
    std::vector<std::int32_t> next;  // the token to feed next
    std::mt19937_64 rng;
    bool done = false;
    double first_token_ms = 0;  // since the call
  };
  std::vector<Live> live;
  std::uint64_t tokens = 0;
  std::vector<Executor::Segment> segments;
  // A weight found changed while the batch ran (the Scrubber switched it to the replica's
  // copy, or failed it) may have reached these numbers: the batch runs again from the start
  // on verified weights. Switches are rare events; a few attempts always settle.
  constexpr unsigned kAttempts = 4;
  for (unsigned attempt = 1;; ++attempt) {
    const std::uint64_t epoch = worker.weights_epoch();
    results.assign(requests.size(), InferenceResult{});
    live.clear();
    live.reserve(requests.size());
    tokens = 0;
    for (const auto& r : requests) {
      const std::size_t need = r.prompt.size() + r.max_new_tokens;
      live.push_back(Live{KvCache(c, static_cast<std::uint32_t>(need)),
                          {},
                          {},
                          std::mt19937_64(r.sampling.seed),
                          false});
    }
    // Prefill every prompt together.
    segments.clear();
    for (std::size_t i = 0; i < requests.size(); ++i) {
      segments.push_back({requests[i].prompt, &live[i].kv, false, &live[i].logits});
      tokens += requests[i].prompt.size();
    }
    worker.executor().forward_batch(segments);
    // Then decode, one token per live request per step, all together.
    for (;;) {
      segments.clear();
      for (std::size_t i = 0; i < requests.size(); ++i) {
        Live& l = live[i];
        if (l.done) continue;
        if (results[i].output_tokens.size() == requests[i].max_new_tokens) {
          l.done = true;
          continue;
        }
        const std::int32_t t = sample_token(l.logits, requests[i].sampling, l.rng);
        results[i].output_tokens.push_back(t);
        if (results[i].output_tokens.size() == 1) l.first_token_ms = ms_since(t_call);
        if (requests[i].return_logits) results[i].last_logits = l.logits;
        const auto& stops = requests[i].stop_token_ids;
        if (std::find(stops.begin(), stops.end(), t) != stops.end()) {
          results[i].finish_reason = FinishReason::kStop;
          l.done = true;
          continue;
        }
        if (results[i].output_tokens.size() == requests[i].max_new_tokens) {
          l.done = true;
          continue;
        }
        l.next.assign(1, t);
        segments.push_back({l.next, &l.kv, false, &l.logits});
        ++tokens;
      }
      if (segments.empty()) break;
      worker.executor().forward_batch(segments);
    }
    if (worker.weights_epoch() == epoch) break;
    worker.check_weights();
    if (attempt == kAttempts) {
      throw PoolError(
          fmt::format("{}: the weights of model '{}' kept changing during {} attempts of a request",
                      config_.pool_uri, view_->name(), kAttempts));
    }
  }
  const Counters after = worker.counters();
  const double latency = ms_since(t0);
  for (std::size_t i = 0; i < requests.size(); ++i) {
    results[i].id = requests[i].id;
    if (requests[i].return_logits && requests[i].max_new_tokens == 0)
      results[i].last_logits = live[i].logits;
    results[i].latency_ms = latency;
    results[i].worker = index;
    results[i].queue_ms = queue_ms;
    const std::size_t n_out = results[i].output_tokens.size();
    if (n_out > 0) {
      results[i].ttft_ms = live[i].first_token_ms;
      const double end_ms = latency + queue_ms;
      results[i].tpot_ms =
          n_out > 1 ? (end_ms - live[i].first_token_ms) / static_cast<double>(n_out - 1) : 0.0;
    }
    fill_rates(results[i], before, after);
  }
  {
    std::lock_guard g(stats_mu_);
    requests_[index] += requests.size();
    tokens_[index] += tokens;
    for (std::size_t i = 0; i < requests.size(); ++i) {  // each request waited the batch
      if (latencies_ms_.size() < EngineStats::kLatencyWindow) {
        latencies_ms_.push_back(latency);
      } else {
        latencies_ms_[latency_next_] = latency;
        latency_next_ = (latency_next_ + 1) % EngineStats::kLatencyWindow;
      }
    }
  }
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
  if (!latencies_ms_.empty()) {
    std::vector<double> sorted = latencies_ms_;
    std::sort(sorted.begin(), sorted.end());
    const auto rank = [&](double p) {  // nearest rank
      const auto r = static_cast<std::size_t>(std::ceil(p * static_cast<double>(sorted.size())));
      return sorted[std::clamp<std::size_t>(r, 1, sorted.size()) - 1];
    };
    s.latency_p50_ms = rank(0.50);
    s.latency_p99_ms = rank(0.99);
  }
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
    w.requests = requests_[i];
    w.tokens = tokens_[i];
    s.requests += requests_[i];
    s.workers.push_back(w);
  }
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
