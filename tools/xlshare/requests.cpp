// The requests `xlshare worker` reads: one JSON object per line, each checked field by
// field before anything is trusted.
#include <cmath>
#include <cstdint>
#include <fstream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "commands.hpp"
#include "xlshare/error.hpp"

namespace xlshare::cli {

RequestLine parse_request_line(const std::string& text, std::size_t number) {
  RequestLine l;
  l.line = number;
  l.request.id = std::to_string(number);
  // Each check sets the error and stops at the first problem; the id is read first so that
  // an error result names the request its sender knows.
  [&] {
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(text);
    } catch (const nlohmann::json::exception& e) {
      // "[json.exception.parse_error.101] parse error at line 1, column 2: ..." less its tag.
      const std::string what = e.what();
      const auto tag_end = what.find("] ");
      l.error =
          "not valid JSON: " + (tag_end == std::string::npos ? what : what.substr(tag_end + 2));
      return;
    }
    if (!j.is_object()) {
      l.error = "not a JSON object";
      return;
    }
    InferenceRequest& r = l.request;
    if (j.contains("id")) r.id = j["id"].is_string() ? j["id"].get<std::string>() : j["id"].dump();
    if (j.contains("prompt_text")) {  // tokenized by the engine at submit
      if (!j["prompt_text"].is_string() || j["prompt_text"].get<std::string>().empty()) {
        l.error = "\"prompt_text\" must be a non-empty string";
        return;
      }
      if (j.contains("prompt")) {
        l.error = "give \"prompt\" or \"prompt_text\", not both";
        return;
      }
      r.prompt_text = j["prompt_text"].get<std::string>();
    } else if (!j.contains("prompt") || !j["prompt"].is_array() || j["prompt"].empty()) {
      l.error = "\"prompt\" must be a non-empty array of token ids (or \"prompt_text\" a string)";
      return;
    }
    if (r.prompt_text.empty() && j["prompt"].size() > (1u << 20)) {
      l.error = "\"prompt\" is too long";
      return;
    }
    if (r.prompt_text.empty()) {
      for (const auto& t : j["prompt"]) {
        if (!t.is_number_integer() || t.get<std::int64_t>() < 0 ||
            t.get<std::int64_t>() > INT32_MAX) {
          l.error = "a prompt token is not a token id";
          return;
        }
        r.prompt.push_back(static_cast<std::int32_t>(t.get<std::int64_t>()));
      }
    }
    if (j.contains("max_new_tokens")) {
      if (!j["max_new_tokens"].is_number_unsigned() ||
          j["max_new_tokens"].get<std::uint64_t>() > kMaxNewTokens) {
        l.error = fmt::format("\"max_new_tokens\" must be an integer in 0..{}", kMaxNewTokens);
        return;
      }
      r.max_new_tokens = j["max_new_tokens"].get<std::size_t>();
    }
    // JSON has no NaN, but 1e999 reads as infinity: bound the reals as the options are.
    const auto real = [&](const char* key, double hi, float& to) {
      if (!j.contains(key)) return true;
      const auto& v = j[key];
      if (!v.is_number() || !std::isfinite(v.get<double>()) || v.get<double>() < 0 ||
          v.get<double>() > hi) {
        l.error = fmt::format("\"{}\" must be a number in 0..{}", key, hi);
        return false;
      }
      to = v.get<float>();
      return true;
    };
    if (!real("temperature", kMaxTemperature, r.sampling.temperature)) return;
    if (!real("top_p", 1.0, r.sampling.top_p)) return;
    if (j.contains("top_k")) {
      if (!j["top_k"].is_number_unsigned() || j["top_k"].get<std::uint64_t>() > UINT32_MAX) {
        l.error = fmt::format("\"top_k\" must be an integer in 0..{}", UINT32_MAX);
        return;
      }
      r.sampling.top_k = j["top_k"].get<std::uint32_t>();
    }
    if (j.contains("seed")) {
      if (!j["seed"].is_number_unsigned()) {
        l.error = "\"seed\" must be a non-negative integer";
        return;
      }
      r.sampling.seed = j["seed"].get<std::uint64_t>();
    }
    if (j.contains("ignore_eos")) {
      if (!j["ignore_eos"].is_boolean()) {
        l.error = "\"ignore_eos\" must be true or false";
        return;
      }
      r.ignore_eos = j["ignore_eos"].get<bool>();
    }
    if (j.contains("stop_token_ids")) {
      const auto& stops = j["stop_token_ids"];
      if (!stops.is_array() || stops.size() > 1024) {
        l.error = "\"stop_token_ids\" must be an array of at most 1024 token ids";
        return;
      }
      for (const auto& t : stops) {
        if (!t.is_number_integer() || t.get<std::int64_t>() < 0 ||
            t.get<std::int64_t>() > INT32_MAX) {
          l.error = "a stop token is not a token id";
          return;
        }
        r.stop_token_ids.push_back(static_cast<std::int32_t>(t.get<std::int64_t>()));
      }
    }
  }();
  return l;
}

std::vector<RequestLine> parse_request_lines(std::istream& in) {
  std::vector<RequestLine> out;
  std::string text;
  std::size_t number = 0;
  while (std::getline(in, text)) {
    ++number;
    if (text.find_first_not_of(" \t\r") == std::string::npos) continue;
    out.push_back(parse_request_line(text, number));
  }
  return out;
}

std::vector<InferenceRequest> parse_requests(std::istream& in, const std::string& where) {
  std::vector<InferenceRequest> out;
  for (auto& l : parse_request_lines(in)) {
    if (!l.error.empty()) throw ConfigError(fmt::format("{}:{}: {}", where, l.line, l.error));
    out.push_back(std::move(l.request));
  }
  return out;
}

std::vector<InferenceRequest> parse_requests_file(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw ConfigError(fmt::format("{}: cannot open the requests file", path));
  return parse_requests(in, path);
}

}  // namespace xlshare::cli
