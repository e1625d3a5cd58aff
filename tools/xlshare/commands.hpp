// The subcommands of the `xlshare` program. Each `add_*` registers its subcommands with the
// app; their callbacks run the command and throw on failure (main prints one line).
#pragma once

#include <CLI/CLI.hpp>
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

/// Parses worker requests, one JSON object per line. @throws ConfigError naming the line.
std::vector<InferenceRequest> parse_requests(std::istream& in, const std::string& where);
std::vector<InferenceRequest> parse_requests_file(const std::string& path);

}  // namespace xlshare::cli
