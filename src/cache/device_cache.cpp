#include "xlshare/cache/device_cache.hpp"

#include <fmt/format.h>

#include <utility>

#include "xlshare/error.hpp"
#include "xlshare/memory/clock.hpp"

namespace xlshare {

DeviceCache::DeviceCache(std::uint64_t budget_bytes, std::vector<std::uint64_t> key_bytes,
                         std::unique_ptr<EvictionPolicy> policy, LocalMemory& memory,
                         CacheWaiter* waiter)
    : budget_bytes_(budget_bytes),
      key_bytes_(std::move(key_bytes)),
      policy_(std::move(policy)),
      memory_(memory),
      waiter_(waiter),
      entries_(key_bytes_.size()) {
  if (budget_bytes_ == 0) throw ConfigError("device cache: the budget must be > 0 bytes");
  if (!policy_) throw ConfigError("device cache: no eviction policy");
  candidates_.reserve(key_bytes_.size());
  stats_.budget_bytes = budget_bytes_;
  // One arena for the whole budget, sub-allocated first-fit: the cache's memory is exactly
  // its budget (plus per-tensor rounding), allocated once, as a GPU would cudaMalloc it.
  arena_bytes_ = (budget_bytes_ + kArenaAlign - 1) / kArenaAlign * kArenaAlign +
                 kArenaAlign * (key_bytes_.size() + 1);
  arena_ = memory_.allocate(arena_bytes_);
  if (arena_ == nullptr) {
    throw OutOfMemory(fmt::format("device cache: {} memory could not provide the {} byte arena",
                                  memory_.name(), arena_bytes_));
  }
  const std::uint64_t capacity = key_bytes_.size() + 2;
  table_storage_.resize(ExtentTable::bytes_for(capacity) / sizeof(std::uint64_t) + 1);
  ExtentAllocator::init(table(), capacity, 0, arena_bytes_, kArenaAlign);
}

DeviceCache::~DeviceCache() { memory_.deallocate(arena_, arena_bytes_); }

Clock& DeviceCache::clock() const noexcept {
  return waiter_ != nullptr ? waiter_->clock() : MonotonicClock::instance();
}

template <class Done>
void DeviceCache::wait_locked(std::unique_lock<std::mutex>& lock, Done done) {
  if (waiter_ == nullptr) {
    changed_.wait(lock, done);
    return;
  }
  lock.unlock();
  waiter_->wait_for([&] {
    std::lock_guard g(mu_);
    return done();
  });
  lock.lock();
}

void DeviceCache::notify_changed() noexcept {
  changed_.notify_all();
  if (waiter_ != nullptr) waiter_->notify();
}

void DeviceCache::release_buffer(TensorKey key) noexcept {
  Entry& e = entries_[key];
  ExtentAllocator(table()).free(static_cast<std::uint64_t>(e.buffer - arena_), key_bytes_[key]);
  e.buffer = nullptr;
}

DeviceCache::Lease& DeviceCache::Lease::operator=(Lease&& other) noexcept {
  if (this != &other) {
    release();
    cache_ = std::exchange(other.cache_, nullptr);
    key_ = other.key_;
    bytes_ = other.bytes_;
  }
  return *this;
}

void DeviceCache::Lease::release() noexcept {
  if (cache_ != nullptr) std::exchange(cache_, nullptr)->unpin(key_);
}

DeviceCache::Lease DeviceCache::acquire(TensorKey key, bool* ready, bool after_demand) {
  Lease lease;
  if (key >= entries_.size()) return lease;
  std::unique_lock lock(mu_);
  Entry& e = entries_[key];
  const bool was_resident = e.state == EntryState::kResident && !after_demand;
  if (ready != nullptr) *ready = was_resident;
  if (e.state == EntryState::kInFlight) {
    const std::uint64_t t0 = clock().now_ns();
    ++stats_.acquires_waited;
    wait_locked(lock, [&] { return e.state != EntryState::kInFlight; });
    stats_.wait_ns += clock().now_ns() - t0;
  }
  if (e.state != EntryState::kResident) {
    if (!after_demand) ++stats_.acquires_missed;
    return lease;
  }
  ++e.pins;
  ++stats_.acquires;
  if (was_resident) ++stats_.acquires_ready;
  if (!e.fresh) ++stats_.acquires_reused;
  e.fresh = false;
  if (e.prefetched_unused) {
    e.prefetched_unused = false;
    stats_.bytes_prefetched_used += key_bytes_[key];
  }
  policy_->on_access(key);
  lease.cache_ = this;
  lease.key_ = key;
  lease.bytes_ = {e.buffer, key_bytes_[key]};
  return lease;
}

void DeviceCache::unpin(TensorKey key) noexcept {
  {
    std::lock_guard lock(mu_);
    --entries_[key].pins;
    ++changes_;
  }
  notify_changed();
}

void DeviceCache::evict_locked(TensorKey key) noexcept {
  Entry& e = entries_[key];
  release_buffer(key);
  e.state = EntryState::kAbsent;
  e.prefetched_unused = false;
  e.fresh = false;
  bytes_resident_ -= key_bytes_[key];
  ++stats_.evictions;
  policy_->on_remove(key);
}

std::byte* DeviceCache::make_room_locked(TensorKey key, std::uint64_t bytes, bool prefetch,
                                         bool may_refuse) {
  for (;;) {
    if (bytes_resident_ + bytes_in_flight_ + bytes <= budget_bytes_) {
      ExtentAllocator alloc(table());
      if (auto offset =
              policy_->long_lived(key) ? alloc.allocate_last(bytes) : alloc.allocate(bytes)) {
        return arena_ + *offset;
      }
      // Within budget but no hole is large enough: evict more until one is.
    }
    candidates_.clear();
    for (TensorKey k = 0; k < entries_.size(); ++k) {
      const Entry& e = entries_[k];
      // A prefetch never pushes out another prefetch that compute has not used yet: that
      // would throw away link time already spent on something that is about to be needed.
      if (e.state == EntryState::kResident && e.pins == 0 && !(prefetch && e.prefetched_unused)) {
        candidates_.push_back(k);
      }
    }
    if (candidates_.empty()) return nullptr;
    const auto victim = policy_->choose_victim(candidates_, key, may_refuse);
    if (!victim) return nullptr;
    evict_locked(candidates_[*victim]);
  }
}

std::optional<std::span<std::byte>> DeviceCache::begin_fetch(TensorKey key, FetchKind kind) {
  if (key >= entries_.size()) {
    throw ConfigError(
        fmt::format("device cache: tensor key {} out of range ({} keys)", key, entries_.size()));
  }
  const std::uint64_t bytes = key_bytes_[key];
  if (bytes > budget_bytes_) {
    throw OutOfMemory(fmt::format("device cache: tensor {} needs {} bytes; the whole cache has {}",
                                  key, bytes, budget_bytes_));
  }
  std::unique_lock lock(mu_);
  Entry& e = entries_[key];
  if (e.state != EntryState::kAbsent) return std::nullopt;
  std::byte* buffer = nullptr;
  if (kind == FetchKind::kPrefetch) {
    buffer = make_room_locked(key, bytes, /*prefetch=*/true, /*may_refuse=*/true);
    if (buffer == nullptr) {
      ++stats_.prefetches_refused;
      return std::nullopt;
    }
  } else {
    const std::uint64_t t0 = clock().now_ns();
    bool waited = false;
    // Compute may be refused while other fetches are in flight: it waits for them to land
    // (they make candidates) rather than give up what the policy means to keep.
    while ((buffer = make_room_locked(key, bytes, /*prefetch=*/false,
                                      /*may_refuse=*/bytes_in_flight_ > 0)) == nullptr) {
      waited = true;
      const std::uint64_t seen = changes_;
      wait_locked(lock, [&] { return changes_ != seen; });
      if (e.state != EntryState::kAbsent) {  // another thread fetched it meanwhile
        stats_.wait_ns += clock().now_ns() - t0;
        return std::nullopt;
      }
    }
    if (waited) stats_.wait_ns += clock().now_ns() - t0;
  }
  e.buffer = buffer;
  e.state = EntryState::kInFlight;
  e.failed = false;
  e.prefetched_unused = kind == FetchKind::kPrefetch;
  bytes_in_flight_ += bytes;
  stats_.peak_bytes = std::max(stats_.peak_bytes, bytes_resident_ + bytes_in_flight_);
  if (kind == FetchKind::kPrefetch) {
    ++stats_.fetches_prefetch;
    stats_.bytes_prefetched += bytes;
  } else {
    ++stats_.fetches_demand;
  }
  policy_->on_insert(key);
  return std::span<std::byte>(buffer, bytes);
}

void DeviceCache::complete_fetch(TensorKey key, bool ok) noexcept {
  {
    std::lock_guard lock(mu_);
    Entry& e = entries_[key];
    if (e.state != EntryState::kInFlight) return;
    bytes_in_flight_ -= key_bytes_[key];
    if (ok) {
      e.state = EntryState::kResident;
      e.fresh = true;
      bytes_resident_ += key_bytes_[key];
    } else {
      release_buffer(key);
      e.state = EntryState::kAbsent;
      e.failed = true;
      e.prefetched_unused = false;
      ++stats_.fetches_failed;
      policy_->on_remove(key);
    }
    ++changes_;
  }
  notify_changed();
}

void DeviceCache::clear() noexcept {
  {
    std::lock_guard lock(mu_);
    for (TensorKey k = 0; k < entries_.size(); ++k) {
      if (entries_[k].state == EntryState::kResident && entries_[k].pins == 0) evict_locked(k);
    }
    ++changes_;
  }
  notify_changed();
}

void DeviceCache::check_fits(std::span<const TensorKey> keys, std::string_view what) const {
  std::uint64_t total = 0;
  std::vector<bool> seen(key_bytes_.size(), false);
  for (TensorKey k : keys) {
    if (k >= key_bytes_.size())
      throw ConfigError(fmt::format("{}: tensor key {} out of range", what, k));
    if (!seen[k]) total += key_bytes_[k];
    seen[k] = true;
  }
  if (total > budget_bytes_) {
    throw ConfigError(fmt::format(
        "{} needs {} bytes of tensors at once but the device cache holds only {} bytes; "
        "raise the cache size",
        what, total, budget_bytes_));
  }
}

EntryState DeviceCache::state(TensorKey key) const noexcept {
  std::lock_guard lock(mu_);
  return key < entries_.size() ? entries_[key].state : EntryState::kAbsent;
}

std::uint64_t DeviceCache::bytes_free() const noexcept {
  std::lock_guard lock(mu_);
  return budget_bytes_ - bytes_resident_ - bytes_in_flight_;
}

CacheStats DeviceCache::stats() const noexcept {
  std::lock_guard lock(mu_);
  CacheStats s = stats_;
  s.bytes_resident = bytes_resident_;
  s.bytes_in_flight = bytes_in_flight_;
  return s;
}

std::string DeviceCache::check() const {
  std::lock_guard lock(mu_);
  std::uint64_t resident = 0, in_flight = 0;
  for (TensorKey k = 0; k < entries_.size(); ++k) {
    const Entry& e = entries_[k];
    if (e.state == EntryState::kResident) resident += key_bytes_[k];
    if (e.state == EntryState::kInFlight) in_flight += key_bytes_[k];
    if ((e.state == EntryState::kAbsent) != (e.buffer == nullptr))
      return fmt::format("entry {} buffer/state mismatch", k);
    if (e.state != EntryState::kResident && e.pins != 0)
      return fmt::format("entry {} pinned but not resident", k);
  }
  if (resident != bytes_resident_ || in_flight != bytes_in_flight_)
    return "byte counts do not match entries";
  if (auto problem = ExtentAllocator(const_cast<DeviceCache*>(this)->table()).check();
      !problem.empty()) {
    return "arena: " + problem;
  }
  if (resident + in_flight > budget_bytes_) {
    return fmt::format("budget exceeded: {} + {} > {}", resident, in_flight, budget_bytes_);
  }
  return {};
}

std::string DeviceCache::take_policy_error() noexcept {
  std::lock_guard lock(mu_);
  return policy_->take_error();
}

}  // namespace xlshare
