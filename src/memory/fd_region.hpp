// The part every file-descriptor backend shares: an fd of known size and map alignment,
// mapped MAP_SHARED on request. Private to src/.
#pragma once

#include <cstdint>
#include <string>

#include "common/unique_fd.hpp"
#include "xlshare/memory/backend_options.hpp"
#include "xlshare/memory/memory_backend.hpp"

namespace xlshare {

class FdRegion {
 public:
  FdRegion(std::string uri, detail::UniqueFd fd, std::uint64_t size_bytes,
           std::uint64_t alignment_bytes, bool writable, bool try_map_sync);

  const std::string& uri() const noexcept { return uri_; }
  int fd() const noexcept { return fd_.get(); }
  std::uint64_t size_bytes() const noexcept { return size_bytes_; }
  std::uint64_t alignment_bytes() const noexcept { return alignment_bytes_; }
  bool writable() const noexcept { return writable_; }
  bool uses_map_sync() const noexcept { return uses_map_sync_; }

  /// mmap(fd) of a checked range. @throws BackendError.
  Mapping map(const MemoryBackend& owner, std::uint64_t offset_bytes, std::uint64_t length_bytes,
              Access access);
  /// A read-only mapping of the whole object (any size), for MemoryBackend's read view.
  /// @throws BackendError.
  Mapping map_read_view();

 private:
  std::string uri_;
  detail::UniqueFd fd_;
  std::uint64_t size_bytes_;
  std::uint64_t alignment_bytes_;
  bool writable_;
  bool try_map_sync_;
  bool uses_map_sync_ = false;
};

/// The system page size.
std::uint64_t page_size_bytes() noexcept;

/// fstat()s `fd`; refuses an object owned by another user unless allowed.
/// Returns the object's size in bytes. @throws BackendError.
std::uint64_t check_fd_owner_and_size(int fd, const std::string& uri,
                                      const BackendOptions& options);

/// Sizes a freshly created object: ftruncate, then (optionally) fallocate so that lack of
/// space is reported now. @throws BackendError.
void size_new_object(int fd, const std::string& uri, std::uint64_t size_bytes, bool reserve);

}  // namespace xlshare
