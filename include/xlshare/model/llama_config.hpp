// LlamaConfig: the shape of a Llama-family transformer, and the canonical tensor names.
//
// xlshare names tensors as llama.cpp's GGUF files do ("token_embd.weight",
// "blk.N.attn_q.weight", ...) and stores q/k projections in GGUF's layout (rows permuted
// for interleaved RoPE); Hugging Face files are converted on load. Shapes are listed
// fastest-varying first, as in GGUF: a [rows x cols] row-major matrix has shape {cols, rows}.
#pragma once

#include <cstdint>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <vector>

namespace xlshare {

struct LlamaConfig {
  std::uint32_t dim = 0;  ///< hidden size (embedding length)
  std::uint32_t n_layers = 0;
  std::uint32_t n_heads = 0;
  std::uint32_t n_kv_heads = 0;  ///< grouped-query attention when < n_heads
  std::uint32_t head_dim = 0;    ///< usually dim / n_heads
  std::uint32_t ffn_dim = 0;     ///< intermediate size of the SwiGLU MLP
  std::uint32_t vocab = 0;
  std::uint32_t context = 2048;  ///< longest sequence (KV cache capacity)
  double rope_theta = 10000.0;
  double norm_eps = 1e-5;
  bool tie_embeddings = false;  ///< the output head reuses token_embd
  /// End-of-sequence tokens from the file's metadata (GGUF tokenizer.ggml.eos_token_id,
  /// config.json eos_token_id): generation stops after one unless a request ignores them.
  std::vector<std::int32_t> eos_token_ids;

  /// @throws FormatError naming `where` and the first impossible or absurd value.
  void validate(const std::string& where) const;
  std::string to_json() const;
  /// @throws FormatError naming `where` when a field is missing or malformed.
  static LlamaConfig from_json(const std::string& json, const std::string& where);
};
void to_json(nlohmann::json& j, const LlamaConfig& c);

/// One tensor the model needs, with its shape (fastest-varying first).
struct TensorSpec {
  std::string name;
  std::vector<std::uint64_t> shape;
};

/// Every tensor a model of this shape has, in execution order (embedding, blocks, head).
/// "output.weight" is left out when the embeddings are tied.
std::vector<TensorSpec> llama_tensor_specs(const LlamaConfig& config);

}  // namespace xlshare
