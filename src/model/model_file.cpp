#include "xlshare/model/model_file.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <map>
#include <optional>
#include <regex>
#include <variant>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "common/unique_fd.hpp"
#include "xlshare/error.hpp"

namespace xlshare {
namespace fs = std::filesystem;

std::uint64_t ModelFile::total_bytes() const noexcept {
  std::uint64_t n = 0;
  for (const auto& t : tensors) n += t.size_bytes;
  return n;
}

const FileTensor* ModelFile::find(const std::string& name) const noexcept {
  for (const auto& t : tensors) {
    if (t.name == name) return &t;
  }
  return nullptr;
}

namespace {

[[noreturn]] void fail(const fs::path& file, const std::string& what) {
  throw FormatError(fmt::format("{}: {}", file.string(), what));
}

// A file opened for reading, with its size.
struct OpenFile {
  detail::UniqueFd fd;
  std::uint64_t size = 0;
};

OpenFile open_file(const fs::path& path) {
  OpenFile f;
  f.fd = detail::UniqueFd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!f.fd) {
    if (errno == ENOENT) fail(path, "no such file");
    throw BackendError(errno_message(path.string() + ": open", errno));
  }
  struct stat st {};
  if (::fstat(f.fd.get(), &st) != 0)
    throw BackendError(errno_message(path.string() + ": fstat", errno));
  if (!S_ISREG(st.st_mode)) fail(path, "not a regular file");
  f.size = static_cast<std::uint64_t>(st.st_size);
  return f;
}

// Reads exactly dst.size() bytes at `offset`. Returns false on a short read.
bool pread_all(int fd, std::uint64_t offset, std::span<std::byte> dst) {
  std::size_t done = 0;
  while (done < dst.size()) {
    const ssize_t n =
        ::pread(fd, dst.data() + done, dst.size() - done, static_cast<off_t>(offset + done));
    if (n < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    if (n == 0) return false;
    done += static_cast<std::size_t>(n);
  }
  return true;
}

// Sequential, bounds-checked reading of a file's header through a buffer.
class HeaderReader {
 public:
  HeaderReader(const OpenFile& f, const fs::path& path) : f_(f), path_(path) {}
  std::uint64_t position() const noexcept { return pos_; }
  std::uint64_t remaining() const noexcept { return f_.size - pos_; }

  void read(void* dst, std::uint64_t n, const char* what) {
    if (n > remaining()) {
      fail(path_, fmt::format("truncated: {} needs {} bytes at offset {}, the file has {} left",
                              what, n, pos_, remaining()));
    }
    auto* out = static_cast<std::byte*>(dst);
    while (n > 0) {
      if (buf_pos_ >= buf_len_) refill();
      const std::uint64_t k = std::min<std::uint64_t>(n, buf_len_ - buf_pos_);
      std::memcpy(out, buf_.data() + buf_pos_, k);
      out += k;
      buf_pos_ += k;
      pos_ += k;
      n -= k;
    }
  }
  template <typename T>
  T scalar(const char* what) {
    T v;
    read(&v, sizeof v, what);
    return v;
  }
  std::string string(const char* what, std::uint64_t max_bytes) {
    const auto n = scalar<std::uint64_t>(what);
    if (n > remaining())
      fail(path_, fmt::format("{} claims {} bytes but only {} remain", what, n, remaining()));
    if (n > max_bytes)
      fail(path_, fmt::format("{} is {} bytes long (at most {} accepted)", what, n, max_bytes));
    std::string s(n, '\0');
    read(s.data(), n, what);
    return s;
  }
  void skip(std::uint64_t n, const char* what) {
    if (n > remaining())
      fail(path_, fmt::format("truncated: {} needs {} bytes, {} remain", what, n, remaining()));
    const std::uint64_t buffered = buf_len_ - buf_pos_;
    if (n <= buffered) {
      buf_pos_ += n;
    } else {
      buf_pos_ = buf_len_ = 0;
      file_pos_ = pos_ + n;
    }
    pos_ += n;
  }

 private:
  void refill() {
    buf_.resize(1u << 20);
    const std::uint64_t want = std::min<std::uint64_t>(buf_.size(), f_.size - file_pos_);
    if (!pread_all(f_.fd.get(), file_pos_, std::span(buf_).first(want))) fail(path_, "read error");
    buf_len_ = want;
    buf_pos_ = 0;
    file_pos_ += want;
  }
  const OpenFile& f_;
  const fs::path& path_;
  std::vector<std::byte> buf_;
  std::uint64_t buf_len_ = 0, buf_pos_ = 0, file_pos_ = 0, pos_ = 0;
};

std::uint64_t checked_bytes(const fs::path& path, const std::string& tensor, DType dtype,
                            const std::array<std::uint64_t, 4>& shape, std::uint32_t n_dims) {
  std::uint64_t n = 1;
  for (std::uint32_t d = 0; d < n_dims; ++d) {
    if (shape[d] == 0) fail(path, fmt::format("tensor '{}': dimension {} is 0", tensor, d));
    if (n > UINT64_MAX / shape[d])
      fail(path, fmt::format("tensor '{}': element count overflows", tensor));
    n *= shape[d];
  }
  const auto bytes = dtype_bytes(dtype, n);
  if (!bytes) {
    fail(path, fmt::format("tensor '{}': {} elements are not a whole number of {} blocks", tensor,
                           n, to_string(dtype)));
  }
  return *bytes;
}

// Every tensor's bytes lie inside the file and no two overlap.
void check_extents(const fs::path& path, std::vector<const FileTensor*> tensors,
                   std::uint64_t begin, std::uint64_t end) {
  for (const auto* t : tensors) {
    if (t->offset_bytes < begin || t->offset_bytes > end || t->size_bytes > end - t->offset_bytes) {
      fail(path,
           fmt::format("tensor '{}': its data [{}, +{}) lies outside the file's data ({} bytes)",
                       t->source_name, t->offset_bytes, t->size_bytes, end));
    }
  }
  std::sort(tensors.begin(), tensors.end(), [](const FileTensor* a, const FileTensor* b) {
    return a->offset_bytes < b->offset_bytes;
  });
  for (std::size_t i = 1; i < tensors.size(); ++i) {
    if (tensors[i - 1]->offset_bytes + tensors[i - 1]->size_bytes > tensors[i]->offset_bytes) {
      fail(path, fmt::format("tensors '{}' and '{}' overlap", tensors[i - 1]->source_name,
                             tensors[i]->source_name));
    }
  }
}

// Picks the tensors the config needs, in order, and checks their shapes.
std::vector<FileTensor> select_tensors(const fs::path& path, const LlamaConfig& config,
                                       std::map<std::string, FileTensor>& by_name) {
  std::vector<FileTensor> out;
  for (const auto& spec : llama_tensor_specs(config)) {
    auto it = by_name.find(spec.name);
    if (it == by_name.end()) fail(path, fmt::format("missing tensor '{}'", spec.name));
    FileTensor& t = it->second;
    bool same = t.n_dims == spec.shape.size();
    for (std::size_t d = 0; same && d < spec.shape.size(); ++d) same = t.shape[d] == spec.shape[d];
    if (!same) {
      std::string want, got;
      for (auto d : spec.shape) want += fmt::format("{}{}", want.empty() ? "" : " x ", d);
      for (std::uint32_t d = 0; d < t.n_dims; ++d)
        got += fmt::format("{}{}", d ? " x " : "", t.shape[d]);
      fail(path, fmt::format("tensor '{}' has shape [{}]; the model config needs [{}]",
                             t.source_name, got, want));
    }
    out.push_back(t);
  }
  return out;
}

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
    case 8:
      return DType::kQ8_0;
    case 30:
      return DType::kBF16;
    default:
      return std::nullopt;
  }
}

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
  for (std::uint64_t i = 0; i < n_kv; ++i) {
    std::string key = r.string("a key", 1u << 16);
    const auto type = r.scalar<std::uint32_t>("a value type");
    if (type == kString) {
      kv[key] = r.string(("the value of " + key).c_str(), 1u << 26);
    } else if (type == kArray) {
      const auto elem = r.scalar<std::uint32_t>("an array type");
      const auto n = r.scalar<std::uint64_t>("an array length");
      if (elem == kString) {
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
      fail(
          path,
          fmt::format(
              "tensor '{}' has ggml type {}, which xlshare does not support (F32, F16, BF16, Q8_0)",
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
  c.validate(path.string());

  ModelFile m;
  m.path = path;
  m.format = ModelFormat::kGguf;
  m.config = c;
  m.tensors = select_tensors(path, c, by_name);
  return m;
}

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

}  // namespace

ModelFile open_model_file(const fs::path& path) {
  std::error_code ec;
  if (!fs::exists(path, ec)) fail(path, "no such file or directory");
  if (fs::is_directory(path, ec)) return open_hf(path);
  if (path.extension() == ".safetensors") return open_hf(path);
  return open_gguf(path);
}

void read_tensor_data(const FileTensor& t, std::span<std::byte> dst) {
  if (dst.size() != t.size_bytes) {
    throw FormatError(fmt::format("{}: tensor '{}': buffer of {} bytes for {} bytes",
                                  t.path.string(), t.source_name, dst.size(), t.size_bytes));
  }
  const OpenFile f = open_file(t.path);
  if (t.offset_bytes > f.size || t.size_bytes > f.size - t.offset_bytes) {
    fail(t.path, fmt::format("tensor '{}': the file shrank below its data", t.source_name));
  }
  if (!pread_all(f.fd.get(), t.offset_bytes, dst))
    fail(t.path, fmt::format("tensor '{}': short read", t.source_name));
  if (t.permute_heads == 0) return;
  // Rotate-half (Hugging Face) -> interleaved (GGUF) row order, head by head:
  // within a head of hd rows, row half*hd/2 + i moves to 2i + half.
  const std::uint64_t rows = t.shape[1];
  const std::uint64_t row_bytes = t.size_bytes / rows;
  if (rows % t.permute_heads != 0 || (rows / t.permute_heads) % 2 != 0) {
    fail(t.path, fmt::format("tensor '{}': {} rows do not split into {} heads of even size",
                             t.source_name, rows, t.permute_heads));
  }
  const std::uint64_t hd = rows / t.permute_heads;
  std::vector<std::byte> head(hd * row_bytes);
  for (std::uint64_t h = 0; h < t.permute_heads; ++h) {
    std::byte* base = dst.data() + h * hd * row_bytes;
    std::memcpy(head.data(), base, head.size());
    for (std::uint64_t half = 0; half < 2; ++half) {
      for (std::uint64_t i = 0; i < hd / 2; ++i) {
        std::memcpy(base + (2 * i + half) * row_bytes,
                    head.data() + (half * hd / 2 + i) * row_bytes, row_bytes);
      }
    }
  }
}

}  // namespace xlshare
