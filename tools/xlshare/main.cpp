// xlshare: manage pools of shared model weights from the command line.
// Every error is one line on stderr and exit status 1.
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <cstdio>

#include "commands.hpp"
#include "xlshare/error.hpp"

int main(int argc, char** argv) {
  CLI::App app{"xlshare: one shared copy of model weights in a far memory pool"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "xlshare 0.1.0");
  bool verbose = false;
  app.add_flag("-v,--verbose", verbose, "log what happens (to stderr)");
  xlshare::cli::add_pool_commands(app);
  xlshare::cli::add_model_commands(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const std::exception& e) {
    fmt::print(stderr, "xlshare: error: {}\n", e.what());
    return 1;
  }
  return 0;
}
