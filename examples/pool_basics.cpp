// The far tier in forty lines: create a pool, load one tensor, seal it, and read it back
// from an attached worker through an emulated CXL link.
//
//   build/bin/pool_basics
#include <unistd.h>

#include <cstdio>
#include <vector>

#include <fmt/format.h>

#include "xlshare/memory/backend_uri.hpp"
#include "xlshare/memory/cxl_emulator.hpp"
#include "xlshare/memory/pool.hpp"

int main() {
  const std::string uri = fmt::format("shm://pool-basics-{}", ::getpid());
  try {
    // A loader creates the pool and writes a model into it.
    {
      auto pool = xlshare::Pool::create(xlshare::create_backend(uri, 64u << 20));
      auto model = pool->begin_model("tiny");
      const std::uint64_t shape[] = {1024, 1024};
      auto bytes = model.add_tensor("weight", xlshare::DType::kF32, shape);
      auto* w = reinterpret_cast<float*>(bytes.data());
      for (std::size_t i = 0; i < 1024 * 1024; ++i) w[i] = static_cast<float>(i % 7);
      model.seal();  // checksums computed, model published
    }
    // A worker attaches read-only through an emulated CXL 2.0 x8 link.
    xlshare::EmulatorOptions link;
    link.link = xlshare::link_preset("cxl-x8");
    auto pool = xlshare::Pool::attach(
        std::make_unique<xlshare::CxlEmulator>(xlshare::open_backend(uri), link));
    const xlshare::TensorInfo t = pool->find_tensor("tiny/weight");
    std::vector<std::byte> near(t.size_bytes);
    if (pool->read(t, 0, near) != xlshare::ReadStatus::kOk) return 1;
    fmt::print("read {} bytes of tiny/weight ({}x{} f32); checksum {}\n", near.size(), t.shape[0],
               t.shape[1], pool->verify(t) ? "ok" : "MISMATCH");
  } catch (const std::exception& e) {
    fmt::print(stderr, "pool_basics: {}\n", e.what());
    xlshare::remove_backend(uri);
    return 1;
  }
  xlshare::remove_backend(uri);
  return 0;
}
