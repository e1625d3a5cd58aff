#include "model/quant_dot.hpp"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <string_view>
#include <vector>

#include "model/prefetch.hpp"
#include "model/quant_blocks.hpp"
#include "xlshare/model/dtype_convert.hpp"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace xlshare::quant {
namespace {

// Q4_K's nibbles hold sub-blocks in this order (32 bytes of low nibbles, then of high).
constexpr int kQ4KOrder[8] = {0, 2, 1, 3, 4, 6, 5, 7};

// Symmetric 8-bit quantization of n values: d = max|x| / 127. A NaN or infinite value
// makes d NaN (and every q 0), so the product is NaN as in the exact mode, never a number.
float quantize_i8(const float* x, int n, std::int8_t* q) noexcept {
  float amax = 0.0f;
  bool finite = true;
  for (int i = 0; i < n; ++i) {
    finite = finite && std::isfinite(x[i]);
    amax = std::max(amax, std::fabs(x[i]));
  }
  if (!finite) {
    std::fill_n(q, n, std::int8_t{0});
    return std::numeric_limits<float>::quiet_NaN();
  }
  const float d = amax / 127.0f;
  const float id = amax > 0.0f ? 127.0f / amax : 0.0f;
  for (int i = 0; i < n; ++i)
    q[i] = static_cast<std::int8_t>(std::clamp(std::nearbyint(x[i] * id), -127.0f, 127.0f));
  return d;
}

void quantize_q8k(DType weights, const float* x, ActQ8K& a) noexcept {
  std::int8_t q[256];
  a.d = quantize_i8(x, 256, q);
  std::fill(std::begin(a.bsums), std::end(a.bsums), 0);
  if (weights == DType::kQ4_K) {
    for (int s = 0; s < 8; ++s) {
      const int j = kQ4KOrder[s];
      std::memcpy(a.qs + 32 * s, q + 32 * j, 32);
      for (int l = 0; l < 32; ++l) a.bsums[j] += q[32 * j + l];
    }
  } else {
    std::memcpy(a.qs, q, 256);
    for (int i = 0; i < 256; ++i) a.bsums[i / 16] += q[i];
  }
}

// --- products ------------------------------------------------------------------------------
// Each takes one weight row and n <= kMaxRows activation rows (act + i * stride bytes) and
// writes the n dot products: a weight block is unpacked once for all n rows.

constexpr std::size_t kMaxRows = 8;  // XLSHARE_ROWS_BY_N lists its instances 1..8

template <typename Act>
const Act* act_row(const std::byte* act, std::size_t stride, std::size_t i) noexcept {
  return reinterpret_cast<const Act*>(act + i * stride);
}

inline void dot_q8_0_scalar(const std::byte* w, const std::byte* act, std::size_t stride,
                            std::size_t n, std::size_t blocks, float* out) noexcept {
  for (std::size_t i = 0; i < n; ++i) {
    const ActQ8_0x2* a = act_row<ActQ8_0x2>(act, stride, i);
    float sum = 0.0f;
    for (std::size_t b = 0; b < blocks; ++b) {
      const auto blk = load<BlockQ8_0>(w + b * sizeof(BlockQ8_0));
      const ActQ8_0x2& pair = a[b / 2];
      std::int32_t s = 0;
      for (int l = 0; l < 32; ++l) s += blk.qs[l] * pair.qs[32 * (b % 2) + l];
      sum += f16_to_f32(blk.d) * pair.d[8 * (b % 2)] * static_cast<float>(s);
    }
    out[i] = sum;
  }
}

inline void dot_q4_k_scalar(const std::byte* w, const std::byte* act, std::size_t stride,
                            std::size_t n, std::size_t blocks, float* out) noexcept {
  for (std::size_t i = 0; i < n; ++i) {
    const ActQ8K* a = act_row<ActQ8K>(act, stride, i);
    float sum = 0.0f;
    for (std::size_t b = 0; b < blocks; ++b) {
      const auto blk = load<BlockQ4_K>(w + b * sizeof(BlockQ4_K));
      std::int32_t isum = 0, msum = 0;
      for (int s = 0; s < 8; ++s) {
        const int j = kQ4KOrder[s];  // sub-block j: chunk j / 2, nibble j % 2
        std::uint8_t sc, m;
        scale_min_k4(j, blk.scales, sc, m);
        std::int32_t dot = 0;
        for (int l = 0; l < 32; ++l)
          dot += ((blk.qs[32 * (j / 2) + l] >> (4 * (j % 2))) & 0xF) * a[b].qs[32 * s + l];
        isum += sc * dot;
        msum += m * a[b].bsums[j];
      }
      sum += a[b].d * (f16_to_f32(blk.d) * static_cast<float>(isum) -
                       f16_to_f32(blk.dmin) * static_cast<float>(msum));
    }
    out[i] = sum;
  }
}

inline void dot_q6_k_scalar(const std::byte* w, const std::byte* act, std::size_t stride,
                            std::size_t n, std::size_t blocks, float* out) noexcept {
  for (std::size_t i = 0; i < n; ++i) {
    const ActQ8K* a = act_row<ActQ8K>(act, stride, i);
    float sum = 0.0f;
    for (std::size_t b = 0; b < blocks; ++b) {
      const auto blk = load<BlockQ6_K>(w + b * sizeof(BlockQ6_K));
      std::int32_t isum = 0;
      for (int h = 0; h < 2; ++h) {
        const std::uint8_t* ql = blk.ql + 64 * h;
        const std::uint8_t* qh = blk.qh + 32 * h;
        for (int l = 0; l < 128; ++l) {
          const int quarter = l / 32, k = l % 32;
          const int lo = quarter % 2 == 0 ? ql[k] : ql[k + 32];
          const int nib = quarter < 2 ? lo & 0xF : lo >> 4;
          const int q = nib | (((qh[k] >> (2 * quarter)) & 3) << 4);  // 0..63
          const int v = 128 * h + l;
          isum += blk.scales[v / 16] * (q - 32) * a[b].qs[v];
        }
      }
      sum += a[b].d * f16_to_f32(blk.d) * static_cast<float>(isum);
    }
    out[i] = sum;
  }
}

// Over `rows` weight rows (rb bytes apart): y[i * y_stride + r].
#define XLSHARE_ROWS(name, kernel, attrs)                                                     \
  attrs void name(const std::byte* w, std::size_t rb, std::size_t rows, const std::byte* act, \
                  std::size_t stride, std::size_t n, std::size_t blocks, float* y,            \
                  std::size_t y_stride) noexcept {                                            \
    float out[kMaxRows];                                                                      \
    for (std::size_t r = 0; r < rows; ++r) {                                                  \
      prefetch_next_rows(w + r * rb, rb, w + rows * rb);                                      \
      kernel(w + r * rb, act, stride, n, blocks, out);                                        \
      for (std::size_t i = 0; i < n; ++i) y[i * y_stride + r] = out[i];                       \
    }                                                                                         \
  }
#define XLSHARE_NO_ATTRS
XLSHARE_ROWS(rows_q8_0_scalar, dot_q8_0_scalar, XLSHARE_NO_ATTRS)
XLSHARE_ROWS(rows_q4_k_scalar, dot_q4_k_scalar, XLSHARE_NO_ATTRS)
XLSHARE_ROWS(rows_q6_k_scalar, dot_q6_k_scalar, XLSHARE_NO_ATTRS)

#if defined(__x86_64__) && defined(__GNUC__)
#define XLSHARE_VNNI \
  __attribute__((target("avx2,fma,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,f16c")))

XLSHARE_VNNI float hsum256(__m256 v) noexcept {
  __m128 r = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  r = _mm_add_ps(r, _mm_movehl_ps(r, r));
  r = _mm_add_ss(r, _mm_movehdup_ps(r));
  return _mm_cvtss_f32(r);
}

// permutexvar_epi16 indices: 16-bit lanes 0..15 take element a, 16..31 element b.
XLSHARE_VNNI __m512i halves(short a, short b) noexcept {
  return _mm512_set_epi16(b, b, b, b, b, b, b, b, b, b, b, b, b, b, b, b, a, a, a, a, a, a, a, a, a,
                          a, a, a, a, a, a, a);
}
// Lanes 8j..8j+7 take element first + j (j = 0..3).
XLSHARE_VNNI __m512i quarters(short first) noexcept {
  const short a = first, b = static_cast<short>(first + 1), c = static_cast<short>(first + 2),
              d = static_cast<short>(first + 3);
  return _mm512_set_epi16(d, d, d, d, d, d, d, d, c, c, c, c, c, c, c, c, b, b, b, b, b, b, b, b, a,
                          a, a, a, a, a, a, a);
}

template <std::size_t N>
XLSHARE_VNNI inline __attribute__((always_inline)) void dot_q8_0_vnni(const std::byte* w,
                                                                      const std::byte* act,
                                                                      std::size_t stride,
                                                                      std::size_t blocks,
                                                                      float* out) noexcept {
  // Two blocks per product: lanes 0..7 hold the first block's sums, 8..15 the second's.
  __m512 acc[kMaxRows];
  for (std::size_t i = 0; i < N; ++i) acc[i] = _mm512_setzero_ps();
  const __m512i zero = _mm512_setzero_si512();
  for (std::size_t b = 0; b < blocks; b += 2) {
    const std::byte* p = w + b * sizeof(BlockQ8_0);
    const __m512i q = _mm512_inserti64x4(
        _mm512_castsi256_si512(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + 2))),
        _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + sizeof(BlockQ8_0) + 2)), 1);
    // dpbusd multiplies unsigned by signed bytes: |w| times x with w's sign.
    const __m512i aq = _mm512_abs_epi8(q);
    const __mmask64 negative = _mm512_movepi8_mask(q);
    const __m512 dw = _mm512_insertf32x8(
        _mm512_set1_ps(_cvtsh_ss(load<std::uint16_t>(p))),
        _mm256_set1_ps(_cvtsh_ss(load<std::uint16_t>(p + sizeof(BlockQ8_0)))), 1);
    for (std::size_t i = 0; i < N; ++i) {
      const ActQ8_0x2& a = act_row<ActQ8_0x2>(act, stride, i)[b / 2];
      const __m512i x = _mm512_load_si512(a.qs);
      const __m512i sx = _mm512_mask_sub_epi8(x, negative, zero, x);
      const __m512i dot = _mm512_dpbusd_epi32(zero, aq, sx);
      acc[i] =
          _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), _mm512_mul_ps(dw, _mm512_loadu_ps(a.d)), acc[i]);
    }
  }
  for (std::size_t i = 0; i < N; ++i) out[i] = _mm512_reduce_add_ps(acc[i]);
}

template <std::size_t N>
XLSHARE_VNNI inline __attribute__((always_inline)) void dot_q4_k_vnni(const std::byte* w,
                                                                      const std::byte* act,
                                                                      std::size_t stride,
                                                                      std::size_t blocks,
                                                                      float* out) noexcept {
  const __m512i low4 = _mm512_set1_epi8(0x0F);
  // 16 16-bit lanes per sub-block, two sub-blocks per product (order 0,2 | 1,3 | 4,6 |
  // 5,7): each lane's sub-block scale.
  const __m512i pick[4] = {halves(0, 2), halves(1, 3), halves(4, 6), halves(5, 7)};
  __m512 acc[kMaxRows];
  __m256 mins[kMaxRows];
  for (std::size_t i = 0; i < N; ++i) {
    acc[i] = _mm512_setzero_ps();
    mins[i] = _mm256_setzero_ps();
  }
  for (std::size_t b = 0; b < blocks; ++b) {
    const std::byte* p = w + b * sizeof(BlockQ4_K);
    const __m128i packed = scales_mins_k4(p + 4);
    // 16-bit lanes 0..7 the scales, 8..15 the mins.
    const __m512i scales = _mm512_castsi256_si512(_mm256_cvtepu8_epi16(packed));
    const __m256i m8 = _mm256_cvtepu8_epi32(_mm_srli_si128(packed, 8));
    const __m512i s[4] = {
        _mm512_permutexvar_epi16(pick[0], scales), _mm512_permutexvar_epi16(pick[1], scales),
        _mm512_permutexvar_epi16(pick[2], scales), _mm512_permutexvar_epi16(pick[3], scales)};
    const __m512i v0 = _mm512_loadu_si512(p + 16);
    const __m512i v1 = _mm512_loadu_si512(p + 16 + 64);
    const __m512i q[4] = {
        _mm512_and_si512(v0, low4), _mm512_and_si512(_mm512_srli_epi16(v0, 4), low4),
        _mm512_and_si512(v1, low4), _mm512_and_si512(_mm512_srli_epi16(v1, 4), low4)};
    const float dw = _cvtsh_ss(load<std::uint16_t>(p));
    const float mw = _cvtsh_ss(load<std::uint16_t>(p + 2));
    for (std::size_t i = 0; i < N; ++i) {
      const ActQ8K& a = act_row<ActQ8K>(act, stride, i)[b];
      // Pairs of products (at most 2 * 15 * 128: no saturation), each times its scale and
      // summed in pairs into 32 bits.
      __m512i isum = _mm512_setzero_si512();
      for (int k = 0; k < 4; ++k)
        isum = _mm512_dpwssd_epi32(
            isum, _mm512_maddubs_epi16(q[k], _mm512_load_si512(a.qs + 64 * k)), s[k]);
      acc[i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum), _mm512_set1_ps(dw * a.d), acc[i]);
      const __m256i bsums = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a.bsums));
      mins[i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_mullo_epi32(m8, bsums)),
                                _mm256_set1_ps(mw * a.d), mins[i]);
    }
  }
  for (std::size_t i = 0; i < N; ++i) out[i] = _mm512_reduce_add_ps(acc[i]) - hsum256(mins[i]);
}

template <std::size_t N>
XLSHARE_VNNI inline __attribute__((always_inline)) void dot_q6_k_vnni(const std::byte* w,
                                                                      const std::byte* act,
                                                                      std::size_t stride,
                                                                      std::size_t blocks,
                                                                      float* out) noexcept {
  const __m512i low4 = _mm512_set1_epi8(0x0F), two_bits = _mm512_set1_epi8(0x03);
  // Each 64 values are 4 groups of 16 (8 16-bit lanes each): each lane's group scale.
  const __m512i pick[4] = {quarters(0), quarters(4), quarters(8), quarters(12)};
  // qh's bit pairs: values 0..31 | 32..63 of a half at shifts 0 | 2, 64..95 | 96..127 at 4 | 6.
  constexpr long long k2 = 0x0002000200020002, k4 = 0x0004000400040004, k6 = 0x0006000600060006;
  const __m512i shift_a = _mm512_set_epi64(k2, k2, k2, k2, 0, 0, 0, 0);
  const __m512i shift_b = _mm512_set_epi64(k6, k6, k6, k6, k4, k4, k4, k4);
  __m512 acc[kMaxRows];
  for (std::size_t i = 0; i < N; ++i) acc[i] = _mm512_setzero_ps();
  for (std::size_t b = 0; b < blocks; ++b) {
    const std::byte* p = w + b * sizeof(BlockQ6_K);
    const auto sc8 = load<std::array<std::int8_t, 16>>(p + 192);
    const __m128i sc = _mm_loadu_si128(reinterpret_cast<const __m128i*>(sc8.data()));
    const __m512i scales = _mm512_cvtepi8_epi32(sc);
    const __m512i scales16 = _mm512_castsi256_si512(_mm256_cvtepi8_epi16(sc));
    __m512i q[4], s[4];
    for (int h = 0; h < 2; ++h) {
      const __m512i ql = _mm512_loadu_si512(p + 64 * h);
      const __m512i qh = _mm512_broadcast_i64x4(
          _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + 128 + 32 * h)));
      const __m512i ha =
          _mm512_slli_epi16(_mm512_and_si512(_mm512_srlv_epi16(qh, shift_a), two_bits), 4);
      const __m512i hb =
          _mm512_slli_epi16(_mm512_and_si512(_mm512_srlv_epi16(qh, shift_b), two_bits), 4);
      q[2 * h] = _mm512_or_si512(_mm512_and_si512(ql, low4), ha);
      q[2 * h + 1] = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(ql, 4), low4), hb);
      s[2 * h] = _mm512_permutexvar_epi16(pick[2 * h], scales16);
      s[2 * h + 1] = _mm512_permutexvar_epi16(pick[2 * h + 1], scales16);
    }
    const float dw = _cvtsh_ss(load<std::uint16_t>(p + 208));
    for (std::size_t i = 0; i < N; ++i) {
      const ActQ8K& a = act_row<ActQ8K>(act, stride, i)[b];
      // Pairs of products (at most 2 * 63 * 128: no saturation), each times its scale and
      // summed in pairs into 32 bits.
      __m512i isum = _mm512_setzero_si512();
      for (int k = 0; k < 4; ++k)
        isum = _mm512_dpwssd_epi32(
            isum, _mm512_maddubs_epi16(q[k], _mm512_load_si512(a.qs + 64 * k)), s[k]);
      // The values are stored plus 32: take 32 * scale * (sum of the group's x) away.
      const __m512i bsums = _mm512_loadu_si512(a.bsums);
      isum = _mm512_sub_epi32(isum, _mm512_slli_epi32(_mm512_mullo_epi32(scales, bsums), 5));
      acc[i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum), _mm512_set1_ps(dw * a.d), acc[i]);
    }
  }
  for (std::size_t i = 0; i < N; ++i) out[i] = _mm512_reduce_add_ps(acc[i]);
}

// The same with the activation row count as a constant: the per-row loops unrolled, so the
// accumulators stay in registers (with n at run time they lived on the stack, a load and a
// store per row and block).
#define XLSHARE_ROWS_BY_N(name, kernel, attrs)                                                    \
  template <std::size_t N>                                                                        \
  attrs void name##_n(const std::byte* w, std::size_t rb, std::size_t rows, const std::byte* act, \
                      std::size_t stride, std::size_t blocks, float* y,                           \
                      std::size_t y_stride) noexcept {                                            \
    float out[N];                                                                                 \
    for (std::size_t r = 0; r < rows; ++r) {                                                      \
      prefetch_next_rows(w + r * rb, rb, w + rows * rb);                                          \
      kernel<N>(w + r * rb, act, stride, blocks, out);                                            \
      for (std::size_t i = 0; i < N; ++i) y[i * y_stride + r] = out[i];                           \
    }                                                                                             \
  }                                                                                               \
  attrs void name(const std::byte* w, std::size_t rb, std::size_t rows, const std::byte* act,     \
                  std::size_t stride, std::size_t n, std::size_t blocks, float* y,                \
                  std::size_t y_stride) noexcept {                                                \
    static constexpr decltype(&name##_n<1>) by_n[kMaxRows] = {                                    \
        &name##_n<1>, &name##_n<2>, &name##_n<3>, &name##_n<4>,                                   \
        &name##_n<5>, &name##_n<6>, &name##_n<7>, &name##_n<8>};                                  \
    by_n[n - 1](w, rb, rows, act, stride, blocks, y, y_stride);                                   \
  }
XLSHARE_ROWS_BY_N(rows_q8_0_vnni, dot_q8_0_vnni, XLSHARE_VNNI)
XLSHARE_ROWS_BY_N(rows_q4_k_vnni, dot_q4_k_vnni, XLSHARE_VNNI)
XLSHARE_ROWS_BY_N(rows_q6_k_vnni, dot_q6_k_vnni, XLSHARE_VNNI)

// --- AVX2 products (no VNNI): maddubs multiplies unsigned by signed bytes into int16 pairs,
// madd by int16 scales (or ones) sums them into int32. No int16 saturates: |w| <= 128,
// |x| <= 127, so a pair is at most 32512.

#define XLSHARE_AVX2 __attribute__((target("avx2,fma,f16c")))

XLSHARE_AVX2 inline float hsum256_avx2(__m256 v) noexcept {
  __m128 r = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  r = _mm_add_ps(r, _mm_movehl_ps(r, r));
  r = _mm_add_ss(r, _mm_movehdup_ps(r));
  return _mm_cvtss_f32(r);
}

XLSHARE_AVX2 inline __attribute__((always_inline)) void dot_q8_0_avx2(
    const std::byte* w, const std::byte* act, std::size_t stride, std::size_t n, std::size_t blocks,
    float* out) noexcept {
  const __m256i ones = _mm256_set1_epi16(1);
  __m256 acc[kMaxRows];
  for (std::size_t i = 0; i < n; ++i) acc[i] = _mm256_setzero_ps();
  for (std::size_t b = 0; b < blocks; ++b) {
    const std::byte* p = w + b * sizeof(BlockQ8_0);
    const __m256i q = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + 2));
    const __m256i aq = _mm256_abs_epi8(q);
    const float dw = _cvtsh_ss(load<std::uint16_t>(p));
    for (std::size_t i = 0; i < n; ++i) {
      const ActQ8_0x2& a = act_row<ActQ8_0x2>(act, stride, i)[b / 2];
      const __m256i x = _mm256_load_si256(reinterpret_cast<const __m256i*>(a.qs + 32 * (b % 2)));
      const __m256i dot = _mm256_madd_epi16(_mm256_maddubs_epi16(aq, _mm256_sign_epi8(x, q)), ones);
      acc[i] =
          _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), _mm256_set1_ps(dw * a.d[8 * (b % 2)]), acc[i]);
    }
  }
  for (std::size_t i = 0; i < n; ++i) out[i] = hsum256_avx2(acc[i]);
}

XLSHARE_AVX2 inline __attribute__((always_inline)) void dot_q4_k_avx2(
    const std::byte* w, const std::byte* act, std::size_t stride, std::size_t n, std::size_t blocks,
    float* out) noexcept {
  const __m256i low4 = _mm256_set1_epi8(0x0F);
  __m256 acc[kMaxRows];
  float mins[kMaxRows] = {};
  for (std::size_t i = 0; i < n; ++i) acc[i] = _mm256_setzero_ps();
  for (std::size_t b = 0; b < blocks; ++b) {
    const std::byte* p = w + b * sizeof(BlockQ4_K);
    std::uint8_t sc[8], m[8];
    const auto packed = load<std::array<std::uint8_t, 12>>(p + 4);
    for (int j = 0; j < 8; ++j) scale_min_k4(j, packed.data(), sc[j], m[j]);
    // Chunk c (32 bytes of qs): low nibbles are sub-block 2c, high nibbles 2c+1; the
    // activations hold sub-blocks in the order 0,2,1,3,4,6,5,7 (64 bytes per chunk pair).
    __m256i q[8], s[8];
    int x_at[8];
    for (int c = 0; c < 4; ++c) {
      const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + 16 + 32 * c));
      q[2 * c] = _mm256_and_si256(v, low4);
      q[2 * c + 1] = _mm256_and_si256(_mm256_srli_epi16(v, 4), low4);
      s[2 * c] = _mm256_set1_epi16(sc[2 * c]);
      s[2 * c + 1] = _mm256_set1_epi16(sc[2 * c + 1]);
      x_at[2 * c] = 64 * (c / 2) * 2 + 32 * (c % 2);  // sub-block 2c
      x_at[2 * c + 1] = x_at[2 * c] + 64;             // sub-block 2c+1
    }
    const float dw = _cvtsh_ss(load<std::uint16_t>(p));
    const float mw = _cvtsh_ss(load<std::uint16_t>(p + 2));
    for (std::size_t i = 0; i < n; ++i) {
      const ActQ8K& a = act_row<ActQ8K>(act, stride, i)[b];
      __m256i isum = _mm256_setzero_si256();
      for (int j = 0; j < 8; ++j) {
        const __m256i x = _mm256_load_si256(reinterpret_cast<const __m256i*>(a.qs + x_at[j]));
        isum = _mm256_add_epi32(isum, _mm256_madd_epi16(_mm256_maddubs_epi16(q[j], x), s[j]));
      }
      acc[i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), _mm256_set1_ps(dw * a.d), acc[i]);
      std::int32_t msum = 0;
      for (int j = 0; j < 8; ++j) msum += m[j] * a.bsums[j];
      mins[i] += mw * a.d * static_cast<float>(msum);
    }
  }
  for (std::size_t i = 0; i < n; ++i) out[i] = hsum256_avx2(acc[i]) - mins[i];
}

XLSHARE_AVX2 inline __attribute__((always_inline)) void dot_q6_k_avx2(
    const std::byte* w, const std::byte* act, std::size_t stride, std::size_t n, std::size_t blocks,
    float* out) noexcept {
  const __m256i low4 = _mm256_set1_epi8(0x0F), two_bits = _mm256_set1_epi8(0x03);
  __m256 acc[kMaxRows];
  for (std::size_t i = 0; i < n; ++i) acc[i] = _mm256_setzero_ps();
  for (std::size_t b = 0; b < blocks; ++b) {
    const std::byte* p = w + b * sizeof(BlockQ6_K);
    const auto sc = load<std::array<std::int8_t, 16>>(p + 192);
    // Values 32 at a time in natural order: two groups of 16, one scale each.
    __m256i q[8], s[8];
    for (int h = 0; h < 2; ++h) {
      const __m256i ql0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + 64 * h));
      const __m256i ql1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + 64 * h + 32));
      const __m256i qh = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + 128 + 32 * h));
      // qh's bit pairs 0..1, 2..3, 4..5, 6..7 become bits 4..5 of each value (no lambda:
      // it would not carry this function's target and its intrinsics would not inline).
      const __m256i h0 = _mm256_slli_epi16(_mm256_and_si256(qh, two_bits), 4);
      const __m256i h1 = _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2), two_bits), 4);
      const __m256i h2 = _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 4), two_bits), 4);
      const __m256i h3 = _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 6), two_bits), 4);
      q[4 * h + 0] = _mm256_or_si256(_mm256_and_si256(ql0, low4), h0);
      q[4 * h + 1] = _mm256_or_si256(_mm256_and_si256(ql1, low4), h1);
      q[4 * h + 2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql0, 4), low4), h2);
      q[4 * h + 3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql1, 4), low4), h3);
    }
    for (int k = 0; k < 8; ++k) {
      s[k] = _mm256_set_m128i(_mm_set1_epi16(sc[static_cast<std::size_t>(2 * k + 1)]),
                              _mm_set1_epi16(sc[static_cast<std::size_t>(2 * k)]));
    }
    const float dw = _cvtsh_ss(load<std::uint16_t>(p + 208));
    for (std::size_t i = 0; i < n; ++i) {
      const ActQ8K& a = act_row<ActQ8K>(act, stride, i)[b];
      __m256i isum = _mm256_setzero_si256();
      for (int k = 0; k < 8; ++k) {
        const __m256i x = _mm256_load_si256(reinterpret_cast<const __m256i*>(a.qs + 32 * k));
        isum = _mm256_add_epi32(isum, _mm256_madd_epi16(_mm256_maddubs_epi16(q[k], x), s[k]));
      }
      std::int32_t offset = 0;  // the values are stored plus 32
      for (int g = 0; g < 16; ++g) offset += sc[static_cast<std::size_t>(g)] * a.bsums[g];
      const float d = dw * a.d;
      acc[i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), _mm256_set1_ps(d), acc[i]);
      acc[i] = _mm256_sub_ps(
          acc[i], _mm256_setr_ps(32.0f * d * static_cast<float>(offset), 0, 0, 0, 0, 0, 0, 0));
    }
  }
  for (std::size_t i = 0; i < n; ++i) out[i] = hsum256_avx2(acc[i]);
}

XLSHARE_ROWS(rows_q8_0_avx2, dot_q8_0_avx2, XLSHARE_AVX2)
XLSHARE_ROWS(rows_q4_k_avx2, dot_q4_k_avx2, XLSHARE_AVX2)
XLSHARE_ROWS(rows_q6_k_avx2, dot_q6_k_avx2, XLSHARE_AVX2)

bool cpu_has_avx2() noexcept {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}

bool cpu_has_vnni() noexcept {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
         __builtin_cpu_supports("avx512vnni");  // F16C: every AVX2 CPU has it
}
#else
bool cpu_has_vnni() noexcept { return false; }
bool cpu_has_avx2() noexcept { return false; }
#endif

using Kernel = void (*)(const std::byte*, std::size_t, std::size_t, const std::byte*, std::size_t,
                        std::size_t, std::size_t, float*, std::size_t) noexcept;
struct Kernels {
  Kernel q8_0, q4_k, q6_k;
  const char* isa;
};

// Every kernel set this CPU can run, best first; XLSHARE_INT_DOT=scalar|avx2|avx512-vnni
// picks one of them (for measuring one against another).
std::vector<Kernels> available() noexcept {
  std::vector<Kernels> out;
#if defined(__x86_64__) && defined(__GNUC__)
  if (cpu_has_vnni())
    out.push_back({rows_q8_0_vnni, rows_q4_k_vnni, rows_q6_k_vnni, "avx512-vnni"});
  if (cpu_has_avx2()) out.push_back({rows_q8_0_avx2, rows_q4_k_avx2, rows_q6_k_avx2, "avx2"});
#endif
  out.push_back({rows_q8_0_scalar, rows_q4_k_scalar, rows_q6_k_scalar, "scalar"});
  return out;
}

const Kernels* find_kernels(std::string_view isa) noexcept {
  static const std::vector<Kernels> all = available();
  for (const auto& k : all) {
    if (isa == k.isa) return &k;
  }
  return nullptr;
}

const Kernels& kernels() noexcept {
  static const Kernels k = [] {
    const char* wanted = std::getenv("XLSHARE_INT_DOT");
    if (wanted != nullptr) {
      if (const Kernels* found = find_kernels(wanted)) return *found;
    }
    return available().front();
  }();
  return k;
}
}  // namespace

bool has_int_dot(DType weights, std::size_t cols) noexcept {
  return (weights == DType::kQ8_0 && cols % 64 == 0) || weights == DType::kQ4_K ||
         weights == DType::kQ6_K;
}

std::size_t act_row_bytes(DType weights, std::size_t cols) noexcept {
  if (weights == DType::kQ8_0) return cols / 64 * sizeof(ActQ8_0x2);
  return cols / 256 * sizeof(ActQ8K);
}

void quantize_activations(DType weights, const float* x, std::size_t cols,
                          std::byte* out) noexcept {
  if (weights == DType::kQ8_0) {
    auto* a = reinterpret_cast<ActQ8_0x2*>(out);
    for (std::size_t b = 0; b < cols / 32; ++b) {
      ActQ8_0x2& pair = a[b / 2];
      const float d = quantize_i8(x + 32 * b, 32, pair.qs + 32 * (b % 2));
      std::fill_n(pair.d + 8 * (b % 2), 8, d);
    }
    return;
  }
  auto* a = reinterpret_cast<ActQ8K*>(out);
  for (std::size_t b = 0; b < cols / 256; ++b) quantize_q8k(weights, x + 256 * b, a[b]);
}

namespace {

void run_kernels(const Kernels& k, DType weights, const std::byte* w, std::size_t rows,
                 const std::byte* act, std::size_t act_stride, std::size_t n, std::size_t cols,
                 float* y, std::size_t y_stride) noexcept {
  const Kernel kernel = weights == DType::kQ8_0   ? k.q8_0
                        : weights == DType::kQ4_K ? k.q4_k
                        : weights == DType::kQ6_K ? k.q6_k
                                                  : nullptr;
  if (kernel == nullptr) return;
  const std::size_t rb = row_bytes(weights, cols);
  const std::size_t blocks = cols / dtype_block_elements(weights);
  for (std::size_t i0 = 0; i0 < n; i0 += kMaxRows) {
    kernel(w, rb, rows, act + i0 * act_stride, act_stride, std::min(kMaxRows, n - i0), blocks,
           y + i0 * y_stride, y_stride);
  }
}

}  // namespace

void int_dot(DType weights, const std::byte* w, std::size_t rows, const std::byte* act,
             std::size_t act_stride, std::size_t n, std::size_t cols, float* y,
             std::size_t y_stride) noexcept {
  run_kernels(kernels(), weights, w, rows, act, act_stride, n, cols, y, y_stride);
}

bool int_dot_with(std::string_view isa, DType weights, const std::byte* w, std::size_t rows,
                  const std::byte* act, std::size_t act_stride, std::size_t n, std::size_t cols,
                  float* y, std::size_t y_stride) noexcept {
  const Kernels* k = find_kernels(isa);
  if (k == nullptr) return false;
  run_kernels(*k, weights, w, rows, act, act_stride, n, cols, y, y_stride);
  return true;
}

const char* int_dot_isa() noexcept { return kernels().isa; }

}  // namespace xlshare::quant
