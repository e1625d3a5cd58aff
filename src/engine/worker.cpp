#include "xlshare/engine/worker.hpp"

#include <fmt/format.h>

#include "xlshare/error.hpp"
#include "xlshare/model/model_loader.hpp"

namespace xlshare {

// The executor's weights through the near tier: every acquire goes through the Prefetcher.
class Worker::CachedWeights final : public WeightProvider {
 public:
  explicit CachedWeights(Prefetcher& p) : prefetcher_(p) {}
  WeightHandle acquire(std::size_t index) override {
    return WeightHandle(prefetcher_.acquire(static_cast<TensorKey>(index)));
  }
  void begin_step(std::size_t step) override { prefetcher_.begin_step(step); }
  void end_step(std::size_t step) override { prefetcher_.end_step(step); }

 private:
  Prefetcher& prefetcher_;
};

Worker::Worker(Pool& primary, Pool* replica, std::shared_ptr<const ModelView> view, const LlamaModel& model,
               const WorkerOptions& options)
    : view_(std::move(view)) {
  if (options.cache_bytes == 0) {
    weights_ = std::make_unique<SpanWeights>(pool_weights(primary, *view_));
  } else {
    std::shared_ptr<const ModelView> replica_view = replica ? replica->model(view_->name()) : nullptr;
    std::vector<TensorSource> sources;
    std::vector<std::uint64_t> sizes;
    for (const auto& t : view_->tensors()) {
      TensorSource s{t, std::nullopt};
      if (replica_view) s.replica = replica_view->at(t.name);
      sources.push_back(s);
      sizes.push_back(t.size_bytes);
    }
    const Schedule& schedule = model.schedule();
    std::unique_ptr<EvictionPolicy> eviction =
        options.eviction_factory ? options.eviction_factory(schedule)
                                 : make_eviction_policy(options.eviction_policy, schedule.trace(), schedule.repeats());
    cache_ = std::make_unique<DeviceCache>(options.cache_bytes, sizes, std::move(eviction));
    TransferConfig tc;
    tc.threads = options.prefetch_threads;
    tc.verify_checksums = options.verify_checksums;
    transfers_ = std::make_unique<TransferEngine>(primary, replica, std::move(sources), *cache_, tc);
    std::unique_ptr<PrefetchPolicy> prefetch =
        options.prefetch_factory ? options.prefetch_factory() : std::make_unique<LookaheadPolicy>(options.lookahead);
    prefetcher_ = std::make_unique<Prefetcher>(schedule, std::move(prefetch), *transfers_, *cache_);
    weights_ = std::make_unique<CachedWeights>(*prefetcher_);
  }
  executor_ = std::make_unique<Executor>(model, *weights_, ExecutorOptions{options.compute_threads});
}

Worker::~Worker() {
  executor_.reset();
  weights_.reset();
  prefetcher_.reset();
  if (transfers_) transfers_->wait_idle();
  transfers_.reset();
  cache_.reset();
}

Figures Worker::figures() const {
  if (prefetcher_) return prefetcher_->figures();
  return Figures{};
}

WorkerCounters Worker::counters() const {
  WorkerCounters c;
  if (!cache_) return c;
  const CacheStats s = cache_->stats();
  const TransferStats t = transfers_->stats();
  c.acquires = s.acquires;
  c.ready = s.acquires_ready;
  c.reused = s.acquires_reused;
  c.stall_ns = prefetcher_->stall_ns();
  c.link_bytes = t.link_bytes;
  c.retries = t.retries;
  c.failovers = t.failovers;
  return c;
}

CacheStats Worker::cache_stats() const { return cache_ ? cache_->stats() : CacheStats{}; }
TransferStats Worker::transfer_stats() const { return transfers_ ? transfers_->stats() : TransferStats{}; }

}  // namespace xlshare
