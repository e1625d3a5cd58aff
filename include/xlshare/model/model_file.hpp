// Model files: GGUF (llama.cpp) and Hugging Face safetensors + config.json, read with
// validation and streamed tensor by tensor.
//
// Opening a file reads and checks only its header: every count, length, offset, shape and
// dtype is checked against the file's real size before it is used, so a truncated or
// lying file is a FormatError naming the file, the tensor and the problem — never a crash
// or an allocation of the size the file claims. Tensor bytes are read later, one tensor at
// a time, by read_tensor_data(), straight into the caller's buffer (a pool extent).
#pragma once

#include <array>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "xlshare/dtype.hpp"
#include "xlshare/model/llama_config.hpp"
#include "xlshare/model/tokenizer.hpp"

namespace xlshare {

enum class ModelFormat : std::uint8_t { kGguf, kSafetensors };

/// One tensor of a model file, under its canonical (GGUF) name.
struct FileTensor {
  std::string name;         ///< canonical name: "blk.0.attn_q.weight"
  std::string source_name;  ///< as stored: "model.layers.0.self_attn.q_proj.weight"
  DType dtype = DType::kF32;
  std::uint32_t n_dims = 0;
  std::array<std::uint64_t, 4> shape{1, 1, 1, 1};  ///< fastest-varying first
  std::filesystem::path path;                      ///< the file holding the bytes (shards differ)
  std::uint64_t offset_bytes = 0;
  std::uint64_t size_bytes = 0;
  /// Hugging Face q/k projections: reorder rows from rotate-half to interleaved-RoPE
  /// layout, in this many heads (0: no reordering).
  std::uint32_t permute_heads = 0;
};

struct ModelFile {
  std::filesystem::path path;  ///< the GGUF file or the Hugging Face directory
  ModelFormat format = ModelFormat::kGguf;
  LlamaConfig config;
  std::vector<FileTensor> tensors;  ///< in llama_tensor_specs() order
  /// The vocabulary of a GGUF file's tokenizer.ggml.* metadata, validated against the
  /// model's (std::nullopt: none, or a kind xlshare does not implement; safetensors files
  /// never carry one here).
  std::optional<TokenizerData> tokenizer;
  std::uint64_t total_bytes() const noexcept;
  const FileTensor* find(const std::string& name) const noexcept;
};

/// Opens a GGUF file, a .safetensors file (with config.json beside it), a Hugging Face
/// directory (config.json + model.safetensors or model.safetensors.index.json and shards).
/// @throws FormatError naming the file, the tensor and the problem.
ModelFile open_model_file(const std::filesystem::path& path);

/// The shape a Hugging Face config.json describes (no weights read).
/// @throws FormatError naming the file.
LlamaConfig read_hf_config_file(const std::filesystem::path& config_json);

/// Reads one tensor's bytes into `dst` (exactly size_bytes), converting the q/k layout
/// where needed. @throws FormatError on a short read, BackendError when the file cannot
/// be read.
void read_tensor_data(const FileTensor& tensor, std::span<std::byte> dst);

}  // namespace xlshare
