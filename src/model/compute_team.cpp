#include "model/compute_team.hpp"

#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <pthread.h>

#include <chrono>
#include <climits>
#include <exception>
#include <mutex>
#include <utility>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace xlshare {
namespace {

inline void cpu_relax() noexcept {
#if defined(__x86_64__)
  _mm_pause();
#else
  std::this_thread::yield();
#endif
}

// Raw futexes (Linux): a waiter sleeps only while the word still holds the value it saw.
void futex_wait(const std::atomic<std::uint32_t>& a, std::uint32_t old) noexcept {
  ::syscall(SYS_futex, reinterpret_cast<const std::uint32_t*>(&a), FUTEX_WAIT_PRIVATE, old, nullptr,
            nullptr, 0);
}
void futex_wake(std::atomic<std::uint32_t>& a) noexcept {
  ::syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(&a), FUTEX_WAKE_PRIVATE, INT_MAX, nullptr,
            nullptr, 0);
}

static_assert(sizeof(std::atomic<std::uint32_t>) == sizeof(std::uint32_t) &&
              std::atomic<std::uint32_t>::is_always_lock_free);

// Children of fork() count up; a team started before the fork has no threads there.
std::atomic<unsigned> g_fork_epoch{0};
void count_fork() noexcept { g_fork_epoch.fetch_add(1, std::memory_order_relaxed); }
const bool g_fork_handler = [] { return ::pthread_atfork(nullptr, nullptr, count_fork) == 0; }();

}  // namespace

bool ComputeTeam::forked() const noexcept {
  return g_fork_epoch.load(std::memory_order_relaxed) != fork_epoch_;
}

ComputeTeam::ComputeTeam(unsigned threads, std::uint32_t spin_us)
    : size_(threads == 0 ? 1 : threads),
      spin_us_(spin_us),
      fork_epoch_(g_fork_epoch.load(std::memory_order_relaxed)) {
  (void)g_fork_handler;
  threads_.reserve(size_ - 1);
  try {
    for (unsigned t = 1; t < size_; ++t) threads_.emplace_back([this] { member(); });
  } catch (...) {
    stop_members();  // those started: a joinable std::thread must not be destroyed
    throw;
  }
}

void ComputeTeam::stop_members() noexcept {
  stopping_.store(true, std::memory_order_release);
  generation_.fetch_add(1, std::memory_order_release);
  futex_wake(generation_);
  for (auto& th : threads_) th.join();
}

ComputeTeam::~ComputeTeam() {
  if (forked()) {
    // The members do not exist in this process: nothing to join or detach. Their handles
    // are left alone (destroying a joinable std::thread would terminate).
    new std::vector<std::thread>(std::move(threads_));  // NOLINT: deliberately leaked
    return;
  }
  stop_members();
}

std::uint32_t ComputeTeam::await_change(const std::atomic<std::uint32_t>& a,
                                        std::uint32_t old) const noexcept {
  std::uint32_t now = a.load(std::memory_order_acquire);
  if (now != old) return now;
  if (spin_us_ > 0) {
    const auto until = std::chrono::steady_clock::now() + std::chrono::microseconds(spin_us_);
    for (unsigned i = 1;; ++i) {
      cpu_relax();
      now = a.load(std::memory_order_acquire);
      if (now != old) return now;
      if (i % 64 == 0 && std::chrono::steady_clock::now() >= until) break;
    }
  }
  for (;;) {
    futex_wait(a, old);  // returns at once when `a` is no longer `old`
    now = a.load(std::memory_order_acquire);
    if (now != old) return now;
  }
}

void ComputeTeam::run_shares(std::uint32_t generation) noexcept {
  // A claim is a compare-and-swap on (generation, count): a member that wakes late, after
  // its step ended, claims nothing of the next one (its generation differs), and one that
  // holds a claim keeps the step's call_ and ctx_ alive (the caller waits for remaining_).
  std::uint64_t c = claims_.load(std::memory_order_acquire);
  for (;;) {
    if (c >> 32 != generation || (c & 0xffffffffu) >= size_) return;
    if (!claims_.compare_exchange_weak(c, c + 1, std::memory_order_acq_rel,
                                       std::memory_order_acquire))
      continue;
    const auto t = static_cast<unsigned>(c & 0xffffffffu);
    try {
      call_(ctx_, t, size_);
    } catch (...) {
      std::lock_guard lock(error_mu_);  // before the share counts as finished
      if (!error_) error_ = std::current_exception();
    }
    if (remaining_.fetch_sub(1, std::memory_order_acq_rel) == 1) futex_wake(remaining_);
    c = claims_.load(std::memory_order_acquire);
  }
}

void ComputeTeam::run_step(Call call, void* ctx) {
  call_ = call;
  ctx_ = ctx;
  remaining_.store(size_, std::memory_order_relaxed);
  const std::uint32_t generation = generation_.load(std::memory_order_relaxed) + 1;
  claims_.store(std::uint64_t{generation} << 32,
                std::memory_order_release);  // publishes call_ and ctx_
  generation_.store(generation, std::memory_order_release);
  futex_wake(generation_);
  // The shares use the caller's frame: wait for all of them even when one throws, then
  // pass on the first exception.
  run_shares(generation);
  for (std::uint32_t left = remaining_.load(std::memory_order_acquire); left != 0;)
    left = await_change(remaining_, left);
  std::exception_ptr error;
  {
    std::lock_guard lock(error_mu_);
    error = std::exchange(error_, nullptr);
  }
  if (error) std::rethrow_exception(error);
}

void ComputeTeam::member() {
  std::uint32_t seen = 0;  // not a load: the first step may have been posted before this thread ran
  for (;;) {
    seen = await_change(generation_, seen);
    if (stopping_.load(std::memory_order_acquire)) return;
    run_shares(seen);
  }
}

}  // namespace xlshare
