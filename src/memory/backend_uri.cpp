#include "xlshare/memory/backend_uri.hpp"

#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <map>
#include <mutex>

#include <fmt/format.h>

#include "xlshare/error.hpp"
#include "xlshare/memory/dax_backend.hpp"
#include "xlshare/memory/numa_backend.hpp"
#include "xlshare/memory/shared_memory_backend.hpp"
#include "xlshare/remote/ucx_backend.hpp"

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

// Registered schemes, by name. Entries are shared so a call runs outside the lock.
struct Registry {
  std::mutex mutex;
  std::map<std::string, std::shared_ptr<const BackendScheme>, std::less<>> schemes;
};
Registry& registry() {
  static Registry r;
  return r;
}

std::shared_ptr<const BackendScheme> registered(std::string_view name) {
  Registry& r = registry();
  std::lock_guard lock(r.mutex);
  const auto it = r.schemes.find(name);
  return it == r.schemes.end() ? nullptr : it->second;
}

std::string known_schemes() {
  std::string names = "shm, dax, file, numa, ucx";
  Registry& r = registry();
  std::lock_guard lock(r.mutex);
  for (const auto& [name, scheme] : r.schemes) names += ", " + name;
  return names;
}

bool is_builtin(std::string_view name) {
  return name == "shm" || name == "dax" || name == "file" || name == "numa" || name == "ucx";
}

// The scheme of `u`, which parse_backend_uri found registered; it may have been
// unregistered since.
std::shared_ptr<const BackendScheme> scheme_of(const BackendUri& u) {
  auto scheme = registered(u.scheme_name);
  if (!scheme) {
    throw ConfigError(
        fmt::format("'{}': the scheme '{}' is no longer registered", u.text, u.scheme_name));
  }
  return scheme;
}

void check_name(std::string_view uri, std::string_view name) {
  try {
    SharedMemoryBackend::validate_name(name);
  } catch (const ConfigError& e) {
    throw ConfigError(fmt::format("'{}': {}", uri, e.what()));
  }
}

// A registered scheme's backend, checked for what every pool relies on.
std::unique_ptr<MemoryBackend> checked(const BackendUri& u, std::unique_ptr<MemoryBackend> b) {
  if (!b) {
    throw BackendError(fmt::format("{}: the scheme '{}' made no backend", u.text, u.scheme_name));
  }
  const std::uint64_t a = b->alignment_bytes();
  if (a == 0 || (a & (a - 1)) != 0) {
    throw BackendError(
        fmt::format("{}: the scheme '{}' made a backend whose alignment {} is not "
                    "a power of two",
                    u.text, u.scheme_name, a));
  }
  return b;
}

// ucx://HOST:PORT/NAME
void parse_ucx(std::string_view uri, std::string_view rest, BackendUri& out) {
  out.scheme = BackendUri::Scheme::kUcx;
  const auto expected = [&] {
    return ConfigError(fmt::format("'{}': expected ucx://HOST:PORT/NAME", uri.substr(0, 200)));
  };
  const auto slash = rest.find('/');
  if (slash == std::string_view::npos) throw expected();
  const std::string_view authority = rest.substr(0, slash);
  std::string_view host, port;
  if (!authority.empty() && authority.front() == '[') {
    const auto close = authority.find(']');
    if (close == std::string_view::npos || close + 1 >= authority.size() ||
        authority[close + 1] != ':')
      throw expected();
    host = authority.substr(1, close - 1);
    port = authority.substr(close + 2);
  } else {
    const auto colon = authority.rfind(':');
    if (colon == std::string_view::npos) throw expected();
    host = authority.substr(0, colon);
    port = authority.substr(colon + 1);
    if (host.find(':') != std::string_view::npos) {
      throw ConfigError(fmt::format(
          "'{}': write an IPv6 address in brackets: ucx://[ADDR]:PORT/NAME", uri.substr(0, 200)));
    }
  }
  if (host.empty() || host.size() > 253) throw expected();
  for (char c : host) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '.' || c == '-' || c == ':' || c == '%' || c == '_';
    if (!ok) throw ConfigError(fmt::format("'{}': the host holds '{}'", uri.substr(0, 200), c));
  }
  unsigned value = 0;
  const auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), value);
  if (port.empty() || ec != std::errc() || end != port.data() + port.size() || value == 0 ||
      value > 65535) {
    throw ConfigError(fmt::format("'{}': the port '{}' is not a number in 1..65535",
                                  uri.substr(0, 200), port.substr(0, 20)));
  }
  out.host = std::string(host);
  out.port = static_cast<std::uint16_t>(value);
  check_name(uri, rest.substr(slash + 1));
  if (rest.size() - slash - 1 > 63) {
    throw ConfigError(fmt::format("'{}': a served pool's name is 1..63 bytes", uri.substr(0, 200)));
  }
  out.target = std::string(rest.substr(slash + 1));
}

[[noreturn]] void refuse_remote(const BackendUri& u, std::string_view what) {
  throw ConfigError(fmt::format(
      "{}: a remote pool cannot be {} from here; do it on the pool's host (xlshare pool ... "
      "on the served pool)",
      u.text, what));
}

}  // namespace

void register_backend_scheme(std::string_view name, BackendScheme scheme) {
  const bool well_formed =
      !name.empty() && name.size() <= 32 && name.front() >= 'a' && name.front() <= 'z' &&
      std::all_of(name.begin(), name.end(), [](char c) {
        return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' || c == '-' || c == '.';
      });
  if (!well_formed) {
    throw ConfigError(fmt::format(
        "backend scheme '{}': expected a lower-case letter, then letters, digits, '+', '-' or "
        "'.', at most 32 bytes",
        name.substr(0, 40)));
  }
  if (is_builtin(name)) {
    throw ConfigError(fmt::format("backend scheme '{}' is built in", name));
  }
  if (!scheme.create || !scheme.open || !scheme.exists) {
    throw ConfigError(
        fmt::format("backend scheme '{}': create, open and exists are required", name));
  }
  Registry& r = registry();
  std::lock_guard lock(r.mutex);
  if (!r.schemes
           .emplace(std::string(name), std::make_shared<const BackendScheme>(std::move(scheme)))
           .second) {
    throw ConfigError(fmt::format("backend scheme '{}' is already registered", name));
  }
}

bool unregister_backend_scheme(std::string_view name) {
  Registry& r = registry();
  std::lock_guard lock(r.mutex);
  const auto it = r.schemes.find(name);
  if (it == r.schemes.end()) return false;
  r.schemes.erase(it);
  return true;
}

BackendUri parse_backend_uri(std::string_view uri) {
  BackendUri out;
  out.text = std::string(uri);
  const auto sep = uri.find("://");
  if (sep == std::string_view::npos) {
    throw ConfigError(
        fmt::format("'{}' is not a pool URI; use shm://NAME, dax:///dev/daxX.Y, file:///PATH, "
                    "numa://NODE/NAME or ucx://HOST:PORT/NAME",
                    uri));
  }
  const std::string_view scheme = uri.substr(0, sep);
  const std::string_view rest = uri.substr(sep + 3);
  out.scheme_name = std::string(scheme);
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
  } else if (scheme == "ucx") {
    parse_ucx(uri, rest, out);
  } else if (registered(scheme)) {
    out.scheme = BackendUri::Scheme::kRegistered;
    if (rest.empty() || rest.size() > 4096) {
      throw ConfigError(
          fmt::format("'{}': expected {}://TARGET of 1..4096 bytes", uri.substr(0, 60), scheme));
    }
    for (char c : rest) {
      if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) {
        throw ConfigError(fmt::format("'{}': the target holds a control character", uri));
      }
    }
    out.target = std::string(rest);
  } else {
    throw ConfigError(fmt::format("'{}': unknown scheme '{}'; use {}", uri.substr(0, 80),
                                  scheme.substr(0, 40), known_schemes()));
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
    case BackendUri::Scheme::kUcx:
      refuse_remote(u, "created");
    case BackendUri::Scheme::kRegistered:
      return checked(u, scheme_of(u)->create(u, size_bytes, options));
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
    case BackendUri::Scheme::kUcx:
      return open_ucx_backend(u, options);
    case BackendUri::Scheme::kRegistered:
      return checked(u, scheme_of(u)->open(u, options));
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
    case BackendUri::Scheme::kUcx:
      refuse_remote(u, "removed");
    case BackendUri::Scheme::kRegistered: {
      const auto scheme = scheme_of(u);
      if (!scheme->remove) {
        throw BackendError(
            fmt::format("{}: the scheme '{}' cannot remove its objects", uri, u.scheme_name));
      }
      scheme->remove(u);
      return;
    }
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
    case BackendUri::Scheme::kUcx:
      return true;  // whether it answers is known only by opening it
    case BackendUri::Scheme::kRegistered:
      return scheme_of(u)->exists(u);
  }
  return false;
}

}  // namespace xlshare
