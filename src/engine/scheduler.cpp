#include "engine/scheduler.hpp"

#include <fmt/format.h>

#include <algorithm>

#include "xlshare/error.hpp"
#include "xlshare/log.hpp"

namespace xlshare {
namespace {

double ms_since(SteadyClock::time_point t0) {
  return std::chrono::duration<double, std::milli>(SteadyClock::now() - t0).count();
}

void fill_rates(InferenceResult& r, const Counters& a, const Counters& b) {
  const Figures f = figures_between(a, b);
  r.ready_rate = f.ready_rate;
  r.reuse_rate = f.reuse_rate;
  r.stall_ms = f.stall_ms;
  r.link_bytes = f.link_bytes;
  r.link_gbps = f.link_gbps;
  r.overlap = f.overlap;
  r.prefetch_accuracy = f.prefetch_accuracy;
}

std::string what_of(const std::exception_ptr& e) {
  try {
    std::rethrow_exception(e);
  } catch (const std::exception& x) {
    return x.what();
  } catch (...) {
    return "an exception that is not a std::exception";
  }
}

}  // namespace

// --- RequestHandle -----------------------------------------------------------------------

namespace {
RequestState& checked(const std::shared_ptr<RequestState>& s) {
  if (!s) throw ConfigError("request handle: empty (not returned by submit)");
  return *s;
}
}  // namespace

const std::string& RequestHandle::id() const { return checked(state_).request.id; }

bool RequestHandle::done() const {
  const RequestState& s = checked(state_);
  std::lock_guard g(s.mu);
  return s.finished;
}

InferenceResult RequestHandle::wait() const {
  RequestState& s = checked(state_);
  std::unique_lock l(s.mu);
  s.cv.wait(l, [&] { return s.finished; });
  if (s.error) std::rethrow_exception(s.error);
  return s.result;
}

bool RequestHandle::wait_for(std::chrono::milliseconds timeout) const {
  RequestState& s = checked(state_);
  std::unique_lock l(s.mu);
  return s.cv.wait_for(l, timeout, [&] { return s.finished; });
}

void RequestHandle::cancel() const {
  RequestState& s = checked(state_);
  s.cancel_requested.store(true);
  if (auto q = s.queue.lock()) {
    std::lock_guard g(q->mu);  // no lost wake-up: a worker checks under this lock
    q->cv.notify_all();
  }
}

// --- Scheduler ---------------------------------------------------------------------------

struct Scheduler::Sequence {
  std::shared_ptr<RequestState> st;
  KvCache kv;
  std::vector<std::int32_t> tokens;  // prompt + output: what the KV holds or will
  std::vector<float> logits;
  std::uint64_t epoch = 0;  // the worker's weights_epoch() its KV and output were made under
  bool done = false;        // finished this step: leaves the batch at its end
};

struct Scheduler::Slot {
  std::shared_ptr<KvBlockPool> kv;
  std::atomic<std::uint64_t> running{0}, steps{0}, step_sequences{0}, step_tokens{0},
      output_tokens{0}, preemptions{0}, cancelled{0}, failed{0}, requests{0};
  SteadyClock::time_point started = SteadyClock::now();
};

Scheduler::Scheduler(std::vector<Worker*> workers, const LlamaConfig& config,
                     SchedulerOptions options)
    : workers_(std::move(workers)),
      config_(config),
      options_(std::move(options)),
      queue_(std::make_shared<SchedulerQueue>()) {
  if (options_.max_batch_sequences == 0)
    throw ConfigError("engine: max_batch_sequences must be > 0");
  if (options_.max_step_tokens < options_.max_batch_sequences) {
    throw ConfigError(fmt::format(
        "engine: max_step_tokens ({}) must be at least max_batch_sequences ({}): every running "
        "sequence's decode token goes into each step",
        options_.max_step_tokens, options_.max_batch_sequences));
  }
  if (options_.kv_block_tokens == 0) throw ConfigError("engine: kv_block_tokens must be > 0");
  const std::size_t blocks =
      KvBlockPool::blocks_in(config_, options_.kv_bytes, options_.kv_block_tokens);
  if (blocks == 0) {
    throw ConfigError(
        fmt::format("engine: a KV budget of {} bytes holds no block of {} tokens ({} "
                    "bytes each)",
                    options_.kv_bytes, options_.kv_block_tokens,
                    KvBlockPool::token_bytes(config_) * options_.kv_block_tokens));
  }
  for (std::size_t i = 0; i < workers_.size(); ++i) {
    auto slot = std::make_unique<Slot>();
    slot->kv = std::make_shared<KvBlockPool>(config_, blocks, options_.kv_block_tokens);
    slots_.push_back(std::move(slot));
  }
  try {
    for (unsigned w = 0; w < workers_.size(); ++w) threads_.emplace_back([this, w] { run(w); });
  } catch (...) {
    {
      std::lock_guard g(queue_->mu);
      queue_->stopping = true;
    }
    queue_->cv.notify_all();
    for (auto& t : threads_) t.join();
    throw;
  }
}

Scheduler::~Scheduler() {
  {
    std::lock_guard g(queue_->mu);
    queue_->stopping = true;
  }
  queue_->cv.notify_all();
  for (auto& t : threads_) t.join();
  // Whatever still waits will never run.
  const auto stopped =
      std::make_exception_ptr(ConfigError("engine: stopped before the request finished"));
  std::deque<std::shared_ptr<RequestState>> left;
  {
    std::lock_guard g(queue_->mu);
    left.swap(queue_->waiting);
  }
  for (auto& st : left) finish(st->worker, *st, FinishReason::kError, stopped);
}

void Scheduler::validate(const InferenceRequest& r) const {
  if (r.prompt.empty()) throw ConfigError(fmt::format("request '{}': empty prompt", r.id));
  const std::size_t limit = std::min<std::size_t>(options_.max_context, config_.context);
  const std::size_t need = r.prompt.size() + r.max_new_tokens;
  if (r.max_new_tokens > limit || need > limit) {
    throw ConfigError(fmt::format("request '{}': {} tokens exceed the context of {}", r.id,
                                  r.prompt.size() + std::min<std::size_t>(r.max_new_tokens, limit),
                                  limit));
  }
  for (const auto t : r.prompt) {
    if (t < 0 || static_cast<std::uint32_t>(t) >= config_.vocab) {
      throw ConfigError(
          fmt::format("request '{}': prompt token {} is outside the vocabulary (0..{})", r.id, t,
                      config_.vocab - 1));
    }
  }
  const KvBlockPool& pool = *slots_.front()->kv;
  if (pool.blocks_for(need) > pool.blocks()) {
    throw ConfigError(fmt::format(
        "request '{}': {} tokens need {} bytes of KV, more than a worker's budget of {}", r.id,
        need, pool.blocks_for(need) * pool.block_bytes(), pool.capacity_bytes()));
  }
}

std::vector<RequestHandle> Scheduler::submit(std::vector<InferenceRequest> requests,
                                             std::vector<RequestCallbacks> callbacks) {
  for (const auto& r : requests) validate(r);
  callbacks.resize(requests.size());
  std::vector<RequestHandle> handles;
  std::vector<std::shared_ptr<RequestState>> states;
  const auto now = SteadyClock::now();
  for (std::size_t i = 0; i < requests.size(); ++i) {
    auto st = std::make_shared<RequestState>();
    st->rng.seed(requests[i].sampling.seed);
    st->request = std::move(requests[i]);
    st->callbacks = std::move(callbacks[i]);
    st->submitted = now;
    st->queue = queue_;
    handles.emplace_back(st);
    states.push_back(std::move(st));
  }
  {
    std::lock_guard g(queue_->mu);
    if (queue_->stopping) throw ConfigError("engine: stopping; no request is taken");
    for (auto& st : states) queue_->waiting.push_back(std::move(st));
  }
  queue_->cv.notify_all();
  return handles;
}

void Scheduler::run(unsigned w) {
  Slot& slot = *slots_[w];
  Worker& worker = *workers_[w];
  std::vector<std::unique_ptr<Sequence>> running;
  std::vector<std::shared_ptr<RequestState>> cancelled;
  for (;;) {
    {
      std::unique_lock lk(queue_->mu);
      queue_->cv.wait(
          lk, [&] { return queue_->stopping || !running.empty() || !queue_->waiting.empty(); });
      if (queue_->stopping) break;
      auto& waiting = queue_->waiting;
      for (auto it = waiting.begin(); it != waiting.end();) {
        if ((*it)->cancel_requested.load()) {
          cancelled.push_back(std::move(*it));
          it = waiting.erase(it);
        } else {
          ++it;
        }
      }
      // FCFS: the head of the queue or nobody (a later, smaller request does not overtake).
      while (running.size() < options_.max_batch_sequences && !waiting.empty()) {
        RequestState& st = *waiting.front();
        const std::size_t total = st.request.prompt.size() + st.output.size();
        const std::size_t watermark = running.empty() ? 0 : slot.kv->blocks() / 100;
        if (slot.kv->blocks_for(total) + watermark > slot.kv->free_blocks()) break;
        auto seq = std::make_unique<Sequence>(Sequence{
            waiting.front(),
            KvCache(
                slot.kv, config_,
                static_cast<std::uint32_t>(st.request.prompt.size() + st.request.max_new_tokens)),
            {},
            {}});
        if (!seq->kv.reserve(static_cast<std::uint32_t>(total))) break;  // cannot happen: checked
        seq->epoch = st.output.empty() ? worker.weights_epoch() : st.epoch;  // stale: restarted
        seq->tokens = st.request.prompt;
        seq->tokens.insert(seq->tokens.end(), st.output.begin(), st.output.end());
        if (!st.admitted || st.worker != w) {
          if (!st.admitted) st.queue_ms = ms_since(st.submitted);
          st.admitted = true;
          st.worker = w;
          st.before = worker.counters();
        }
        running.push_back(std::move(seq));
        waiting.pop_front();
      }
    }
    for (auto& st : cancelled)  // counted where it ran, if it ran (it may have been preempted)
      finish(st->admitted ? st->worker : w, *st, FinishReason::kCancelled);
    cancelled.clear();
    slot.running.store(running.size());
    try {
      if (!running.empty() && !restart_stale(w, running)) step(w, running);
    } catch (...) {  // out of memory, a sampler's error: these requests fail, the thread goes on
      fail_all(w, running, std::current_exception());
    }
    slot.running.store(running.size());
  }
  fail_all(w, running,
           std::make_exception_ptr(ConfigError("engine: stopped before the request finished")));
  slot.running.store(0);
}

void Scheduler::preempt(Slot& slot, std::unique_ptr<Sequence> seq) {
  seq->kv.clear();
  ++seq->st->preemptions;
  slot.preemptions.fetch_add(1);
  logger().debug("request '{}' preempted: its KV is freed and will be recomputed",
                 seq->st->request.id);
  seq->st->epoch = seq->epoch;
  {
    std::lock_guard g(queue_->mu);
    queue_->waiting.push_front(std::move(seq->st));
  }
  queue_->cv.notify_all();  // an idle worker may have room for it
}

bool Scheduler::restart_stale(unsigned w, std::vector<std::unique_ptr<Sequence>>& running) {
  Worker& worker = *workers_[w];
  const std::uint64_t now = worker.weights_epoch();
  const bool any =
      std::any_of(running.begin(), running.end(), [&](const auto& s) { return s->epoch != now; });
  if (!any) return false;
  try {
    worker.check_weights();
  } catch (...) {
    fail_all(w, running, std::current_exception());
    return true;
  }
  // Every sequence computed before the change starts again on verified weights, unless it
  // streamed tokens already: those cannot be taken back, so it fails rather than go on
  // from numbers that may be wrong.
  constexpr std::uint32_t kRestarts = 3;
  for (std::size_t i = 0; i < running.size();) {
    Sequence& s = *running[i];
    RequestState& st = *s.st;
    if (s.epoch == now) {
      ++i;
      continue;
    }
    std::string why;
    if (st.streamed) {
      why = "the weights changed while it ran, after tokens were streamed";
    } else if (++st.restarts > kRestarts) {
      why = fmt::format("the weights kept changing during {} attempts", kRestarts + 1);
    }
    if (!why.empty()) {
      s.kv.clear();
      finish(w, st, FinishReason::kError,
             std::make_exception_ptr(
                 PoolError(fmt::format("{}: request '{}' of model '{}': {}", options_.pool_uri,
                                       st.request.id, options_.model_name, why))));
      running.erase(running.begin() + static_cast<long>(i));
      continue;
    }
    slots_[w]->output_tokens.fetch_sub(st.output.size());  // made again
    st.output.clear();
    st.last_logits.clear();
    st.rng.seed(st.request.sampling.seed);
    s.kv.clear();
    s.tokens = st.request.prompt;
    (void)s.kv.reserve(static_cast<std::uint32_t>(s.tokens.size()));  // it held more
    s.epoch = now;
    ++i;
  }
  return true;
}

void Scheduler::step(unsigned w, std::vector<std::unique_ptr<Sequence>>& running) {
  Slot& slot = *slots_[w];
  Worker& worker = *workers_[w];
  const auto drop = [&](std::size_t i) { running.erase(running.begin() + static_cast<long>(i)); };
  for (std::size_t i = 0; i < running.size();) {  // cancelled: out, their blocks freed
    if (running[i]->st->cancel_requested.load()) {
      running[i]->kv.clear();  // freed before the caller hears it finished
      finish(w, *running[i]->st, FinishReason::kCancelled);
      drop(i);
    } else {
      ++i;
    }
  }
  try {
    worker.check_weights();
  } catch (...) {
    fail_all(w, running, std::current_exception());
    return;
  }
  // Room for each decode token; when the blocks run out, the newest sequence gives up its
  // KV (preempted, recomputed later) so that older ones can grow.
  for (std::size_t i = 0; i < running.size(); ++i) {
    Sequence& s = *running[i];
    if (s.tokens.size() - s.kv.size() != 1) continue;
    while (!s.kv.reserve(1)) {
      const bool self = running.size() - 1 == i;
      preempt(slot, std::move(running.back()));
      running.pop_back();
      if (self) break;
    }
  }
  if (running.empty()) return;
  std::vector<Executor::Segment> segments;
  std::vector<Sequence*> in_step;
  std::size_t tokens = 0;
  for (auto& s : running) {  // decodes first: every running sequence moves each step
    if (s->tokens.size() - s->kv.size() != 1) continue;
    segments.push_back({std::span(s->tokens).subspan(s->kv.size()), &s->kv, false, &s->logits});
    in_step.push_back(s.get());
    ++tokens;
  }
  for (auto& s : running) {  // then prompt chunks, oldest first, within the step's budget
    const std::size_t pending = s->tokens.size() - s->kv.size();
    if (pending <= 1 || tokens >= options_.max_step_tokens) continue;
    const std::size_t chunk = std::min(pending, options_.max_step_tokens - tokens);
    segments.push_back(
        {std::span(s->tokens).subspan(s->kv.size(), chunk), &s->kv, false, &s->logits});
    in_step.push_back(s.get());
    tokens += chunk;
  }
  try {
    worker.executor().forward_batch(segments);
  } catch (...) {
    fail_all(w, running, std::current_exception());
    return;
  }
  slot.steps.fetch_add(1);
  slot.step_sequences.fetch_add(segments.size());
  slot.step_tokens.fetch_add(tokens);
  // Numbers made before a weight was found changed (the Scrubber switched it to the
  // replica's copy, or failed it) may have used it: at any step, before or during this one.
  if (restart_stale(w, running)) return;
  // Each sequence whose tokens are all in its KV now picks its next token.
  for (Sequence* s : in_step) {
    if (s->kv.size() != s->tokens.size()) continue;  // a prompt chunk: more to come
    RequestState& st = *s->st;
    const InferenceRequest& r = st.request;
    FinishReason reason = FinishReason::kLength;
    bool finished = st.output.size() >= r.max_new_tokens;  // only scoring the prompt
    std::exception_ptr threw;
    if (finished) {
      if (r.return_logits) st.last_logits = s->logits;
      threw = emit(st, -1, true, reason);
    } else {
      const std::int32_t t = sample_token(s->logits, r.sampling, st.rng);
      st.output.push_back(t);
      st.epoch = s->epoch;
      s->tokens.push_back(t);
      slot.output_tokens.fetch_add(1);
      if (st.output.size() == 1) st.first_token_ms = ms_since(st.submitted);
      if (r.return_logits) st.last_logits = s->logits;
      const auto& eos = config_.eos_token_ids;
      if (std::find(r.stop_token_ids.begin(), r.stop_token_ids.end(), t) !=
              r.stop_token_ids.end() ||
          (!r.ignore_eos && std::find(eos.begin(), eos.end(), t) != eos.end())) {
        finished = true;
        reason = FinishReason::kStop;
      } else if (st.output.size() == r.max_new_tokens) {
        finished = true;
      }
      threw = emit(st, t, finished, reason);
    }
    if (threw || finished) {
      s->done = true;
      s->kv.clear();  // freed before the caller hears it finished
      if (threw) {
        finish(w, st, FinishReason::kError, threw);
      } else {
        finish(w, st, reason);
      }
    }
  }
  std::erase_if(running, [](const auto& s) { return s->done; });  // out go the finished
}

std::exception_ptr Scheduler::emit(RequestState& st, std::int32_t token, bool finished,
                                   FinishReason reason) {
  if (!st.callbacks.on_token || st.callback_failed) return {};
  TokenEvent e;
  e.id = st.request.id;
  e.token = token;
  e.position = token >= 0 ? st.output.size() - 1 : st.output.size();
  e.finished = finished;
  e.reason = reason;
  try {
    st.callbacks.on_token(e);
    if (token >= 0) st.streamed = true;
    return {};
  } catch (...) {
    st.callback_failed = true;
    return std::current_exception();
  }
}

void Scheduler::finish(unsigned w, RequestState& st, FinishReason reason,
                       std::exception_ptr error) {
  {
    std::lock_guard g(st.mu);
    if (st.finished) return;
  }
  Slot& slot = *slots_[w];
  const double latency = ms_since(st.submitted);
  InferenceResult r;
  r.id = st.request.id;
  r.output_tokens = st.output;
  r.last_logits = st.last_logits;
  r.latency_ms = latency;
  r.worker = w;
  r.finish_reason = reason;
  r.queue_ms = st.admitted ? st.queue_ms : latency;
  r.preemptions = st.preemptions;
  const std::size_t n_out = st.output.size();
  if (n_out > 0) {
    r.ttft_ms = st.first_token_ms;
    r.tpot_ms = n_out > 1 ? (latency - st.first_token_ms) / static_cast<double>(n_out - 1) : 0.0;
  }
  if (st.admitted) fill_rates(r, st.before, workers_[w]->counters());
  if (error) r.error = what_of(error);
  if (reason == FinishReason::kCancelled || reason == FinishReason::kError) {
    // The last event of the stream says it ended (not to a callback that threw).
    if (st.callbacks.on_token && !st.callback_failed) {
      TokenEvent e;
      e.id = st.request.id;
      e.position = n_out;
      e.finished = true;
      e.reason = reason;
      e.error = r.error;
      try {
        st.callbacks.on_token(e);
      } catch (const std::exception& x) {
        logger().warn("request '{}': its callback threw on the last event: {}", r.id, x.what());
      } catch (...) {
        logger().warn("request '{}': its callback threw on the last event", r.id);
      }
    }
    (reason == FinishReason::kCancelled ? slot.cancelled : slot.failed).fetch_add(1);
  }
  slot.requests.fetch_add(1);
  {
    std::lock_guard g(stats_mu_);
    if (latencies_ms_.size() < EngineStats::kLatencyWindow) {
      latencies_ms_.push_back(latency);
    } else {
      latencies_ms_[latency_next_] = latency;
      latency_next_ = (latency_next_ + 1) % EngineStats::kLatencyWindow;
    }
  }
  {
    std::lock_guard g(st.mu);
    st.result = std::move(r);
    st.error = std::move(error);
    st.finished = true;
  }
  st.cv.notify_all();
}

void Scheduler::fail_all(unsigned w, std::vector<std::unique_ptr<Sequence>>& running,
                         const std::exception_ptr& error) {
  for (auto& s : running) {
    s->kv.clear();
    finish(w, *s->st, FinishReason::kError, error);
  }
  running.clear();
}

ServingStats Scheduler::stats(unsigned w) const {
  const Slot& slot = *slots_[w];
  ServingStats s;
  s.running = slot.running.load();
  s.steps = slot.steps.load();
  s.step_sequences = slot.step_sequences.load();
  s.step_tokens = slot.step_tokens.load();
  s.output_tokens = slot.output_tokens.load();
  s.preemptions = slot.preemptions.load();
  s.cancelled = slot.cancelled.load();
  s.failed = slot.failed.load();
  s.kv_used_bytes = slot.kv->used_bytes();
  s.kv_capacity_bytes = slot.kv->capacity_bytes();
  s.mean_batch_sequences =
      s.steps ? static_cast<double>(s.step_sequences) / static_cast<double>(s.steps) : 0.0;
  const double seconds = ms_since(slot.started) / 1e3;
  s.output_tokens_per_s = seconds > 0 ? static_cast<double>(s.output_tokens) / seconds : 0.0;
  return s;
}

std::uint64_t Scheduler::waiting() const {
  std::lock_guard g(queue_->mu);
  return queue_->waiting.size();
}

std::uint64_t Scheduler::requests(unsigned w) const { return slots_[w]->requests.load(); }

std::uint64_t Scheduler::tokens(unsigned w) const { return slots_[w]->step_tokens.load(); }

std::vector<double> Scheduler::latencies() const {
  std::lock_guard g(stats_mu_);
  return latencies_ms_;
}

}  // namespace xlshare
