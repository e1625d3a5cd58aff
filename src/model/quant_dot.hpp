// The quantized-activation mode (ExecutorOptions::quantized_activations): the decode
// products of Q8_0, Q4_K and Q6_K weights as integer dot products against activations
// quantized to 8 bits, as llama.cpp computes them (its Q8_0 and Q8_K activation blocks),
// instead of converting every weight to float. Faster, and no longer exactly the
// dequantized model: its reference is llama.cpp's own run of the file (within 2e-2).
//
// Each product has a portable scalar version, an AVX2 one and an AVX-512 VNNI one, chosen once at
// run
// time from what the CPU reports (so a binary built for any x86-64 uses VNNI where it is).
// Without VNNI, AVX2; elsewhere portable C++.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>

#include "xlshare/dtype.hpp"

namespace xlshare::quant {

/// 256 activations as int8 with one float scale (x ~ d * qs) and sums of the int8 values:
/// for Q4_K weights per 32 values (bsums[0..7]) with qs in the order of Q4_K's nibbles
/// (sub-blocks 0,2,1,3,4,6,5,7), for Q6_K per 16 values (bsums[0..15]) in natural order.
struct ActQ8K {
  float d;
  std::int32_t bsums[16];
  alignas(64) std::int8_t qs[256];
};

/// 64 activations (two Q8_0 blocks) as int8, each block with its float scale repeated
/// over the 8 lanes its products land in (x ~ d * qs), for Q8_0 weights.
struct ActQ8_0x2 {
  alignas(64) std::int8_t qs[64];
  float d[16];
};

/// True when rows of `cols` values stored as `weights` have an integer product: Q4_K and
/// Q6_K, and Q8_0 rows of whole pairs of blocks (a multiple of 64 values).
bool has_int_dot(DType weights, std::size_t cols) noexcept;

/// Bytes of activation blocks one row of `cols` values needs for `weights`.
std::size_t act_row_bytes(DType weights, std::size_t cols) noexcept;

/// Quantizes one row of `cols` activations for products with `weights` into `out`
/// (act_row_bytes bytes, 64-byte aligned).
void quantize_activations(DType weights, const float* x, std::size_t cols, std::byte* out) noexcept;

/// The products of `rows` weight rows (at w, each `cols` values stored as `weights`,
/// row_bytes apart) with `n` quantized activation rows (row i at act + i * act_stride):
/// y[i * y_stride + r].
void int_dot(DType weights, const std::byte* w, std::size_t rows, const std::byte* act,
             std::size_t act_stride, std::size_t n, std::size_t cols, float* y,
             std::size_t y_stride) noexcept;

/// int_dot with one kernel set: "scalar" (portable), "avx2" or "avx512-vnni". False when
/// this CPU cannot run it. The tests hold each to the portable one.
bool int_dot_with(std::string_view isa, DType weights, const std::byte* w, std::size_t rows,
                  const std::byte* act, std::size_t act_stride, std::size_t n, std::size_t cols,
                  float* y, std::size_t y_stride) noexcept;

/// "avx512-vnni", "avx2" or "scalar": the products int_dot runs (the best this CPU has,
/// or the one the environment variable XLSHARE_INT_DOT names).
const char* int_dot_isa() noexcept;

}  // namespace xlshare::quant
