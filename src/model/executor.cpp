#include "xlshare/model/executor.hpp"

#include "model/compute_team.hpp"
#include "model/prefetch.hpp"
#include "model/quant_blocks.hpp"
#include "model/quant_dot.hpp"

#include <fmt/format.h>
#include <Eigen/Dense>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <array>
#include <atomic>
#include <cmath>
#include <cstddef>
#include <cstring>
#include <limits>
#include <map>
#include <numeric>
#include <utility>

#include "xlshare/error.hpp"
#include "xlshare/memory/pool.hpp"
#include "xlshare/model/dtype_convert.hpp"
#include "xlshare/model/model_file.hpp"

// The AVX-512 decode kernels also convert F16 scales with F16C (which every AVX-512 CPU has).
#if defined(__AVX512F__) && defined(__F16C__)
#define XLSHARE_AVX512_DECODE 1
#endif
#if defined(XLSHARE_AVX512_DECODE)
#include <immintrin.h>
#endif

namespace xlshare {

using RowMat = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using Stride = Eigen::OuterStride<>;

// --- WeightProvider ---------------------------------------------------------------------

void WeightProvider::read_rows(std::size_t index, const TensorDesc& desc,
                               std::span<const std::uint32_t> rows, float* dst) {
  const std::size_t cols = desc.shape[0];
  const std::size_t rb = row_bytes(desc.dtype, cols);
  WeightHandle w = acquire(index);
  for (std::size_t i = 0; i < rows.size(); ++i)
    to_f32(desc.dtype, w.bytes().data() + rows[i] * rb, dst + i * cols, cols);
}

// --- Executor ---------------------------------------------------------------------------

Executor::~Executor() = default;

Executor::Executor(const LlamaModel& model, WeightProvider& weights, ExecutorOptions options)
    : model_(model), weights_(weights), options_(options) {
  if (options_.threads == 0) options_.threads = 1;
  team_ = std::make_unique<ComputeTeam>(options_.threads, options_.spin_us);
  const auto& c = model_.config();
  inv_freq_.resize(c.head_dim / 2);
  for (std::size_t i = 0; i < inv_freq_.size(); ++i) {
    inv_freq_[i] =
        std::pow(c.rope_theta, -2.0 * static_cast<double>(i) / static_cast<double>(c.head_dim));
  }
}

namespace {

// `v` grown (never shrunk) to at least n elements.
std::vector<float>& sized(std::vector<float>& v, std::size_t n) {
  if (v.size() < n) v.resize(n);
  return v;
}

// `v` as it is: a product passed through here is rounded to float before whatever uses it
// next. executor.cpp is built with -ffp-contract=off, yet GCC's vectorizer still forms
// vfmaddsub (one rounding) from a*c - b*s, a*s + b*c.
inline float rounded(float v) noexcept {
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
  __asm__("" : "+x"(v));
#elif defined(__GNUC__) && defined(__aarch64__)
  __asm__("" : "+w"(v));
#endif
  return v;
}

constexpr std::size_t kMaxFusedRows = 8;  // tokens handled by the fused kernels at once

// The products of an F16/BF16 row h with N tokens' x (cols apart), into acc[0..N): two
// accumulators per token (even and odd 16-element pieces), so one token's products are not
// a single chain of dependent FMAs and decode (N = 1) is bound by memory, not by FMA
// latency; the same order for every N, so a token's logits do not depend on the batch it is
// in. Returns the columns done (a multiple of 16); the rest is the caller's.
#if defined(XLSHARE_AVX512_DECODE)
template <std::size_t N, bool kBF16>
std::size_t half_dot(const std::uint16_t* h, std::size_t cols, const float* x,
                     const std::byte* stream_end, __m512* acc) noexcept {
  const auto widen = [](__m256i r) {
    return kBF16 ? _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(r), 16))
                 : _mm512_cvtph_ps(r);
  };
  __m512 even[N], odd[N];
  for (std::size_t i = 0; i < N; ++i) even[i] = odd[i] = _mm512_setzero_ps();
  std::size_t k0 = 0;
  for (; k0 + 32 <= cols; k0 += 32) {
    prefetch_line_ahead(h + k0, stream_end);
    const __m512 w0 = widen(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(h + k0)));
    const __m512 w1 = widen(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(h + k0 + 16)));
    for (std::size_t i = 0; i < N; ++i) {
      even[i] = _mm512_fmadd_ps(w0, _mm512_loadu_ps(x + i * cols + k0), even[i]);
      odd[i] = _mm512_fmadd_ps(w1, _mm512_loadu_ps(x + i * cols + k0 + 16), odd[i]);
    }
  }
  if (k0 + 16 <= cols) {
    const __m512 w0 = widen(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(h + k0)));
    for (std::size_t i = 0; i < N; ++i)
      even[i] = _mm512_fmadd_ps(w0, _mm512_loadu_ps(x + i * cols + k0), even[i]);
    k0 += 16;
  }
  for (std::size_t i = 0; i < N; ++i) acc[i] = _mm512_add_ps(even[i], odd[i]);
  return k0;
}

// Q8_0 rows converted in registers, read straight from the stream: each block's 32 int8
// values widened to float and scaled by the block's F16 scale, then multiplied in. With
// the token count a constant the accumulators stay in registers; four chains a token (two
// blocks a turn, the same order for any token count), so FMA latency does not hold back
// the stream.
template <std::size_t N>
inline void q8_0_block(const std::byte* blk, const float* x, std::size_t cols, __m512 (&lo)[N],
                       __m512 (&hi)[N]) noexcept {
  std::uint16_t scale;
  std::memcpy(&scale, blk, sizeof scale);
  const __m512 d = _mm512_set1_ps(_cvtsh_ss(scale));
  const auto* q = reinterpret_cast<const __m128i*>(blk + sizeof scale);
  const __m512 w0 = _mm512_mul_ps(d, _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(q))));
  const __m512 w1 =
      _mm512_mul_ps(d, _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(q + 1))));
  for (std::size_t i = 0; i < N; ++i) {
    lo[i] = _mm512_fmadd_ps(w0, _mm512_loadu_ps(x + i * cols), lo[i]);
    hi[i] = _mm512_fmadd_ps(w1, _mm512_loadu_ps(x + i * cols + 16), hi[i]);
  }
}

template <std::size_t N>
std::size_t q8_0_dot(const std::byte* w, std::size_t cols, const float* x, __m512* acc) noexcept {
  static_assert(sizeof(BlockQ8_0) == 34);
  __m512 a0[N], a1[N], a2[N], a3[N];
  for (std::size_t i = 0; i < N; ++i) a0[i] = a1[i] = a2[i] = a3[i] = _mm512_setzero_ps();
  const std::size_t blocks = cols / 32;
  std::size_t b = 0;
  for (; b + 2 <= blocks; b += 2) {
    q8_0_block<N>(w + b * 34, x + b * 32, cols, a0, a1);
    q8_0_block<N>(w + (b + 1) * 34, x + (b + 1) * 32, cols, a2, a3);
  }
  for (; b < blocks; ++b) q8_0_block<N>(w + b * 34, x + b * 32, cols, a0, a1);
  for (std::size_t i = 0; i < N; ++i)
    acc[i] = _mm512_add_ps(_mm512_add_ps(a0[i], a1[i]), _mm512_add_ps(a2[i], a3[i]));
  return blocks * 32;
}

template <std::size_t... I>
constexpr auto q8_0_dots(std::index_sequence<I...>) noexcept {
  return std::array{&q8_0_dot<I + 1>...};
}

// Q4_K rows in registers. A weight is dl * q - ml (q a nibble, dl and ml its 32-value
// sub-block's scale and min times the block's d and dmin), so a sub-block's product is
// taken as dl * sum(q x) - ml * sum(x), with the sums of x (xsum: one per 32 values and
// token) made once per matrix product: per 16 weights a widen, a convert and an FMA instead
// of the dequantized value built and stored first. Same sum as the dequantized weights' up
// to float rounding (the reference is 1e-4 away; this moves it by ~1e-7).
//
// Q5_K (kFifthBit) is the same block with a 32-byte qh before qs: bit 2c of qh[l] adds 16
// to value l of sub-block 2c, bit 2c+1 to value l of sub-block 2c+1.
template <std::size_t N, bool kFifthBit>
std::size_t q4_k_dot(const std::byte* w, std::size_t cols, const float* x, const float* xsum,
                     __m512* acc) noexcept {
  static_assert(sizeof(quant::BlockQ4_K) == 144 && sizeof(quant::BlockQ5_K) == 176);
  constexpr std::size_t kBlockBytes = kFifthBit ? 176 : 144;
  constexpr std::size_t kQs = kFifthBit ? 48 : 16;  // offset of qs in the block
  const std::size_t blocks = cols / 256;
  const __m512i low4 = _mm512_set1_epi32(0x0F);
  __m512 lo[N], hi[N];
  __m256 mins[N];
  for (std::size_t i = 0; i < N; ++i) {
    lo[i] = hi[i] = _mm512_setzero_ps();
    mins[i] = _mm256_setzero_ps();
  }
  for (std::size_t b = 0; b < blocks; ++b) {
    const std::byte* p = w + b * kBlockBytes;
    const __m128i packed = quant::scales_mins_k4(p + 4);  // 8 scales, then 8 mins
    std::uint16_t half[2];
    std::memcpy(half, p, sizeof half);
    alignas(32) float dl[8];
    _mm256_store_ps(dl, _mm256_mul_ps(_mm256_set1_ps(_cvtsh_ss(half[0])),
                                      _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(packed))));
    const __m256 ml =
        _mm256_mul_ps(_mm256_set1_ps(_cvtsh_ss(half[1])),
                      _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(packed, 8))));
    const auto* qs = reinterpret_cast<const __m128i*>(p + kQs);
    [[maybe_unused]] __m512i qh0, qh1;  // Q5_K: qh[0..15] and qh[16..31], one per lane
    if constexpr (kFifthBit) {
      const auto* qh = reinterpret_cast<const __m128i*>(p + 16);
      qh0 = _mm512_cvtepu8_epi32(_mm_loadu_si128(qh));
      qh1 = _mm512_cvtepu8_epi32(_mm_loadu_si128(qh + 1));
    }
    for (std::size_t c = 0; c < 4; ++c) {  // 32 bytes: sub-block 2c low nibbles, 2c+1 high
      const __m512i r0 = _mm512_cvtepu8_epi32(_mm_loadu_si128(qs + 2 * c));
      const __m512i r1 = _mm512_cvtepu8_epi32(_mm_loadu_si128(qs + 2 * c + 1));
      __m512i n0 = _mm512_and_si512(r0, low4), n1 = _mm512_and_si512(r1, low4);
      __m512i n2 = _mm512_srli_epi32(r0, 4), n3 = _mm512_srli_epi32(r1, 4);
      if constexpr (kFifthBit) {  // bit 2c (low nibbles) and 2c + 1 (high) of qh, as 16
        const __m512i sixteen = _mm512_set1_epi32(16);
        const __m512i lo_bit = _mm512_set1_epi32(1 << (2 * c));
        const __m512i hi_bit = _mm512_set1_epi32(2 << (2 * c));
        n0 = _mm512_mask_or_epi32(n0, _mm512_test_epi32_mask(qh0, lo_bit), n0, sixteen);
        n1 = _mm512_mask_or_epi32(n1, _mm512_test_epi32_mask(qh1, lo_bit), n1, sixteen);
        n2 = _mm512_mask_or_epi32(n2, _mm512_test_epi32_mask(qh0, hi_bit), n2, sixteen);
        n3 = _mm512_mask_or_epi32(n3, _mm512_test_epi32_mask(qh1, hi_bit), n3, sixteen);
      }
      const __m512 l0 = _mm512_cvtepi32_ps(n0), l1 = _mm512_cvtepi32_ps(n1);
      const __m512 h0 = _mm512_cvtepi32_ps(n2), h1 = _mm512_cvtepi32_ps(n3);
      const __m512 sl = _mm512_set1_ps(dl[2 * c]), sh = _mm512_set1_ps(dl[2 * c + 1]);
      for (std::size_t i = 0; i < N; ++i) {
        const float* xi = x + i * cols + b * 256 + 64 * c;
        const __m512 pl =
            _mm512_fmadd_ps(l1, _mm512_loadu_ps(xi + 16), _mm512_mul_ps(l0, _mm512_loadu_ps(xi)));
        const __m512 ph = _mm512_fmadd_ps(h1, _mm512_loadu_ps(xi + 48),
                                          _mm512_mul_ps(h0, _mm512_loadu_ps(xi + 32)));
        lo[i] = _mm512_fmadd_ps(sl, pl, lo[i]);
        hi[i] = _mm512_fmadd_ps(sh, ph, hi[i]);
      }
    }
    for (std::size_t i = 0; i < N; ++i)
      mins[i] = _mm256_fmadd_ps(ml, _mm256_loadu_ps(xsum + i * (cols / 32) + 8 * b), mins[i]);
  }
  for (std::size_t i = 0; i < N; ++i)
    acc[i] = _mm512_sub_ps(_mm512_add_ps(lo[i], hi[i]),
                           _mm512_maskz_mov_ps(0x00FF, _mm512_castps256_ps512(mins[i])));
  return blocks * 256;
}

template <bool kFifthBit, std::size_t... I>
constexpr auto q4_k_dots(std::index_sequence<I...>) noexcept {
  return std::array{&q4_k_dot<I + 1, kFifthBit>...};
}

// Q6_K rows in registers: a block's 6-bit values put together a half (128 values) at a
// time from its low nibbles and high bit pairs with byte operations, then per 16 values
// widened, converted and scaled as ggml's dequantization scales them (d * scale, times
// q - 32: the same float weights) and multiplied in, without a trip through L1.
template <std::size_t N>
std::size_t q6_k_dot(const std::byte* w, std::size_t cols, const float* x, __m512* acc) noexcept {
  static_assert(sizeof(quant::BlockQ6_K) == 210);
  const std::size_t blocks = cols / 256;
  const __m256i low4 = _mm256_set1_epi8(0x0F), bits45 = _mm256_set1_epi8(0x30);
  const __m256i bias = _mm256_set1_epi8(32);
  __m512 a0[N], a1[N];
  for (std::size_t i = 0; i < N; ++i) a0[i] = a1[i] = _mm512_setzero_ps();
  for (std::size_t b = 0; b < blocks; ++b) {
    const std::byte* p = w + b * sizeof(quant::BlockQ6_K);
    std::uint16_t half;
    std::memcpy(&half, p + offsetof(quant::BlockQ6_K, d), sizeof half);
    // The 16 group scales times d, as floats (each group of 16 values has one).
    alignas(64) float scale[16];
    _mm512_store_ps(scale, _mm512_mul_ps(_mm512_set1_ps(_cvtsh_ss(half)),
                                         _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(
                                             _mm_loadu_si128(reinterpret_cast<const __m128i*>(
                                                 p + offsetof(quant::BlockQ6_K, scales)))))));
    for (std::size_t h = 0; h < 2; ++h) {
      const auto* ql = reinterpret_cast<const __m256i*>(p + 64 * h);
      const __m256i l0 = _mm256_loadu_si256(ql), l1 = _mm256_loadu_si256(ql + 1);
      const __m256i hb = _mm256_loadu_si256(
          reinterpret_cast<const __m256i*>(p + offsetof(quant::BlockQ6_K, qh) + 32 * h));
      // Values 32k + l of the half: a low nibble of ql, bits 2k..2k+1 of qh as bits 4..5.
      const __m256i q[4] = {
          _mm256_sub_epi8(_mm256_or_si256(_mm256_and_si256(l0, low4),
                                          _mm256_and_si256(_mm256_slli_epi16(hb, 4), bits45)),
                          bias),
          _mm256_sub_epi8(_mm256_or_si256(_mm256_and_si256(l1, low4),
                                          _mm256_and_si256(_mm256_slli_epi16(hb, 2), bits45)),
                          bias),
          _mm256_sub_epi8(_mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l0, 4), low4),
                                          _mm256_and_si256(hb, bits45)),
                          bias),
          _mm256_sub_epi8(_mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4), low4),
                                          _mm256_and_si256(_mm256_srli_epi16(hb, 2), bits45)),
                          bias)};
      for (std::size_t k = 0; k < 4; ++k) {
        const std::size_t v = 128 * h + 32 * k;  // the first of these 32 values in the block
        const __m512 w0 =
            _mm512_mul_ps(_mm512_set1_ps(scale[v / 16]),
                          _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm256_castsi256_si128(q[k]))));
        const __m512 w1 = _mm512_mul_ps(
            _mm512_set1_ps(scale[v / 16 + 1]),
            _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm256_extracti128_si256(q[k], 1))));
        for (std::size_t i = 0; i < N; ++i) {
          const float* xi = x + i * cols + b * 256 + v;
          a0[i] = _mm512_fmadd_ps(w0, _mm512_loadu_ps(xi), a0[i]);
          a1[i] = _mm512_fmadd_ps(w1, _mm512_loadu_ps(xi + 16), a1[i]);
        }
      }
    }
  }
  for (std::size_t i = 0; i < N; ++i) acc[i] = _mm512_add_ps(a0[i], a1[i]);
  return blocks * 256;
}

template <std::size_t... I>
constexpr auto q6_k_dots(std::index_sequence<I...>) noexcept {
  return std::array{&q6_k_dot<I + 1>...};
}

// Every other ggml block: dequantized one block at a time into L1 (32 or 256 floats), then
// multiplied in like F32, the token count a constant and four chains per token (the
// blocks' vectors in turn), so the accumulators stay in registers.
template <std::size_t N>
std::size_t block_dot(DType dtype, const std::byte* w, std::size_t cols, const float* x,
                      __m512* acc) noexcept {
  const std::size_t per_block = dtype_block_elements(dtype);
  const std::size_t block_bytes = dtype_block_bytes(dtype);
  __m512 a[4][N];
  for (auto& chain : a)
    for (std::size_t i = 0; i < N; ++i) chain[i] = _mm512_setzero_ps();
  alignas(64) float blk[256];
  std::size_t k0 = 0;
  for (std::size_t b = 0; b < cols / per_block; ++b, k0 += per_block) {
    quant::dequantize_block(dtype, w + b * block_bytes, blk);
    for (std::size_t j = 0; j < per_block; j += 64) {  // 32-value blocks: two vectors
      for (std::size_t c = 0; c < 4 && j + 16 * c < per_block; ++c) {
        const __m512 wv = _mm512_load_ps(blk + j + 16 * c);
        for (std::size_t i = 0; i < N; ++i)
          a[c][i] = _mm512_fmadd_ps(wv, _mm512_loadu_ps(x + i * cols + k0 + j + 16 * c), a[c][i]);
      }
    }
  }
  for (std::size_t i = 0; i < N; ++i)
    acc[i] = _mm512_add_ps(_mm512_add_ps(a[0][i], a[1][i]), _mm512_add_ps(a[2][i], a[3][i]));
  return k0;
}

template <std::size_t... I>
constexpr auto block_dots(std::index_sequence<I...>) noexcept {
  return std::array{&block_dot<I + 1>...};
}

// half_dot<1..sizeof...(I), kBF16>, by token count - 1.
template <bool kBF16, std::size_t... I>
constexpr auto half_dots(std::index_sequence<I...>) noexcept {
  return std::array{&half_dot<I + 1, kBF16>...};
}
#endif

// y[i][r] = sum_k W[r][k] * x[i][k] for i < n <= kMaxFusedRows, converting W from its
// stored type as it is read (no scratch copy): the decode path, bound by memory bandwidth.
void fused_gemv(DType dtype, const std::byte* w, std::size_t rows, std::size_t cols, const float* x,
                std::size_t n, float* y, ComputeTeam& team) {
  const std::size_t rb = row_bytes(dtype, cols);
  team.run([&](unsigned t, unsigned members) {
    const auto [r_begin, r_end] = ComputeTeam::static_range(rows, t, members);
    const std::byte* stream_end = w + r_end * rb;  // of this share's rows
    thread_local std::vector<float> row;
    if (row.size() < cols) row.resize(cols);
#if defined(XLSHARE_AVX512_DECODE)
    // Q4_K's and Q5_K's sums of x, one per 32 values and token (q4_k_dot), made once for
    // all rows.
    thread_local std::vector<float> xsum;
    if (dtype == DType::kQ4_K || dtype == DType::kQ5_K) {
      const std::size_t per_token = cols / 32;
      if (xsum.size() < n * per_token) xsum.resize(n * per_token);
      for (std::size_t i = 0; i < n * per_token; ++i) {
        const float* xs = x + i * 32;  // token i / per_token, values (i % per_token) * 32..
        xsum[i] =
            _mm512_reduce_add_ps(_mm512_add_ps(_mm512_loadu_ps(xs), _mm512_loadu_ps(xs + 16)));
      }
    }
#endif
    for (std::size_t r = r_begin; r < r_end; ++r) {
      const std::byte* wr = w + r * rb;
      // The stream ahead (model/prefetch.hpp): F16 and BF16 rows, line by line inside the
      // loop below (measured better for them than a row at a time), the rest a row ahead.
#if defined(XLSHARE_AVX512_DECODE)
      const bool half = dtype == DType::kF16 || dtype == DType::kBF16;
#else
      constexpr bool half = false;
#endif
      if (!half) prefetch_next_rows(wr, rb, stream_end);
      float acc_s[kMaxFusedRows] = {};
      std::size_t k0 = 0;
#if defined(XLSHARE_AVX512_DECODE)
      __m512 acc[kMaxFusedRows];
      for (std::size_t i = 0; i < n; ++i) acc[i] = _mm512_setzero_ps();
      if (dtype == DType::kF16 || dtype == DType::kBF16) {
        const auto* h = reinterpret_cast<const std::uint16_t*>(wr);
        // The token count and the type as constants: the inner loops unrolled (decode's
        // n = 1 one load, convert and FMA per 16 values).
        static constexpr auto kF16 = half_dots<false>(std::make_index_sequence<kMaxFusedRows>{});
        static constexpr auto kBF16 = half_dots<true>(std::make_index_sequence<kMaxFusedRows>{});
        k0 = (dtype == DType::kBF16 ? kBF16 : kF16)[n - 1](h, cols, x, stream_end, acc);
      } else if (dtype == DType::kQ8_0) {
        static constexpr auto kQ8 = q8_0_dots(std::make_index_sequence<kMaxFusedRows>{});
        k0 = kQ8[n - 1](wr, cols, x, acc);
      } else if (dtype == DType::kQ4_K || dtype == DType::kQ5_K) {
        static constexpr auto kQ4K = q4_k_dots<false>(std::make_index_sequence<kMaxFusedRows>{});
        static constexpr auto kQ5K = q4_k_dots<true>(std::make_index_sequence<kMaxFusedRows>{});
        k0 = (dtype == DType::kQ5_K ? kQ5K : kQ4K)[n - 1](wr, cols, x, xsum.data(), acc);
      } else if (dtype == DType::kQ6_K) {
        static constexpr auto kQ6K = q6_k_dots(std::make_index_sequence<kMaxFusedRows>{});
        k0 = kQ6K[n - 1](wr, cols, x, acc);
      } else if (dtype_is_quantized(dtype)) {
        static constexpr auto kBlocks = block_dots(std::make_index_sequence<kMaxFusedRows>{});
        k0 = kBlocks[n - 1](dtype, wr, cols, x, acc);
      }
      for (std::size_t i = 0; i < n; ++i) acc_s[i] = _mm512_reduce_add_ps(acc[i]);
#endif
      if (k0 < cols) {  // the tail, or everything without AVX-512
        to_f32(dtype, wr, row.data(), cols);
        for (std::size_t i = 0; i < n; ++i) {
          float s = 0;
          for (std::size_t k = k0; k < cols; ++k) s += row[k] * x[i * cols + k];
          acc_s[i] += s;
        }
      }
      for (std::size_t i = 0; i < n; ++i) y[i * rows + r] = acc_s[i];
    }
  });
}

// --- llama.cpp's rounding (AttentionNumerics::kGgmlF16) -----------------------------------
// What ggml does on a CPU with an F16 KV cache and flash attention off, reproduced
// operation for operation where a last-bit difference would flip an F16 rounding: matrix
// products summed as tinyBLAS (llamafile_sgemm) sums them (16 lanes, lane l taking elements
// l, l+16, ... with one FMA each, then the lanes folded in halves), keys and values rounded
// to F16 as they are stored, queries and softmax weights rounded to F16 before their
// products, the softmax summed in double.

float round_f16(float f) noexcept { return static_cast<float>(Eigen::half(f)); }

constexpr std::size_t kGgmlLanes = 16;

float fold_lanes(float* lanes) noexcept {
  for (std::size_t width = kGgmlLanes / 2; width >= 1; width /= 2)
    for (std::size_t l = 0; l < width; ++l) lanes[l] += lanes[l + width];
  return lanes[0];
}

// sum_k x[k] * y[k] in tinyBLAS's order.
float ggml_dot(const float* x, const float* y, std::size_t n) noexcept {
  float lanes[kGgmlLanes] = {};
  std::size_t k = 0;
  for (; k + kGgmlLanes <= n; k += kGgmlLanes)
    for (std::size_t l = 0; l < kGgmlLanes; ++l) lanes[l] = std::fma(x[k + l], y[k + l], lanes[l]);
  for (; k < n; ++k) lanes[k % kGgmlLanes] = std::fma(x[k], y[k], lanes[k % kGgmlLanes]);
  return fold_lanes(lanes);
}

// y[i][r] = sum_k W[r][k] * x[i][k], each row of W converted to float first (ggml's own
// dequantization), every sum in tinyBLAS's order.
void ggml_order_gemm(DType dtype, const std::byte* w, std::size_t rows, std::size_t cols,
                     const float* x, std::size_t n, float* y, ComputeTeam& team) {
  const std::size_t rb = row_bytes(dtype, cols);
  team.run([&](unsigned t, unsigned members) {
    thread_local std::vector<float> row;
    if (row.size() < cols) row.resize(cols);
    const auto [r_begin, r_end] = ComputeTeam::static_range(rows, t, members);
    for (std::size_t r = r_begin; r < r_end; ++r) {
      to_f32(dtype, w + r * rb, row.data(), cols);
      for (std::size_t i = 0; i < n; ++i)
        y[i * rows + r] = ggml_dot(row.data(), x + i * cols, cols);
    }
  });
}

// One query row's attention over positions 0..visible-1: `at(t)` gives position t's key
// and value (F16 values held as float). `scratch` holds hd + 16 + visible floats.
template <typename At>
void ggml_f16_attend(const float* q, std::size_t hd, std::size_t visible, float scale, At&& at,
                     float* scratch, float* out) noexcept {
  float* qh = scratch;
  float* lanes = scratch + hd;
  float* w = lanes + kGgmlLanes;
  for (std::size_t d = 0; d < hd; ++d) qh[d] = round_f16(q[d]);
  float m = -std::numeric_limits<float>::infinity();
  for (std::size_t t = 0; t < visible; ++t) {
    w[t] = ggml_dot(at(t).first, qh, hd) * scale;
    m = std::max(m, w[t]);
  }
  double sum = 0;
  for (std::size_t t = 0; t < visible; ++t) {
    w[t] = std::exp(w[t] - m);
    sum += w[t];
  }
  const float inv = static_cast<float>(1.0 / sum);
  for (std::size_t t = 0; t < visible; ++t) w[t] = round_f16(w[t] * inv);
  // out = W V, V stored transposed in ggml (a position's values are one column): lane l
  // takes positions l, l+16, ...
  for (std::size_t d = 0; d < hd; ++d) {
    std::fill_n(lanes, kGgmlLanes, 0.0f);
    for (std::size_t t = 0; t < visible; ++t)
      lanes[t % kGgmlLanes] = std::fma(w[t], at(t).second[d], lanes[t % kGgmlLanes]);
    out[d] = fold_lanes(lanes);
  }
}

}  // namespace

void Executor::matmul(std::span<const std::byte> w, DType dtype, std::size_t rows, std::size_t cols,
                      const float* x, std::size_t n, float* y) {
  Eigen::Map<const RowMat> X(x, static_cast<Eigen::Index>(n), static_cast<Eigen::Index>(cols));
  Eigen::Map<RowMat> Y(y, static_cast<Eigen::Index>(n), static_cast<Eigen::Index>(rows));
  const std::size_t threads = team_->size();
  const std::size_t rb = row_bytes(dtype, cols);
  if (options_.attention == AttentionNumerics::kGgmlF16 && !options_.quantized_activations) {
    ggml_order_gemm(dtype, w.data(), rows, cols, x, n, y, *team_);
    return;
  }
  if (dtype == DType::kF32) {
    const auto* W = reinterpret_cast<const float*>(w.data());
    team_->run([&](unsigned t, unsigned members) {
      const auto [r0, r1] = ComputeTeam::static_range(rows, t, members);
      if (r0 >= r1) return;
      Eigen::Map<const RowMat> Wt(W + r0 * cols, static_cast<Eigen::Index>(r1 - r0),
                                  static_cast<Eigen::Index>(cols));
      Y.middleCols(static_cast<Eigen::Index>(r0), static_cast<Eigen::Index>(r1 - r0)).noalias() =
          X * Wt.transpose();
    });
    return;
  }
  if (options_.quantized_activations && quant::has_int_dot(dtype, cols)) {
    int_products(w.data(), dtype, rows, cols, quantize_activations(dtype, x, n, cols), n, y, rows);
    return;
  }
  if (n <= kMaxFusedRows) {
    fused_gemv(dtype, w.data(), rows, cols, x, n, y, *team_);
    return;
  }
  // Converted in tiles of rows as they are used: large tiles (up to 2 MiB of F32) keep the
  // GEMMs efficient, and at least two tiles per thread keep the threads balanced.
  const std::size_t by_bytes =
      std::max<std::size_t>(1, (512u * 1024) / std::max<std::size_t>(cols, 1));
  const std::size_t by_threads = std::max<std::size_t>(1, (rows + 2 * threads - 1) / (2 * threads));
  const std::size_t tile = std::min(by_bytes, by_threads);
  const std::size_t tiles = (rows + tile - 1) / tile;
  team_->run([&](unsigned t, unsigned members) {
    // Per-thread scratch that outlives the call: no allocation (and no page faults) per
    // matmul once warm.
    thread_local std::vector<float> buf;
    if (buf.size() < tile * cols) buf.resize(tile * cols);
    const auto [ti_begin, ti_end] = ComputeTeam::static_range(tiles, t, members);
    for (std::size_t ti = ti_begin; ti < ti_end; ++ti) {
      const std::size_t r0 = ti * tile;
      const std::size_t r1 = std::min(rows, r0 + tile);
      to_f32(dtype, w.data() + r0 * rb, buf.data(), (r1 - r0) * cols);
      Eigen::Map<const RowMat> Wt(buf.data(), static_cast<Eigen::Index>(r1 - r0),
                                  static_cast<Eigen::Index>(cols));
      Y.middleCols(static_cast<Eigen::Index>(r0), static_cast<Eigen::Index>(r1 - r0)).noalias() =
          X * Wt.transpose();
    }
  });
}

const std::byte* Executor::quantize_activations(DType dtype, const float* x, std::size_t n,
                                                std::size_t cols) {
  // 64-byte aligned blocks in buf_.act, used by every row (and every piece) of W.
  const std::size_t stride = quant::act_row_bytes(dtype, cols);
  std::vector<std::byte>& raw = buf_.act;
  if (raw.size() < n * stride + 64) raw.resize(n * stride + 64);
  std::byte* act = raw.data() + (64 - reinterpret_cast<std::uintptr_t>(raw.data()) % 64) % 64;
  team_->run([&](unsigned t, unsigned members) {
    const auto [i0, i1] = ComputeTeam::static_range(n, t, members);
    for (std::size_t i = i0; i < i1; ++i)
      quant::quantize_activations(dtype, x + i * cols, cols, act + i * stride);
  });
  return act;
}

void Executor::int_products(const std::byte* w, DType dtype, std::size_t rows, std::size_t cols,
                            const std::byte* act, std::size_t n, float* y, std::size_t y_stride) {
  const std::size_t rb = row_bytes(dtype, cols);
  const std::size_t stride = quant::act_row_bytes(dtype, cols);
  team_->run([&](unsigned t, unsigned members) {
    const auto [r0, r1] = ComputeTeam::static_range(rows, t, members);
    if (r0 < r1)
      quant::int_dot(dtype, w + r0 * rb, r1 - r0, act, stride, n, cols, y + r0, y_stride);
  });
}

void Executor::matmul_weight(std::size_t index, std::size_t rows, std::size_t cols, const float* x,
                             std::size_t n, float* y) {
  const TensorDesc& d = model_.tensors()[index];
  const std::size_t pieces = std::max<std::size_t>(1, std::min(weights_.piece_count(index), rows));
  if (pieces == 1) {
    WeightHandle w = weights_.acquire(index);
    matmul(w.bytes(), d.dtype, rows, cols, x, n, y);
    return;
  }
  // Pieces hold whole rows in order, as many as their bytes: compute those columns of Y,
  // then write them into place.
  const std::size_t rb = row_bytes(d.dtype, cols);
  std::vector<float>& part = buf_.piece;
  // Integer products: the activations are quantized once for all pieces, and each piece's
  // columns are written in place.
  const std::byte* act = options_.quantized_activations && quant::has_int_dot(d.dtype, cols)
                             ? quantize_activations(d.dtype, x, n, cols)
                             : nullptr;
  std::size_t r0 = 0;
  for (std::size_t p = 0; p < pieces && r0 < rows; ++p) {
    WeightHandle w = weights_.acquire_piece(index, p);
    const std::size_t piece_rows = rb == 0 ? 0 : w.bytes().size() / rb;
    if (piece_rows == 0 || piece_rows * rb != w.bytes().size() || piece_rows > rows - r0) {
      throw ConfigError(fmt::format(
          "tensor '{}': piece {} of {} holds {} bytes, not whole rows within its {} rows", d.name,
          p, pieces, w.bytes().size(), rows));
    }
    const std::size_t r1 = r0 + piece_rows;
    if (act != nullptr) {
      int_products(w.bytes().data(), d.dtype, piece_rows, cols, act, n, y + r0, rows);
      r0 = r1;
      continue;
    }
    sized(part, n * (r1 - r0));
    matmul(w.bytes(), d.dtype, r1 - r0, cols, x, n, part.data());
    for (std::size_t i = 0; i < n; ++i)
      std::copy_n(part.data() + i * (r1 - r0), r1 - r0, y + i * rows + r0);
    r0 = r1;
  }
  if (r0 != rows) {
    throw ConfigError(
        fmt::format("tensor '{}': its {} pieces hold {} of its {} rows", d.name, pieces, r0, rows));
  }
}

void Executor::rms_norm(const float* x, std::span<const std::byte> w, DType dtype, std::size_t n,
                        float* y) {
  const std::size_t dim = model_.config().dim;
  std::vector<float>& weight = sized(buf_.norm_weight, dim);
  to_f32(dtype, w.data(), weight.data(), dim);
  const double eps = model_.config().norm_eps;
  if (options_.attention == AttentionNumerics::kGgmlF16) {
    // ggml's rms_norm: float squares summed in double, the scale in float.
    for (std::size_t i = 0; i < n; ++i) {
      const float* xi = x + i * dim;
      double ss = 0;
      for (std::size_t d = 0; d < dim; ++d) ss += static_cast<double>(xi[d] * xi[d]);
      const float mean = static_cast<float>(ss / static_cast<double>(dim));
      const float scale = 1.0f / std::sqrt(mean + static_cast<float>(eps));
      for (std::size_t d = 0; d < dim; ++d) y[i * dim + d] = xi[d] * scale * weight[d];
    }
    return;
  }
  for (std::size_t i = 0; i < n; ++i) {
    const float* xi = x + i * dim;
    double ss = 0;
    for (std::size_t d = 0; d < dim; ++d) ss += static_cast<double>(xi[d]) * xi[d];
    const float scale = static_cast<float>(1.0 / std::sqrt(ss / static_cast<double>(dim) + eps));
    for (std::size_t d = 0; d < dim; ++d) y[i * dim + d] = xi[d] * scale * weight[d];
  }
}

void Executor::forward(std::span<const std::int32_t> tokens, KvCache& kv,
                       std::vector<float>& logits, bool all_logits) {
  Segment segment{tokens, &kv, all_logits, &logits};
  forward_batch(std::span(&segment, 1));
}

void Executor::forward_batch(std::span<Segment> segments) {
  const LlamaConfig& c = model_.config();
  // Check everything before changing anything.
  std::size_t n = 0;
  for (std::size_t s = 0; s < segments.size(); ++s) {
    const Segment& seg = segments[s];
    if (seg.kv == nullptr || seg.logits == nullptr)
      throw ConfigError("forward: a segment lacks its KV cache or logits");
    for (std::size_t o = 0; o < s; ++o) {
      if (segments[o].kv == seg.kv) throw ConfigError("forward: two segments share one KV cache");
    }
    if (seg.kv->size_ + seg.tokens.size() > seg.kv->capacity_) {
      throw ConfigError(fmt::format("KV cache full: {} + {} tokens exceed its {}", seg.kv->size_,
                                    seg.tokens.size(), seg.kv->capacity_));
    }
    if (seg.kv->row_ != c.n_kv_heads * c.head_dim || seg.kv->layers_ != c.n_layers)
      throw ConfigError("forward: a KV cache made for another model shape");
    for (auto t : seg.tokens) {
      if (t < 0 || static_cast<std::uint32_t>(t) >= c.vocab) {
        throw ConfigError(
            fmt::format("token {} is outside the vocabulary (0..{})", t, c.vocab - 1));
      }
    }
    n += seg.tokens.size();
  }
  // Blocks for the new tokens (a caller may have taken them); those taken here go back if
  // the pass fails, so a failed pass leaves every cache as it was.
  std::vector<std::size_t> held(segments.size());
  for (std::size_t s = 0; s < segments.size(); ++s) held[s] = segments[s].kv->blocks_held();
  struct GiveBack {
    std::span<Segment> segments;
    const std::vector<std::size_t>& held;
    bool done = false;
    ~GiveBack() {
      if (done) return;
      for (std::size_t s = 0; s < segments.size(); ++s) {
        if (segments[s].kv->blocks_held() > held[s]) segments[s].kv->release_unused();
      }
    }
  } give_back{segments, held};
  for (auto& seg : segments) {
    if (!seg.kv->reserve(static_cast<std::uint32_t>(seg.tokens.size()))) {
      throw ConfigError(fmt::format("KV cache: its block pool has no room for {} more tokens",
                                    seg.tokens.size()));
    }
  }
  if (n == 0) {
    for (auto& seg : segments) seg.logits->clear();
    return;
  }
  const std::size_t dim = c.dim, hd = c.head_dim, H = c.n_heads, KV = c.n_kv_heads, F = c.ffn_dim;
  const std::size_t q_dim = H * hd, kv_dim = KV * hd, group = H / KV;
  const auto& tensors = model_.tensors();
  auto desc = [&](std::size_t i) -> const TensorDesc& { return tensors[i]; };

  // Row r of the batch belongs to segment seg_of[r], at position pos_of[r].
  std::vector<std::size_t> first_row(segments.size()), seg_of(n), pos_of(n);
  for (std::size_t s = 0, r = 0; s < segments.size(); ++s) {
    first_row[s] = r;
    for (std::size_t i = 0; i < segments[s].tokens.size(); ++i, ++r) {
      seg_of[r] = s;
      pos_of[r] = segments[s].kv->size_ + i;
    }
  }

  std::vector<float>& x = sized(buf_.x, n * dim);
  std::vector<float>& xn = sized(buf_.xn, n * dim);
  std::vector<float>& q = sized(buf_.q, n * q_dim);
  std::vector<float>& k = sized(buf_.k, n * kv_dim);
  std::vector<float>& v = sized(buf_.v, n * kv_dim);
  std::vector<float>& att = sized(buf_.att, n * q_dim);
  std::vector<float>& tmp = sized(buf_.tmp, n * dim);
  std::vector<float>& gate = sized(buf_.gate, n * F);
  std::vector<float>& up = sized(buf_.up, n * F);

  // Embedding.
  weights_.begin_step(0);
  {
    std::vector<std::uint32_t> rows(n);
    for (std::size_t r = 0; r < n; ++r) {
      rows[r] = static_cast<std::uint32_t>(segments[seg_of[r]].tokens[r - first_row[seg_of[r]]]);
    }
    weights_.read_rows(model_.token_embd(), desc(model_.token_embd()), rows, x.data());
  }
  weights_.end_step(0);

  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  // The rotation of every row's position, computed once for all layers and heads.
  std::vector<float>& rot = sized(buf_.rope, n * hd);
  const bool ggml_f16 = options_.attention == AttentionNumerics::kGgmlF16;
  for (std::size_t r = 0; r < n && ggml_f16; ++r) {
    // ggml's rope cache: the angle advanced in float by one factor per pair.
    const float theta_scale =
        std::pow(static_cast<float>(c.rope_theta), -2.0f / static_cast<float>(hd));
    float theta = static_cast<float>(pos_of[r]);
    for (std::size_t j = 0; j < hd / 2; ++j) {
      rot[r * hd + 2 * j] = std::cos(theta);
      rot[r * hd + 2 * j + 1] = std::sin(theta);
      theta *= theta_scale;
    }
  }
  for (std::size_t r = 0; r < n && !ggml_f16; ++r) {
    const double pos = static_cast<double>(pos_of[r]);
    for (std::size_t j = 0; j < hd / 2; ++j) {
      const double theta = pos * inv_freq_[j];
      rot[r * hd + 2 * j] = static_cast<float>(std::cos(theta));
      rot[r * hd + 2 * j + 1] = static_cast<float>(std::sin(theta));
    }
  }
  auto rope = [&](float* rows, std::size_t heads, std::size_t stride) {
    for (std::size_t r = 0; r < n; ++r) {
      const float* cs_sn = rot.data() + r * hd;
      for (std::size_t h = 0; h < heads; ++h) {
        float* p = rows + r * stride + h * hd;
        for (std::size_t j = 0; j < hd / 2; ++j) {
          const float cs = cs_sn[2 * j], sn = cs_sn[2 * j + 1];
          const float a = p[2 * j], b = p[2 * j + 1];
          // Each product rounded before the sum, as ggml does.
          p[2 * j] = rounded(a * cs) - rounded(b * sn);
          p[2 * j + 1] = rounded(a * sn) + rounded(b * cs);
        }
      }
    }
  };

  const std::size_t work = segments.size() * H;  // (segment, head) pairs of attention
  for (std::size_t l = 0; l < c.n_layers; ++l) {
    const LlamaModel::Layer& L = model_.layer(l);
    weights_.begin_step(1 + l);
    {
      WeightHandle w = weights_.acquire(L.attn_norm);
      rms_norm(x.data(), w.bytes(), desc(L.attn_norm).dtype, n, xn.data());
    }
    matmul_weight(L.wq, q_dim, dim, xn.data(), n, q.data());
    matmul_weight(L.wk, kv_dim, dim, xn.data(), n, k.data());
    matmul_weight(L.wv, kv_dim, dim, xn.data(), n, v.data());
    rope(q.data(), H, q_dim);
    rope(k.data(), KV, kv_dim);
    for (std::size_t s = 0; s < segments.size(); ++s) {
      KvCache& kv = *segments[s].kv;
      const std::size_t rows = segments[s].tokens.size();
      for (std::size_t i = 0; i < rows; ++i) {
        const std::size_t pos = std::size_t{kv.size_} + i;
        std::copy_n(k.data() + (first_row[s] + i) * kv_dim, kv_dim, kv.key(l, pos));
        std::copy_n(v.data() + (first_row[s] + i) * kv_dim, kv_dim, kv.value(l, pos));
        if (ggml_f16) {
          std::transform(kv.key(l, pos), kv.key(l, pos) + kv_dim, kv.key(l, pos), round_f16);
          std::transform(kv.value(l, pos), kv.value(l, pos) + kv_dim, kv.value(l, pos), round_f16);
        }
      }
    }
    std::atomic<std::size_t> next_item{0};  // a dynamic schedule: heads differ in cost
    team_->run([&](unsigned, unsigned) {
      for (std::size_t item = next_item.fetch_add(1, std::memory_order_relaxed); item < work;
           item = next_item.fetch_add(1, std::memory_order_relaxed)) {
        const std::size_t s = item / H, h = item % H, g = h / group;
        const Segment& seg = segments[s];
        const std::size_t rows = seg.tokens.size();
        if (rows == 0) continue;
        KvCache& kv = *seg.kv;
        const std::size_t p0 = kv.size_, T = p0 + rows, B = kv.block_tokens_;
        if (ggml_f16) {
          thread_local std::vector<float> scratch;
          if (scratch.size() < hd + 16 + T) scratch.resize(hd + 16 + T);
          const auto at = [&](std::size_t t) {
            return std::pair<const float*, const float*>(kv.key(l, t) + g * hd,
                                                         kv.value(l, t) + g * hd);
          };
          for (std::size_t i = 0; i < rows; ++i) {
            const std::size_t row = first_row[s] + i;
            ggml_f16_attend(q.data() + row * q_dim + h * hd, hd, p0 + i + 1, scale, at,
                            scratch.data(), att.data() + row * q_dim + h * hd);
          }
          continue;
        }
        // The positions' keys and values lie in blocks of B tokens: one product per block.
        const auto block = [&](float* at, std::size_t len) {
          return Eigen::Map<const RowMat, 0, Stride>(at + g * hd, static_cast<Eigen::Index>(len),
                                                     static_cast<Eigen::Index>(hd),
                                                     Stride(static_cast<Eigen::Index>(kv_dim)));
        };
        Eigen::Map<const RowMat, 0, Stride> Qh(
            q.data() + first_row[s] * q_dim + h * hd, static_cast<Eigen::Index>(rows),
            static_cast<Eigen::Index>(hd), Stride(static_cast<Eigen::Index>(q_dim)));
        RowMat S(static_cast<Eigen::Index>(rows), static_cast<Eigen::Index>(T));
        for (std::size_t t0 = 0; t0 < T; t0 += B) {
          const std::size_t len = std::min(B, T - t0);
          S.middleCols(static_cast<Eigen::Index>(t0), static_cast<Eigen::Index>(len)).noalias() =
              (Qh * block(kv.key(l, t0), len).transpose()) * scale;
        }
        for (std::size_t i = 0; i < rows; ++i) {
          const std::size_t visible = p0 + i + 1;  // causal: positions 0 .. p0+i
          float m = -std::numeric_limits<float>::infinity();
          for (std::size_t j = 0; j < visible; ++j)
            m = std::max(m, S(static_cast<Eigen::Index>(i), static_cast<Eigen::Index>(j)));
          double sum = 0;
          for (std::size_t j = 0; j < T; ++j) {
            float& e = S(static_cast<Eigen::Index>(i), static_cast<Eigen::Index>(j));
            e = j < visible ? std::exp(e - m) : 0.0f;
            sum += e;
          }
          S.row(static_cast<Eigen::Index>(i)) *= static_cast<float>(1.0 / sum);
        }
        Eigen::Map<RowMat, 0, Stride> Oh(
            att.data() + first_row[s] * q_dim + h * hd, static_cast<Eigen::Index>(rows),
            static_cast<Eigen::Index>(hd), Stride(static_cast<Eigen::Index>(q_dim)));
        Oh.setZero();
        for (std::size_t t0 = 0; t0 < T; t0 += B) {
          const std::size_t len = std::min(B, T - t0);
          Oh.noalias() +=
              S.middleCols(static_cast<Eigen::Index>(t0), static_cast<Eigen::Index>(len)) *
              block(kv.value(l, t0), len);
        }
      }
    });
    matmul_weight(L.wo, dim, q_dim, att.data(), n, tmp.data());
    for (std::size_t i = 0; i < n * dim; ++i) x[i] += tmp[i];
    {
      WeightHandle w = weights_.acquire(L.ffn_norm);
      rms_norm(x.data(), w.bytes(), desc(L.ffn_norm).dtype, n, xn.data());
    }
    matmul_weight(L.w_gate, F, dim, xn.data(), n, gate.data());
    matmul_weight(L.w_up, F, dim, xn.data(), n, up.data());
    for (std::size_t i = 0; i < n * F; ++i) {
      const float g = gate[i];
      gate[i] = g / (1.0f + std::exp(-g)) * up[i];
    }
    matmul_weight(L.w_down, dim, F, gate.data(), n, tmp.data());
    for (std::size_t i = 0; i < n * dim; ++i) x[i] += tmp[i];
    weights_.end_step(1 + l);
  }
  for (auto& seg : segments) seg.kv->size_ += static_cast<std::uint32_t>(seg.tokens.size());

  // Head: only the rows whose logits are wanted, all segments in one product.
  std::vector<std::size_t> wanted;
  for (std::size_t s = 0; s < segments.size(); ++s) {
    const std::size_t rows = segments[s].tokens.size();
    if (rows == 0) continue;
    for (std::size_t i = segments[s].all_logits ? 0 : rows - 1; i < rows; ++i)
      wanted.push_back(first_row[s] + i);
  }
  weights_.begin_step(c.n_layers + 1);
  std::vector<float>& picked = sized(buf_.picked, wanted.size() * dim);
  std::vector<float>& out = sized(buf_.out, wanted.size() * c.vocab);
  for (std::size_t i = 0; i < wanted.size(); ++i)
    std::copy_n(x.data() + wanted[i] * dim, dim, picked.data() + i * dim);
  {
    WeightHandle w = weights_.acquire(model_.output_norm());
    rms_norm(picked.data(), w.bytes(), desc(model_.output_norm()).dtype, wanted.size(), xn.data());
  }
  matmul_weight(model_.output(), c.vocab, dim, xn.data(), wanted.size(), out.data());
  weights_.end_step(c.n_layers + 1);
  give_back.done = true;
  std::size_t next = 0;
  for (auto& seg : segments) {
    const std::size_t rows = seg.tokens.empty() ? 0 : (seg.all_logits ? seg.tokens.size() : 1);
    seg.logits->assign(out.begin() + static_cast<long>(next * c.vocab),
                       out.begin() + static_cast<long>((next + rows) * c.vocab));
    next += rows;
  }
}

}  // namespace xlshare
