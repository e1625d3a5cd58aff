// Remote pools end to end: a `xlshare pool serve` process on 127.0.0.1 (an ephemeral port,
// killed when the test ends or dies), read by engines through ucx://. Same tokens as the
// local pool; a server killed mid-generation is survived with a replica and fails cleanly
// without one; wrong tokens and reads outside the exported range are refused.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <thread>
#include <tuple>

#include "model/model_support.hpp"
#include "support/test_support.hpp"
#include "xlshare/engine/inference_engine.hpp"
#include "xlshare/error.hpp"
#include "xlshare/memory/backend_uri.hpp"
#include "xlshare/memory/pool.hpp"
#include "xlshare/remote/pool_server.hpp"
#include "xlshare/remote/token.hpp"

namespace xlshare {
namespace {

// Writes `token` to `path` with `mode`.
void write_token(const std::filesystem::path& path, const std::string& token, mode_t mode = 0600) {
  std::ofstream(path) << token << "\n";
  ::chmod(path.c_str(), mode);
}

// `xlshare pool serve URI --listen 127.0.0.1:0` in a child process that dies with this one
// (PR_SET_PDEATHSIG) and is killed by the destructor; uri() is what it printed.
class ServerProcess {
 public:
  ServerProcess(const std::string& pool_uri, const std::string& token_file,
                const std::vector<std::string>& extra = {}) {
    int out[2];
    if (::pipe(out) != 0) throw std::runtime_error("pipe");
    std::vector<std::string> args = {XLSHARE_CLI, "--token-file", token_file, "pool",
                                     "serve",     pool_uri,       "--listen", "127.0.0.1:0"};
    args.insert(args.end(), extra.begin(), extra.end());
    const pid_t parent = ::getpid();
    pid_ = ::fork();
    if (pid_ == 0) {
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (::getppid() != parent) ::_exit(98);
      ::dup2(out[1], STDOUT_FILENO);
      ::close(out[0]);
      ::close(out[1]);
      std::vector<char*> argv;
      for (auto& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      ::execv(argv[0], argv.data());
      ::_exit(97);
    }
    ::close(out[1]);
    out_ = out[0];
    // "serving pool URI as ucx://127.0.0.1:PORT/NAME", within 20 s.
    std::string line;
    const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    const auto complete = [&] {
      const auto at = line.find("serving pool ");
      return at != std::string::npos && line.find('\n', at) != std::string::npos;
    };
    while (!complete() && std::chrono::steady_clock::now() < until) {
      pollfd p{out_, POLLIN, 0};
      if (::poll(&p, 1, 100) <= 0) continue;
      char buf[256];
      const ssize_t n = ::read(out_, buf, sizeof buf);
      if (n <= 0) break;
      line.append(buf, static_cast<std::size_t>(n));
    }
    const auto at = line.find(" as ", line.find("serving pool "));
    if (at == std::string::npos) {
      kill();
      throw std::runtime_error("the server did not start: '" + line + "'");
    }
    uri_ = line.substr(at + 4, line.find('\n', at) - at - 4);
  }
  ~ServerProcess() {
    kill();
    if (out_ >= 0) ::close(out_);
  }
  const std::string& uri() const { return uri_; }
  pid_t pid() const { return pid_; }
  // SIGTERM, as a service manager stops it: returns its exit status.
  int terminate() {
    ::kill(pid_, SIGTERM);
    const int status = test::wait_exit(pid_);
    pid_ = -1;
    return status;
  }
  void kill() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      test::wait_exit(pid_);
      pid_ = -1;
    }
  }

 private:
  pid_t pid_ = -1;
  int out_ = -1;
  std::string uri_;
};

SyntheticModel remote_model() { return create_sample_transformer_model(64, 12, 4, 2, 160, 256, 7); }

class Remote : public ::testing::Test {
 protected:
  Remote() : uri_("shm://" + test::unique_name("remote")), guard_(uri_) {
    token_file_ = dir_.path() / "token";
    write_token(token_file_, "correct-horse-battery-staple-0123456789");
    ::setenv("XLSHARE_TOKEN_FILE", token_file_.c_str(), 1);
    const auto m = remote_model();
    EngineConfig c;
    c.pool_uri = uri_;
    InferenceEngine(c).register_model(m, "m");
    for (const auto& d : m.data) model_bytes_ += d.size() * 4;
    InferenceEngine local(config(uri_));
    local.attach_model("m");
    want_ = local.generate(prompt_, 16);
  }
  ~Remote() override { ::unsetenv("XLSHARE_TOKEN_FILE"); }

  // The copy placement with a cache of 1/8 of the model: weights cross the network every step.
  EngineConfig config(const std::string& uri) const {
    EngineConfig c;
    c.pool_uri = uri;
    c.placement = Placement::kCopy;
    c.link_preset = "none";
    c.cache_bytes = model_bytes_ / 8;
    return c;
  }

  test::TempDir dir_;
  std::string uri_;
  test::BackendGuard guard_;
  std::filesystem::path token_file_;
  std::uint64_t model_bytes_ = 0;
  const std::vector<std::int32_t> prompt_ = {3, 14, 15, 92, 65};
  std::vector<std::int32_t> want_;
};

TEST_F(Remote, TokensEqualTheLocalPools) {
  ServerProcess server(uri_, token_file_);
  InferenceEngine remote(config(server.uri()));
  remote.attach_model("m");
  EXPECT_EQ(remote.generate(prompt_, 16), want_);
  EXPECT_GT(remote.stats().workers.at(0).transfers.link_bytes, model_bytes_);  // it streamed
  EXPECT_EQ(server.terminate(), 0);  // SIGTERM: a clean stop
}

TEST_F(Remote, TokensEqualOverTcpOnly) {
  ::setenv("UCX_TLS", "tcp", 1);
  struct Unset {
    ~Unset() { ::unsetenv("UCX_TLS"); }
  } unset;
  ServerProcess server(uri_, token_file_);  // inherits UCX_TLS
  InferenceEngine remote(config(server.uri()));
  remote.attach_model("m");
  EXPECT_EQ(remote.generate(prompt_, 16), want_);
}

TEST_F(Remote, AServerKilledMidGenerationIsSurvivedWithAReplica) {
  // Three requests in flight at once; the server dies after the fourth token of the first.
  const std::vector<std::vector<std::int32_t>> prompts = {prompt_, {1, 2, 3}, {7, 7, 7, 7, 7, 7}};
  std::vector<std::vector<std::int32_t>> want;
  {
    InferenceEngine local(config(uri_));
    local.attach_model("m");
    for (const auto& p : prompts) want.push_back(local.generate(p, 16));
  }
  ServerProcess server(uri_, token_file_);
  EngineConfig c = config(server.uri());
  c.replica_pool_uri = uri_;  // the same model, local
  InferenceEngine remote(c);
  remote.attach_model("m");
  std::atomic<std::size_t> seen{0};
  std::vector<RequestHandle> handles;
  for (std::size_t i = 0; i < prompts.size(); ++i) {
    InferenceRequest request;
    request.prompt = prompts[i];
    request.max_new_tokens = 16;
    RequestCallbacks callbacks;
    if (i == 0) {
      callbacks.on_token = [&](const TokenEvent&) {
        if (++seen == 4) server.kill();
      };
    }
    handles.push_back(remote.submit(request, callbacks));
  }
  for (std::size_t i = 0; i < handles.size(); ++i) {
    EXPECT_EQ(handles[i].wait().output_tokens, want[i]) << "request " << i;
  }
  EXPECT_GE(seen.load(), 16u);
  EXPECT_GT(remote.stats().workers.at(0).transfers.failovers, 0u);
  // Later requests too: the primary is remembered as gone.
  EXPECT_EQ(remote.generate(prompt_, 16), want_);
}

TEST_F(Remote, AServerKilledMidGenerationWithoutAReplicaFailsCleanly) {
  ServerProcess server(uri_, token_file_);
  InferenceEngine remote(config(server.uri()));
  remote.attach_model("m");
  InferenceRequest request;
  request.prompt = prompt_;
  request.max_new_tokens = 16;
  std::size_t seen = 0;
  auto handle = remote.submit(request, {.on_token = [&](const TokenEvent&) {
                                if (++seen == 4) server.kill();
                              }});
  try {
    (void)handle.wait();
    ADD_FAILURE() << "a request finished without its pool";
  } catch (const Error& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find(server.uri()), std::string::npos) << what;
    EXPECT_EQ(what.find('\n'), std::string::npos) << what;
  }
  EXPECT_GE(seen, 4u);
  EXPECT_LT(seen, want_.size());
  // And a server that is gone before attach is a clear error too.
  EXPECT_THROW(remote.attach_model("m"), BackendError);
}

TEST_F(Remote, AWrongTokenIsRefusedAndTheServerServesOthers) {
  ServerProcess server(uri_, token_file_);
  const auto wrong = dir_.path() / "wrong";
  write_token(wrong, "not-the-token-but-long-enough-0000");
  BackendOptions o;
  o.token_file = wrong.string();
  try {
    (void)open_backend(server.uri(), o);
    ADD_FAILURE() << "a wrong token was accepted";
  } catch (const BackendError& e) {
    EXPECT_NE(std::string(e.what()).find("refused: bad token"), std::string::npos) << e.what();
  }
  // The name of a pool it does not serve is refused too.
  const std::string other = server.uri().substr(0, server.uri().rfind('/')) + "/other";
  EXPECT_THROW((void)open_backend(other), BackendError);
  InferenceEngine remote(config(server.uri()));
  remote.attach_model("m");
  EXPECT_EQ(remote.generate(prompt_, 16), want_);
}

TEST_F(Remote, OnlyAllowedAddressesMayConnect) {
  ServerProcess elsewhere(uri_, token_file_, {"--allow", "10.0.0.0/8", "--allow", "fd00::/8"});
  try {
    (void)open_backend(elsewhere.uri());
    ADD_FAILURE() << "a client outside --allow connected";
  } catch (const BackendError& e) {
    EXPECT_NE(std::string(e.what()).find(elsewhere.uri()), std::string::npos) << e.what();
  }
  ServerProcess here(uri_, token_file_, {"--allow", "10.0.0.0/8", "--allow", "127.0.0.1/32"});
  InferenceEngine remote(config(here.uri()));
  remote.attach_model("m");
  EXPECT_EQ(remote.generate(prompt_, 16), want_);
  PoolServerOptions bad;
  bad.token_file = token_file_.string();
  for (const char* block : {"10.0.0.0/33", "300.1.1.1", "::1/129", "10.0.0.0/", "host"}) {
    bad.allow = {block};
    EXPECT_THROW(PoolServer(uri_, bad), ConfigError) << block;
  }
}

TEST_F(Remote, ReadsOutsideTheExportedRangeAreRefused) {
  ServerProcess server(uri_, token_file_);
  auto pool = Pool::attach(open_backend(server.uri()));
  EXPECT_FALSE(pool->backend().maps_data());
  EXPECT_FALSE(pool->backend().is_writable());
  const auto lay = pool->layout();
  std::vector<std::byte> buf(4096);
  MemoryBackend& b = pool->backend();
  EXPECT_EQ(b.read(lay.pool_bytes - 100, buf), ReadStatus::kOutOfRange);  // past the end
  EXPECT_EQ(b.read(lay.data_offset + lay.data_bytes, std::span(buf).first(1)),
            ReadStatus::kOutOfRange);
  EXPECT_EQ(b.read(0, buf), ReadStatus::kOutOfRange);  // the metadata is not exported
  EXPECT_EQ(b.read(UINT64_MAX - 10, buf), ReadStatus::kOutOfRange);
  EXPECT_THROW((void)b.map(lay.data_offset, lay.alignment_bytes, Access::kReadOnly), BackendError);
  EXPECT_THROW((void)b.map(0, lay.alignment_bytes, Access::kReadWrite), BackendError);
  // Inside, the bytes are the pool's.
  auto local = Pool::attach(open_backend(uri_));
  const auto model = pool->model("m");
  const TensorInfo& t = model->tensors()[1];
  std::vector<std::byte> got(t.size_bytes);
  ASSERT_EQ(pool->read(t, 0, got), ReadStatus::kOk);
  const auto want = local->view(local->model("m")->at(t.name));
  EXPECT_TRUE(std::equal(got.begin(), got.end(), want.begin(), want.end()));
  EXPECT_TRUE(pool->view(t).empty());  // nothing mapped
  // A remote pool has no writer and no in-place placement.
  EXPECT_THROW((void)Pool::attach(open_backend(server.uri()), PoolRole::kWriter), PoolError);
  EngineConfig in_place = config(server.uri());
  in_place.placement = Placement::kInPlace;
  InferenceEngine e(in_place);
  EXPECT_THROW(e.attach_model("m"), ConfigError);
}

// Four `xlshare generate` processes (exec'ed: a process that has used UCX should not fork
// workers that use it again) read through one server at the same time.
TEST_F(Remote, FourWorkerProcessesReadFromOneServerAtOnce) {
  ServerProcess server(uri_, token_file_);
  std::string command;
  for (int i = 0; i < 4; ++i) {
    command += fmt::format(
        "{} generate --pool {} --model m --prompt-tokens 3,14,15,92,65 -n 16 --placement copy "
        "--cache {} --preset none > {} 2>&1 & ",
        XLSHARE_CLI, server.uri(), model_bytes_ / 8,
        (dir_.path() / fmt::format("out{}", i)).string());
  }
  command += "wait";
  ASSERT_EQ(std::system(command.c_str()), 0);
  std::string want;
  for (std::size_t i = 0; i < want_.size(); ++i)
    want += fmt::format("{}{}", i ? "," : "", want_[i]);
  for (int i = 0; i < 4; ++i) {
    std::ifstream in(dir_.path() / fmt::format("out{}", i));
    std::string line, last;
    while (std::getline(in, line)) last = line;
    EXPECT_EQ(last, want) << "worker " << i;
  }
}

// Runs a shell command; its exit status and what it printed (stdout and stderr).
std::pair<int, std::string> run(const std::string& command) {
  FILE* p = ::popen((command + " 2>&1").c_str(), "r");
  std::string out;
  char buf[4096];
  while (p != nullptr && std::fgets(buf, sizeof buf, p) != nullptr) out += buf;
  const int status = p != nullptr ? ::pclose(p) : -1;
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, out};
}

// The CLI: the same logits from the remote pool as from the local one; a wrong token, a
// load into a remote pool and its removal are refused, each in one line.
TEST_F(Remote, TheCliReadsARemotePoolAndRefusesWhatItCannotDo) {
  ServerProcess server(uri_, token_file_);
  const std::string cli = XLSHARE_CLI;
  const auto local = dir_.path() / "local.bin", remote = dir_.path() / "remote.bin";
  auto [rc, out] = run(fmt::format("{} eval --pool {} --model m --tokens 3,14,15 --logits-out {}",
                                   cli, uri_, local.string()));
  ASSERT_EQ(rc, 0) << out;
  std::tie(rc, out) =
      run(fmt::format("{} eval --pool {} --model m --tokens 3,14,15 --logits-out {}", cli,
                      server.uri(), remote.string()));
  ASSERT_EQ(rc, 0) << out;
  std::ifstream a(local, std::ios::binary), b(remote, std::ios::binary);
  const std::string la((std::istreambuf_iterator<char>(a)), {}),
      lb((std::istreambuf_iterator<char>(b)), {});
  EXPECT_FALSE(la.empty());
  EXPECT_EQ(la, lb);

  const auto wrong = dir_.path() / "wrong";
  write_token(wrong, "not-the-token-but-long-enough-0000");
  for (const std::string& command :
       {fmt::format("{} --token-file {} generate --pool {} --model m --prompt-tokens 1 -n 2", cli,
                    wrong.string(), server.uri()),
        fmt::format("{} pool rm {}", cli, server.uri()),
        fmt::format("{} load {} --pool {} --name x", cli, token_file_.string(), server.uri()),
        fmt::format("{} generate --pool {} --model m --placement in-place --prompt-tokens 1 -n 2",
                    cli, server.uri())}) {
    std::tie(rc, out) = run(command);
    EXPECT_EQ(rc, 1) << command << "\n" << out;
    EXPECT_EQ(out.rfind("xlshare: error: ", 0), 0u) << out;
    EXPECT_EQ(std::count(out.begin(), out.end(), '\n'), 1) << out;
  }
}

TEST(Token, FilesOthersCanReadAreRefused) {
  test::TempDir dir;
  const auto path = dir.path() / "t";
  write_token(path, "0123456789abcdef-token", 0644);
  EXPECT_THROW((void)read_token_file(path.string()), ConfigError);
  ::chmod(path.c_str(), 0600);
  EXPECT_EQ(read_token_file(path.string()), "0123456789abcdef-token");
  write_token(path, "short");
  EXPECT_THROW((void)read_token_file(path.string()), ConfigError);
  write_token(path, std::string(2000, 'x'));
  EXPECT_THROW((void)read_token_file(path.string()), ConfigError);
  write_token(path, "has a space in the middle of it");
  EXPECT_THROW((void)read_token_file(path.string()), ConfigError);
  EXPECT_THROW((void)read_token_file((dir.path() / "absent").string()), ConfigError);
  EXPECT_TRUE(tokens_equal("abcdefgh", "abcdefgh"));
  EXPECT_FALSE(tokens_equal("abcdefgh", "abcdefgi"));
  EXPECT_FALSE(tokens_equal("abcdefgh", "abcdefg"));
  EXPECT_FALSE(tokens_equal("abcdefgh", "abcdefghi"));
  EXPECT_FALSE(tokens_equal("abcdefgh", ""));
}

TEST(RemoteUri, ParsesHostPortAndName) {
  const auto u = parse_backend_uri("ucx://10.0.0.2:13337/weights");
  EXPECT_EQ(u.scheme, BackendUri::Scheme::kUcx);
  EXPECT_EQ(u.host, "10.0.0.2");
  EXPECT_EQ(u.port, 13337);
  EXPECT_EQ(u.target, "weights");
  const auto v6 = parse_backend_uri("ucx://[::1]:80/p");
  EXPECT_EQ(v6.host, "::1");
  EXPECT_EQ(v6.port, 80);
  for (const char* bad : {"ucx://host/p", "ucx://host:0/p", "ucx://host:65536/p", "ucx://host:-1/p",
                          "ucx://:80/p", "ucx://host:80/", "ucx://host:80", "ucx://::1:80/p",
                          "ucx://ho st:80/p", "ucx://host:8x/p", "ucx://[::1/p"}) {
    EXPECT_THROW((void)parse_backend_uri(bad), ConfigError) << bad;
  }
  EXPECT_NO_THROW((void)parse_backend_uri("ucx://h:1/" + std::string(63, 'n')));
  EXPECT_THROW((void)parse_backend_uri("ucx://h:1/" + std::string(64, 'n')), ConfigError);
  EXPECT_THROW((void)create_backend("ucx://h:1/p", 1 << 20), ConfigError);
  EXPECT_THROW(remove_backend("ucx://h:1/p"), ConfigError);
}

TEST(RemoteUri, NobodyListeningIsAClearError) {
  test::TempDir dir;
  write_token(dir.path() / "t", "0123456789abcdef-token");
  BackendOptions o;
  o.token_file = (dir.path() / "t").string();
  o.remote_timeout_ms = 3000;
  // A port nobody listens on: bind one, close it.
  try {
    (void)open_backend("ucx://127.0.0.1:1/p", o);
    ADD_FAILURE() << "connected to nothing";
  } catch (const BackendError& e) {
    EXPECT_NE(std::string(e.what()).find("ucx://127.0.0.1:1/p"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace xlshare
