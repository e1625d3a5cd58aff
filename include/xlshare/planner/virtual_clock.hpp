// VirtualClock: simulated time for the near tier. The planner runs the real DeviceCache,
// EvictionPolicy, PrefetchPolicy and Prefetcher on it; nothing sleeps and no bytes move.
//
// Event-driven: the clock holds a queue of events ordered by (time, order scheduled). An
// event is either a callback (`at`) run on the simulation's own thread, or the wake-up of a
// simulated thread. A simulated thread is an OS thread that runs only while it holds the
// baton: exactly one of them (or the simulation itself) runs at a time, so a run is
// deterministic and needs no more locking than the real code has. A simulated thread gives
// the baton back when it sleeps (`sleep_until_ns`: compute that takes time) or waits for a
// condition (`wait_for`: DeviceCache's waits, through CacheWaiter); the clock then jumps to
// the next event. After an event that called notify() (a DeviceCache does on every change)
// or woke a simulated thread, the conditions of waiting threads are checked again; a
// thread whose condition holds resumes at the current time.
//
// When every simulated thread waits and no event is left, the run is a deadlock: the
// waiting threads' wait_for throws Error (the real code would hang there).
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <queue>
#include <thread>
#include <vector>

#include "xlshare/cache/device_cache.hpp"
#include "xlshare/memory/clock.hpp"

namespace xlshare {

class VirtualClock final : public Clock, public CacheWaiter {
 public:
  explicit VirtualClock(std::uint64_t start_ns = 0) noexcept : now_(start_ns) {}
  ~VirtualClock() override;
  VirtualClock(const VirtualClock&) = delete;
  VirtualClock& operator=(const VirtualClock&) = delete;

  /// Runs each of `threads` as a simulated thread, all starting now (in this order), and
  /// returns when every one has returned and no event is left. Rethrows the first
  /// exception a simulated thread or a callback threw (the others still run to the end).
  void run(std::vector<std::function<void()>> threads);
  /// Runs `fn` on the simulation's thread at `t_ns` (now if earlier). Callable from a
  /// simulated thread, a callback, or before run().
  void at(std::uint64_t t_ns, std::function<void()> fn);

  std::uint64_t now_ns() noexcept override { return now_.load(std::memory_order_acquire); }
  /// From a simulated thread: resumes it at `deadline_ns`. Elsewhere (a callback, no run in
  /// progress) it only moves the clock forward.
  void sleep_until_ns(std::uint64_t deadline_ns) noexcept override;
  Clock& clock() noexcept override { return *this; }
  /// Something a waiting condition may depend on changed.
  void notify() noexcept override { dirty_.store(true, std::memory_order_relaxed); }
  /// From a simulated thread: resumes it once `done()` holds. Elsewhere (a callback, no run
  /// in progress) `done()` must already hold. `done` must not throw.
  /// @throws Error on a deadlock.
  void wait_for(const std::function<bool()>& done) override;

  /// Events processed so far (callbacks and wake-ups).
  std::uint64_t events() const noexcept { return events_; }

 private:
  enum class State : std::uint8_t { kReady, kRunning, kWaiting, kDone };
  struct Sim {
    std::function<void()> body;
    std::thread thread;
    std::condition_variable turn;
    State state = State::kReady;
    const std::function<bool()>* condition = nullptr;
    bool deadlocked = false;
  };
  struct Event {
    std::uint64_t t_ns;
    std::uint64_t order;
    int sim;  // -1: a callback
    std::function<void()> fn;
  };
  struct Later {
    bool operator()(const Event& a, const Event& b) const noexcept {
      return a.t_ns != b.t_ns ? a.t_ns > b.t_ns : a.order > b.order;
    }
  };
  void push_locked(std::uint64_t t_ns, int sim, std::function<void()> fn);
  // Processes events on the calling thread, which holds the baton (`self`: its simulated
  // thread, -1 for run()'s), until `self` is due (true) or the baton went to another (false).
  bool drive_locked(std::unique_lock<std::mutex>& lock, int self);
  // From simulated thread `id`, its state set: runs the simulation until it is due again.
  void yield_locked(std::unique_lock<std::mutex>& lock, int id);
  void thread_main(int id);
  void fail(std::exception_ptr e) noexcept;

  std::mutex mu_;
  std::condition_variable main_turn_;
  int turn_ = -1;  // the simulated thread that holds the baton; -1: run()'s thread
  std::atomic<std::uint64_t> now_;
  std::uint64_t order_ = 0;
  std::uint64_t events_ = 0;
  std::priority_queue<Event, std::vector<Event>, Later> queue_;
  std::vector<std::unique_ptr<Sim>> sims_;
  std::exception_ptr error_;
  bool running_ = false;
  bool aborted_ = false;  // run() could not start its threads
  std::atomic<bool> dirty_{true};
};

}  // namespace xlshare
