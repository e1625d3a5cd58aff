// Placement: how a worker uses far memory.
//
//   copy      the worker's DeviceCache is the device's own memory (a GPU's HBM), filled over
//             the link by the TransferEngine ahead of compute. The model of a GPU worker.
//   in_place  a CPU worker computes straight from the pool's read-only mapping: CXL memory
//             is load/store memory, and copying it into host DRAM that is evicted before
//             reuse is the wrong design for a CPU. Each piece still reserves its bytes on the
//             pool's shared link (LinkPacer) and is not used before the reservation completes,
//             so bandwidth and contention are emulated without copying; the worker's local
//             budget holds a HotSet of pieces copied once at attach and never evicted.
#pragma once

#include <cstdint>
#include <string_view>

namespace xlshare {

enum class Placement : std::uint8_t { kCopy, kInPlace };

class MemoryBackend;

/// The placement a worker on `backend` gets unless told otherwise: in_place where the CPU
/// can load from the pool's mapping (MemoryBackend::is_host(): shm, file, dax, numa, and the
/// emulator over any of them), copy where it cannot.
Placement default_placement(const MemoryBackend& backend) noexcept;

/// "copy" or "in-place".
const char* to_string(Placement placement) noexcept;
/// "copy", "in-place" (or "in_place"). @throws ConfigError naming the known placements.
Placement parse_placement(std::string_view name);

}  // namespace xlshare
