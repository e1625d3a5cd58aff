#include "xlshare/model/model_loader.hpp"

#include <algorithm>
#include <cstring>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include "xlshare/error.hpp"
#include "xlshare/log.hpp"

namespace xlshare {

std::shared_ptr<const ModelView> load_model_into_pool(const ModelFile& file, Pool& pool,
                                                      std::string_view name,
                                                      const LoadProgress& progress) {
  ModelWriter writer = pool.begin_model(name);  // abandoned by its destructor on any throw
  const std::uint64_t total = file.total_bytes();
  std::uint64_t done = 0;
  int logged_tenths = 0;  // progress in the log at every tenth of the bytes (-vv)
  for (const FileTensor& t : file.tensors) {
    auto dst = writer.add_tensor(t.name, t.dtype, std::span(t.shape.data(), t.n_dims));
    read_tensor_data(t, dst);
    done += t.size_bytes;
    if (progress) progress(done, total, t.name);
    const int tenths = total ? static_cast<int>(done * 10 / total) : 10;
    if (tenths > logged_tenths) {
      logged_tenths = tenths;
      logger().debug("loading '{}' into {}: {}% ({:.1f} of {:.1f} MiB)", name, pool.uri(),
                     tenths * 10, static_cast<double>(done) / 1048576.0,
                     static_cast<double>(total) / 1048576.0);
    }
  }
  writer.set_metadata(model_metadata(LlamaModel::from_file(file), file.path.string(),
                                     file.format == ModelFormat::kGguf ? "gguf" : "safetensors",
                                     file.tokenizer ? &*file.tokenizer : nullptr));
  writer.seal();
  return pool.model(name);
}

namespace {

constexpr char kBase64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

std::string base64_encode(std::string_view in) {
  std::string out;
  out.reserve((in.size() + 2) / 3 * 4);
  for (std::size_t i = 0; i < in.size(); i += 3) {
    std::uint32_t v = static_cast<std::uint8_t>(in[i]) << 16;
    if (i + 1 < in.size()) v |= static_cast<std::uint8_t>(in[i + 1]) << 8;
    if (i + 2 < in.size()) v |= static_cast<std::uint8_t>(in[i + 2]);
    out += kBase64[(v >> 18) & 63];
    out += kBase64[(v >> 12) & 63];
    out += i + 1 < in.size() ? kBase64[(v >> 6) & 63] : '=';
    out += i + 2 < in.size() ? kBase64[v & 63] : '=';
  }
  return out;
}

std::string base64_decode(std::string_view in, const std::string& where) {
  if (in.size() % 4 != 0)
    throw FormatError(fmt::format("{}: tokenizer: base64 of {} characters", where, in.size()));
  std::string out;
  out.reserve(in.size() / 4 * 3);
  for (std::size_t i = 0; i < in.size(); i += 4) {
    std::uint32_t v = 0;
    int pad = 0;
    for (std::size_t k = 0; k < 4; ++k) {
      const char c = in[i + k];
      const char* p = c == '\0' ? nullptr : std::strchr(kBase64, c);
      const bool tail = i + 4 == in.size() && k >= 2 && c == '=' && (k == 3 || in[i + 3] == '=');
      if (p == nullptr && !tail)
        throw FormatError(fmt::format("{}: tokenizer: not base64 at character {}", where, i + k));
      pad += tail ? 1 : 0;
      v = (v << 6) | (tail ? 0u : static_cast<std::uint32_t>(p - kBase64));
    }
    out += static_cast<char>((v >> 16) & 255);
    if (pad < 2) out += static_cast<char>((v >> 8) & 255);
    if (pad < 1) out += static_cast<char>(v & 255);
  }
  return out;
}

}  // namespace

std::optional<TokenizerData> pool_tokenizer(const ModelView& view) {
  const std::string where = fmt::format("model '{}'", view.name());
  std::string encoded;
  LlamaConfig config;
  try {
    const auto j = nlohmann::json::parse(view.metadata());
    if (!j.contains("tokenizer")) return std::nullopt;  // none, or loaded before they were kept
    j.at("tokenizer").get_to(encoded);
    config = LlamaConfig::from_json(j.at("config").dump(), where);
  } catch (const nlohmann::json::exception& e) {
    throw FormatError(
        fmt::format("{}: its metadata holds no usable tokenizer ({})", where, e.what()));
  }
  return parse_tokenizer(base64_decode(encoded, where), config.vocab, where);
}

std::string model_metadata(const LlamaModel& model, std::string_view source,
                           std::string_view source_format, const TokenizerData* tokenizer) {
  nlohmann::json schedule = nlohmann::json::array();
  for (const auto& step : model.schedule().steps()) {
    nlohmann::json names = nlohmann::json::array();
    for (auto k : step.keys) names.push_back(model.tensors()[k].name);
    schedule.push_back({{"step", step.name}, {"tensors", names}});
  }
  nlohmann::json j{{"format", "xlshare-llama/1"},
                   {"config", model.config()},
                   {"schedule", schedule},
                   {"source", source},
                   {"source_format", source_format}};
  if (tokenizer != nullptr) j["tokenizer"] = base64_encode(serialize_tokenizer(*tokenizer));
  return j.dump();
}

SpanWeights pool_weights(const Pool& pool, const ModelView& view) {
  std::vector<std::span<const std::byte>> spans;
  for (const auto& t : view.tensors()) {
    auto s = pool.view(t);
    if (s.size() != t.size_bytes)
      throw PoolError("pool_weights: a tensor lies outside the pool mapping");
    // The mapping is read in place: nothing else checks these bytes before compute does.
    if (!pool.verify(t)) {
      throw PoolError(fmt::format("{}: tensor '{}' of model '{}' does not match its checksum",
                                  pool.uri(), t.name, view.name()));
    }
    spans.push_back(s);
  }
  return SpanWeights(std::move(spans));
}

void check_same_model(const Pool& primary, const ModelView& view, const Pool& replica,
                      const ModelView& replica_view) {
  const auto differ = [&](const std::string& what) {
    return PoolError(fmt::format("replica pool {} holds a different model '{}' than pool {}: {}",
                                 replica.uri(), replica_view.name(), primary.uri(), what));
  };
  const auto a = view.tensors(), b = replica_view.tensors();
  if (a.size() != b.size())
    throw differ(fmt::format("it has {} tensors, not {}", b.size(), a.size()));
  const auto shape = [](const TensorInfo& t) {
    return fmt::format("[{}]", fmt::join(std::span(t.shape.data(), t.n_dims), ", "));
  };
  for (std::size_t i = 0; i < a.size(); ++i) {
    const TensorInfo &p = a[i], &r = b[i];
    if (p.name != r.name)
      throw differ(fmt::format("tensor {} is '{}', not '{}'", i, r.name, p.name));
    if (p.dtype != r.dtype) {
      throw differ(fmt::format("tensor '{}' differs in its dtype ({}, not {})", p.name,
                               to_string(r.dtype), to_string(p.dtype)));
    }
    if (p.n_dims != r.n_dims || p.shape != r.shape) {
      throw differ(
          fmt::format("tensor '{}' differs in its shape ({}, not {})", p.name, shape(r), shape(p)));
    }
    if (p.size_bytes != r.size_bytes) {
      throw differ(fmt::format("tensor '{}' differs in its size ({} bytes, not {})", p.name,
                               r.size_bytes, p.size_bytes));
    }
    if (p.checksum != r.checksum) {
      throw differ(fmt::format("tensor '{}' differs in its checksum ({:016x}, not {:016x})", p.name,
                               r.checksum, p.checksum));
    }
    if (p.tile_bytes != r.tile_bytes ||
        !std::ranges::equal(p.tile_checksums(), r.tile_checksums())) {
      throw differ(fmt::format("tensor '{}' differs in its tiles ({} bytes each, not {})", p.name,
                               r.tile_bytes, p.tile_bytes));
    }
  }
}

}  // namespace xlshare
