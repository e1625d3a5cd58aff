// JSON of the engine's structs: stats (one to_json overload each) and requests and results
// both ways (the `xlshare worker` lines and the WorkerGroup protocol).
#include "common/json_fields.hpp"
#include "xlshare/engine/inference_engine.hpp"
#include "xlshare/engine/scrubber.hpp"

namespace xlshare {

XLSHARE_JSON_TO(ScrubStats, verify_ns, verify_bytes, bytes_scrubbed, passes, mismatches, failovers,
                failed, cpu_ns, wall_ns)

XLSHARE_JSON_TO(ServingStats, running, waiting, steps, step_sequences, step_tokens, output_tokens,
                preemptions, cancelled, failed, kv_used_bytes, kv_capacity_bytes,
                mean_batch_sequences, output_tokens_per_s)

namespace {
XLSHARE_JSON_TO_FN(report_fields, WorkerReport, index, placement, hot_set_bytes,
                   hot_set_target_bytes, requests, tokens, figures, cache, scrub, serving)
XLSHARE_JSON_TO_FN(engine_fields, EngineStats, pool, model, model_bytes, attach_ms, requests,
                   latency_p50_ms, latency_p99_ms, serving, workers)
}  // namespace

void to_json(nlohmann::json& j, const WorkerReport& w) {
  report_fields(j, w);
  j["link"] = w.transfers;  // the transfers are the link's figures
}

void to_json(nlohmann::json& j, const EngineStats& s) { engine_fields(j, s); }

void to_json(nlohmann::json& j, const InferenceRequest& r) {
  j = {{"id", r.id},
       {"prompt", r.prompt},
       {"max_new_tokens", r.max_new_tokens},
       {"temperature", r.sampling.temperature},
       {"top_k", r.sampling.top_k},
       {"top_p", r.sampling.top_p},
       {"seed", r.sampling.seed},
       {"return_logits", r.return_logits},
       {"stop_token_ids", r.stop_token_ids},
       {"ignore_eos", r.ignore_eos}};
  if (!r.prompt_text.empty()) j["prompt_text"] = r.prompt_text;
}

void from_json(const nlohmann::json& j, InferenceRequest& r) {
  r = InferenceRequest{};
  j.at("id").get_to(r.id);
  if (j.contains("prompt_text")) j.at("prompt_text").get_to(r.prompt_text);
  if (r.prompt_text.empty() || j.contains("prompt")) j.at("prompt").get_to(r.prompt);
  j.at("max_new_tokens").get_to(r.max_new_tokens);
  j.at("temperature").get_to(r.sampling.temperature);
  j.at("top_k").get_to(r.sampling.top_k);
  j.at("top_p").get_to(r.sampling.top_p);
  j.at("seed").get_to(r.sampling.seed);
  j.at("return_logits").get_to(r.return_logits);
  if (j.contains("stop_token_ids")) j.at("stop_token_ids").get_to(r.stop_token_ids);
  if (j.contains("ignore_eos")) j.at("ignore_eos").get_to(r.ignore_eos);
}

namespace {
XLSHARE_JSON_TO_FN(result_fields, InferenceResult, id, output_tokens, last_logits, latency_ms,
                   ready_rate, reuse_rate, stall_ms, link_bytes, link_gbps, overlap,
                   prefetch_accuracy, worker, queue_ms, ttft_ms, tpot_ms, preemptions, error)
XLSHARE_JSON_FROM_FN(result_from_fields, InferenceResult, id, output_tokens, last_logits,
                     latency_ms, ready_rate, reuse_rate, stall_ms, link_bytes, link_gbps, overlap,
                     prefetch_accuracy, worker, queue_ms, ttft_ms, tpot_ms, preemptions)
}  // namespace

void to_json(nlohmann::json& j, const InferenceResult& r) {
  result_fields(j, r);
  j["finish_reason"] = to_string(r.finish_reason);
}

void from_json(const nlohmann::json& j, InferenceResult& r) {
  r = InferenceResult{};
  result_from_fields(j, r);
  if (j.contains("error")) j.at("error").get_to(r.error);
  const auto reason = j.at("finish_reason").get<std::string>();
  for (const auto f : {FinishReason::kLength, FinishReason::kStop, FinishReason::kCancelled,
                       FinishReason::kError}) {
    if (reason == to_string(f)) {
      r.finish_reason = f;
      return;
    }
  }
  throw nlohmann::json::other_error::create(501, "finish_reason '" + reason + "'", &j);
}

}  // namespace xlshare
