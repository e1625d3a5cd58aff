#include "xlshare/model/llama_config.hpp"

#include <fmt/format.h>

#include <cmath>

#include "common/json_fields.hpp"
#include "xlshare/error.hpp"

namespace xlshare {

void LlamaConfig::validate(const std::string& where) const {
  auto bad = [&](const std::string& what) {
    throw FormatError(fmt::format("{}: {}", where, what));
  };
  if (dim == 0 || dim > (1u << 16)) bad(fmt::format("embedding length {} is not in 1..65536", dim));
  if (n_layers == 0 || n_layers > 1024)
    bad(fmt::format("block count {} is not in 1..1024", n_layers));
  if (n_heads == 0 || n_heads > 1024) bad(fmt::format("head count {} is not in 1..1024", n_heads));
  if (n_kv_heads == 0 || n_kv_heads > n_heads || n_heads % n_kv_heads != 0) {
    bad(fmt::format("kv head count {} does not divide head count {}", n_kv_heads, n_heads));
  }
  if (head_dim == 0 || head_dim % 2 != 0 || head_dim > 1024)
    bad(fmt::format("head dim {} is not an even number in 2..1024", head_dim));
  if (ffn_dim == 0 || ffn_dim > (1u << 18))
    bad(fmt::format("feed-forward length {} is not in 1..262144", ffn_dim));
  if (vocab == 0 || vocab > (1u << 22))
    bad(fmt::format("vocabulary size {} is not in 1..4194304", vocab));
  if (context == 0 || context > (1u << 20))
    bad(fmt::format("context length {} is not in 1..1048576", context));
  if (!std::isfinite(rope_theta) || rope_theta <= 1.0)
    bad(fmt::format("rope theta {} is not > 1", rope_theta));
  if (!std::isfinite(norm_eps) || norm_eps <= 0.0 || norm_eps > 1.0)
    bad(fmt::format("norm epsilon {} is not in (0, 1]", norm_eps));
  if (eos_token_ids.size() > 64) bad("more than 64 end-of-sequence tokens");
  for (const auto t : eos_token_ids) {
    if (t < 0 || static_cast<std::uint32_t>(t) >= vocab)
      bad(fmt::format("end-of-sequence token {} is outside the vocabulary of {}", t, vocab));
  }
}

XLSHARE_JSON_TO(LlamaConfig, dim, n_layers, n_heads, n_kv_heads, head_dim, ffn_dim, vocab, context,
                rope_theta, norm_eps, tie_embeddings, eos_token_ids)
std::string LlamaConfig::to_json() const { return nlohmann::json(*this).dump(); }

LlamaConfig LlamaConfig::from_json(const std::string& json, const std::string& where) {
  LlamaConfig c;
  try {
    const auto j = nlohmann::json::parse(json);
    c.dim = j.at("dim").get<std::uint32_t>();
    c.n_layers = j.at("n_layers").get<std::uint32_t>();
    c.n_heads = j.at("n_heads").get<std::uint32_t>();
    c.n_kv_heads = j.at("n_kv_heads").get<std::uint32_t>();
    c.head_dim = j.at("head_dim").get<std::uint32_t>();
    c.ffn_dim = j.at("ffn_dim").get<std::uint32_t>();
    c.vocab = j.at("vocab").get<std::uint32_t>();
    c.context = j.at("context").get<std::uint32_t>();
    c.rope_theta = j.at("rope_theta").get<double>();
    c.norm_eps = j.at("norm_eps").get<double>();
    c.tie_embeddings = j.at("tie_embeddings").get<bool>();
    // Absent from pools written before it was recorded: none known.
    if (j.contains("eos_token_ids")) j.at("eos_token_ids").get_to(c.eos_token_ids);
  } catch (const nlohmann::json::exception& e) {
    throw FormatError(fmt::format("{}: model config: {}", where, e.what()));
  }
  c.validate(where);
  return c;
}

std::vector<TensorSpec> llama_tensor_specs(const LlamaConfig& c) {
  const std::uint64_t q = std::uint64_t{c.n_heads} * c.head_dim;
  const std::uint64_t kv = std::uint64_t{c.n_kv_heads} * c.head_dim;
  std::vector<TensorSpec> specs;
  specs.push_back({"token_embd.weight", {c.dim, c.vocab}});
  for (std::uint32_t l = 0; l < c.n_layers; ++l) {
    const std::string p = fmt::format("blk.{}.", l);
    specs.push_back({p + "attn_norm.weight", {c.dim}});
    specs.push_back({p + "attn_q.weight", {c.dim, q}});
    specs.push_back({p + "attn_k.weight", {c.dim, kv}});
    specs.push_back({p + "attn_v.weight", {c.dim, kv}});
    specs.push_back({p + "attn_output.weight", {q, c.dim}});
    specs.push_back({p + "ffn_norm.weight", {c.dim}});
    specs.push_back({p + "ffn_gate.weight", {c.dim, c.ffn_dim}});
    specs.push_back({p + "ffn_up.weight", {c.dim, c.ffn_dim}});
    specs.push_back({p + "ffn_down.weight", {c.ffn_dim, c.dim}});
  }
  specs.push_back({"output_norm.weight", {c.dim}});
  if (!c.tie_embeddings) specs.push_back({"output.weight", {c.dim, c.vocab}});
  return specs;
}

}  // namespace xlshare
