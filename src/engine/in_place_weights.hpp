// Worker::InPlaceWeights: the in-place placement's WeightProvider (private to the worker).
#pragma once

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <optional>
#include <thread>

#include "xlshare/engine/worker.hpp"
#include "xlshare/error.hpp"
#include "xlshare/memory/checksum.hpp"
#include "xlshare/memory/cxl_emulator.hpp"
#include "xlshare/memory/link_pacer.hpp"
#include "xlshare/model/dtype_convert.hpp"

namespace xlshare {

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

}  // namespace xlshare
