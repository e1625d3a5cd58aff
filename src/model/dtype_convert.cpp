#include "xlshare/model/dtype_convert.hpp"

#include <cmath>

#if defined(__F16C__)
#include <immintrin.h>
#endif

namespace xlshare {

float f16_to_f32(std::uint16_t h) noexcept {
  const std::uint32_t sign = (h & 0x8000u) << 16;
  std::uint32_t exp = (h >> 10) & 0x1f;
  std::uint32_t mant = h & 0x3ffu;
  std::uint32_t bits;
  if (exp == 0) {
    if (mant == 0) {
      bits = sign;
    } else {  // subnormal: normalise
      exp = 127 - 15 + 1;
      while ((mant & 0x400u) == 0) {
        mant <<= 1;
        --exp;
      }
      mant &= 0x3ffu;
      bits = sign | (exp << 23) | (mant << 13);
    }
  } else if (exp == 31) {
    bits = sign | 0x7f800000u | (mant << 13);
  } else {
    bits = sign | ((exp + 127 - 15) << 23) | (mant << 13);
  }
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

std::uint16_t f32_to_f16(float f) noexcept {
#if defined(__F16C__)
  return static_cast<std::uint16_t>(_cvtss_sh(f, _MM_FROUND_TO_NEAREST_INT));
#else
  std::uint32_t x;
  std::memcpy(&x, &f, sizeof x);
  const std::uint32_t sign = (x >> 16) & 0x8000u;
  const std::uint32_t abs = x & 0x7fffffffu;
  if (abs >= 0x7f800000u)
    return static_cast<std::uint16_t>(sign | 0x7c00u | (abs > 0x7f800000u ? 0x200u : 0));
  if (abs >= 0x477ff000u) return static_cast<std::uint16_t>(sign | 0x7c00u);  // overflow
  if (abs < 0x38800000u) {  // a half subnormal (or zero): q * 2^-24, rounded to even
    const auto q = static_cast<std::uint32_t>(std::nearbyint(std::ldexp(std::fabs(f), 24)));
    return static_cast<std::uint16_t>(sign | q);
  }
  std::uint32_t h = ((abs - 0x38000000u) >> 13);
  const std::uint32_t rem = abs & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) ++h;
  return static_cast<std::uint16_t>(sign | h);
#endif
}

std::uint16_t f32_to_bf16(float f) noexcept {
  std::uint32_t x;
  std::memcpy(&x, &f, sizeof x);
  if ((x & 0x7fffffffu) > 0x7f800000u) return static_cast<std::uint16_t>((x >> 16) | 0x40u);
  const std::uint32_t rounding = 0x7fffu + ((x >> 16) & 1u);
  return static_cast<std::uint16_t>((x + rounding) >> 16);
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
    case DType::kQ8_0:
      for (std::size_t b = 0; b < n / 32; ++b) {
        BlockQ8_0 block;
        std::memcpy(&block, src + b * sizeof(BlockQ8_0), sizeof block);
        const float d = f16_to_f32(block.d);
        for (int i = 0; i < 32; ++i) dst[b * 32 + i] = d * static_cast<float>(block.qs[i]);
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
  }
}

}  // namespace xlshare
