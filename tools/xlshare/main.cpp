// xlshare: manage pools of shared model weights from the command line.
// Every error is one line on stderr, "xlshare: error: ...", and exit status 1.
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <cstdlib>
#include <new>
#include <string>

#include "commands.hpp"
#include "xlshare/error.hpp"
#include "xlshare/log.hpp"

namespace {

// A message that is sure to fit on one line (CLI11 and OS messages sometimes hold newlines).
std::string one_line(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r')) s.pop_back();
  for (char& c : s) {
    if (c == '\n' || c == '\r') c = ' ';
  }
  return s;
}

int fail(const std::string& what) {
  fmt::print(stderr, "xlshare: error: {}\n", one_line(what));
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"xlshare: one shared copy of model weights in a far memory pool"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "xlshare 0.1.0");
  // -v anywhere on the command line (before or after the subcommand): the library's
  // "xlshare" logger at info (key events), -vv at debug (retries too).
  app.fallthrough();
  app.add_flag_function(
      "-v,--verbose",
      [](std::int64_t count) {
        xlshare::set_log_level(count > 1 ? spdlog::level::debug : spdlog::level::info);
      },
      "log what happens to stderr: attach, load, failover (-vv: retries too)");
  // --token-file anywhere on the command line: the token of remote pools (ucx://) for every
  // command, and of `pool serve`. It becomes XLSHARE_TOKEN_FILE, so that processes this one
  // starts (a worker group's) use it too.
  app.add_option_function<std::string>(
      "--token-file",
      [](const std::string& path) {
        if (path.empty()) throw CLI::ValidationError("--token-file", "the path is empty");
        ::setenv("XLSHARE_TOKEN_FILE", path.c_str(), 1);
      },
      "the token of remote pools, in a file only you can read (0600); default: "
      "$XLSHARE_TOKEN_FILE");
  xlshare::cli::add_pool_commands(app);
  xlshare::cli::add_model_commands(app);
  xlshare::cli::add_plan_command(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::Success& e) {
    return app.exit(e);  // --help, --version
  } catch (const CLI::ParseError& e) {
    // CLI11 would print its own two-line form; keep the one every other error has.
    return fail(e.what());
  } catch (const std::bad_alloc&) {
    return fail("out of memory");
  } catch (const std::exception& e) {
    return fail(e.what());
  }
  return 0;
}
