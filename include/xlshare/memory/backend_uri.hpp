// Selecting a MemoryBackend by URI:
//   shm://NAME          SharedMemoryBackend (POSIX shared memory, the default)
//   dax:///dev/daxX.Y   DaxBackend on a devdax character device
//   file:///PATH        DaxBackend on a file (an fsdax mount, or any filesystem)
//   numa://NODE/NAME    NumaBackend: shared memory bound to NUMA node NODE
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "xlshare/memory/backend_options.hpp"
#include "xlshare/memory/memory_backend.hpp"

namespace xlshare {

struct BackendUri {
  enum class Scheme { kShm, kDax, kFile, kNuma };
  Scheme scheme = Scheme::kShm;
  std::string target;  ///< shm/numa: the object name; dax/file: the absolute path
  int numa_node = -1;  ///< numa only
  std::string text;    ///< the URI as given
};

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
