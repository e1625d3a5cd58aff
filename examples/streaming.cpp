// Streaming: what serving code does with an engine. Requests are submitted as they come
// (here from three client threads), tokens arrive through a callback as they are made,
// one request is cancelled half way, and the scheduler runs whatever is in flight in one
// forward pass per step. Ends with the /metrics body a server would expose.
//
//   build/bin/streaming
#include <unistd.h>

#include <fmt/format.h>

#include <atomic>
#include <future>
#include <mutex>
#include <thread>
#include <vector>

#include "xlshare/engine/inference_engine.hpp"
#include "xlshare/memory/backend_uri.hpp"

int main() {
  xlshare::EngineConfig config;
  config.pool_uri = fmt::format("shm://streaming-{}", ::getpid());
  config.link_preset = "cxl-x8";
  config.cache_bytes = 4u << 20;
  config.max_batch_sequences = 8;  // sequences one step runs at most
  try {
    xlshare::InferenceEngine engine(config);
    engine.register_model(xlshare::create_sample_transformer_model(256, 6, 8, 4, 688, 1024, 7),
                          "custom");
    engine.attach_model("custom");

    std::mutex print_mu;  // callbacks run on the scheduler's thread, clients on their own
    const auto on_token = [&](const xlshare::TokenEvent& e) {
      std::lock_guard g(print_mu);
      if (e.token >= 0) fmt::print("  {} #{}: {}\n", e.id, e.position, e.token);
      if (e.finished) fmt::print("  {} finished: {}\n", e.id, xlshare::to_string(e.reason));
    };

    // Three clients, each submitting when it likes and waiting for its own answer.
    std::vector<std::thread> clients;
    for (int c = 0; c < 3; ++c) {
      clients.emplace_back([&, c] {
        xlshare::InferenceRequest r;
        r.id = fmt::format("client{}", c);
        r.prompt = {1, 15 + c, 27, 99};
        r.max_new_tokens = 6;
        const auto result = engine.submit(r, {.on_token = on_token}).wait();
        std::lock_guard g(print_mu);
        fmt::print("{}: {} tokens, ttft {:.1f} ms, tpot {:.2f} ms, queue {:.2f} ms\n", result.id,
                   result.output_tokens.size(), result.ttft_ms, result.tpot_ms, result.queue_ms);
      });
    }
    // A long request cancelled after its third token (from its own callback: the handle
    // comes through a future, since the callback may run before submit returns).
    std::promise<xlshare::RequestHandle> handle;
    auto own = handle.get_future().share();
    xlshare::InferenceRequest long_one;
    long_one.id = "long";
    long_one.prompt = {5, 6, 7};
    long_one.max_new_tokens = 500;
    handle.set_value(engine.submit(long_one, {.on_token = [&](const xlshare::TokenEvent& e) {
                                     on_token(e);
                                     if (e.position == 2 && !e.finished) own.get().cancel();
                                   }}));
    for (auto& t : clients) t.join();
    const auto cancelled = own.get().wait();
    fmt::print("long: {} of 500 tokens, then {}\n", cancelled.output_tokens.size(),
               xlshare::to_string(cancelled.finish_reason));

    const auto stats = engine.stats();
    fmt::print("{} steps, {:.1f} sequences per step on average\n\n{}", stats.serving.steps,
               stats.serving.mean_batch_sequences, stats.to_prometheus());
  } catch (const std::exception& e) {
    fmt::print(stderr, "streaming: {}\n", e.what());
    xlshare::remove_backend(config.pool_uri);
    return 1;
  }
  xlshare::remove_backend(config.pool_uri);
  return 0;
}
