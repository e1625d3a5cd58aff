// Reading a Hugging Face model: safetensors headers, config.json, and the names mapped to GGUF's.
#include "model/model_file_detail.hpp"

namespace xlshare::model_file_detail {
namespace {

// --- safetensors + config.json ----------------------------------------------------------------

std::optional<DType> safetensors_dtype(const std::string& s) {
  if (s == "F32") return DType::kF32;
  if (s == "F16") return DType::kF16;
  if (s == "BF16") return DType::kBF16;
  return std::nullopt;
}

// Reads one .safetensors file's header; adds its tensors (by stored name) to `out`.
void read_safetensors_header(const fs::path& path, std::map<std::string, FileTensor>& out) {
  const OpenFile f = open_file(path);
  if (f.size < 8) fail(path, "truncated: shorter than the 8-byte header length");
  std::uint64_t header_len = 0;
  if (!pread_all(f.fd.get(), 0, std::as_writable_bytes(std::span(&header_len, 1))))
    fail(path, "read error");
  if (header_len > f.size - 8)
    fail(path,
         fmt::format("header length {} is larger than the file ({} bytes)", header_len, f.size));
  if (header_len > (100u << 20))
    fail(path, fmt::format("header length {} is absurd (over 100 MiB)", header_len));
  std::string header(header_len, '\0');
  if (!pread_all(f.fd.get(), 8, std::as_writable_bytes(std::span(header.data(), header.size()))))
    fail(path, "read error");
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(header);
  } catch (const nlohmann::json::exception& e) {
    fail(path, fmt::format("the header is not valid JSON: {}", e.what()));
  }
  if (!j.is_object()) fail(path, "the header is not a JSON object");
  const std::uint64_t data_start = 8 + header_len;
  const std::uint64_t data_size = f.size - data_start;
  std::vector<FileTensor> here;
  for (auto it = j.begin(); it != j.end(); ++it) {
    if (it.key() == "__metadata__") continue;
    const std::string& name = it.key();
    const auto& v = it.value();
    if (!v.is_object() || !v.contains("dtype") || !v.contains("shape") ||
        !v.contains("data_offsets")) {
      fail(path, fmt::format("tensor '{}': entry lacks dtype, shape or data_offsets", name));
    }
    if (!v["dtype"].is_string())
      fail(path, fmt::format("tensor '{}': dtype is not a string", name));
    const auto dtype = safetensors_dtype(v["dtype"].get<std::string>());
    if (!dtype) {
      fail(path,
           fmt::format("tensor '{}' has dtype {}, which xlshare does not support (F32, F16, BF16)",
                       name, v["dtype"].get<std::string>()));
    }
    const auto& shape = v["shape"];
    const auto& offs = v["data_offsets"];
    if (!shape.is_array() || shape.empty() || shape.size() > 4)
      fail(path, fmt::format("tensor '{}': shape must have 1..4 dimensions", name));
    if (!offs.is_array() || offs.size() != 2 || !offs[0].is_number_unsigned() ||
        !offs[1].is_number_unsigned()) {
      fail(path, fmt::format("tensor '{}': data_offsets must be two unsigned integers", name));
    }
    FileTensor t;
    t.name = name;
    t.source_name = name;
    t.dtype = *dtype;
    t.n_dims = static_cast<std::uint32_t>(shape.size());
    for (std::size_t d = 0; d < shape.size(); ++d) {
      if (!shape[d].is_number_unsigned())
        fail(path, fmt::format("tensor '{}': shape holds a non-integer", name));
      t.shape[shape.size() - 1 - d] = shape[d].get<std::uint64_t>();  // fastest-varying first
    }
    t.size_bytes = checked_bytes(path, name, t.dtype, t.shape, t.n_dims);
    const auto begin = offs[0].get<std::uint64_t>(), end = offs[1].get<std::uint64_t>();
    if (begin > end || end > data_size) {
      fail(path, fmt::format("tensor '{}': data_offsets [{}, {}) lie outside the data ({} bytes)",
                             name, begin, end, data_size));
    }
    if (end - begin != t.size_bytes) {
      fail(path, fmt::format("tensor '{}': its data is {} bytes but its shape and dtype need {}",
                             name, end - begin, t.size_bytes));
    }
    t.offset_bytes = data_start + begin;
    t.path = path;
    if (out.count(name)) fail(path, fmt::format("tensor '{}' appears twice", name));
    here.push_back(t);
  }
  std::vector<const FileTensor*> ptrs;
  for (const auto& t : here) ptrs.push_back(&t);
  check_extents(path, ptrs, data_start, f.size);
  for (auto& t : here) out[t.name] = std::move(t);
}

LlamaConfig read_hf_config(const fs::path& file) {
  std::ifstream in(file);
  if (!in) fail(file, "no such file (a Hugging Face model needs config.json)");
  nlohmann::json j;
  try {
    in >> j;
  } catch (const nlohmann::json::exception& e) {
    fail(file, fmt::format("not valid JSON: {}", e.what()));
  }
  try {
    bool known = false;
    for (const auto& a : j.value("architectures", nlohmann::json::array())) {
      known = known || a == "LlamaForCausalLM" || a == "MistralForCausalLM";
    }
    if (!known) fail(file, "architectures must include LlamaForCausalLM or MistralForCausalLM");
    if (j.contains("rope_scaling") && !j["rope_scaling"].is_null())
      fail(file, "rope_scaling is not supported");
    LlamaConfig c;
    c.dim = j.at("hidden_size").get<std::uint32_t>();
    c.n_layers = j.at("num_hidden_layers").get<std::uint32_t>();
    c.n_heads = j.at("num_attention_heads").get<std::uint32_t>();
    c.n_kv_heads = j.value("num_key_value_heads", c.n_heads);
    c.head_dim = j.contains("head_dim") && !j["head_dim"].is_null()
                     ? j["head_dim"].get<std::uint32_t>()
                     : (c.n_heads ? c.dim / c.n_heads : 0);
    c.ffn_dim = j.at("intermediate_size").get<std::uint32_t>();
    c.vocab = j.at("vocab_size").get<std::uint32_t>();
    c.context = static_cast<std::uint32_t>(
        std::min<std::uint64_t>(j.value("max_position_embeddings", 2048u), 1u << 20));
    c.rope_theta = j.value("rope_theta", 10000.0);
    c.norm_eps = j.value("rms_norm_eps", 1e-6);
    c.tie_embeddings = j.value("tie_word_embeddings", false);
    if (j.contains("eos_token_id") && !j["eos_token_id"].is_null()) {  // a number or a list
      const auto& e = j["eos_token_id"];
      if (e.is_array()) {
        if (e.size() > 64) fail(file, "eos_token_id: more than 64 tokens");
        for (const auto& t : e) c.eos_token_ids.push_back(t.get<std::int32_t>());
      } else {
        c.eos_token_ids.push_back(e.get<std::int32_t>());
      }
    }
    c.validate(file.string());
    return c;
  } catch (const nlohmann::json::exception& e) {
    fail(file, fmt::format("bad or missing field: {}", e.what()));
  }
}

// Hugging Face name -> canonical name and q/k permutation heads.
std::optional<std::pair<std::string, int>> canonical_hf_name(const std::string& hf) {
  static const std::map<std::string, std::string> kTop = {
      {"model.embed_tokens.weight", "token_embd.weight"},
      {"model.norm.weight", "output_norm.weight"},
      {"lm_head.weight", "output.weight"},
  };
  if (auto it = kTop.find(hf); it != kTop.end()) return std::pair(it->second, 0);
  static const std::regex kLayer(R"(model\.layers\.(\d+)\.(.+))");
  std::smatch m;
  if (!std::regex_match(hf, m, kLayer)) return std::nullopt;
  static const std::map<std::string, std::pair<std::string, int>> kBlock = {
      {"input_layernorm.weight", {"attn_norm.weight", 0}},
      {"self_attn.q_proj.weight", {"attn_q.weight", 1}},
      {"self_attn.k_proj.weight", {"attn_k.weight", 2}},
      {"self_attn.v_proj.weight", {"attn_v.weight", 0}},
      {"self_attn.o_proj.weight", {"attn_output.weight", 0}},
      {"post_attention_layernorm.weight", {"ffn_norm.weight", 0}},
      {"mlp.gate_proj.weight", {"ffn_gate.weight", 0}},
      {"mlp.up_proj.weight", {"ffn_up.weight", 0}},
      {"mlp.down_proj.weight", {"ffn_down.weight", 0}},
  };
  auto it = kBlock.find(m[2].str());
  if (it == kBlock.end()) return std::nullopt;
  return std::pair(fmt::format("blk.{}.{}", m[1].str(), it->second.first), it->second.second);
}

}  // namespace

ModelFile open_hf(const fs::path& dir_or_file) {
  const bool is_dir = fs::is_directory(dir_or_file);
  const fs::path dir = is_dir ? dir_or_file : dir_or_file.parent_path();
  const LlamaConfig config = read_hf_config(dir / "config.json");
  std::map<std::string, FileTensor> stored;
  if (!is_dir) {
    read_safetensors_header(dir_or_file, stored);
  } else if (fs::exists(dir / "model.safetensors.index.json")) {
    const fs::path index = dir / "model.safetensors.index.json";
    std::ifstream in(index);
    nlohmann::json j;
    try {
      in >> j;
    } catch (const nlohmann::json::exception& e) {
      fail(index, fmt::format("not valid JSON: {}", e.what()));
    }
    if (!j.contains("weight_map") || !j["weight_map"].is_object())
      fail(index, "no weight_map object");
    std::map<std::string, bool> shards;
    for (auto it = j["weight_map"].begin(); it != j["weight_map"].end(); ++it) {
      if (!it.value().is_string())
        fail(index, fmt::format("weight_map['{}'] is not a file name", it.key()));
      const std::string shard = it.value().get<std::string>();
      if (shard.empty() || shard.find('/') != std::string::npos ||
          shard.find("..") != std::string::npos) {
        fail(index,
             fmt::format("weight_map['{}'] = '{}' is not a plain file name", it.key(), shard));
      }
      shards[shard] = true;
    }
    for (const auto& [shard, _] : shards) read_safetensors_header(dir / shard, stored);
    for (auto it = j["weight_map"].begin(); it != j["weight_map"].end(); ++it) {
      if (!stored.count(it.key()))
        fail(index, fmt::format("tensor '{}' is not in shard '{}'", it.key(),
                                it.value().get<std::string>()));
    }
  } else if (fs::exists(dir / "model.safetensors")) {
    read_safetensors_header(dir / "model.safetensors", stored);
  } else {
    fail(dir, "holds neither model.safetensors nor model.safetensors.index.json");
  }
  std::map<std::string, FileTensor> by_name;
  for (auto& [hf, t] : stored) {
    const auto canon = canonical_hf_name(hf);
    if (!canon) continue;  // not a weight xlshare uses (e.g. rotary_emb.inv_freq)
    t.name = canon->first;
    t.permute_heads = canon->second == 1   ? config.n_heads
                      : canon->second == 2 ? config.n_kv_heads
                                           : 0;
    by_name[t.name] = t;
  }
  LlamaConfig c = config;
  if (!by_name.count("output.weight")) c.tie_embeddings = true;  // tied: no lm_head stored
  ModelFile m;
  m.path = dir_or_file;
  m.format = ModelFormat::kSafetensors;
  m.config = c;
  m.tensors = select_tensors(dir_or_file, c, by_name);
  return m;
}

}  // namespace xlshare::model_file_detail

namespace xlshare {
LlamaConfig read_hf_config_file(const std::filesystem::path& config_json) {
  return model_file_detail::read_hf_config(config_json);
}
}  // namespace xlshare
