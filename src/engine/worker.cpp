#include "xlshare/engine/worker.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <optional>
#include <thread>

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
    return WeightHandle(prefetcher_.acquire(keys_[index][0]));
  }
  std::size_t piece_count(std::size_t index) const override { return keys_.at(index).size(); }
  WeightHandle acquire_piece(std::size_t index, std::size_t piece) override {
    return WeightHandle(prefetcher_.acquire(keys_.at(index).at(piece)));
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

// In place (Placement::kInPlace): compute reads the pools' mappings, each tensor from the
// copy that verified, but only after its bytes were reserved on the shared link and the
// reservation completed. begin_step() reserves the next `lookahead` steps' tensors (a
// reservation, no copy), so with enough lookahead a fast link costs no stall. A verifier
// thread verifies tensors in schedule order ahead of compute (first use per process); an
// acquire that gets there first verifies the tensor itself. The HotSet (local copies made
// at attach) needs no link time. The token embedding reserves only the rows it reads.
class Worker::InPlaceWeights final : public WeightProvider {
 public:
  InPlaceWeights(VerifiedMapping& mapping, const LlamaModel& model, CxlEmulator* primary_link,
                 CxlEmulator* replica_link, std::uint64_t hot_budget_bytes, std::size_t lookahead)
      : mapping_(mapping),
        model_(model),
        emulator_(primary_link),
        lookahead_(lookahead),
        tensors_(mapping.size()) {
    if (primary_link)
      pacer_.emplace(primary_link->shared_link(), primary_link->link_params(),
                     primary_link->clock());
    if (replica_link)
      replica_pacer_.emplace(replica_link->shared_link(), replica_link->link_params(),
                             replica_link->clock());
    const auto& steps = model.schedule().steps();
    for (std::size_t s = 0; s < steps.size(); ++s) {
      std::vector<std::size_t> keys;
      for (TensorKey k : steps[s].keys) {
        if (k == model.token_embd() && steps[s].name == "embedding") continue;  // rows only
        keys.push_back(k);
      }
      steps_.push_back(std::move(keys));
    }
    plan_hot_set(hot_budget_bytes);
    // First-use verification runs ahead of compute, in schedule order; then the HotSet is
    // copied, off the first token's critical path.
    verifier_ = std::thread([this] { verify_ahead(); });
    // Mapping the pages is kernel work, hashing is memory work: a second thread maps them
    // ahead of the verifier, so the two overlap instead of adding up.
    prefaulter_ = std::thread([this] { prefault_ahead(); });
  }
  ~InPlaceWeights() override {
    {
      std::lock_guard lock(mu_);
      stop_.store(true, std::memory_order_release);
    }
    wake_.notify_all();
    if (verifier_.joinable()) verifier_.join();
    if (prefaulter_.joinable()) prefaulter_.join();
  }

  WeightHandle acquire(std::size_t index) override {
    acquires_.fetch_add(1, std::memory_order_relaxed);
    Tensor& t = tensors_.at(index);
    if (t.hot_ready.load(std::memory_order_acquire)) {
      ready_.fetch_add(1, std::memory_order_relaxed);
      hot_acquires_.fetch_add(1, std::memory_order_relaxed);
      return WeightHandle(std::span<const std::byte>(t.hot.data(), t.hot.size_bytes()));
    }
    mapping_.ensure_verified(index);
    check_readable(index);
    const std::uint64_t complete =
        t.reserved ? t.complete_ns : reserve(index, mapping_.view().tensors()[index].size_bytes);
    t.reserved = false;
    wait(complete);
    std::span<const std::byte> bytes;
    if (!mapping_.bytes(index, bytes)) mapping_.throw_failed(index);
    return WeightHandle(bytes);
  }

  void read_rows(std::size_t index, const TensorDesc& desc, std::span<const std::uint32_t> rows,
                 float* dst) override {
    const std::size_t cols = desc.shape[0];
    const std::size_t rb = row_bytes(desc.dtype, cols);
    Tensor& t = tensors_.at(index);
    std::span<const std::byte> bytes;
    acquires_.fetch_add(1, std::memory_order_relaxed);
    if (t.hot_ready.load(std::memory_order_acquire)) {
      ready_.fetch_add(1, std::memory_order_relaxed);
      hot_acquires_.fetch_add(1, std::memory_order_relaxed);
      bytes = std::span<const std::byte>(t.hot.data(), t.hot.size_bytes());
    } else {
      for (std::uint32_t row : rows)
        mapping_.ensure_verified(index, std::uint64_t{row} * rb, rb);  // their tiles only
      check_readable(index);
      wait(reserve(index, rows.size() * rb, /*urgent=*/true));  // only the rows cross the link
      if (!mapping_.bytes(index, bytes)) mapping_.throw_failed(index);
    }
    for (std::size_t i = 0; i < rows.size(); ++i)
      to_f32(desc.dtype, bytes.data() + rows[i] * rb, dst + i * cols, cols);
  }

  // The first pass is over (the first token's forward): the HotSet may be copied now.
  void end_step(std::size_t step) override {
    if (step + 1 != steps_.size() || first_pass_done_) return;
    {
      std::lock_guard lock(mu_);
      first_pass_done_ = true;
    }
    wake_.notify_all();
  }

  // Reserves this step and the next `lookahead` steps that need the link: steps served
  // wholly by the HotSet (or reading only embedding rows) do not count, so the link keeps
  // working while compute runs on local bytes (the output head, say).
  void begin_step(std::size_t step) override {
    if (!pacer_ || steps_.empty()) return;
    std::size_t ahead = 0;
    for (std::size_t k = 0; k < steps_.size() && ahead <= lookahead_; ++k) {
      bool needs_link = false;
      for (std::size_t index : steps_[(step + k) % steps_.size()]) {
        Tensor& t = tensors_[index];
        if (t.hot_ready.load(std::memory_order_acquire)) continue;
        needs_link = true;
        if (t.reserved) continue;
        t.complete_ns = reserve(index, mapping_.view().tensors()[index].size_bytes);
        t.reserved = true;
      }
      if (needs_link || k == 0) ++ahead;
    }
  }

  /// Bytes of the HotSet copied so far (it is built in the background after the first
  /// token), and the bytes it will hold.
  std::uint64_t hot_bytes() const noexcept { return hot_bytes_.load(std::memory_order_acquire); }
  std::uint64_t hot_target_bytes() const noexcept { return hot_target_bytes_; }

  Counters counters() const noexcept {
    Counters c;
    c.acquires = acquires_.load(std::memory_order_relaxed);
    c.ready = ready_.load(std::memory_order_relaxed);
    c.reused = hot_acquires_.load(std::memory_order_relaxed);
    c.stall_ns = stall_ns_.load(std::memory_order_relaxed);
    c.link_bytes = link_bytes_.load(std::memory_order_relaxed);
    c.busy_ns = link_ns_.load(std::memory_order_relaxed);
    c.failovers = mapping_.stats().failovers;
    return c;
  }

 private:
  struct Tensor {
    Mapping hot;                         // the HotSet's local copy, once hot_ready
    std::atomic<bool> hot_ready{false};  // published by the verifier thread
    bool reserved = false;               // a reservation made ahead and not yet used
    std::uint64_t complete_ns = 0;       // ... and when its bytes are usable
  };

  // For a cyclic schedule any fixed set saves the same link bytes per pass; the largest
  // tensors first also take the longest single waits off the link. The token embedding
  // is read a few rows at a time and is not worth its bytes.
  void plan_hot_set(std::uint64_t budget) {
    const auto infos = mapping_.view().tensors();
    std::vector<std::size_t> order;
    for (std::size_t i = 0; i < infos.size(); ++i) {
      if (i == model_.token_embd() && !model_.config().tie_embeddings) continue;
      order.push_back(i);
    }
    std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) {
      return infos[a].size_bytes > infos[b].size_bytes;
    });
    std::uint64_t planned = 0;
    for (std::size_t i : order) {
      if (infos[i].size_bytes > budget - planned) continue;
      planned += infos[i].size_bytes;
      hot_plan_.push_back(i);
    }
    hot_target_bytes_ = planned;
  }

  // Copies one planned tensor over the link into local memory and publishes it. The copy is
  // checked against the catalog checksum: bytes that changed since verification never
  // become hot (the tensor stays read in place, where the Scrubber watches it).
  void copy_hot(std::size_t index) {
    const TensorInfo& info = mapping_.view().tensors()[index];
    mapping_.ensure_verified(index);
    check_readable(index);
    const std::uint64_t complete = reserve(index, info.size_bytes);
    if (pacer_) (void)pacer_->wait_until(complete);  // a background copy: not compute's stall
    // The copy read from, fixed once: a mismatch is reported against it, not against a
    // source the Scrubber may have switched to meanwhile.
    const VerifiedMapping::Source from = mapping_.source(index);
    if (from == VerifiedMapping::Source::kFailed) return;
    const std::span<const std::byte> bytes = mapping_.copy(index, from);
    Tensor& t = tensors_[index];
    Mapping local = allocate_local(bytes.size());
    std::memcpy(local.data(), bytes.data(), bytes.size());
    if (checksum64(std::span<const std::byte>(local.data(), local.size_bytes())) != info.checksum) {
      mapping_.report_mismatch(index, from);
      return;
    }
    t.hot = std::move(local);
    hot_bytes_.fetch_add(info.size_bytes, std::memory_order_acq_rel);
    t.hot_ready.store(true, std::memory_order_release);
  }

  // The tensors in the order compute first needs them: the schedule's. The token embedding
  // is not among them (unless tied to the output head): a lookup verifies and maps only the
  // tiles of the rows it reads.
  std::vector<std::size_t> first_use_order() const {
    std::vector<std::size_t> order;
    for (const auto& step : steps_) order.insert(order.end(), step.begin(), step.end());
    return order;
  }

  void prefault_ahead() noexcept {
    try {
      for (std::size_t index : first_use_order()) {
        if (stop_.load(std::memory_order_acquire)) return;
        mapping_.prefault(index);  // map the pages now: neither hashing nor compute faults
      }
    } catch (...) {
      // Only the order's allocation can throw: then pages fault in on first touch.
    }
  }

  void verify_ahead() noexcept {
    std::vector<std::size_t> order;
    try {
      order = first_use_order();
    } catch (...) {
      return;  // each acquire verifies its tensor itself
    }
    for (std::size_t index : order) {
      if (stop_.load(std::memory_order_acquire)) return;
      try {
        mapping_.ensure_verified(index);
      } catch (...) {
        // Failed: the acquire that needs the tensor reports it.
      }
    }
    // The HotSet only after the first token: its copy would compete with that token's
    // compute for the cores and the memory bus, and the first pass reads in place anyway.
    if (!hot_plan_.empty()) {
      std::unique_lock lock(mu_);
      wake_.wait(lock, [&] { return first_pass_done_ || stop_.load(std::memory_order_acquire); });
    }
    for (std::size_t index : hot_plan_) {
      if (stop_.load(std::memory_order_acquire)) return;
      try {
        copy_hot(index);
      } catch (...) {
        // Not hot, then: it is read in place, and a failure shows at its acquire.
      }
    }
  }

  // A poisoned range or a device gone cannot be read in place: the replica's copy, or a
  // failed tensor (acquire then throws).
  void check_readable(std::size_t index) {
    if (emulator_ == nullptr || mapping_.source(index) != VerifiedMapping::Source::kPrimary) return;
    const TensorInfo& t = mapping_.view().tensors()[index];
    if (emulator_->is_offline()) {
      mapping_.fail_over(index, "the device is offline");
    } else if (emulator_->poisoned(t.offset_bytes, t.size_bytes)) {
      mapping_.fail_over(index, "its bytes lie in a poisoned range");
    }
  }

  // `urgent`: a small demand read (embedding rows) the link serves ahead of what is queued.
  std::uint64_t reserve(std::size_t index, std::uint64_t bytes, bool urgent = false) {
    const bool replica = mapping_.source(index) == VerifiedMapping::Source::kReplica;
    std::optional<LinkPacer>& pacer = replica && replica_pacer_ ? replica_pacer_ : pacer_;
    if (!pacer || !pacer->paced()) return 0;
    link_bytes_.fetch_add(bytes, std::memory_order_relaxed);
    const double gbps = pacer->params().bandwidth_gbps;
    if (gbps > 0)
      link_ns_.fetch_add(static_cast<std::uint64_t>(static_cast<double>(bytes) / gbps),
                         std::memory_order_relaxed);
    return urgent ? pacer->reserve_urgent(bytes) : pacer->reserve(bytes);
  }

  void wait(std::uint64_t complete_ns) {
    const std::uint64_t stalled = pacer_ ? pacer_->wait_until(complete_ns) : 0;
    if (stalled == 0) {
      ready_.fetch_add(1, std::memory_order_relaxed);
    } else {
      stall_ns_.fetch_add(stalled, std::memory_order_relaxed);
    }
  }

  VerifiedMapping& mapping_;
  const LlamaModel& model_;
  CxlEmulator* emulator_;
  std::optional<LinkPacer> pacer_, replica_pacer_;
  std::size_t lookahead_;
  std::vector<std::vector<std::size_t>> steps_;
  std::vector<Tensor> tensors_;
  std::vector<std::size_t> hot_plan_;
  std::uint64_t hot_target_bytes_ = 0;
  std::atomic<std::uint64_t> hot_bytes_{0};
  std::atomic<std::uint64_t> acquires_{0}, ready_{0}, hot_acquires_{0}, stall_ns_{0},
      link_bytes_{0}, link_ns_{0};
  std::atomic<bool> stop_{false};
  std::mutex mu_;
  std::condition_variable wake_;
  bool first_pass_done_ = false;  // under mu_; end_step reads it on the executor's thread
  std::thread verifier_, prefaulter_;
};

const char* to_string(Placement placement) noexcept {
  return placement == Placement::kInPlace ? "in-place" : "copy";
}

Placement default_placement(const MemoryBackend& backend) noexcept {
  return backend.is_host() ? Placement::kInPlace : Placement::kCopy;
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
    // The default policy for a repeating schedule keeps a fixed set and streams the rest.
    std::vector<std::string> key_tensors;
    key_tensors.reserve(sources.size());
    for (const auto& src : sources) key_tensors.push_back(src.primary.name);
    std::vector<TensorKey> keep;
    if (options.eviction_policy == "fixed" && schedule_->repeats()) {
      keep = schedule_->fixed_set_for_cache(sizes, options.cache_bytes);
    }
    std::unique_ptr<EvictionPolicy> eviction =
        options.eviction_factory ? options.eviction_factory(CacheKeys{
                                       *schedule_, sizes, key_tensors, options.cache_bytes})
                                 : make_eviction_policy(options.eviction_policy, schedule_->trace(),
                                                        schedule_->repeats(), keep);
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
