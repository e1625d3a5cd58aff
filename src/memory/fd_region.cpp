#include "memory/fd_region.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>

#include <fmt/format.h>

#include "xlshare/error.hpp"

#ifndef MAP_SHARED_VALIDATE
#define MAP_SHARED_VALIDATE 0x03
#endif
#ifndef MAP_SYNC
#define MAP_SYNC 0x80000
#endif

namespace xlshare {

std::uint64_t page_size_bytes() noexcept {
  static const std::uint64_t page = static_cast<std::uint64_t>(::sysconf(_SC_PAGESIZE));
  return page;
}

FdRegion::FdRegion(std::string uri, detail::UniqueFd fd, std::uint64_t size_bytes,
                   std::uint64_t alignment_bytes, bool writable, bool try_map_sync)
    : uri_(std::move(uri)),
      fd_(std::move(fd)),
      size_bytes_(size_bytes),
      alignment_bytes_(alignment_bytes),
      writable_(writable),
      try_map_sync_(try_map_sync) {}

namespace {
constexpr std::uint64_t kHugePageBytes = 2u << 20;
}  // namespace

Mapping FdRegion::map(const MemoryBackend& owner, std::uint64_t offset_bytes,
                      std::uint64_t length_bytes, Access access) {
  check_map_request(owner, offset_bytes, length_bytes);
  if (access == Access::kReadWrite && !writable_) {
    throw BackendError(fmt::format("{}: opened read-only, cannot map read-write", uri_));
  }
  const int prot = access == Access::kReadWrite ? PROT_READ | PROT_WRITE : PROT_READ;
  const auto length = static_cast<std::size_t>(length_bytes);
  const auto offset = static_cast<off_t>(offset_bytes);
  void* address = MAP_FAILED;
  if (access == Access::kReadWrite && try_map_sync_) {
    address = ::mmap(nullptr, length, prot, MAP_SHARED_VALIDATE | MAP_SYNC, fd_.get(), offset);
    if (address != MAP_FAILED) uses_map_sync_ = true;
  }
  if (address == MAP_FAILED) {
    address = ::mmap(nullptr, length, prot, MAP_SHARED, fd_.get(), offset);
  }
  if (address == MAP_FAILED) {
    throw BackendError(errno_message(
        fmt::format("{}: mmap of {} bytes at offset {}", uri_, length_bytes, offset_bytes), errno));
  }
  // Huge pages where the host allows them for this object (shmem THP "advise" or more, a
  // filesystem with large folios): fewer page faults and TLB misses on the weights. A no-op
  // elsewhere (this development VM runs shmem THP "never"); `pool info` says what a
  // mapping got.
  if (length >= kHugePageBytes) (void)::madvise(address, length, MADV_HUGEPAGE);
  return Mapping(address, length);
}

Mapping FdRegion::map_read_view() {
  void* address =
      ::mmap(nullptr, static_cast<std::size_t>(size_bytes_), PROT_READ, MAP_SHARED, fd_.get(), 0);
  if (address == MAP_FAILED) {
    throw BackendError(errno_message(uri_ + ": read-only mmap of the whole object", errno));
  }
  return Mapping(address, static_cast<std::size_t>(size_bytes_));
}

std::uint64_t check_fd_owner_and_size(int fd, const std::string& uri,
                                      const BackendOptions& options) {
  struct stat st {};
  if (::fstat(fd, &st) != 0) throw BackendError(errno_message(uri + ": fstat", errno));
  if (st.st_uid != ::geteuid() && !options.allow_foreign_owner) {
    throw BackendError(fmt::format(
        "{}: owned by uid {}, not by this user (uid {}); refusing it (allow_foreign_owner "
        "overrides)",
        uri, st.st_uid, ::geteuid()));
  }
  if (st.st_size < 0) throw BackendError(uri + ": negative size");
  return static_cast<std::uint64_t>(st.st_size);
}

void size_new_object(int fd, const std::string& uri, std::uint64_t size_bytes, bool reserve) {
  if (size_bytes == 0) throw BackendError(uri + ": size must be greater than zero");
  if (size_bytes > static_cast<std::uint64_t>(INT64_MAX)) {
    throw BackendError(fmt::format("{}: size {} bytes is too large", uri, size_bytes));
  }
  if (::ftruncate(fd, static_cast<off_t>(size_bytes)) != 0) {
    throw BackendError(
        errno_message(fmt::format("{}: resize to {} bytes", uri, size_bytes), errno));
  }
  if (reserve) {
    const int rc = ::posix_fallocate(fd, 0, static_cast<off_t>(size_bytes));
    if (rc != 0 && rc != EOPNOTSUPP && rc != EINVAL) {
      throw BackendError(errno_message(
          fmt::format("{}: reserving {} bytes (is the filesystem full?)", uri, size_bytes), rc));
    }
  }
}

}  // namespace xlshare
