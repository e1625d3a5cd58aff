// Writing your own PrefetchPolicy: subclass, implement do_plan(), optionally the hooks,
// and hand it to the Prefetcher. This one adapts its lookahead: it looks further ahead
// after a step that stalled and less far after a step that did not.
//
//   build/bin/custom_prefetch_policy
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <vector>

#include <fmt/format.h>

#include "xlshare/cache/device_cache.hpp"
#include "xlshare/cache/transfer_engine.hpp"
#include "xlshare/memory/backend_uri.hpp"
#include "xlshare/memory/cxl_emulator.hpp"
#include "xlshare/memory/pool.hpp"
#include "xlshare/prefetch/prefetcher.hpp"

namespace {

class AdaptiveLookahead final : public xlshare::PrefetchPolicy {
 public:
  explicit AdaptiveLookahead(const xlshare::Prefetcher* const* prefetcher) : prefetcher_(prefetcher) {}
  std::string_view name() const noexcept override { return "adaptive-lookahead"; }
  std::size_t lookahead() const noexcept { return k_; }

 protected:
  // Called once with the schedule the worker will run.
  void do_on_model_loaded(const xlshare::Schedule& schedule) override {
    fmt::print("policy: model has {} steps\n", schedule.size());
  }
  // Called before each step's plan: remember the stall so far.
  void do_on_step_begin(std::size_t) override { stall_at_begin_ = stall(); }
  // Called after each step's compute: adapt.
  void do_on_step_end(std::size_t) override {
    if (stall() > stall_at_begin_) {
      k_ = std::min<std::size_t>(k_ + 1, 4);
    } else if (k_ > 1) {
      --k_;
    }
  }
  // The plan: the current step and the next k. The base class drops what is already
  // present and stops at the budget, so this may ask for more than fits.
  void do_plan(const xlshare::PrefetchContext& ctx, std::vector<xlshare::TensorKey>& out) override {
    std::size_t s = ctx.step;
    for (std::size_t i = 0; i <= k_ && s < ctx.schedule.size(); ++i, s = ctx.schedule.next(s)) {
      for (auto key : ctx.schedule.step(s).keys) out.push_back(key);
    }
  }

 private:
  std::uint64_t stall() const { return *prefetcher_ ? (*prefetcher_)->stall_ns() : 0; }
  const xlshare::Prefetcher* const* prefetcher_;
  std::size_t k_ = 1;
  std::uint64_t stall_at_begin_ = 0;
};

double compute(std::span<const std::byte> bytes) {  // stands in for a layer's math
  const auto* f = reinterpret_cast<const float*>(bytes.data());
  double acc = 0;
  for (int r = 0; r < 3; ++r) {
    for (std::size_t i = 0; i < bytes.size() / 4; ++i) acc += std::sqrt(std::abs(f[i]) + r);
  }
  return acc;
}

xlshare::Figures run(const std::string& uri, std::unique_ptr<xlshare::PrefetchPolicy> policy,
                     const xlshare::Prefetcher** slot) {
  xlshare::EmulatorOptions link;
  link.link = {.bandwidth_gbps = 2.0, .latency_ns = 600, .overhead_ns = 0, .chunk_bytes = 256 * 1024};
  link.check_host_rate = false;
  auto pool = xlshare::Pool::attach(std::make_unique<xlshare::CxlEmulator>(xlshare::open_backend(uri), link));
  auto model = pool->model("toy");
  std::vector<xlshare::TensorSource> sources;
  std::vector<std::uint64_t> sizes;
  std::vector<std::string> names;
  for (const auto& t : model->tensors()) {
    sources.push_back({t, std::nullopt});
    sizes.push_back(t.size_bytes);
    names.push_back(t.name);
  }
  const auto schedule = xlshare::Schedule::for_transformer(names);
  // A near cache of a quarter of the model.
  xlshare::DeviceCache cache(model->total_bytes() / 4, sizes, std::make_unique<xlshare::LruPolicy>());
  xlshare::TransferEngine engine(*pool, nullptr, sources, cache);
  xlshare::Prefetcher prefetcher(schedule, std::move(policy), engine, cache);
  if (slot) *slot = &prefetcher;
  double sink = 0;
  for (int token = 0; token < 4; ++token) {
    for (std::size_t s = 0; s < schedule.size(); ++s) {
      prefetcher.begin_step(s);
      for (auto key : schedule.step(s).keys) sink += compute(prefetcher.acquire(key).bytes());
      prefetcher.end_step(s);
    }
  }
  engine.wait_idle();
  if (slot) *slot = nullptr;
  return prefetcher.figures();
}

}  // namespace

int main() {
  const std::string uri = fmt::format("shm://custom-policy-{}", ::getpid());
  try {
    {  // a toy 8-block model: 2 tensors of 256 KiB per block
      auto pool = xlshare::Pool::create(xlshare::create_backend(uri, 16u << 20));
      auto w = pool->begin_model("toy");
      for (int b = 0; b < 8; ++b) {
        for (const char* t : {"attn", "ffn"}) {
          const std::uint64_t shape[] = {64 * 1024};
          auto bytes = w.add_tensor(fmt::format("blk.{}.{}.weight", b, t), xlshare::DType::kF32, shape);
          auto* f = reinterpret_cast<float*>(bytes.data());
          for (std::size_t i = 0; i < 64 * 1024; ++i) f[i] = static_cast<float>((i * 7 + b) % 13);
        }
      }
      w.seal();
    }
    const auto baseline = run(uri, std::make_unique<xlshare::LookaheadPolicy>(0), nullptr);
    const xlshare::Prefetcher* current = nullptr;
    auto policy = std::make_unique<AdaptiveLookahead>(&current);
    const auto* raw = policy.get();
    const auto adaptive = run(uri, std::move(policy), &current);
    fmt::print("{:<22} {:>10} {:>10} {:>10} {:>9}\n", "policy", "stall ms", "ready", "overlap", "accuracy");
    fmt::print("{:<22} {:>10.2f} {:>10.2f} {:>10.2f} {:>9.2f}\n", "on demand (k=0)", baseline.stall_ms,
               baseline.ready_rate, baseline.overlap, baseline.prefetch_accuracy);
    fmt::print("{:<22} {:>10.2f} {:>10.2f} {:>10.2f} {:>9.2f}\n", "adaptive-lookahead", adaptive.stall_ms,
               adaptive.ready_rate, adaptive.overlap, adaptive.prefetch_accuracy);
    fmt::print("adaptive policy ended with lookahead {}; planned {} keys in {} plans\n", raw->lookahead(),
               raw->stats().keys_planned, raw->stats().plans);
    xlshare::remove_backend(uri);
    return adaptive.acquires == baseline.acquires ? 0 : 1;
  } catch (const std::exception& e) {
    fmt::print(stderr, "custom_prefetch_policy: {}\n", e.what());
    xlshare::remove_backend(uri);
    return 1;
  }
}
