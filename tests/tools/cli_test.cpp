// The `xlshare` program as a user runs it: exit status, one-line errors, --json output.
#include <gtest/gtest.h>

#include <array>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "support/test_support.hpp"

namespace xlshare {
namespace {

struct Result {
  int status;
  std::string out;  // stdout and stderr together
};

Result run(const std::string& args) {
  const std::string cmd = std::string(XLSHARE_CLI) + " " + args + " 2>&1";
  FILE* p = ::popen(cmd.c_str(), "r");
  std::string out;
  std::array<char, 4096> buf{};
  while (std::size_t n = std::fread(buf.data(), 1, buf.size(), p)) out.append(buf.data(), n);
  const int rc = ::pclose(p);
  return {WIFEXITED(rc) ? WEXITSTATUS(rc) : -1, out};
}

TEST(Cli, PoolCreateInfoRemove) {
  const std::string uri = "shm://" + test::unique_name("cli");
  test::BackendGuard guard(uri);
  auto created = run("pool create " + uri + " --size 32M --max-tensors 128");
  ASSERT_EQ(created.status, 0) << created.out;
  auto info = run("pool info " + uri + " --json");
  ASSERT_EQ(info.status, 0) << info.out;
  const auto j = nlohmann::json::parse(info.out);
  EXPECT_EQ(j["uri"], uri);
  EXPECT_EQ(j["pool_bytes"], 32u << 20);
  EXPECT_EQ(j["models"].size(), 0u);
  EXPECT_EQ(run("pool info " + uri).status, 0);
  EXPECT_EQ(run("pool create " + uri + " --size 32M").status, 1);  // exists
  auto rm = run("pool rm " + uri);
  EXPECT_EQ(rm.status, 0) << rm.out;
  EXPECT_FALSE(backend_exists(uri));
}

TEST(Cli, ErrorsAreOneClearLine) {
  const std::string uri = "shm://" + test::unique_name("cli-missing");
  for (const std::string& args : std::vector<std::string>{"pool info " + uri, "pool info nonsense", "pool create shm://a/b --size 1M",
        "pool create " + uri + " --size 12Q", "pool create " + uri + " --size 4K"}) {
    auto r = run(args);
    EXPECT_EQ(r.status, 1) << args << ": " << r.out;
    EXPECT_EQ(r.out.rfind("xlshare: error: ", 0), 0u) << args << ": " << r.out;
    EXPECT_EQ(std::count(r.out.begin(), r.out.end(), '\n'), 1) << args << ": " << r.out;
  }
  EXPECT_FALSE(backend_exists(uri));  // a failed create leaves nothing behind
}

TEST(Cli, RefusesAFileThatIsNotAPool) {
  test::TempDir dir;
  const auto path = dir.path() / "junk";
  std::ofstream(path) << std::string(1 << 16, 'x');
  auto r = run("pool info file://" + path.string());
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.out.find("bad magic"), std::string::npos) << r.out;
}

TEST(Cli, HelpWorksEverywhere) {
  for (const char* args : {"--help", "pool --help", "pool create --help", "pool info --help",
                           "pool rm --help", "pool reclaim --help"}) {
    auto r = run(args);
    EXPECT_EQ(r.status, 0) << args;
    EXPECT_NE(r.out.find("Usage"), std::string::npos) << args << ": " << r.out;
  }
}

}  // namespace
}  // namespace xlshare
