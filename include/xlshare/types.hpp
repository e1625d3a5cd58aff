// Small value types shared by the near tier, the prefetcher and the engine, kept apart from
// the extension-point headers so that code naming a tensor key need not see a policy.
#pragma once

#include <cstdint>

namespace xlshare {

/// A worker-local, dense tensor index (0 .. n-1): the key of every near-tier structure.
using TensorKey = std::uint32_t;

/// Why a fetch is made: compute is waiting for it, or the prefetcher expects it to be.
enum class FetchKind : std::uint8_t { kDemand, kPrefetch };

}  // namespace xlshare
