// Prefill and decode speed of the executor with every weight resident (in memory), for the
// shape llama.cpp was measured on: dim 768, 12 layers, 12 heads, 12 kv heads, ffn 2048,
// vocab 32000, random weights, F32 and F16 — or for any GGUF/safetensors model file.
//
//   build/bin/xlshare_bench_model [--repeats 3] [--quick] [--model FILE] [--threads 1,2]
//
// With --model, the file's weights as stored (any quantization) are read into memory and
// measured, so a file another engine runs is compared on the same bytes.
//
// Prints a markdown table of tokens/s (median of --repeats runs): prefill of 128 and 512
// tokens (one forward over the prompt), decode of 64 tokens (one forward per token after a
// 16-token prompt, as llama-bench's tg64), and decode of 16 sequences together (one forward
// per step with a token of each, as a serving step), with 1 and 2 threads.
#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <filesystem>
#include <map>
#include <vector>

#include <fmt/format.h>

#include "bench_report.hpp"
#include "bench_shape.hpp"

#include "xlshare/error.hpp"
#include "xlshare/model/dtype_convert.hpp"
#include "xlshare/model/executor.hpp"
#include "xlshare/model/model_file.hpp"
#include "xlshare/model/synthetic.hpp"

namespace {

using namespace xlshare;
using Clock = std::chrono::steady_clock;

struct Resident {
  LlamaModel model;
  std::vector<std::vector<std::byte>> buffers;
};

Resident make_resident(const SyntheticModel& m, DType dtype) {
  std::vector<TensorDesc> descs;
  std::vector<std::vector<std::byte>> buffers;
  for (std::size_t i = 0; i < m.specs.size(); ++i) {
    const DType t = m.specs[i].shape.size() == 2 ? dtype : DType::kF32;
    std::vector<std::byte> b(row_bytes(t, m.data[i].size()));
    from_f32(t, m.data[i].data(), b.data(), m.data[i].size());
    descs.push_back({m.specs[i].name, t, m.specs[i].shape, b.size()});
    buffers.push_back(std::move(b));
  }
  return Resident{LlamaModel(m.config, descs), std::move(buffers)};
}

Resident read_resident(const std::filesystem::path& path) {
  const ModelFile file = open_model_file(path);
  std::vector<TensorDesc> descs;
  std::vector<std::vector<std::byte>> buffers;
  for (const auto& t : file.tensors) {
    std::vector<std::byte> b(t.size_bytes);
    read_tensor_data(t, b);
    std::vector<std::uint64_t> shape(t.shape.begin(), t.shape.begin() + t.n_dims);
    descs.push_back({t.name, t.dtype, shape, b.size()});
    buffers.push_back(std::move(b));
  }
  return Resident{LlamaModel(file.config, descs), std::move(buffers)};
}

// "q4_k+q6_k+f32": the types a model's tensors are stored as, most bytes first.
std::string type_mix(const LlamaModel& model) {
  std::map<std::string, std::uint64_t> bytes;
  for (const auto& t : model.tensors()) bytes[std::string(to_string(t.dtype))] += t.size_bytes;
  std::vector<std::pair<std::uint64_t, std::string>> order;
  for (const auto& [name, b] : bytes) order.emplace_back(b, name);
  std::sort(order.rbegin(), order.rend());
  std::string out;
  for (const auto& [b, name] : order) out += (out.empty() ? "" : "+") + name;
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"xlshare executor benchmark (weights resident)"};
  int repeats = 3;
  bool quick = false;
  app.add_option("--repeats", repeats, "runs per figure (median reported)")
      ->check(CLI::Range(1, 50));
  app.add_flag("--quick", quick, "a small model, one run: a smoke test");
  bool json = false;
  app.add_flag("--json", json, "print the table as JSON instead of markdown");
  std::string model_path;
  app.add_option("--model", model_path,
                 "a GGUF or safetensors model to measure (default: the "
                 "bench shape with random weights, F32 and F16)")
      ->check(CLI::ExistingPath);
  std::vector<unsigned> thread_counts{1, 2};
  app.add_option("--threads", thread_counts, "compute threads, one row each")
      ->delimiter(',')
      ->check(CLI::Range(1u, 256u));
  bool int_dot = false;
  app.add_flag("--quantized-activations", int_dot,
               "Q8_0/Q4_K/Q6_K products against 8-bit activations (ExecutorOptions)");
  bool decode_only = false;
  app.add_flag("--decode-only", decode_only,
               "measure one sequence's decode only (no prefill, no 16-sequence step): quick A/B "
               "runs of the decode kernels");
  CLI11_PARSE(app, argc, argv);
  if (quick) repeats = 1;

  std::vector<std::pair<std::string, Resident>> models;
  LlamaConfig c;
  try {
    if (!model_path.empty()) {
      Resident r = read_resident(model_path);
      c = r.model.config();
      const std::string label =
          std::filesystem::path(model_path).filename().string() + " (" + type_mix(r.model) + ")";
      models.emplace_back(label, std::move(r));
    } else {
      c = bench::bench_shape(quick);
      const auto synthetic = make_synthetic_llama(c, 1);
      models.emplace_back("F32", make_resident(synthetic, DType::kF32));
      models.emplace_back("F16", make_resident(synthetic, DType::kF16));
    }
  } catch (const Error& e) {
    fmt::print(stderr, "xlshare: error: {}\n", e.what());
    return 1;
  }
  const std::uint32_t context = std::min<std::uint32_t>(c.context, 1024);
  const std::vector<int> prefills = decode_only ? std::vector<int>{}
                                    : quick     ? std::vector<int>{32}
                                                : std::vector<int>{128, 512};
  const int decode_n = quick ? 8 : 64;

  bench::Report report(json);
  std::vector<std::string> columns{"weights", "threads"};
  for (int p : prefills) columns.push_back(fmt::format("prefill {} tok/s", p));
  columns.push_back(fmt::format("decode (tg{}) tok/s", decode_n));
  if (!decode_only) columns.push_back("decode, 16 sequences a step, tok/s");
  report.table("executor", columns);
  for (auto& [label, r] : models) {
    std::vector<std::span<const std::byte>> spans;
    for (const auto& b : r.buffers) spans.emplace_back(b);
    SpanWeights weights(spans);
    for (unsigned threads : thread_counts) {
      ExecutorOptions eo{threads};
      eo.quantized_activations = int_dot;
      Executor ex(r.model, weights, eo);
      std::vector<bench::Cell> row{bench::cell(label), bench::cell(threads)};
      std::vector<float> logits;
      for (int p : prefills) {
        std::vector<std::int32_t> tokens(static_cast<std::size_t>(p));
        for (int i = 0; i < p; ++i)
          tokens[static_cast<std::size_t>(i)] = (i * 7919) % static_cast<int>(c.vocab);
        std::vector<double> rates;
        for (int rep = 0; rep < repeats; ++rep) {
          KvCache kv(c, context);
          const auto t0 = Clock::now();
          ex.forward(tokens, kv, logits, false);
          rates.push_back(p / std::chrono::duration<double>(Clock::now() - t0).count());
        }
        row.push_back(bench::cell(bench::median(rates), 0));
      }
      std::vector<double> rates;
      for (int rep = 0; rep < repeats; ++rep) {
        KvCache kv(c, context);
        std::vector<std::int32_t> prompt(16, 1);
        ex.forward(prompt, kv, logits, false);
        std::int32_t next = 2;
        const auto t0 = Clock::now();
        for (int i = 0; i < decode_n; ++i) {
          ex.forward(std::span(&next, 1), kv, logits, false);
          next = static_cast<std::int32_t>(std::max_element(logits.begin(), logits.end()) -
                                           logits.begin());
        }
        rates.push_back(decode_n / std::chrono::duration<double>(Clock::now() - t0).count());
      }
      row.push_back(bench::cell(bench::median(rates), 1));
      if (decode_only) {
        report.row(row);
        continue;
      }
      // Batched decode: 16 sequences, one token each per forward (a serving step).
      rates.clear();
      constexpr std::size_t kBatch = 16;
      const int steps = quick ? 4 : 16;
      for (int rep = 0; rep < repeats; ++rep) {
        std::vector<KvCache> kvs;
        std::vector<std::vector<float>> out(kBatch);
        std::vector<std::int32_t> next(kBatch, 2);
        std::vector<std::vector<std::int32_t>> prompts(kBatch);
        std::vector<Executor::Segment> segs;
        for (std::size_t b = 0; b < kBatch; ++b) {
          kvs.emplace_back(c, context);
          prompts[b].assign(16, static_cast<std::int32_t>(b + 1));
        }
        for (std::size_t b = 0; b < kBatch; ++b)
          segs.push_back({prompts[b], &kvs[b], false, &out[b]});
        ex.forward_batch(segs);
        const auto t0 = Clock::now();
        for (int i = 0; i < steps; ++i) {
          for (std::size_t b = 0; b < kBatch; ++b)
            segs[b] = {std::span(&next[b], 1), &kvs[b], false, &out[b]};
          ex.forward_batch(segs);
        }
        rates.push_back(static_cast<double>(kBatch) * steps /
                        std::chrono::duration<double>(Clock::now() - t0).count());
      }
      row.push_back(bench::cell(bench::median(rates), 1));
      report.row(row);
    }
  }
  return 0;
}
