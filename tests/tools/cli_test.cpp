// The `xlshare` program as a user runs it: exit status, one-line errors, --json output.
#include <gtest/gtest.h>

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "support/test_support.hpp"

namespace xlshare {
namespace {

struct Result {
  int status;
  std::string out;  // stdout and stderr together
};

Result run_program(const std::string& program, const std::string& args) {
  const std::string cmd = program + " " + args + " 2>&1";
  FILE* p = ::popen(cmd.c_str(), "r");
  std::string out;
  std::array<char, 4096> buf{};
  while (std::size_t n = std::fread(buf.data(), 1, buf.size(), p)) out.append(buf.data(), n);
  const int rc = ::pclose(p);
  return {WIFEXITED(rc) ? WEXITSTATUS(rc) : -1, out};
}

Result run(const std::string& args) { return run_program(XLSHARE_CLI, args); }

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

TEST(Cli, SizesTakeFractionsAndEveryCaseOfAUnit) {
  // CLI11's size units in any case, with fractions: 16.5 MiB = 17301504 bytes exactly.
  for (const std::string size : {"16.5M", "16.5mib", "16.5 MiB", "16896K", "17301504", "0.5G"}) {
    const std::string uri = "shm://" + test::unique_name("size");
    test::BackendGuard guard(uri);
    auto created = run("pool create " + uri + " --size '" + size + "'");
    ASSERT_EQ(created.status, 0) << size << ": " << created.out;
    const auto j = nlohmann::json::parse(run("pool info " + uri + " --json").out);
    EXPECT_EQ(j["pool_bytes"], size == "0.5G" ? 512u << 20 : 17301504u) << size;
  }
  for (const std::string bad : {"1.5.5M", "1e3", "0.3K", ".K", "12Q", "010x", "nan", "-1M"}) {
    const std::string uri = "shm://" + test::unique_name("size");
    test::BackendGuard guard(uri);
    auto r = run("pool create " + uri + " --size '" + bad + "'");
    EXPECT_NE(r.status, 0) << bad << " accepted";
    EXPECT_NE(r.out.find("xlshare: error:"), std::string::npos) << bad << ": " << r.out;
    EXPECT_FALSE(backend_exists(uri)) << bad;
  }
}

TEST(Cli, ErrorsAreOneClearLine) {
  const std::string uri = "shm://" + test::unique_name("cli-missing");
  for (const std::string& args : std::vector<std::string>{
           "pool info " + uri, "pool info nonsense", "pool create shm://a/b --size 1M",
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

// max |got - want| / max |want| of two logits files (1 when their sizes differ).
double logits_error(const std::filesystem::path& got_file, const std::filesystem::path& want_file) {
  const auto got = read_floats(got_file), want = read_floats(want_file);
  if (got.size() != want.size()) return 1.0;
  double diff = 0, scale = 0;
  for (std::size_t i = 0; i < got.size(); ++i) {
    diff = std::max(diff, static_cast<double>(std::abs(got[i] - want[i])));
    scale = std::max(scale, static_cast<double>(std::abs(want[i])));
  }
  return diff / scale;
}

TEST(Cli, EvalReproducesTheOracleLogits) {
  test::TempDir dir;
  const auto out = dir.path() / "logits.bin";
  const std::string data = XLSHARE_TEST_DATA "/oracle";
  for (const std::string& model : {data + "/oracle-public-f32.gguf", data + "/hf"}) {
    auto r = run("eval --model " + model +
                 " --tokens 5,200,33,7,255,0,64,128,9,17,250,3 --logits-out " + out.string());
    ASSERT_EQ(r.status, 0) << r.out;
    EXPECT_LT(logits_error(out, data + "/logits.bin"), 1e-4) << model;
  }
}

TEST(Cli, EvalReadsQuantizedFilesFromTheFileAndFromAPool) {
  // The quantized oracle (tests/data/oracle-quant/README.md), every file, from the file and
  // from a pool, against ggml's dequantized reference: to 1e-4 in the reference's own
  // rounding (--attention ggml-f16), to 5e-4 in float32 attention (the reference's
  // attention rounds to F16, see tests/model/quant_test).
  test::TempDir dir;
  const std::string data = XLSHARE_TEST_DATA "/oracle-quant";
  const std::string uri = "shm://" + test::unique_name("cli-quant");
  test::BackendGuard guard(uri);
  const auto out = dir.path() / "logits.bin";
  ASSERT_EQ(run("pool create " + uri + " --size 32M").status, 0);
  for (const std::string q :
       {"q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "q2_k", "q3_k_m", "q4_k_m", "q5_k_m", "q6_k"}) {
    const std::string file = data + "/oracle-quant-" + q + ".gguf";
    auto r = run("load " + file + " --pool " + uri + " --name " + q);
    ASSERT_EQ(r.status, 0) << r.out;
    const std::string want = data + "/logits_dequant_" + q + ".bin";
    for (const std::string& source : {"--model " + file, "--pool " + uri + " --model " + q}) {
      const std::string eval = "eval " + source +
                               " --tokens 5,200,33,7,255,0,64,128,9,17,250,3 --logits-out " +
                               out.string();
      r = run(eval);
      ASSERT_EQ(r.status, 0) << r.out;
      EXPECT_LT(logits_error(out, want), 5e-4) << source;
      r = run(eval + " --attention ggml-f16");
      ASSERT_EQ(r.status, 0) << r.out;
      EXPECT_LT(logits_error(out, want), 1e-4) << source;
    }
  }
  for (const std::string q : {"q4_k_m", "q5_1"}) {
    // The integer products through the engine: the same tokens with every weight resident
    // and through a small near cache filled over the emulated link; and llama.cpp's
    // rounding of attention the same way.
    for (const std::string mode : {"--quantized-activations", "--attention ggml-f16"}) {
      const std::string gen = "generate --pool " + uri + " --model " + q +
                              " --prompt-tokens 5,200,33 -n 8 --json " + mode;
      auto r = run(gen + " --cache 0");
      ASSERT_EQ(r.status, 0) << r.out;
      const auto resident = nlohmann::json::parse(r.out)["tokens"];
      EXPECT_EQ(resident.size(), 8u);
      r = run(gen + " --cache 256K --placement copy --preset cxl-x8");
      ASSERT_EQ(r.status, 0) << r.out;
      EXPECT_EQ(nlohmann::json::parse(r.out)["tokens"], resident) << q << mode;
    }
  }
  EXPECT_NE(run("eval --model " + data + "/oracle-quant-q8_0.gguf --tokens 1 --logits-out " +
                out.string() + " --attention f16")
                .status,
            0);
}

TEST(Cli, EveryModelCommandOnASmallModel) {
  test::TempDir dir;
  const std::string uri = "shm://" + test::unique_name("cli-model");
  test::BackendGuard guard(uri);
  const auto gguf = dir.path() / "tiny.gguf";
  auto r = run(
      "synth --dim 64 --layers 2 --heads 4 --kv-heads 2 --ffn 160 --vocab 128 --dtype f16 --out " +
      gguf.string());
  ASSERT_EQ(r.status, 0) << r.out;
  r = run("synth --dim 64 --layers 2 --heads 4 --kv-heads 2 --ffn 160 --vocab 128 --out " +
          (dir.path() / "hf").string());
  ASSERT_EQ(r.status, 0) << r.out;
  r = run("load " + gguf.string() + " --pool " + uri + " --json");
  ASSERT_EQ(r.status, 0) << r.out;
  EXPECT_EQ(nlohmann::json::parse(r.out)["loaded"], true);
  r = run("load " + gguf.string() + " --pool " + uri + " --json");  // already there
  EXPECT_EQ(nlohmann::json::parse(r.out)["loaded"], false);
  r = run("load " + (dir.path() / "hf").string() + " --pool " + uri + " --name hf");
  ASSERT_EQ(r.status, 0) << r.out;

  r = run("generate --pool " + uri +
          " --model tiny --prompt-tokens 1,2,3 -n 5 --cache 128K --preset cxl-x8 --json");
  ASSERT_EQ(r.status, 0) << r.out;
  const auto gen = nlohmann::json::parse(r.out);
  ASSERT_EQ(gen["tokens"].size(), 5u);
  EXPECT_GT(gen["link_bytes"].get<std::uint64_t>(), 0u);
  // The same answer with every weight resident.
  r = run("generate --pool " + uri + " --model tiny --prompt-tokens 1,2,3 -n 5 --cache 0 --json");
  EXPECT_EQ(nlohmann::json::parse(r.out)["tokens"], gen["tokens"]);

  const auto requests = dir.path() / "req.jsonl";
  std::ofstream(requests)
      << R"({"id": "a", "prompt": [1, 2, 3], "max_new_tokens": 5})"
      << "\n"
      << R"({"id": "b", "prompt": [9], "max_new_tokens": 2, "temperature": 0.7, "seed": 3})"
      << "\n";
  const auto results = dir.path() / "out.jsonl";
  r = run("worker --pool " + uri + " --model tiny --requests " + requests.string() + " --out " +
          results.string());
  ASSERT_EQ(r.status, 0) << r.out;
  std::ifstream in(results);
  std::string line;
  std::getline(in, line);
  EXPECT_EQ(nlohmann::json::parse(line)["tokens"], gen["tokens"]);
  std::getline(in, line);
  EXPECT_EQ(nlohmann::json::parse(line)["id"], "b");

  r = run("eval --pool " + uri + " --model tiny --tokens 1,2,3 --logits-out " +
          (dir.path() / "l.bin").string());
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
  std::ofstream(bad_jsonl) << R"({"id": "a", "prompt": [1]})"
                           << "\n"
                           << "{not json\n";
  const std::string missing = "shm://" + test::unique_name("cli-none");
  for (const std::string& args : std::vector<std::string>{
           "eval --model " + junk.string() + " --tokens 1 --logits-out /dev/null",
           "eval --model /nonexistent/model.gguf --tokens 1 --logits-out /dev/null",
           "generate --pool " + missing + " --model m --prompt-tokens 1",
           "stats --pool " + missing,
           "load " + junk.string() + " --pool " + missing,
           "synth --dtype f64 --out " + (dir.path() / "x.gguf").string(),
           "worker --pool " + missing + " --model m --requests " + bad_jsonl.string() +
               " --out /dev/null",
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

namespace xlshare {
namespace {

// True when `out` is exactly one line, "xlshare: error: ...", that mentions `what`.
::testing::AssertionResult one_error_line(const Result& r, const std::string& what) {
  if (r.status == 0) return ::testing::AssertionFailure() << "exit status 0: " << r.out;
  if (r.out.rfind("xlshare: error: ", 0) != 0)
    return ::testing::AssertionFailure() << "no error line: " << r.out;
  if (std::count(r.out.begin(), r.out.end(), '\n') != 1) {
    return ::testing::AssertionFailure() << "not one line: " << r.out;
  }
  if (r.out.find(what) == std::string::npos) {
    return ::testing::AssertionFailure() << "does not name " << what << ": " << r.out;
  }
  return ::testing::AssertionSuccess();
}

// A pool holding the tiny model "tiny" (vocabulary 128), removed with the fixture.
class CliWithModel : public ::testing::Test {
 protected:
  void SetUp() override {
    gguf_ = dir_.path() / "tiny.gguf";
    auto r = run("synth --dim 64 --layers 2 --heads 4 --kv-heads 2 --ffn 160 --vocab 128 --out " +
                 gguf_.string());
    ASSERT_EQ(r.status, 0) << r.out;
    r = run("load " + gguf_.string() + " --pool " + uri_);
    ASSERT_EQ(r.status, 0) << r.out;
  }
  test::TempDir dir_;
  std::string uri_ = "shm://" + test::unique_name("cli-check");
  test::BackendGuard guard_{uri_};
  std::filesystem::path gguf_;
};

TEST_F(CliWithModel, VerboseAnywhereLogsTheKeyEventsToStderr) {
  const std::string gen = "generate --pool " + uri_ + " --model tiny --prompt-tokens 1,2,3 -n 1";
  for (const std::string& cmd :
       {"-v " + gen, gen + " -v",
        "generate -v --pool " + uri_ + " --model tiny --prompt-tokens 1,2,3 -n 1"}) {
    const auto r = run(cmd);
    ASSERT_EQ(r.status, 0) << cmd << "\n" << r.out;
    EXPECT_NE(r.out.find("xlshare: info: attached model 'tiny' of " + uri_), std::string::npos)
        << cmd << "\n"
        << r.out;
  }
  const auto quiet = run(gen);
  ASSERT_EQ(quiet.status, 0) << quiet.out;
  EXPECT_EQ(quiet.out.find("xlshare: info:"), std::string::npos) << "without -v: problems only\n"
                                                                 << quiet.out;
  // -vv: a load's progress too.
  const auto load = run("-vv load " + gguf_.string() + " --pool " + uri_ + " --name progress");
  ASSERT_EQ(load.status, 0) << load.out;
  EXPECT_NE(load.out.find("xlshare: debug: loading 'progress' into " + uri_ + ": 100%"),
            std::string::npos)
      << load.out;
}

TEST_F(CliWithModel, EveryNumericOptionIsRangeChecked) {
  const std::string gen = "generate --pool " + uri_ + " --model tiny --prompt-tokens 1,2,3 ";
  const std::string wrk =
      "worker --pool " + uri_ + " --model tiny --requests /dev/null --out /dev/null ";
  const std::string synth = "synth --out " + (dir_.path() / "s.gguf").string() + " ";
  const std::string eval = "eval --model " + gguf_.string() + " --tokens 1,2 --logits-out " +
                           (dir_.path() / "l.bin").string() + " ";
  const std::string load = "load " + gguf_.string() + " --pool " + uri_ + " --name other ";
  const std::string fresh = "shm://" + test::unique_name("cli-create");
  test::BackendGuard fresh_guard(fresh);
  const std::string create = "pool create " + fresh + " ";
  // {command, option, value}: each of these, without its check, would run (and exit 0) or wrap
  // around. The error must name the option and the value.
  const std::vector<std::array<std::string, 3>> cases = {
      {gen, "-n", "-3"},
      {gen, "-n", "99999999999999999999"},
      {gen, "--lookahead", "-1"},
      {gen, "--temperature", "-1"},
      {gen, "--temperature", "nan"},
      {gen, "--temperature", "inf"},
      {gen, "--top-p", "2"},
      {gen, "--top-p", "-0.1"},
      {gen, "--top-p", "nan"},
      {gen, "--top-k", "-1"},
      {gen, "--seed", "-1"},
      {gen, "--cache", "-1M"},
      {gen, "--cache", "2T"},
      {gen, "--threads", "0"},
      {gen, "--threads", "-2"},
      {gen, "--prefetch-threads", "0"},
      {wrk, "--lookahead", "-1"},
      {wrk, "--cache", "-64K"},
      {wrk, "--threads", "0"},
      {eval, "--threads", "0"},
      {eval, "--threads", "-1"},
      {synth, "--layers", "0"},
      {synth, "--vocab", "-5"},
      {synth, "--dim", "-64"},
      {synth, "--heads", "0"},
      {synth, "--kv-heads", "-2"},
      {synth, "--ffn", "0"},
      {synth, "--seed", "-1"},
      {synth, "--shards", "0"},
      {synth, "--context", "0"},
      {load, "--pool-size", "-1G"},
      {create, "--size", "-1G"},
      {create, "--max-models", "0"},
      {create, "--max-models", "65"},
      {create, "--max-tensors", "-1"},
  };
  for (const auto& [command, option, value] : cases) {
    const std::string args = command + option + " " + value;
    EXPECT_TRUE(one_error_line(run(args), option + ": '" + value + "'")) << args;
  }
  EXPECT_TRUE(one_error_line(run(synth + "--dim 66 --heads 4"), "not a multiple of --heads"));
  EXPECT_FALSE(std::filesystem::exists(dir_.path() / "s.gguf"));
  EXPECT_FALSE(std::filesystem::exists(dir_.path() / "l.bin"));
  EXPECT_FALSE(backend_exists(fresh));

  // The same options in range are accepted: the checks refuse only what is out of range.
  auto r = run(gen +
               "-n 2 --lookahead 0 --temperature 0.5 --top-p 0.9 --top-k 5 --seed 7 --threads 2 "
               "--prefetch-threads 1 --cache 64K --json");
  ASSERT_EQ(r.status, 0) << r.out;
  EXPECT_EQ(nlohmann::json::parse(r.out)["tokens"].size(), 2u);
  r = run(synth +
          "--dim 64 --layers 1 --heads 4 --kv-heads 2 --ffn 160 --vocab 128 --context 16 --seed 3");
  EXPECT_EQ(r.status, 0) << r.out;
  r = run(eval + "--threads 2");
  EXPECT_EQ(r.status, 0) << r.out;
}

std::vector<nlohmann::json> read_jsonl(const std::filesystem::path& p) {
  std::vector<nlohmann::json> out;
  std::ifstream in(p);
  std::string line;
  while (std::getline(in, line)) out.push_back(nlohmann::json::parse(line));
  return out;
}

// Driven through a pipe: requests on stdin, token events and results on stdout, as JSONL.
TEST_F(CliWithModel, WorkerStreamsTokensFromStdinToStdout) {
  const auto requests = dir_.path() / "stdin.jsonl";
  std::ofstream(requests) << R"({"id": "a", "prompt": [1, 2, 3], "max_new_tokens": 5})"
                          << "\n"
                          << R"({"id": "b", "prompt": [9, 4], "max_new_tokens": 3})"
                          << "\n";
  const auto r = run("worker --pool " + uri_ + " --model tiny --stream < " + requests.string());
  ASSERT_EQ(r.status, 0) << r.out;
  std::map<std::string, std::vector<std::int32_t>> streamed;
  std::vector<nlohmann::json> results;
  std::istringstream lines(r.out);
  std::string line;
  while (std::getline(lines, line)) {
    if (line.empty() || line[0] != '{') continue;  // stderr's "requests served"
    const auto j = nlohmann::json::parse(line);
    if (j.contains("event")) {
      EXPECT_EQ(j["event"], "token") << j;
      auto& got = streamed[j["id"].get<std::string>()];
      EXPECT_EQ(j["position"], got.size()) << j;  // in order, none missing
      got.push_back(j["token"].get<std::int32_t>());
      EXPECT_TRUE(results.empty() || results.back()["id"] != j["id"]) << "a token after its result";
    } else {
      results.push_back(j);
    }
  }
  ASSERT_EQ(results.size(), 2u) << r.out;
  EXPECT_EQ(results[0]["id"], "a");  // results in the order of the requests
  EXPECT_EQ(results[1]["id"], "b");
  for (const auto& res : results) {
    EXPECT_EQ(res["tokens"].get<std::vector<std::int32_t>>(),
              streamed[res["id"].get<std::string>()])
        << res;
  }
  // The same tokens as without streaming, from a file to a file.
  const auto out = dir_.path() / "plain.jsonl";
  ASSERT_EQ(run("worker --pool " + uri_ + " --model tiny --requests " + requests.string() +
                " --out " + out.string())
                .status,
            0);
  std::ifstream in(out);
  std::getline(in, line);
  EXPECT_EQ(nlohmann::json::parse(line)["tokens"], results[0]["tokens"]);
}

TEST_F(CliWithModel, WorkerAnswersABadRequestWithAnErrorAndServesTheRest) {
  const std::string good_a = R"({"id": "a", "prompt": [1, 2, 3], "max_new_tokens": 5})";
  const std::string good_b =
      R"({"id": "b", "prompt": [9, 4], "max_new_tokens": 3, "temperature": 0.7, "seed": 3})";
  const auto alone = dir_.path() / "alone.jsonl", alone_out = dir_.path() / "alone.out.jsonl";
  std::ofstream(alone) << good_a << "\n" << good_b << "\n";
  auto r = run("worker --pool " + uri_ + " --model tiny --requests " + alone.string() + " --out " +
               alone_out.string());
  ASSERT_EQ(r.status, 0) << r.out;
  const auto want = read_jsonl(alone_out);
  ASSERT_EQ(want.size(), 2u);
  EXPECT_EQ(want[0]["finish_reason"], "length") << want[0];
  EXPECT_GE(want[0]["tpot_ms"].get<double>(), 0.0) << want[0];
  // A stop token ends a request early, the token kept, and its result says so.
  const std::int32_t stop = want[0]["tokens"][1].get<std::int32_t>();
  const auto stopping = dir_.path() / "stop.jsonl", stopping_out = dir_.path() / "stop.out.jsonl";
  std::ofstream(stopping) << R"({"id": "s", "prompt": [1, 2, 3], "max_new_tokens": 5, )"
                          << R"("stop_token_ids": [)" << stop << "]}\n";
  r = run("worker --pool " + uri_ + " --model tiny --requests " + stopping.string() + " --out " +
          stopping_out.string());
  ASSERT_EQ(r.status, 0) << r.out;
  const auto stopped = read_jsonl(stopping_out);
  ASSERT_EQ(stopped.size(), 1u);
  EXPECT_EQ(stopped[0]["finish_reason"], "stop") << stopped[0];
  EXPECT_EQ(stopped[0]["tokens"].back(), stop) << stopped[0];
  EXPECT_LE(stopped[0]["tokens"].size(), 2u) << stopped[0];

  // Each bad request and the id its error result carries (empty: none could be read, so the
  // line number stands in, as it does for a good request without one).
  const std::vector<std::pair<std::string, std::string>> bad = {
      {R"({"id": "oov", "prompt": [1, 200], "max_new_tokens": 2})",
       "oov"},  // token outside the vocabulary
      {R"({"id": "neg", "prompt": [1], "max_new_tokens": -1})", "neg"},
      {R"({"id": 17, "prompt": [-4]})", "17"},
      {R"({"id": "noprompt", "max_new_tokens": 2})", "noprompt"},
      {R"({"id": "type", "prompt": [1], "temperature": "hot"})", "type"},
      {R"({"id": "long", "prompt": [1], "max_new_tokens": 100000})", "long"},  // past the context
      {R"({"id": "stops", "prompt": [1], "stop_token_ids": [3, -1]})", "stops"},
      {R"({"id": "broken", "prompt": [1)", ""},
      {R"([1, 2, 3])", ""},
      {"{\"id\": \"u\xff\"}", ""},  // not UTF-8: the error quotes the byte, replaced
  };
  const auto mixed = dir_.path() / "mixed.jsonl", mixed_out = dir_.path() / "mixed.out.jsonl";
  {
    std::ofstream f(mixed);
    f << good_a << "\n\n";
    for (const auto& b : bad) f << b.first << "\n";
    f << good_b << "\n";
  }
  r = run("worker --pool " + uri_ + " --model tiny --requests " + mixed.string() + " --out " +
          mixed_out.string());
  EXPECT_TRUE(one_error_line(r, "10 of 12 requests failed")) << r.out;
  const auto got = read_jsonl(mixed_out);
  ASSERT_EQ(got.size(), bad.size() + 2) << r.out;
  EXPECT_EQ(got.front()["id"], "a");
  EXPECT_EQ(got.front()["line"], 1);
  EXPECT_EQ(got.front()["tokens"], want[0]["tokens"]);
  EXPECT_FALSE(got.front().contains("error"));
  for (std::size_t i = 0; i < bad.size(); ++i) {
    const auto& e = got[i + 1];
    const std::size_t line = i + 3;  // after good_a and the blank line, which counts
    EXPECT_EQ(e["line"], line) << e;
    EXPECT_EQ(e["id"], bad[i].second.empty() ? std::to_string(line) : bad[i].second) << e;
    ASSERT_TRUE(e.contains("error")) << e;
    EXPECT_FALSE(e["error"].get<std::string>().empty()) << e;
    EXPECT_FALSE(e.contains("tokens")) << e;
  }
  EXPECT_NE(got[1]["error"].get<std::string>().find("vocabulary"), std::string::npos) << got[1];
  EXPECT_EQ(got.back()["id"], "b");
  EXPECT_EQ(got.back()["line"], bad.size() + 3);
  EXPECT_EQ(got.back()["tokens"], want[1]["tokens"]);
}

// The demo, which forks its workers: the pool it names, what it prints, how it exits.
class Demo : public ::testing::Test {
 protected:
  void SetUp() override {
    gguf_ = dir_.path() / "tiny.gguf";
    auto r = run("synth --dim 64 --layers 2 --heads 4 --kv-heads 2 --ffn 160 --vocab 128 --out " +
                 gguf_.string());
    ASSERT_EQ(r.status, 0) << r.out;
  }
  Result demo(const std::string& args) {
    return run_program(XLSHARE_DEMO, "--model " + gguf_.string() + " --pool " + uri_ + " " + args);
  }
  test::TempDir dir_;
  std::string uri_ = "shm://" + test::unique_name("demo");
  test::BackendGuard guard_{uri_};
  std::filesystem::path gguf_;
};

TEST_F(Demo, ServesAndRemovesItsPool) {
  auto r = demo("--workers 2 --tokens 2 --cache-fraction 0.5");
  EXPECT_EQ(r.status, 0) << r.out;
  EXPECT_NE(r.out.find("outputs: every worker generated the same tokens"), std::string::npos)
      << r.out;
  // Measured while the workers are attached: the shared pool is in their PSS, once.
  const auto at = r.out.find("MiB of it the shared pool");
  ASSERT_NE(at, std::string::npos) << r.out;
  const auto open = r.out.rfind('(', at);
  ASSERT_NE(open, std::string::npos) << r.out;
  EXPECT_GT(std::stod(r.out.substr(open + 1)), 0.5)
      << "the workers were measured after they detached: " << r.out;
  EXPECT_FALSE(backend_exists(uri_));
}

TEST_F(Demo, AFailedWorkerIsOneErrorNoTableAndNoPoolLeft) {
  // 1% of this model is a few KiB: less than one block's tensors, so every worker fails.
  auto r = demo("--workers 2 --tokens 2 --cache-fraction 0.01 --placement copy");
  EXPECT_EQ(r.status, 1) << r.out;  // not 141 (SIGPIPE), nor -1 (killed)
  const auto at = r.out.find("xlshare: error: worker ");
  ASSERT_NE(at, std::string::npos) << r.out;
  EXPECT_NE(r.out.find("cache", at), std::string::npos) << "the error says why: " << r.out;
  EXPECT_EQ(r.out.find("xlshare: error:", at + 1), std::string::npos)
      << "more than one error line: " << r.out;
  for (const char* claim : {"latency ms", "memory:", "memory_efficiency", "outputs:"}) {
    EXPECT_EQ(r.out.find(claim), std::string::npos)
        << claim << " printed for failed workers: " << r.out;
  }
  EXPECT_FALSE(backend_exists(uri_)) << "the demo left its pool behind";
}

TEST_F(Demo, RefusesBadOptionsAndAPoolThatExists) {
  for (const std::string args :
       {"--tokens 0", "--tokens -1", "--lookahead -1", "--workers 0", "--workers 17",
        "--cache-fraction nan", "--cache-fraction -0.5", "--cache-fraction 2"}) {
    auto r = demo(args);
    EXPECT_NE(r.status, 0) << args << ": " << r.out;
    EXPECT_EQ(r.out.rfind("xlshare: error: ", 0), 0u) << args << ": " << r.out;
    EXPECT_EQ(std::count(r.out.begin(), r.out.end(), '\n'), 1) << args << ": " << r.out;
  }
  // Someone else's pool under the demo's name is neither used nor removed.
  ASSERT_EQ(run("pool create " + uri_ + " --size 4M").status, 0);
  auto r = demo("--workers 1 --tokens 1");
  EXPECT_EQ(r.status, 1) << r.out;
  EXPECT_NE(r.out.find("already exists"), std::string::npos) << r.out;
  EXPECT_TRUE(backend_exists(uri_));
}

TEST(DemoSignals, SigtermRemovesThePool) {
  const std::string uri = "shm://" + test::unique_name("demo-sig");
  test::BackendGuard guard(uri);
  const std::string shm = "/dev/shm/" + uri.substr(6);
  // The default synthetic model: seconds between the pool appearing and the demo ending.
  const pid_t pid = ::fork();
  if (pid == 0) {
    const int null = ::open("/dev/null", O_WRONLY);
    ::dup2(null, 1);
    ::dup2(null, 2);
    ::execl(XLSHARE_DEMO, XLSHARE_DEMO, "--pool", uri.c_str(), "--workers", "1", "--tokens", "1000",
            static_cast<char*>(nullptr));
    ::_exit(127);
  }
  ASSERT_GT(pid, 0);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  int status = 0;
  pid_t ended = 0;
  while (!std::filesystem::exists(shm) && std::chrono::steady_clock::now() < deadline &&
         (ended = ::waitpid(pid, &status, WNOHANG)) == 0) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  ASSERT_EQ(ended, 0) << "the demo ended before making its pool, status " << status;
  const bool appeared = std::filesystem::exists(shm);
  ::kill(pid, SIGTERM);
  EXPECT_TRUE(appeared) << "the demo never made its pool";
  EXPECT_EQ(test::wait_exit(pid), 128 + SIGTERM);
  EXPECT_FALSE(backend_exists(uri)) << "SIGTERM left the demo's pool behind";
}

}  // namespace
}  // namespace xlshare

namespace xlshare {
namespace {

// Text in and out: `tokenize`, `eval --prompt`, `generate --prompt`, on the tokenizer oracle.
class CliText : public ::testing::Test {
 protected:
  static std::string model(const std::string& name) {
    return XLSHARE_TEST_DATA "/oracle-tokenizer/" + name;
  }
  static std::vector<std::pair<std::string, std::vector<std::int32_t>>> oracle(
      const std::string& name) {
    std::ifstream in(model(name));
    std::vector<std::pair<std::string, std::vector<std::int32_t>>> out;
    for (const auto& c : nlohmann::json::parse(in)) out.emplace_back(c.at("text"), c.at("tokens"));
    return out;
  }
  // Exit status 1 and one line "xlshare: error: ..." holding `word`.
  static void expect_one_line_error(const std::string& args, const std::string& word) {
    const auto r = run(args);
    EXPECT_EQ(r.status, 1) << args << ": " << r.out;
    EXPECT_EQ(r.out.rfind("xlshare: error: ", 0), 0u) << args << ": " << r.out;
    EXPECT_EQ(std::count(r.out.begin(), r.out.end(), '\n'), 1) << args << ": " << r.out;
    EXPECT_NE(r.out.find(word), std::string::npos) << args << ": " << r.out;
  }
  test::TempDir dir_;
};

TEST_F(CliText, TokenizeReproducesLlamaCppForEveryOracleText) {
  for (const std::string name : {"tok-spm", "tok-gpt2"}) {
    int i = 0;
    for (const auto& [text, tokens] : oracle(name + ".tokens.json")) {
      const auto file = dir_.path() / fmt::format("{}-{}.txt", name, i++);
      std::ofstream(file, std::ios::binary) << text;
      auto r =
          run("tokenize --model " + model(name + ".gguf") + " --file " + file.string() + " --json");
      ASSERT_EQ(r.status, 0) << r.out;
      const auto j = nlohmann::json::parse(r.out);
      EXPECT_EQ(j["tokens"].get<std::vector<std::int32_t>>(), tokens) << name << ": " << text;
      EXPECT_EQ(j["count"], tokens.size());
    }
  }
  auto r = run("tokenize --model " + model("tok-spm.gguf") + " --text 'Hello world'");
  EXPECT_EQ(r.status, 0);
  EXPECT_EQ(r.out, "1,15043,3186\n");
  r = run("tokenize --model " + model("tok-spm.gguf") + " --text 'Hello world' --no-special");
  EXPECT_EQ(r.out, "15043,3186\n");
}

TEST_F(CliText, EvalFromTextMatchesLlamaCppsLogits) {
  const auto out = dir_.path() / "logits.bin";
  auto r =
      run("eval --model " + model("tok-spm.gguf") +
          " --prompt 'The quick brown fox jumps over the lazy dog.' --logits-out " + out.string());
  ASSERT_EQ(r.status, 0) << r.out;
  // 13 positions (the text's ids, BOS included); a different count is an error of 1.
  EXPECT_LT(logits_error(out, model("tok-spm.text.logits.bin")), 1e-3);
}

TEST_F(CliText, GenerateFromTextInAPool) {
  const std::string uri = "shm://" + test::unique_name("cli-text");
  test::BackendGuard guard(uri);
  auto r = run("load " + model("tok-spm.gguf") + " --pool " + uri + " --name spm");
  ASSERT_EQ(r.status, 0) << r.out;
  const std::string gen = "generate --pool " + uri + " --model spm --cache 0 -n 6 ";
  r = run(gen + "--prompt 'The quick brown fox' --json");
  ASSERT_EQ(r.status, 0) << r.out;
  const auto from_text = nlohmann::json::parse(r.out);
  ASSERT_TRUE(from_text.contains("text"));
  // The same as the ids llama.cpp gives the text.
  r = run(gen + "--prompt-tokens 1,450,4996,17354,1701,29916 --json");
  ASSERT_EQ(r.status, 0) << r.out;
  const auto from_ids = nlohmann::json::parse(r.out);
  EXPECT_EQ(from_ids["tokens"], from_text["tokens"]);
  EXPECT_EQ(from_ids["text"], from_text["text"]);
  // Streamed: the text on stdout (then the figures on stderr).
  r = run(gen + "--prompt 'The quick brown fox'");
  ASSERT_EQ(r.status, 0) << r.out;
  const std::string text = from_text["text"];
  EXPECT_EQ(r.out.substr(0, text.size() + 1), text + "\n") << r.out;
  // The worker's JSONL takes text too.
  const auto requests = dir_.path() / "req.jsonl";
  std::ofstream(requests) << R"({"id": "t", "prompt_text": "The quick brown fox", )"
                          << R"("max_new_tokens": 6})"
                          << "\n";
  r = run("worker --pool " + uri + " --model spm --cache 0 --requests " + requests.string());
  ASSERT_EQ(r.status, 0) << r.out;
  EXPECT_EQ(nlohmann::json::parse(r.out.substr(0, r.out.find('\n')))["tokens"],
            from_text["tokens"]);
  expect_one_line_error(gen + "--prompt x --prompt-tokens 1", "excludes");
  expect_one_line_error(gen, "--prompt");
}

TEST_F(CliText, AModelWithoutATokenizerIsAClearError) {
  const auto tiny = dir_.path() / "tiny.gguf";
  auto r = run("synth --dim 32 --layers 1 --heads 2 --kv-heads 1 --ffn 64 --vocab 40 --out " +
               tiny.string());
  ASSERT_EQ(r.status, 0) << r.out;
  expect_one_line_error("tokenize --model " + tiny.string() + " --text hi", "no tokenizer");
  expect_one_line_error(
      "eval --model " + tiny.string() + " --prompt hi --logits-out " + (dir_.path() / "l").string(),
      "no tokenizer");
  const std::string uri = "shm://" + test::unique_name("cli-notok");
  test::BackendGuard guard(uri);
  r = run("load " + tiny.string() + " --pool " + uri);
  ASSERT_EQ(r.status, 0) << r.out;
  expect_one_line_error("generate --pool " + uri + " --model tiny --prompt hi -n 2",
                        "no tokenizer");
  expect_one_line_error("tokenize --pool " + uri + " --model tiny --text hi", "no tokenizer");
  // Token ids still work.
  r = run("generate --pool " + uri + " --model tiny --prompt-tokens 1,2 -n 2 --cache 0");
  EXPECT_EQ(r.status, 0) << r.out;
  expect_one_line_error("tokenize --model " + model("tok-spm.gguf"), "--text");
  expect_one_line_error("tokenize --model /nonexistent.gguf --text hi", "no such file");
  expect_one_line_error("tokenize --model " + model("tok-spm.gguf") + " --file /nonexistent",
                        "cannot read");
  // A file with a hostile vocabulary: the GGUF reader's error, one line.
  std::string bytes;
  {
    std::ifstream in(model("tok-spm.gguf"), std::ios::binary);
    bytes.assign(std::istreambuf_iterator<char>(in), {});
  }
  const std::string key = "tokenizer.ggml.bos_token_id";
  const std::size_t at = bytes.find(key) + key.size() + 4;  // after the value's type (u32)
  const std::uint32_t outside = 99999;
  std::memcpy(bytes.data() + at, &outside, 4);
  const auto hostile = dir_.path() / "hostile.gguf";
  std::ofstream(hostile, std::ios::binary) << bytes;
  expect_one_line_error("tokenize --model " + hostile.string() + " --text hi", "tokenizer.ggml");
}

}  // namespace
}  // namespace xlshare

namespace xlshare {
namespace {

TEST(CliPlan, TheIssuesQuestionAnsweredAsJson) {
  const auto r =
      run("plan --model llama-2-70b --dtype f16 --device h100-sxm --devices 8 --link cxl-x16 "
          "--cache-fraction 0.1 --batch 8 --json");
  ASSERT_EQ(r.status, 0) << r.out;
  const auto j = nlohmann::json::parse(r.out);
  for (const char* field :
       {"decode_tok_s_per_device", "decode_tok_s_total", "ttft_ms", "stall_ms_per_step",
        "link_utilisation", "device_bytes", "replicated_bytes", "max_devices_before_saturation"}) {
    EXPECT_TRUE(j.contains(field)) << field;
  }
  EXPECT_EQ(j["devices"], 8);
  EXPECT_EQ(j["replicated_fits"], false);  // 70B in F16 is more than one H100 holds
  EXPECT_EQ(j["fits"], true);
  EXPECT_GT(j["decode_tok_s_total"].get<double>(), 0.0);
}

TEST(CliPlan, HumanOutputAndTheList) {
  auto r =
      run("plan --model mistral-7b --dtype q4_k --device l40s --devices 2 --cache-fraction 0.5");
  EXPECT_EQ(r.status, 0) << r.out;
  EXPECT_NE(r.out.find("tok/s per device"), std::string::npos) << r.out;
  r = run("plan --list");
  EXPECT_EQ(r.status, 0) << r.out;
  for (const char* name : {"llama-2-70b", "llama-3-8b", "h100-sxm", "mi300x", "cxl-x16"})
    EXPECT_NE(r.out.find(name), std::string::npos) << name;
}

TEST(CliPlan, AGgufFilesHeaderIsAModel) {
  const auto dir = std::filesystem::temp_directory_path() / test::unique_name("cli-plan");
  std::filesystem::create_directories(dir);
  const auto file = (dir / "m.gguf").string();
  ASSERT_EQ(run("synth --dim 256 --layers 2 --heads 4 --kv-heads 2 --ffn 512 --vocab 512 "
                "--dtype q8_0 --out " +
                file)
                .status,
            0);
  const auto r = run("plan --model " + file + " --device l40s --cache-fraction 0.5 --json");
  ASSERT_EQ(r.status, 0) << r.out;
  const auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["dtype"], "file");
  // The tensors' bytes as stored: the file less its header and padding.
  EXPECT_LT(j["model_bytes"].get<std::uint64_t>(), std::filesystem::file_size(file));
  EXPECT_GT(j["model_bytes"].get<std::uint64_t>(), std::filesystem::file_size(file) * 9 / 10);
  std::filesystem::remove_all(dir);
}

TEST(CliPlan, BadOptionsAreOneLineErrors) {
  for (const std::string& args : std::vector<std::string>{
           "plan", "plan --model llama-9-1t", "plan --model llama-2-7b --device tpu",
           "plan --model llama-2-7b --devices 0", "plan --model llama-2-7b --devices -2",
           "plan --model llama-2-7b --cache-fraction nan",
           "plan --model llama-2-7b --cache-fraction 1.5", "plan --model llama-2-7b --batch 0",
           "plan --model llama-2-7b --link pigeon", "plan --model llama-2-7b --eviction magic",
           "plan --model llama-2-7b --dtype q5_x", "plan --model llama-2-7b --shared-gbps -1",
           "plan --model llama-2-7b --cache-fraction 1e-7",
           "plan --model llama-2-7b --host-link-gbps 1e-12",
           "plan --model llama-2-7b --tflops 1e-6 --flops-efficiency 1e-6",
           "plan --model /nonexistent/model.gguf"}) {
    const auto r = run(args);
    EXPECT_EQ(r.status, 1) << args << ": " << r.out;
    EXPECT_EQ(r.out.rfind("xlshare: error: ", 0), 0u) << args << ": " << r.out;
    EXPECT_EQ(std::count(r.out.begin(), r.out.end(), '\n'), 1) << args << ": " << r.out;
  }
}

}  // namespace
}  // namespace xlshare
