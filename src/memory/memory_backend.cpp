#include "xlshare/memory/memory_backend.hpp"

#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <iterator>
#include <utility>

#include <fmt/format.h>

#include "xlshare/error.hpp"

namespace xlshare {

const char* to_string(ReadStatus s) noexcept {
  static constexpr const char* kNames[] = {"ok", "transient error", "poisoned", "offline",
                                           "out of range"};  // by value, kOk = 0 ...
  static_assert(std::size(kNames) == static_cast<std::size_t>(ReadStatus::kOutOfRange) + 1);
  const auto raw = static_cast<std::size_t>(s);
  return raw < std::size(kNames) ? kNames[raw] : "unknown";
}

Mapping::~Mapping() { reset(); }

Mapping::Mapping(Mapping&& other) noexcept
    : address_(std::exchange(other.address_, nullptr)),
      length_bytes_(std::exchange(other.length_bytes_, 0)) {}

Mapping& Mapping::operator=(Mapping&& other) noexcept {
  if (this != &other) {
    reset();
    address_ = std::exchange(other.address_, nullptr);
    length_bytes_ = std::exchange(other.length_bytes_, 0);
  }
  return *this;
}

void Mapping::reset() noexcept {
  if (address_ != nullptr) ::munmap(address_, length_bytes_);
  address_ = nullptr;
  length_bytes_ = 0;
}

ReadStatus MemoryBackend::do_read(std::uint64_t offset_bytes, std::span<std::byte> dst) noexcept {
  if (read_view_.data() == nullptr) return ReadStatus::kOffline;
  std::memcpy(dst.data(), read_view_.data() + offset_bytes, dst.size());
  return ReadStatus::kOk;
}

Mapping allocate_local(std::size_t bytes) {
  if (bytes == 0) return Mapping();
  void* p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
  if (p == MAP_FAILED)
    throw OutOfMemory(errno_message(fmt::format("local memory of {} bytes", bytes), errno));
  return Mapping(p, bytes);
}

void prefault_pages(std::span<const std::byte> bytes) noexcept {
#ifdef MADV_POPULATE_READ
  if (bytes.empty()) return;
  static const std::uintptr_t page = static_cast<std::uintptr_t>(::sysconf(_SC_PAGESIZE));
  const auto begin = reinterpret_cast<std::uintptr_t>(bytes.data()) / page * page;
  const auto end = reinterpret_cast<std::uintptr_t>(bytes.data()) + bytes.size();
  (void)::madvise(reinterpret_cast<void*>(begin), end - begin, MADV_POPULATE_READ);
#else
  (void)bytes;
#endif
}

void check_map_request(const MemoryBackend& backend, std::uint64_t offset_bytes,
                       std::uint64_t length_bytes) {
  const std::uint64_t align = backend.alignment_bytes();
  if (length_bytes == 0) {
    throw BackendError(fmt::format("{}: cannot map zero bytes", backend.uri()));
  }
  if (offset_bytes % align != 0 || length_bytes % align != 0) {
    throw BackendError(fmt::format(
        "{}: map of {} bytes at offset {} is not a multiple of the backend alignment {}",
        backend.uri(), length_bytes, offset_bytes, align));
  }
  if (offset_bytes > backend.size_bytes() || length_bytes > backend.size_bytes() - offset_bytes) {
    throw BackendError(fmt::format("{}: map of {} bytes at offset {} exceeds its size {}",
                                   backend.uri(), length_bytes, offset_bytes,
                                   backend.size_bytes()));
  }
}

}  // namespace xlshare
