// The checksum used everywhere in a pool: XXH3-64 (seed 0).
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

namespace xlshare {

/// XXH3-64 of `bytes`.
std::uint64_t checksum64(std::span<const std::byte> bytes) noexcept;

/// XXH3-64 of a raw range.
std::uint64_t checksum64(const void* data, std::size_t length_bytes) noexcept;

/// Incremental XXH3-64, for data that arrives in pieces (streamed loads, chunked reads).
class Checksum64 {
 public:
  Checksum64() noexcept;
  ~Checksum64();
  Checksum64(const Checksum64&) = delete;
  Checksum64& operator=(const Checksum64&) = delete;

  void update(std::span<const std::byte> bytes) noexcept;
  std::uint64_t digest() const noexcept;
  void reset() noexcept;

 private:
  void* state_;
};

}  // namespace xlshare
