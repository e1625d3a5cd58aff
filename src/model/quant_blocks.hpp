// llama.cpp's quantized block layouts (ggml-common.h) and their dequantization to float,
// one block at a time, in the order and with the arithmetic ggml's dequantize_row_* use:
// these are the weights of the "exact" mode, whose reference is the dequantized model.
//
// Every block is read through memcpy into a struct of bytes (no alignment assumed: pool
// extents and file offsets need not align a 210-byte Q6_K block).
#pragma once

#include <cstdint>
#include <cstring>

#include "xlshare/dtype.hpp"
#include "xlshare/model/dtype_convert.hpp"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace xlshare::quant {

constexpr int kQK = 32;     // values per block of Q4_0 .. Q8_0
constexpr int kQK_K = 256;  // values per block of the K family

struct BlockQ4_0 {
  std::uint16_t d;
  std::uint8_t qs[kQK / 2];
};
struct BlockQ4_1 {
  std::uint16_t d, m;
  std::uint8_t qs[kQK / 2];
};
struct BlockQ5_0 {
  std::uint16_t d;
  std::uint8_t qh[4];
  std::uint8_t qs[kQK / 2];
};
struct BlockQ5_1 {
  std::uint16_t d, m;
  std::uint8_t qh[4];
  std::uint8_t qs[kQK / 2];
};
struct BlockQ2_K {
  std::uint8_t scales[kQK_K / 16];  // low nibble scale, high nibble min
  std::uint8_t qs[kQK_K / 4];
  std::uint16_t d, dmin;
};
struct BlockQ3_K {
  std::uint8_t hmask[kQK_K / 8];
  std::uint8_t qs[kQK_K / 4];
  std::uint8_t scales[12];  // 16 6-bit scales
  std::uint16_t d;
};
struct BlockQ4_K {
  std::uint16_t d, dmin;
  std::uint8_t scales[12];  // 8 6-bit scales and 8 6-bit mins
  std::uint8_t qs[kQK_K / 2];
};
struct BlockQ5_K {
  std::uint16_t d, dmin;
  std::uint8_t scales[12];
  std::uint8_t qh[kQK_K / 8];
  std::uint8_t qs[kQK_K / 2];
};
struct BlockQ6_K {
  std::uint8_t ql[kQK_K / 2];
  std::uint8_t qh[kQK_K / 4];
  std::int8_t scales[kQK_K / 16];
  std::uint16_t d;
};
static_assert(sizeof(BlockQ4_0) == 18 && sizeof(BlockQ4_1) == 20 && sizeof(BlockQ5_0) == 22 &&
              sizeof(BlockQ5_1) == 24);
static_assert(sizeof(BlockQ2_K) == 84 && sizeof(BlockQ3_K) == 110 && sizeof(BlockQ4_K) == 144 &&
              sizeof(BlockQ5_K) == 176 && sizeof(BlockQ6_K) == 210);

template <typename Block>
inline Block load(const std::byte* p) noexcept {
  Block b;
  std::memcpy(&b, p, sizeof b);
  return b;
}

/// The 6-bit scale and min `j` (0..7) of a Q4_K/Q5_K block (ggml's get_scale_min_k4).
inline void scale_min_k4(int j, const std::uint8_t* q, std::uint8_t& d, std::uint8_t& m) noexcept {
  if (j < 4) {
    d = q[j] & 63;
    m = q[j + 4] & 63;
  } else {
    d = static_cast<std::uint8_t>((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4));
    m = static_cast<std::uint8_t>((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
  }
}

#if defined(__x86_64__)
/// All 8 6-bit scales and 8 6-bit mins of a Q4_K/Q5_K block (scale_min_k4's layout, the 12
/// bytes at `packed`) in one vector: bytes 0..7 the scales, 8..15 the mins. In the packed
/// form bytes 0..3 hold scales 0..3 (low 6 bits) and the top bits of scales 4..7, bytes
/// 4..7 the mins 0..3 and the top bits of mins 4..7, bytes 8..11 the low nibbles of both.
/// Built in registers: four 32-bit stores read back as one 16-byte load would miss store
/// forwarding (a stall a block, a quarter of the Q4_K kernels' time in decode).
inline __m128i scales_mins_k4(const std::byte* packed) noexcept {
  std::uint32_t u[3];
  std::memcpy(u, packed, sizeof u);
  constexpr std::uint32_t k6 = 0x3f3f3f3f, k4 = 0x0f0f0f0f, k2 = 0x03030303;
  const std::uint32_t mins_hi = ((u[2] >> 4) & k4) | (((u[1] >> 6) & k2) << 4);
  const std::uint32_t scales_hi = (u[2] & k4) | (((u[0] >> 6) & k2) << 4);
  return _mm_set_epi32(static_cast<int>(mins_hi), static_cast<int>(u[1] & k6),
                       static_cast<int>(scales_hi), static_cast<int>(u[0] & k6));
}
#endif

/// The 16 signed 6-bit scales of a Q3_K block, unpacked (ggml's kmask shuffle).
inline void q3_k_scales(const std::uint8_t* packed, std::int8_t* out) noexcept {
  constexpr std::uint32_t kmask1 = 0x03030303, kmask2 = 0x0f0f0f0f;
  std::uint32_t aux[4];
  std::memcpy(aux, packed, 12);
  const std::uint32_t tmp = aux[2];
  aux[2] = ((aux[0] >> 4) & kmask2) | (((tmp >> 4) & kmask1) << 4);
  aux[3] = ((aux[1] >> 4) & kmask2) | (((tmp >> 6) & kmask1) << 4);
  aux[0] = (aux[0] & kmask2) | (((tmp >> 0) & kmask1) << 4);
  aux[1] = (aux[1] & kmask2) | (((tmp >> 2) & kmask1) << 4);
  std::memcpy(out, aux, 16);
}

/// Dequantizes one block of `type` (a quantized type) at `src` into
/// dtype_block_elements(type) floats at `y`.
void dequantize_block(DType type, const std::byte* src, float* y) noexcept;

/// dequantize_block with the portable code whatever the CPU (dequantize_block takes
/// AVX-512 for Q4_K and Q6_K where the CPU has it): bit for bit the same values.
void dequantize_block_portable(DType type, const std::byte* src, float* y) noexcept;

/// Quantizes 256 floats into one Q4_K block: per 32 values a scale and minimum from their
/// range, both as 6-bit multiples of the block's F16 d and dmin (a direct rounding, not
/// ggml's iterative search: valid blocks of the same size, slightly less accurate).
void quantize_q4_k(const float* x, std::byte* out) noexcept;
/// Quantizes 256 floats into one Q6_K block: per 16 values an int8 multiple of d.
void quantize_q6_k(const float* x, std::byte* out) noexcept;

}  // namespace xlshare::quant
