// A PrefetchPolicy of your own: subclass, implement do_plan(), optionally the hooks, and
// hand a factory for it to the InferenceEngine (one policy per worker). This one adapts
// its lookahead: further ahead when compute catches up with the transfers, less far when
// it does not.
#pragma once

#include <algorithm>
#include <cstddef>
#include <vector>

#include "xlshare/prefetch/prefetch_policy.hpp"

namespace example {

class AdaptiveLookahead final : public xlshare::PrefetchPolicy {
 public:
  std::string_view name() const noexcept override { return "adaptive-lookahead"; }
  std::size_t lookahead() const noexcept { return k_; }

 protected:
  // Called once with the schedule the worker will run.
  void do_on_model_loaded(const xlshare::Schedule& schedule) override { steps_ = schedule.size(); }
  // The plan: look further ahead when the step about to run is not resident yet (we are
  // behind the compute), less far when it is; then the current step and the next k. The
  // base class drops what is already present and stops at the budget, so this may ask for
  // more than fits.
  void do_plan(const xlshare::PrefetchContext& ctx, std::vector<xlshare::TensorKey>& out) override {
    bool behind = false;
    for (auto key : ctx.schedule.step(ctx.step).keys) {
      behind = behind || ctx.cache.state(key) != xlshare::EntryState::kResident;
    }
    k_ = behind ? std::min<std::size_t>(k_ + 1, 4) : std::max<std::size_t>(k_ - 1, 1);
    std::size_t s = ctx.step;
    for (std::size_t i = 0; i <= k_ && s < ctx.schedule.size(); ++i, s = ctx.schedule.next(s)) {
      for (auto key : ctx.schedule.step(s).keys) out.push_back(key);
    }
  }
  // Called after each step's compute (unused here; shown for completeness).
  void do_on_step_end(std::size_t) override {}

 private:
  std::size_t k_ = 1, steps_ = 0;
};

}  // namespace example
