// Multi-process serving: one process loads a model into a pool; N worker processes attach
// (without loading anything) and serve requests; each reports what it did.
//
//   build/bin/multi_process_serving [N]
//
// Real deployments start the workers as separate programs (`xlshare worker --pool URI
// --model NAME ...`); here they are forked so the example is one file.
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <vector>

#include <fmt/format.h>

#include "xlshare/engine/inference_engine.hpp"
#include "xlshare/memory/backend_uri.hpp"
#include "xlshare/proc_memory.hpp"

int main(int argc, char** argv) {
  const int workers = argc > 1 ? std::max(1, std::atoi(argv[1])) : 3;
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
    std::vector<pid_t> pids;
    for (int w = 0; w < workers; ++w) {
      const pid_t pid = ::fork();
      if (pid == 0) {
        try {
          xlshare::InferenceEngine engine(config);
          engine.attach_model("shared");  // finds the sealed model: nothing is loaded
          const auto tokens = engine.generate(std::vector<std::int32_t>{3, 1, 4, 1, 5}, 8);
          const auto mem = xlshare::read_proc_memory(::getpid()).value_or(xlshare::ProcMemory{});
          const auto s = engine.stats();
          fmt::print("worker {} (pid {}): {} tokens, first {}, link {:.1f} MiB, PSS {:.1f} MiB\n",
                     w, ::getpid(), tokens.size(), tokens.front(),
                     s.workers[0].transfers.link_bytes / 1048576.0, mem.pss / 1048576.0);
          std::fflush(stdout);
          ::_exit(0);
        } catch (const std::exception& e) {
          fmt::print(stderr, "worker {}: {}\n", w, e.what());
          ::_exit(1);
        }
      }
      pids.push_back(pid);
    }
    int failed = 0;
    for (pid_t p : pids) {
      int status = 0;
      ::waitpid(p, &status, 0);
      failed += !(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    }
    xlshare::remove_backend(config.pool_uri);
    return failed == 0 ? 0 : 1;
  } catch (const std::exception& e) {
    fmt::print(stderr, "multi_process_serving: {}\n", e.what());
    xlshare::remove_backend(config.pool_uri);
    return 1;
  }
}
