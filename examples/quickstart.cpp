// Quickstart: the seed's "custom model" example in C++. Make a small Llama, put it into a
// shared pool once, attach a worker with a small near cache on an emulated CXL link, and
// generate.
//
//   build/bin/quickstart
#include <unistd.h>

#include <fmt/format.h>

#include "xlshare/engine/inference_engine.hpp"
#include "xlshare/memory/backend_uri.hpp"

int main() {
  xlshare::EngineConfig config;
  config.pool_uri = fmt::format("shm://quickstart-{}", ::getpid());
  config.link_preset = "cxl-x8";  // a CXL 2.0 x8 memory expander
  config.cache_bytes = 8u << 20;  // 8 MiB of "HBM" per worker
  config.eviction_policy = "schedule";
  config.lookahead = 2;
  try {
    xlshare::InferenceEngine engine(config);
    // A custom model: dim 256, 6 layers, 8 heads (4 kv heads), ffn 688, vocab 1024.
    const auto model =
        xlshare::create_sample_transformer_model(256, 6, 8, 4, 688, 1024, /*seed=*/7);
    engine.register_model(model, "custom");  // loaded once; a second call finds it
    engine.attach_model("custom");

    xlshare::InferenceRequest request;
    request.id = "hello";
    request.prompt = {1, 15, 27, 99};
    request.max_new_tokens = 16;
    const auto result = engine.inference(request);

    std::string tokens;
    for (auto t : result.output_tokens) tokens += fmt::format("{} ", t);
    fmt::print("generated: {}\n", tokens);
    fmt::print(
        "latency {:.1f} ms, ready_rate {:.2f}, reuse_rate {:.2f}, stall {:.2f} ms, link {:.1f} "
        "MiB\n",
        result.latency_ms, result.ready_rate, result.reuse_rate, result.stall_ms,
        static_cast<double>(result.link_bytes) / (1 << 20));
    fmt::print("{}\n", engine.stats().to_json());
  } catch (const std::exception& e) {
    fmt::print(stderr, "quickstart: {}\n", e.what());
    xlshare::remove_backend(config.pool_uri);
    return 1;
  }
  xlshare::remove_backend(config.pool_uri);
  return 0;
}
