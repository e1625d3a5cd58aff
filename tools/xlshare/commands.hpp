// The subcommands of the `xlshare` program. Each `add_*` registers its subcommands with the
// app; their callbacks run the command and throw on failure (main prints one line).
#pragma once

#include <CLI/CLI.hpp>
#include <cstdint>
#include <istream>
#include <string>
#include <vector>

#include "xlshare/engine/inference_engine.hpp"

namespace xlshare::cli {

/// `xlshare pool create|info|rm|reclaim`.
void add_pool_commands(CLI::App& app);
/// `xlshare load|synth|generate|eval|worker|stats`.
void add_model_commands(CLI::App& app);

/// "4096", "64K", "64M", "2G", "1T" (or KiB, MiB, GiB, TiB) -> bytes. @throws ConfigError.
std::uint64_t parse_bytes(const std::string& text);
/// "1,2,3" -> token ids. @throws ConfigError.
std::vector<std::int32_t> parse_tokens(const std::string& text);
/// "f32", "f16", "bf16", "q8_0". @throws ConfigError.
DType parse_dtype_arg(const std::string& text);

/// Option checks. CLI11 reads "-3" into an unsigned as 2^64 - 3, "010" as octal and "nan"
/// as a float that passes every range test, so every numeric option goes through one of these.
/// An integer option: decimal digits only (no sign), in lo..hi.
CLI::Validator integer_in(std::uint64_t lo, std::uint64_t hi);
/// A real option: a finite number in lo..hi.
CLI::Validator real_in(double lo, double hi);
/// A size option as parse_bytes reads it, in lo..hi bytes.
CLI::Validator size_in(std::uint64_t lo, std::uint64_t hi);

/// One non-blank line of a worker's requests: a request, or why it is not one.
struct RequestLine {
  std::size_t line = 0;     ///< 1-based line number in the file
  InferenceRequest request;  ///< request.id is always set (the line number when the line has none)
  std::string error;         ///< empty: `request` is valid
};
/// Parses worker requests, one JSON object per line; a bad line becomes an entry with `error`
/// set and never stops the lines after it.
std::vector<RequestLine> parse_request_lines(std::istream& in);

/// Parses worker requests, one JSON object per line. @throws ConfigError naming the first bad line.
std::vector<InferenceRequest> parse_requests(std::istream& in, const std::string& where);
std::vector<InferenceRequest> parse_requests_file(const std::string& path);

}  // namespace xlshare::cli
