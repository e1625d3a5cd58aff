#include "xlshare/planner/virtual_clock.hpp"

#include <utility>

#include "xlshare/error.hpp"

namespace xlshare {
namespace {
// The simulated thread running on this OS thread, and its clock.
thread_local VirtualClock* tl_clock = nullptr;
thread_local int tl_sim = -1;
}  // namespace

VirtualClock::~VirtualClock() {
  for (auto& s : sims_) {
    if (s->thread.joinable()) s->thread.join();
  }
}

void VirtualClock::push_locked(std::uint64_t t_ns, int sim, std::function<void()> fn) {
  const std::uint64_t now = now_.load(std::memory_order_relaxed);
  queue_.push(Event{t_ns < now ? now : t_ns, order_++, sim, std::move(fn)});
}

void VirtualClock::at(std::uint64_t t_ns, std::function<void()> fn) {
  std::lock_guard lock(mu_);
  push_locked(t_ns, -1, std::move(fn));
}

void VirtualClock::fail(std::exception_ptr e) noexcept {
  std::lock_guard lock(mu_);
  if (!error_) error_ = std::move(e);
}

bool VirtualClock::drive_locked(std::unique_lock<std::mutex>& lock, int self) {
  for (;;) {
    // Waiting threads whose condition now holds resume at the current time, in order.
    if (dirty_.exchange(false, std::memory_order_relaxed)) {
      for (std::size_t i = 0; i < sims_.size(); ++i) {
        Sim& s = *sims_[i];
        if (s.state == State::kWaiting && (*s.condition)()) {
          s.state = State::kReady;
          push_locked(now_.load(), static_cast<int>(i), {});
        }
      }
    }
    if (queue_.empty()) {
      bool waiting = false;
      for (std::size_t i = 0; i < sims_.size(); ++i) {
        Sim& s = *sims_[i];
        if (s.state != State::kWaiting) continue;
        waiting = true;
        s.deadlocked = true;
        s.state = State::kReady;
        push_locked(now_.load(), static_cast<int>(i), {});
      }
      if (waiting) continue;
      // Every simulated thread has returned: the run is over.
      if (self == -1) return true;
      turn_ = -1;
      main_turn_.notify_one();
      return false;
    }
    Event e = queue_.top();
    queue_.pop();
    ++events_;
    if (e.t_ns > now_.load()) now_.store(e.t_ns, std::memory_order_release);
    if (e.sim < 0) {
      lock.unlock();
      // A callback is not its host thread's simulated thread: its sleeps only move the
      // clock and it may not wait.
      const int host = std::exchange(tl_sim, -1);
      try {
        e.fn();
      } catch (...) {
        fail(std::current_exception());
      }
      tl_sim = host;
      lock.lock();
      continue;
    }
    dirty_.store(true, std::memory_order_relaxed);
    if (e.sim == self) return true;
    turn_ = e.sim;
    sims_[static_cast<std::size_t>(e.sim)]->turn.notify_one();
    return false;
  }
}

void VirtualClock::yield_locked(std::unique_lock<std::mutex>& lock, int id) {
  Sim& s = *sims_[static_cast<std::size_t>(id)];
  if (!drive_locked(lock, id)) s.turn.wait(lock, [&] { return turn_ == id; });
  turn_ = id;
  s.state = State::kRunning;
}

void VirtualClock::sleep_until_ns(std::uint64_t deadline_ns) noexcept {
  if (tl_clock != this || tl_sim < 0) {
    std::uint64_t cur = now_.load(std::memory_order_acquire);
    while (cur < deadline_ns && !now_.compare_exchange_weak(cur, deadline_ns)) {
    }
    return;
  }
  std::unique_lock lock(mu_);
  sims_[static_cast<std::size_t>(tl_sim)]->state = State::kReady;
  push_locked(deadline_ns, tl_sim, {});
  yield_locked(lock, tl_sim);
}

void VirtualClock::wait_for(const std::function<bool()>& done) {
  if (done()) return;
  if (tl_clock != this || tl_sim < 0) {
    throw Error("virtual clock: a wait outside a simulated thread whose condition does not hold");
  }
  std::unique_lock lock(mu_);
  Sim& s = *sims_[static_cast<std::size_t>(tl_sim)];
  s.state = State::kWaiting;
  s.condition = &done;
  yield_locked(lock, tl_sim);
  s.condition = nullptr;
  if (s.deadlocked) {
    s.deadlocked = false;
    throw Error(
        "virtual clock: deadlock: every simulated thread waits and no transfer or event is left "
        "that could wake one");
  }
}

void VirtualClock::thread_main(int id) {
  tl_clock = this;
  tl_sim = id;
  Sim& s = *sims_[static_cast<std::size_t>(id)];
  {
    std::unique_lock lock(mu_);
    s.turn.wait(lock, [&] { return turn_ == id || aborted_; });
    if (aborted_) return;  // run() could not start every thread
    s.state = State::kRunning;
  }
  try {
    s.body();
  } catch (...) {
    fail(std::current_exception());
  }
  std::unique_lock lock(mu_);
  s.state = State::kDone;
  drive_locked(lock, id);  // hands the baton on; this thread's part is over
}

void VirtualClock::run(std::vector<std::function<void()>> threads) {
  {
    std::lock_guard lock(mu_);
    if (running_) throw Error("virtual clock: run() is already in progress");
    running_ = true;
    error_ = nullptr;
    for (auto& body : threads) {
      auto s = std::make_unique<Sim>();
      s->body = std::move(body);
      sims_.push_back(std::move(s));
      push_locked(now_.load(), static_cast<int>(sims_.size() - 1), {});
    }
    try {
      for (std::size_t i = sims_.size() - threads.size(); i < sims_.size(); ++i) {
        sims_[i]->thread = std::thread([this, i] { thread_main(static_cast<int>(i)); });
      }
    } catch (...) {
      // Out of threads: the ones started end without running, and the run fails.
      aborted_ = true;
      for (auto& sim : sims_) sim->turn.notify_one();
      error_ = std::current_exception();
    }
  }
  if (aborted_) {
    for (auto& sim : sims_) {
      if (sim->thread.joinable()) sim->thread.join();
    }
    sims_.clear();
    std::priority_queue<Event, std::vector<Event>, Later>().swap(queue_);
    aborted_ = false;
    running_ = false;
    std::rethrow_exception(std::exchange(error_, nullptr));
  }
  std::unique_lock lock(mu_);
  if (!drive_locked(lock, -1)) main_turn_.wait(lock, [&] { return turn_ == -1; });
  for (auto& s : sims_) {
    if (s->thread.joinable()) {
      lock.unlock();
      s->thread.join();
      lock.lock();
    }
  }
  sims_.clear();
  running_ = false;
  if (error_) std::rethrow_exception(std::exchange(error_, nullptr));
}

}  // namespace xlshare
