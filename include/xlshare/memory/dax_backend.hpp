// DaxBackend: memory reached through DAX — a devdax character device (/dev/daxX.Y, the way
// a CXL memory expander is usually exposed) or a file on an fsdax-mounted filesystem.
//
// devdax: size and alignment come from /sys/bus/dax/devices/daxX.Y/{size,align}; the device
// is mapped MAP_SHARED only, with offsets and lengths that are multiples of its alignment
// (typically 2 MiB). A device cannot be created or removed; "create" checks that it is
// large enough.
// fsdax file: created O_EXCL with the configured mode, mapped MAP_SHARED_VALIDATE|MAP_SYNC
// where the filesystem accepts it (so stores are durable without msync), MAP_SHARED
// otherwise. On a non-DAX filesystem this is simply a shared file mapping, which is how the
// tests exercise it.
#pragma once

#include <memory>
#include <string_view>

#include "xlshare/memory/backend_options.hpp"
#include "xlshare/memory/memory_backend.hpp"

namespace xlshare {

class FdRegion;

/// Size and mapping alignment of a devdax device, as sysfs reports them.
struct DevDaxGeometry {
  std::uint64_t size_bytes = 0;
  std::uint64_t align_bytes = 0;
};

/// Reads SYSFS_ROOT/bus/dax/devices/DEVICE/{size,align}.
/// @throws BackendError naming the file and the problem (missing, unparsable, zero, not a
/// power of two, size not a multiple of align).
DevDaxGeometry read_devdax_geometry(std::string_view sysfs_root, std::string_view device_name);

class DaxBackend final : public MemoryBackend {
 public:
  /// Opens a devdax device such as /dev/dax0.0. @throws BackendError.
  static std::unique_ptr<DaxBackend> open_device(std::string_view path,
                                                 const BackendOptions& options = {});
  /// Creates a file of `size_bytes` (O_EXCL). @throws BackendError.
  static std::unique_ptr<DaxBackend> create_file(std::string_view path, std::uint64_t size_bytes,
                                                 const BackendOptions& options = {});
  /// Opens an existing file. @throws BackendError.
  static std::unique_ptr<DaxBackend> open_file(std::string_view path,
                                               const BackendOptions& options = {});

  ~DaxBackend() override;

  const std::string& uri() const noexcept override;
  std::uint64_t size_bytes() const noexcept override;
  std::uint64_t alignment_bytes() const noexcept override;
  bool is_writable() const noexcept override;
  Mapping map(std::uint64_t offset_bytes, std::uint64_t length_bytes, Access access) override;

  /// True for a devdax character device, false for a file.
  bool is_devdax() const noexcept { return is_devdax_; }
  /// Whether writable mappings of this file were accepted with MAP_SYNC.
  bool uses_map_sync() const noexcept;

 private:
  DaxBackend(std::unique_ptr<FdRegion> region, bool is_devdax);
  std::unique_ptr<FdRegion> region_;
  bool is_devdax_;
};

}  // namespace xlshare
