// NumaBackend: shared memory whose pages are bound to one NUMA node with libnuma.
//
// CXL memory configured in system-ram mode shows up as a NUMA node without CPUs; binding a
// pool there puts the one shared copy of the weights in CXL memory while every process
// still maps it like ordinary shared memory. The object is a POSIX shared memory object
// named NAME whose shared memory policy is MPOL_BIND to the node; the creator faults every
// page in, so placement happens at creation.
#pragma once

#include <memory>
#include <string_view>

#include "xlshare/memory/backend_options.hpp"
#include "xlshare/memory/memory_backend.hpp"

namespace xlshare {

class FdRegion;

class NumaBackend final : public MemoryBackend {
 public:
  /// Creates NAME bound to `node`. @throws ConfigError for an absent node or a bad name,
  /// BackendError when binding or creating fails.
  static std::unique_ptr<NumaBackend> create(int node, std::string_view name,
                                             std::uint64_t size_bytes,
                                             const BackendOptions& options = {});
  /// Opens NAME, created earlier on `node`. @throws ConfigError, BackendError.
  static std::unique_ptr<NumaBackend> open(int node, std::string_view name,
                                           const BackendOptions& options = {});
  /// Whether `node` exists and has memory on this host.
  static bool node_available(int node) noexcept;

  ~NumaBackend() override;

  const std::string& uri() const noexcept override;
  std::uint64_t size_bytes() const noexcept override;
  std::uint64_t alignment_bytes() const noexcept override;
  bool is_writable() const noexcept override;
  Mapping map(std::uint64_t offset_bytes, std::uint64_t length_bytes, Access access) override;

  int node() const noexcept { return node_; }
  /// The node holding the page at `offset_bytes`, or -1 if it is not resident.
  int node_of_page(std::uint64_t offset_bytes) const noexcept;

 private:
  NumaBackend(int node, std::unique_ptr<FdRegion> region);
  int node_;
  std::unique_ptr<FdRegion> region_;
};

}  // namespace xlshare
