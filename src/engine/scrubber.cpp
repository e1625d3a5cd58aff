#include "xlshare/engine/scrubber.hpp"

#include <fmt/format.h>
#include <time.h>

#include <algorithm>
#include <chrono>

#include "xlshare/error.hpp"
#include "xlshare/memory/checksum.hpp"
#include "xlshare/memory/clock.hpp"

namespace xlshare {
namespace {

std::uint64_t now_ns() noexcept { return MonotonicClock::instance().now_ns(); }

std::uint64_t thread_cpu_ns() noexcept {
  timespec ts{};
  ::clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<std::uint64_t>(ts.tv_sec) * 1'000'000'000ull + static_cast<std::uint64_t>(ts.tv_nsec);
}

// Bytes hashed between two looks at the pacing clock and the stop flag.
constexpr std::uint64_t kChunkBytes = 4u << 20;
// Pacing: the shortest sleep worth taking, and how far behind the rate may fall.
constexpr std::uint64_t kMinSleepNs = 10'000'000;
constexpr std::uint64_t kMaxLagNs = 1'000'000'000;
// How often the background thread publishes its CPU and wall time.
constexpr std::uint64_t kStatsPeriodNs = 50'000'000;

}  // namespace

VerifiedMapping::VerifiedMapping(const Pool& primary, std::shared_ptr<const ModelView> view, const Pool* replica,
                                 std::shared_ptr<const ModelView> replica_view, Verify verify)
    : primary_(primary),
      replica_(replica),
      view_(std::move(view)),
      replica_view_(std::move(replica_view)),
      entries_(view_->tensors().size()),
      reasons_(entries_.size()) {
  if ((replica_ == nullptr) != (replica_view_ == nullptr)) {
    throw ConfigError("verified mapping: a replica pool needs the replica's model view, and the other way round");
  }
  const auto tensors = view_->tensors();
  if (replica_view_ && replica_view_->tensors().size() != tensors.size()) {
    throw PoolError(fmt::format("replica pool {} holds a different model '{}': {} tensors, not {}", replica_->uri(),
                                replica_view_->name(), replica_view_->tensors().size(), tensors.size()));
  }
  for (std::size_t i = 0; i < tensors.size(); ++i) {
    const TensorInfo& t = tensors[i];
    Entry& e = entries_[i];
    e.checksum = t.checksum;
    e.primary = primary_.view(t);
    if (e.primary.size() != t.size_bytes) {
      throw PoolError(fmt::format("{}: tensor '{}' of model '{}' lies outside the pool mapping", primary_.uri(), t.name,
                                  view_->name()));
    }
    if (replica_view_) {
      const TensorInfo& r = replica_view_->tensors()[i];
      e.replica = replica_->view(r);
      if (e.replica.size() != t.size_bytes || r.checksum != t.checksum) {
        throw PoolError(fmt::format("replica pool {} holds a different model '{}': tensor '{}' differs", replica_->uri(),
                                    replica_view_->name(), t.name));
      }
    }
  }
  if (verify == Verify::kNow) {
    for (std::size_t i = 0; i < tensors.size(); ++i) ensure_verified(i);
  }
}

void VerifiedMapping::ensure_verified(std::size_t index) {
  if (index >= entries_.size()) throw_failed(index);
  Entry& e = entries_[index];
  std::uint8_t state = e.verified.load(std::memory_order_acquire);
  if (state == kVerified) return;
  if (state == kUnverified && e.verified.compare_exchange_strong(state, kVerifying, std::memory_order_acq_rel)) {
    const std::uint64_t t0 = now_ns();
    const TensorInfo& t = view_->tensors()[index];
    std::uint64_t hashed = t.size_bytes;
    std::string failure;
    if (checksum64(e.primary) != t.checksum) {
      // The primary's copy changed since the model was sealed: the replica's, or nothing.
      mismatches_.fetch_add(1, std::memory_order_relaxed);
      if (!replica_view_) {
        failure = fmt::format("{}: tensor '{}' of model '{}' does not match its checksum (no replica configured)",
                              primary_.uri(), t.name, view_->name());
      } else {
        hashed += t.size_bytes;
        if (checksum64(e.replica) != t.checksum) {
          failure = fmt::format("{}: tensor '{}' of model '{}' does not match its checksum, nor does the replica's "
                                "copy in {}",
                                primary_.uri(), t.name, view_->name(), replica_->uri());
        } else {
          e.source.store(static_cast<std::uint8_t>(Source::kReplica), std::memory_order_release);
          failovers_.fetch_add(1, std::memory_order_relaxed);
          epoch_.fetch_add(1, std::memory_order_acq_rel);
        }
      }
    }
    if (!failure.empty()) {
      std::lock_guard lock(mu_);
      reasons_[index] = failure;
      e.source.store(static_cast<std::uint8_t>(Source::kFailed), std::memory_order_release);
      failed_.fetch_add(1, std::memory_order_release);
      epoch_.fetch_add(1, std::memory_order_acq_rel);
    }
    verify_bytes_.fetch_add(hashed, std::memory_order_relaxed);
    verify_ns_.fetch_add(now_ns() - t0, std::memory_order_relaxed);
    {
      std::lock_guard lock(mu_);
      e.verified.store(kVerified, std::memory_order_release);
    }
    verified_cv_.notify_all();
  } else {
    // Another thread is verifying it (the verifier ahead of compute): wait for it.
    std::unique_lock lock(mu_);
    verified_cv_.wait(lock, [&] { return e.verified.load(std::memory_order_acquire) == kVerified; });
  }
  if (e.source.load(std::memory_order_acquire) == static_cast<std::uint8_t>(Source::kFailed)) throw_failed(index);
}

void VerifiedMapping::prefault(std::size_t index) const noexcept {
  if (index >= entries_.size()) return;
  const Entry& e = entries_[index];
  const bool replica = e.source.load(std::memory_order_acquire) == static_cast<std::uint8_t>(Source::kReplica);
  prefault_pages(replica ? e.replica : e.primary);
}

void VerifiedMapping::fail_over(std::size_t index, std::string_view why) {
  if (index >= entries_.size()) return;
  std::lock_guard lock(mu_);
  Entry& e = entries_[index];
  if (e.source.load(std::memory_order_acquire) != static_cast<std::uint8_t>(Source::kPrimary)) return;
  if (replica_ != nullptr && checksum64(e.replica) == e.checksum) {
    e.source.store(static_cast<std::uint8_t>(Source::kReplica), std::memory_order_release);
    failovers_.fetch_add(1, std::memory_order_relaxed);
  } else {
    reasons_[index] = fmt::format("{}: tensor '{}' of model '{}': {}{}", primary_.uri(), view_->tensors()[index].name,
                                  view_->name(), why, replica_ == nullptr ? "; no replica configured"
                                                                          : ", and the replica's copy does not verify");
    e.source.store(static_cast<std::uint8_t>(Source::kFailed), std::memory_order_release);
    failed_.fetch_add(1, std::memory_order_release);
  }
  epoch_.fetch_add(1, std::memory_order_acq_rel);
}

std::span<const std::byte> VerifiedMapping::copy(std::size_t index, Source from) const noexcept {
  if (index >= entries_.size()) return {};
  switch (from) {
    case Source::kPrimary: return entries_[index].primary;
    case Source::kReplica: return entries_[index].replica;
    case Source::kFailed: break;
  }
  return {};
}

void VerifiedMapping::throw_failed(std::size_t index) const {
  std::lock_guard lock(mu_);
  if (index == SIZE_MAX) {
    for (std::size_t i = 0; i < entries_.size(); ++i) {
      if (!reasons_[i].empty()) throw PoolError(reasons_[i]);
    }
    throw PoolError(fmt::format("{}: model '{}' has a tensor with no verified copy", primary_.uri(), view_->name()));
  }
  if (index >= entries_.size()) {
    throw ConfigError(fmt::format("model '{}': no tensor {} (it has {})", view_->name(), index, entries_.size()));
  }
  if (!reasons_[index].empty()) throw PoolError(reasons_[index]);
  throw PoolError(fmt::format("{}: tensor '{}' of model '{}' has no verified copy", primary_.uri(),
                              view_->tensors()[index].name, view_->name()));
}

void VerifiedMapping::report_mismatch(std::size_t index, Source from) {
  if (index >= entries_.size() || from == Source::kFailed) return;
  std::lock_guard lock(mu_);
  Entry& e = entries_[index];
  if (e.source.load(std::memory_order_acquire) != static_cast<std::uint8_t>(from)) return;
  mismatches_.fetch_add(1, std::memory_order_relaxed);
  const std::string& name = view_->tensors()[index].name;
  if (from == Source::kPrimary && replica_ != nullptr && checksum64(e.replica) == e.checksum) {
    e.source.store(static_cast<std::uint8_t>(Source::kReplica), std::memory_order_release);
    failovers_.fetch_add(1, std::memory_order_relaxed);
  } else {
    const Pool& pool = from == Source::kPrimary ? primary_ : *replica_;
    reasons_[index] = fmt::format(
        "{}: tensor '{}' of model '{}' changed after it was verified (its checksum no longer matches){}", pool.uri(),
        name, view_->name(),
        replica_ == nullptr            ? "; no replica configured"
        : from == Source::kPrimary     ? fmt::format(", nor does the replica's copy in {}", replica_->uri())
                                       : fmt::format(", and the primary's copy in {} failed before", primary_.uri()));
    e.source.store(static_cast<std::uint8_t>(Source::kFailed), std::memory_order_release);
    failed_.fetch_add(1, std::memory_order_release);
  }
  epoch_.fetch_add(1, std::memory_order_acq_rel);
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
  if (!mapping_->verified(index)) return true;  // its first use verifies it
  const std::span<const std::byte> bytes = mapping_->copy(index, from);
  if (!paced) {
    bytes_scrubbed_.fetch_add(bytes.size(), std::memory_order_relaxed);
    if (checksum64(bytes) == mapping_->checksum(index)) return true;
    mapping_->report_mismatch(index, from);
    return false;
  }
  Checksum64 sum;
  for (std::uint64_t done = 0; done < bytes.size();) {
    const std::uint64_t n = std::min<std::uint64_t>(kChunkBytes, bytes.size() - done);
    sum.update(bytes.subspan(done, n));
    done += n;
    bytes_scrubbed_.fetch_add(n, std::memory_order_relaxed);
    // The bytes hashed so far are due at the configured rate: sleep off the lead once it
    // is worth a sleep (small tensors add up). A scrubber that fell far behind (the machine
    // was busy) does not burst to catch up.
    std::unique_lock lock(mu_);
    const std::uint64_t now = now_ns();
    deadline_ns_ = std::max(deadline_ns_, now > kMaxLagNs ? now - kMaxLagNs : 0) +
                   n * 1'000'000'000ull / bytes_per_s_;
    if (deadline_ns_ > now + kMinSleepNs) {
      wake_.wait_for(lock, std::chrono::nanoseconds(deadline_ns_ - now), [&] { return stopping_; });
    }
    if (stopping_) return true;
  }
  if (sum.digest() == mapping_->checksum(index)) return true;
  mapping_->report_mismatch(index, from);
  return false;
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
  }
}

}  // namespace xlshare
