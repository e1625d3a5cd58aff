// Selecting a MemoryBackend by URI:
//   shm://NAME          SharedMemoryBackend (POSIX shared memory, the default)
//   dax:///dev/daxX.Y   DaxBackend on a devdax character device
//   file:///PATH        DaxBackend on a file (an fsdax mount, or any filesystem)
//   numa://NODE/NAME    NumaBackend: shared memory bound to NUMA node NODE
//   ucx://HOST:PORT/NAME  a pool served by `xlshare pool serve` on HOST, read over UCX
//                       (read-only, no local mapping of the data: copy placement only;
//                       xlshare/remote/ucx_backend.hpp). HOST: a name, an IPv4 address or
//                       [an IPv6 address].
//   NAME://TARGET       a backend of a scheme registered with register_backend_scheme()
//
// Everything that takes a pool URI (create_pool, remove_pool, InferenceEngine, the CLI in
// the same process) goes through these functions, so a registered scheme works everywhere.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "xlshare/memory/backend_options.hpp"
#include "xlshare/memory/memory_backend.hpp"

namespace xlshare {

struct BackendUri {
  enum class Scheme { kShm, kDax, kFile, kNuma, kUcx, kRegistered };
  Scheme scheme = Scheme::kShm;
  std::string scheme_name;  ///< "shm", "dax", "file", "numa", "ucx" or the registered name
  /// shm/numa: the object name; dax/file: the absolute path; ucx: the served pool's name;
  /// registered: all after "://"
  std::string target;
  int numa_node = -1;      ///< numa only
  std::string host;        ///< ucx only: the server (brackets of an IPv6 address removed)
  std::uint16_t port = 0;  ///< ucx only
  std::string text;        ///< the URI as given
};

/// What a registered scheme does for its URIs "NAME://TARGET". Each function receives the
/// parsed URI (its `target` is non-empty, at most 4096 bytes, free of control characters;
/// the scheme checks the rest and throws ConfigError for a target it cannot use).
struct BackendScheme {
  /// Creates the object with `size_bytes`; throws BackendError when it already exists.
  /// Required.
  std::function<std::unique_ptr<MemoryBackend>(const BackendUri&, std::uint64_t size_bytes,
                                               const BackendOptions&)>
      create;
  /// Opens the existing object; throws BackendError when there is none. Required.
  std::function<std::unique_ptr<MemoryBackend>(const BackendUri&, const BackendOptions&)> open;
  /// Whether the object exists. Required.
  std::function<bool(const BackendUri&)> exists;
  /// Removes the object. Empty: remove_backend() refuses with a BackendError.
  std::function<void(const BackendUri&)> remove;
};

/// Makes "NAME://…" URIs name backends of `scheme`, process-wide, from now on (thread-safe).
/// NAME is a lower-case letter followed by lower-case letters, digits, '+', '-' or '.'
/// (RFC 3986), at most 32 bytes. A backend made this way must follow the MemoryBackend
/// contract (the conformance suite in xlshare/testing/memory_backend_conformance.hpp
/// checks it): a pool maps its backend, so map() is required.
/// @throws ConfigError for a malformed or built-in name, a name already registered, or a
/// required function missing.
void register_backend_scheme(std::string_view name, BackendScheme scheme);
/// Forgets a registered scheme; backends it made stay valid. Returns whether it was known.
bool unregister_backend_scheme(std::string_view name);

/// Parses and validates a backend URI. @throws ConfigError naming the URI and the problem.
BackendUri parse_backend_uri(std::string_view uri);

/// Creates the object named by `uri` with `size_bytes`. @throws ConfigError, BackendError.
std::unique_ptr<MemoryBackend> create_backend(std::string_view uri, std::uint64_t size_bytes,
                                              const BackendOptions& options = {});
/// Opens the existing object named by `uri`. @throws ConfigError, BackendError.
std::unique_ptr<MemoryBackend> open_backend(std::string_view uri,
                                            const BackendOptions& options = {});
/// Removes the object named by `uri` (shm_unlink / unlink). A devdax device cannot be
/// removed: its pool is erased instead by overwriting the header.
/// @throws ConfigError, BackendError.
void remove_backend(std::string_view uri);
/// Whether the object named by `uri` exists. @throws ConfigError for a malformed URI.
bool backend_exists(std::string_view uri);

}  // namespace xlshare
