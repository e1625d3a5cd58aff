// DeviceCache: one worker's near memory (its "HBM") — a byte budget of tensors.
//
// Its memory is one arena of the budget, allocated once from a LocalMemory and
// sub-allocated first-fit. Entries are tensors by TensorKey, each absent, in flight (a transfer is
// filling its buffer) or resident. In-flight and resident bytes together never exceed the budget.
// Compute takes an RAII Lease with acquire(): the entry is pinned while the lease lives
// and is never evicted while pinned. Transfers use begin_fetch() / complete_fetch(): a
// prefetch never waits for room (it fails instead, or the EvictionPolicy refuses it); a
// prefetch also never evicts another prefetched entry that compute has not used yet; a
// demand fetch waits until pins are released or in-flight transfers land and become
// evictable. A step whose tensors together exceed the budget can never run, which
// check_fits() reports at set-up. Because the arena is one range, a demand fetch may also
// have to evict more than its bytes to find a hole; a caller holding several leases at
// once can then wait until one is released (the Executor holds one at a time).
//
// Threading: every method may be called from any thread; one mutex guards the entries and
// the policy; waits use a condition variable, or a CacheWaiter when one is given (the
// planner's VirtualClock, which runs the near tier on simulated time).
#pragma once

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <nlohmann/json_fwd.hpp>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "xlshare/cache/eviction_policy.hpp"
#include "xlshare/cache/local_memory.hpp"
#include "xlshare/memory/clock.hpp"
#include "xlshare/memory/extent_allocator.hpp"

namespace xlshare {

/// How a DeviceCache waits and on which clock it times its waits. Without one: a condition
/// variable and the monotonic clock. The planner's VirtualClock is one: it runs simulated
/// transfers and the other simulated threads until the condition holds.
class CacheWaiter {
 public:
  virtual ~CacheWaiter() = default;
  virtual Clock& clock() noexcept = 0;
  /// Returns once `done()` holds. Called with the cache unlocked; `done` locks it.
  virtual void wait_for(const std::function<bool()>& done) = 0;
  /// The cache changed (an entry landed or was released): a waiter may be done.
  virtual void notify() noexcept {}
};

enum class EntryState : std::uint8_t { kAbsent, kInFlight, kResident };

/// Counters of one cache.
struct CacheStats {
  std::uint64_t budget_bytes = 0;
  std::uint64_t bytes_resident = 0;
  std::uint64_t bytes_in_flight = 0;
  std::uint64_t peak_bytes = 0;       ///< highest resident + in flight seen
  std::uint64_t acquires = 0;         ///< acquire() calls that returned a lease
  std::uint64_t acquires_ready = 0;   ///< ... that found the entry resident (no wait)
  std::uint64_t acquires_reused = 0;  ///< ... whose bytes were there from an earlier use
  std::uint64_t acquires_waited = 0;  ///< ... that waited for an in-flight transfer
  std::uint64_t acquires_missed = 0;  ///< acquire() on an absent entry (no lease)
  std::uint64_t fetches_demand = 0;
  std::uint64_t fetches_prefetch = 0;
  std::uint64_t prefetches_refused = 0;  ///< no room (or the policy refused)
  std::uint64_t fetches_failed = 0;
  std::uint64_t evictions = 0;
  std::uint64_t bytes_prefetched = 0;
  std::uint64_t bytes_prefetched_used = 0;  ///< prefetched bytes acquired before eviction
  std::uint64_t wait_ns = 0;                ///< time acquire() and demand fetches waited
};
void to_json(nlohmann::json& j, const CacheStats& s);

class DeviceCache {
 public:
  /// `key_bytes[k]` is the size of tensor k. @throws ConfigError for a zero budget.
  /// `waiter` (not owned) replaces the condition variable and the clock (see CacheWaiter).
  DeviceCache(std::uint64_t budget_bytes, std::vector<std::uint64_t> key_bytes,
              std::unique_ptr<EvictionPolicy> policy, LocalMemory& memory = HostMemory::instance(),
              CacheWaiter* waiter = nullptr);
  ~DeviceCache();
  DeviceCache(const DeviceCache&) = delete;
  DeviceCache& operator=(const DeviceCache&) = delete;

  /// A pinned, resident entry. Move-only; unpins when destroyed.
  class Lease {
   public:
    Lease() = default;
    Lease(Lease&& other) noexcept { *this = std::move(other); }
    Lease& operator=(Lease&& other) noexcept;
    ~Lease() { release(); }
    explicit operator bool() const noexcept { return cache_ != nullptr; }
    std::span<const std::byte> bytes() const noexcept { return bytes_; }
    TensorKey key() const noexcept { return key_; }
    void release() noexcept;

   private:
    friend class DeviceCache;
    DeviceCache* cache_ = nullptr;
    TensorKey key_ = 0;
    std::span<const std::byte> bytes_;
  };

  /// Pins `key` for compute. Waits while it is in flight. Returns an empty lease when the
  /// entry is absent (nobody fetched it) or its transfer failed. `ready`, when given, is
  /// set to whether the entry was resident on arrival. `after_demand` marks the second try
  /// after the caller issued a demand fetch: such an acquisition is never counted ready.
  /// Throws only what a CacheWaiter's wait throws (the VirtualClock's on a deadlock).
  Lease acquire(TensorKey key, bool* ready = nullptr, bool after_demand = false);

  /// Makes `key` in flight and returns its buffer for a transfer to fill. Prefetch: never
  /// waits; returns nothing when the entry is already present or in flight, or there is no
  /// room the policy agrees to make. Demand: waits for room; returns nothing only when the
  /// entry is already present or in flight. @throws OutOfMemory when `key` alone exceeds
  /// the budget or local memory is exhausted.
  std::optional<std::span<std::byte>> begin_fetch(TensorKey key, FetchKind kind);
  /// The transfer for `key` is done: resident if `ok`, else absent again (waiters see an
  /// empty lease).
  void complete_fetch(TensorKey key, bool ok) noexcept;

  /// Drops every unpinned resident entry.
  void clear() noexcept;

  /// @throws ConfigError when these keys together exceed the budget (such a step could
  /// never run).
  void check_fits(std::span<const TensorKey> keys, std::string_view what) const;

  EntryState state(TensorKey key) const noexcept;
  std::uint64_t budget_bytes() const noexcept { return budget_bytes_; }
  std::uint64_t key_bytes(TensorKey key) const noexcept { return key_bytes_[key]; }
  std::size_t key_count() const noexcept { return key_bytes_.size(); }
  /// Bytes a prefetch could take right now without evicting anything.
  std::uint64_t bytes_free() const noexcept;
  CacheStats stats() const noexcept;
  EvictionPolicy& policy() noexcept { return *policy_; }
  /// The clock waits are timed on (the waiter's, or the monotonic clock).
  Clock& clock() const noexcept;
  /// Checks the invariants (budget held, byte counts match states). Empty when sound.
  std::string check() const;
  /// The message of the first exception the eviction policy threw since the last call
  /// (the policy kept the cache consistent by falling back), or empty.
  std::string take_policy_error() noexcept;

 private:
  struct Entry {
    EntryState state = EntryState::kAbsent;
    std::uint32_t pins = 0;
    std::byte* buffer = nullptr;
    bool prefetched_unused = false;  // fetched by a prefetch, not yet acquired
    bool fresh = false;              // arrived by a transfer since its last acquire
    bool failed = false;             // its last transfer failed
  };
  // Evicts until `bytes` fit in the budget and in one arena hole; returns the buffer, or
  // nullptr when nothing (more) may be evicted.
  std::byte* make_room_locked(TensorKey key, std::uint64_t bytes, bool prefetch, bool may_refuse);
  void evict_locked(TensorKey key) noexcept;
  void release_buffer(TensorKey key) noexcept;
  ExtentTable& table() noexcept { return *reinterpret_cast<ExtentTable*>(table_storage_.data()); }
  static constexpr std::uint64_t kArenaAlign = 256;
  void unpin(TensorKey key) noexcept;
  // Waits (the lock released meanwhile) until `done()` holds, through the waiter if any.
  template <class Done>
  void wait_locked(std::unique_lock<std::mutex>& lock, Done done);
  // Something changed that a waiter may be waiting for (its caller counted it in changes_,
  // under the lock it changed the entry under): wakes them.
  void notify_changed() noexcept;

  const std::uint64_t budget_bytes_;
  const std::vector<std::uint64_t> key_bytes_;
  std::unique_ptr<EvictionPolicy> policy_;
  LocalMemory& memory_;
  CacheWaiter* waiter_;
  std::byte* arena_ = nullptr;
  std::uint64_t arena_bytes_ = 0;
  std::vector<std::uint64_t> table_storage_;  // the arena's free list (an ExtentTable)
  mutable std::mutex mu_;
  std::condition_variable changed_;
  std::vector<Entry> entries_;
  std::vector<TensorKey> candidates_;  // scratch for eviction, reused
  std::uint64_t bytes_resident_ = 0, bytes_in_flight_ = 0;
  std::uint64_t changes_ = 0;  // counts changes waiters look for, under mu_
  CacheStats stats_;
};

}  // namespace xlshare
