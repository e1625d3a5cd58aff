#include "xlshare/memory/shared_memory_backend.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include <cerrno>

#include <fmt/format.h>

#include "memory/fd_region.hpp"
#include "xlshare/error.hpp"

namespace xlshare {

void SharedMemoryBackend::validate_name(std::string_view name) {
  if (name.empty()) throw ConfigError("shared memory name is empty");
  if (name.size() > kMaxNameBytes) {
    throw ConfigError(fmt::format("shared memory name '{}...' is {} bytes; the limit is {}",
                                  name.substr(0, 32), name.size(), kMaxNameBytes));
  }
  if (name.front() == '.' || name.find("..") != std::string_view::npos) {
    throw ConfigError(
        fmt::format("shared memory name '{}' must not start with '.' or contain '..'", name));
  }
  for (const char c : name) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '.' || c == '_' || c == '-';
    if (!ok) {
      throw ConfigError(fmt::format(
          "shared memory name '{}' has the character '{}'; use letters, digits, '.', '_' and '-'",
          name, c == '/' ? std::string("/") : std::string(1, c)));
    }
  }
}

namespace {

std::string shm_path(std::string_view name) { return "/" + std::string(name); }

}  // namespace

SharedMemoryBackend::SharedMemoryBackend(std::string name, std::unique_ptr<FdRegion> region)
    : name_(std::move(name)), region_(std::move(region)) {
  set_read_view(region_->map_read_view());
}

SharedMemoryBackend::~SharedMemoryBackend() = default;

std::unique_ptr<SharedMemoryBackend> SharedMemoryBackend::create(std::string_view name,
                                                                 std::uint64_t size_bytes,
                                                                 const BackendOptions& options) {
  validate_name(name);
  const std::string uri = fmt::format("shm://{}", name);
  const std::string path = shm_path(name);
  detail::UniqueFd fd(::shm_open(path.c_str(), O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC,
                                 static_cast<mode_t>(options.mode)));
  if (!fd) {
    if (errno == EEXIST) {
      throw BackendError(
          fmt::format("{}: already exists (remove it with `xlshare pool rm {}`)", uri, uri));
    }
    throw BackendError(errno_message(uri + ": create", errno));
  }
  try {
    // shm_open applies the umask; set the requested mode exactly.
    if (::fchmod(fd.get(), static_cast<mode_t>(options.mode)) != 0) {
      throw BackendError(errno_message(uri + ": chmod", errno));
    }
    size_new_object(fd.get(), uri, size_bytes, options.reserve_on_create);
    auto region = std::make_unique<FdRegion>(uri, std::move(fd), size_bytes, page_size_bytes(),
                                             /*writable=*/true, /*try_map_sync=*/false);
    return std::unique_ptr<SharedMemoryBackend>(
        new SharedMemoryBackend(std::string(name), std::move(region)));
  } catch (...) {
    ::shm_unlink(path.c_str());
    throw;
  }
}

std::unique_ptr<SharedMemoryBackend> SharedMemoryBackend::open(std::string_view name,
                                                               const BackendOptions& options) {
  validate_name(name);
  const std::string uri = fmt::format("shm://{}", name);
  const std::string path = shm_path(name);
  const int flags = (options.read_only ? O_RDONLY : O_RDWR) | O_CLOEXEC;
  detail::UniqueFd fd(::shm_open(path.c_str(), flags, 0));
  if (!fd) {
    if (errno == ENOENT) throw BackendError(uri + ": no such pool (shared memory object)");
    throw BackendError(errno_message(uri + ": open", errno));
  }
  const std::uint64_t size = check_fd_owner_and_size(fd.get(), uri, options);
  if (size == 0) throw BackendError(uri + ": is empty (size 0)");
  auto region = std::make_unique<FdRegion>(uri, std::move(fd), size, page_size_bytes(),
                                           !options.read_only, /*try_map_sync=*/false);
  return std::unique_ptr<SharedMemoryBackend>(
      new SharedMemoryBackend(std::string(name), std::move(region)));
}

void SharedMemoryBackend::remove(std::string_view name) {
  validate_name(name);
  if (::shm_unlink(shm_path(name).c_str()) != 0) {
    if (errno == ENOENT) throw BackendError(fmt::format("shm://{}: no such pool", name));
    throw BackendError(errno_message(fmt::format("shm://{}: remove", name), errno));
  }
}

bool SharedMemoryBackend::exists(std::string_view name) {
  validate_name(name);
  detail::UniqueFd fd(::shm_open(shm_path(name).c_str(), O_RDONLY | O_CLOEXEC, 0));
  return static_cast<bool>(fd) || errno == EACCES;
}

const std::string& SharedMemoryBackend::uri() const noexcept { return region_->uri(); }
std::uint64_t SharedMemoryBackend::size_bytes() const noexcept { return region_->size_bytes(); }
std::uint64_t SharedMemoryBackend::alignment_bytes() const noexcept {
  return region_->alignment_bytes();
}
bool SharedMemoryBackend::is_writable() const noexcept { return region_->writable(); }
Mapping SharedMemoryBackend::map(std::uint64_t offset_bytes, std::uint64_t length_bytes,
                                 Access access) {
  return region_->map(*this, offset_bytes, length_bytes, access);
}

}  // namespace xlshare
