#include "xlshare/memory/clock.hpp"

#include <sched.h>
#include <time.h>

namespace xlshare {
namespace {

constexpr std::uint64_t kSpinBelowNs = 60'000;  // nanosleep overshoots by tens of µs

}  // namespace

std::uint64_t MonotonicClock::now_ns() noexcept {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<std::uint64_t>(ts.tv_sec) * 1'000'000'000ULL +
         static_cast<std::uint64_t>(ts.tv_nsec);
}

void MonotonicClock::sleep_until_ns(std::uint64_t deadline_ns) noexcept {
  std::uint64_t now = now_ns();
  if (now >= deadline_ns) return;
  if (deadline_ns - now > kSpinBelowNs) {
    const std::uint64_t wake = deadline_ns - kSpinBelowNs / 2;
    timespec ts{};
    ts.tv_sec = static_cast<time_t>(wake / 1'000'000'000ULL);
    ts.tv_nsec = static_cast<long>(wake % 1'000'000'000ULL);
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, nullptr) != 0) {
    }
  }
  // The last stretch: yield rather than spin, so that on a busy host (more threads than
  // cores) a waiting transfer gives its core to compute instead of burning it.
  while (now_ns() < deadline_ns) sched_yield();
}

MonotonicClock& MonotonicClock::instance() noexcept {
  static MonotonicClock clock;
  return clock;
}

}  // namespace xlshare
