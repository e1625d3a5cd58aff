// LinkState: the state of ONE emulated link, shared by every process attached to a pool.
//
// It lives in the pool's link/attach area, the only part of a pool that attachers map
// writable. It is plain data: every field is accessed through std::atomic_ref, so the same
// bytes work across processes (64-bit atomics are lock-free and address-free on the
// platforms xlshare supports). Times are CLOCK_MONOTONIC nanoseconds, which all processes
// on one host share.
#pragma once

#include <atomic>
#include <cstdint>

namespace xlshare {

struct LinkState {
  std::uint64_t link_free_ns;     ///< when the link finishes its last reserved transfer
  std::uint64_t bytes_total;      ///< bytes moved over the link, by every process
  std::uint64_t transfers_total;  ///< read calls that moved bytes
  std::uint64_t busy_ns_total;    ///< link occupancy reserved, summed
  std::uint64_t faults_total;     ///< faults injected on this link, every kind
  std::uint64_t reserved[3];
};
static_assert(std::atomic_ref<std::uint64_t>::is_always_lock_free);

/// Atomic view of one LinkState field.
inline std::atomic_ref<std::uint64_t> link_field(std::uint64_t& field) noexcept {
  return std::atomic_ref<std::uint64_t>(field);
}

}  // namespace xlshare
