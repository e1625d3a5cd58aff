// Element types of tensors held in a pool, and their storage sizes.
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>

namespace xlshare {

/// How a tensor's elements are stored. Values are part of the pool format: never renumber.
enum class DType : std::uint32_t {
  kF32 = 0,
  kF16 = 1,
  kBF16 = 2,
  kQ8_0 = 3,  ///< llama.cpp's Q8_0: blocks of 32 int8 values with one F16 scale (34 bytes)
  kI32 = 4,
  kU8 = 5,
};

/// Elements per storage block: 32 for Q8_0, 1 for every plain type.
constexpr std::uint64_t dtype_block_elements(DType t) noexcept {
  return t == DType::kQ8_0 ? 32 : 1;
}

/// Bytes per storage block.
constexpr std::uint64_t dtype_block_bytes(DType t) noexcept {
  switch (t) {
    case DType::kF32:
      return 4;
    case DType::kF16:
      return 2;
    case DType::kBF16:
      return 2;
    case DType::kQ8_0:
      return 34;
    case DType::kI32:
      return 4;
    case DType::kU8:
      return 1;
  }
  return 0;
}

/// True for the values listed in DType.
constexpr bool dtype_is_valid(std::uint32_t raw) noexcept { return raw <= 5; }

/// Bytes needed to store `n_elements` of type `t`; nullopt when n_elements is not a whole
/// number of blocks or the size overflows 64 bits.
constexpr std::optional<std::uint64_t> dtype_bytes(DType t, std::uint64_t n_elements) noexcept {
  const std::uint64_t per_block = dtype_block_elements(t);
  if (n_elements % per_block != 0) return std::nullopt;
  const std::uint64_t blocks = n_elements / per_block;
  const std::uint64_t bytes_per_block = dtype_block_bytes(t);
  if (bytes_per_block == 0 || blocks > UINT64_MAX / bytes_per_block) return std::nullopt;
  return blocks * bytes_per_block;
}

/// "f32", "f16", "bf16", "q8_0", "i32", "u8".
std::string_view to_string(DType t) noexcept;

/// Inverse of to_string; nullopt for an unknown name.
std::optional<DType> parse_dtype(std::string_view name) noexcept;

}  // namespace xlshare
