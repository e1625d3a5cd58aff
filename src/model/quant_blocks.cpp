#include "model/quant_blocks.hpp"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdlib>
#include <cstring>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace xlshare::quant {
namespace {

void dq_q4_0(const BlockQ4_0& x, float* y) noexcept {
  const float d = f16_to_f32(x.d);
  for (int j = 0; j < kQK / 2; ++j) {
    y[j] = static_cast<float>((x.qs[j] & 0x0F) - 8) * d;
    y[j + kQK / 2] = static_cast<float>((x.qs[j] >> 4) - 8) * d;
  }
}

void dq_q4_1(const BlockQ4_1& x, float* y) noexcept {
  const float d = f16_to_f32(x.d), m = f16_to_f32(x.m);
  for (int j = 0; j < kQK / 2; ++j) {
    y[j] = static_cast<float>(x.qs[j] & 0x0F) * d + m;
    y[j + kQK / 2] = static_cast<float>(x.qs[j] >> 4) * d + m;
  }
}

void dq_q5_0(const BlockQ5_0& x, float* y) noexcept {
  const float d = f16_to_f32(x.d);
  std::uint32_t qh;
  std::memcpy(&qh, x.qh, 4);
  for (int j = 0; j < kQK / 2; ++j) {
    const std::uint32_t h0 = ((qh >> j) << 4) & 0x10;
    const std::uint32_t h1 = (qh >> (j + 12)) & 0x10;
    y[j] = static_cast<float>(static_cast<int>((x.qs[j] & 0x0F) | h0) - 16) * d;
    y[j + kQK / 2] = static_cast<float>(static_cast<int>((x.qs[j] >> 4) | h1) - 16) * d;
  }
}

void dq_q5_1(const BlockQ5_1& x, float* y) noexcept {
  const float d = f16_to_f32(x.d), m = f16_to_f32(x.m);
  std::uint32_t qh;
  std::memcpy(&qh, x.qh, 4);
  for (int j = 0; j < kQK / 2; ++j) {
    const std::uint32_t h0 = ((qh >> j) << 4) & 0x10;
    const std::uint32_t h1 = (qh >> (j + 12)) & 0x10;
    y[j] = static_cast<float>((x.qs[j] & 0x0F) | h0) * d + m;
    y[j + kQK / 2] = static_cast<float>((x.qs[j] >> 4) | h1) * d + m;
  }
}

void dq_q2_k(const BlockQ2_K& x, float* y) noexcept {
  const float d = f16_to_f32(x.d), min = f16_to_f32(x.dmin);
  const std::uint8_t* q = x.qs;
  int is = 0;
  for (int n = 0; n < kQK_K; n += 128) {
    int shift = 0;
    for (int j = 0; j < 4; ++j) {
      for (int half = 0; half < 2; ++half) {
        const std::uint8_t sc = x.scales[is++];
        const float dl = d * static_cast<float>(sc & 0xF);
        const float ml = min * static_cast<float>(sc >> 4);
        for (int l = 0; l < 16; ++l)
          *y++ = dl * static_cast<float>((q[l + 16 * half] >> shift) & 3) - ml;
      }
      shift += 2;
    }
    q += 32;
  }
}

void dq_q3_k(const BlockQ3_K& x, float* y) noexcept {
  const float d_all = f16_to_f32(x.d);
  std::int8_t scales[16];
  q3_k_scales(x.scales, scales);
  const std::uint8_t* q = x.qs;
  const std::uint8_t* hm = x.hmask;
  std::uint8_t m = 1;
  int is = 0;
  for (int n = 0; n < kQK_K; n += 128) {
    int shift = 0;
    for (int j = 0; j < 4; ++j) {
      for (int half = 0; half < 2; ++half) {
        const float dl = d_all * static_cast<float>(scales[is++] - 32);
        for (int l = 16 * half; l < 16 * half + 16; ++l) {
          const int v = ((q[l] >> shift) & 3) - ((hm[l] & m) ? 0 : 4);
          *y++ = dl * static_cast<float>(v);
        }
      }
      shift += 2;
      m = static_cast<std::uint8_t>(m << 1);
    }
    q += 32;
  }
}

void dq_q4_k(const BlockQ4_K& x, float* y) noexcept {
  const float d = f16_to_f32(x.d), min = f16_to_f32(x.dmin);
  const std::uint8_t* q = x.qs;
  int is = 0;
  for (int j = 0; j < kQK_K; j += 64) {
    std::uint8_t sc, m;
    scale_min_k4(is, x.scales, sc, m);
    const float d1 = d * sc, m1 = min * m;
    scale_min_k4(is + 1, x.scales, sc, m);
    const float d2 = d * sc, m2 = min * m;
    for (int l = 0; l < 32; ++l) *y++ = d1 * static_cast<float>(q[l] & 0xF) - m1;
    for (int l = 0; l < 32; ++l) *y++ = d2 * static_cast<float>(q[l] >> 4) - m2;
    q += 32;
    is += 2;
  }
}

void dq_q5_k(const BlockQ5_K& x, float* y) noexcept {
  const float d = f16_to_f32(x.d), min = f16_to_f32(x.dmin);
  const std::uint8_t* ql = x.qs;
  const std::uint8_t* qh = x.qh;
  int is = 0;
  std::uint8_t u1 = 1, u2 = 2;
  for (int j = 0; j < kQK_K; j += 64) {
    std::uint8_t sc, m;
    scale_min_k4(is, x.scales, sc, m);
    const float d1 = d * sc, m1 = min * m;
    scale_min_k4(is + 1, x.scales, sc, m);
    const float d2 = d * sc, m2 = min * m;
    for (int l = 0; l < 32; ++l)
      *y++ = d1 * static_cast<float>((ql[l] & 0xF) + (qh[l] & u1 ? 16 : 0)) - m1;
    for (int l = 0; l < 32; ++l)
      *y++ = d2 * static_cast<float>((ql[l] >> 4) + (qh[l] & u2 ? 16 : 0)) - m2;
    ql += 32;
    is += 2;
    u1 = static_cast<std::uint8_t>(u1 << 2);
    u2 = static_cast<std::uint8_t>(u2 << 2);
  }
}

void dq_q6_k(const BlockQ6_K& x, float* y) noexcept {
  const float d = f16_to_f32(x.d);
  const std::uint8_t* ql = x.ql;
  const std::uint8_t* qh = x.qh;
  const std::int8_t* sc = x.scales;
  for (int n = 0; n < kQK_K; n += 128) {
    for (int l = 0; l < 32; ++l) {
      const int is = l / 16;
      const int q1 = ((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
      const int q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
      const int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
      const int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
      y[l] = d * static_cast<float>(sc[is]) * static_cast<float>(q1);
      y[l + 32] = d * static_cast<float>(sc[is + 2]) * static_cast<float>(q2);
      y[l + 64] = d * static_cast<float>(sc[is + 4]) * static_cast<float>(q3);
      y[l + 96] = d * static_cast<float>(sc[is + 6]) * static_cast<float>(q4);
    }
    y += 128;
    ql += 64;
    qh += 32;
    sc += 8;
  }
}

// --- AVX-512 dequantization of the K types of llama.cpp's *_K_M files (Q4_K, Q6_K): the
// same arithmetic as the scalar code above (products and differences rounded separately,
// in the same order), 16 values per instruction. Chosen at run time.

#if defined(__x86_64__) && defined(__GNUC__)
#define XLSHARE_AVX512 __attribute__((target("avx512f,avx512bw,f16c")))
// GCC 12 warns that its own intrinsics' undefined vectors are used uninitialized when they
// are inlined into a function with a target attribute (GCC bug 105593).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"

// The vector code reads a block's fields in place rather than through load<>: a 16-byte
// load from a copy assembled by smaller stores misses store forwarding, which cost a third
// of these functions' time in decode.
inline std::uint16_t half_bits(const std::byte* p) noexcept {
  std::uint16_t h;
  std::memcpy(&h, p, sizeof h);
  return h;
}
inline const std::uint8_t* bytes_at(const std::byte* block, std::size_t offset) noexcept {
  return reinterpret_cast<const std::uint8_t*>(block + offset);
}

XLSHARE_AVX512 void dq_q4_k_avx512(const std::byte* src, float* y) noexcept {
  const float d = _cvtsh_ss(half_bits(src + offsetof(BlockQ4_K, d)));
  const float min = _cvtsh_ss(half_bits(src + offsetof(BlockQ4_K, dmin)));
  const auto* scales = bytes_at(src, offsetof(BlockQ4_K, scales));
  const auto* qs = bytes_at(src, offsetof(BlockQ4_K, qs));
  const __m512i low4 = _mm512_set1_epi32(0x0F);
  for (int c = 0; c < 4; ++c) {
    for (int h = 0; h < 2; ++h) {
      std::uint8_t sc, m;
      scale_min_k4(2 * c + h, scales, sc, m);
      const __m512 dl = _mm512_set1_ps(d * sc), ml = _mm512_set1_ps(min * m);
      for (int g = 0; g < 2; ++g) {
        const __m512i raw = _mm512_cvtepu8_epi32(
            _mm_loadu_si128(reinterpret_cast<const __m128i*>(qs + 32 * c + 16 * g)));
        const __m512i q = _mm512_and_si512(h == 0 ? raw : _mm512_srli_epi32(raw, 4), low4);
        _mm512_storeu_ps(y + 64 * c + 32 * h + 16 * g,
                         _mm512_sub_ps(_mm512_mul_ps(dl, _mm512_cvtepi32_ps(q)), ml));
      }
    }
  }
}

// Bits shift..shift+1 of each 32-bit lane, moved to bits 4..5 (Q6_K's high bits).
XLSHARE_AVX512 inline __m512i q6_high_bits(__m512i hb, int shift) noexcept {
  return _mm512_slli_epi32(
      _mm512_and_si512(_mm512_srlv_epi32(hb, _mm512_set1_epi32(shift)), _mm512_set1_epi32(3)), 4);
}

XLSHARE_AVX512 void dq_q6_k_avx512(const std::byte* src, float* y) noexcept {
  const float d = _cvtsh_ss(half_bits(src + offsetof(BlockQ6_K, d)));
  const __m512i low4 = _mm512_set1_epi32(0x0F), bias = _mm512_set1_epi32(32);
  for (int h = 0; h < 2; ++h) {
    const std::uint8_t* ql = bytes_at(src, offsetof(BlockQ6_K, ql)) + 64 * h;
    const std::uint8_t* qh = bytes_at(src, offsetof(BlockQ6_K, qh)) + 32 * h;
    const auto* sc =
        reinterpret_cast<const std::int8_t*>(src + offsetof(BlockQ6_K, scales)) + 8 * h;
    for (int g = 0; g < 2; ++g) {  // l = 16 g .. 16 g + 15, scale index is = g
      const __m512i l0 =
          _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(ql + 16 * g)));
      const __m512i l1 =
          _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(ql + 32 + 16 * g)));
      const __m512i hb =
          _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(qh + 16 * g)));
      const __m512i q[4] = {
          _mm512_sub_epi32(_mm512_or_si512(_mm512_and_si512(l0, low4), q6_high_bits(hb, 0)), bias),
          _mm512_sub_epi32(_mm512_or_si512(_mm512_and_si512(l1, low4), q6_high_bits(hb, 2)), bias),
          _mm512_sub_epi32(_mm512_or_si512(_mm512_srli_epi32(l0, 4), q6_high_bits(hb, 4)), bias),
          _mm512_sub_epi32(_mm512_or_si512(_mm512_srli_epi32(l1, 4), q6_high_bits(hb, 6)), bias)};
      for (int k = 0; k < 4; ++k) {
        const __m512 scale = _mm512_set1_ps(d * static_cast<float>(sc[g + 2 * k]));
        _mm512_storeu_ps(y + 128 * h + 32 * k + 16 * g,
                         _mm512_mul_ps(scale, _mm512_cvtepi32_ps(q[k])));
      }
    }
  }
}

#pragma GCC diagnostic pop

bool cpu_has_avx512() noexcept {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw");
}
#else
bool cpu_has_avx512() noexcept { return false; }
#endif

using BlockDequant = void (*)(const std::byte*, float*) noexcept;

void dq_q4_k_scalar(const std::byte* src, float* y) noexcept { dq_q4_k(load<BlockQ4_K>(src), y); }
void dq_q6_k_scalar(const std::byte* src, float* y) noexcept { dq_q6_k(load<BlockQ6_K>(src), y); }

struct KDequant {
  BlockDequant q4_k, q6_k;
};

const KDequant& k_dequant() noexcept {
  static const KDequant k = [] {
#if defined(__x86_64__) && defined(__GNUC__)
    if (cpu_has_avx512() && std::getenv("XLSHARE_NO_AVX512_DEQUANT") == nullptr)
      return KDequant{dq_q4_k_avx512, dq_q6_k_avx512};
#endif
    return KDequant{dq_q4_k_scalar, dq_q6_k_scalar};
  }();
  return k;
}

}  // namespace

void dequantize_block(DType type, const std::byte* src, float* y) noexcept {
  switch (type) {
    case DType::kQ8_0: {
      const auto b = load<BlockQ8_0>(src);
      const float d = f16_to_f32(b.d);
      for (int i = 0; i < kQK; ++i) y[i] = static_cast<float>(b.qs[i]) * d;
      return;
    }
    case DType::kQ4_0:
      return dq_q4_0(load<BlockQ4_0>(src), y);
    case DType::kQ4_1:
      return dq_q4_1(load<BlockQ4_1>(src), y);
    case DType::kQ5_0:
      return dq_q5_0(load<BlockQ5_0>(src), y);
    case DType::kQ5_1:
      return dq_q5_1(load<BlockQ5_1>(src), y);
    case DType::kQ2_K:
      return dq_q2_k(load<BlockQ2_K>(src), y);
    case DType::kQ3_K:
      return dq_q3_k(load<BlockQ3_K>(src), y);
    case DType::kQ4_K:
      return k_dequant().q4_k(src, y);
    case DType::kQ5_K:
      return dq_q5_k(load<BlockQ5_K>(src), y);
    case DType::kQ6_K:
      return k_dequant().q6_k(src, y);
    default:
      return;
  }
}

namespace {

std::uint8_t clamp_round(float v, int lo, int hi) noexcept {
  const long r = std::lround(v);
  return static_cast<std::uint8_t>(std::clamp<long>(r, lo, hi));
}

}  // namespace

void quantize_q4_k(const float* x, std::byte* out) noexcept {
  float scale[8], min[8];  // per sub-block: x ~ scale * q - min, q in 0..15, min >= 0
  for (int j = 0; j < 8; ++j) {
    float lo = 0.0f, hi = 0.0f;
    for (int l = 0; l < 32; ++l) {
      lo = std::min(lo, x[32 * j + l]);
      hi = std::max(hi, x[32 * j + l]);
    }
    scale[j] = (hi - lo) / 15.0f;
    min[j] = -lo;
  }
  const float max_scale = *std::max_element(scale, scale + 8);
  const float max_min = *std::max_element(min, min + 8);
  BlockQ4_K b{};
  b.d = f32_to_f16(max_scale / 63.0f);
  b.dmin = f32_to_f16(max_min / 63.0f);
  const float d = f16_to_f32(b.d), dmin = f16_to_f32(b.dmin);
  std::uint8_t sc[8], mn[8];
  for (int j = 0; j < 8; ++j) {
    sc[j] = d > 0 ? clamp_round(scale[j] / d, 0, 63) : 0;
    mn[j] = dmin > 0 ? clamp_round(min[j] / dmin, 0, 63) : 0;
  }
  for (int k = 0; k < 4; ++k) {  // the inverse of scale_min_k4
    b.scales[k] = static_cast<std::uint8_t>((sc[k] & 63) | ((sc[k + 4] >> 4) << 6));
    b.scales[k + 4] = static_cast<std::uint8_t>((mn[k] & 63) | ((mn[k + 4] >> 4) << 6));
    b.scales[k + 8] = static_cast<std::uint8_t>((sc[k + 4] & 0xF) | ((mn[k + 4] & 0xF) << 4));
  }
  for (int c = 0; c < 4; ++c) {  // 64 values per 32 bytes: low nibbles, then high
    for (int h = 0; h < 2; ++h) {
      const int j = 2 * c + h;
      const float step = d * sc[j], offset = dmin * mn[j];
      for (int l = 0; l < 32; ++l) {
        const std::uint8_t q =
            step > 0 ? clamp_round((x[32 * j + l] + offset) / step, 0, 15) : std::uint8_t{0};
        b.qs[32 * c + l] = static_cast<std::uint8_t>(b.qs[32 * c + l] | (q << (4 * h)));
      }
    }
  }
  std::memcpy(out, &b, sizeof b);
}

void quantize_q6_k(const float* x, std::byte* out) noexcept {
  float scale[16];  // per 16 values: x ~ scale * q, q in -32..31
  float max_abs_scale = 0.0f;
  for (int g = 0; g < 16; ++g) {
    float amax = 0.0f;
    for (int l = 0; l < 16; ++l) amax = std::max(amax, std::fabs(x[16 * g + l]));
    scale[g] = amax / 31.0f;
    max_abs_scale = std::max(max_abs_scale, scale[g]);
  }
  BlockQ6_K b{};
  b.d = f32_to_f16(max_abs_scale / 127.0f);
  const float d = f16_to_f32(b.d);
  std::uint8_t q[256];
  for (int g = 0; g < 16; ++g) {
    b.scales[g] = d > 0 ? static_cast<std::int8_t>(clamp_round(scale[g] / d, 0, 127)) : 0;
    const float step = d * b.scales[g];
    for (int l = 0; l < 16; ++l) {
      const int v = step > 0 ? static_cast<int>(std::lround(x[16 * g + l] / step)) : 0;
      q[16 * g + l] = static_cast<std::uint8_t>(std::clamp(v, -32, 31) + 32);
    }
  }
  for (int h = 0; h < 2; ++h) {  // the inverse of dq_q6_k's layout
    const std::uint8_t* v = q + 128 * h;
    for (int l = 0; l < 32; ++l) {
      b.ql[64 * h + l] = static_cast<std::uint8_t>((v[l] & 0xF) | ((v[l + 64] & 0xF) << 4));
      b.ql[64 * h + l + 32] =
          static_cast<std::uint8_t>((v[l + 32] & 0xF) | ((v[l + 96] & 0xF) << 4));
      b.qh[32 * h + l] =
          static_cast<std::uint8_t>((v[l] >> 4) | ((v[l + 32] >> 4) << 2) |
                                    ((v[l + 64] >> 4) << 4) | ((v[l + 96] >> 4) << 6));
    }
  }
  std::memcpy(out, &b, sizeof b);
}

void dequantize_block_portable(DType type, const std::byte* src, float* y) noexcept {
  if (type == DType::kQ4_K) return dq_q4_k_scalar(src, y);
  if (type == DType::kQ6_K) return dq_q6_k_scalar(src, y);
  dequantize_block(type, src, y);
}

}  // namespace xlshare::quant
