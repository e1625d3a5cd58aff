// Synthetic Llama models with seeded random weights, and writers for GGUF and
// safetensors + config.json: tests and benchmarks make their own model files.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include "xlshare/dtype.hpp"
#include "xlshare/model/llama_config.hpp"

namespace xlshare {

/// A model in memory, float32, tensors in llama_tensor_specs() order and canonical layout
/// (q/k rows in GGUF's interleaved-RoPE order).
struct SyntheticModel {
  LlamaConfig config;
  std::vector<TensorSpec> specs;
  std::vector<std::vector<float>> data;  ///< data[i] holds specs[i]'s elements
  const std::vector<float>& tensor(const std::string& name) const;
};

/// Seeded random weights of any shape: matrices N(0,1)/sqrt(fan_in), embeddings N(0,1),
/// norm weights 1 + 0.1 N(0,1) (as the shared oracle's). @throws FormatError for a bad
/// config.
SyntheticModel make_synthetic_llama(const LlamaConfig& config, std::uint64_t seed);

/// The same model with every matrix rounded to how `dtype` stores it (norms stay F32), so
/// an F32 computation on it is exactly what a `dtype` file computes.
/// @throws ConfigError for a dtype without a writer (can_convert_from_f32).
SyntheticModel round_weights(const SyntheticModel& model, DType dtype);

/// Writes a GGUF v3 file; matrices as `dtype` (F32, F16, BF16, Q8_0, Q4_K or Q6_K), norms
/// F32. @throws ConfigError for an unsupported dtype, BackendError when writing fails.
void write_gguf(const SyntheticModel& model, const std::filesystem::path& file, DType dtype);

/// Writes a GGUF v3 file with each tensor as `dtype_of(spec)` says (e.g. q4_k_m_dtype).
/// @throws ConfigError for an unsupported dtype or a row that is not whole blocks.
void write_gguf(const SyntheticModel& model, const std::filesystem::path& file,
                const std::function<DType(const TensorSpec&)>& dtype_of);

/// llama.cpp's Q4_K_M mix: Q6_K for output.weight and for attn_v and ffn_down in the
/// first and last eighth of the layers and every third between, Q4_K for the other
/// matrices, F32 for the norms.
DType q4_k_m_dtype(const TensorSpec& spec, const LlamaConfig& config);

/// Writes a Hugging Face directory: config.json and model.safetensors (or `shards` files
/// with model.safetensors.index.json), Hugging Face names and q/k layout; matrices as
/// `dtype` (F32, F16 or BF16). @throws ConfigError, BackendError.
void write_safetensors(const SyntheticModel& model, const std::filesystem::path& dir, DType dtype,
                       std::size_t shards = 1);

}  // namespace xlshare
