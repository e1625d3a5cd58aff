// ComputeTeam: the Executor's own compute threads (instead of OpenMP's). Each parallel step
// runs fn(t, n) for every share t of n and returns when all are done. The splits are
// fixed (share t is always the same rows), but a share runs on whichever team thread
// claims it first, the caller included: a member the OS has not scheduled yet (the copy
// placement's transfer threads share the cores) does not hold up the step, the caller
// runs its share too. Between steps an idle member spins for `spin_us` and then sleeps on
// a futex: spinning starts back-to-back steps at once (decode runs ~100 steps a token),
// sleeping gives the cores to whoever else needs them — the transfer threads, which
// OpenMP's spinning barriers starved (measured: docs/results.md).
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

  /// Runs fn(t, size()) for every share t, each once, on whichever team thread claims it
  /// (so scratch must be per thread or per share, never per member), and returns when every
  /// share is done. An exception from any share is rethrown here (the first one), after
  /// all shares finished. One step at a time (the Executor runs one forward at a time).
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
  static std::pair<std::size_t, std::size_t> static_range(std::size_t count, unsigned t,
                                                          unsigned n) noexcept {
    const std::size_t per = (count + n - 1) / n;
    const std::size_t begin = std::min(count, per * t);
    return {begin, std::min(count, begin + per)};
  }

 private:
  using Call = void (*)(void*, unsigned, unsigned);
  void run_step(Call call, void* ctx);
  void stop_members() noexcept;
  bool forked() const noexcept;
  void member();
  // Claims and runs shares of step `generation` until none is left; the first exception
  // of a share goes to error_.
  void run_shares(std::uint32_t generation) noexcept;
  // Waits until `a` differs from `old`: spins spin_us, then sleeps. Returns the new value.
  std::uint32_t await_change(const std::atomic<std::uint32_t>& a, std::uint32_t old) const noexcept;

  const unsigned size_;
  const std::uint32_t spin_us_;
  std::atomic<std::uint32_t> generation_{0};  // bumped per step (and to stop): the futex word
  std::atomic<std::uint64_t> claims_{0};      // the step's generation << 32 | shares claimed
  std::atomic<std::uint32_t> remaining_{0};   // shares of the step not yet finished
  Call call_ = nullptr;
  void* ctx_ = nullptr;
  std::atomic<bool> stopping_{false};  // read by members that may wake after the last step
  std::mutex error_mu_;
  std::exception_ptr error_;  // the first exception of a share this step
  unsigned fork_epoch_ = 0;   // fork()s seen when the members were started
  std::vector<std::thread> threads_;
};

}  // namespace xlshare
