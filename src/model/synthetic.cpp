#include "xlshare/model/synthetic.hpp"

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <cmath>
#include <cstring>
#include <fstream>
#include <map>
#include <random>

#include "xlshare/error.hpp"
#include "xlshare/model/dtype_convert.hpp"

namespace xlshare {
namespace fs = std::filesystem;

const std::vector<float>& SyntheticModel::tensor(const std::string& name) const {
  for (std::size_t i = 0; i < specs.size(); ++i) {
    if (specs[i].name == name) return data[i];
  }
  throw ConfigError(fmt::format("synthetic model has no tensor '{}'", name));
}

SyntheticModel make_synthetic_llama(const LlamaConfig& config, std::uint64_t seed) {
  config.validate("synthetic model");
  SyntheticModel m;
  m.config = config;
  m.specs = llama_tensor_specs(config);
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (const auto& spec : m.specs) {
    std::uint64_t n = 1;
    for (auto d : spec.shape) n *= d;
    std::vector<float> v(n);
    if (spec.shape.size() == 1) {
      for (auto& x : v) x = 1.0f + 0.1f * normal(rng);
    } else if (spec.name == "token_embd.weight") {
      for (auto& x : v) x = normal(rng);
    } else {
      const float scale = 1.0f / std::sqrt(static_cast<float>(spec.shape[0]));
      for (auto& x : v) x = normal(rng) * scale;
    }
    m.data.push_back(std::move(v));
  }
  return m;
}

namespace {

bool is_matrix(const TensorSpec& s) { return s.shape.size() == 2; }

DType stored_dtype(const TensorSpec& s, DType dtype) { return is_matrix(s) ? dtype : DType::kF32; }

// GGUF's number for each type the writer can write (ggml.h's ggml_type).
std::uint32_t ggml_type_id(DType t) {
  switch (t) {
    case DType::kF32:
      return 0;
    case DType::kF16:
      return 1;
    case DType::kQ8_0:
      return 8;
    case DType::kQ4_K:
      return 12;
    case DType::kQ6_K:
      return 14;
    case DType::kBF16:
      return 30;
    default:
      return 0;  // refused by write_gguf before
  }
}

std::vector<std::byte> encode(const std::vector<float>& v, DType dtype) {
  std::vector<std::byte> out(row_bytes(dtype, v.size()));
  from_f32(dtype, v.data(), out.data(), v.size());
  return out;
}

void write_all(std::ofstream& out, const void* p, std::size_t n, const fs::path& file) {
  out.write(static_cast<const char*>(p), static_cast<std::streamsize>(n));
  if (!out) throw BackendError(fmt::format("{}: write failed", file.string()));
}

// Interleaved (canonical) rows -> rotate-half (Hugging Face) rows, per head.
std::vector<float> unpermute_rows(const std::vector<float>& v, std::uint64_t cols,
                                  std::uint32_t heads) {
  const std::uint64_t rows = v.size() / cols;
  const std::uint64_t hd = rows / heads;
  std::vector<float> out(v.size());
  for (std::uint64_t h = 0; h < heads; ++h) {
    for (std::uint64_t half = 0; half < 2; ++half) {
      for (std::uint64_t i = 0; i < hd / 2; ++i) {
        std::memcpy(&out[(h * hd + half * hd / 2 + i) * cols], &v[(h * hd + 2 * i + half) * cols],
                    cols * 4);
      }
    }
  }
  return out;
}

}  // namespace

SyntheticModel round_weights(const SyntheticModel& model, DType dtype) {
  if (!can_convert_from_f32(dtype) || dtype == DType::kI32 || dtype == DType::kU8)
    throw ConfigError(fmt::format("round_weights: dtype {} has no writer", to_string(dtype)));
  SyntheticModel out = model;
  for (std::size_t i = 0; i < out.specs.size(); ++i) {
    if (!is_matrix(out.specs[i])) continue;
    const auto bytes = encode(out.data[i], dtype);
    to_f32(dtype, bytes.data(), out.data[i].data(), out.data[i].size());
  }
  return out;
}

DType q4_k_m_dtype(const TensorSpec& spec, const LlamaConfig& c) {
  if (!is_matrix(spec)) return DType::kF32;
  // The output projection (the embedding when they are tied) keeps 6 bits, as llama.cpp's.
  if (spec.name == "output.weight" || (spec.name == "token_embd.weight" && c.tie_embeddings))
    return DType::kQ6_K;
  const bool v = spec.name.ends_with(".attn_v.weight");
  const bool down = spec.name.ends_with(".ffn_down.weight");
  if ((v || down) && spec.name.starts_with("blk.")) {
    const long i = std::strtol(spec.name.c_str() + 4, nullptr, 10);
    const long n = c.n_layers;
    // llama.cpp's use_more_bits: the first and last eighth of the layers, every third between.
    if (i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2) return DType::kQ6_K;
  }
  return DType::kQ4_K;
}

void write_gguf(const SyntheticModel& m, const fs::path& file, DType dtype) {
  write_gguf(m, file, [&](const TensorSpec& s) { return stored_dtype(s, dtype); });
}

void write_gguf(const SyntheticModel& m, const fs::path& file,
                const std::function<DType(const TensorSpec&)>& dtype_of) {
  for (const auto& s : m.specs) {
    const DType dtype = dtype_of(s);
    if (dtype == DType::kI32 || dtype == DType::kU8 || !can_convert_from_f32(dtype)) {
      throw ConfigError(fmt::format("GGUF writer: dtype {} is not supported", to_string(dtype)));
    }
    if (s.shape[0] % dtype_block_elements(dtype) != 0) {
      throw ConfigError(fmt::format("GGUF writer: tensor '{}': rows of {} are not whole {} blocks",
                                    s.name, s.shape[0], to_string(dtype)));
    }
  }
  std::ofstream out(file, std::ios::binary | std::ios::trunc);
  if (!out) throw BackendError(fmt::format("{}: cannot create", file.string()));
  auto u32 = [&](std::uint32_t v) { write_all(out, &v, 4, file); };
  auto u64 = [&](std::uint64_t v) { write_all(out, &v, 8, file); };
  auto str = [&](const std::string& s) {
    u64(s.size());
    write_all(out, s.data(), s.size(), file);
  };
  const auto& c = m.config;
  struct Kv {
    std::string key;
    std::uint32_t type;  // 4 u32, 6 f32, 8 string
    std::uint32_t u = 0;
    float f = 0;
    std::string s;
  };
  const std::vector<Kv> kvs = {
      {"general.architecture", 8, 0, 0, "llama"},
      {"general.name", 8, 0, 0, "xlshare-synthetic"},
      {"general.alignment", 4, 32, 0, ""},
      {"llama.context_length", 4, c.context, 0, ""},
      {"llama.embedding_length", 4, c.dim, 0, ""},
      {"llama.block_count", 4, c.n_layers, 0, ""},
      {"llama.feed_forward_length", 4, c.ffn_dim, 0, ""},
      {"llama.attention.head_count", 4, c.n_heads, 0, ""},
      {"llama.attention.head_count_kv", 4, c.n_kv_heads, 0, ""},
      {"llama.rope.dimension_count", 4, c.head_dim, 0, ""},
      {"llama.rope.freq_base", 6, 0, static_cast<float>(c.rope_theta), ""},
      {"llama.attention.layer_norm_rms_epsilon", 6, 0, static_cast<float>(c.norm_eps), ""},
      {"tokenizer.ggml.model", 8, 0, 0, "none"},
  };
  write_all(out, "GGUF", 4, file);
  u32(3);
  u64(m.specs.size());
  u64(kvs.size());
  for (const auto& kv : kvs) {
    str(kv.key);
    u32(kv.type);
    if (kv.type == 4) u32(kv.u);
    if (kv.type == 6) write_all(out, &kv.f, 4, file);
    if (kv.type == 8) str(kv.s);
  }
  std::uint64_t offset = 0;
  std::vector<std::vector<std::byte>> blobs;
  for (std::size_t i = 0; i < m.specs.size(); ++i) {
    const auto& s = m.specs[i];
    const DType t = dtype_of(s);
    blobs.push_back(encode(m.data[i], t));
    str(s.name);
    u32(static_cast<std::uint32_t>(s.shape.size()));
    for (auto d : s.shape) u64(d);
    u32(ggml_type_id(t));
    u64(offset);
    offset += (blobs.back().size() + 31) / 32 * 32;
  }
  const auto pad = [&](std::uint64_t pos) {
    static const char zeros[32] = {};
    const std::uint64_t n = (32 - pos % 32) % 32;
    write_all(out, zeros, n, file);
  };
  pad(static_cast<std::uint64_t>(out.tellp()));
  for (const auto& b : blobs) {
    write_all(out, b.data(), b.size(), file);
    pad(b.size());
  }
}

void write_safetensors(const SyntheticModel& m, const fs::path& dir, DType dtype,
                       std::size_t shards) {
  if (dtype != DType::kF32 && dtype != DType::kF16 && dtype != DType::kBF16) {
    throw ConfigError(
        fmt::format("safetensors writer: dtype {} is not supported", to_string(dtype)));
  }
  if (shards == 0) shards = 1;
  fs::create_directories(dir);
  const auto& c = m.config;
  const nlohmann::json config = {
      {"architectures", {"LlamaForCausalLM"}},
      {"model_type", "llama"},
      {"hidden_size", c.dim},
      {"intermediate_size", c.ffn_dim},
      {"num_attention_heads", c.n_heads},
      {"num_key_value_heads", c.n_kv_heads},
      {"num_hidden_layers", c.n_layers},
      {"head_dim", c.head_dim},
      {"hidden_act", "silu"},
      {"rms_norm_eps", c.norm_eps},
      {"rope_theta", c.rope_theta},
      {"rope_scaling", nullptr},
      {"vocab_size", c.vocab},
      {"max_position_embeddings", c.context},
      {"tie_word_embeddings", c.tie_embeddings},
      {"torch_dtype", "float32"},
  };
  std::ofstream(dir / "config.json") << config.dump(2);

  auto hf_name = [](const std::string& canon) -> std::string {
    if (canon == "token_embd.weight") return "model.embed_tokens.weight";
    if (canon == "output_norm.weight") return "model.norm.weight";
    if (canon == "output.weight") return "lm_head.weight";
    const auto dot = canon.find('.', 4);
    const std::string layer = canon.substr(4, dot - 4), rest = canon.substr(dot + 1);
    static const std::map<std::string, std::string> kMap = {
        {"attn_norm.weight", "input_layernorm.weight"},
        {"attn_q.weight", "self_attn.q_proj.weight"},
        {"attn_k.weight", "self_attn.k_proj.weight"},
        {"attn_v.weight", "self_attn.v_proj.weight"},
        {"attn_output.weight", "self_attn.o_proj.weight"},
        {"ffn_norm.weight", "post_attention_layernorm.weight"},
        {"ffn_gate.weight", "mlp.gate_proj.weight"},
        {"ffn_up.weight", "mlp.up_proj.weight"},
        {"ffn_down.weight", "mlp.down_proj.weight"},
    };
    return fmt::format("model.layers.{}.{}", layer, kMap.at(rest));
  };
  const char* dtype_name = dtype == DType::kF32 ? "F32" : dtype == DType::kF16 ? "F16" : "BF16";
  nlohmann::json weight_map = nlohmann::json::object();
  const std::size_t per_shard = (m.specs.size() + shards - 1) / shards;
  for (std::size_t shard = 0; shard < shards; ++shard) {
    const std::string file_name =
        shards == 1 ? "model.safetensors"
                    : fmt::format("model-{:05}-of-{:05}.safetensors", shard + 1, shards);
    nlohmann::json header = nlohmann::json::object();
    std::vector<std::vector<std::byte>> blobs;
    std::uint64_t offset = 0;
    for (std::size_t i = shard * per_shard; i < std::min(m.specs.size(), (shard + 1) * per_shard);
         ++i) {
      const auto& s = m.specs[i];
      std::vector<float> v = m.data[i];
      if (s.name.find("attn_q.weight") != std::string::npos)
        v = unpermute_rows(v, s.shape[0], c.n_heads);
      if (s.name.find("attn_k.weight") != std::string::npos)
        v = unpermute_rows(v, s.shape[0], c.n_kv_heads);
      const DType t = stored_dtype(s, dtype);
      blobs.push_back(encode(v, t));
      nlohmann::json shape = nlohmann::json::array();
      for (auto it = s.shape.rbegin(); it != s.shape.rend(); ++it) shape.push_back(*it);
      const std::string name = hf_name(s.name);
      header[name] = {{"dtype", t == DType::kF32 ? "F32" : dtype_name},
                      {"shape", shape},
                      {"data_offsets", {offset, offset + blobs.back().size()}}};
      offset += blobs.back().size();
      weight_map[name] = file_name;
    }
    std::string text = header.dump();
    text.append((8 - text.size() % 8) % 8, ' ');
    const fs::path file = dir / file_name;
    std::ofstream out(file, std::ios::binary | std::ios::trunc);
    if (!out) throw BackendError(fmt::format("{}: cannot create", file.string()));
    const std::uint64_t len = text.size();
    write_all(out, &len, 8, file);
    write_all(out, text.data(), text.size(), file);
    for (const auto& b : blobs) write_all(out, b.data(), b.size(), file);
  }
  if (shards > 1) {
    std::ofstream(dir / "model.safetensors.index.json")
        << nlohmann::json{{"metadata", nlohmann::json::object()}, {"weight_map", weight_map}}.dump(
               2);
  }
}

}  // namespace xlshare
