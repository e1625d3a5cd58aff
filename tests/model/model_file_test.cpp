// Hostile and broken model files: each is refused with a FormatError naming the file, the
// tensor and the problem; none crashes or allocates what it claims.
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "model/model_support.hpp"
#include "xlshare/error.hpp"

namespace xlshare {
namespace {

// A GGUF file built entry by entry, so tests can make any field lie.
struct GgufEntry {
  std::string name;
  std::vector<std::uint64_t> dims;
  std::uint32_t type;
  std::uint64_t offset;
};

struct GgufBuilder {
  std::vector<std::pair<std::string, std::uint32_t>> u32_keys;
  std::string arch = "llama";
  std::vector<GgufEntry> tensors;
  std::uint64_t n_tensors_override = 0, n_kv_override = 0, key_length_override = 0;
  std::uint32_t version = 3;
  std::uint64_t data_bytes = 0;

  explicit GgufBuilder(const LlamaConfig& c) {
    u32_keys = {
        {"llama.embedding_length", c.dim},         {"llama.block_count", c.n_layers},
        {"llama.attention.head_count", c.n_heads}, {"llama.attention.head_count_kv", c.n_kv_heads},
        {"llama.feed_forward_length", c.ffn_dim},  {"llama.context_length", c.context}};
    std::uint64_t offset = 0;
    for (const auto& spec : llama_tensor_specs(c)) {
      std::uint64_t n = 1;
      for (auto d : spec.shape) n *= d;
      tensors.push_back({spec.name, spec.shape, 0, offset});
      offset += (n * 4 + 31) / 32 * 32;
    }
    data_bytes = offset;
  }
  std::string bytes() const {
    std::string out;
    auto put = [&](const void* p, std::size_t n) { out.append(static_cast<const char*>(p), n); };
    auto u32 = [&](std::uint32_t v) { put(&v, 4); };
    auto u64 = [&](std::uint64_t v) { put(&v, 8); };
    auto str = [&](const std::string& s, std::uint64_t len_override = 0) {
      u64(len_override ? len_override : s.size());
      put(s.data(), s.size());
    };
    put("GGUF", 4);
    u32(version);
    u64(n_tensors_override ? n_tensors_override : tensors.size());
    u64(n_kv_override ? n_kv_override : u32_keys.size() + 1);
    str("general.architecture", key_length_override);
    u32(8);
    str(arch);
    for (const auto& [k, v] : u32_keys) {
      str(k);
      u32(4);
      u32(v);
    }
    for (const auto& t : tensors) {
      str(t.name);
      u32(static_cast<std::uint32_t>(t.dims.size()));
      for (auto d : t.dims) u64(d);
      u32(t.type);
      u64(t.offset);
    }
    out.append((32 - out.size() % 32) % 32, '\0');
    out.append(data_bytes, '\0');
    return out;
  }
};

class BadFiles : public ::testing::Test {
 protected:
  BadFiles() : config_(test::small_config(32, 1, 2, 1, 64, 40)) {}
  std::filesystem::path write(const std::string& name, const std::string& bytes) {
    const auto p = dir_.path() / name;
    std::ofstream(p, std::ios::binary)
        .write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    return p;
  }
  // Opens `path` expecting a FormatError whose message holds every fragment.
  void expect_refused(const std::filesystem::path& path,
                      std::initializer_list<std::string> fragments) {
    try {
      open_model_file(path);
      ADD_FAILURE() << path << " was accepted";
    } catch (const FormatError& e) {
      const std::string what = e.what();
      EXPECT_NE(what.find(path.filename().string()), std::string::npos) << what;
      for (const auto& f : fragments)
        EXPECT_NE(what.find(f), std::string::npos) << "'" << f << "' not in: " << what;
    }
  }
  LlamaConfig config_;
  test::TempDir dir_;
};

TEST_F(BadFiles, AWellFormedBuilderFileIsAccepted) {
  // The builder itself is right: what the other tests break, it makes correctly.
  const auto p = write("good.gguf", GgufBuilder(config_).bytes());
  const ModelFile f = open_model_file(p);
  EXPECT_EQ(f.config.dim, 32u);
  EXPECT_EQ(f.tensors.size(), llama_tensor_specs(config_).size());
}

TEST_F(BadFiles, GgufTruncatedAnywhere) {
  const std::string good = GgufBuilder(config_).bytes();
  for (std::size_t cut : {std::size_t{0}, std::size_t{3}, std::size_t{10}, std::size_t{30},
                          std::size_t{200}, good.size() / 3, good.size() - 100, good.size() - 1}) {
    expect_refused(write(fmt::format("cut{}.gguf", cut), good.substr(0, cut)), {});
  }
}

TEST_F(BadFiles, GgufAbsurdCountsAndLengths) {
  GgufBuilder b(config_);
  b.n_tensors_override = 1ull << 60;
  expect_refused(write("tensors.gguf", b.bytes()), {"claims"});
  GgufBuilder k(config_);
  k.n_kv_override = 1ull << 58;
  expect_refused(write("kv.gguf", k.bytes()), {"claims"});
  GgufBuilder s(config_);
  s.key_length_override = 1ull << 62;
  expect_refused(write("key.gguf", s.bytes()), {"a key"});
}

TEST_F(BadFiles, GgufLyingTensors) {
  {
    GgufBuilder b(config_);
    b.tensors[3].offset = 1ull << 40;
    expect_refused(write("far.gguf", b.bytes()), {b.tensors[3].name});
  }
  {
    GgufBuilder b(config_);
    b.tensors[4].offset = b.tensors[3].offset;  // two tensors on the same bytes
    expect_refused(write("overlap.gguf", b.bytes()), {"overlap"});
  }
  {
    GgufBuilder b(config_);
    b.tensors[2].type = 16;  // IQ2_XXS: not supported
    expect_refused(write("dtype.gguf", b.bytes()), {b.tensors[2].name, "type 16"});
  }
  {
    GgufBuilder b(config_);
    b.tensors[2].type = 12;  // Q4_K rows of 32 values: not whole blocks of 256
    expect_refused(write("q4k-rows.gguf", b.bytes()), {b.tensors[2].name, "whole q4_k blocks"});
  }
  {
    GgufBuilder b(config_);  // Q6_K blocks whose bytes run past the end of the file
    b.tensors.back().type = 14;
    b.tensors.back().dims = {256, 4000};
    expect_refused(write("q6k-truncated.gguf", b.bytes()), {b.tensors.back().name});
  }
  {
    GgufBuilder b(config_);
    b.tensors[1].dims = {32, 32, 2};  // more elements than the data holds for the last tensor
    b.tensors.back().dims = {32, 40 * 1000};
    expect_refused(write("shape.gguf", b.bytes()), {});
  }
  {
    GgufBuilder b(config_);
    b.tensors[5].dims = {32, 33};  // wrong shape for the config
    expect_refused(write("config-shape.gguf", b.bytes()), {b.tensors[5].name, "shape"});
  }
  {
    GgufBuilder b(config_);
    b.tensors[2].dims = {1ull << 40, 1ull << 40};  // element count overflows
    expect_refused(write("overflow.gguf", b.bytes()), {b.tensors[2].name});
  }
  {
    GgufBuilder b(config_);
    b.tensors[0].type = 8;  // Q8_0 with rows of 32: fine in size, but lies about its bytes
    b.tensors[0].dims = {33, 40};
    expect_refused(write("q8.gguf", b.bytes()), {"token_embd.weight"});
  }
  {
    GgufBuilder b(config_);
    b.tensors.erase(b.tensors.begin() + 6);  // drop blk.0.ffn_norm.weight
    b.u32_keys.push_back({"llama.rope.dimension_count", 16});
    expect_refused(write("missing.gguf", b.bytes()), {"missing tensor", "ffn_norm"});
  }
  {
    GgufBuilder b(config_);
    b.arch = "gpt2";
    expect_refused(write("arch.gguf", b.bytes()), {"gpt2"});
  }
  {
    GgufBuilder b(config_);
    b.version = 7;
    expect_refused(write("version.gguf", b.bytes()), {"version 7"});
  }
  {
    GgufBuilder b(config_);
    b.u32_keys[2].second = 3;  // head count 3 does not divide... dims
    expect_refused(write("heads.gguf", b.bytes()), {});
  }
  expect_refused(write("magic.gguf", "NOTGGUF-at-all-and-long-enough-to-read"), {"magic"});
}

// --- safetensors ------------------------------------------------------------------------

class BadSafetensors : public BadFiles {
 protected:
  // A valid directory, then the header of model.safetensors replaced by `edit(header)`.
  std::filesystem::path make(const std::string& name,
                             const std::function<void(nlohmann::json&)>& edit,
                             std::int64_t trim_bytes = 0,
                             std::optional<std::uint64_t> len_override = {}) {
    const auto dir = dir_.path() / name;
    write_safetensors(make_synthetic_llama(config_, 1), dir, DType::kF32);
    const auto file = dir / "model.safetensors";
    std::ifstream in(file, std::ios::binary);
    std::string all((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    std::uint64_t len;
    std::memcpy(&len, all.data(), 8);
    auto header = nlohmann::json::parse(all.substr(8, len));
    const std::string data = all.substr(8 + len);
    edit(header);
    const std::string text = header.dump();
    const std::uint64_t new_len = len_override.value_or(text.size());
    std::string out(reinterpret_cast<const char*>(&new_len), 8);
    out += text + data;
    out.resize(static_cast<std::size_t>(static_cast<std::int64_t>(out.size()) - trim_bytes));
    std::ofstream(file, std::ios::binary | std::ios::trunc)
        .write(out.data(), static_cast<std::streamsize>(out.size()));
    return dir;
  }
  void expect_dir_refused(const std::filesystem::path& dir,
                          std::initializer_list<std::string> fragments) {
    try {
      open_model_file(dir);
      ADD_FAILURE() << dir << " was accepted";
    } catch (const FormatError& e) {
      const std::string what = e.what();
      EXPECT_NE(what.find(dir.filename().string()), std::string::npos) << what;
      for (const auto& f : fragments)
        EXPECT_NE(what.find(f), std::string::npos) << "'" << f << "' not in: " << what;
    }
  }
};

const char* kQ = "model.layers.0.self_attn.q_proj.weight";

TEST_F(BadSafetensors, AValidDirectoryIsAccepted) {
  EXPECT_NO_THROW(open_model_file(make("good", [](nlohmann::json&) {})));
}

TEST_F(BadSafetensors, HeaderLengthsThatLie) {
  expect_dir_refused(make(
                         "biglen", [](nlohmann::json&) {}, 0, 1ull << 40),
                     {"header length"});
  expect_dir_refused(make(
                         "hugelen", [](nlohmann::json&) {}, 0, ~0ull),
                     {"header length"});
  expect_dir_refused(make(
                         "shortlen", [](nlohmann::json&) {}, 0, 5),
                     {"JSON"});
}

TEST_F(BadSafetensors, TensorsThatLie) {
  expect_dir_refused(make("dtype", [](nlohmann::json& h) { h[kQ]["dtype"] = "F64"; }), {kQ, "F64"});
  expect_dir_refused(make("shape",
                          [](nlohmann::json& h) {
                            h[kQ]["shape"] = {32, 31};
                          }),
                     {kQ, "bytes"});
  expect_dir_refused(make("range",
                          [](nlohmann::json& h) {
                            h[kQ]["data_offsets"] = {1ull << 40, (1ull << 40) + 4096};
                          }),
                     {kQ, "outside"});
  expect_dir_refused(make("reversed",
                          [](nlohmann::json& h) {
                            h[kQ]["data_offsets"] = {4096, 0};
                          }),
                     {kQ});
  expect_dir_refused(make("overlap",
                          [](nlohmann::json& h) {
                            h["model.layers.0.self_attn.k_proj.weight"]["data_offsets"] =
                                h[kQ]["data_offsets"];
                            h["model.layers.0.self_attn.k_proj.weight"]["shape"] = h[kQ]["shape"];
                          }),
                     {"overlap"});
  expect_dir_refused(make("missing", [](nlohmann::json& h) { h.erase(kQ); }),
                     {"missing tensor", "attn_q"});
  expect_dir_refused(make("notobject",
                          [](nlohmann::json& h) {
                            h = nlohmann::json::array({1, 2});
                          }),
                     {"object"});
  expect_dir_refused(make(
                         "truncated", [](nlohmann::json&) {}, 100),
                     {"outside"});
  expect_dir_refused(make("negative", [](nlohmann::json& h) { h[kQ]["shape"] = {-1, 32}; }), {kQ});
}

TEST_F(BadSafetensors, BrokenConfigAndIndex) {
  const auto dir = make("config", [](nlohmann::json&) {});
  std::ofstream(dir / "config.json")
      << R"({"architectures": ["GPT2LMHeadModel"], "hidden_size": 32})";
  expect_dir_refused(dir, {"config.json", "LlamaForCausalLM"});
  std::ofstream(dir / "config.json") << "{not json";
  expect_dir_refused(dir, {"config.json"});
  const auto sharded = dir_.path() / "sharded";
  write_safetensors(make_synthetic_llama(config_, 1), sharded, DType::kF32, 2);
  std::ofstream(sharded / "model.safetensors.index.json")
      << R"({"weight_map": {"lm_head.weight": "../../etc/passwd"}})";
  expect_dir_refused(sharded, {"plain file name"});
}

TEST_F(BadFiles, MissingFilesAreClear) {
  expect_refused(dir_.path() / "nope.gguf", {"no such file"});
}

}  // namespace
}  // namespace xlshare
