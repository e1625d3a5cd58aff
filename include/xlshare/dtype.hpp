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
  // llama.cpp's quantized blocks, stored exactly as ggml lays them out (ggml-common.h):
  kQ4_0 = 6,   ///< 32 values: F16 scale, 16 bytes of 4-bit values (18 bytes)
  kQ4_1 = 7,   ///< 32 values: F16 scale and minimum, 16 bytes of 4-bit values (20 bytes)
  kQ5_0 = 8,   ///< 32 values: F16 scale, 4 bytes of high bits, 16 of low nibbles (22 bytes)
  kQ5_1 = 9,   ///< 32 values: F16 scale and minimum, high bits, low nibbles (24 bytes)
  kQ2_K = 10,  ///< 256 values: 16 4-bit scale/min pairs, 2-bit values, F16 d, dmin (84 bytes)
  kQ3_K = 11,  ///< 256 values: high-bit mask, 2-bit values, 16 6-bit scales, F16 d (110 bytes)
  kQ4_K = 12,  ///< 256 values: F16 d, dmin, 8 6-bit scale/min pairs, 4-bit values (144 bytes)
  kQ5_K = 13,  ///< 256 values: as Q4_K plus one high bit per value (176 bytes)
  kQ6_K = 14,  ///< 256 values: low 4 bits, high 2 bits, 16 int8 scales, F16 d (210 bytes)
};

/// True for the block-quantized types of llama.cpp (Q8_0 and kQ4_0 .. kQ6_K).
constexpr bool dtype_is_quantized(DType t) noexcept {
  return t == DType::kQ8_0 || static_cast<std::uint32_t>(t) >= 6;
}

/// Elements per storage block: 32 for Q8_0 .. Q5_1, 256 for the K family (Q2_K .. Q6_K),
/// 1 for every plain type.
constexpr std::uint64_t dtype_block_elements(DType t) noexcept {
  switch (t) {
    case DType::kQ8_0:
    case DType::kQ4_0:
    case DType::kQ4_1:
    case DType::kQ5_0:
    case DType::kQ5_1:
      return 32;
    case DType::kQ2_K:
    case DType::kQ3_K:
    case DType::kQ4_K:
    case DType::kQ5_K:
    case DType::kQ6_K:
      return 256;
    default:
      return 1;
  }
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
    case DType::kQ4_0:
      return 18;
    case DType::kQ4_1:
      return 20;
    case DType::kQ5_0:
      return 22;
    case DType::kQ5_1:
      return 24;
    case DType::kQ2_K:
      return 84;
    case DType::kQ3_K:
      return 110;
    case DType::kQ4_K:
      return 144;
    case DType::kQ5_K:
      return 176;
    case DType::kQ6_K:
      return 210;
  }
  return 0;
}

/// True for the values listed in DType.
constexpr bool dtype_is_valid(std::uint32_t raw) noexcept { return raw <= 14; }

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

/// "f32", "f16", "bf16", "q8_0", "i32", "u8", "q4_0", "q4_1", "q5_0", "q5_1", "q2_k", "q3_k",
/// "q4_k", "q5_k", "q6_k".
std::string_view to_string(DType t) noexcept;

/// Inverse of to_string; nullopt for an unknown name.
std::optional<DType> parse_dtype(std::string_view name) noexcept;

}  // namespace xlshare
