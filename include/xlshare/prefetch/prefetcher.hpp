// Prefetcher: drives a PrefetchPolicy against the TransferEngine and the DeviceCache for
// one worker, and is where compute takes its tensors.
//
// Per step: begin_step(s) tells the policy, asks it for a plan and starts those
// prefetches; compute calls acquire(key) for each tensor (a demand fetch when the tensor
// is absent; a wait when it is in flight), and end_step(s) when done. The time compute
// spends inside acquire() waiting is the stall, on the cache's clock.
#pragma once

#include <memory>
#include <vector>

#include "xlshare/cache/device_cache.hpp"
#include "xlshare/cache/transfer_engine.hpp"
#include "xlshare/error.hpp"
#include "xlshare/figures.hpp"
#include "xlshare/prefetch/prefetch_policy.hpp"
#include "xlshare/prefetch/schedule.hpp"

namespace xlshare {

/// How much of a step compute holds at once: all its tensors, or one at a time (the
/// Executor releases each weight before it acquires the next).
enum class StepResidency : std::uint8_t { kWholeStep, kOneTensorAtATime };

class Prefetcher {
 public:
  /// Checks that what compute holds at once fits in the cache: every step's tensors
  /// together (kWholeStep) or every single tensor (kOneTensorAtATime).
  /// @throws ConfigError naming the step when one cannot.
  /// `engine`: a TransferEngine, or the planner's VirtualTransfers.
  Prefetcher(const Schedule& schedule, std::unique_ptr<PrefetchPolicy> policy, Transfers& engine,
             DeviceCache& cache, StepResidency residency = StepResidency::kWholeStep);

  /// @throws PolicyError when a hook of the prefetch policy throws (so does end_step).
  void begin_step(std::size_t step);
  /// The tensor `key`, resident and pinned while the lease lives.
  /// @throws InjectedFault naming the tensor when its transfer failed for good;
  /// PolicyError when a hook of the eviction policy threw.
  DeviceCache::Lease acquire(TensorKey key);
  void end_step(std::size_t step);

  /// The figures of docs/design.md for everything this worker did so far
  /// (figures_between({}, counters())).
  Figures figures() const;
  /// The running totals of the cache, the transfer engine and this prefetcher.
  Counters counters() const;
  PrefetchPolicy& policy() noexcept { return *policy_; }
  const Schedule& schedule() const noexcept { return schedule_; }
  std::uint64_t stall_ns() const noexcept { return stall_ns_; }

 private:
  // A hook of the eviction policy threw (the cache fell back and kept going): this
  // request fails with its message (PolicyError).
  void throw_if_policy_failed();
  // Runs a hook of the prefetch policy; what it throws becomes a PolicyError naming it.
  template <class F>
  void call_policy(F&& hook) {
    try {
      hook();
    } catch (const std::exception& e) {
      throw PolicyError(std::string("prefetch policy '") + std::string(policy_->name()) +
                        "' threw: " + e.what());
    } catch (...) {
      throw PolicyError(std::string("prefetch policy '") + std::string(policy_->name()) +
                        "' threw an exception that is not a std::exception");
    }
  }

  const Schedule& schedule_;
  std::unique_ptr<PrefetchPolicy> policy_;
  Transfers& engine_;
  DeviceCache& cache_;
  std::vector<std::uint64_t> pinned_bytes_;  // by step: what compute holds at once in it
  std::uint64_t stall_ns_ = 0;
};

}  // namespace xlshare
