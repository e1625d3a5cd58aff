#include "xlshare/memory/dax_backend.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <filesystem>
#include <fstream>

#include <fmt/format.h>

#include "memory/fd_region.hpp"
#include "xlshare/error.hpp"

namespace xlshare {
namespace {

bool is_power_of_two(std::uint64_t v) { return v != 0 && (v & (v - 1)) == 0; }

// Reads one unsigned integer (decimal, or hex with 0x) from a sysfs attribute file.
std::uint64_t read_sysfs_u64(const std::filesystem::path& file) {
  std::ifstream in(file);
  if (!in)
    throw BackendError(fmt::format("{}: cannot read (is this a devdax device?)", file.string()));
  std::string text;
  std::getline(in, text, '\0');
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();
  int base = 10;
  std::string_view digits = text;
  if (digits.starts_with("0x")) {
    base = 16;
    digits.remove_prefix(2);
  }
  std::uint64_t value = 0;
  const auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), value, base);
  if (ec != std::errc() || end != digits.data() + digits.size() || digits.empty()) {
    throw BackendError(fmt::format("{}: '{}' is not an unsigned integer", file.string(), text));
  }
  return value;
}

}  // namespace

DevDaxGeometry read_devdax_geometry(std::string_view sysfs_root, std::string_view device_name) {
  if (device_name.empty() || device_name.find('/') != std::string_view::npos ||
      device_name.find("..") != std::string_view::npos) {
    throw BackendError(fmt::format("'{}' is not a devdax device name", device_name));
  }
  const std::filesystem::path dir =
      std::filesystem::path(sysfs_root) / "bus" / "dax" / "devices" / std::string(device_name);
  DevDaxGeometry g;
  g.size_bytes = read_sysfs_u64(dir / "size");
  g.align_bytes = read_sysfs_u64(dir / "align");
  if (g.size_bytes == 0) throw BackendError(fmt::format("{}: size is 0", (dir / "size").string()));
  if (!is_power_of_two(g.align_bytes) || g.align_bytes < page_size_bytes()) {
    throw BackendError(fmt::format("{}: align {} is not a power of two of at least a page",
                                   (dir / "align").string(), g.align_bytes));
  }
  if (g.size_bytes % g.align_bytes != 0) {
    throw BackendError(fmt::format("{}: size {} is not a multiple of align {}", dir.string(),
                                   g.size_bytes, g.align_bytes));
  }
  return g;
}

DaxBackend::DaxBackend(std::unique_ptr<FdRegion> region, bool is_devdax)
    : region_(std::move(region)), is_devdax_(is_devdax) {
  if (!is_devdax_)
    set_read_view(region_->map_read_view());
  else
    set_read_view(region_->map(*this, 0, region_->size_bytes(), Access::kReadOnly));
}

DaxBackend::~DaxBackend() = default;

std::unique_ptr<DaxBackend> DaxBackend::open_device(std::string_view path,
                                                    const BackendOptions& options) {
  const std::string uri = fmt::format("dax://{}", path);
  const std::string name = std::filesystem::path(path).filename().string();
  const DevDaxGeometry geometry = read_devdax_geometry(options.sysfs_root, name);
  const int flags = (options.read_only ? O_RDONLY : O_RDWR) | O_CLOEXEC;
  detail::UniqueFd fd(::open(std::string(path).c_str(), flags));
  if (!fd) throw BackendError(errno_message(uri + ": open", errno));
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) throw BackendError(errno_message(uri + ": fstat", errno));
  if (!S_ISCHR(st.st_mode) && !(options.allow_regular_file_as_devdax && S_ISREG(st.st_mode))) {
    throw BackendError(uri + ": not a character device (use file:// for a file on an fsdax mount)");
  }
  if (st.st_uid != ::geteuid() && !options.allow_foreign_owner) {
    throw BackendError(
        fmt::format("{}: owned by uid {}, not by this user; refusing it", uri, st.st_uid));
  }
  if (S_ISREG(st.st_mode) && static_cast<std::uint64_t>(st.st_size) < geometry.size_bytes) {
    throw BackendError(fmt::format("{}: the stand-in file holds {} bytes but sysfs says {}", uri,
                                   st.st_size, geometry.size_bytes));
  }
  auto region = std::make_unique<FdRegion>(uri, std::move(fd), geometry.size_bytes,
                                           geometry.align_bytes, !options.read_only,
                                           /*try_map_sync=*/false);
  return std::unique_ptr<DaxBackend>(new DaxBackend(std::move(region), /*is_devdax=*/true));
}

std::unique_ptr<DaxBackend> DaxBackend::create_file(std::string_view path, std::uint64_t size_bytes,
                                                    const BackendOptions& options) {
  const std::string uri = fmt::format("file://{}", path);
  const std::string p(path);
  detail::UniqueFd fd(
      ::open(p.c_str(), O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC, static_cast<mode_t>(options.mode)));
  if (!fd) {
    if (errno == EEXIST) throw BackendError(uri + ": already exists");
    throw BackendError(errno_message(uri + ": create", errno));
  }
  try {
    if (::fchmod(fd.get(), static_cast<mode_t>(options.mode)) != 0) {
      throw BackendError(errno_message(uri + ": chmod", errno));
    }
    size_new_object(fd.get(), uri, size_bytes, options.reserve_on_create);
    auto region = std::make_unique<FdRegion>(uri, std::move(fd), size_bytes, page_size_bytes(),
                                             /*writable=*/true, /*try_map_sync=*/true);
    return std::unique_ptr<DaxBackend>(new DaxBackend(std::move(region), /*is_devdax=*/false));
  } catch (...) {
    ::unlink(p.c_str());
    throw;
  }
}

std::unique_ptr<DaxBackend> DaxBackend::open_file(std::string_view path,
                                                  const BackendOptions& options) {
  const std::string uri = fmt::format("file://{}", path);
  const int flags = (options.read_only ? O_RDONLY : O_RDWR) | O_CLOEXEC;
  detail::UniqueFd fd(::open(std::string(path).c_str(), flags));
  if (!fd) {
    if (errno == ENOENT) throw BackendError(uri + ": no such file");
    throw BackendError(errno_message(uri + ": open", errno));
  }
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) throw BackendError(errno_message(uri + ": fstat", errno));
  if (!S_ISREG(st.st_mode)) throw BackendError(uri + ": not a regular file");
  const std::uint64_t size = check_fd_owner_and_size(fd.get(), uri, options);
  if (size == 0) throw BackendError(uri + ": is empty (size 0)");
  auto region = std::make_unique<FdRegion>(uri, std::move(fd), size, page_size_bytes(),
                                           !options.read_only, /*try_map_sync=*/true);
  return std::unique_ptr<DaxBackend>(new DaxBackend(std::move(region), /*is_devdax=*/false));
}

const std::string& DaxBackend::uri() const noexcept { return region_->uri(); }
std::uint64_t DaxBackend::size_bytes() const noexcept { return region_->size_bytes(); }
std::uint64_t DaxBackend::alignment_bytes() const noexcept { return region_->alignment_bytes(); }
bool DaxBackend::is_writable() const noexcept { return region_->writable(); }
bool DaxBackend::uses_map_sync() const noexcept { return region_->uses_map_sync(); }
Mapping DaxBackend::map(std::uint64_t offset_bytes, std::uint64_t length_bytes, Access access) {
  return region_->map(*this, offset_bytes, length_bytes, access);
}

}  // namespace xlshare
