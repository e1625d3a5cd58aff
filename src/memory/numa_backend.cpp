#include "xlshare/memory/numa_backend.hpp"

#include <fcntl.h>
#include <numa.h>
#include <numaif.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include <fmt/format.h>

#include "memory/fd_region.hpp"
#include "xlshare/error.hpp"
#include "xlshare/memory/shared_memory_backend.hpp"

namespace xlshare {
namespace {

std::string numa_uri(int node, std::string_view name) {
  return fmt::format("numa://{}/{}", node, name);
}

void require_node(int node, std::string_view name) {
  if (numa_available() < 0) {
    throw ConfigError(
        fmt::format("{}: this kernel or machine has no NUMA support", numa_uri(node, name)));
  }
  if (!NumaBackend::node_available(node)) {
    throw ConfigError(fmt::format("{}: NUMA node {} does not exist or has no memory (nodes 0..{})",
                                  numa_uri(node, name), node, numa_max_node()));
  }
}

// Sets the shared memory policy of the whole object to MPOL_BIND(node).
void bind_to_node(void* address, std::size_t length, int node, const std::string& uri) {
  const unsigned long max_node = static_cast<unsigned long>(numa_max_node()) + 1;
  std::vector<unsigned long> mask(
      (max_node + 8 * sizeof(unsigned long) - 1) / (8 * sizeof(unsigned long)), 0UL);
  mask[static_cast<std::size_t>(node) / (8 * sizeof(unsigned long))] |=
      1UL << (static_cast<std::size_t>(node) % (8 * sizeof(unsigned long)));
  if (::mbind(address, length, MPOL_BIND, mask.data(), max_node + 1, MPOL_MF_STRICT) != 0) {
    throw BackendError(errno_message(fmt::format("{}: binding to NUMA node {}", uri, node), errno));
  }
}

}  // namespace

bool NumaBackend::node_available(int node) noexcept {
  if (numa_available() < 0 || node < 0 || node > numa_max_node()) return false;
  if (numa_bitmask_isbitset(numa_all_nodes_ptr, static_cast<unsigned>(node)) == 0) return false;
  long long free_bytes = 0;
  return numa_node_size64(node, &free_bytes) > 0;
}

NumaBackend::NumaBackend(int node, std::unique_ptr<FdRegion> region)
    : node_(node), region_(std::move(region)) {
  set_read_view(region_->map_read_view());
}

NumaBackend::~NumaBackend() = default;

std::unique_ptr<NumaBackend> NumaBackend::create(int node, std::string_view name,
                                                 std::uint64_t size_bytes,
                                                 const BackendOptions& options) {
  SharedMemoryBackend::validate_name(name);
  require_node(node, name);
  const std::string uri = numa_uri(node, name);
  const std::string path = "/" + std::string(name);
  detail::UniqueFd fd(::shm_open(path.c_str(), O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC,
                                 static_cast<mode_t>(options.mode)));
  if (!fd) {
    if (errno == EEXIST) throw BackendError(uri + ": already exists");
    throw BackendError(errno_message(uri + ": create", errno));
  }
  try {
    if (::fchmod(fd.get(), static_cast<mode_t>(options.mode)) != 0) {
      throw BackendError(errno_message(uri + ": chmod", errno));
    }
    // Size without reserving: fallocate would place the pages before the policy is set.
    size_new_object(fd.get(), uri, size_bytes, /*reserve=*/false);
    auto region = std::make_unique<FdRegion>(uri, std::move(fd), size_bytes, page_size_bytes(),
                                             /*writable=*/true, /*try_map_sync=*/false);
    {
      const std::uint64_t mapped =
          (size_bytes + page_size_bytes() - 1) / page_size_bytes() * page_size_bytes();
      void* address = ::mmap(nullptr, mapped, PROT_READ | PROT_WRITE, MAP_SHARED, region->fd(), 0);
      if (address == MAP_FAILED) throw BackendError(errno_message(uri + ": mmap", errno));
      Mapping whole(address, mapped);
      bind_to_node(address, mapped, node, uri);
      if (options.reserve_on_create) {
        // Fault every page in now, on the bound node.
        const std::uint64_t page = page_size_bytes();
        for (std::uint64_t off = 0; off < size_bytes; off += page) {
          static_cast<volatile std::byte*>(whole.data())[off] = std::byte{0};
        }
      }
    }
    return std::unique_ptr<NumaBackend>(new NumaBackend(node, std::move(region)));
  } catch (...) {
    ::shm_unlink(path.c_str());
    throw;
  }
}

std::unique_ptr<NumaBackend> NumaBackend::open(int node, std::string_view name,
                                               const BackendOptions& options) {
  SharedMemoryBackend::validate_name(name);
  require_node(node, name);
  const std::string uri = numa_uri(node, name);
  const int flags = (options.read_only ? O_RDONLY : O_RDWR) | O_CLOEXEC;
  detail::UniqueFd fd(::shm_open(("/" + std::string(name)).c_str(), flags, 0));
  if (!fd) {
    if (errno == ENOENT) throw BackendError(uri + ": no such pool (shared memory object)");
    throw BackendError(errno_message(uri + ": open", errno));
  }
  const std::uint64_t size = check_fd_owner_and_size(fd.get(), uri, options);
  if (size == 0) throw BackendError(uri + ": is empty (size 0)");
  auto region = std::make_unique<FdRegion>(uri, std::move(fd), size, page_size_bytes(),
                                           !options.read_only, /*try_map_sync=*/false);
  return std::unique_ptr<NumaBackend>(new NumaBackend(node, std::move(region)));
}

int NumaBackend::node_of_page(std::uint64_t offset_bytes) const noexcept {
  if (offset_bytes >= size_bytes()) return -1;
  void* page =
      const_cast<std::byte*>(read_view()) + offset_bytes / page_size_bytes() * page_size_bytes();
  // Fault the page into this process's view first: move_pages reports -ENOENT for a page
  // that is resident in the object but not yet mapped here.
  (void)*static_cast<volatile const std::byte*>(page);
  int status = -1;
  if (::move_pages(0, 1, &page, nullptr, &status, 0) != 0) return -1;
  return status;
}

const std::string& NumaBackend::uri() const noexcept { return region_->uri(); }
std::uint64_t NumaBackend::size_bytes() const noexcept { return region_->size_bytes(); }
std::uint64_t NumaBackend::alignment_bytes() const noexcept { return region_->alignment_bytes(); }
bool NumaBackend::is_writable() const noexcept { return region_->writable(); }
Mapping NumaBackend::map(std::uint64_t offset_bytes, std::uint64_t length_bytes, Access access) {
  return region_->map(*this, offset_bytes, length_bytes, access);
}

}  // namespace xlshare
