// The planner: model and device presets, the roofline, and plans checked against what
// they must be whatever the numbers (relations, limits, determinism).
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>

#include <nlohmann/json.hpp>

#include "xlshare/error.hpp"
#include "xlshare/model/synthetic.hpp"
#include "xlshare/planner/planner.hpp"
#include "xlshare/prefetch/prefetch_policy.hpp"

namespace xlshare {
namespace {

std::uint64_t params(const ModelShape& m) {
  std::uint64_t n = 0;
  for (const auto& t : m.tensors) n += t.elements;
  return n;
}

TEST(ModelShapes, PresetsHaveThePublishedParameterCounts) {
  // The counts the model cards state (Llama 2: 6,738,415,616 and 68,976,648,192 weights).
  EXPECT_EQ(params(model_shape_preset("llama-2-7b", "f16")), 6'738'415'616u);
  EXPECT_EQ(params(model_shape_preset("llama-2-70b", "f16")), 68'976'648'192u);
  EXPECT_EQ(params(model_shape_preset("llama-3-8b", "f16")), 8'030'261'248u);
  EXPECT_EQ(params(model_shape_preset("mistral-7b", "f16")), 7'241'732'096u);
  const ModelShape f16 = model_shape_preset("llama-2-7b", "f16");
  const ModelShape q8 = model_shape_preset("llama-2-7b", "q8_0");
  const ModelShape q4 = model_shape_preset("llama-2-7b", "q4_k");
  // Matrices in the dtype (2, 34/32, 144/256 bytes per weight), norms in F32.
  std::uint64_t norms = 0;
  for (const auto& t : f16.tensors)
    if (t.rows == 1) norms += t.elements;
  EXPECT_EQ(f16.total_bytes(), 2 * (params(f16) - norms) + 4 * norms);
  EXPECT_EQ(q8.total_bytes(), (params(q8) - norms) / 32 * 34 + 4 * norms);
  EXPECT_EQ(q4.total_bytes(), (params(q4) - norms) / 256 * 144 + 4 * norms);
  EXPECT_THROW(model_shape_preset("llama-9-1t", "f16"), ConfigError);
  EXPECT_THROW(model_shape_preset("llama-2-7b", "q3_k"), ConfigError);
}

TEST(ModelShapes, FromAGgufHeaderAndAConfigJson) {
  const auto dir =
      std::filesystem::temp_directory_path() / ("xlshare-plan-shape-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  LlamaConfig c;
  c.dim = 256;
  c.n_layers = 2;
  c.n_heads = 4;
  c.n_kv_heads = 2;
  c.head_dim = 64;
  c.ffn_dim = 512;
  c.vocab = 512;
  c.context = 256;
  const auto model = make_synthetic_llama(c, 3);
  write_gguf(model, dir / "m.gguf", DType::kQ8_0);
  write_safetensors(model, dir / "hf", DType::kF16, 1);
  const ModelShape from_gguf = model_shape_from_file(dir / "m.gguf", "f16");
  const ModelShape from_json = model_shape_from_file(dir / "hf" / "config.json", "q8_0");
  EXPECT_EQ(from_gguf.total_bytes(), model_shape(c, "q8_0", "x").total_bytes());
  EXPECT_EQ(from_json.total_bytes(), from_gguf.total_bytes());
  EXPECT_EQ(from_json.config.n_kv_heads, 2u);
  EXPECT_THROW(model_shape_from_file(dir / "missing.gguf", "f16"), Error);
  std::filesystem::remove_all(dir);
}

TEST(Devices, PresetsAndTheRoofline) {
  const DeviceSpec h100 = device_preset("h100-sxm");
  EXPECT_FALSE(h100.source.empty());
  EXPECT_THROW(device_preset("tpu-v9"), ConfigError);
  // One token: bound by memory (bytes / (3350 GB/s x 0.8)).
  EXPECT_EQ(roofline_ns(h100, 1'000'000'000, 2'000'000'000, 1),
            static_cast<std::uint64_t>(std::ceil(2e9 / (3350 * 0.8))));
  // 4096 tokens: bound by FLOPs (2 x 1e9 x 4096 / (989e3 x 0.6) per ns).
  EXPECT_EQ(roofline_ns(h100, 1'000'000'000, 2'000'000'000, 4096),
            static_cast<std::uint64_t>(std::ceil(2e9 * 4096 / (989e3 * 0.6))));
}

PlanConfig small_plan() {
  PlanConfig c;
  c.model = model_shape_preset("llama-2-7b", "q4_k");
  c.device = device_preset("l40s");
  c.devices = 2;
  c.link = "cxl-x16";
  c.cache_fraction = 0.25;
  c.batch = 4;
  c.prompt_tokens = 64;
  c.decode_tokens = 3;
  return c;
}

TEST(Plan, TheFiguresHoldTogether) {
  const PlanResult r = plan(small_plan());
  EXPECT_GT(r.decode_tok_s_per_device, 0.0);
  EXPECT_DOUBLE_EQ(r.decode_tok_s_total, 2 * r.decode_tok_s_per_device);
  // A step takes at least its compute and at least its link bytes over the port.
  EXPECT_GE(r.step_ms, r.compute_ms_per_step * 0.999);
  EXPECT_GE(r.step_ms * 1e6 * r.port_gbps, r.link_bytes_per_step * 0.999);
  EXPECT_LE(r.link_utilisation, 1.001);
  EXPECT_GT(r.ttft_ms, 0.0);
  EXPECT_EQ(r.device_bytes, r.cache_bytes + r.kv_bytes);
  EXPECT_EQ(r.replicated_bytes, r.model_bytes + r.kv_bytes);
  EXPECT_LE(r.cache_bytes, r.model_bytes / 4 + 1);
  EXPECT_GE(r.max_devices_before_saturation, 1u);
  EXPECT_GE(r.ready_rate, 0.0);
  EXPECT_LE(r.ready_rate, 1.0);
  EXPECT_DOUBLE_EQ(r.step_ms, 1000.0 * static_cast<double>(r.batch) / r.decode_tok_s_per_device);
}

TEST(Plan, AWholeModelCacheStreamsNothingAndRunsAtComputeSpeed) {
  PlanConfig c = small_plan();
  c.cache_fraction = 1.0;
  c.eviction = "lru";
  const PlanResult r = plan(c);
  EXPECT_EQ(r.link_bytes_per_step, 0.0);
  EXPECT_DOUBLE_EQ(r.ready_rate, 1.0);
  EXPECT_NEAR(r.step_ms, r.compute_ms_per_step, 1e-9);
  EXPECT_EQ(r.max_devices_before_saturation, 0u);  // no link demand: any N
}

TEST(Plan, MoreDevicesOnOneSharedLinkEachGetLess) {
  PlanConfig c = small_plan();
  c.devices = 1;
  const PlanResult one = plan(c);
  c.devices = 8;
  const PlanResult eight = plan(c);
  EXPECT_LT(eight.decode_tok_s_per_device, one.decode_tok_s_per_device);
  EXPECT_LE(eight.link_utilisation, 1.001);  // bytes landing in the window: its edges
  // A shared link 8x the port: eight devices run as one did.
  c.shared_gbps = 8 * one.port_gbps;
  const PlanResult switched = plan(c);
  EXPECT_NEAR(switched.decode_tok_s_per_device, one.decode_tok_s_per_device,
              0.02 * one.decode_tok_s_per_device);
}

TEST(Plan, APointIsDeterministic) {
  nlohmann::json a = plan(small_plan()), b = plan(small_plan());
  a.erase("wall_ms");
  b.erase("wall_ms");
  EXPECT_EQ(a.dump(), b.dump());
}

// A user's policy, as a serving program would pass it to EngineConfig.
class EveryOtherStep final : public PrefetchPolicy {
 public:
  explicit EveryOtherStep(int* plans) : plans_(plans) {}
  std::string_view name() const noexcept override { return "every-other-step"; }

 protected:
  void do_plan(const PrefetchContext& ctx, std::vector<TensorKey>& out) override {
    ++*plans_;
    const std::size_t next = ctx.schedule.next(ctx.step);
    if (ctx.step % 2 == 0 && next < ctx.schedule.size()) {
      for (TensorKey k : ctx.schedule.step(next).keys) out.push_back(k);
    }
  }

 private:
  int* plans_;
};

TEST(Plan, AUserPolicyPlugsInUnchanged) {
  int plans = 0;
  PlanConfig c = small_plan();
  c.devices = 1;
  c.prefetch_policy = [&plans] { return std::make_unique<EveryOtherStep>(&plans); };
  std::vector<std::string> seen_names;
  c.eviction_policy_factory = [&](const CacheKeys& keys) {
    seen_names.assign(keys.key_tensors.begin(), keys.key_tensors.end());
    return make_eviction_policy("fifo");
  };
  const PlanResult user = plan(c);
  // 34 steps a pass (embedding, 32 blocks, head), 2 + 3 passes; plus the device alone.
  EXPECT_EQ(plans, 2 * 34 * 5);
  EXPECT_EQ(user.eviction, "user");
  ASSERT_FALSE(seen_names.empty());
  EXPECT_EQ(seen_names.back(), "output.weight");
  PlanConfig lookahead = small_plan();
  lookahead.devices = 1;
  EXPECT_NE(plan(lookahead).ready_rate, user.ready_rate);
}

TEST(Plan, ImpossiblePointsAreRefused) {
  PlanConfig c = small_plan();
  c.cache_fraction = 0.0;
  EXPECT_THROW(plan(c), ConfigError);
  c.cache_fraction = std::nan("");
  EXPECT_THROW(plan(c), ConfigError);
  c = small_plan();
  c.devices = 0;
  EXPECT_THROW(plan(c), ConfigError);
  c = small_plan();
  c.cache_fraction = 1e-6;  // smaller than a norm vector (which is never cut)
  EXPECT_THROW(plan(c), ConfigError);
  c = small_plan();
  c.link = "carrier-pigeon";
  EXPECT_THROW(plan(c), ConfigError);
  // Rates so low that simulated time would run past 64 bits.
  c = small_plan();
  c.device.host_link_gbps = 1e-12;
  EXPECT_THROW(plan(c), ConfigError);
  c = small_plan();
  c.shared_gbps = 1e-9;
  EXPECT_THROW(plan(c), ConfigError);
  c = small_plan();
  c.device.peak_tflops = 1e-6;
  EXPECT_THROW(plan(c), ConfigError);
}

}  // namespace
}  // namespace xlshare
