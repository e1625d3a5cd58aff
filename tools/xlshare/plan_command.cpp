// `xlshare plan`: one point of the scale planner (src/planner): a model on N devices sharing
// a pool, on a virtual clock.
#include <fmt/format.h>

#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>

#include "commands.hpp"
#include "xlshare/error.hpp"
#include "xlshare/memory/cxl_emulator.hpp"
#include "xlshare/planner/planner.hpp"

namespace xlshare::cli {
namespace {

// A preset's name, or else a file: a GGUF file, a config.json, or a directory holding one.
ModelShape resolve_model(const std::string& model, const std::string& dtype) {
  for (const auto& p : model_presets()) {
    if (p.name == model) return model_shape_preset(model, dtype);
  }
  std::filesystem::path path = model;
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec) && std::filesystem::exists(path / "config.json"))
    path /= "config.json";
  if (!std::filesystem::exists(path, ec)) return model_shape_preset(model, dtype);  // the error
  return model_shape_from_file(path, dtype);
}

void print_list() {
  fmt::print("models (--model, or a GGUF file / config.json):\n");
  for (const auto& p : model_presets()) fmt::print("  {:<14} {}\n", p.name, p.source);
  fmt::print("devices (--device):\n");
  for (const auto& d : device_presets()) {
    fmt::print("  {:<14} {:.0f} TFLOP/s, {:.0f} GB/s, {:.0f} GiB, link {:.0f} GB/s — {}\n", d.name,
               d.peak_tflops, d.mem_gbps, d.mem_gib, d.host_link_gbps, d.source);
  }
  fmt::print("links (--link):\n");
  for (const auto& l : link_presets()) fmt::print("  {:<14} {}\n", l.name, l.description);
}

std::string gib(std::uint64_t b) {
  return fmt::format("{:.1f} GiB", static_cast<double>(b) / (1ull << 30));
}

void print_human(const PlanResult& r) {
  fmt::print(
      "{} ({}) on {} x {}, link {} ({:.0f} GB/s per device, {:.0f} GB/s shared), cache {:.0f}% "
      "of {}, batch {}, lookahead {}, eviction {}\n",
      r.model, r.dtype, r.devices, r.device, r.link, r.port_gbps, r.shared_gbps,
      100 * r.cache_fraction, gib(r.model_bytes), r.batch, r.lookahead, r.eviction);
  fmt::print(
      "  decode           {:.2f} tok/s per device, {:.2f} tok/s in all ({:.2f} ms a step; "
      "compute alone {:.2f} ms, stall {:.2f} ms)\n",
      r.decode_tok_s_per_device, r.decode_tok_s_total, r.step_ms, r.compute_ms_per_step,
      r.stall_ms_per_step);
  fmt::print("  time to first token {:.1f} ms ({} prompt tokens x {})\n", r.ttft_ms,
             r.prompt_tokens, r.batch);
  fmt::print(
      "  link             {:.2f} GB/s per device, {:.2f} GB a step, shared link {:.0f}% "
      "busy; it feeds at most {} such devices\n",
      r.link_gbps_per_device, r.link_bytes_per_step / 1e9, 100 * r.link_utilisation,
      r.max_devices_before_saturation == 0 ? std::string("any number of")
                                           : std::to_string(r.max_devices_before_saturation));
  fmt::print("  cache            ready {:.3f}, reuse {:.3f}, prefetch accuracy {:.3f}\n",
             r.ready_rate, r.reuse_rate, r.prefetch_accuracy);
  fmt::print("  device memory    {} (cache {} + KV {}){}; full replication {}{}\n",
             gib(r.device_bytes), gib(r.cache_bytes), gib(r.kv_bytes),
             r.fits ? "" : " — DOES NOT FIT", gib(r.replicated_bytes),
             r.replicated_fits ? "" : " — does not fit");
  fmt::print("  simulated {:.0f} ms in {:.0f} ms ({} events)\n", r.simulated_ms, r.wall_ms,
             r.events);
}

}  // namespace

void add_plan_command(CLI::App& app) {
  struct Args {
    std::string model, dtype = "f16", device = "h100-sxm", link = "cxl-x16", eviction = "fixed";
    std::size_t devices = 1, batch = 1, prompt = 128, decode = 4, lookahead = 2;
    unsigned copy_threads = 2;
    double cache_fraction = 0.1;
    std::optional<double> shared_gbps, tflops, mem_gbps, mem_gib, host_link_gbps, copy_gbps,
        copy_gbps_total, flops_eff, mem_eff, step_us;
    bool json = false, list = false;
  };
  auto a = std::make_shared<Args>();
  CLI::App* cmd = app.add_subcommand(
      "plan",
      "predict a model on N devices sharing one pool: the real cache and prefetch code "
      "on a virtual clock");
  cmd->add_flag("--list", a->list, "list the model, device and link presets");
  cmd->add_option("--model", a->model, "a preset (--list), a GGUF file or a config.json");
  cmd->add_option("--dtype", a->dtype,
                  "matrices of a preset or config.json: f16, bf16, f32, q8_0, q4_k, q6_k, q4_k_m")
      ->capture_default_str();
  cmd->add_option("--device", a->device, "device preset (--list)")->capture_default_str();
  cmd->add_option("--devices", a->devices, "devices sharing the pool")
      ->capture_default_str()
      ->check(integer_in(1, 1024));
  cmd->add_option("--link", a->link, "each device's link preset")->capture_default_str();
  cmd->add_option("--shared-gbps", a->shared_gbps,
                  "the link all devices share (pool or switch), GB/s; default: the link preset's")
      ->check(real_in(0, 1e6));
  cmd->add_option("--cache-fraction", a->cache_fraction, "each device's cache / the model")
      ->capture_default_str()
      ->check(real_in(1e-9, 1.0));
  cmd->add_option("--batch", a->batch, "sequences decoded together")
      ->capture_default_str()
      ->check(integer_in(1, 4096));
  cmd->add_option("--prompt", a->prompt, "prompt tokens per sequence")
      ->capture_default_str()
      ->check(integer_in(1, 1u << 20));
  cmd->add_option("--decode-tokens", a->decode, "decode steps measured")
      ->capture_default_str()
      ->check(integer_in(1, 4096));
  cmd->add_option("--lookahead", a->lookahead, "steps prefetched ahead")
      ->capture_default_str()
      ->check(integer_in(0, 4096));
  cmd->add_option("--eviction", a->eviction, "fixed, lru, fifo or schedule")->capture_default_str();
  cmd->add_option("--copy-threads", a->copy_threads, "transfer threads per device")
      ->capture_default_str()
      ->check(integer_in(1, 64));
  cmd->add_option("--tflops", a->tflops, "override: dense FLOP/s of the device, 1e12")
      ->check(real_in(1e-6, 1e6));
  cmd->add_option("--mem-gbps", a->mem_gbps, "override: device memory GB/s")
      ->check(real_in(1e-3, 1e6));
  cmd->add_option("--mem-gib", a->mem_gib, "override: device memory GiB")->check(real_in(0, 1e6));
  cmd->add_option("--host-link-gbps", a->host_link_gbps, "override: the device's own link, GB/s")
      ->check(real_in(0, 1e6));
  cmd->add_option("--copy-gbps", a->copy_gbps, "override: most one copy thread delivers, GB/s")
      ->check(real_in(0, 1e6));
  cmd->add_option("--copy-gbps-total", a->copy_gbps_total,
                  "override: most a device's copy threads deliver together, GB/s")
      ->check(real_in(0, 1e6));
  cmd->add_option("--flops-efficiency", a->flops_eff, "override: share of peak FLOP/s reached")
      ->check(real_in(1e-6, 1.0));
  cmd->add_option("--mem-efficiency", a->mem_eff, "override: share of bandwidth reached")
      ->check(real_in(1e-6, 1.0));
  cmd->add_option("--step-overhead-us", a->step_us, "override: fixed compute per step, µs")
      ->check(real_in(0, 1e7));
  cmd->add_flag("--json", a->json, "one JSON object");
  cmd->callback([a] {
    if (a->list) {
      print_list();
      return;
    }
    if (a->model.empty()) throw ConfigError("plan: --model is required (see --list)");
    PlanConfig c;
    c.model = resolve_model(a->model, a->dtype);
    c.device = device_preset(a->device);
    if (a->tflops) c.device.peak_tflops = *a->tflops;
    if (a->mem_gbps) c.device.mem_gbps = *a->mem_gbps;
    if (a->mem_gib) c.device.mem_gib = *a->mem_gib;
    if (a->host_link_gbps) c.device.host_link_gbps = *a->host_link_gbps;
    if (a->copy_gbps) c.device.copy_gbps_per_thread = *a->copy_gbps;
    if (a->copy_gbps_total) c.device.copy_gbps_total = *a->copy_gbps_total;
    if (a->flops_eff) c.device.flops_efficiency = *a->flops_eff;
    if (a->mem_eff) c.device.mem_efficiency = *a->mem_eff;
    if (a->step_us) c.device.step_overhead_ns = static_cast<std::uint64_t>(*a->step_us * 1000);
    c.devices = a->devices;
    c.link = a->link;
    (void)link_preset(c.link);  // an unknown name fails here, listing the known ones
    c.shared_gbps = a->shared_gbps;
    c.cache_fraction = a->cache_fraction;
    c.batch = a->batch;
    c.prompt_tokens = a->prompt;
    c.decode_tokens = a->decode;
    c.lookahead = a->lookahead;
    c.eviction = a->eviction;
    (void)make_eviction_policy(c.eviction, {0}, true);  // an unknown name fails here
    c.copy_threads = a->copy_threads;
    const PlanResult r = plan(c);
    if (a->json) {
      fmt::print("{}\n", nlohmann::json(r).dump());
    } else {
      print_human(r);
    }
  });
}

}  // namespace xlshare::cli
