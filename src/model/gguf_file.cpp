// Reading a GGUF file: its header, metadata, tensor table and the checks on each.
#include "model/model_file_detail.hpp"
#include "xlshare/log.hpp"
#include "xlshare/model/tokenizer.hpp"

namespace xlshare::model_file_detail {
namespace {

// --- GGUF --------------------------------------------------------------------------------

enum GgufType : std::uint32_t {
  kU8 = 0,
  kI8,
  kU16,
  kI16,
  kU32,
  kI32,
  kF32,
  kBool,
  kString,
  kArray,
  kU64,
  kI64,
  kF64,
};

using GgufValue = std::variant<std::uint64_t, std::int64_t, double, bool, std::string>;

std::uint64_t scalar_size(std::uint32_t type) {
  switch (type) {
    case kU8:
    case kI8:
    case kBool:
      return 1;
    case kU16:
    case kI16:
      return 2;
    case kU32:
    case kI32:
    case kF32:
      return 4;
    case kU64:
    case kI64:
    case kF64:
      return 8;
    default:
      return 0;
  }
}

GgufValue read_scalar(HeaderReader& r, std::uint32_t type) {
  switch (type) {
    case kU8:
      return std::uint64_t{r.scalar<std::uint8_t>("a value")};
    case kI8:
      return std::int64_t{r.scalar<std::int8_t>("a value")};
    case kU16:
      return std::uint64_t{r.scalar<std::uint16_t>("a value")};
    case kI16:
      return std::int64_t{r.scalar<std::int16_t>("a value")};
    case kU32:
      return std::uint64_t{r.scalar<std::uint32_t>("a value")};
    case kI32:
      return std::int64_t{r.scalar<std::int32_t>("a value")};
    case kF32:
      return double{r.scalar<float>("a value")};
    case kBool:
      return r.scalar<std::uint8_t>("a value") != 0;
    case kU64:
      return r.scalar<std::uint64_t>("a value");
    case kI64:
      return r.scalar<std::int64_t>("a value");
    case kF64:
      return r.scalar<double>("a value");
    default:
      return std::uint64_t{0};
  }
}

std::optional<DType> ggml_type(std::uint32_t t) {
  switch (t) {
    case 0:
      return DType::kF32;
    case 1:
      return DType::kF16;
    case 2:
      return DType::kQ4_0;
    case 3:
      return DType::kQ4_1;
    case 6:
      return DType::kQ5_0;
    case 7:
      return DType::kQ5_1;
    case 8:
      return DType::kQ8_0;
    case 10:
      return DType::kQ2_K;
    case 11:
      return DType::kQ3_K;
    case 12:
      return DType::kQ4_K;
    case 13:
      return DType::kQ5_K;
    case 14:
      return DType::kQ6_K;
    case 30:
      return DType::kBF16;
    default:
      return std::nullopt;
  }
}

// The tokenizer.ggml.* arrays, read instead of skipped (other arrays are skipped).
struct TokenizerArrays {
  std::optional<std::vector<std::string>> tokens, merges;
  std::optional<std::vector<float>> scores;
  std::optional<std::vector<std::int32_t>> types;
  std::uint64_t string_bytes = 0;  // of both string arrays, against kMaxTokenizerBytes
};

void read_tokenizer_array(HeaderReader& r, const fs::path& path, const std::string& key,
                          std::uint32_t elem, std::uint64_t n, TokenizerArrays& a) {
  auto expect = [&](std::initializer_list<std::uint32_t> types, const char* what) {
    if (std::find(types.begin(), types.end(), elem) == types.end())
      fail(path, fmt::format("key '{}' is an array of type {}, not of {}", key, elem, what));
  };
  const std::uint64_t size = elem == kString ? 8 : scalar_size(elem);
  if (size == 0) fail(path, fmt::format("array '{}' has unknown element type {}", key, elem));
  if (n > r.remaining() / size || n > kMaxTokenizerTokens) {
    fail(path, fmt::format("array '{}' claims {} elements; the file cannot hold them (or more "
                           "than {})",
                           key, n, kMaxTokenizerTokens));
  }
  if (key == "tokenizer.ggml.tokens" || key == "tokenizer.ggml.merges") {
    expect({kString}, "strings");
    const std::string what = "a string of " + key;
    std::vector<std::string> out(n);
    for (auto& s : out) {
      s = r.string(what.c_str(), kMaxTokenBytes);
      a.string_bytes += s.size();
      if (a.string_bytes > kMaxTokenizerBytes) {
        fail(path, fmt::format("key '{}': the tokenizer's strings exceed {} bytes", key,
                               kMaxTokenizerBytes));
      }
    }
    (key == "tokenizer.ggml.tokens" ? a.tokens : a.merges) = std::move(out);
  } else if (key == "tokenizer.ggml.scores") {
    expect({kF32}, "f32");
    std::vector<float> out(n);
    r.read(out.data(), n * 4, "tokenizer.ggml.scores");
    a.scores = std::move(out);
  } else if (key == "tokenizer.ggml.token_type") {
    expect({kI32, kU32}, "i32");
    std::vector<std::int32_t> out(n);
    r.read(out.data(), n * 4, "tokenizer.ggml.token_type");
    a.types = std::move(out);
  } else {
    r.skip(n * size, "an array");  // e.g. tokenizer.ggml.precompiled_charsmap: not used
  }
}

// The file's tokenizer, validated against the vocabulary of `vocab` rows: std::nullopt
// without one ("none", absent) or with a kind xlshare does not implement (logged).
std::optional<TokenizerData> read_tokenizer(const fs::path& path,
                                            const std::map<std::string, GgufValue>& kv,
                                            TokenizerArrays arrays, std::uint32_t vocab) {
  auto str = [&](const std::string& key) -> std::optional<std::string> {
    const auto it = kv.find(key);
    if (it == kv.end()) return std::nullopt;
    if (const auto* s = std::get_if<std::string>(&it->second)) return *s;
    fail(path, fmt::format("key '{}' is not a string", key));
  };
  const std::string model = str("tokenizer.ggml.model").value_or("none");
  const std::string pre = str("tokenizer.ggml.pre").value_or("");
  if (model == "none") return std::nullopt;
  if (!tokenizer_supported(model, pre)) {
    logger().warn(
        "{}: tokenizer '{}' (pre-tokenizer '{}') is not supported; the model takes "
        "token ids only",
        path.string(), model, pre);
    return std::nullopt;
  }
  TokenizerData d =
      TokenizerData::defaults(model == "llama" ? TokenizerKind::kSpm : TokenizerKind::kBpe, pre);
  if (!arrays.tokens) fail(path, "key 'tokenizer.ggml.tokens' is missing");
  d.tokens = std::move(*arrays.tokens);
  if (arrays.scores) d.scores = std::move(*arrays.scores);
  if (arrays.types) d.types = std::move(*arrays.types);
  if (arrays.merges) d.merges = std::move(*arrays.merges);
  if (d.kind == TokenizerKind::kBpe && !arrays.merges)
    fail(path, "key 'tokenizer.ggml.merges' is missing (a gpt2 tokenizer needs it)");
  auto id = [&](const char* name, std::int32_t& out) {
    const std::string key = std::string("tokenizer.ggml.") + name;
    const auto it = kv.find(key);
    if (it == kv.end()) return;
    std::int64_t v = -1;
    if (const auto* u = std::get_if<std::uint64_t>(&it->second)) {
      v = *u > static_cast<std::uint64_t>(INT32_MAX) ? INT64_MAX : static_cast<std::int64_t>(*u);
    } else if (const auto* s = std::get_if<std::int64_t>(&it->second)) {
      v = *s;
    } else {
      fail(path, fmt::format("key '{}' is not an integer", key));
    }
    if (v < 0 || v >= static_cast<std::int64_t>(d.tokens.size())) {
      fail(path, fmt::format("key '{}' = {} is outside the {} tokens", key, v, d.tokens.size()));
    }
    out = static_cast<std::int32_t>(v);
  };
  id("bos_token_id", d.bos_id);
  id("eos_token_id", d.eos_id);
  id("unknown_token_id", d.unk_id);
  id("padding_token_id", d.pad_id);
  auto flag = [&](const char* name, bool& out) {
    const std::string key = std::string("tokenizer.ggml.") + name;
    const auto it = kv.find(key);
    if (it == kv.end()) return;
    const auto* b = std::get_if<bool>(&it->second);
    if (b == nullptr) fail(path, fmt::format("key '{}' is not a bool", key));
    out = *b;
  };
  flag("add_bos_token", d.add_bos);
  flag("add_eos_token", d.add_eos);
  flag("add_space_prefix", d.add_space_prefix);
  d.validate(vocab, path.string());
  return d;
}

}  // namespace

ModelFile open_gguf(const fs::path& path) {
  const OpenFile f = open_file(path);
  HeaderReader r(f, path);
  char magic[4];
  r.read(magic, 4, "the magic");
  if (std::memcmp(magic, "GGUF", 4) != 0) fail(path, "not a GGUF file (bad magic)");
  const auto version = r.scalar<std::uint32_t>("the version");
  if (version != 2 && version != 3)
    fail(path, fmt::format("GGUF version {} is not supported (2 and 3 are)", version));
  const auto n_tensors = r.scalar<std::uint64_t>("the tensor count");
  const auto n_kv = r.scalar<std::uint64_t>("the key-value count");
  // The smallest key-value pair is 13 bytes and the smallest tensor info 25: a count the
  // rest of the file cannot hold is a lie.
  if (n_kv > r.remaining() / 13)
    fail(path, fmt::format("claims {} key-value pairs; the file cannot hold them", n_kv));
  if (n_tensors > r.remaining() / 25 || n_tensors > (1u << 20)) {
    fail(path, fmt::format("claims {} tensors; the file cannot hold them", n_tensors));
  }

  std::map<std::string, GgufValue> kv;
  TokenizerArrays arrays;
  for (std::uint64_t i = 0; i < n_kv; ++i) {
    std::string key = r.string("a key", 1u << 16);
    const auto type = r.scalar<std::uint32_t>("a value type");
    if (type == kString) {
      kv[key] = r.string(("the value of " + key).c_str(), 1u << 26);
    } else if (type == kArray) {
      const auto elem = r.scalar<std::uint32_t>("an array type");
      const auto n = r.scalar<std::uint64_t>("an array length");
      if (key.starts_with("tokenizer.ggml.")) {
        read_tokenizer_array(r, path, key, elem, n, arrays);
      } else if (elem == kString) {
        if (n > r.remaining() / 8)
          fail(path,
               fmt::format("array '{}' claims {} strings; the file cannot hold them", key, n));
        for (std::uint64_t k = 0; k < n; ++k) {
          const auto len = r.scalar<std::uint64_t>("a string length");
          r.skip(len, "a string");
        }
      } else {
        const std::uint64_t size = scalar_size(elem);
        if (size == 0) fail(path, fmt::format("array '{}' has unknown element type {}", key, elem));
        if (n > r.remaining() / size)
          fail(path,
               fmt::format("array '{}' claims {} elements; the file cannot hold them", key, n));
        r.skip(n * size, "an array");
      }
    } else if (scalar_size(type) != 0) {
      kv[key] = read_scalar(r, type);
    } else {
      fail(path, fmt::format("key '{}' has unknown value type {}", key, type));
    }
  }

  std::uint64_t alignment = 32;
  if (auto it = kv.find("general.alignment"); it != kv.end()) {
    const auto* a = std::get_if<std::uint64_t>(&it->second);
    if (a == nullptr || *a == 0 || (*a & (*a - 1)) != 0 || *a > (1u << 20)) {
      fail(path, "general.alignment is not a power of two up to 1 MiB");
    }
    alignment = *a;
  }

  std::map<std::string, FileTensor> by_name;
  std::vector<FileTensor> all;
  for (std::uint64_t i = 0; i < n_tensors; ++i) {
    FileTensor t;
    t.name = r.string("a tensor name", 1024);
    t.source_name = t.name;
    t.n_dims = r.scalar<std::uint32_t>("a tensor's dimension count");
    if (t.n_dims < 1 || t.n_dims > 4)
      fail(path, fmt::format("tensor '{}' has {} dimensions (1..4 supported)", t.name, t.n_dims));
    for (std::uint32_t d = 0; d < t.n_dims; ++d)
      t.shape[d] = r.scalar<std::uint64_t>("a tensor dimension");
    const auto type = r.scalar<std::uint32_t>("a tensor type");
    const auto dtype = ggml_type(type);
    if (!dtype) {
      fail(path,
           fmt::format(
               "tensor '{}' has ggml type {}, which xlshare does not support (F32, F16, BF16, "
               "Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K)",
               t.name, type));
    }
    t.dtype = *dtype;
    t.offset_bytes = r.scalar<std::uint64_t>("a tensor offset");
    if (t.offset_bytes % alignment != 0)
      fail(path, fmt::format("tensor '{}': offset {} is not aligned to {}", t.name, t.offset_bytes,
                             alignment));
    t.size_bytes = checked_bytes(path, t.name, t.dtype, t.shape, t.n_dims);
    t.path = path;
    if (by_name.count(t.name)) fail(path, fmt::format("tensor '{}' appears twice", t.name));
    all.push_back(t);
    by_name[t.name] = t;
  }
  const std::uint64_t data_start = (r.position() + alignment - 1) / alignment * alignment;
  if (data_start > f.size) fail(path, "truncated: the data section is missing");
  for (auto& t : all) {
    if (t.offset_bytes > f.size - data_start) {
      fail(path, fmt::format("tensor '{}': offset {} lies past the end of the file", t.name,
                             t.offset_bytes));
    }
    t.offset_bytes += data_start;
    by_name[t.name].offset_bytes = t.offset_bytes;
  }
  std::vector<const FileTensor*> ptrs;
  for (const auto& t : all) ptrs.push_back(&t);
  check_extents(path, ptrs, data_start, f.size);

  // The config.
  auto get_u = [&](const std::string& key, std::optional<std::uint64_t> fallback) -> std::uint64_t {
    auto it = kv.find(key);
    if (it == kv.end()) {
      if (fallback) return *fallback;
      fail(path, fmt::format("missing key '{}'", key));
    }
    if (const auto* u = std::get_if<std::uint64_t>(&it->second)) return *u;
    if (const auto* s = std::get_if<std::int64_t>(&it->second); s && *s >= 0)
      return static_cast<std::uint64_t>(*s);
    fail(path, fmt::format("key '{}' is not an unsigned integer", key));
  };
  auto get_f = [&](const std::string& key, double fallback) -> double {
    auto it = kv.find(key);
    if (it == kv.end()) return fallback;
    if (const auto* d = std::get_if<double>(&it->second)) return *d;
    fail(path, fmt::format("key '{}' is not a number", key));
  };
  auto arch = kv.find("general.architecture");
  if (arch == kv.end() || !std::holds_alternative<std::string>(arch->second))
    fail(path, "missing key 'general.architecture'");
  const std::string a = std::get<std::string>(arch->second);
  if (a != "llama") fail(path, fmt::format("architecture '{}' is not supported (llama is)", a));
  auto clamp32 = [&](std::uint64_t v, const char* key) -> std::uint32_t {
    if (v > UINT32_MAX) fail(path, fmt::format("key '{}' = {} is too large", key, v));
    return static_cast<std::uint32_t>(v);
  };
  LlamaConfig c;
  c.dim = clamp32(get_u("llama.embedding_length", std::nullopt), "llama.embedding_length");
  c.n_layers = clamp32(get_u("llama.block_count", std::nullopt), "llama.block_count");
  c.n_heads =
      clamp32(get_u("llama.attention.head_count", std::nullopt), "llama.attention.head_count");
  c.n_kv_heads =
      clamp32(get_u("llama.attention.head_count_kv", c.n_heads), "llama.attention.head_count_kv");
  c.ffn_dim =
      clamp32(get_u("llama.feed_forward_length", std::nullopt), "llama.feed_forward_length");
  c.context = clamp32(std::min<std::uint64_t>(get_u("llama.context_length", 2048), 1u << 20),
                      "llama.context_length");
  c.head_dim = clamp32(get_u("llama.rope.dimension_count", c.n_heads ? c.dim / c.n_heads : 0),
                       "llama.rope.dimension_count");
  c.rope_theta = get_f("llama.rope.freq_base", 10000.0);
  c.norm_eps = get_f("llama.attention.layer_norm_rms_epsilon", 1e-5);
  auto embd = by_name.find("token_embd.weight");
  if (embd == by_name.end()) fail(path, "missing tensor 'token_embd.weight'");
  if (embd->second.n_dims != 2) fail(path, "tensor 'token_embd.weight' is not a matrix");
  c.vocab = clamp32(embd->second.shape[1], "the vocabulary size");
  c.tie_embeddings = by_name.find("output.weight") == by_name.end();
  if (kv.count("tokenizer.ggml.eos_token_id")) {
    const std::uint64_t eos = get_u("tokenizer.ggml.eos_token_id", std::nullopt);
    if (eos >= c.vocab) {
      fail(path, fmt::format("tokenizer.ggml.eos_token_id {} is outside the vocabulary of {}", eos,
                             c.vocab));
    }
    c.eos_token_ids.push_back(static_cast<std::int32_t>(eos));
  }
  c.validate(path.string());

  ModelFile m;
  m.tokenizer = read_tokenizer(path, kv, std::move(arrays), c.vocab);
  m.path = path;
  m.format = ModelFormat::kGguf;
  m.config = c;
  m.tensors = select_tensors(path, c, by_name);
  return m;
}

}  // namespace xlshare::model_file_detail
