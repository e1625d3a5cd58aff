// The serving scheduler: one thread per worker runs iteration-level (continuous) batching.
// Each step is ONE forward pass over every running sequence of the worker: a decode token
// for each sequence that is generating, plus chunks of prompts being prefilled, up to
// max_step_tokens; requests join the batch and leave it at any step. Admission is FCFS from
// one queue that every worker's thread pulls from (an idle worker takes the next request:
// load spreads by itself), by the KV blocks of the worker's KvBlockPool; a sequence that
// cannot grow preempts the newest running one, whose KV is freed and recomputed later.
// Private to src/engine.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <exception>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "xlshare/engine/inference_engine.hpp"

namespace xlshare {

using SteadyClock = std::chrono::steady_clock;

struct SchedulerQueue {
  std::mutex mu;
  std::condition_variable cv;
  std::deque<std::shared_ptr<RequestState>> waiting;  // FCFS; preempted ones go back in front
  bool stopping = false;
};

struct RequestState {
  InferenceRequest request;
  RequestCallbacks callbacks;
  SteadyClock::time_point submitted;
  std::weak_ptr<SchedulerQueue> queue;
  std::atomic<bool> cancel_requested{false};

  // Owned by the scheduler thread running it (or by the queue while it waits).
  std::vector<std::int32_t> output;
  std::vector<float> last_logits;
  std::mt19937_64 rng;
  bool admitted = false, streamed = false, callback_failed = false;
  double queue_ms = 0, first_token_ms = 0;
  std::uint32_t preemptions = 0, restarts = 0;
  std::uint64_t epoch = 0;  // the weights epoch `output` was computed under
  Counters before;
  unsigned worker = 0;

  // Completion.
  mutable std::mutex mu;
  std::condition_variable cv;
  bool finished = false;
  InferenceResult result;
  std::exception_ptr error;
};

struct SchedulerOptions {
  std::uint64_t kv_bytes = 0;  // per worker
  std::uint32_t kv_block_tokens = KvBlockPool::kDefaultBlockTokens;
  unsigned max_batch_sequences = 32;
  std::uint32_t max_step_tokens = 512;
  std::uint32_t max_context = 1024;
  std::string pool_uri, model_name;  // for messages
};

class Scheduler {
 public:
  /// Starts one thread per worker. @throws ConfigError when the KV budget holds no block.
  Scheduler(std::vector<Worker*> workers, const LlamaConfig& config, SchedulerOptions options);
  /// Stops the threads; what is waiting or running fails with a ConfigError.
  ~Scheduler();
  Scheduler(const Scheduler&) = delete;
  Scheduler& operator=(const Scheduler&) = delete;

  /// @throws ConfigError for a request no worker could ever run (empty prompt, too long,
  /// a token outside the vocabulary, more KV than a worker's budget).
  void validate(const InferenceRequest& request) const;
  /// Queues the requests together (validated first: all or none), FCFS.
  std::vector<RequestHandle> submit(std::vector<InferenceRequest> requests,
                                    std::vector<RequestCallbacks> callbacks);

  ServingStats stats(unsigned worker) const;
  std::uint64_t waiting() const;
  std::uint64_t requests(unsigned worker) const;
  std::uint64_t tokens(unsigned worker) const;
  /// Latency of the last EngineStats::kLatencyWindow requests, ms, unsorted.
  std::vector<double> latencies() const;

 private:
  struct Sequence;
  struct Slot;
  void run(unsigned w);
  void step(unsigned w, std::vector<std::unique_ptr<Sequence>>& running);
  // Restarts (or fails) the sequences computed under an older weights epoch than the
  // worker's; true when there were any (the step is over).
  bool restart_stale(unsigned w, std::vector<std::unique_ptr<Sequence>>& running);
  // Frees its KV and puts it back in front of the queue.
  void preempt(Slot& slot, std::unique_ptr<Sequence> seq);
  // Emits a token event; what the callback threw, if it threw.
  std::exception_ptr emit(RequestState& st, std::int32_t token, bool finished, FinishReason reason);
  void finish(unsigned w, RequestState& st, FinishReason reason, std::exception_ptr error = {});
  void fail_all(unsigned w, std::vector<std::unique_ptr<Sequence>>& running,
                const std::exception_ptr& error);

  std::vector<Worker*> workers_;
  const LlamaConfig& config_;
  SchedulerOptions options_;
  std::shared_ptr<SchedulerQueue> queue_;
  std::vector<std::unique_ptr<Slot>> slots_;
  mutable std::mutex stats_mu_;
  std::vector<double> latencies_ms_;
  std::size_t latency_next_ = 0;
  std::vector<std::thread> threads_;
};

}  // namespace xlshare
