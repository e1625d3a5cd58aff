#include "xlshare/engine/worker.hpp"

#include <fmt/format.h>

#include <algorithm>

#include "xlshare/error.hpp"
#include "xlshare/memory/checksum.hpp"
#include "xlshare/model/dtype_convert.hpp"
#include "xlshare/model/model_loader.hpp"

namespace xlshare {

// The executor's weights through the near tier: every acquire goes through the Prefetcher.
// Large matrices are split into pieces of whole rows (one cache key each), so that no
// single tensor has to fit in a small cache; the token embedding is read piece by piece,
// only the pieces holding the prompt's rows.
class Worker::CachedWeights final : public WeightProvider {
 public:
  CachedWeights(Prefetcher& p, std::vector<std::vector<TensorKey>> keys, std::vector<std::size_t> rows_per_piece)
      : prefetcher_(p), keys_(std::move(keys)), rows_per_piece_(std::move(rows_per_piece)) {}
  WeightHandle acquire(std::size_t index) override {
    if (keys_.at(index).size() != 1) {
      throw ConfigError(fmt::format("tensor {} is held in {} pieces; acquire it piece by piece", index, keys_[index].size()));
    }
    return WeightHandle(prefetcher_.acquire(keys_[index][0]));
  }
  std::size_t piece_count(std::size_t index) const override { return keys_.at(index).size(); }
  WeightHandle acquire_piece(std::size_t index, std::size_t piece) override {
    return WeightHandle(prefetcher_.acquire(keys_.at(index).at(piece)));
  }
  void read_rows(std::size_t index, const TensorDesc& desc, std::span<const std::uint32_t> rows, float* dst) override {
    const std::size_t cols = desc.shape[0];
    const std::size_t rb = row_bytes(desc.dtype, cols);
    const std::size_t per = rows_per_piece_.at(index);
    // Each piece that holds some of the rows is acquired once.
    std::vector<std::size_t>& order = order_;  // reused: no allocation per token
    order.resize(rows.size());
    for (std::size_t i = 0; i < order.size(); ++i) order[i] = i;
    std::sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return rows[a] < rows[b]; });
    DeviceCache::Lease lease;
    std::size_t held = SIZE_MAX;
    for (std::size_t i : order) {
      const std::size_t piece = rows[i] / per;
      if (piece != held) {
        lease = prefetcher_.acquire(keys_[index].at(piece));
        held = piece;
      }
      to_f32(desc.dtype, lease.bytes().data() + (rows[i] - piece * per) * rb, dst + i * cols, cols);
    }
  }
  void begin_step(std::size_t step) override { prefetcher_.begin_step(step); }
  void end_step(std::size_t step) override { prefetcher_.end_step(step); }

 private:
  Prefetcher& prefetcher_;
  std::vector<std::vector<TensorKey>> keys_;
  std::vector<std::size_t> rows_per_piece_;
  std::vector<std::size_t> order_;
};

// The executor's weights straight from the pools' mappings, each tensor from whichever copy
// last verified: compute reads the copy at acquire, so the Scrubber can switch it between
// two acquires without a lock.
class Worker::MappedWeights final : public WeightProvider {
 public:
  explicit MappedWeights(const VerifiedMapping& mapping) : mapping_(mapping) {}
  WeightHandle acquire(std::size_t index) override {
    std::span<const std::byte> bytes;
    if (!mapping_.bytes(index, bytes)) mapping_.throw_failed(index);
    return WeightHandle(bytes);
  }

 private:
  const VerifiedMapping& mapping_;
};

namespace {

// The bytes of rows [r0, r1) of `t` as a TensorInfo of their own, with their checksum.
TensorInfo piece_of(const TensorInfo& t, std::size_t r0, std::size_t r1, std::size_t row_bytes_, std::size_t p,
                    std::uint64_t checksum) {
  TensorInfo piece = t;
  piece.name = fmt::format("{}#{}", t.name, p);
  piece.offset_bytes = t.offset_bytes + r0 * row_bytes_;
  piece.size_bytes = (r1 - r0) * row_bytes_;
  piece.shape[1] = r1 - r0;
  piece.checksum = checksum;
  return piece;
}

}  // namespace

Worker::Worker(Pool& primary, Pool* replica, std::shared_ptr<const ModelView> view, const LlamaModel& model,
               const WorkerOptions& options, const Worker* share)
    : view_(std::move(view)) {
  if (options.cache_bytes == 0 && share != nullptr && share->mapping_) {
    mapping_ = share->mapping_;
    scrubber_ = share->scrubber_;
    replica_view_ = share->replica_view_;
  } else if (replica != nullptr) {
    // A replica is trusted only as a copy of this very model.
    replica_view_ = replica->model(view_->name());
    check_same_model(primary, *view_, *replica, *replica_view_);
  }
  if (options.cache_bytes == 0) {
    if (!mapping_) {
      mapping_ = std::make_shared<VerifiedMapping>(primary, view_, replica_view_ ? replica : nullptr, replica_view_);
      scrubber_ = std::make_shared<Scrubber>(mapping_, options.scrub_bytes_per_s);
    }
    weights_ = std::make_unique<MappedWeights>(*mapping_);
  } else {
    const ModelView* replica_view = replica_view_.get();
    const auto tensors = view_->tensors();
    const bool tied = model.config().tie_embeddings;
    const std::uint64_t max_piece = std::max<std::uint64_t>(options.cache_bytes / 4, 64 * 1024);
    std::vector<TensorSource> sources;
    std::vector<std::uint64_t> sizes;
    std::vector<std::vector<TensorKey>> keys(tensors.size());
    std::vector<std::size_t> rows_per_piece(tensors.size(), 1);
    for (std::size_t i = 0; i < tensors.size(); ++i) {
      const TensorInfo& t = tensors[i];
      const TensorInfo* rt = replica_view ? &replica_view->at(t.name) : nullptr;
      const bool embedding = i == model.token_embd();
      const std::uint64_t limit = embedding && !tied ? std::min<std::uint64_t>(max_piece, 1u << 20) : max_piece;
      std::size_t pieces = 1;
      if (t.n_dims == 2 && t.size_bytes > limit) pieces = static_cast<std::size_t>((t.size_bytes + limit - 1) / limit);
      const std::size_t rows = t.n_dims == 2 ? t.shape[1] : 1;
      pieces = std::min(pieces, rows);
      if (pieces == 1) {
        rows_per_piece[i] = rows;
        keys[i].push_back(static_cast<TensorKey>(sources.size()));
        sources.push_back({t, rt ? std::optional<TensorInfo>(*rt) : std::nullopt});
        sizes.push_back(t.size_bytes);
        continue;
      }
      // Checksums of the pieces, computed from the pool while checking the whole tensor
      // against its catalog checksum: one pass over the bytes. When the primary's copy
      // fails and the replica's (the same model, checked above) matches, the pieces'
      // checksums come from the replica: at run time only the primary's damaged pieces
      // fail their checksum and are read from the replica, the others from the primary.
      const std::size_t per = (rows + pieces - 1) / pieces;
      const std::size_t rb = t.size_bytes / rows;
      rows_per_piece[i] = per;
      std::vector<std::uint64_t> sums;
      const auto piece_sums = [&](std::span<const std::byte> bytes) {
        sums.clear();
        if (bytes.size() != t.size_bytes) return false;
        Checksum64 whole;
        for (std::size_t p = 0; p * per < rows; ++p) {
          const std::size_t r0 = p * per, r1 = std::min(rows, r0 + per);
          const auto piece_bytes = bytes.subspan(r0 * rb, (r1 - r0) * rb);
          whole.update(piece_bytes);
          sums.push_back(checksum64(piece_bytes));
        }
        return whole.digest() == t.checksum;
      };
      if (!piece_sums(primary.view(t)) && !(rt && piece_sums(replica->view(*rt)))) {
        throw PoolError(fmt::format("{}: tensor '{}' of model '{}' does not match its checksum{}", primary.uri(), t.name,
                                    view_->name(),
                                    rt ? fmt::format(", nor does the replica's copy in {}", replica->uri())
                                       : std::string(" (no replica configured)")));
      }
      for (std::size_t p = 0; p * per < rows; ++p) {
        const std::size_t r0 = p * per, r1 = std::min(rows, r0 + per);
        keys[i].push_back(static_cast<TensorKey>(sources.size()));
        TensorSource src{piece_of(t, r0, r1, rb, p, sums[p]), std::nullopt};
        if (rt) src.replica = piece_of(*rt, r0, r1, rb, p, sums[p]);
        sources.push_back(src);
        sizes.push_back((r1 - r0) * rb);
      }
    }
    // The model's schedule over piece keys. The embedding step asks for nothing ahead: the
    // lookup reads only the pieces that hold the prompt's rows, on demand.
    std::vector<ScheduleStep> steps;
    for (const auto& step : model.schedule().steps()) {
      ScheduleStep s{step.name, {}};
      for (TensorKey index : step.keys) {
        if (index == model.token_embd() && step.name == "embedding") continue;
        s.keys.insert(s.keys.end(), keys[index].begin(), keys[index].end());
      }
      steps.push_back(std::move(s));
    }
    schedule_ = std::make_unique<Schedule>(std::move(steps), model.schedule().repeats());
    std::unique_ptr<EvictionPolicy> eviction =
        options.eviction_factory ? options.eviction_factory(*schedule_)
                                 : make_eviction_policy(options.eviction_policy, schedule_->trace(), schedule_->repeats());
    cache_ = std::make_unique<DeviceCache>(options.cache_bytes, sizes, std::move(eviction));
    TransferConfig tc;
    tc.threads = options.prefetch_threads;
    tc.verify_checksums = options.verify_checksums;
    transfers_ = std::make_unique<TransferEngine>(primary, replica, std::move(sources), *cache_, tc);
    std::unique_ptr<PrefetchPolicy> prefetch =
        options.prefetch_factory ? options.prefetch_factory() : std::make_unique<LookaheadPolicy>(options.lookahead);
    // The Executor holds one weight (piece) at a time.
    prefetcher_ = std::make_unique<Prefetcher>(*schedule_, std::move(prefetch), *transfers_, *cache_,
                                               StepResidency::kOneTensorAtATime);
    weights_ = std::make_unique<CachedWeights>(*prefetcher_, std::move(keys), std::move(rows_per_piece));
  }
  executor_ = std::make_unique<Executor>(model, *weights_, ExecutorOptions{options.compute_threads});
}

Worker::~Worker() {
  executor_.reset();
  weights_.reset();
  scrubber_.reset();
  mapping_.reset();
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
  c.busy_ns = t.busy_ns;
  c.bytes_prefetched = s.bytes_prefetched;
  c.bytes_prefetched_used = s.bytes_prefetched_used;
  return c;
}

std::pair<std::vector<TensorKey>, std::vector<std::uint64_t>> Worker::cache_trace() const {
  if (!cache_) return {};
  std::vector<std::uint64_t> sizes(cache_->key_count());
  for (TensorKey k = 0; k < sizes.size(); ++k) sizes[k] = cache_->key_bytes(k);
  return {schedule_->trace(), sizes};
}

CacheStats Worker::cache_stats() const { return cache_ ? cache_->stats() : CacheStats{}; }
TransferStats Worker::transfer_stats() const { return transfers_ ? transfers_->stats() : TransferStats{}; }

std::uint64_t Worker::scrub_now() { return scrubber_ ? scrubber_->scrub_now() : 0; }
ScrubStats Worker::scrub_stats() const noexcept { return scrubber_ ? scrubber_->stats() : ScrubStats{}; }

}  // namespace xlshare
