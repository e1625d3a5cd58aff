#include "xlshare/engine/worker_group.hpp"

#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <optional>
#include <thread>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

namespace xlshare {
namespace {

// A frame: kind, then the payload's length, then the payload.
enum Kind : std::uint8_t { kMessage = 0, kReply = 1, kFailure = 2, kReady = 3, kNotReady = 4 };
struct FrameHeader {
  std::uint8_t kind;
  std::uint8_t pad[3];
  std::uint32_t bytes;
};
constexpr std::uint32_t kMaxFrameBytes = 1u << 30;

bool write_all(int fd, const void* data, std::size_t n) noexcept {
  const auto* p = static_cast<const char*>(data);
  while (n > 0) {
    const ssize_t w = ::send(fd, p, n, MSG_NOSIGNAL);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return false;
    p += w;
    n -= static_cast<std::size_t>(w);
  }
  return true;
}

bool read_all(int fd, void* data, std::size_t n) noexcept {
  auto* p = static_cast<char*>(data);
  while (n > 0) {
    const ssize_t r = ::read(fd, p, n);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return false;
    p += r;
    n -= static_cast<std::size_t>(r);
  }
  return true;
}

bool write_frame(int fd, Kind kind, std::string_view payload) noexcept {
  if (payload.size() > kMaxFrameBytes) payload = payload.substr(0, kMaxFrameBytes);
  const FrameHeader h{kind, {0, 0, 0}, static_cast<std::uint32_t>(payload.size())};
  return write_all(fd, &h, sizeof h) && write_all(fd, payload.data(), payload.size());
}

// False at end of stream, on an error, or for a frame that is not one of ours.
bool read_frame(int fd, Kind& kind, std::string& payload) {
  FrameHeader h{};
  if (!read_all(fd, &h, sizeof h) || h.kind > kNotReady || h.bytes > kMaxFrameBytes) return false;
  kind = static_cast<Kind>(h.kind);
  payload.resize(h.bytes);
  return read_all(fd, payload.data(), payload.size());
}

std::string describe_status(int status) {
  if (WIFEXITED(status)) return fmt::format("exited with status {}", WEXITSTATUS(status));
  if (WIFSIGNALED(status)) {
    return fmt::format("killed by signal {} ({})", WTERMSIG(status), ::strsignal(WTERMSIG(status)));
  }
  return fmt::format("ended with wait status {}", status);
}

// Serving: an InferenceEngine attached to the model, answering "infer JSON" and "stats".
class ServingWorker final : public ProcessWorker {
 public:
  ServingWorker(const EngineConfig& config, const std::string& model) : engine_(config) {
    const auto t0 = std::chrono::steady_clock::now();
    engine_.attach_model(model);
    attach_ms_ =
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  }
  std::string ready_report() override { return nlohmann::json{{"attach_ms", attach_ms_}}.dump(); }
  std::string handle(std::string_view message) override {
    if (message == "stats") return engine_.stats().to_json();
    if (message.substr(0, 6) == "infer ") {
      const auto request = nlohmann::json::parse(message.substr(6)).get<InferenceRequest>();
      return nlohmann::json(engine_.inference(request)).dump();
    }
    throw ConfigError(
        fmt::format("a serving worker got an unknown message '{}'", message.substr(0, 40)));
  }

 private:
  InferenceEngine engine_;
  double attach_ms_ = 0;
};

}  // namespace

struct WorkerGroup::Impl {
  struct Child {
    pid_t pid = -1;
    int fd = -1;
    std::string ready;
    bool reaped = false;
    int status = 0;
  };
  WorkerGroupOptions options;
  std::vector<Child> children;
  bool stopped = false;
  std::vector<std::string> stop_lines;

  Child& at(unsigned worker) {
    if (worker >= children.size()) {
      throw ConfigError(fmt::format("worker {} of a group of {}", worker, children.size()));
    }
    return children[worker];
  }
  std::string name(unsigned worker) const {
    return fmt::format("worker {} (pid {})", worker, children[worker].pid);
  }
  // Reaps `worker`, which closed its socket: it is ending or has ended.
  std::string ending_of(unsigned worker) {
    Child& c = children[worker];
    if (!c.reaped) {
      while (::waitpid(c.pid, &c.status, 0) < 0 && errno == EINTR) {
      }
      c.reaped = true;
    }
    return describe_status(c.status);
  }

  // In the worker: never returns.
  [[noreturn]] void run_child(unsigned index, int fd, pid_t parent, const Factory& factory) {
    for (int sig : {SIGINT, SIGTERM, SIGHUP, SIGPIPE}) ::signal(sig, SIG_DFL);
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);  // never outlive the group's process
    if (::getppid() != parent) ::_exit(1);
    for (const auto& c : children) ::close(c.fd);  // the earlier workers' sockets
    int rc = 0;
    try {
      std::unique_ptr<ProcessWorker> worker;
      std::string report;
      try {
        worker = factory(index);
        if (!worker) throw Error("the factory made no worker");
        report = worker->ready_report();
      } catch (const std::exception& e) {
        (void)write_frame(fd, kNotReady, e.what());
        ::_exit(1);
      }
      if (!write_frame(fd, kReady, report)) ::_exit(1);
      Kind kind{};
      std::string message;
      while (read_frame(fd, kind, message)) {
        std::string reply;
        Kind answer = kReply;
        try {
          reply = worker->handle(message);
        } catch (const std::exception& e) {
          answer = kFailure;
          reply = e.what();
        } catch (...) {
          answer = kFailure;
          reply = "an exception that is not a std::exception";
        }
        if (!write_frame(fd, answer, reply)) break;
      }
      worker.reset();
    } catch (...) {
      rc = 2;
    }
    ::_exit(rc);
  }

  void wait_ready() {
    const auto deadline = std::chrono::steady_clock::now() + options.start_timeout;
    std::string failure;
    unsigned failed = 0;
    for (unsigned i = 0; i < children.size(); ++i) {
      Child& c = children[i];
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          deadline - std::chrono::steady_clock::now());
      pollfd p{c.fd, POLLIN, 0};
      int n = 0;
      do {
        n = ::poll(&p, 1, static_cast<int>(std::max<std::int64_t>(0, left.count())));
      } while (n < 0 && errno == EINTR);
      Kind kind{};
      std::string payload;
      std::string why;
      if (n == 0) {
        why = fmt::format("not ready after {} ms", options.start_timeout.count());
      } else if (!read_frame(c.fd, kind, payload)) {
        why = "ended before it was ready: " + ending_of(i);
      } else if (kind == kNotReady) {
        why = payload;
      } else if (kind != kReady) {
        why = "sent a frame out of turn";
      } else {
        c.ready = std::move(payload);
        continue;
      }
      if (failure.empty()) {
        failed = i;
        failure = fmt::format("{} failed to start: {}", name(i), why);
      }
    }
    if (!failure.empty()) {
      stop();
      throw WorkerError(failed, failure);
    }
  }

  std::vector<std::string> stop() noexcept {
    if (stopped) return stop_lines;
    stopped = true;
    for (auto& c : children) {
      if (c.fd >= 0) ::close(c.fd);
      c.fd = -1;
    }
    const auto deadline = std::chrono::steady_clock::now() + options.stop_timeout;
    for (unsigned i = 0; i < children.size(); ++i) {
      Child& c = children[i];
      bool killed = false;
      while (!c.reaped) {
        const pid_t r = ::waitpid(c.pid, &c.status, WNOHANG);
        if (r == c.pid) {
          c.reaped = true;
        } else if (r < 0 && errno != EINTR) {
          c.reaped = true;  // not ours to wait for any more: nothing to say about it
          c.status = 0;
        } else if (!killed && std::chrono::steady_clock::now() >= deadline) {
          ::kill(c.pid, SIGKILL);
          killed = true;
        } else {
          std::this_thread::sleep_for(std::chrono::milliseconds(2));
        }
      }
      try {
        if (killed) {
          stop_lines.push_back(fmt::format("{}: did not stop within {} ms; killed", name(i),
                                           options.stop_timeout.count()));
        } else if (!(WIFEXITED(c.status) && WEXITSTATUS(c.status) == 0)) {
          stop_lines.push_back(fmt::format("{}: {}", name(i), describe_status(c.status)));
        }
      } catch (...) {
      }
    }
    return stop_lines;
  }
};

WorkerGroup::WorkerGroup(Factory factory, WorkerGroupOptions options)
    : impl_(std::make_unique<Impl>()) {
  if (options.workers == 0 || options.workers > 256) {
    throw ConfigError(fmt::format("a worker group has 1..256 workers, not {}", options.workers));
  }
  if (!factory) throw ConfigError("a worker group needs a factory");
  impl_->options = options;
  const pid_t parent = ::getpid();
  for (unsigned i = 0; i < options.workers; ++i) {
    int sv[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
      const int err = errno;
      impl_->stop();
      throw Error(errno_message("worker group: socketpair", err));
    }
    std::fflush(nullptr);  // what this process buffered is not printed again by a worker
    const pid_t pid = ::fork();
    if (pid < 0) {
      const int err = errno;
      ::close(sv[0]);
      ::close(sv[1]);
      impl_->stop();
      throw Error(errno_message("worker group: fork", err));
    }
    if (pid == 0) {
      ::close(sv[0]);
      impl_->run_child(i, sv[1], parent, factory);
    }
    ::close(sv[1]);
    impl_->children.push_back({pid, sv[0], {}, false, 0});
  }
  impl_->wait_ready();
}

std::unique_ptr<WorkerGroup> WorkerGroup::serving(EngineConfig config, std::string model,
                                                  WorkerGroupOptions options) {
  auto factory = [config = std::move(config), model = std::move(model)](unsigned) {
    return std::make_unique<ServingWorker>(config, model);
  };
  return std::make_unique<WorkerGroup>(std::move(factory), options);
}

WorkerGroup::~WorkerGroup() { (void)impl_->stop(); }

unsigned WorkerGroup::size() const noexcept {
  return static_cast<unsigned>(impl_->children.size());
}
pid_t WorkerGroup::pid(unsigned worker) const { return impl_->at(worker).pid; }
const std::string& WorkerGroup::ready_report(unsigned worker) const {
  return impl_->at(worker).ready;
}

void WorkerGroup::send(unsigned worker, std::string_view message) {
  Impl::Child& c = impl_->at(worker);
  if (c.fd < 0 || c.reaped) {
    throw WorkerError(worker, fmt::format("{} is stopped", impl_->name(worker)));
  }
  if (!write_frame(c.fd, kMessage, message)) {
    throw WorkerError(worker,
                      fmt::format("{} is gone: {}", impl_->name(worker), impl_->ending_of(worker)));
  }
}

std::string WorkerGroup::receive(unsigned worker) {
  Impl::Child& c = impl_->at(worker);
  if (c.fd < 0) throw WorkerError(worker, fmt::format("{} is stopped", impl_->name(worker)));
  Kind kind{};
  std::string payload;
  if (!read_frame(c.fd, kind, payload)) {
    throw WorkerError(worker,
                      fmt::format("{} died: {}", impl_->name(worker), impl_->ending_of(worker)));
  }
  if (kind == kFailure) {
    throw WorkerError(worker, fmt::format("{}: {}", impl_->name(worker), payload));
  }
  if (kind != kReply) {
    throw WorkerError(worker, fmt::format("{} sent a frame out of turn", impl_->name(worker)));
  }
  return payload;
}

std::string WorkerGroup::call(unsigned worker, std::string_view message) {
  send(worker, message);
  return receive(worker);
}

InferenceResult WorkerGroup::infer(unsigned worker, const InferenceRequest& request) {
  const std::string reply = call(worker, "infer " + nlohmann::json(request).dump());
  auto result = nlohmann::json::parse(reply).get<InferenceResult>();
  result.worker = worker;
  return result;
}

std::vector<InferenceResult> WorkerGroup::infer_all(std::span<const InferenceRequest> requests) {
  std::vector<InferenceResult> results(requests.size());
  const std::size_t n = size();
  std::optional<WorkerError> first;
  // In rounds of one request per worker: every worker busy, and no socket ever holds more
  // than one request and one reply.
  for (std::size_t round = 0; round < requests.size(); round += n) {
    const std::size_t end = std::min(requests.size(), round + n);
    std::vector<bool> sent(end - round, false);
    for (std::size_t i = round; i < end; ++i) {
      try {
        send(static_cast<unsigned>(i % n), "infer " + nlohmann::json(requests[i]).dump());
        sent[i - round] = true;
      } catch (const WorkerError& e) {
        if (!first) first = e;
      }
    }
    for (std::size_t i = round; i < end; ++i) {
      if (!sent[i - round]) continue;
      const auto worker = static_cast<unsigned>(i % n);
      try {
        results[i] = nlohmann::json::parse(receive(worker)).get<InferenceResult>();
        results[i].worker = worker;
      } catch (const WorkerError& e) {
        if (!first) first = e;
      }
    }
  }
  if (first) throw *first;
  return results;
}

std::string WorkerGroup::stats_json(unsigned worker) { return call(worker, "stats"); }

ProcMemory WorkerGroup::memory(unsigned worker) const {
  const auto m = read_proc_memory(impl_->at(worker).pid);
  if (!m) throw WorkerError(worker, fmt::format("{}: no memory figures", impl_->name(worker)));
  return *m;
}

ProcMemory WorkerGroup::mapping_memory(unsigned worker, std::string_view path_fragment) const {
  const auto m = read_mapping_memory(impl_->at(worker).pid, path_fragment);
  if (!m) throw WorkerError(worker, fmt::format("{}: no memory figures", impl_->name(worker)));
  return *m;
}

std::size_t WorkerGroup::open_fds(unsigned worker) const {
  std::error_code ec;
  std::size_t n = 0;
  for (std::filesystem::directory_iterator
           it(fmt::format("/proc/{}/fd", impl_->at(worker).pid), ec),
       end;
       !ec && it != end; it.increment(ec)) {
    ++n;
  }
  if (ec) throw WorkerError(worker, fmt::format("{}: /proc has no fds", impl_->name(worker)));
  return n;
}

std::vector<std::string> WorkerGroup::stop() { return impl_->stop(); }

}  // namespace xlshare
