// VerifiedMapping and Scrubber: the weights a worker computes from in place (the pool's
// read-only mapping, no near cache), kept verified.
//
// Reading a mapping copies nothing, so nothing checks the bytes on the way as the
// TransferEngine does for the cached path. Two checks stand in for it, both per tile of the
// TensorTiling (the tile checksums the pool stored when the model was sealed):
//   * first use: a VerifiedMapping hashes each tile (XXH3-64 against its catalog checksum)
//     before compute may read it: every tile when it is built (Verify::kNow), or each on
//     first use (Verify::kOnFirstUse, the in-place placement, where attach must not cost
//     O(model bytes); a verifier thread then runs ahead of compute). A whole tensor is
//     verified tile by tile; a lookup of a few embedding rows verifies only their tiles, so
//     the rest of the table is never touched (nor counted in the process's memory). A
//     tensor with a tile that fails is served from the replica pool's copy when that copy
//     verifies whole; otherwise it is failed: its use throws a PoolError naming the pool,
//     the model and the tensor.
//   * the Scrubber re-hashes the verified tiles in the background at a bounded byte rate,
//     so that bytes changed after they were verified (a stray write, a failing device) are
//     found within one pass. A tensor found changed switches to the replica's copy when that
//     verifies, else it is marked failed: every later acquire of it throws instead of
//     answering wrong. Tiles never used are not scrubbed: their first use verifies them.
// Switching is race-free with compute: each tensor's source is one atomic that compute
// reads when it acquires the tensor. `epoch()` changes at every switch or failure, so that
// a request that ran across one can be run again on verified weights.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <nlohmann/json_fwd.hpp>
#include <span>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "xlshare/memory/pool.hpp"

namespace xlshare {

/// What verification of the mapped weights did and cost.
struct ScrubStats {
  std::uint64_t verify_ns = 0;       ///< first-use verification (wall time, summed)
  std::uint64_t verify_bytes = 0;    ///< bytes hashed by it
  std::uint64_t bytes_scrubbed = 0;  ///< bytes re-hashed since (background and scrub_now)
  std::uint64_t passes = 0;          ///< complete passes over every tensor in use
  std::uint64_t mismatches = 0;      ///< copies found not to match their checksum (attach included)
  std::uint64_t failovers = 0;       ///< tensors switched to the replica's copy
  std::uint64_t failed = 0;          ///< tensors left with no verified copy
  std::uint64_t cpu_ns = 0;          ///< CPU time of the background scrubber thread
  std::uint64_t wall_ns = 0;         ///< how long the background thread has run
};
void to_json(nlohmann::json& j, const ScrubStats& s);

/// One model's tensors in the pools' mappings, each served from a copy that verified.
/// Thread-safe; `bytes()` is the hot path (one atomic load).
class VerifiedMapping {
 public:
  /// Where each tensor is read from.
  enum class Source : std::uint8_t { kPrimary = 0, kReplica = 1, kFailed = 2 };
  /// When first-use verification happens.
  enum class Verify : std::uint8_t { kNow, kOnFirstUse };

  /// Verifies every tensor of `view` in `primary` (first use). `replica` and
  /// `replica_view` are both set or both null; the replica must already be proven to hold
  /// the same model (check_same_model). The pools must outlive the mapping; the views are
  /// held, so the models stay in use. @throws PoolError naming the pool, the model and the
  /// first tensor with no verified copy.
  VerifiedMapping(const Pool& primary, std::shared_ptr<const ModelView> view, const Pool* replica,
                  std::shared_ptr<const ModelView> replica_view, Verify verify = Verify::kNow);
  VerifiedMapping(const VerifiedMapping&) = delete;
  VerifiedMapping& operator=(const VerifiedMapping&) = delete;

  std::size_t size() const noexcept { return entries_.size(); }
  const ModelView& view() const noexcept { return *view_; }
  /// Verifies every tile of tensor `index` not verified yet (waiting for those another
  /// thread is verifying). @throws PoolError when it has no verified copy. Thread-safe; one
  /// atomic load once the tensor is verified.
  void ensure_verified(std::size_t index) { ensure_verified(index, 0, UINT64_MAX); }
  /// The same for the tiles that hold bytes [offset, offset + bytes) of tensor `index` only.
  void ensure_verified(std::size_t index, std::uint64_t offset, std::uint64_t bytes);
  /// Whether every tile of `index` is verified.
  bool verified(std::size_t index) const noexcept {
    return index < entries_.size() &&
           entries_[index].verified.load(std::memory_order_acquire) == kVerified;
  }
  /// The TensorTiling of `index`: tile size, count, whether tile `tile` is verified, and its
  /// catalog checksum.
  std::uint64_t tile_bytes(std::size_t index) const noexcept { return entries_[index].tile_bytes; }
  std::size_t tile_count(std::size_t index) const noexcept {
    return entries_[index].tile_sums.size();
  }
  bool tile_verified(std::size_t index, std::size_t tile) const noexcept {
    return entries_[index].tiles[tile].load(std::memory_order_acquire) == kVerified;
  }
  std::uint64_t tile_checksum(std::size_t index, std::size_t tile) const noexcept {
    return entries_[index].tile_sums[tile];
  }
  /// Asks the kernel to map the pages of `index`'s current copy now (Pool::prefault), so
  /// the first reads of it take no page faults. Never throws.
  void prefault(std::size_t index) const noexcept;
  /// The primary's copy of `index` cannot be read (a poisoned range, a device gone): switch
  /// to the replica's copy if it verifies, else mark the tensor failed with `why`. Cold path.
  void fail_over(std::size_t index, std::string_view why);
  /// Tensor `index`'s verified bytes into `out`; false when it has none (or no such tensor).
  bool bytes(std::size_t index, std::span<const std::byte>& out) const noexcept {
    if (index >= entries_.size()) return false;
    const Entry& e = entries_[index];
    switch (static_cast<Source>(e.source.load(std::memory_order_acquire))) {
      case Source::kPrimary:
        out = e.primary;
        return true;
      case Source::kReplica:
        out = e.replica;
        return true;
      case Source::kFailed:
        break;
    }
    return false;
  }
  Source source(std::size_t index) const noexcept {
    return static_cast<Source>(entries_[index].source.load(std::memory_order_acquire));
  }
  /// The bytes of `index` in the copy `from` (empty for kFailed or no replica).
  std::span<const std::byte> copy(std::size_t index, Source from) const noexcept;
  std::uint64_t checksum(std::size_t index) const noexcept { return entries_[index].checksum; }
  /// Whether any tensor has no verified copy left.
  bool failed() const noexcept { return failed_.load(std::memory_order_acquire) != 0; }
  /// Changes at every switch to the replica and every failure.
  std::uint64_t epoch() const noexcept { return epoch_.load(std::memory_order_acquire); }
  /// @throws PoolError saying why tensor `index` (or, for SIZE_MAX, the first failed one)
  /// has no verified copy.
  [[noreturn]] void throw_failed(std::size_t index = SIZE_MAX) const;

  /// A re-check found copy `from` of `index` not matching its checksum: switch to the
  /// replica's copy if it verifies, else mark the tensor failed. Nothing happens when the
  /// tensor no longer reads from `from` (another check got there first). Cold path.
  void report_mismatch(std::size_t index, Source from);

  /// Counters of the mapping (first-use verification, mismatches, failovers, failures).
  ScrubStats stats() const noexcept;

 private:
  static constexpr std::uint8_t kUnverified = 0, kVerifying = 1, kVerified = 2;
  struct Entry {
    std::span<const std::byte> primary, replica;
    std::uint64_t checksum = 0;
    std::uint64_t tile_bytes = 0;
    std::span<const std::uint64_t> tile_sums;      // the catalog's, one per tile
    std::vector<std::atomic<std::uint8_t>> tiles;  // each tile's first-use state
    std::size_t pending = 0;                       // tiles not verified yet (under mu_)
    std::atomic<std::uint8_t> source{0};
    std::atomic<std::uint8_t> verified{kUnverified};  // every tile verified
  };
  // Hashes tile `tile` of `index` (its state is kVerifying, set by the caller) and marks it
  // verified, switching or failing the tensor on a mismatch.
  void verify_tile(std::size_t index, std::size_t tile);
  // Tile `tile` of `e` verified: counts it, under mu_.
  void tile_done_locked(Entry& e, std::size_t tile);
  // Copy `from` of `index` failed a check: switch to the replica's copy when it verifies
  // whole (every tile then counts as verified), else mark the tensor failed with the reason
  // `failure(replica_checked)` gives. Nothing when the tensor no longer reads from `from`.
  template <class Reason>
  void switch_or_fail_locked(std::size_t index, Source from, Reason&& failure);
  const Pool& primary_;
  const Pool* replica_;
  std::shared_ptr<const ModelView> view_, replica_view_;
  std::vector<Entry> entries_;
  std::atomic<std::uint64_t> epoch_{0}, failed_{0}, mismatches_{0}, failovers_{0};
  std::atomic<std::uint64_t> verify_ns_{0}, verify_bytes_{0};
  mutable std::mutex mu_;                // switches, and the reasons below
  std::condition_variable verified_cv_;  // a first-use verification finished
  std::vector<std::string> reasons_;     // why a tensor failed
};

/// Re-verifies the tensors of a VerifiedMapping in the background, at most
/// `bytes_per_s` bytes a second (0: no background thread; scrub_now() still works).
class Scrubber {
 public:
  /// Default rate: 256 MiB/s, about 3% of one core (XXH3 hashes 15-20 GB/s); a 16 GB
  /// model is re-verified every minute or so.
  static constexpr std::uint64_t kDefaultBytesPerSecond = 256ull << 20;

  Scrubber(std::shared_ptr<VerifiedMapping> mapping, std::uint64_t bytes_per_s);
  ~Scrubber();
  Scrubber(const Scrubber&) = delete;
  Scrubber& operator=(const Scrubber&) = delete;

  /// One whole pass now, on the calling thread, unpaced: on return every verified tile has
  /// been re-verified (and switched or failed as needed). Returns the mismatches found.
  std::uint64_t scrub_now();
  ScrubStats stats() const noexcept;
  VerifiedMapping& mapping() noexcept { return *mapping_; }
  std::uint64_t bytes_per_s() const noexcept { return bytes_per_s_; }

 private:
  // Re-hashes tensor `index`'s current copy; false when it did not match.
  // `paced`: chunk by chunk at the configured rate (returns true early when stopping).
  bool scrub_tensor(std::size_t index, bool paced);
  void run() noexcept;

  std::shared_ptr<VerifiedMapping> mapping_;
  const std::uint64_t bytes_per_s_;
  std::atomic<std::uint64_t> bytes_scrubbed_{0}, passes_{0}, cpu_ns_{0}, wall_ns_{0};
  std::mutex mu_;
  std::condition_variable wake_;
  bool stopping_ = false;
  std::uint64_t deadline_ns_ = 0;  // background pacing: when the bytes hashed so far are due
  std::thread thread_;
};

}  // namespace xlshare
