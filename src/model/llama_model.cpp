// LlamaModel: a model's shape and tensor table, checked, from a file or from a pool.
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <map>

#include "xlshare/error.hpp"
#include "xlshare/memory/pool.hpp"
#include "xlshare/model/executor.hpp"
#include "xlshare/model/model_file.hpp"

namespace xlshare {

LlamaModel::LlamaModel(LlamaConfig config, std::vector<TensorDesc> tensors, std::string where)
    : config_(config), tensors_(std::move(tensors)) {
  config_.validate(where);
  std::map<std::string, std::size_t> index;
  for (std::size_t i = 0; i < tensors_.size(); ++i) index[tensors_[i].name] = i;
  auto find = [&](const TensorSpec& spec) -> std::size_t {
    auto it = index.find(spec.name);
    if (it == index.end())
      throw FormatError(fmt::format("{}: missing tensor '{}'", where, spec.name));
    const TensorDesc& t = tensors_[it->second];
    if (t.shape != spec.shape)
      throw FormatError(fmt::format("{}: tensor '{}' has the wrong shape", where, spec.name));
    std::uint64_t n = 1;
    for (auto d : t.shape) n *= d;
    const auto bytes = dtype_bytes(t.dtype, n);
    if (!bytes || *bytes != t.size_bytes || t.dtype == DType::kI32 || t.dtype == DType::kU8) {
      throw FormatError(
          fmt::format("{}: tensor '{}' has an unusable dtype or size", where, spec.name));
    }
    if (t.shape[0] % dtype_block_elements(t.dtype) != 0) {
      throw FormatError(fmt::format("{}: tensor '{}': {} rows must be whole blocks of {}", where,
                                    spec.name, to_string(t.dtype), dtype_block_elements(t.dtype)));
    }
    return it->second;
  };
  for (const auto& spec : llama_tensor_specs(config_)) (void)find(spec);
  auto by_name = [&](const std::string& n) { return index.at(n); };
  token_embd_ = by_name("token_embd.weight");
  output_norm_ = by_name("output_norm.weight");
  output_ = config_.tie_embeddings ? token_embd_ : by_name("output.weight");
  for (std::uint32_t l = 0; l < config_.n_layers; ++l) {
    const std::string p = fmt::format("blk.{}.", l);
    layers_.push_back(Layer{by_name(p + "attn_norm.weight"), by_name(p + "attn_q.weight"),
                            by_name(p + "attn_k.weight"), by_name(p + "attn_v.weight"),
                            by_name(p + "attn_output.weight"), by_name(p + "ffn_norm.weight"),
                            by_name(p + "ffn_gate.weight"), by_name(p + "ffn_up.weight"),
                            by_name(p + "ffn_down.weight")});
  }
  std::vector<std::string> names;
  for (const auto& t : tensors_) names.push_back(t.name);
  schedule_ = Schedule::for_transformer(names);
  // The executor relies on this order: embedding, block.0 .. block.L-1, head.
  if (schedule_.size() != config_.n_layers + 2 || schedule_.step(0).name != "embedding" ||
      schedule_.step(config_.n_layers + 1).name != "head") {
    throw FormatError(fmt::format("{}: tensors do not form embedding, {} blocks and a head", where,
                                  config_.n_layers));
  }
}

LlamaModel LlamaModel::from_file(const ModelFile& file) {
  std::vector<TensorDesc> t;
  for (const auto& f : file.tensors) {
    t.push_back({f.name, f.dtype,
                 std::vector<std::uint64_t>(f.shape.begin(), f.shape.begin() + f.n_dims),
                 f.size_bytes});
  }
  return LlamaModel(file.config, std::move(t), file.path.string());
}

LlamaModel LlamaModel::from_pool(const ModelView& view) {
  const std::string where = fmt::format("model '{}'", view.name());
  std::string config_json;
  try {
    const auto j = nlohmann::json::parse(view.metadata());
    config_json = j.at("config").dump();
  } catch (const nlohmann::json::exception& e) {
    throw FormatError(fmt::format("{}: its metadata holds no model config ({})", where, e.what()));
  }
  const LlamaConfig config = LlamaConfig::from_json(config_json, where);
  std::vector<TensorDesc> t;
  for (const auto& info : view.tensors()) {
    t.push_back({info.name, info.dtype,
                 std::vector<std::uint64_t>(info.shape.begin(), info.shape.begin() + info.n_dims),
                 info.size_bytes});
  }
  return LlamaModel(config, std::move(t), where);
}

std::uint64_t LlamaModel::total_bytes() const noexcept {
  std::uint64_t n = 0;
  for (const auto& t : tensors_) n += t.size_bytes;
  return n;
}

}  // namespace xlshare
