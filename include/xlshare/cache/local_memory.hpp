// LocalMemory: where a worker's near memory (its "HBM") comes from.
//
// Contract for implementers: `allocate(bytes)` returns a buffer of at least `bytes` bytes
// aligned to 64 bytes (or nullptr when the device is out of memory; it never throws),
// `deallocate(p, bytes)` returns it. Both may be called from any thread. `is_host()` says
// whether the CPU can read the buffers directly (true for HostMemory; a CUDA
// implementation returns device memory and false).
#pragma once

#include <cstddef>
#include <cstdint>

namespace xlshare {

class LocalMemory {
 public:
  virtual ~LocalMemory() = default;
  virtual std::byte* allocate(std::uint64_t bytes) noexcept = 0;
  virtual void deallocate(std::byte* p, std::uint64_t bytes) noexcept = 0;
  virtual bool is_host() const noexcept { return true; }
  virtual const char* name() const noexcept = 0;
};

/// Ordinary host memory, 64-byte aligned.
class HostMemory final : public LocalMemory {
 public:
  std::byte* allocate(std::uint64_t bytes) noexcept override;
  void deallocate(std::byte* p, std::uint64_t bytes) noexcept override;
  const char* name() const noexcept override { return "host"; }
  /// A process-wide instance.
  static HostMemory& instance() noexcept;
};

}  // namespace xlshare
