// The subcommands of the `xlshare` program. Each `add_*` registers its subcommand with the
// app; its callback runs the command and throws on failure (main prints one line).
#pragma once

#include <CLI/CLI.hpp>

namespace xlshare::cli {

/// `xlshare pool create|info|rm|reclaim`.
void add_pool_commands(CLI::App& app);

}  // namespace xlshare::cli
