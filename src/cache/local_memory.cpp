#include "xlshare/cache/local_memory.hpp"

#include <cstdlib>
#include <new>

namespace xlshare {

std::byte* HostMemory::allocate(std::uint64_t bytes) noexcept {
  const std::uint64_t rounded = (bytes + 63) / 64 * 64;
  return static_cast<std::byte*>(std::aligned_alloc(64, rounded == 0 ? 64 : rounded));
}

void HostMemory::deallocate(std::byte* p, std::uint64_t) noexcept { std::free(p); }

HostMemory& HostMemory::instance() noexcept {
  static HostMemory memory;
  return memory;
}

}  // namespace xlshare
