// EvictionPolicy: which resident tensor a DeviceCache gives up when it needs room.
//
// Contract for implementers (NVI, see CONTRIBUTING.md): the public calls are non-virtual and
// keep the counters; a policy supplies
//   * `do_choose_victim(candidates, incoming, may_refuse)` (required): the index in
//     `candidates` of the entry to evict. `candidates` are the resident, unpinned entries,
//     never empty. `incoming` is the key the room is for. When `may_refuse` is true (a
//     prefetch asks, or compute while other fetches are in flight: it then waits for them
//     to land and asks again) the policy may return nullopt to say "keeping every
//     candidate is better than admitting `incoming`"; when false it must pick one.
//   * `do_on_insert(key)`, `do_on_access(key)`, `do_on_remove(key)` (optional, default
//     no-op): a fetch began for `key`; compute acquired `key`; `key` left the cache.
//   * `do_long_lived(key)` (optional, default false): a placement hint, see long_lived().
// The cache calls every method under its own lock, from any of its threads, so a policy
// needs no locking of its own. Calls must be cheap: they run on every tensor access.
#pragma once

#include <atomic>
#include <cstdint>
#include <exception>
#include <memory>
#include <nlohmann/json_fwd.hpp>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "xlshare/types.hpp"

namespace xlshare {

/// Counters every policy keeps (through the base class).
struct EvictionStats {
  std::uint64_t victims_chosen = 0;
  std::uint64_t refusals = 0;  ///< requests the policy refused to make room for (see may_refuse)
  /// Choices the base corrected: an index outside the candidates, or a refusal where none
  /// was allowed (then candidates[0] goes). A sound policy makes none.
  std::uint64_t invalid_choices = 0;
};
void to_json(nlohmann::json& j, const EvictionStats& s);

class EvictionPolicy {
 public:
  virtual ~EvictionPolicy() = default;

  /// The entry to evict (an index into `candidates`), or nullopt when the policy refuses
  /// (only allowed when `may_refuse`; otherwise the base falls back to candidates[0]).
  /// A hook that throws is caught here (the cache calls these from noexcept paths and
  /// from its transfer threads): the call falls back as above, and the exception's
  /// message waits in take_error() for the request to fail with it.
  std::optional<std::size_t> choose_victim(std::span<const TensorKey> candidates,
                                           TensorKey incoming, bool may_refuse) noexcept;
  /// Whether the policy means to keep `key` for long (a hint: the cache places such keys
  /// apart from the ones streaming through, so these do not fragment its space).
  bool long_lived(TensorKey key) const noexcept { return do_long_lived(key); }
  void on_insert(TensorKey key) noexcept {
    guard([&] { do_on_insert(key); });
  }
  void on_access(TensorKey key) noexcept {
    guard([&] { do_on_access(key); });
  }
  void on_remove(TensorKey key) noexcept {
    guard([&] { do_on_remove(key); });
  }
  /// Whether a hook threw since the last take_error() (cheap: any thread, no lock).
  bool failed() const noexcept { return failed_.load(std::memory_order_acquire); }
  /// The message of the first exception a hook threw since the last call, or empty.
  /// Under the same lock as the hooks (the cache's: DeviceCache::take_policy_error).
  std::string take_error() noexcept {
    failed_.store(false, std::memory_order_release);
    return std::exchange(error_, {});
  }

  /// "lru", "fifo", "schedule", or a user policy's name.
  virtual std::string_view name() const noexcept = 0;
  EvictionStats stats() const noexcept { return stats_; }

 protected:
  virtual std::optional<std::size_t> do_choose_victim(std::span<const TensorKey> candidates,
                                                      TensorKey incoming, bool may_refuse) = 0;
  virtual void do_on_insert(TensorKey) {}
  virtual void do_on_access(TensorKey) {}
  virtual void do_on_remove(TensorKey) {}
  virtual bool do_long_lived(TensorKey) const noexcept { return false; }

 private:
  template <class F>
  void guard(F&& hook) noexcept {
    try {
      hook();
    } catch (const std::exception& e) {
      note_error(e.what());
    } catch (...) {
      note_error("an exception that is not a std::exception");
    }
  }
  void note_error(const char* what) noexcept;

  EvictionStats stats_;
  std::string error_;
  std::atomic<bool> failed_{false};
};

/// Least recently used (by acquire; a fetch counts as a use). The default.
class LruPolicy final : public EvictionPolicy {
 public:
  std::string_view name() const noexcept override { return "lru"; }

 protected:
  std::optional<std::size_t> do_choose_victim(std::span<const TensorKey> candidates,
                                              TensorKey incoming, bool may_refuse) override;
  void do_on_insert(TensorKey key) override { touch(key); }
  void do_on_access(TensorKey key) override { touch(key); }

 private:
  void touch(TensorKey key);
  std::vector<std::uint64_t> last_use_;
  std::uint64_t clock_ = 0;
};

/// First in, first out (by the time the fetch began).
class FifoPolicy final : public EvictionPolicy {
 public:
  std::string_view name() const noexcept override { return "fifo"; }

 protected:
  std::optional<std::size_t> do_choose_victim(std::span<const TensorKey> candidates,
                                              TensorKey incoming, bool may_refuse) override;
  void do_on_insert(TensorKey key) override;

 private:
  std::vector<std::uint64_t> inserted_;
  std::uint64_t clock_ = 0;
};

/// Belady's optimum for a known access order: evicts the entry whose next use is farthest.
/// It is told the access trace (the model's schedule flattened to tensor keys) and whether
/// it repeats (a decode loop does). It follows compute's position through on_access. For a
/// prefetch it refuses to evict anything used before `incoming` is.
class ScheduleAwarePolicy final : public EvictionPolicy {
 public:
  ScheduleAwarePolicy(std::vector<TensorKey> trace, bool cyclic);
  std::string_view name() const noexcept override { return "schedule"; }
  /// Distance in accesses from the current position to the next use of `key`
  /// (UINT64_MAX: never again).
  std::uint64_t next_use_distance(TensorKey key) const noexcept;

 protected:
  std::optional<std::size_t> do_choose_victim(std::span<const TensorKey> candidates,
                                              TensorKey incoming, bool may_refuse) override;
  void do_on_access(TensorKey key) override;

 private:
  std::vector<TensorKey> trace_;
  bool cyclic_;
  std::vector<std::vector<std::uint64_t>> occurrences_;  // by key: positions in trace_
  std::uint64_t position_ = 0;  // index (within one cycle) of the next expected access
  std::uint64_t cycle_ = 0;     // completed cycles
};

/// For a repeating schedule: the keys in `keep` stay once they are resident, the others
/// are evicted least recently used. On a cyclic access order each pass then misses exactly
/// the keys outside the set, within one hit per pass of the optimum, where LRU misses every
/// key once a pass outgrows the cache. The set must leave room for the keys that stream through
/// (`fixed_set` in schedule.hpp picks one). A prefetch never evicts a kept key (it is
/// refused instead); compute evicts one only when nothing else can go, not even after the
/// fetches in flight have landed.
class FixedSetPolicy final : public EvictionPolicy {
 public:
  explicit FixedSetPolicy(std::span<const TensorKey> keep);
  std::string_view name() const noexcept override { return "fixed"; }
  bool kept(TensorKey key) const noexcept { return key < keep_.size() && keep_[key]; }

 protected:
  std::optional<std::size_t> do_choose_victim(std::span<const TensorKey> candidates,
                                              TensorKey incoming, bool may_refuse) override;
  void do_on_insert(TensorKey key) override { touch(key); }
  void do_on_access(TensorKey key) override { touch(key); }
  bool do_long_lived(TensorKey key) const noexcept override { return kept(key); }

 private:
  void touch(TensorKey key);
  std::vector<bool> keep_;
  std::vector<std::uint64_t> last_use_;
  std::uint64_t clock_ = 0;
};

/// "lru", "fifo", "schedule" (which needs `trace`) or "fixed" (which keeps `keep`; with
/// an empty set it is LRU).
/// @throws ConfigError for an unknown name.
std::unique_ptr<EvictionPolicy> make_eviction_policy(std::string_view name,
                                                     std::vector<TensorKey> trace = {},
                                                     bool cyclic = true,
                                                     std::span<const TensorKey> keep = {});

}  // namespace xlshare
