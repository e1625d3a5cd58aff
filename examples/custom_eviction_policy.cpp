// Steering the near cache with an eviction policy of your own (custom_eviction_policy.hpp):
// the engine makes one per worker through EngineConfig::eviction_policy_factory, with the
// worker's cache keys. The same tokens come out as with the built-in LRU; what differs is
// how much crosses the link.
//
//   build/bin/custom_eviction_policy
#include <unistd.h>

#include <vector>

#include <fmt/format.h>

#include "custom_eviction_policy.hpp"
#include "xlshare/engine/inference_engine.hpp"
#include "xlshare/memory/backend_uri.hpp"

namespace {

struct Outcome {
  std::vector<std::int32_t> tokens;
  xlshare::WorkerReport report;
  std::vector<std::pair<std::string, std::uint64_t>> most_evicted;  // greedy-dual-size only
};

// Eight tokens with the built-in LRU, or with GreedyDualSize when `custom`.
Outcome serve(const std::string& uri, bool custom) {
  example::GreedyDualSize* policy = nullptr;  // owned by the engine: read before it goes
  xlshare::EvictionPolicyFactory factory;
  if (custom) {
    factory = [&policy](const xlshare::CacheKeys& keys) {
      auto p = std::make_unique<example::GreedyDualSize>(keys);
      policy = p.get();
      return p;
    };
  }
  xlshare::EngineConfig config;
  config.pool_uri = uri;
  config.placement = xlshare::Placement::kCopy;  // the near cache the policy steers
  config.cache_bytes = 3u << 20;                 // about a third of the sample model
  config.eviction_policy = "lru";
  config.eviction_policy_factory = std::move(factory);
  xlshare::InferenceEngine engine(config);
  engine.attach_model("sample");
  Outcome o;
  o.tokens = engine.generate(std::vector<std::int32_t>{3, 1, 4, 1, 5}, 8);
  o.report = engine.stats().workers.at(0);
  if (policy != nullptr) o.most_evicted = policy->most_evicted(3);
  return o;
}

}  // namespace

int main() {
  const std::string uri = fmt::format("shm://custom-eviction-{}", ::getpid());
  try {
    {
      xlshare::EngineConfig config;
      config.pool_uri = uri;
      xlshare::InferenceEngine(config).register_model(xlshare::create_sample_transformer_model(),
                                                      "sample");
    }
    const Outcome lru = serve(uri, false);
    const Outcome gds = serve(uri, true);
    xlshare::remove_backend(uri);

    fmt::print("{:<18} {:>10} {:>10} {:>12} {:>8}\n", "policy", "evictions", "fetches", "link MB",
               "ready");
    for (const auto& [name, o] : {std::pair{"lru", &lru}, std::pair{"greedy-dual-size", &gds}}) {
      const auto& r = o->report;
      fmt::print("{:<18} {:>10} {:>10} {:>12.1f} {:>8.2f}\n", name, r.cache.evictions,
                 r.cache.fetches_demand + r.cache.fetches_prefetch, r.figures.link_bytes / 1e6,
                 r.figures.ready_rate);
    }
    for (const auto& [tensor, n] : gds.most_evicted) {
      fmt::print("  greedy-dual-size evicted {:>3}x  {}\n", n, tensor);
    }
    const bool same = lru.tokens == gds.tokens;
    fmt::print("{}\n", same ? "same tokens with either policy" : "TOKENS DIFFER");
    return same && !gds.most_evicted.empty() ? 0 : 1;
  } catch (const std::exception& e) {
    fmt::print(stderr, "custom_eviction_policy: {}\n", e.what());
    try {
      if (xlshare::backend_exists(uri)) xlshare::remove_backend(uri);
    } catch (...) {
    }
    return 1;
  }
}
