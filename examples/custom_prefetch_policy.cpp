// Steering prefetch with a policy of your own (custom_prefetch_policy.hpp): the engine
// makes one per worker through EngineConfig::prefetch_policy. Compared with fetching on
// demand, on the same model and link.
//
//   build/bin/custom_prefetch_policy
#include <unistd.h>

#include <vector>

#include <fmt/format.h>

#include "custom_prefetch_policy.hpp"
#include "xlshare/engine/inference_engine.hpp"
#include "xlshare/memory/backend_uri.hpp"

namespace {

struct Outcome {
  std::vector<std::int32_t> tokens;
  xlshare::EngineStats stats;
};

// Runs four tokens through an InferenceEngine whose workers use `factory`'s policy.
Outcome run(const std::string& uri, xlshare::PrefetchPolicyFactory factory) {
  xlshare::EngineConfig config;
  config.pool_uri = uri;
  config.link = xlshare::LinkParams{
      .bandwidth_gbps = 2.0, .latency_ns = 600, .overhead_ns = 0, .chunk_bytes = 256 * 1024};
  config.cache_bytes = 6u << 20;  // about a quarter of the model
  config.prefetch_policy = std::move(factory);
  xlshare::InferenceEngine engine(config);
  engine.attach_model("toy");
  auto tokens = engine.generate(std::vector<std::int32_t>{1, 2, 3}, 4);
  return Outcome{std::move(tokens), engine.stats()};
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
    unsigned made = 0;  // one policy per worker
    const auto adaptive = run(uri, [&made] {
      ++made;
      return std::make_unique<example::AdaptiveLookahead>();
    });
    const auto& b = baseline.stats.workers[0].figures;
    const auto& a = adaptive.stats.workers[0].figures;
    fmt::print("{:<22} {:>10} {:>10} {:>10} {:>9}\n", "policy", "stall ms", "ready", "overlap",
               "accuracy");
    fmt::print("{:<22} {:>10.2f} {:>10.2f} {:>10.2f} {:>9.2f}\n", "on demand (k=0)", b.stall_ms,
               b.ready_rate, b.overlap, b.prefetch_accuracy);
    fmt::print("{:<22} {:>10.2f} {:>10.2f} {:>10.2f} {:>9.2f}\n", "adaptive-lookahead", a.stall_ms,
               a.ready_rate, a.overlap, a.prefetch_accuracy);
    xlshare::remove_backend(uri);
    const bool same = baseline.tokens == adaptive.tokens;
    fmt::print("{}\n", same ? "same tokens with either policy" : "TOKENS DIFFER");
    return same && a.acquires == b.acquires && made == 1 ? 0 : 1;
  } catch (const std::exception& e) {
    fmt::print(stderr, "custom_prefetch_policy: {}\n", e.what());
    xlshare::remove_backend(uri);
    return 1;
  }
}
