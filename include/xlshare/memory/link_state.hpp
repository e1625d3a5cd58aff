// LinkState: the state of ONE emulated link, shared by every process attached to a pool.
//
// It lives in the pool's link/attach area, the only part of a pool that attachers map
// writable. It is plain data: every field is accessed through std::atomic_ref, so the same
// bytes work across processes (64-bit atomics are lock-free and address-free on the
// platforms xlshare supports). Times are CLOCK_MONOTONIC nanoseconds, which all processes
// on one host share: with two exceptions that the link guards against. A process in a time
// namespace sees CLOCK_MONOTONIC shifted by its namespace's offset, and a file or DAX pool
// can outlive a reboot (the clock restarts near zero). So no reservation trusts a stored
// `link_free_ns` more than kMaxLinkAheadNs beyond its own now (it is clamped to now and
// counted in `clock_clamps_total`), and an attach on another boot than the one recorded in
// `boot_id_hash` resets the link's time (see Pool::attach).
#pragma once

#include <atomic>
#include <cstdint>

namespace xlshare {

struct LinkState {
  std::uint64_t link_free_ns;        ///< when the link finishes its last reserved transfer
  std::uint64_t bytes_total;         ///< bytes moved over the link, by every process
  std::uint64_t transfers_total;     ///< read calls that moved bytes
  std::uint64_t busy_ns_total;       ///< link occupancy reserved, summed
  std::uint64_t faults_total;        ///< faults injected on this link, every kind
  std::uint64_t clock_clamps_total;  ///< stored times found too far ahead and clamped
  std::uint64_t boot_id_hash;        ///< XXH3 of the boot id the times were taken on
  std::uint64_t reserved[1];
};

/// The most a stored link time may lie ahead of a reader's now before it is treated as
/// coming from another clock (2 s: far more than any real queue of chunk reservations).
inline constexpr std::uint64_t kMaxLinkAheadNs = 2'000'000'000;
static_assert(std::atomic_ref<std::uint64_t>::is_always_lock_free);

/// Atomic view of one LinkState field.
inline std::atomic_ref<std::uint64_t> link_field(std::uint64_t& field) noexcept {
  return std::atomic_ref<std::uint64_t>(field);
}

}  // namespace xlshare
