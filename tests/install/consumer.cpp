// Creates a pool in shared memory, writes one tensor, attaches as a reader through the
// emulated link and checks the bytes: the smallest end-to-end use of an installed xlshare.
#include <unistd.h>

#include <cstdio>
#include <string>

#include "xlshare/memory/backend_uri.hpp"
#include "xlshare/memory/cxl_emulator.hpp"
#include "xlshare/memory/pool.hpp"
#include "xlshare/version.hpp"

int main() {
  // The headers and the library must be of one version.
  const std::string headers = std::to_string(XLSHARE_VERSION_MAJOR) + "." +
                              std::to_string(XLSHARE_VERSION_MINOR) + "." +
                              std::to_string(XLSHARE_VERSION_PATCH);
  if (headers != xlshare::version()) {
    std::fprintf(stderr, "consumer: headers %s, library %s\n", headers.c_str(), xlshare::version());
    return 1;
  }
  const std::string uri = "shm://xlshare-install-check-" + std::to_string(::getpid());
  int rc = 1;
  try {
    {
      auto pool = xlshare::Pool::create(xlshare::create_backend(uri, 8u << 20),
                                        xlshare::PoolOptions{.max_models = 2, .max_tensors = 8});
      auto writer = pool->begin_model("m");
      const std::uint64_t shape[] = {256};
      auto bytes = writer.add_tensor("w", xlshare::DType::kU8, shape);
      for (std::size_t i = 0; i < bytes.size(); ++i) bytes[i] = std::byte(i);
      writer.seal();
    }
    xlshare::EmulatorOptions options;
    options.link = xlshare::link_preset("cxl-x8");
    options.check_host_rate = false;
    auto link = std::make_unique<xlshare::CxlEmulator>(xlshare::open_backend(uri), options);
    auto pool = xlshare::Pool::attach(std::move(link));
    const auto tensor = pool->find_tensor("m/w");
    std::byte out[256];
    if (pool->read(tensor, 0, out) == xlshare::ReadStatus::kOk && out[255] == std::byte(255) &&
        pool->verify(tensor)) {
      std::puts("consumer: ok");
      rc = 0;
    } else {
      std::puts("consumer: read back wrong bytes");
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "consumer: %s\n", e.what());
  }
  xlshare::remove_backend(uri);
  return rc;
}
