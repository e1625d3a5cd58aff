// The `xlshare` program as a user runs it: exit status, one-line errors, --json output.
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <filesystem>
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

namespace xlshare {
namespace {

std::vector<float> read_floats(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::vector<float> v(std::filesystem::file_size(p) / 4);
  in.read(reinterpret_cast<char*>(v.data()), static_cast<std::streamsize>(v.size() * 4));
  return v;
}

TEST(Cli, EvalReproducesTheOracleLogits) {
  test::TempDir dir;
  const auto out = dir.path() / "logits.bin";
  const std::string data = XLSHARE_TEST_DATA "/oracle";
  for (const std::string& model : {data + "/oracle-public-f32.gguf", data + "/hf"}) {
    auto r = run("eval --model " + model + " --tokens 5,200,33,7,255,0,64,128,9,17,250,3 --logits-out " + out.string());
    ASSERT_EQ(r.status, 0) << r.out;
    const auto got = read_floats(out), want = read_floats(data + "/logits.bin");
    ASSERT_EQ(got.size(), want.size());
    double diff = 0, scale = 0;
    for (std::size_t i = 0; i < got.size(); ++i) {
      diff = std::max(diff, static_cast<double>(std::abs(got[i] - want[i])));
      scale = std::max(scale, static_cast<double>(std::abs(want[i])));
    }
    EXPECT_LT(diff / scale, 1e-4) << model;
  }
}

TEST(Cli, EveryModelCommandOnASmallModel) {
  test::TempDir dir;
  const std::string uri = "shm://" + test::unique_name("cli-model");
  test::BackendGuard guard(uri);
  const auto gguf = dir.path() / "tiny.gguf";
  auto r = run("synth --dim 64 --layers 2 --heads 4 --kv-heads 2 --ffn 160 --vocab 128 --dtype f16 --out " + gguf.string());
  ASSERT_EQ(r.status, 0) << r.out;
  r = run("synth --dim 64 --layers 2 --heads 4 --kv-heads 2 --ffn 160 --vocab 128 --out " + (dir.path() / "hf").string());
  ASSERT_EQ(r.status, 0) << r.out;
  r = run("load " + gguf.string() + " --pool " + uri + " --json");
  ASSERT_EQ(r.status, 0) << r.out;
  EXPECT_EQ(nlohmann::json::parse(r.out)["loaded"], true);
  r = run("load " + gguf.string() + " --pool " + uri + " --json");  // already there
  EXPECT_EQ(nlohmann::json::parse(r.out)["loaded"], false);
  r = run("load " + (dir.path() / "hf").string() + " --pool " + uri + " --name hf");
  ASSERT_EQ(r.status, 0) << r.out;

  r = run("generate --pool " + uri + " --model tiny --prompt-tokens 1,2,3 -n 5 --cache 128K --preset cxl-x8 --json");
  ASSERT_EQ(r.status, 0) << r.out;
  const auto gen = nlohmann::json::parse(r.out);
  ASSERT_EQ(gen["tokens"].size(), 5u);
  EXPECT_GT(gen["link_bytes"].get<std::uint64_t>(), 0u);
  // The same answer with every weight resident.
  r = run("generate --pool " + uri + " --model tiny --prompt-tokens 1,2,3 -n 5 --cache 0 --json");
  EXPECT_EQ(nlohmann::json::parse(r.out)["tokens"], gen["tokens"]);

  const auto requests = dir.path() / "req.jsonl";
  std::ofstream(requests) << R"({"id": "a", "prompt": [1, 2, 3], "max_new_tokens": 5})" << "\n"
                          << R"({"id": "b", "prompt": [9], "max_new_tokens": 2, "temperature": 0.7, "seed": 3})" << "\n";
  const auto results = dir.path() / "out.jsonl";
  r = run("worker --pool " + uri + " --model tiny --requests " + requests.string() + " --out " + results.string());
  ASSERT_EQ(r.status, 0) << r.out;
  std::ifstream in(results);
  std::string line;
  std::getline(in, line);
  EXPECT_EQ(nlohmann::json::parse(line)["tokens"], gen["tokens"]);
  std::getline(in, line);
  EXPECT_EQ(nlohmann::json::parse(line)["id"], "b");

  r = run("eval --pool " + uri + " --model tiny --tokens 1,2,3 --logits-out " + (dir.path() / "l.bin").string());
  ASSERT_EQ(r.status, 0) << r.out;
  EXPECT_EQ(std::filesystem::file_size(dir.path() / "l.bin"), 3u * 128 * 4);

  r = run("stats --pool " + uri + " --json");
  ASSERT_EQ(r.status, 0) << r.out;
  EXPECT_EQ(nlohmann::json::parse(r.out)["models"].size(), 2u);
}

TEST(Cli, BadArgumentsAndFilesAreOneLineErrors) {
  test::TempDir dir;
  const auto junk = dir.path() / "junk.gguf";
  std::ofstream(junk) << "GGUF but not really";
  const auto bad_jsonl = dir.path() / "bad.jsonl";
  std::ofstream(bad_jsonl) << R"({"id": "a", "prompt": [1]})" << "\n" << "{not json\n";
  const std::string missing = "shm://" + test::unique_name("cli-none");
  for (const std::string& args : std::vector<std::string>{
           "eval --model " + junk.string() + " --tokens 1 --logits-out /dev/null",
           "eval --model /nonexistent/model.gguf --tokens 1 --logits-out /dev/null",
           "generate --pool " + missing + " --model m --prompt-tokens 1",
           "stats --pool " + missing,
           "load " + junk.string() + " --pool " + missing,
           "synth --dtype f64 --out " + (dir.path() / "x.gguf").string(),
           "worker --pool " + missing + " --model m --requests " + bad_jsonl.string() + " --out /dev/null",
       }) {
    auto r = run(args);
    EXPECT_EQ(r.status, 1) << args << ": " << r.out;
    EXPECT_EQ(r.out.rfind("xlshare: error: ", 0), 0u) << args << ": " << r.out;
    EXPECT_EQ(std::count(r.out.begin(), r.out.end(), '\n'), 1) << args << ": " << r.out;
  }
  EXPECT_FALSE(backend_exists(missing)) << "a failed load left a pool behind";
  // Malformed token lists are argument errors too.
  auto r = run("eval --model " + junk.string() + " --tokens 1,x --logits-out /dev/null");
  EXPECT_NE(r.status, 0);
  for (const char* sub : {"load", "synth", "generate", "eval", "worker", "stats"}) {
    auto h = run(std::string(sub) + " --help");
    EXPECT_EQ(h.status, 0) << sub;
  }
}

}  // namespace
}  // namespace xlshare
