// Multi-process serving: one process loads a model into a pool; N worker processes attach
// (without loading anything) and serve requests; each one's memory is read from /proc, and
// the shared pool counts once.
//
//   build/bin/multi_process_serving [N]      (N worker processes, 1..16; default 3)
//
// Real deployments may start the workers as separate programs (`xlshare worker --pool URI
// --model NAME ...`); a WorkerGroup forks them from this one, which is what a serving
// process that owns its workers does.
#include <unistd.h>

#include <charconv>
#include <cstring>
#include <string_view>
#include <vector>

#include <fmt/format.h>

#include "xlshare/engine/inference_engine.hpp"
#include "xlshare/engine/worker_group.hpp"
#include "xlshare/memory/backend_uri.hpp"

int main(int argc, char** argv) {
  unsigned workers = 3;
  if (argc > 1) {
    const std::string_view arg = argv[1];
    const auto [end, ec] = std::from_chars(arg.data(), arg.data() + arg.size(), workers);
    if (ec != std::errc() || end != arg.data() + arg.size() || workers < 1 || workers > 16) {
      fmt::print(stderr, "xlshare: error: worker count '{}' is not a number in 1..16\n", arg);
      return 2;
    }
  }
  xlshare::EngineConfig config;
  config.pool_uri = fmt::format("shm://multi-process-{}", ::getpid());
  config.link_preset = "cxl-x8";
  config.cache_bytes = 4u << 20;
  try {
    {  // the loader: once
      xlshare::InferenceEngine loader(config);
      loader.register_model(xlshare::create_sample_transformer_model(256, 8, 8, 4, 688, 1024, 3),
                            "shared");
    }
    auto group = xlshare::WorkerGroup::serving(config, "shared", {.workers = workers});
    std::vector<xlshare::InferenceRequest> requests(workers);
    for (unsigned w = 0; w < workers; ++w) {
      requests[w].id = fmt::format("request-{}", w);
      requests[w].prompt = {3, 1, 4, 1, 5};
      requests[w].max_new_tokens = 8;
    }
    const auto results = group->infer_all(requests);
    const std::string shm_path = "/dev/shm/" + config.pool_uri.substr(6);
    std::uint64_t pss = 0, pool_pss = 0;
    for (unsigned w = 0; w < workers; ++w) {
      const auto mem = group->memory(w);
      const auto pool = group->mapping_memory(w, shm_path);
      pss += mem.pss;
      pool_pss += pool.pss;
      fmt::print("worker {} (pid {}): {} tokens, first {}, link {:.1f} MiB, PSS {:.1f} MiB\n", w,
                 group->pid(w), results[w].output_tokens.size(), results[w].output_tokens.front(),
                 results[w].link_bytes / 1048576.0, mem.pss / 1048576.0);
    }
    fmt::print("together: {:.1f} MiB PSS, {:.1f} MiB of it the pool (one copy, shared)\n",
               pss / 1048576.0, pool_pss / 1048576.0);
    const auto failures = group->stop();
    for (const auto& line : failures) fmt::print(stderr, "xlshare: error: {}\n", line);
    bool same = true;
    for (const auto& r : results) same = same && r.output_tokens == results[0].output_tokens;
    xlshare::remove_backend(config.pool_uri);
    return failures.empty() && same ? 0 : 1;
  } catch (const std::exception& e) {
    fmt::print(stderr, "xlshare: error: {}\n", e.what());
    if (xlshare::backend_exists(config.pool_uri)) xlshare::remove_backend(config.pool_uri);
    return 1;
  }
}
