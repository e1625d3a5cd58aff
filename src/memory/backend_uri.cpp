#include "xlshare/memory/backend_uri.hpp"

#include <unistd.h>

#include <charconv>

#include <fmt/format.h>

#include "xlshare/error.hpp"
#include "xlshare/memory/dax_backend.hpp"
#include "xlshare/memory/numa_backend.hpp"
#include "xlshare/memory/shared_memory_backend.hpp"

namespace xlshare {
namespace {

void check_path(std::string_view uri, std::string_view path) {
  if (path.empty() || path.front() != '/') {
    throw ConfigError(
        fmt::format("'{}': the path must be absolute (three slashes: file:///path)", uri));
  }
  if (path.find('\0') != std::string_view::npos) {
    throw ConfigError(fmt::format("'{}': the path holds a NUL byte", uri));
  }
  for (std::size_t pos = 0; pos != std::string_view::npos;) {
    const auto next = path.find('/', pos + 1);
    const auto part = path.substr(pos + 1, next == std::string_view::npos ? next : next - pos - 1);
    if (part == "..") throw ConfigError(fmt::format("'{}': the path may not contain '..'", uri));
    pos = next;
  }
  if (path.size() > 4096)
    throw ConfigError(fmt::format("'{}...': the path is too long", uri.substr(0, 40)));
}

void check_name(std::string_view uri, std::string_view name) {
  try {
    SharedMemoryBackend::validate_name(name);
  } catch (const ConfigError& e) {
    throw ConfigError(fmt::format("'{}': {}", uri, e.what()));
  }
}

}  // namespace

BackendUri parse_backend_uri(std::string_view uri) {
  BackendUri out;
  out.text = std::string(uri);
  const auto sep = uri.find("://");
  if (sep == std::string_view::npos) {
    throw ConfigError(
        fmt::format("'{}' is not a pool URI; use shm://NAME, dax:///dev/daxX.Y, file:///PATH or "
                    "numa://NODE/NAME",
                    uri));
  }
  const std::string_view scheme = uri.substr(0, sep);
  const std::string_view rest = uri.substr(sep + 3);
  if (scheme == "shm") {
    out.scheme = BackendUri::Scheme::kShm;
    check_name(uri, rest);
    out.target = std::string(rest);
  } else if (scheme == "dax") {
    out.scheme = BackendUri::Scheme::kDax;
    check_path(uri, rest);
    out.target = std::string(rest);
  } else if (scheme == "file") {
    out.scheme = BackendUri::Scheme::kFile;
    check_path(uri, rest);
    out.target = std::string(rest);
  } else if (scheme == "numa") {
    out.scheme = BackendUri::Scheme::kNuma;
    const auto slash = rest.find('/');
    if (slash == std::string_view::npos) {
      throw ConfigError(fmt::format("'{}': expected numa://NODE/NAME", uri));
    }
    const std::string_view node = rest.substr(0, slash);
    int value = -1;
    const auto [end, ec] = std::from_chars(node.data(), node.data() + node.size(), value);
    if (ec != std::errc() || end != node.data() + node.size() || value < 0 || value > 4095) {
      throw ConfigError(fmt::format("'{}': NUMA node '{}' is not a number in 0..4095", uri, node));
    }
    out.numa_node = value;
    check_name(uri, rest.substr(slash + 1));
    out.target = std::string(rest.substr(slash + 1));
  } else {
    throw ConfigError(
        fmt::format("'{}': unknown scheme '{}'; use shm, dax, file or numa", uri, scheme));
  }
  return out;
}

std::unique_ptr<MemoryBackend> create_backend(std::string_view uri, std::uint64_t size_bytes,
                                              const BackendOptions& options) {
  const BackendUri u = parse_backend_uri(uri);
  switch (u.scheme) {
    case BackendUri::Scheme::kShm:
      return SharedMemoryBackend::create(u.target, size_bytes, options);
    case BackendUri::Scheme::kFile:
      return DaxBackend::create_file(u.target, size_bytes, options);
    case BackendUri::Scheme::kNuma:
      return NumaBackend::create(u.numa_node, u.target, size_bytes, options);
    case BackendUri::Scheme::kDax: {
      auto backend = DaxBackend::open_device(u.target, options);
      if (backend->size_bytes() < size_bytes) {
        throw BackendError(fmt::format("{}: the device holds {} bytes, fewer than the {} asked for",
                                       uri, backend->size_bytes(), size_bytes));
      }
      return backend;
    }
  }
  throw ConfigError(fmt::format("'{}': unhandled scheme", uri));
}

std::unique_ptr<MemoryBackend> open_backend(std::string_view uri, const BackendOptions& options) {
  const BackendUri u = parse_backend_uri(uri);
  switch (u.scheme) {
    case BackendUri::Scheme::kShm:
      return SharedMemoryBackend::open(u.target, options);
    case BackendUri::Scheme::kFile:
      return DaxBackend::open_file(u.target, options);
    case BackendUri::Scheme::kNuma:
      return NumaBackend::open(u.numa_node, u.target, options);
    case BackendUri::Scheme::kDax:
      return DaxBackend::open_device(u.target, options);
  }
  throw ConfigError(fmt::format("'{}': unhandled scheme", uri));
}

void remove_backend(std::string_view uri) {
  const BackendUri u = parse_backend_uri(uri);
  switch (u.scheme) {
    case BackendUri::Scheme::kShm:
    case BackendUri::Scheme::kNuma:
      SharedMemoryBackend::remove(u.target);
      return;
    case BackendUri::Scheme::kFile:
      if (::unlink(u.target.c_str()) != 0)
        throw BackendError(errno_message(std::string(uri) + ": remove", errno));
      return;
    case BackendUri::Scheme::kDax:
      throw BackendError(
          fmt::format("{}: a devdax device cannot be removed; erase its pool instead", uri));
  }
}

bool backend_exists(std::string_view uri) {
  const BackendUri u = parse_backend_uri(uri);
  switch (u.scheme) {
    case BackendUri::Scheme::kShm:
    case BackendUri::Scheme::kNuma:
      return SharedMemoryBackend::exists(u.target);
    case BackendUri::Scheme::kFile:
    case BackendUri::Scheme::kDax:
      return ::access(u.target.c_str(), F_OK) == 0;
  }
  return false;
}

}  // namespace xlshare
