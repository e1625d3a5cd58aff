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
// per step with a token of each, as a serving step), with 1 and 2 threads. Beside decode,
// the bytes it streams per second (every weight but the embedding, per token) and what a
// plain read of as many bytes by as many threads reaches on this machine: their ratio is
// how close decode is to the memory's bandwidth.
#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <filesystem>
#include <map>
#include <memory>
#include <span>
#include <thread>
#include <vector>

#include <sys/mman.h>

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

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

// Every weight in one anonymous mapping, in file order, 2 MiB-aligned and madvised for
// huge pages (as a pool maps its data), instead of a heap block per tensor. Measured on
// the Intel VM: F16 decode on one thread 47-62 -> 68-74 tok/s. Why is not pinned down: not
// huge pages (the VM grants none: AnonHugePages stays 0), not the 16-byte offset of
// glibc's large blocks, not the gaps between tensors (each tried in the arena, no change).
class Arena {
 public:
  explicit Arena(std::size_t bytes) : length_(round_up(bytes + kHuge, kHuge)) {
    void* p = ::mmap(nullptr, length_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
      throw OutOfMemory("cannot map " + std::to_string(length_) + " bytes for the weights");
    base_ = static_cast<std::byte*>(p);
    next_ = base_ + (round_up(reinterpret_cast<std::uintptr_t>(base_), kHuge) -
                     reinterpret_cast<std::uintptr_t>(base_));
    (void)::madvise(next_, length_ - static_cast<std::size_t>(next_ - base_), MADV_HUGEPAGE);
  }
  Arena(const Arena&) = delete;
  Arena& operator=(const Arena&) = delete;
  ~Arena() { ::munmap(base_, length_); }
  std::span<std::byte> take(std::size_t bytes) {
    const std::span<std::byte> out(next_, bytes);
    next_ += round_up(bytes, 64);
    return out;
  }
  static std::size_t round_up(std::size_t v, std::size_t to) { return (v + to - 1) / to * to; }

 private:
  static constexpr std::size_t kHuge = std::size_t{2} << 20;
  std::size_t length_;
  std::byte* base_;
  std::byte* next_;
};

struct Resident {
  LlamaModel model;
  std::unique_ptr<Arena> arena;
  std::vector<std::span<const std::byte>> buffers;
};

std::unique_ptr<Arena> arena_for(const std::vector<std::uint64_t>& sizes) {
  std::size_t total = 0;
  for (const auto b : sizes) total += Arena::round_up(b, 64);
  return std::make_unique<Arena>(total);
}

Resident make_resident(const SyntheticModel& m, DType dtype) {
  std::vector<TensorDesc> descs;
  for (std::size_t i = 0; i < m.specs.size(); ++i) {
    const DType t = m.specs[i].shape.size() == 2 ? dtype : DType::kF32;
    descs.push_back({m.specs[i].name, t, m.specs[i].shape, row_bytes(t, m.data[i].size())});
  }
  std::vector<std::uint64_t> sizes;
  for (const auto& d : descs) sizes.push_back(d.size_bytes);
  auto arena = arena_for(sizes);
  std::vector<std::span<const std::byte>> buffers;
  for (std::size_t i = 0; i < m.specs.size(); ++i) {
    const auto b = arena->take(descs[i].size_bytes);
    from_f32(descs[i].dtype, m.data[i].data(), b.data(), m.data[i].size());
    buffers.emplace_back(b);
  }
  return Resident{LlamaModel(m.config, descs), std::move(arena), std::move(buffers)};
}

Resident read_resident(const std::filesystem::path& path) {
  const ModelFile file = open_model_file(path);
  std::vector<std::uint64_t> sizes;
  for (const auto& t : file.tensors) sizes.push_back(t.size_bytes);
  auto arena = arena_for(sizes);
  std::vector<TensorDesc> descs;
  std::vector<std::span<const std::byte>> buffers;
  for (const auto& t : file.tensors) {
    const auto b = arena->take(t.size_bytes);
    read_tensor_data(t, b);
    std::vector<std::uint64_t> shape(t.shape.begin(), t.shape.begin() + t.n_dims);
    descs.push_back({t.name, t.dtype, shape, b.size()});
    buffers.emplace_back(b);
  }
  return Resident{LlamaModel(file.config, descs), std::move(arena), std::move(buffers)};
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

// Bytes a decode step streams: every weight but the embedding's rows (read a row a token),
// the embedding too when the head is tied to it.
std::uint64_t decode_bytes(const LlamaModel& model) {
  std::uint64_t bytes = model.total_bytes();
  if (model.output() != model.token_embd()) bytes -= model.tensors()[model.token_embd()].size_bytes;
  return bytes;
}

// What this machine's memory gives a stream like decode's: `buf` read by `threads` threads,
// each its share (sums of 64-bit words), GB/s, the median of `repeats` passes. Each thread
// reads its share as four streams at once, the fastest of the plain reads tried on the
// Intel VM (one stream: 30 GB/s on two threads; one stream asking 4 KiB ahead into L1 or
// L2: 30-32; four streams: 39), so that decode is measured against a ceiling.
double read_gbps(std::span<const std::uint64_t> buf, unsigned threads, int repeats) {
  std::vector<double> rates;
  std::vector<std::uint64_t> sums(threads);
  for (int rep = 0; rep < repeats; ++rep) {
    const auto t0 = Clock::now();
    std::vector<std::thread> team;
    for (unsigned t = 0; t < threads; ++t) {
      team.emplace_back([&, t] {
        const std::size_t per = buf.size() / threads / 32 * 32;
        const std::uint64_t* p = buf.data() + t * per;
#if defined(__AVX512F__)
        const std::size_t quarter = per / 32 * 8;  // words, whole 64-byte lines
        __m512i a = _mm512_setzero_si512(), b = a, c = a, d = a;
        for (std::size_t i = 0; i < quarter; i += 8) {
          a = _mm512_add_epi64(a, _mm512_loadu_si512(p + i));
          b = _mm512_add_epi64(b, _mm512_loadu_si512(p + quarter + i));
          c = _mm512_add_epi64(c, _mm512_loadu_si512(p + 2 * quarter + i));
          d = _mm512_add_epi64(d, _mm512_loadu_si512(p + 3 * quarter + i));
        }
        alignas(64) std::uint64_t lanes[8];
        _mm512_store_si512(lanes, _mm512_add_epi64(_mm512_add_epi64(a, b), _mm512_add_epi64(c, d)));
        sums[t] = 0;
        for (const std::uint64_t v : lanes) sums[t] += v;
#else
        std::uint64_t acc[8] = {};
        for (std::size_t i = 0; i < per; i += 8)
          for (std::size_t j = 0; j < 8; ++j) acc[j] += p[i + j];
        sums[t] = acc[0] + acc[1] + acc[2] + acc[3] + acc[4] + acc[5] + acc[6] + acc[7];
#endif
      });
    }
    for (auto& th : team) th.join();
    const double s = std::chrono::duration<double>(Clock::now() - t0).count();
    rates.push_back(static_cast<double>(buf.size() / threads / 32 * 32 * threads * 8) / s / 1e9);
  }
  volatile std::uint64_t sink = 0;
  for (auto v : sums) sink = sink + v;
  return bench::median(rates);
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
  columns.push_back("decode GB/s");
  columns.push_back("memory read GB/s");
  if (!decode_only) columns.push_back("decode, 16 sequences a step, tok/s");
  report.table("executor", columns);
  for (auto& [label, r] : models) {
    SpanWeights weights(r.buffers);
    const std::uint64_t streamed = decode_bytes(r.model);
    // The reference stream, as many bytes as a decode step reads, on pages like the
    // weights' (filled, so they are resident like the weights').
    std::unique_ptr<Arena> stream_arena;
    try {
      stream_arena = std::make_unique<Arena>(streamed);
    } catch (const Error& e) {
      fmt::print(stderr, "xlshare: error: {}\n", e.what());
      return 1;
    }
    const auto stream_bytes = stream_arena->take(streamed / 8 * 8);
    const std::span<std::uint64_t> stream(reinterpret_cast<std::uint64_t*>(stream_bytes.data()),
                                          streamed / 8);
    std::fill(stream.begin(), stream.end(), 1);
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
      const double decode_tok_s = bench::median(rates);
      row.push_back(bench::cell(decode_tok_s, 1));
      row.push_back(bench::cell(decode_tok_s * static_cast<double>(streamed) / 1e9, 1));
      row.push_back(bench::cell(read_gbps(stream, threads, std::max(repeats, 7)), 1));
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
