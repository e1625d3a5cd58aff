// The subcommands of the `xlshare` program. Each `add_*` registers its subcommands with the
// app; their callbacks run the command and throw on failure (main prints one line).
#pragma once

#include <CLI/CLI.hpp>
#include <cstdint>
#include <istream>
#include <optional>
#include <string>
#include <vector>

#include "option_checks.hpp"
#include "xlshare/engine/inference_engine.hpp"

namespace xlshare::cli {

/// `xlshare pool create|info|rm|reclaim`.
void add_pool_commands(CLI::App& app);
/// `xlshare load|synth|tokenize|generate|eval|worker|stats`.
void add_model_commands(CLI::App& app);
/// `xlshare plan`.
void add_plan_command(CLI::App& app);

/// `xlshare worker`: serves the JSONL requests of `requests` ("-": stdin) with an engine of
/// `config` on model `model`, results (and with `stream`, token events) to `out` ("-":
/// stdout). @throws ConfigError when requests failed (after serving the rest), and what
/// failed the pool, the link or the cache (after writing that request's error line).
void run_worker(const EngineConfig& config, const std::string& model, const std::string& requests,
                const std::string& out, bool stream);

/// "4096", "64K", "1.5G", "2 GiB" (CLI11's size units, 1024-based, any case) -> bytes.
/// @throws ConfigError for a sign, an exponent, an unknown unit or a fraction of a byte.
std::uint64_t parse_bytes(const std::string& text);
/// "1,2,3" -> token ids. @throws ConfigError.
std::vector<std::int32_t> parse_tokens(const std::string& text);
/// synth's --dtype: "f32", "f16", "bf16", "q8_0", "q4_k", "q6_k", or "q4_k_m" (llama.cpp's
/// mix of Q4_K and Q6_K: nullopt). @throws ConfigError.
std::optional<DType> parse_dtype_arg(const std::string& text);

/// Option checks (integer_in, real_in: option_checks.hpp, shared with the demo).
/// A size option as parse_bytes reads it, in lo..hi bytes.
CLI::Validator size_in(std::uint64_t lo, std::uint64_t hi);

/// Limits of generate -n and a worker request's max_new_tokens, and of a temperature (far
/// past any useful setting; 1 is the model's own odds).
constexpr std::uint64_t kMaxNewTokens = 1u << 20;
constexpr double kMaxTemperature = 100.0;

/// One non-blank line of a worker's requests: a request, or why it is not one.
struct RequestLine {
  std::size_t line = 0;      ///< 1-based line number in the file
  InferenceRequest request;  ///< request.id is always set (the line number when the line has none)
  std::string error;         ///< empty: `request` is valid
};
/// Line `number` (1-based) of a worker's requests.
RequestLine parse_request_line(const std::string& text, std::size_t number);
/// Parses worker requests, one JSON object per line; a bad line becomes an entry with `error`
/// set and never stops the lines after it.
std::vector<RequestLine> parse_request_lines(std::istream& in);

/// Parses worker requests, one JSON object per line. @throws ConfigError naming the first bad line.
std::vector<InferenceRequest> parse_requests(std::istream& in, const std::string& where);
std::vector<InferenceRequest> parse_requests_file(const std::string& path);

}  // namespace xlshare::cli
