// What a process's memory really costs, from /proc: the figures behind every "one shared
// copy" claim. PSS (proportional set size) charges each shared page 1/N to each of the N
// processes mapping it, so the PSS of all workers summed is the memory they use together.
#pragma once

#include <sys/types.h>
#include <cstdint>
#include <nlohmann/json_fwd.hpp>
#include <optional>
#include <string_view>

namespace xlshare {

/// One process's memory, from /proc/PID/smaps_rollup (bytes).
struct ProcMemory {
  std::uint64_t rss = 0;
  std::uint64_t pss = 0;
  std::uint64_t pss_shmem = 0;  ///< PSS of shared memory (shm pools); 0 on kernels without it
  std::uint64_t shared_clean = 0;
  std::uint64_t shared_dirty = 0;
  std::uint64_t private_clean = 0;
  std::uint64_t private_dirty = 0;
  std::uint64_t private_bytes() const noexcept { return private_clean + private_dirty; }
};
void to_json(nlohmann::json& j, const ProcMemory& m);

/// Reads /proc/PID/smaps_rollup. nullopt when the process is gone or /proc is unreadable.
std::optional<ProcMemory> read_proc_memory(pid_t pid);

/// The same figures summed over the mappings of `pid` whose path contains `path_fragment`
/// (e.g. "/dev/shm/NAME" or a pool file's path), from /proc/PID/smaps.
std::optional<ProcMemory> read_mapping_memory(pid_t pid, std::string_view path_fragment);

}  // namespace xlshare
