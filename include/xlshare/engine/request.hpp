// A request to an InferenceEngine, its result, and the asynchronous side of serving: the
// handle submit() returns, and the token events a streaming caller receives.
//
//   auto handle = engine.submit(request, {.on_token = [](const xlshare::TokenEvent& e) {
//     if (e.token >= 0) send_to_client(e.token);
//   }});
//   ...
//   handle.cancel();                  // at any time, from any thread
//   InferenceResult r = handle.wait();  // the whole result; throws what failed it
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "xlshare/model/executor.hpp"

namespace xlshare {

struct InferenceRequest {
  std::string id;
  std::vector<std::int32_t> prompt;
  /// The prompt as text instead of ids: the engine tokenizes it at submit with the model's
  /// tokenizer (its BOS/EOS as the vocabulary says). Set this or `prompt`, not both; a model
  /// without a tokenizer refuses it. Default empty.
  std::string prompt_text;
  /// Tokens to generate after the prompt (0: only score the prompt).
  std::size_t max_new_tokens = 0;
  SamplingOptions sampling;
  /// Return the logits of the last position.
  bool return_logits = false;
  /// Generation ends after any of these tokens (it is kept in the output). Default none.
  std::vector<std::int32_t> stop_token_ids;
  /// Go on past the model's end-of-sequence tokens (LlamaConfig::eos_token_ids), which
  /// otherwise end generation as stop tokens do. Default false.
  bool ignore_eos = false;
};

/// Why a request's generation ended: it reached max_new_tokens, produced a stop token (or
/// the model's end-of-sequence token), was
/// cancelled, or failed (the pool, the link, a callback; InferenceResult::error says what).
enum class FinishReason : std::uint8_t { kLength, kStop, kCancelled, kError };
/// "length", "stop", "cancelled", "error".
const char* to_string(FinishReason r) noexcept;

/// Requests and results as JSON objects (the `xlshare worker` protocol's fields; from_json
/// throws nlohmann::json::exception for a missing or mistyped field).
void to_json(nlohmann::json& j, const InferenceRequest& r);
void from_json(const nlohmann::json& j, InferenceRequest& r);

struct InferenceResult {
  std::string id;
  std::vector<std::int32_t> output_tokens;
  std::vector<float> last_logits;  ///< when requested: the logits that chose the last token
  double latency_ms = 0;           ///< end to end: from submit to the last token
  /// The worker's figures while this request ran (shared with the requests it ran beside).
  double ready_rate = 0;
  double reuse_rate = 0;
  double stall_ms = 0;
  std::uint64_t link_bytes = 0;
  double link_gbps = 0;          ///< link_bytes / time the link was busy for this request
  double overlap = 1;            ///< 1 - stall / link busy time
  double prefetch_accuracy = 0;  ///< prefetched bytes used / prefetched bytes (0: none)
  unsigned worker = 0;           ///< which worker ran it
  FinishReason finish_reason = FinishReason::kLength;
  std::string error;  ///< what failed it (finish_reason kError)
  /// Serving figures, ms: waiting to be admitted to a worker's batch (queue), from submit
  /// to the first generated token (time to first token, queue included), per output token
  /// after the first (time per output token; 0 with fewer than two).
  double queue_ms = 0, ttft_ms = 0, tpot_ms = 0;
  std::uint32_t preemptions = 0;  ///< times its KV was freed to let others grow (recomputed)
};

void to_json(nlohmann::json& j, const InferenceResult& r);
void from_json(const nlohmann::json& j, InferenceResult& r);

/// One event of a request's stream: a generated token, and with the last one (or alone,
/// token -1, when the request was cancelled or failed) finished and why.
struct TokenEvent {
  std::string_view id;       ///< the request's id (valid during the call)
  std::int32_t token = -1;   ///< -1: no token in this event
  std::size_t position = 0;  ///< the token's index among the generated tokens
  bool finished = false;
  FinishReason reason = FinishReason::kLength;  ///< when finished
  std::string_view error;                       ///< when finished with kError
};

/// Called on the worker's scheduler thread, in order, one request's events never
/// concurrently (the last event of a request still queued when its engine is destroyed or
/// re-attached comes on the thread doing that): keep them short (queue the work elsewhere). A
/// callback may cancel any request; it must not wait() for one. One that throws fails its own
/// request only (wait() rethrows what it threw) and is not called again.
struct RequestCallbacks {
  std::function<void(const TokenEvent&)> on_token;
};

struct RequestState;

/// A submitted request: wait for its result, or cancel it. Copies refer to the same request.
class RequestHandle {
 public:
  RequestHandle() = default;
  explicit RequestHandle(std::shared_ptr<RequestState> state) noexcept : state_(std::move(state)) {}

  const std::string& id() const;
  /// Whether it has finished (done, cancelled or failed).
  bool done() const;
  /// Blocks until it has finished. A cancelled request returns what it generated, with
  /// FinishReason::kCancelled. @throws what failed it (PoolError, InjectedFault, ...).
  InferenceResult wait() const;
  /// Waits at most `timeout`; true when it has finished.
  bool wait_for(std::chrono::milliseconds timeout) const;
  /// Asks the scheduler to stop it: it finishes with kCancelled at the next step (at once
  /// while it waits for admission), its KV blocks and batch slot freed. No effect once done.
  void cancel() const;
  explicit operator bool() const noexcept { return state_ != nullptr; }

 private:
  std::shared_ptr<RequestState> state_;
};

}  // namespace xlshare
