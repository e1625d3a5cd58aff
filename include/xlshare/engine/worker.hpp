// Worker: one emulated GPU — a DeviceCache (its HBM), a TransferEngine (its copy engine),
// a Prefetcher and an Executor, serving one model from a pool.
//
// Placement::kCopy (engine/placement.hpp): with `cache_bytes == 0` the worker has no near
// tier: it computes straight from the pool's read-only mapping with no link emulation ("every
// weight resident"), the reference the other paths must equal.
// Placement::kInPlace: compute reads the pool's mapping too, but every piece reserves its
// bytes on the pool's shared link first (LinkPacer), `lookahead` steps ahead, and
// `cache_bytes` is the HotSet: pieces copied once at attach into local memory, never evicted.
// Those weights are verified when the worker is built and re-verified in the background by a
// Scrubber (engine/scrubber.hpp); the cached path verifies every piece on arrival.
//
// A replica pool must hold the same model as the primary (same tensor table, dtypes, shapes
// and checksums): the constructor checks, and refuses anything else.
#pragma once

#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>

#include "xlshare/cache/device_cache.hpp"
#include "xlshare/cache/transfer_engine.hpp"
#include "xlshare/engine/placement.hpp"
#include "xlshare/engine/scrubber.hpp"
#include "xlshare/figures.hpp"
#include "xlshare/memory/pool.hpp"
#include "xlshare/model/executor.hpp"
#include "xlshare/prefetch/prefetcher.hpp"

namespace xlshare {

/// What an EvictionPolicy is made for: the keys of one worker's near cache. Large matrices
/// are cut into pieces of whole rows, one key each; `key_tensors[k]` names what key k
/// holds ("blk.3.ffn_up.weight", or "output.weight#2" for a piece), `key_bytes[k]` its
/// size, and `schedule` orders the keys as compute acquires them. Valid during the call.
struct CacheKeys {
  const Schedule& schedule;
  std::span<const std::uint64_t> key_bytes;
  std::span<const std::string> key_tensors;
  std::uint64_t cache_bytes;  ///< the cache's budget
};

using PrefetchPolicyFactory = std::function<std::unique_ptr<PrefetchPolicy>()>;
using EvictionPolicyFactory = std::function<std::unique_ptr<EvictionPolicy>(const CacheKeys&)>;

struct WorkerOptions {
  /// Copy through a near cache or compute from the pool in place. Unset:
  /// default_placement() of the primary pool's backend (in place on every host backend),
  /// or copy when prefetch_factory or eviction_factory is set (they steer the copy path's
  /// cache; with kInPlace they are a ConfigError).
  std::optional<Placement> placement;
  /// Near memory per worker in bytes. kCopy: the DeviceCache (0: no cache, compute from the
  /// pool mapping without link emulation). kInPlace: the HotSet's budget (0: none).
  std::uint64_t cache_bytes = 0;
  /// "fixed" (default), "lru", "fifo" or "schedule"; ignored when eviction_factory is set.
  std::string eviction_policy = "fixed";
  /// Copy threads of the TransferEngine. Default 2.
  unsigned prefetch_threads = 2;
  /// LookaheadPolicy's k (kCopy; default 2), or the steps that need the link whose time is
  /// reserved ahead (kInPlace; default 4: a reservation costs no memory). The copy policy's
  /// k is ignored when prefetch_factory is set.
  std::optional<std::size_t> lookahead;
  /// Verify every tensor's checksum on arrival. Default true.
  bool verify_checksums = true;
  /// Executor threads. Default 1.
  unsigned compute_threads = 1;
  /// ExecutorOptions::quantized_activations. Default false.
  bool quantized_activations = false;
  /// ExecutorOptions::attention. Default kF32.
  AttentionNumerics attention = AttentionNumerics::kF32;
  /// How long idle compute threads spin before they sleep (ExecutorOptions::spin_us). Unset:
  /// 0 with a near cache (copy: the transfer threads need the cores), else 200.
  std::optional<std::uint32_t> spin_us;
  /// Without a cache: bytes per second the background Scrubber re-verifies of the mapped
  /// weights (0: no background scrub; they are still verified once at construction).
  /// Default 256 MiB/s.
  std::uint64_t scrub_bytes_per_s = Scrubber::kDefaultBytesPerSecond;
  PrefetchPolicyFactory prefetch_factory;
  EvictionPolicyFactory eviction_factory;
};

class Worker {
 public:
  /// `share`: a worker built on the same pools and model whose verified mapping and
  /// Scrubber this one uses too (without a cache only; they are verified once per process).
  /// @throws ConfigError when a step of the model cannot fit in the cache; PoolError when a
  /// weight has no verified copy or the replica holds a different model.
  Worker(Pool& primary, Pool* replica, std::shared_ptr<const ModelView> view,
         const LlamaModel& model, const WorkerOptions& options, const Worker* share = nullptr);
  ~Worker();
  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;

  Executor& executor() noexcept { return *executor_; }
  bool has_cache() const noexcept { return cache_ != nullptr; }
  Placement placement() const noexcept {
    return in_place_ != nullptr ? Placement::kInPlace : Placement::kCopy;
  }
  /// kInPlace: bytes of the HotSet copied so far (local copies, built in the background
  /// once the first token is out), and the bytes it will hold when complete.
  std::uint64_t hot_set_bytes() const noexcept;
  std::uint64_t hot_set_target_bytes() const noexcept;

  Figures figures() const;
  Counters counters() const;
  CacheStats cache_stats() const;
  /// One pass of the cache keys compute acquires, and each key's bytes (empty without a
  /// cache): for simulating policies on the real trace.
  std::pair<std::vector<TensorKey>, std::vector<std::uint64_t>> cache_trace() const;
  TransferStats transfer_stats() const;

  /// Without a cache: the Scrubber of the mapped weights (shared with the workers built
  /// with `share`); null with a cache.
  Scrubber* scrubber() const noexcept { return scrubber_.get(); }
  /// Runs one whole scrub pass now (nothing to do with a cache: pieces are verified on
  /// arrival). Returns the mismatches found.
  std::uint64_t scrub_now();
  ScrubStats scrub_stats() const noexcept;
  /// Changes whenever a weight this worker computes from switches copy or fails: a request
  /// that saw it change is run again.
  std::uint64_t weights_epoch() const noexcept { return mapping_ ? mapping_->epoch() : 0; }
  /// @throws PoolError, naming the pool, the model and the tensor, once a weight has no
  /// verified copy left: the worker answers nothing more.
  void check_weights() const {
    if (mapping_ && mapping_->failed()) mapping_->throw_failed();
  }

 private:
  class CachedWeights;
  class MappedWeights;
  class InPlaceWeights;
  InPlaceWeights* in_place_ = nullptr;  // weights_, when placement is kInPlace
  std::shared_ptr<const ModelView> view_, replica_view_;
  std::shared_ptr<VerifiedMapping> mapping_;  // without a cache
  std::shared_ptr<Scrubber> scrubber_;        // without a cache
  std::unique_ptr<Schedule> schedule_;        // over cache keys (tensor pieces)
  std::unique_ptr<DeviceCache> cache_;
  std::unique_ptr<TransferEngine> transfers_;
  std::unique_ptr<Prefetcher> prefetcher_;
  std::unique_ptr<WeightProvider> weights_;
  std::unique_ptr<Executor> executor_;
};

}  // namespace xlshare
