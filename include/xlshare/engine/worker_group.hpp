// WorkerGroup: N worker processes on one pool, run from one object. It forks the workers,
// makes each one's ProcessWorker there (an InferenceEngine attached to the pool, for a
// serving group), sends them messages (requests) and collects the replies (results),
// reads each one's memory from /proc (PSS: what sharing one copy is measured by), and
// stops them on every exit path: stop(), the destructor, or the death of the thread that
// built the group (each worker gets SIGKILL then: PR_SET_PDEATHSIG follows the forking
// thread, so build the group on a thread that outlives it, the main thread say).
//
//   auto group = WorkerGroup::serving(config, "llama", {.workers = 4});
//   auto results = group->infer_all(requests);   // request i on worker i % 4, all at once
//   ProcMemory m = group->memory(0);             // PSS, RSS of worker 0
//   group->stop();                               // every worker exits 0, or says why not
//
// A worker is a fork of this process made when the group is constructed: it sees this
// process's memory as it was then (copy on write). Build the group before starting
// threads that hold locks a worker would need. Messages are framed byte strings (at most
// 1 GiB) over a socket pair per worker; a worker answers its messages in order, one at a
// time. A group is not thread-safe: one thread talks to it (or the caller locks).
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "xlshare/engine/inference_engine.hpp"
#include "xlshare/error.hpp"
#include "xlshare/proc_memory.hpp"

namespace xlshare {

/// What runs in one worker process: made there, after the fork, by the group's factory.
class ProcessWorker {
 public:
  virtual ~ProcessWorker() = default;
  /// Sent to the parent once the worker is made (WorkerGroup::ready_report): how long
  /// attaching took, say. Default: empty.
  virtual std::string ready_report() { return {}; }
  /// The reply to one message. What it throws goes back as an error reply (the parent's
  /// receive() throws WorkerError with its message); the worker carries on.
  virtual std::string handle(std::string_view message) = 0;
};

/// A worker that failed: it said why (an exception), or it ended (exit status, signal).
class WorkerError : public Error {
 public:
  WorkerError(unsigned worker, const std::string& what) : Error(what), worker_(worker) {}
  unsigned worker() const noexcept { return worker_; }

 private:
  unsigned worker_;
};

struct WorkerGroupOptions {
  /// Worker processes, 1..256. Default 2.
  unsigned workers = 2;
  /// How long the constructor waits for every worker to be made. Default 10 minutes.
  std::chrono::milliseconds start_timeout{600'000};
  /// How long stop() waits for a worker to exit before it kills it. Default 10 s.
  std::chrono::milliseconds stop_timeout{10'000};
};

class WorkerGroup {
 public:
  /// Makes worker `index`'s ProcessWorker; runs in that worker's process.
  using Factory = std::function<std::unique_ptr<ProcessWorker>(unsigned index)>;

  /// Forks options.workers processes, each making its worker with `factory` (all at
  /// once), and returns when every one is ready.
  /// @throws WorkerError naming the first worker that failed to start, with its message
  /// (every worker is stopped first); ConfigError for a worker count out of range; Error
  /// when fork or socketpair fails.
  WorkerGroup(Factory factory, WorkerGroupOptions options);
  /// Serving workers: each attaches an InferenceEngine with `config` to model `model`
  /// (nothing is loaded: the model must be in the pool) and answers infer() and
  /// stats(). Its ready_report is {"attach_ms": …} as JSON.
  static std::unique_ptr<WorkerGroup> serving(EngineConfig config, std::string model,
                                              WorkerGroupOptions options = {});
  /// Stops the workers (as stop()); never throws.
  ~WorkerGroup();
  WorkerGroup(const WorkerGroup&) = delete;
  WorkerGroup& operator=(const WorkerGroup&) = delete;

  unsigned size() const noexcept;
  pid_t pid(unsigned worker) const;
  const std::string& ready_report(unsigned worker) const;

  /// Sends `message` to `worker`; its reply is for receive(). Several may be in flight
  /// only while their replies fit the socket's buffer (a few hundred KiB): a worker blocked
  /// writing a reply reads no further message, and send() waits. One at a time is safe.
  /// @throws WorkerError when the worker is gone; ConfigError for a message over 1 GiB.
  void send(unsigned worker, std::string_view message);
  /// The reply to the oldest message of `worker` not yet received. Waits.
  /// @throws WorkerError with the worker's message when handle() threw, or saying how it
  /// ended when it died.
  std::string receive(unsigned worker);
  /// send() then receive().
  std::string call(unsigned worker, std::string_view message);

  /// Serving groups: runs `request` on `worker`. @throws WorkerError.
  InferenceResult infer(unsigned worker, const InferenceRequest& request);
  /// Serving groups: request i on worker i % size(), every worker at once; results in
  /// request order. @throws WorkerError (after every reply was collected).
  std::vector<InferenceResult> infer_all(std::span<const InferenceRequest> requests);
  /// Serving groups: the worker's InferenceEngine::stats(), as its JSON text.
  std::string stats_json(unsigned worker);

  /// The worker's memory now, from /proc/PID/smaps_rollup. @throws WorkerError when it
  /// cannot be read (the worker is gone).
  ProcMemory memory(unsigned worker) const;
  /// The same over the worker's mappings whose path contains `path_fragment` (a pool's
  /// "/dev/shm/NAME" or file path).
  ProcMemory mapping_memory(unsigned worker, std::string_view path_fragment) const;
  /// Descriptors the worker has open now (/proc/PID/fd). @throws WorkerError.
  std::size_t open_fds(unsigned worker) const;

  /// Stops every worker: its socket is closed, so it leaves its loop, destroys its
  /// ProcessWorker and exits 0; one still running after stop_timeout is killed. Returns a
  /// line for each worker that did not end so ("worker 1 (pid 42): killed by signal 9");
  /// empty when all did. Later calls return the same lines.
  std::vector<std::string> stop();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace xlshare
