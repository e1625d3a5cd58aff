// A build without UCX (XLSHARE_WITH_UCX=OFF, or libucx-dev absent): remote pools are refused
// with a message that says how to get them.
#include <fmt/format.h>

#include "xlshare/error.hpp"
#include "xlshare/remote/pool_server.hpp"
#include "xlshare/remote/ucx_backend.hpp"

namespace xlshare {

namespace {
constexpr const char* kWithout =
    "this build of xlshare has no UCX: install libucx-dev and rebuild (XLSHARE_WITH_UCX=ON)";
}

bool ucx_available() noexcept { return false; }

std::unique_ptr<MemoryBackend> open_ucx_backend(const BackendUri& uri, const BackendOptions&) {
  throw ConfigError(fmt::format("{}: {}", uri.text, kWithout));
}

struct PoolServer::Impl {};

PoolServer::PoolServer(std::string_view, PoolServerOptions) {
  throw ConfigError(fmt::format("pool serve: {}", kWithout));
}
PoolServer::~PoolServer() = default;
std::uint16_t PoolServer::port() const noexcept { return 0; }
const std::string& PoolServer::name() const noexcept {
  static const std::string none;
  return none;
}
std::string PoolServer::client_uri() const { return {}; }
void PoolServer::serve(const std::atomic<bool>*) {}
void PoolServer::stop() noexcept {}
PoolServerStats PoolServer::stats() const noexcept { return {}; }

}  // namespace xlshare
