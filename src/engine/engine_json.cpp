// JSON of the engine's structs: stats (one to_json overload each) and requests and results
// both ways (the `xlshare worker` lines and the WorkerGroup protocol).
#include <nlohmann/json.hpp>

#include "xlshare/engine/inference_engine.hpp"
#include "xlshare/engine/scrubber.hpp"

namespace xlshare {

void to_json(nlohmann::json& j, const ScrubStats& s) {
  j = {{"verify_ns", s.verify_ns},
       {"verify_bytes", s.verify_bytes},
       {"bytes_scrubbed", s.bytes_scrubbed},
       {"passes", s.passes},
       {"mismatches", s.mismatches},
       {"failovers", s.failovers},
       {"failed", s.failed},
       {"cpu_ns", s.cpu_ns},
       {"wall_ns", s.wall_ns}};
}

void to_json(nlohmann::json& j, const WorkerReport& w) {
  j = {{"index", w.index},
       {"placement", w.placement},
       {"hot_set_bytes", w.hot_set_bytes},
       {"hot_set_target_bytes", w.hot_set_target_bytes},
       {"requests", w.requests},
       {"tokens", w.tokens},
       {"figures", w.figures},
       {"cache", w.cache},
       {"link", w.transfers},
       {"scrub", w.scrub}};
}

void to_json(nlohmann::json& j, const EngineStats& s) {
  j = {{"pool", s.pool},
       {"model", s.model},
       {"model_bytes", s.model_bytes},
       {"attach_ms", s.attach_ms},
       {"requests", s.requests},
       {"latency_p50_ms", s.latency_p50_ms},
       {"latency_p99_ms", s.latency_p99_ms},
       {"workers", s.workers}};
}

void to_json(nlohmann::json& j, const InferenceRequest& r) {
  j = {{"id", r.id},
       {"prompt", r.prompt},
       {"max_new_tokens", r.max_new_tokens},
       {"temperature", r.sampling.temperature},
       {"top_k", r.sampling.top_k},
       {"top_p", r.sampling.top_p},
       {"seed", r.sampling.seed},
       {"return_logits", r.return_logits}};
}

void from_json(const nlohmann::json& j, InferenceRequest& r) {
  r = InferenceRequest{};
  j.at("id").get_to(r.id);
  j.at("prompt").get_to(r.prompt);
  j.at("max_new_tokens").get_to(r.max_new_tokens);
  j.at("temperature").get_to(r.sampling.temperature);
  j.at("top_k").get_to(r.sampling.top_k);
  j.at("top_p").get_to(r.sampling.top_p);
  j.at("seed").get_to(r.sampling.seed);
  j.at("return_logits").get_to(r.return_logits);
}

void to_json(nlohmann::json& j, const InferenceResult& r) {
  j = {{"id", r.id},
       {"output_tokens", r.output_tokens},
       {"last_logits", r.last_logits},
       {"latency_ms", r.latency_ms},
       {"ready_rate", r.ready_rate},
       {"reuse_rate", r.reuse_rate},
       {"stall_ms", r.stall_ms},
       {"link_bytes", r.link_bytes},
       {"link_gbps", r.link_gbps},
       {"overlap", r.overlap},
       {"prefetch_accuracy", r.prefetch_accuracy},
       {"worker", r.worker}};
}

void from_json(const nlohmann::json& j, InferenceResult& r) {
  r = InferenceResult{};
  j.at("id").get_to(r.id);
  j.at("output_tokens").get_to(r.output_tokens);
  j.at("last_logits").get_to(r.last_logits);
  j.at("latency_ms").get_to(r.latency_ms);
  j.at("ready_rate").get_to(r.ready_rate);
  j.at("reuse_rate").get_to(r.reuse_rate);
  j.at("stall_ms").get_to(r.stall_ms);
  j.at("link_bytes").get_to(r.link_bytes);
  j.at("link_gbps").get_to(r.link_gbps);
  j.at("overlap").get_to(r.overlap);
  j.at("prefetch_accuracy").get_to(r.prefetch_accuracy);
  j.at("worker").get_to(r.worker);
}

}  // namespace xlshare
