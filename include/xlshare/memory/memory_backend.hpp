// MemoryBackend: where a pool's bytes physically live, and how a range of them is read.
//
// Contract for implementers
// -------------------------
// A backend is one contiguous byte range of `size_bytes()`, identified by `uri()`, that
// several processes can map at once (shared memory, a DAX device or file, NUMA-bound
// shared memory). An implementation provides:
//   * `uri()`, `size_bytes()`, `alignment_bytes()`: fixed for the object's lifetime.
//     `alignment_bytes()` is the granularity of `map()` (the page size for shared memory,
//     the device alignment — often 2 MiB — for devdax). It is a power of two.
//   * `map(offset, length, access)`: a new mapping of [offset, offset + length). Offsets
//     and lengths are multiples of `alignment_bytes()` and lie inside the backend, or the
//     call throws BackendError. `Access::kReadWrite` on a backend opened read-only throws.
//     Mappings are shared: a write through one is visible through every other mapping of
//     the same range, in this process and in others.
//   * optionally `do_read(offset, dst)`: copy bytes out. The default copies from a
//     read-only view of the whole backend that the implementation installs with
//     `set_read_view()` when it is constructed. `read()` has already checked the range.
//   * optionally `bind_link_state(link)`: decorators that model a link shared by every
//     attached process (CxlEmulator) account their transfers there. Default: ignored.
//   * optionally `is_host()`: whether the CPU can load from the mapped bytes (true here).
//   * optionally `maps_data()`: false for a remote backend that maps only a pool's
//     metadata and reads its data over the network (true here).
//
// Threading: after construction, `read()` and `map()` may be called concurrently from any
// number of threads. Reads are the hot path: they never throw, never allocate and never
// log; failures come back as a ReadStatus.
//
// Lifetime: destroying a backend unmaps what it mapped itself and closes its descriptor.
// It does not remove the named object (a pool is a service that outlives its creator);
// `remove_backend(uri)` (backend_uri.hpp) or `xlshare pool rm` does.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>

namespace xlshare {

struct LinkState;

/// Whether a mapping may be written.
enum class Access : std::uint8_t { kReadOnly, kReadWrite };

/// Outcome of one read over the link.
enum class ReadStatus : std::uint8_t {
  kOk = 0,
  kTransientError,  ///< the transfer failed but may succeed if retried
  kPoisoned,        ///< the range holds poisoned memory; retrying here will not help
  kOffline,         ///< the device is gone
  kOutOfRange,      ///< the range is not inside the backend (a caller bug)
};

/// "ok", "transient error", "poisoned", "offline", "out of range".
const char* to_string(ReadStatus s) noexcept;

/// One mmap'ed range; unmapped when destroyed. Move-only.
class Mapping {
 public:
  Mapping() noexcept = default;
  Mapping(void* address, std::size_t length_bytes) noexcept
      : address_(address), length_bytes_(length_bytes) {}
  ~Mapping();
  Mapping(Mapping&& other) noexcept;
  Mapping& operator=(Mapping&& other) noexcept;
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;

  std::byte* data() const noexcept { return static_cast<std::byte*>(address_); }
  std::size_t size_bytes() const noexcept { return length_bytes_; }
  explicit operator bool() const noexcept { return address_ != nullptr; }

 private:
  void reset() noexcept;
  void* address_ = nullptr;
  std::size_t length_bytes_ = 0;
};

/// The far-memory byte range behind a pool. See the contract at the top of this file.
class MemoryBackend {
 public:
  virtual ~MemoryBackend() = default;
  MemoryBackend(const MemoryBackend&) = delete;
  MemoryBackend& operator=(const MemoryBackend&) = delete;

  /// The URI this backend was opened with ("shm://name", "file:///path", ...).
  virtual const std::string& uri() const noexcept = 0;
  /// Size of the whole backend in bytes.
  virtual std::uint64_t size_bytes() const noexcept = 0;
  /// Granularity of map(): a power of two.
  virtual std::uint64_t alignment_bytes() const noexcept = 0;
  /// Whether mapped bytes are ordinary host memory.
  virtual bool is_host() const noexcept { return true; }
  /// Whether this process may map the backend read-write.
  virtual bool is_writable() const noexcept = 0;
  /// Whether map() serves the whole backend. A remote backend (`ucx://`) has no local
  /// mapping of a pool's data: it maps only the pool's metadata (header, control, catalog:
  /// a copy received from the server), and a Pool reads everything else through read().
  /// Such a pool supports the copy placement only.
  virtual bool maps_data() const noexcept { return true; }

  /// Maps [offset_bytes, offset_bytes + length_bytes).
  /// @throws BackendError on a misaligned or out-of-range request, or when mmap fails.
  virtual Mapping map(std::uint64_t offset_bytes, std::uint64_t length_bytes, Access access) = 0;

  /// Copies [offset_bytes, offset_bytes + dst.size()) into dst: the link path.
  ReadStatus read(std::uint64_t offset_bytes, std::span<std::byte> dst) noexcept {
    if (offset_bytes > size_bytes() || dst.size() > size_bytes() - offset_bytes) {
      return ReadStatus::kOutOfRange;
    }
    return do_read(offset_bytes, dst);
  }

  /// Called by a Pool once it has mapped its shared link area. Default: ignored.
  virtual void bind_link_state(LinkState* link) noexcept { (void)link; }

 protected:
  MemoryBackend() = default;

  /// Copies bytes out; the range is already checked. Default: memcpy from the read view.
  virtual ReadStatus do_read(std::uint64_t offset_bytes, std::span<std::byte> dst) noexcept;

  /// Installs the read-only view of the whole backend used by the default do_read().
  void set_read_view(Mapping view) noexcept { read_view_ = std::move(view); }
  const std::byte* read_view() const noexcept { return read_view_.data(); }

 private:
  Mapping read_view_;
};

/// Private anonymous memory of `bytes`, its pages mapped up front (MAP_POPULATE: one kernel
/// pass instead of a fault per page, and no zero-filling pass by the caller). For local
/// copies of far memory (the HotSet). @throws OutOfMemory.
Mapping allocate_local(std::size_t bytes);

/// Asks the kernel to map every page of `bytes` (part of a mapping) now, readable
/// (MADV_POPULATE_READ), so that first reads take no page faults: one pass in the kernel is
/// far cheaper than a fault per 4 KiB page. A no-op where the kernel lacks it. Never throws.
void prefault_pages(std::span<const std::byte> bytes) noexcept;

/// Checks a map() request against a backend's size and alignment.
/// @throws BackendError naming the backend and the problem.
void check_map_request(const MemoryBackend& backend, std::uint64_t offset_bytes,
                       std::uint64_t length_bytes);

}  // namespace xlshare
