// Conversions between stored element types and float32, used as weights are computed
// from "as stored": F16, BF16 and Q8_0 are converted in blocks while they are used.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>

#include "xlshare/dtype.hpp"

namespace xlshare {

/// IEEE half -> float (exact).
float f16_to_f32(std::uint16_t h) noexcept;
/// float -> IEEE half, round to nearest even (overflow to inf).
std::uint16_t f32_to_f16(float f) noexcept;

inline float bf16_to_f32(std::uint16_t h) noexcept {
  const std::uint32_t bits = std::uint32_t{h} << 16;
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}
/// float -> bfloat16, round to nearest even (NaN stays NaN).
std::uint16_t f32_to_bf16(float f) noexcept;

/// llama.cpp's Q8_0 block: 32 int8 values and one F16 scale.
struct BlockQ8_0 {
  std::uint16_t d;
  std::int8_t qs[32];
};
static_assert(sizeof(BlockQ8_0) == 34);

/// Quantizes 32 floats as llama.cpp does (d = max|x| / 127, q = round(x / d)).
BlockQ8_0 quantize_q8_0(const float* x) noexcept;

/// Converts `n` elements stored as `type` at `src` to float. For a quantized type, n is a
/// multiple of dtype_block_elements(type) and src points at a block boundary; the values
/// are exactly ggml's dequantization.
void to_f32(DType type, const std::byte* src, float* dst, std::size_t n) noexcept;

/// Converts `n` floats to `type` at `dst` (the inverse; Q8_0 quantizes). `type` must be
/// one for which can_convert_from_f32 holds.
void from_f32(DType type, const float* src, std::byte* dst, std::size_t n) noexcept;

/// True when from_f32 can write `type`.
bool can_convert_from_f32(DType type) noexcept;

/// Bytes one row of `n` elements takes as `type`.
inline std::size_t row_bytes(DType type, std::size_t n) noexcept {
  return n / dtype_block_elements(type) * dtype_block_bytes(type);
}

}  // namespace xlshare
