#include "xlshare/memory/clock.hpp"

#include <time.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

namespace xlshare {
namespace {

constexpr std::uint64_t kSpinBelowNs = 60'000;  // nanosleep overshoots by tens of µs

inline void cpu_relax() noexcept {
#if defined(__x86_64__) || defined(__i386__)
  _mm_pause();
#endif
}

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
  while (now_ns() < deadline_ns) cpu_relax();
}

MonotonicClock& MonotonicClock::instance() noexcept {
  static MonotonicClock clock;
  return clock;
}

}  // namespace xlshare
