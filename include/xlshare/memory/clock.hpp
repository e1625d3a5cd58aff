// Clocks for the link model. The emulator's timing is a pure function of a Clock, so tests
// replace real time with a ManualClock and check exact numbers.
#pragma once

#include <atomic>
#include <cstdint>

namespace xlshare {

/// A source of nanoseconds and a way to wait for one.
class Clock {
 public:
  virtual ~Clock() = default;
  /// Nanoseconds on a clock every process on the host shares (CLOCK_MONOTONIC for real).
  virtual std::uint64_t now_ns() noexcept = 0;
  /// Returns once now_ns() >= deadline_ns.
  virtual void sleep_until_ns(std::uint64_t deadline_ns) noexcept = 0;
};

/// CLOCK_MONOTONIC, which all processes on one host share. Waits sleep for the bulk of the
/// interval and spin for the last few microseconds, so short transfers are paced exactly.
class MonotonicClock final : public Clock {
 public:
  std::uint64_t now_ns() noexcept override;
  void sleep_until_ns(std::uint64_t deadline_ns) noexcept override;
  /// The process-wide instance.
  static MonotonicClock& instance() noexcept;
};

/// A clock that moves only when told to, or when someone sleeps: sleep_until_ns(t)
/// advances it to t (if it is behind). Thread-safe.
class ManualClock final : public Clock {
 public:
  explicit ManualClock(std::uint64_t start_ns = 0) noexcept : now_(start_ns) {}
  std::uint64_t now_ns() noexcept override { return now_.load(std::memory_order_acquire); }
  void sleep_until_ns(std::uint64_t deadline_ns) noexcept override { advance_to(deadline_ns); }
  void advance_to(std::uint64_t t_ns) noexcept {
    std::uint64_t cur = now_.load(std::memory_order_acquire);
    while (cur < t_ns && !now_.compare_exchange_weak(cur, t_ns, std::memory_order_acq_rel)) {
    }
  }
  void advance_by(std::uint64_t dt_ns) noexcept {
    now_.fetch_add(dt_ns, std::memory_order_acq_rel);
  }

 private:
  std::atomic<std::uint64_t> now_;
};

}  // namespace xlshare
