// Helpers for model tests: run an executor over a synthetic model, a file, or the oracle.
#pragma once

#include <cmath>
#include <fstream>
#include <vector>

#include "support/test_support.hpp"
#include "xlshare/memory/backend_uri.hpp"
#include "xlshare/model/dtype_convert.hpp"
#include "xlshare/model/executor.hpp"
#include "xlshare/model/model_file.hpp"
#include "xlshare/model/model_loader.hpp"
#include "xlshare/model/synthetic.hpp"

namespace xlshare::test {

inline LlamaConfig small_config(std::uint32_t dim, std::uint32_t layers, std::uint32_t heads,
                                std::uint32_t kv, std::uint32_t ffn, std::uint32_t vocab) {
  LlamaConfig c;
  c.dim = dim;
  c.n_layers = layers;
  c.n_heads = heads;
  c.n_kv_heads = kv;
  c.head_dim = dim / heads;
  c.ffn_dim = ffn;
  c.vocab = vocab;
  c.context = 256;
  c.rope_theta = 10000.0;
  c.norm_eps = 1e-5;
  return c;
}

// A synthetic model held in memory (F32) as an Executor takes it; `m` must outlive it.
struct InMemoryModel {
  explicit InMemoryModel(const SyntheticModel& m) : model(m.config, descs(m)), weights(spans(m)) {}
  static std::vector<TensorDesc> descs(const SyntheticModel& m) {
    std::vector<TensorDesc> out;
    for (std::size_t i = 0; i < m.specs.size(); ++i) {
      out.push_back({m.specs[i].name, DType::kF32, m.specs[i].shape, m.data[i].size() * 4});
    }
    return out;
  }
  static std::vector<std::span<const std::byte>> spans(const SyntheticModel& m) {
    std::vector<std::span<const std::byte>> out;
    for (const auto& d : m.data) out.push_back(std::as_bytes(std::span(d)));
    return out;
  }
  LlamaModel model;
  SpanWeights weights;
};

// Runs a synthetic model held in memory (F32) on `tokens`; returns every position's logits.
inline std::vector<float> run_in_memory(const SyntheticModel& m,
                                        const std::vector<std::int32_t>& tokens,
                                        bool one_at_a_time = false, unsigned threads = 1) {
  InMemoryModel in_memory(m);
  Executor ex(in_memory.model, in_memory.weights, ExecutorOptions{threads});
  KvCache kv(m.config, 256);
  std::vector<float> all, logits;
  if (one_at_a_time) {
    for (auto t : tokens) {
      ex.forward(std::span(&t, 1), kv, logits, false);
      all.insert(all.end(), logits.begin(), logits.end());
    }
  } else {
    ex.forward(tokens, kv, all, true);
  }
  return all;
}

// Loads a model file into a fresh shm pool and runs it from the pool's mapping.
inline std::vector<float> run_file(const std::filesystem::path& path,
                                   const std::vector<std::int32_t>& tokens,
                                   bool one_at_a_time = false, ExecutorOptions options = {}) {
  const ModelFile file = open_model_file(path);
  const std::string uri = "shm://" + unique_name("model");
  BackendGuard guard(uri);
  auto pool = Pool::create(
      create_backend(uri, file.total_bytes() + file.tensors.size() * 4096 + (4u << 20)),
      PoolOptions{.max_models = 2,
                  .max_tensors = static_cast<std::uint32_t>(file.tensors.size() + 4)});
  auto view = load_model_into_pool(file, *pool, "m");
  const LlamaModel model = LlamaModel::from_pool(*view);
  SpanWeights weights = pool_weights(*pool, *view);
  Executor ex(model, weights, options);
  KvCache kv(model.config(), 256);
  std::vector<float> all, logits;
  if (one_at_a_time) {
    for (auto t : tokens) {
      ex.forward(std::span(&t, 1), kv, logits, false);
      all.insert(all.end(), logits.begin(), logits.end());
    }
  } else {
    ex.forward(tokens, kv, all, true);
  }
  return all;
}

// max |a - b| / max |b|
template <typename A, typename B>
double relative_error(const std::vector<A>& a, const std::vector<B>& b) {
  double diff = 0, scale = 0;
  for (std::size_t i = 0; i < b.size() && i < a.size(); ++i) {
    diff = std::max(diff, std::abs(static_cast<double>(a[i]) - static_cast<double>(b[i])));
    scale = std::max(scale, std::abs(static_cast<double>(b[i])));
  }
  if (a.size() != b.size()) return 1e30;
  return scale > 0 ? diff / scale : diff;
}

inline std::vector<std::int32_t> some_tokens(std::uint32_t vocab, std::size_t n,
                                             std::uint32_t seed) {
  std::vector<std::int32_t> t(n);
  for (std::size_t i = 0; i < n; ++i)
    t[i] = static_cast<std::int32_t>((seed * 2654435761u + i * 40503u) % vocab);
  return t;
}

}  // namespace xlshare::test
