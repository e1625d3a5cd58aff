// ComputeTeam: the Executor's own compute threads (instead of OpenMP's). Each parallel step
// runs fn(t, n) on every member t of n, the caller being member 0, and returns when all are
// done. Between steps an idle member spins for `spin_us` and then sleeps on a futex:
// spinning starts back-to-back steps at once (decode runs ~100 steps
// a token), sleeping gives the cores to whoever else needs them — the copy placement's
// transfer threads, which OpenMP's spinning barriers starved (measured: docs/results.md).
#pragma once

#include <atomic>
#include <cstdint>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

namespace xlshare {

class ComputeTeam {
 public:
  ComputeTeam(unsigned threads, std::uint32_t spin_us);
  ~ComputeTeam();
  ComputeTeam(const ComputeTeam&) = delete;
  ComputeTeam& operator=(const ComputeTeam&) = delete;

  unsigned size() const noexcept { return size_; }

  /// Runs fn(t, size()) for every member t; member 0 on the calling thread, and returns when
  /// every share is done. An exception from any share is rethrown here (the first one),
  /// after all shares finished. One step at a time (the Executor runs one forward at a time).
  template <class F>
  void run(F&& fn) {
    if (size_ == 1 || forked()) {
      // One member, or a child process of a fork (it has no member threads): every share
      // on this thread, split as ever, so the numbers do not change.
      for (unsigned t = 0; t < size_; ++t) fn(t, size_);
      return;
    }
    run_step([](void* ctx, unsigned t, unsigned n) { (*static_cast<F*>(ctx))(t, n); }, &fn);
  }

  /// Rows [begin, end) of `count` split as OpenMP's static schedule splits them: contiguous,
  /// ceil(count / n) each.
  static std::pair<std::size_t, std::size_t> static_range(std::size_t count, unsigned t, unsigned n) noexcept {
    const std::size_t per = (count + n - 1) / n;
    const std::size_t begin = std::min(count, per * t);
    return {begin, std::min(count, begin + per)};
  }

 private:
  using Call = void (*)(void*, unsigned, unsigned);
  void run_step(Call call, void* ctx);
  void stop_members() noexcept;
  bool forked() const noexcept;
  void member(unsigned t);
  // Waits until `a` differs from `old`: spins spin_us, then sleeps. Returns the new value.
  std::uint32_t await_change(const std::atomic<std::uint32_t>& a, std::uint32_t old) const noexcept;

  const unsigned size_;
  const std::uint32_t spin_us_;
  std::atomic<std::uint32_t> generation_{0};  // bumped per step (and to stop)
  std::atomic<std::uint32_t> remaining_{0};   // members still running the step
  Call call_ = nullptr;
  void* ctx_ = nullptr;
  bool stopping_ = false;
  std::mutex error_mu_;
  std::exception_ptr member_error_;  // the first exception of a member's share this step
  unsigned fork_epoch_ = 0;  // fork()s seen when the members were started
  std::vector<std::thread> threads_;
};

}  // namespace xlshare
