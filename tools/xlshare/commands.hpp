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

/// Parses worker requests, one JSON object per line. @throws ConfigError naming the line.
std::vector<InferenceRequest> parse_requests(std::istream& in, const std::string& where);
std::vector<InferenceRequest> parse_requests_file(const std::string& path);

}  // namespace xlshare::cli
