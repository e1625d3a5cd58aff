#include "xlshare/memory/checksum.hpp"

#define XXH_INLINE_ALL
// GCC 12 warns inside its own AVX-512 intrinsics when xxhash is inlined (a known false
// positive); the warning is about the compiler's headers, not this code.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#include <xxhash.h>
#pragma GCC diagnostic pop

namespace xlshare {

std::uint64_t checksum64(std::span<const std::byte> bytes) noexcept {
  return XXH3_64bits(bytes.data(), bytes.size());
}

std::uint64_t checksum64(const void* data, std::size_t length_bytes) noexcept {
  return XXH3_64bits(data, length_bytes);
}

Checksum64::Checksum64() noexcept : state_(XXH3_createState()) { reset(); }

Checksum64::~Checksum64() { XXH3_freeState(static_cast<XXH3_state_t*>(state_)); }

void Checksum64::update(std::span<const std::byte> bytes) noexcept {
  XXH3_64bits_update(static_cast<XXH3_state_t*>(state_), bytes.data(), bytes.size());
}

std::uint64_t Checksum64::digest() const noexcept {
  return XXH3_64bits_digest(static_cast<const XXH3_state_t*>(state_));
}

void Checksum64::reset() noexcept { XXH3_64bits_reset(static_cast<XXH3_state_t*>(state_)); }

}  // namespace xlshare
