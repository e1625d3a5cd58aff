// Writing your own PrefetchPolicy: subclass, implement do_plan(), optionally the hooks,
// and hand a factory for it to the InferenceEngine (one policy per worker). This one
// adapts its lookahead: further ahead when compute catches up with the transfers, less far
// when it does not.
//
//   build/bin/custom_prefetch_policy
#include <unistd.h>

#include <vector>

#include <fmt/format.h>

#include "xlshare/engine/inference_engine.hpp"
#include "xlshare/memory/backend_uri.hpp"
#include "xlshare/prefetch/prefetch_policy.hpp"

namespace {

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

// Runs four tokens through an InferenceEngine whose workers use `factory`'s policy.
xlshare::EngineStats run(const std::string& uri, xlshare::PrefetchPolicyFactory factory) {
  xlshare::EngineConfig config;
  config.pool_uri = uri;
  config.link = xlshare::LinkParams{
      .bandwidth_gbps = 2.0, .latency_ns = 600, .overhead_ns = 0, .chunk_bytes = 256 * 1024};
  config.cache_bytes = 6u << 20;  // about a quarter of the model
  config.prefetch_policy = std::move(factory);
  xlshare::InferenceEngine engine(config);
  engine.attach_model("toy");
  engine.generate(std::vector<std::int32_t>{1, 2, 3}, 4);
  return engine.stats();
}

}  // namespace

int main() {
  const std::string uri = fmt::format("shm://custom-policy-{}", ::getpid());
  try {
    {  // a toy 8-block model of about 8 MiB
      xlshare::EngineConfig config;
      config.pool_uri = uri;
      xlshare::InferenceEngine(config).register_model(
          xlshare::create_sample_transformer_model(256, 8, 8, 4, 640, 512, 11), "toy");
    }
    const auto baseline = run(uri, [] { return std::make_unique<xlshare::LookaheadPolicy>(0); });
    AdaptiveLookahead* raw = nullptr;  // the engine owns the policy; we keep a look at it
    const auto adaptive = run(uri, [&] {
      auto p = std::make_unique<AdaptiveLookahead>();
      raw = p.get();
      return p;
    });
    const auto& b = baseline.workers[0].figures;
    const auto& a = adaptive.workers[0].figures;
    fmt::print("{:<22} {:>10} {:>10} {:>10} {:>9}\n", "policy", "stall ms", "ready", "overlap",
               "accuracy");
    fmt::print("{:<22} {:>10.2f} {:>10.2f} {:>10.2f} {:>9.2f}\n", "on demand (k=0)", b.stall_ms,
               b.ready_rate, b.overlap, b.prefetch_accuracy);
    fmt::print("{:<22} {:>10.2f} {:>10.2f} {:>10.2f} {:>9.2f}\n", "adaptive-lookahead", a.stall_ms,
               a.ready_rate, a.overlap, a.prefetch_accuracy);
    xlshare::remove_backend(uri);
    return a.acquires == b.acquires && raw != nullptr ? 0 : 1;
  } catch (const std::exception& e) {
    fmt::print(stderr, "custom_prefetch_policy: {}\n", e.what());
    xlshare::remove_backend(uri);
    return 1;
  }
}
