// EngineStats in the Prometheus text exposition format (version 0.0.4): what a serving
// process returns on its /metrics endpoint.
#include <cmath>
#include <string>
#include <string_view>

#include <fmt/format.h>

#include "xlshare/engine/inference_engine.hpp"

namespace xlshare {
namespace {

// A label value as the format quotes it: backslash, double quote and newline escaped.
std::string label_value(std::string_view v) {
  std::string out;
  for (char c : v) {
    if (c == '\\' || c == '"') {
      out += '\\';
      out += c;
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

std::string number(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  return fmt::format("{}", v);
}

class Exposition {
 public:
  explicit Exposition(const std::string& model) : model_(label_value(model)) {}
  // Starts a metric family: its help text and type ("counter", "gauge", "summary").
  void family(std::string_view name, std::string_view type, std::string_view help) {
    text_ += fmt::format("# HELP {} {}\n# TYPE {} {}\n", name, help, name, type);
  }
  // One sample, labelled with the model and `labels` ("worker=\"0\"", ...).
  void sample(std::string_view name, double value, std::string_view labels = {}) {
    text_ += fmt::format("{}{{model=\"{}\"{}{}}} {}\n", name, model_, labels.empty() ? "" : ",",
                         labels, number(value));
  }
  std::string take() { return std::move(text_); }

 private:
  std::string model_;
  std::string text_;
};

}  // namespace

std::string EngineStats::to_prometheus() const {
  Exposition e(model);
  e.family("xlshare_requests_total", "counter", "Requests answered since the model was attached.");
  e.sample("xlshare_requests_total", static_cast<double>(requests));
  e.family("xlshare_request_latency_ms", "summary",
           "Request latency in milliseconds over the last 4096 requests.");
  e.sample("xlshare_request_latency_ms", latency_p50_ms, "quantile=\"0.5\"");
  e.sample("xlshare_request_latency_ms", latency_p99_ms, "quantile=\"0.99\"");
  e.family("xlshare_attach_ms", "gauge", "How long the last attach_model took, milliseconds.");
  e.sample("xlshare_attach_ms", attach_ms);
  e.family("xlshare_model_bytes", "gauge", "Bytes of the attached model's weights.");
  e.sample("xlshare_model_bytes", static_cast<double>(model_bytes));
  e.family("xlshare_pool_attached_processes", "gauge", "Processes attached to the pool.");
  e.sample("xlshare_pool_attached_processes", pool.attached_processes);
  e.family("xlshare_pool_link_bytes_total", "counter",
           "Bytes every process read over the pool's emulated link.");
  e.sample("xlshare_pool_link_bytes_total", static_cast<double>(pool.link_bytes));

  // Per worker, one family at a time (the format wants a family's samples together).
  const auto per_worker = [&](std::string_view name, std::string_view type, std::string_view help,
                              auto value) {
    e.family(name, type, help);
    for (const auto& w : workers) {
      e.sample(name, static_cast<double>(value(w)), fmt::format("worker=\"{}\"", w.index));
    }
  };
  e.family("xlshare_waiting_requests", "gauge", "Requests queued for admission to a batch.");
  e.sample("xlshare_waiting_requests", static_cast<double>(serving.waiting));
  per_worker("xlshare_running_sequences", "gauge", "Sequences in the worker's running batch.",
             [](const WorkerReport& w) { return w.serving.running; });
  per_worker("xlshare_steps_total", "counter", "Forward passes (scheduler steps) run.",
             [](const WorkerReport& w) { return w.serving.steps; });
  per_worker("xlshare_step_sequences_total", "counter",
             "Sequences over every step (divided by steps: the mean batch size).",
             [](const WorkerReport& w) { return w.serving.step_sequences; });
  per_worker("xlshare_output_tokens_total", "counter", "Tokens generated.",
             [](const WorkerReport& w) { return w.serving.output_tokens; });
  per_worker("xlshare_preemptions_total", "counter",
             "Sequences whose KV was freed to let older ones grow (recomputed later).",
             [](const WorkerReport& w) { return w.serving.preemptions; });
  per_worker("xlshare_requests_cancelled_total", "counter", "Requests cancelled.",
             [](const WorkerReport& w) { return w.serving.cancelled; });
  per_worker("xlshare_requests_failed_total", "counter", "Requests that failed.",
             [](const WorkerReport& w) { return w.serving.failed; });
  per_worker("xlshare_kv_used_bytes", "gauge", "KV memory held by running sequences.",
             [](const WorkerReport& w) { return w.serving.kv_used_bytes; });
  per_worker("xlshare_kv_capacity_bytes", "gauge", "The worker's KV budget.",
             [](const WorkerReport& w) { return w.serving.kv_capacity_bytes; });
  per_worker("xlshare_worker_tokens_total", "counter", "Prompt and generated tokens processed.",
             [](const WorkerReport& w) { return w.tokens; });
  per_worker("xlshare_cache_acquires_total", "counter", "Tensor acquisitions by compute.",
             [](const WorkerReport& w) { return w.cache.acquires; });
  per_worker("xlshare_cache_acquires_ready_total", "counter",
             "Acquisitions that found the tensor resident.",
             [](const WorkerReport& w) { return w.cache.acquires_ready; });
  per_worker("xlshare_cache_evictions_total", "counter", "Entries evicted from the near cache.",
             [](const WorkerReport& w) { return w.cache.evictions; });
  per_worker("xlshare_cache_bytes_resident", "gauge", "Bytes resident in the near cache.",
             [](const WorkerReport& w) { return w.cache.bytes_resident; });
  per_worker("xlshare_cache_budget_bytes", "gauge", "The near cache's budget.",
             [](const WorkerReport& w) { return w.cache.budget_bytes; });
  per_worker("xlshare_link_bytes_total", "counter", "Bytes this worker read over the link.",
             [](const WorkerReport& w) { return w.transfers.link_bytes; });
  per_worker("xlshare_link_busy_seconds_total", "counter",
             "Seconds with at least one transfer of this worker in progress.",
             [](const WorkerReport& w) { return static_cast<double>(w.transfers.busy_ns) / 1e9; });
  per_worker("xlshare_stall_seconds_total", "counter", "Seconds compute waited for weights.",
             [](const WorkerReport& w) { return w.figures.stall_ms / 1e3; });
  per_worker("xlshare_transfer_retries_total", "counter", "Transient link errors retried.",
             [](const WorkerReport& w) { return w.transfers.retries; });
  per_worker("xlshare_checksum_mismatches_total", "counter",
             "Transfers whose bytes failed their checksum (re-read or failed over).",
             [](const WorkerReport& w) { return w.transfers.checksum_mismatches; });
  per_worker("xlshare_failovers_total", "counter", "Reads served by the replica pool.",
             [](const WorkerReport& w) { return w.transfers.failovers + w.scrub.failovers; });
  per_worker("xlshare_scrub_mismatches_total", "counter",
             "Mapped weights the scrubber found changed.",
             [](const WorkerReport& w) { return w.scrub.mismatches; });
  return e.take();
}

}  // namespace xlshare
