// A WorkerGroup of 2 worker processes serving from a remote pool: forked by a process that
// has not used UCX yet (UCX is made in each worker after the fork), they must answer with
// the local pool's tokens. A program of its own, not a gtest case: the gtest binary has
// used UCX before any case could fork. Exit status 0 on success.
//   worker_group_remote XLSHARE_CLI
#include <fcntl.h>
#include <fmt/format.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "xlshare/engine/inference_engine.hpp"
#include "xlshare/engine/worker_group.hpp"
#include "xlshare/memory/backend_uri.hpp"

using namespace xlshare;

int main(int argc, char** argv) {
  if (argc != 2) {
    fmt::print(stderr, "usage: worker_group_remote XLSHARE_CLI\n");
    return 2;
  }
  const std::string cli = argv[1];
  const std::string pool = fmt::format("shm://xlshare-wg-remote-{}", ::getpid());
  const auto dir =
      std::filesystem::temp_directory_path() / fmt::format("xlshare-wg-{}", ::getpid());
  std::filesystem::create_directories(dir);
  const auto token = dir / "token";
  std::ofstream(token) << "worker-group-remote-token-0123456789\n";
  ::chmod(token.c_str(), 0600);
  ::setenv("XLSHARE_TOKEN_FILE", token.c_str(), 1);
  pid_t server = -1;
  int rc = 1;
  try {
    EngineConfig c;
    c.pool_uri = pool;
    c.placement = Placement::kCopy;
    c.link_preset = "none";
    const auto model = create_sample_transformer_model(64, 6, 4, 2, 160, 256, 5);
    std::uint64_t bytes = 0;
    for (const auto& d : model.data) bytes += d.size() * 4;
    c.cache_bytes = bytes / 8;
    InferenceEngine(c).register_model(model, "m");
    std::vector<InferenceRequest> requests(2);
    for (auto& r : requests) {
      r.prompt = {3, 14, 15, 92, 65};
      r.max_new_tokens = 12;
    }
    std::vector<std::int32_t> want;
    {  // the local answer, from worker processes too (this process has no UCX yet)
      auto group = WorkerGroup::serving(c, "m", {.workers = 1});
      want = group->infer_all(std::span(requests).first(1)).at(0).output_tokens;
      group->stop();
    }
    int out[2];
    if (::pipe(out) != 0) throw std::runtime_error("pipe");
    server = ::fork();
    if (server == 0) {
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      ::dup2(out[1], STDOUT_FILENO);
      ::close(out[0]);
      ::close(out[1]);
      ::execl(cli.c_str(), cli.c_str(), "pool", "serve", pool.c_str(), "--listen", "127.0.0.1:0",
              static_cast<char*>(nullptr));
      ::_exit(97);
    }
    ::close(out[1]);
    std::string line;
    while (line.find('\n', line.find("serving pool ")) == std::string::npos) {
      pollfd p{out[0], POLLIN, 0};
      if (::poll(&p, 1, 20000) <= 0) break;
      char buf[256];
      const ssize_t n = ::read(out[0], buf, sizeof buf);
      if (n <= 0) break;
      line.append(buf, static_cast<std::size_t>(n));
    }
    ::close(out[0]);
    const auto at = line.find(" as ", line.find("serving pool "));
    if (at == std::string::npos) throw std::runtime_error("the server did not start: " + line);
    c.pool_uri = line.substr(at + 4, line.find('\n', at) - at - 4);
    auto group = WorkerGroup::serving(c, "m", {.workers = 2});
    const auto results = group->infer_all(requests);
    group->stop();
    rc = 0;
    for (const auto& r : results) {
      if (r.output_tokens != want) {
        fmt::print(stderr, "a worker on {} answered other tokens\n", c.pool_uri);
        rc = 1;
      }
    }
    if (rc == 0)
      fmt::print("2 workers on {}: the local pool's {} tokens\n", c.pool_uri, want.size());
  } catch (const std::exception& e) {
    fmt::print(stderr, "worker_group_remote: {}\n", e.what());
    rc = 1;
  }
  if (server > 0) {
    ::kill(server, SIGKILL);
    ::waitpid(server, nullptr, 0);
  }
  try {
    remove_backend(pool);
  } catch (...) {
  }
  std::filesystem::remove_all(dir);
  return rc;
}
