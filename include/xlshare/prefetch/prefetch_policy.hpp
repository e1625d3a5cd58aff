// PrefetchPolicy: given the schedule and the step about to run, what to fetch next. The
// documented extension point for users.
//
// Contract for implementers (NVI, see CONTRIBUTING.md):
//   * `do_plan(ctx, out)` (required): append the keys to fetch, most urgent first. It may
//     name keys that are already resident or in flight and may ask for more than fits:
//     the public `plan()` drops keys that are present, stops at `ctx.budget_bytes`, and
//     counts what was planned, dropped and kept. So a policy cannot overrun the cache.
//   * `do_on_model_loaded(schedule)`, `do_on_step_begin(step)`, `do_on_step_end(step)`
//     (optional, default no-op): the schedule a worker will run; a step starts; a step's
//     compute is done. Called in that order: on_model_loaded once, then for each step
//     on_step_begin, plan, on_step_end.
//   * `name()` (required).
// A worker calls its policy from its compute thread only; a policy needs no locking unless
// it shares state across workers.
#pragma once

#include <cstdint>
#include <memory>
#include <nlohmann/json_fwd.hpp>
#include <span>
#include <string_view>
#include <vector>

#include "xlshare/cache/device_cache.hpp"
#include "xlshare/prefetch/schedule.hpp"

namespace xlshare {

/// What a policy sees when it plans.
struct PrefetchContext {
  const Schedule& schedule;
  std::size_t step;            ///< the step about to run
  const DeviceCache& cache;    ///< to ask state(key), key_bytes(key), bytes_free()
  std::uint64_t budget_bytes;  ///< most bytes the plan may bring in: the cache budget less
                               ///< what compute holds at once of the step about to run (all
                               ///< its tensors, or its largest when it holds one at a time)
};

struct PrefetchStats {
  std::uint64_t plans = 0;
  std::uint64_t keys_proposed = 0;         ///< what do_plan returned
  std::uint64_t keys_planned = 0;          ///< what plan() kept
  std::uint64_t keys_dropped_present = 0;  ///< already resident or in flight
  std::uint64_t keys_dropped_budget = 0;   ///< beyond the budget
  std::uint64_t keys_dropped_invalid = 0;  ///< not a key of the cache, or named twice in a plan
  std::uint64_t bytes_planned = 0;
};
void to_json(nlohmann::json& j, const PrefetchStats& s);

class PrefetchPolicy {
 public:
  virtual ~PrefetchPolicy() = default;

  /// The keys to fetch for this step, filtered and within budget. Valid until the next
  /// call.
  std::span<const TensorKey> plan(const PrefetchContext& ctx);
  void on_model_loaded(const Schedule& schedule) { do_on_model_loaded(schedule); }
  void on_step_begin(std::size_t step) { do_on_step_begin(step); }
  void on_step_end(std::size_t step) { do_on_step_end(step); }

  virtual std::string_view name() const noexcept = 0;
  PrefetchStats stats() const noexcept { return stats_; }

 protected:
  virtual void do_plan(const PrefetchContext& ctx, std::vector<TensorKey>& out) = 0;
  virtual void do_on_model_loaded(const Schedule&) {}
  virtual void do_on_step_begin(std::size_t) {}
  virtual void do_on_step_end(std::size_t) {}

 private:
  std::vector<TensorKey> proposed_, planned_;
  std::vector<bool> seen_;
  PrefetchStats stats_;
};

/// Fetches the current step's tensors and the next k steps' while room allows. k = 0
/// fetches nothing ahead: every tensor arrives on demand. Default k = 2.
class LookaheadPolicy final : public PrefetchPolicy {
 public:
  explicit LookaheadPolicy(std::size_t lookahead_steps = 2) : k_(lookahead_steps) {}
  std::string_view name() const noexcept override { return "lookahead"; }
  std::size_t lookahead_steps() const noexcept { return k_; }

 protected:
  void do_plan(const PrefetchContext& ctx, std::vector<TensorKey>& out) override;

 private:
  std::size_t k_;
};

}  // namespace xlshare
