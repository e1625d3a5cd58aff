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
#include <climits>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <mutex>
#include <new>
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

// A payload over kMaxFrameBytes is the caller's to refuse (never truncated here).
bool write_frame(int fd, Kind kind, std::string_view payload) noexcept {
  if (payload.size() > kMaxFrameBytes) return false;
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

// A wait status no process ends with: reaped by someone else, its end unknown.
constexpr int kStatusUnknown = -1;

std::string describe_status(int status) {
  if (status == kStatusUnknown) return "ended (reaped elsewhere: how is unknown)";
  if (WIFEXITED(status)) return fmt::format("exited with status {}", WEXITSTATUS(status));
  if (WIFSIGNALED(status)) {
    return fmt::format("killed by signal {} ({})", WTERMSIG(status), ::strsignal(WTERMSIG(status)));
  }
  return fmt::format("ended with wait status {}", status);
}

// Every parent-side socket of every live group in this process, so that a worker forked
// by any group closes them all: a worker holding another worker's socket would keep it
// from ever seeing its end (SOCK_CLOEXEC does nothing across a plain fork). Groups are
// also built one at a time under the same lock, so no fork happens while a socket pair
// is half-handed-out.
struct OpenSockets {
  std::mutex mutex;
  std::vector<int> fds;
};
OpenSockets& open_sockets() {
  static OpenSockets s;
  return s;
}
void forget_socket(int fd) noexcept {
  OpenSockets& o = open_sockets();
  std::lock_guard lock(o.mutex);
  o.fds.erase(std::remove(o.fds.begin(), o.fds.end(), fd), o.fds.end());
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

  // Also when the group's constructor throws part way: no worker or socket is left.
  ~Impl() { (void)stop(); }

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
      pid_t r = 0;
      while ((r = ::waitpid(c.pid, &c.status, 0)) < 0 && errno == EINTR) {
      }
      c.reaped = true;
      if (r < 0) c.status = kStatusUnknown;
    }
    return describe_status(c.status);
  }

  // In the worker: never returns.
  [[noreturn]] void run_child(unsigned index, int fd, pid_t parent, const Factory& factory) {
    for (int sig : {SIGINT, SIGTERM, SIGHUP, SIGPIPE}) ::signal(sig, SIG_DFL);
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);  // never outlive the group's process
    if (::getppid() != parent) ::_exit(1);
    // Every other worker's socket, of this group and of any other (the fork happened under
    // open_sockets().mutex, held by the parent's constructor: its copy here is locked but
    // never contended, and the list is read as it was).
    for (int other : open_sockets().fds) ::close(other);
    // This process's own list starts empty, its lock free (the parent's thread that held it
    // does not exist here), so that a worker may start a group of its own.
    open_sockets().fds.clear();
    new (&open_sockets().mutex) std::mutex();  // NOLINT: re-made, never unlocked by its owner
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
          if (reply.size() > kMaxFrameBytes) {
            throw Error(fmt::format("a reply of {} bytes; at most {} go in one", reply.size(),
                                    kMaxFrameBytes));
          }
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
      pollfd p{c.fd, POLLIN, 0};
      int n = 0;
      do {  // the time left, again after each interruption; at most INT_MAX ms a wait
        const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
            deadline - std::chrono::steady_clock::now());
        n = ::poll(&p, 1, static_cast<int>(std::clamp<std::int64_t>(left.count(), 0, INT_MAX)));
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
      if (c.fd >= 0) {
        forget_socket(c.fd);
        ::close(c.fd);
      }
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
          c.reaped = true;  // reaped elsewhere (SIGCHLD ignored, a waitpid(-1)): not known
          c.status = kStatusUnknown;
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
  impl_->children.reserve(options.workers);
  const pid_t parent = ::getpid();
  {
    OpenSockets& sockets = open_sockets();
    std::lock_guard lock(sockets.mutex);
    sockets.fds.reserve(sockets.fds.size() + options.workers);
    for (unsigned i = 0; i < options.workers; ++i) {
      int sv[2];
      if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
        throw Error(errno_message("worker group: socketpair", errno));  // ~Impl stops the rest
      }
      std::fflush(nullptr);  // what this process buffered is not printed again by a worker
      const pid_t pid = ::fork();
      if (pid < 0) {
        const int err = errno;
        ::close(sv[0]);
        ::close(sv[1]);
        throw Error(errno_message("worker group: fork", err));
      }
      if (pid == 0) {
        ::close(sv[0]);
        impl_->run_child(i, sv[1], parent, factory);
      }
      ::close(sv[1]);
      sockets.fds.push_back(sv[0]);  // reserved: cannot throw
      impl_->children.push_back({pid, sv[0], {}, false, 0});
    }
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
  if (message.size() > kMaxFrameBytes) {
    throw ConfigError(
        fmt::format("a message of {} bytes; at most {} go in one", message.size(), kMaxFrameBytes));
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
  std::vector<std::string> messages;  // all made first: nothing can fail half way through
  messages.reserve(requests.size());
  for (const auto& r : requests) messages.push_back("infer " + nlohmann::json(r).dump());
  std::vector<InferenceResult> results(requests.size());
  const std::size_t n = size();
  std::optional<WorkerError> first;
  const auto keep_first = [&first](unsigned worker, const std::string& what) {
    if (!first) first.emplace(worker, what);
  };
  // In rounds of one request per worker: every worker busy, and no socket ever holds more
  // than one request and one reply. Every reply to a request sent is received, whatever
  // fails, so that no reply is left for a later call to mistake for its own.
  for (std::size_t round = 0; round < requests.size(); round += n) {
    const std::size_t end = std::min(requests.size(), round + n);
    std::vector<bool> sent(end - round, false);
    for (std::size_t i = round; i < end; ++i) {
      try {
        send(static_cast<unsigned>(i % n), messages[i]);
        sent[i - round] = true;
      } catch (const WorkerError& e) {
        keep_first(e.worker(), e.what());
      }
    }
    for (std::size_t i = round; i < end; ++i) {
      if (!sent[i - round]) continue;
      const auto worker = static_cast<unsigned>(i % n);
      try {
        results[i] = nlohmann::json::parse(receive(worker)).get<InferenceResult>();
        results[i].worker = worker;
      } catch (const WorkerError& e) {
        keep_first(e.worker(), e.what());
      } catch (const std::exception& e) {
        keep_first(worker, fmt::format("{}: a reply that is not a result: {}", impl_->name(worker),
                                       e.what()));
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
