#include "xlshare/model/dtype_convert.hpp"

#include "model/quant_blocks.hpp"

#include <Eigen/Core>

#include <cmath>

#if defined(__F16C__)
#include <immintrin.h>
#endif

namespace xlshare {

// Scalar conversions: Eigen's half and bfloat16 (round to nearest even, subnormals,
// infinities and NaN as IEEE says; F16C instructions when the build has them).
float f16_to_f32(std::uint16_t h) noexcept {
  return static_cast<float>(Eigen::numext::bit_cast<Eigen::half>(h));
}

std::uint16_t f32_to_f16(float f) noexcept {
  return Eigen::numext::bit_cast<std::uint16_t>(Eigen::half(f));
}

std::uint16_t f32_to_bf16(float f) noexcept {
  return Eigen::numext::bit_cast<std::uint16_t>(Eigen::bfloat16(f));
}

BlockQ8_0 quantize_q8_0(const float* x) noexcept {
  float amax = 0.0f;
  for (int i = 0; i < 32; ++i) amax = std::max(amax, std::fabs(x[i]));
  const float d = amax / 127.0f;
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  BlockQ8_0 b;
  b.d = f32_to_f16(d);
  for (int i = 0; i < 32; ++i) b.qs[i] = static_cast<std::int8_t>(std::lround(x[i] * id));
  return b;
}

void to_f32(DType type, const std::byte* src, float* dst, std::size_t n) noexcept {
  switch (type) {
    case DType::kF32:
      std::memcpy(dst, src, n * 4);
      return;
    case DType::kF16: {
      std::size_t i = 0;
#if defined(__F16C__) && defined(__AVX__)
      for (; i + 8 <= n; i += 8) {
        const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + 2 * i));
        _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(h));
      }
#endif
      for (; i < n; ++i) {
        std::uint16_t h;
        std::memcpy(&h, src + 2 * i, 2);
        dst[i] = f16_to_f32(h);
      }
      return;
    }
    case DType::kBF16:
      for (std::size_t i = 0; i < n; ++i) {
        std::uint16_t h;
        std::memcpy(&h, src + 2 * i, 2);
        dst[i] = bf16_to_f32(h);
      }
      return;
    case DType::kI32:
      for (std::size_t i = 0; i < n; ++i) {
        std::int32_t v;
        std::memcpy(&v, src + 4 * i, 4);
        dst[i] = static_cast<float>(v);
      }
      return;
    case DType::kU8:
      for (std::size_t i = 0; i < n; ++i)
        dst[i] = static_cast<float>(std::to_integer<std::uint8_t>(src[i]));
      return;
    default: {  // the quantized types
      const std::size_t per_block = dtype_block_elements(type);
      const std::size_t block_bytes = dtype_block_bytes(type);
      for (std::size_t b = 0; b < n / per_block; ++b)
        quant::dequantize_block(type, src + b * block_bytes, dst + b * per_block);
      return;
    }
  }
}

void from_f32(DType type, const float* src, std::byte* dst, std::size_t n) noexcept {
  switch (type) {
    case DType::kF32:
      std::memcpy(dst, src, n * 4);
      return;
    case DType::kF16:
      for (std::size_t i = 0; i < n; ++i) {
        const std::uint16_t h = f32_to_f16(src[i]);
        std::memcpy(dst + 2 * i, &h, 2);
      }
      return;
    case DType::kBF16:
      for (std::size_t i = 0; i < n; ++i) {
        const std::uint16_t h = f32_to_bf16(src[i]);
        std::memcpy(dst + 2 * i, &h, 2);
      }
      return;
    case DType::kQ8_0:
      for (std::size_t b = 0; b < n / 32; ++b) {
        const BlockQ8_0 block = quantize_q8_0(src + b * 32);
        std::memcpy(dst + b * sizeof(BlockQ8_0), &block, sizeof block);
      }
      return;
    case DType::kI32:
      for (std::size_t i = 0; i < n; ++i) {
        const auto v = static_cast<std::int32_t>(src[i]);
        std::memcpy(dst + 4 * i, &v, 4);
      }
      return;
    case DType::kU8:
      for (std::size_t i = 0; i < n; ++i)
        dst[i] = static_cast<std::byte>(static_cast<std::uint8_t>(src[i]));
      return;
    case DType::kQ4_K:
      for (std::size_t b = 0; b < n / 256; ++b) quant::quantize_q4_k(src + b * 256, dst + b * 144);
      return;
    case DType::kQ6_K:
      for (std::size_t b = 0; b < n / 256; ++b) quant::quantize_q6_k(src + b * 256, dst + b * 210);
      return;
    default:  // no quantizer: callers check can_convert_from_f32 (the bytes are zeroed)
      std::memset(dst, 0, row_bytes(type, n));
      return;
  }
}

bool can_convert_from_f32(DType type) noexcept {
  return !dtype_is_quantized(type) || type == DType::kQ8_0 || type == DType::kQ4_K ||
         type == DType::kQ6_K;
}

}  // namespace xlshare
