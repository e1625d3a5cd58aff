#include "xlshare/engine/worker.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <optional>
#include <thread>

#include "engine/in_place_weights.hpp"
#include "xlshare/error.hpp"
#include "xlshare/memory/checksum.hpp"
#include "xlshare/memory/cxl_emulator.hpp"
#include "xlshare/memory/link_pacer.hpp"
#include "xlshare/model/dtype_convert.hpp"
#include "xlshare/model/model_loader.hpp"

namespace xlshare {

// The executor's weights through the near tier: every acquire goes through the Prefetcher.
// Large matrices are split into pieces of whole rows (one cache key each), so that no
// single tensor has to fit in a small cache; the token embedding is read piece by piece,
// only the pieces holding the prompt's rows.
class Worker::CachedWeights final : public WeightProvider {
 public:
  CachedWeights(Prefetcher& p, std::vector<std::vector<TensorKey>> keys,
                std::vector<std::size_t> rows_per_piece)
      : prefetcher_(p), keys_(std::move(keys)), rows_per_piece_(std::move(rows_per_piece)) {}
  WeightHandle acquire(std::size_t index) override {
    if (keys_.at(index).size() != 1) {
      throw ConfigError(fmt::format("tensor {} is held in {} pieces; acquire it piece by piece",
                                    index, keys_[index].size()));
    }
    return hold(prefetcher_.acquire(keys_[index][0]));
  }
  std::size_t piece_count(std::size_t index) const override { return keys_.at(index).size(); }
  WeightHandle acquire_piece(std::size_t index, std::size_t piece) override {
    return hold(prefetcher_.acquire(keys_.at(index).at(piece)));
  }
  void read_rows(std::size_t index, const TensorDesc& desc, std::span<const std::uint32_t> rows,
                 float* dst) override {
    const std::size_t cols = desc.shape[0];
    const std::size_t rb = row_bytes(desc.dtype, cols);
    const std::size_t per = rows_per_piece_.at(index);
    // Each piece that holds some of the rows is acquired once.
    std::vector<std::size_t>& order = order_;  // reused: no allocation per token
    order.resize(rows.size());
    for (std::size_t i = 0; i < order.size(); ++i) order[i] = i;
    std::sort(order.begin(), order.end(),
              [&](std::size_t a, std::size_t b) { return rows[a] < rows[b]; });
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
  static WeightHandle hold(DeviceCache::Lease lease) noexcept {
    const auto bytes = lease.bytes();
    return WeightHandle(bytes, std::move(lease));
  }

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

const char* to_string(Placement placement) noexcept {
  return placement == Placement::kInPlace ? "in-place" : "copy";
}

Placement default_placement(const MemoryBackend& backend) noexcept {
  return backend.is_host() && backend.maps_data() ? Placement::kInPlace : Placement::kCopy;
}

Placement parse_placement(std::string_view name) {
  if (name == "copy") return Placement::kCopy;
  if (name == "in-place" || name == "in_place") return Placement::kInPlace;
  throw ConfigError(fmt::format("unknown placement '{}'; use in-place or copy", name));
}

namespace {

// The bytes of rows [r0, r1) of `t` as a TensorInfo of their own, with their tiles' checksums
// (r0 is a multiple of `tile_rows`). The whole piece's checksum is not known (0): a transfer
// checks it tile by tile.
TensorInfo piece_of(const TensorInfo& t, std::size_t r0, std::size_t r1, std::size_t row_bytes_,
                    std::size_t p, std::size_t tile_rows) {
  TensorInfo piece = t;
  piece.name = fmt::format("{}#{}", t.name, p);
  piece.offset_bytes = t.offset_bytes + r0 * row_bytes_;
  piece.size_bytes = (r1 - r0) * row_bytes_;
  piece.shape[1] = r1 - r0;
  for (std::uint32_t d = 2; d < piece.n_dims; ++d) piece.shape[d] = 1;
  piece.checksum = 0;
  piece.tile_bytes = std::min<std::uint64_t>(t.tile_bytes, piece.size_bytes);
  const std::size_t first = r0 / tile_rows, count = (r1 - r0 + tile_rows - 1) / tile_rows;
  piece.tile_first = t.tile_first + first;
  piece.tile_count = count;
  return piece;
}

}  // namespace

Worker::Worker(Pool& primary, Pool* replica, std::shared_ptr<const ModelView> view,
               const LlamaModel& model, const WorkerOptions& options, const Worker* share)
    : view_(std::move(view)) {
  // A user's PrefetchPolicy or EvictionPolicy steers the copy path's near cache: given one,
  // the default is copy, and asking for in place as well is a contradiction, not ignored.
  const bool user_policy = options.prefetch_factory || options.eviction_factory;
  const bool in_place =
      options.placement.value_or(user_policy
                                     ? Placement::kCopy
                                     : default_placement(primary.backend())) == Placement::kInPlace;
  if (in_place && user_policy) {
    throw ConfigError(
        "a PrefetchPolicy or EvictionPolicy drives the copy placement's near cache; in place, "
        "reservations run "
        "`lookahead` steps ahead and the HotSet is fixed: use Placement::kCopy with a policy of "
        "your own");
  }
  for (Pool* p : {&primary, replica}) {
    if ((in_place || options.cache_bytes == 0) && p != nullptr && !p->backend().maps_data()) {
      throw ConfigError(fmt::format(
          "pool {} is read over the network and has no local mapping: use the copy placement "
          "with a near cache (cache bytes > 0)",
          p->uri()));
    }
  }
  if ((options.cache_bytes == 0 || in_place) && share != nullptr && share->mapping_) {
    mapping_ = share->mapping_;
    scrubber_ = share->scrubber_;
    replica_view_ = share->replica_view_;
  } else if (replica != nullptr) {
    // A replica is trusted only as a copy of this very model.
    replica_view_ = replica->model(view_->name());
    check_same_model(primary, *view_, *replica, *replica_view_);
  }
  if (in_place) {
    if (!mapping_) {
      // Attach reads only the catalog: each tensor is verified on its first use.
      mapping_ =
          std::make_shared<VerifiedMapping>(primary, view_, replica_view_ ? replica : nullptr,
                                            replica_view_, VerifiedMapping::Verify::kOnFirstUse);
      scrubber_ = std::make_shared<Scrubber>(mapping_, options.scrub_bytes_per_s);
    }
    auto* primary_link = dynamic_cast<CxlEmulator*>(&primary.backend());
    auto* replica_link =
        replica != nullptr ? dynamic_cast<CxlEmulator*>(&replica->backend()) : nullptr;
    auto w = std::make_unique<InPlaceWeights>(*mapping_, model, primary_link, replica_link,
                                              options.cache_bytes, options.lookahead.value_or(4));
    in_place_ = w.get();
    weights_ = std::move(w);
  } else if (options.cache_bytes == 0) {
    if (!mapping_) {
      mapping_ = std::make_shared<VerifiedMapping>(
          primary, view_, replica_view_ ? replica : nullptr, replica_view_);
      scrubber_ = std::make_shared<Scrubber>(mapping_, options.scrub_bytes_per_s);
    }
    weights_ = std::make_unique<MappedWeights>(*mapping_);
  } else {
    const ModelView* replica_view = replica_view_.get();
    const auto tensors = view_->tensors();
    const bool tied = model.config().tie_embeddings;
    // Pieces of at most 1/8 of the cache, so that the part of it the fixed set leaves for
    // streaming holds several at once.
    const std::uint64_t max_piece = std::max<std::uint64_t>(options.cache_bytes / 8, 64 * 1024);
    std::vector<TensorSource> sources;
    std::vector<std::uint64_t> sizes;
    std::vector<std::vector<TensorKey>> keys(tensors.size());
    std::vector<std::size_t> rows_per_piece(tensors.size(), 1);
    for (std::size_t i = 0; i < tensors.size(); ++i) {
      const TensorInfo& t = tensors[i];
      const TensorInfo* rt = replica_view ? &replica_view->at(t.name) : nullptr;
      const bool embedding = i == model.token_embd();
      const std::uint64_t limit =
          embedding && !tied ? std::min<std::uint64_t>(max_piece, 1u << 20) : max_piece;
      std::size_t pieces = 1;
      if (t.n_dims == 2 && t.size_bytes > limit)
        pieces = static_cast<std::size_t>((t.size_bytes + limit - 1) / limit);
      const std::size_t rows = t.n_dims == 2 ? t.shape[1] : 1;
      pieces = std::min(pieces, rows);
      if (pieces == 1) {
        rows_per_piece[i] = rows;
        keys[i].push_back(static_cast<TensorKey>(sources.size()));
        sources.push_back({t, rt ? std::optional<TensorInfo>(*rt) : std::nullopt});
        sizes.push_back(t.size_bytes);
        continue;
      }
      // Pieces are whole tiles of the TensorTiling, so their checksums are the catalog's
      // tile checksums: attach hashes nothing. A damaged piece fails its tile checks in the
      // transfer and is read from the replica (the same model, checked above); the others
      // stay on the primary.
      const std::size_t rb = static_cast<std::size_t>(t.row_bytes());
      const std::size_t tile_rows =
          std::max<std::size_t>(1, static_cast<std::size_t>(t.tile_bytes / rb));
      const std::size_t per =
          std::max(tile_rows, (rows + pieces - 1) / pieces / tile_rows * tile_rows);
      rows_per_piece[i] = per;
      for (std::size_t p = 0; p * per < rows; ++p) {
        const std::size_t r0 = p * per, r1 = std::min(rows, r0 + per);
        keys[i].push_back(static_cast<TensorKey>(sources.size()));
        TensorSource src{piece_of(t, r0, r1, rb, p, tile_rows), std::nullopt};
        if (rt) src.replica = piece_of(*rt, r0, r1, rb, p, tile_rows);
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
    std::unique_ptr<EvictionPolicy> eviction;
    if (options.eviction_factory) {
      std::vector<std::string> key_tensors;
      key_tensors.reserve(sources.size());
      for (const auto& src : sources) key_tensors.push_back(src.primary.name);
      eviction =
          options.eviction_factory(CacheKeys{*schedule_, sizes, key_tensors, options.cache_bytes});
    } else {
      // The default policy for a repeating schedule keeps a fixed set, the rest streams.
      std::vector<TensorKey> keep;
      if (options.eviction_policy == "fixed" && schedule_->repeats()) {
        keep = schedule_->fixed_set_for_cache(sizes, options.cache_bytes);
      }
      eviction = make_eviction_policy(options.eviction_policy, schedule_->trace(),
                                      schedule_->repeats(), keep);
    }
    cache_ = std::make_unique<DeviceCache>(options.cache_bytes, sizes, std::move(eviction));
    TransferConfig tc;
    tc.threads = options.prefetch_threads;
    tc.verify_checksums = options.verify_checksums;
    transfers_ =
        std::make_unique<TransferEngine>(primary, replica, std::move(sources), *cache_, tc);
    std::unique_ptr<PrefetchPolicy> prefetch =
        options.prefetch_factory ? options.prefetch_factory()
                                 : std::make_unique<LookaheadPolicy>(options.lookahead.value_or(2));
    // The Executor holds one weight (piece) at a time.
    prefetcher_ = std::make_unique<Prefetcher>(*schedule_, std::move(prefetch), *transfers_,
                                               *cache_, StepResidency::kOneTensorAtATime);
    weights_ =
        std::make_unique<CachedWeights>(*prefetcher_, std::move(keys), std::move(rows_per_piece));
  }
  // Copy: idle compute threads sleep at once, so the transfer threads get the cores (the
  // copies are the bottleneck there); in place nothing else needs them between steps.
  ExecutorOptions eo;
  eo.threads = options.compute_threads;
  eo.quantized_activations = options.quantized_activations;
  eo.attention = options.attention;
  eo.spin_us = options.spin_us.value_or(in_place || options.cache_bytes == 0 ? 200 : 0);
  executor_ = std::make_unique<Executor>(model, *weights_, eo);
}

Worker::~Worker() {
  executor_.reset();
  weights_.reset();
  in_place_ = nullptr;
  scrubber_.reset();
  mapping_.reset();
  prefetcher_.reset();
  if (transfers_) transfers_->wait_idle();
  transfers_.reset();
  cache_.reset();
}

Figures Worker::figures() const { return figures_between({}, counters()); }

std::uint64_t Worker::hot_set_bytes() const noexcept {
  return in_place_ != nullptr ? in_place_->hot_bytes() : 0;
}
std::uint64_t Worker::hot_set_target_bytes() const noexcept {
  return in_place_ != nullptr ? in_place_->hot_target_bytes() : 0;
}

Counters Worker::counters() const {
  if (in_place_ != nullptr) return in_place_->counters();
  return prefetcher_ ? prefetcher_->counters() : Counters{};
}

std::pair<std::vector<TensorKey>, std::vector<std::uint64_t>> Worker::cache_trace() const {
  if (!cache_) return {};
  std::vector<std::uint64_t> sizes(cache_->key_count());
  for (TensorKey k = 0; k < sizes.size(); ++k) sizes[k] = cache_->key_bytes(k);
  return {schedule_->trace(), sizes};
}

CacheStats Worker::cache_stats() const { return cache_ ? cache_->stats() : CacheStats{}; }
TransferStats Worker::transfer_stats() const {
  return transfers_ ? transfers_->stats() : TransferStats{};
}

std::uint64_t Worker::scrub_now() { return scrubber_ ? scrubber_->scrub_now() : 0; }
ScrubStats Worker::scrub_stats() const noexcept {
  return scrubber_ ? scrubber_->stats() : ScrubStats{};
}

}  // namespace xlshare
