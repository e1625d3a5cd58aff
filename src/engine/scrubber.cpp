#include "xlshare/engine/scrubber.hpp"

#include <fmt/format.h>
#include <time.h>

#include <algorithm>
#include <chrono>

#include "xlshare/error.hpp"
#include "xlshare/log.hpp"
#include "xlshare/memory/checksum.hpp"
#include "xlshare/memory/clock.hpp"

namespace xlshare {
namespace {

std::uint64_t now_ns() noexcept { return MonotonicClock::instance().now_ns(); }

std::uint64_t thread_cpu_ns() noexcept {
  timespec ts{};
  ::clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<std::uint64_t>(ts.tv_sec) * 1'000'000'000ull +
         static_cast<std::uint64_t>(ts.tv_nsec);
}

// Bytes hashed between two looks at the pacing clock and the stop flag.
constexpr std::uint64_t kChunkBytes = 4u << 20;
// Pacing: the shortest sleep worth taking, and how far behind the rate may fall.
constexpr std::uint64_t kMinSleepNs = 10'000'000;
constexpr std::uint64_t kMaxLagNs = 1'000'000'000;
// How often the background thread publishes its CPU and wall time.
constexpr std::uint64_t kStatsPeriodNs = 50'000'000;
// A pass that found nothing verified to re-check waits this long before the next.
constexpr std::uint64_t kIdleNs = 100'000'000;

}  // namespace

VerifiedMapping::VerifiedMapping(const Pool& primary, std::shared_ptr<const ModelView> view,
                                 const Pool* replica, std::shared_ptr<const ModelView> replica_view,
                                 Verify verify)
    : primary_(primary),
      replica_(replica),
      view_(std::move(view)),
      replica_view_(std::move(replica_view)),
      entries_(view_->tensors().size()),
      reasons_(entries_.size()) {
  if ((replica_ == nullptr) != (replica_view_ == nullptr)) {
    throw ConfigError(
        "verified mapping: a replica pool needs the replica's model view, and the other way round");
  }
  const auto tensors = view_->tensors();
  if (replica_view_ && replica_view_->tensors().size() != tensors.size()) {
    throw PoolError(fmt::format("replica pool {} holds a different model '{}': {} tensors, not {}",
                                replica_->uri(), replica_view_->name(),
                                replica_view_->tensors().size(), tensors.size()));
  }
  for (std::size_t i = 0; i < tensors.size(); ++i) {
    const TensorInfo& t = tensors[i];
    Entry& e = entries_[i];
    e.checksum = t.checksum;
    e.primary = primary_.view(t);
    if (e.primary.size() != t.size_bytes) {
      throw PoolError(fmt::format("{}: tensor '{}' of model '{}' lies outside the pool mapping",
                                  primary_.uri(), t.name, view_->name()));
    }
    e.tile_bytes = t.tile_bytes;
    e.tile_sums = t.tile_checksums();
    if (e.tile_bytes == 0 ||
        e.tile_sums.size() != (t.size_bytes + e.tile_bytes - 1) / e.tile_bytes) {
      throw PoolError(fmt::format("{}: tensor '{}' of model '{}' has no valid tiling",
                                  primary_.uri(), t.name, view_->name()));
    }
    e.tiles = std::vector<std::atomic<std::uint8_t>>(e.tile_sums.size());
    e.pending = e.tile_sums.size();
    if (e.pending == 0) e.verified.store(kVerified, std::memory_order_relaxed);
    if (replica_view_) {
      const TensorInfo& r = replica_view_->tensors()[i];
      e.replica = replica_->view(r);
      if (e.replica.size() != t.size_bytes || r.checksum != t.checksum ||
          r.tile_bytes != t.tile_bytes ||
          !std::ranges::equal(r.tile_checksums(), t.tile_checksums())) {
        throw PoolError(
            fmt::format("replica pool {} holds a different model '{}': tensor '{}' differs",
                        replica_->uri(), replica_view_->name(), t.name));
      }
    }
  }
  if (verify == Verify::kNow) {
    for (std::size_t i = 0; i < tensors.size(); ++i) ensure_verified(i);
  }
}

void VerifiedMapping::tile_done_locked(Entry& e, std::size_t tile) {
  if (e.tiles[tile].exchange(kVerified, std::memory_order_acq_rel) == kVerified) return;
  if (e.pending > 0 && --e.pending == 0) e.verified.store(kVerified, std::memory_order_release);
}

template <class Reason>
void VerifiedMapping::switch_or_fail_locked(std::size_t index, Source from, Reason&& failure) {
  Entry& e = entries_[index];
  if (e.source.load(std::memory_order_acquire) != static_cast<std::uint8_t>(from)) return;
  bool replica_checked = false;
  if (from == Source::kPrimary && replica_ != nullptr) {
    replica_checked = true;
    verify_bytes_.fetch_add(e.replica.size(), std::memory_order_relaxed);
    if (checksum64(e.replica) == e.checksum) {
      e.source.store(static_cast<std::uint8_t>(Source::kReplica), std::memory_order_release);
      for (std::size_t k = 0; k < e.tiles.size(); ++k)
        e.tiles[k].store(kVerified, std::memory_order_release);
      e.pending = 0;
      e.verified.store(kVerified, std::memory_order_release);
      failovers_.fetch_add(1, std::memory_order_relaxed);
      epoch_.fetch_add(1, std::memory_order_acq_rel);
      logger().warn("tensor '{}' of model '{}' failed its check in {}; reading it from the replica",
                    view_->tensors()[index].name, view_->name(), primary_.uri());
      return;
    }
  }
  reasons_[index] = failure(replica_checked);
  logger().error("{}", reasons_[index]);
  e.source.store(static_cast<std::uint8_t>(Source::kFailed), std::memory_order_release);
  failed_.fetch_add(1, std::memory_order_release);
  epoch_.fetch_add(1, std::memory_order_acq_rel);
}

void VerifiedMapping::verify_tile(std::size_t index, std::size_t tile) {
  Entry& e = entries_[index];
  try {
    const std::uint64_t t0 = now_ns();
    const auto from = static_cast<Source>(e.source.load(std::memory_order_acquire));
    const std::span<const std::byte> copy = from == Source::kReplica ? e.replica : e.primary;
    const std::uint64_t at = tile * e.tile_bytes, n = std::min(e.tile_bytes, copy.size() - at);
    const bool ok = from == Source::kFailed || checksum64(copy.subspan(at, n)) == e.tile_sums[tile];
    verify_bytes_.fetch_add(n, std::memory_order_relaxed);
    {
      std::lock_guard lock(mu_);
      if (!ok) {
        // The copy changed since the model was sealed: the replica's, or nothing.
        mismatches_.fetch_add(1, std::memory_order_relaxed);
        switch_or_fail_locked(index, from, [&](bool replica_checked) {
          const Pool& pool = from == Source::kPrimary ? primary_ : *replica_;
          return fmt::format(
              "{}: tensor '{}' of model '{}' does not match its checksum{}", pool.uri(),
              view_->tensors()[index].name, view_->name(),
              replica_checked ? fmt::format(", nor does the replica's copy in {}", replica_->uri())
              : replica_ == nullptr
                  ? std::string(" (no replica configured)")
                  : fmt::format(" (the primary's copy in {} failed before)", primary_.uri()));
        });
      }
      tile_done_locked(e, tile);
    }
    verified_cv_.notify_all();
    verify_ns_.fetch_add(now_ns() - t0, std::memory_order_relaxed);
  } catch (...) {
    // Out of memory formatting a reason: the tile is unverified again, and whoever waits
    // for it takes it over instead of waiting for ever.
    {
      std::lock_guard lock(mu_);
      std::uint8_t verifying = kVerifying;
      e.tiles[tile].compare_exchange_strong(verifying, kUnverified, std::memory_order_acq_rel);
    }
    verified_cv_.notify_all();
    throw;
  }
}

void VerifiedMapping::ensure_verified(std::size_t index, std::uint64_t offset,
                                      std::uint64_t bytes) {
  if (index >= entries_.size()) throw_failed(index);
  Entry& e = entries_[index];
  if (e.verified.load(std::memory_order_acquire) != kVerified) {
    const std::uint64_t size = e.primary.size();
    const std::uint64_t begin = std::min(offset, size);
    const std::uint64_t end = bytes > size - begin ? size : begin + bytes;
    const std::size_t first = static_cast<std::size_t>(begin / e.tile_bytes);
    const std::size_t last = static_cast<std::size_t>((end + e.tile_bytes - 1) / e.tile_bytes);
    for (std::size_t tile = first; tile < last; ++tile) {
      for (;;) {
        std::uint8_t state = e.tiles[tile].load(std::memory_order_acquire);
        if (state == kVerified) break;
        if (state == kUnverified &&
            e.tiles[tile].compare_exchange_strong(state, kVerifying, std::memory_order_acq_rel)) {
          verify_tile(index, tile);
          break;
        }
        // Another thread is verifying it (the verifier ahead of compute): wait for it, and
        // take it over if that thread gave up (it threw).
        std::unique_lock lock(mu_);
        verified_cv_.wait(
            lock, [&] { return e.tiles[tile].load(std::memory_order_acquire) != kVerifying; });
      }
    }
  }
  if (e.source.load(std::memory_order_acquire) == static_cast<std::uint8_t>(Source::kFailed))
    throw_failed(index);
}

void VerifiedMapping::prefault(std::size_t index) const noexcept {
  if (index >= entries_.size()) return;
  const Entry& e = entries_[index];
  const bool replica =
      e.source.load(std::memory_order_acquire) == static_cast<std::uint8_t>(Source::kReplica);
  prefault_pages(replica ? e.replica : e.primary);
}

void VerifiedMapping::fail_over(std::size_t index, std::string_view why) {
  if (index >= entries_.size()) return;
  {
    std::lock_guard lock(mu_);
    switch_or_fail_locked(index, Source::kPrimary, [&](bool replica_checked) {
      return fmt::format(
          "{}: tensor '{}' of model '{}': {}{}", primary_.uri(), view_->tensors()[index].name,
          view_->name(), why,
          replica_checked ? ", and the replica's copy does not verify" : "; no replica configured");
    });
  }
  verified_cv_.notify_all();
}

std::span<const std::byte> VerifiedMapping::copy(std::size_t index, Source from) const noexcept {
  if (index >= entries_.size()) return {};
  switch (from) {
    case Source::kPrimary:
      return entries_[index].primary;
    case Source::kReplica:
      return entries_[index].replica;
    case Source::kFailed:
      break;
  }
  return {};
}

void VerifiedMapping::throw_failed(std::size_t index) const {
  std::lock_guard lock(mu_);
  if (index == SIZE_MAX) {
    for (std::size_t i = 0; i < entries_.size(); ++i) {
      if (!reasons_[i].empty()) throw PoolError(reasons_[i]);
    }
    throw PoolError(fmt::format("{}: model '{}' has a tensor with no verified copy", primary_.uri(),
                                view_->name()));
  }
  if (index >= entries_.size()) {
    throw ConfigError(
        fmt::format("model '{}': no tensor {} (it has {})", view_->name(), index, entries_.size()));
  }
  if (!reasons_[index].empty()) throw PoolError(reasons_[index]);
  throw PoolError(fmt::format("{}: tensor '{}' of model '{}' has no verified copy", primary_.uri(),
                              view_->tensors()[index].name, view_->name()));
}

void VerifiedMapping::report_mismatch(std::size_t index, Source from) {
  if (index >= entries_.size() || from == Source::kFailed) return;
  {
    std::lock_guard lock(mu_);
    if (entries_[index].source.load(std::memory_order_acquire) != static_cast<std::uint8_t>(from))
      return;
    mismatches_.fetch_add(1, std::memory_order_relaxed);
    switch_or_fail_locked(index, from, [&](bool replica_checked) {
      const Pool& pool = from == Source::kPrimary ? primary_ : *replica_;
      return fmt::format(
          "{}: tensor '{}' of model '{}' changed after it was verified (its checksum no longer "
          "matches){}",
          pool.uri(), view_->tensors()[index].name, view_->name(),
          replica_checked ? fmt::format(", nor does the replica's copy in {}", replica_->uri())
          : replica_ == nullptr
              ? std::string("; no replica configured")
              : fmt::format(", and the primary's copy in {} failed before", primary_.uri()));
    });
  }
  verified_cv_.notify_all();
}

ScrubStats VerifiedMapping::stats() const noexcept {
  ScrubStats s;
  s.verify_ns = verify_ns_.load(std::memory_order_relaxed);
  s.verify_bytes = verify_bytes_.load(std::memory_order_relaxed);
  s.mismatches = mismatches_.load(std::memory_order_relaxed);
  s.failovers = failovers_.load(std::memory_order_relaxed);
  s.failed = failed_.load(std::memory_order_relaxed);
  return s;
}

Scrubber::Scrubber(std::shared_ptr<VerifiedMapping> mapping, std::uint64_t bytes_per_s)
    : mapping_(std::move(mapping)), bytes_per_s_(bytes_per_s) {
  if (!mapping_) throw ConfigError("scrubber: no mapping");
  if (bytes_per_s_ > 0) thread_ = std::thread([this] { run(); });
}

Scrubber::~Scrubber() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
}

std::uint64_t Scrubber::scrub_now() {
  std::uint64_t found = 0;
  for (std::size_t i = 0; i < mapping_->size(); ++i) {
    if (!scrub_tensor(i, false)) ++found;
  }
  passes_.fetch_add(1, std::memory_order_relaxed);
  return found;
}

ScrubStats Scrubber::stats() const noexcept {
  ScrubStats s = mapping_->stats();
  s.bytes_scrubbed = bytes_scrubbed_.load(std::memory_order_relaxed);
  s.passes = passes_.load(std::memory_order_relaxed);
  s.cpu_ns = cpu_ns_.load(std::memory_order_relaxed);
  s.wall_ns = wall_ns_.load(std::memory_order_relaxed);
  return s;
}

bool Scrubber::scrub_tensor(std::size_t index, bool paced) {
  const VerifiedMapping::Source from = mapping_->source(index);
  if (from == VerifiedMapping::Source::kFailed) return true;  // nothing left to check
  const std::span<const std::byte> bytes = mapping_->copy(index, from);
  const std::uint64_t tile_bytes = mapping_->tile_bytes(index);
  std::uint64_t unpaced = 0;  // bytes hashed since the last look at the pacing clock
  for (std::size_t tile = 0; tile < mapping_->tile_count(index); ++tile) {
    // Only what this process verified (and may be using): a tile never used is verified
    // on its first use, and hashing it here would map it for nothing.
    if (!mapping_->tile_verified(index, tile)) continue;
    const std::uint64_t at = tile * tile_bytes, n = std::min(tile_bytes, bytes.size() - at);
    const bool ok = checksum64(bytes.subspan(at, n)) == mapping_->tile_checksum(index, tile);
    bytes_scrubbed_.fetch_add(n, std::memory_order_relaxed);
    if (!ok) {
      mapping_->report_mismatch(index, from);
      return false;
    }
    unpaced += n;
    if (!paced || (unpaced < kChunkBytes && tile + 1 < mapping_->tile_count(index))) continue;
    // The bytes hashed so far are due at the configured rate: sleep off the lead once it
    // is worth a sleep (small tensors add up). A scrubber that fell far behind (the machine
    // was busy) does not burst to catch up.
    std::unique_lock lock(mu_);
    const std::uint64_t now = now_ns();
    deadline_ns_ = std::max(deadline_ns_, now > kMaxLagNs ? now - kMaxLagNs : 0) +
                   unpaced * 1'000'000'000ull / bytes_per_s_;
    unpaced = 0;
    if (deadline_ns_ > now + kMinSleepNs) {
      wake_.wait_for(lock, std::chrono::nanoseconds(deadline_ns_ - now), [&] { return stopping_; });
    }
    if (stopping_) return true;
  }
  return true;
}

void Scrubber::run() noexcept {
  const std::uint64_t cpu0 = thread_cpu_ns(), wall0 = now_ns();
  deadline_ns_ = wall0;
  for (;;) {
    {
      std::lock_guard lock(mu_);
      if (stopping_) return;
    }
    bool any = false;
    const std::uint64_t scrubbed_before = bytes_scrubbed_.load(std::memory_order_relaxed);
    for (std::size_t i = 0; i < mapping_->size(); ++i) {
      try {
        (void)scrub_tensor(i, true);
      } catch (...) {
        // Only formatting a failure's reason can throw (out of memory): the tensor is
        // checked again next pass.
      }
      any = any || mapping_->source(i) != VerifiedMapping::Source::kFailed;
      // The thread's CPU time costs a system call: read it a few times a second, not per
      // tensor (small models have hundreds of tiny ones).
      const std::uint64_t now = now_ns();
      if (now - wall0 >= wall_ns_.load(std::memory_order_relaxed) + kStatsPeriodNs) {
        cpu_ns_.store(thread_cpu_ns() - cpu0, std::memory_order_relaxed);
        wall_ns_.store(now - wall0, std::memory_order_relaxed);
      }
      std::lock_guard lock(mu_);
      if (stopping_) return;
    }
    passes_.fetch_add(1, std::memory_order_relaxed);
    if (!any || mapping_->size() == 0) {  // nothing left to check: wait to be stopped
      std::unique_lock lock(mu_);
      wake_.wait(lock, [&] { return stopping_; });
      return;
    }
    if (bytes_scrubbed_.load(std::memory_order_relaxed) == scrubbed_before) {
      // Nothing verified yet (nothing used): look again later, not in a spin.
      std::unique_lock lock(mu_);
      wake_.wait_for(lock, std::chrono::nanoseconds(kIdleNs), [&] { return stopping_; });
    }
  }
}

}  // namespace xlshare
