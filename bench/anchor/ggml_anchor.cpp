// ggml's own CPU kernels on a GGUF model's matrix products, for a side-by-side figure with
// xlshare_bench_model on one machine. Not part of xlshare and not built by its CMake: it
// needs a ggml checkout (ggml is no Debian package), built as bench/anchor/README.md says.
//
// What it runs: the Llama graph of one step of TOKENS tokens (1 = a decode step, 128 or
// 512 = a prefill), every matrix product as llama.cpp runs it on a CPU (the CPU backend,
// the weights it repacks in its CPU_REPACK buffer, a persistent thread pool), with the
// norms, SiLU and residual adds, but without RoPE, the KV cache and attention (one
// position's attention is its value row, which the graph passes on). It does less work
// than llama.cpp for the same step, so its tokens per second bound llama.cpp's from above.
//
//   ggml_anchor MODEL.gguf THREADS STEPS TOKENS REPACK(0|1)
//
// prints the median of 5 timed runs of STEPS steps (after 3 warm-up steps), in tokens per
// second, and for TOKENS = 1 the weight bytes per second.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "ggml-alloc.h"
#include "ggml-backend.h"
#include "ggml-cpu.h"
#include "ggml.h"
#include "gguf.h"

namespace {

std::map<std::string, ggml_tensor*> g_weights;

ggml_tensor* weight(const std::string& name) {
  const auto it = g_weights.find(name);
  if (it == g_weights.end()) {
    std::fprintf(stderr, "ggml_anchor: error: the model has no tensor '%s'\n", name.c_str());
    std::exit(1);
  }
  return it->second;
}

int in_range(const char* text, const char* what, int min, int max) {
  char* end = nullptr;
  const long v = std::strtol(text, &end, 10);
  if (end == text || *end != '\0' || v < min || v > max) {
    std::fprintf(stderr, "ggml_anchor: error: %s must be an integer in %d..%d, not '%s'\n", what,
                 min, max, text);
    std::exit(1);
  }
  return static_cast<int>(v);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 6) {
    std::fprintf(stderr, "usage: ggml_anchor MODEL.gguf THREADS STEPS TOKENS REPACK(0|1)\n");
    return 1;
  }
  const int threads = in_range(argv[2], "THREADS", 1, 256);
  const int steps = in_range(argv[3], "STEPS", 1, 100000);
  const int tokens = in_range(argv[4], "TOKENS", 1, 4096);
  const bool use_repack = in_range(argv[5], "REPACK", 0, 1) == 1;

  ggml_context* meta = nullptr;
  gguf_context* file = gguf_init_from_file(argv[1], gguf_init_params{true, &meta});
  if (file == nullptr) {
    std::fprintf(stderr, "ggml_anchor: error: %s: not a GGUF file ggml can read\n", argv[1]);
    return 1;
  }
  // The CPU backend's extra buffer type that repacks weights (Q4_0, Q4_K, ... on AVX2).
  ggml_backend_dev_t cpu = ggml_backend_dev_by_type(GGML_BACKEND_DEVICE_TYPE_CPU);
  auto extra_bufts =
      reinterpret_cast<ggml_backend_dev_get_extra_bufts_t>(ggml_backend_reg_get_proc_address(
          ggml_backend_dev_backend_reg(cpu), "ggml_backend_dev_get_extra_bufts"));
  ggml_backend_buffer_type_t repack = nullptr;
  for (auto* b = extra_bufts != nullptr ? extra_bufts(cpu) : nullptr; b != nullptr && *b; ++b)
    if (std::strcmp(ggml_backend_buft_name(*b), "CPU_REPACK") == 0) repack = *b;

  const int64_t n = gguf_get_n_tensors(file);
  const size_t overhead = static_cast<size_t>(n + 1) * ggml_tensor_overhead();
  ggml_context* repacked = ggml_init({overhead, nullptr, true});
  ggml_context* plain = ggml_init({overhead, nullptr, true});
  int n_repacked = 0;
  size_t streamed = 0;  // bytes a decode step reads: every weight but the embedding
  for (int64_t i = 0; i < n; ++i) {
    const char* name = gguf_get_tensor_name(file, i);
    ggml_tensor* t = ggml_get_tensor(meta, name);
    // llama.cpp repacks these on x86 with AVX2 (ggml-cpu/repack.cpp): Q4_K, 8 rows at a time.
    const bool r = use_repack && repack != nullptr && t->type == GGML_TYPE_Q4_K &&
                   t->ne[1] % 8 == 0 && std::strcmp(name, "token_embd.weight") != 0;
    ggml_tensor* d = ggml_dup_tensor(r ? repacked : plain, t);
    ggml_set_name(d, name);
    g_weights[name] = d;
    n_repacked += r ? 1 : 0;
    if (std::strcmp(name, "token_embd.weight") != 0) streamed += ggml_nbytes(t);
  }
  ggml_backend_buffer_t rb =
      n_repacked > 0 ? ggml_backend_alloc_ctx_tensors_from_buft(repacked, repack) : nullptr;
  ggml_backend_buffer_t pb =
      ggml_backend_alloc_ctx_tensors_from_buft(plain, ggml_backend_cpu_buffer_type());
  if (rb != nullptr) ggml_backend_buffer_set_usage(rb, GGML_BACKEND_BUFFER_USAGE_WEIGHTS);
  ggml_backend_buffer_set_usage(pb, GGML_BACKEND_BUFFER_USAGE_WEIGHTS);
  FILE* in = std::fopen(argv[1], "rb");
  if (in == nullptr) {
    std::fprintf(stderr, "ggml_anchor: error: %s: cannot open\n", argv[1]);
    return 1;
  }
  std::vector<char> bytes;
  for (int64_t i = 0; i < n; ++i) {
    ggml_tensor* t = g_weights[gguf_get_tensor_name(file, i)];
    bytes.resize(ggml_nbytes(t));
    const long at = static_cast<long>(gguf_get_data_offset(file) + gguf_get_tensor_offset(file, i));
    if (std::fseek(in, at, SEEK_SET) != 0 ||
        std::fread(bytes.data(), 1, bytes.size(), in) != bytes.size()) {
      std::fprintf(stderr, "ggml_anchor: error: %s: cannot read tensor %s\n", argv[1], t->name);
      return 1;
    }
    ggml_backend_tensor_set(t, bytes.data(), 0, bytes.size());
  }
  std::fclose(in);

  int layers = 0;
  while (g_weights.count("blk." + std::to_string(layers) + ".attn_q.weight") != 0) ++layers;
  const int64_t dim = weight("token_embd.weight")->ne[0];
  // One position's attention output is its value row only where values are as wide as the
  // model (as many KV heads as heads): grouped-query models are not run.
  if (layers == 0 || weight("blk.0.attn_v.weight")->ne[1] != dim) {
    std::fprintf(stderr,
                 "ggml_anchor: error: %s: only Llama models with as many KV heads as heads\n",
                 argv[1]);
    return 1;
  }
  // A model whose head is tied to its embedding has no output.weight.
  const std::string head =
      g_weights.count("output.weight") != 0 ? "output.weight" : "token_embd.weight";
  ggml_context* c =
      ggml_init({ggml_tensor_overhead() * 4096 + ggml_graph_overhead(), nullptr, true});
  ggml_tensor* x0 = ggml_new_tensor_2d(c, GGML_TYPE_F32, dim, tokens);
  ggml_set_input(x0);
  ggml_tensor* x = x0;
  const auto norm = [&](ggml_tensor* v, const std::string& w) {
    return ggml_mul(c, ggml_rms_norm(c, v, 1e-5f), weight(w));
  };
  for (int l = 0; l < layers; ++l) {
    const std::string b = "blk." + std::to_string(l) + ".";
    ggml_tensor* h = norm(x, b + "attn_norm.weight");
    ggml_tensor* q = ggml_mul_mat(c, weight(b + "attn_q.weight"), h);
    ggml_tensor* k = ggml_mul_mat(c, weight(b + "attn_k.weight"), h);
    ggml_tensor* v = ggml_mul_mat(c, weight(b + "attn_v.weight"), h);
    // q and k computed (and kept by a product with 0); one position's attention gives v.
    ggml_tensor* a = ggml_add(c, v, ggml_scale(c, ggml_add(c, q, k), 0.0f));
    x = ggml_add(c, x, ggml_mul_mat(c, weight(b + "attn_output.weight"), a));
    ggml_tensor* h2 = norm(x, b + "ffn_norm.weight");
    ggml_tensor* gate = ggml_mul_mat(c, weight(b + "ffn_gate.weight"), h2);
    ggml_tensor* up = ggml_mul_mat(c, weight(b + "ffn_up.weight"), h2);
    x = ggml_add(
        c, x, ggml_mul_mat(c, weight(b + "ffn_down.weight"), ggml_mul(c, ggml_silu(c, gate), up)));
  }
  ggml_tensor* out = ggml_mul_mat(c, weight(head), norm(x, "output_norm.weight"));
  ggml_set_output(out);
  ggml_cgraph* graph = ggml_new_graph(c);
  ggml_build_forward_expand(graph, out);
  ggml_gallocr_t galloc = ggml_gallocr_new(ggml_backend_cpu_buffer_type());
  if (!ggml_gallocr_alloc_graph(galloc, graph)) return 1;
  std::vector<float> input(static_cast<size_t>(dim) * tokens);
  for (size_t i = 0; i < input.size(); ++i)
    input[i] = 0.01f * static_cast<float>(i * 7919 % 200) - 1.0f;
  ggml_backend_tensor_set(x0, input.data(), 0, input.size() * sizeof(float));
  ggml_backend_t backend = ggml_backend_cpu_init();
  ggml_backend_cpu_set_n_threads(backend, threads);

  for (int i = 0; i < 3; ++i) ggml_backend_graph_compute(backend, graph);
  std::vector<double> rates;
  for (int r = 0; r < 5; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < steps; ++i) ggml_backend_graph_compute(backend, graph);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    rates.push_back(static_cast<double>(steps) * tokens / s);
  }
  std::sort(rates.begin(), rates.end());
  std::printf("%s threads %d tokens %d (%d tensors repacked): %.1f tok/s (median of 5, %.1f-%.1f)",
              argv[1], threads, tokens, n_repacked, rates[2], rates[0], rates[4]);
  if (tokens == 1)
    std::printf(", %.1f GB/s of weights", rates[2] * static_cast<double>(streamed) / 1e9);
  std::printf("\n");
  ggml_backend_free(backend);
  ggml_gallocr_free(galloc);
  ggml_free(c);
  if (rb != nullptr) ggml_backend_buffer_free(rb);
  ggml_backend_buffer_free(pb);
  ggml_free(repacked);
  ggml_free(plain);
  gguf_free(file);
  ggml_free(meta);
  return 0;
}
