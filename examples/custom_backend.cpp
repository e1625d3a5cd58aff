// Serving from a backend of your own: the weights live in an anonymous memory file
// ("memfd://weights", see custom_backend.hpp), reached through the URI scheme registry, and
// once more through EngineConfig::backend_factory for a backend built in code. The tokens
// must be the ones the built-in shared memory backend gives.
//
//   build/bin/custom_backend
#include <unistd.h>

#include <vector>

#include <fmt/format.h>

#include "custom_backend.hpp"
#include "xlshare/engine/inference_engine.hpp"

namespace {

// Registers the sample model in `config`'s pool and generates 8 tokens after a prompt.
std::vector<std::int32_t> serve(xlshare::EngineConfig config) {
  config.link_preset = "cxl-x8";
  config.cache_bytes = 1u << 20;
  xlshare::InferenceEngine engine(config);
  engine.register_model(xlshare::create_sample_transformer_model(), "sample");
  engine.attach_model("sample");
  return engine.generate(std::vector<std::int32_t>{1, 5, 9, 2}, 8);
}

}  // namespace

int main() {
  example::register_memfd_scheme();
  const std::string shm_uri = fmt::format("shm://custom-backend-{}", ::getpid());
  try {
    xlshare::EngineConfig config;
    config.pool_uri = "memfd://weights";
    const auto by_scheme = serve(config);

    // A backend built in code: the URI is only a label; the pool is made in it.
    auto memory = example::MemfdBackend::create("by-factory", 64u << 20);
    memory.reset();  // the object lives on in the scheme's table
    xlshare::EngineConfig made;
    made.pool_uri = "by-factory";
    made.backend_factory = [](const std::string& name) -> std::unique_ptr<xlshare::MemoryBackend> {
      return example::MemfdBackend::open(name, false);
    };
    const auto by_factory = serve(made);

    xlshare::EngineConfig reference;
    reference.pool_uri = shm_uri;
    const auto by_shm = serve(reference);
    xlshare::remove_backend(shm_uri);
    xlshare::remove_pool("memfd://weights");
    example::MemfdBackend::remove("by-factory");

    fmt::print("memfd (scheme):  {}\nmemfd (factory): {}\nshm:             {}\n",
               fmt::join(by_scheme, " "), fmt::join(by_factory, " "), fmt::join(by_shm, " "));
    const bool same = by_scheme == by_shm && by_factory == by_shm;
    fmt::print("{}\n", same ? "same tokens from every backend" : "TOKENS DIFFER");
    return same ? 0 : 1;
  } catch (const std::exception& e) {
    fmt::print(stderr, "custom_backend: {}\n", e.what());
    try {
      if (xlshare::backend_exists(shm_uri)) xlshare::remove_backend(shm_uri);
    } catch (...) {
    }
    return 1;
  }
}
