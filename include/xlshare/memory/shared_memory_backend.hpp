// SharedMemoryBackend: a POSIX shared memory object (/dev/shm/NAME), the embedded default.
// Processes on one host that map the same name share one physical copy of its pages.
#pragma once

#include <memory>
#include <string_view>

#include "xlshare/memory/backend_options.hpp"
#include "xlshare/memory/memory_backend.hpp"

namespace xlshare {

class FdRegion;

class SharedMemoryBackend final : public MemoryBackend {
 public:
  /// Longest accepted name, in bytes.
  static constexpr std::size_t kMaxNameBytes = 200;

  /// Creates a new object of `size_bytes` (O_EXCL: an existing name is an error) with
  /// `options.mode` (default 0600).
  /// @throws ConfigError for a bad name, BackendError when the object exists or cannot
  /// be created or reserved.
  static std::unique_ptr<SharedMemoryBackend> create(std::string_view name,
                                                     std::uint64_t size_bytes,
                                                     const BackendOptions& options = {});
  /// Opens an existing object. @throws ConfigError, BackendError.
  static std::unique_ptr<SharedMemoryBackend> open(std::string_view name,
                                                   const BackendOptions& options = {});
  /// Unlinks the object; mappings that exist stay valid until unmapped.
  /// @throws BackendError when it does not exist.
  static void remove(std::string_view name);
  /// Whether an object of this name exists.
  static bool exists(std::string_view name);
  /// Accepts [A-Za-z0-9._-]{1,200} except "." and ".." and names starting with '.'.
  /// @throws ConfigError naming the problem.
  static void validate_name(std::string_view name);

  ~SharedMemoryBackend() override;

  const std::string& uri() const noexcept override;
  std::uint64_t size_bytes() const noexcept override;
  std::uint64_t alignment_bytes() const noexcept override;
  bool is_writable() const noexcept override;
  Mapping map(std::uint64_t offset_bytes, std::uint64_t length_bytes, Access access) override;

  /// The object's name, without the leading '/'.
  const std::string& name() const noexcept { return name_; }

 private:
  SharedMemoryBackend(std::string name, std::unique_ptr<FdRegion> region);
  std::string name_;
  std::unique_ptr<FdRegion> region_;
};

}  // namespace xlshare
