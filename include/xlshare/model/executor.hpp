// The forward pass of a Llama-family transformer on Eigen: token embedding, RMSNorm, RoPE,
// grouped-query attention with a KV cache, SwiGLU MLP, final norm and output head.
//
// The Executor takes each weight from a WeightProvider as it reaches it, step by step
// (embedding, block 0 .. block L-1, head — the model's Schedule), and tells the provider
// where it is (begin_step / end_step), so a provider backed by a DeviceCache and a
// Prefetcher can fetch ahead. F16, BF16 and Q8_0 weights are converted to F32 in tiles as
// they are used; activations and accumulation are F32. Prefill runs a whole prompt as
// matrix-matrix products; decode runs one token.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <new>
#include <optional>
#include <random>
#include <span>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "xlshare/dtype.hpp"
#include "xlshare/model/kv_cache.hpp"
#include "xlshare/model/llama_config.hpp"
#include "xlshare/prefetch/schedule.hpp"

namespace xlshare {

struct ModelFile;
class ModelView;

/// One tensor of a model as the executor sees it.
struct TensorDesc {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<std::uint64_t> shape;  ///< fastest-varying first
  std::uint64_t size_bytes = 0;
};

/// A model's shape and its tensor table (index -> tensor), with the per-layer indices.
class LlamaModel {
 public:
  struct Layer {
    std::size_t attn_norm, wq, wk, wv, wo, ffn_norm, w_gate, w_up, w_down;
  };
  /// @throws FormatError when a tensor is missing or has the wrong shape or dtype.
  LlamaModel(LlamaConfig config, std::vector<TensorDesc> tensors, std::string where = "model");
  static LlamaModel from_file(const ModelFile& file);
  /// From a model loaded into a pool (its metadata holds the config).
  static LlamaModel from_pool(const ModelView& view);

  const LlamaConfig& config() const noexcept { return config_; }
  std::span<const TensorDesc> tensors() const noexcept { return tensors_; }
  const Layer& layer(std::size_t l) const noexcept { return layers_[l]; }
  std::size_t token_embd() const noexcept { return token_embd_; }
  std::size_t output_norm() const noexcept { return output_norm_; }
  std::size_t output() const noexcept { return output_; }  ///< == token_embd() when tied
  /// The execution order: embedding, block.0 .. block.L-1, head; keys are tensor indices.
  const Schedule& schedule() const noexcept { return schedule_; }
  std::uint64_t total_bytes() const noexcept;

 private:
  LlamaConfig config_;
  std::vector<TensorDesc> tensors_;
  std::vector<Layer> layers_;
  std::size_t token_embd_ = 0, output_norm_ = 0, output_ = 0;
  Schedule schedule_;
};

/// A view of one weight's bytes, kept valid for the handle's lifetime by an optional holder
/// (a cache lease, a pin, a reference count). The holder is type-erased and stored in place
/// (no allocation): any nothrow-movable type of at most kHolderBytes whose destructor
/// releases what it holds. The model layer knows nothing of where the bytes live.
class WeightHandle {
 public:
  static constexpr std::size_t kHolderBytes = 48;

  WeightHandle() noexcept = default;
  /// Bytes that outlive the handle on their own (resident weights, a mapping).
  explicit WeightHandle(std::span<const std::byte> bytes) noexcept : bytes_(bytes) {}
  /// Bytes valid while `holder` lives; `holder` is destroyed with the handle.
  template <typename Holder>
  WeightHandle(std::span<const std::byte> bytes, Holder&& holder) noexcept : bytes_(bytes) {
    using H = std::decay_t<Holder>;
    static_assert(sizeof(H) <= kHolderBytes && alignof(H) <= alignof(std::max_align_t),
                  "the holder must fit WeightHandle::kHolderBytes");
    static_assert(std::is_nothrow_move_constructible_v<H> && std::is_nothrow_destructible_v<H>);
    ::new (static_cast<void*>(storage_)) H(std::forward<Holder>(holder));
    ops_ = &kOps<H>;
  }
  WeightHandle(WeightHandle&& other) noexcept { take(other); }
  WeightHandle& operator=(WeightHandle&& other) noexcept {
    if (this != &other) {
      reset();
      take(other);
    }
    return *this;
  }
  WeightHandle(const WeightHandle&) = delete;
  WeightHandle& operator=(const WeightHandle&) = delete;
  ~WeightHandle() { reset(); }

  std::span<const std::byte> bytes() const noexcept { return bytes_; }
  /// Destroys the holder now (releasing what it held) and empties the view.
  void reset() noexcept {
    if (ops_ != nullptr) ops_->destroy(storage_);
    ops_ = nullptr;
    bytes_ = {};
  }

 private:
  struct Ops {
    void (*move)(void* to, void* from) noexcept;
    void (*destroy)(void* holder) noexcept;
  };
  template <typename H>
  static constexpr Ops kOps{[](void* to, void* from) noexcept {
                              H* source = static_cast<H*>(from);
                              ::new (to) H(std::move(*source));
                              source->~H();
                            },
                            [](void* holder) noexcept { static_cast<H*>(holder)->~H(); }};

  void take(WeightHandle& other) noexcept {
    bytes_ = other.bytes_;
    ops_ = other.ops_;
    if (ops_ != nullptr) ops_->move(storage_, other.storage_);
    other.ops_ = nullptr;
    other.bytes_ = {};
  }

  std::span<const std::byte> bytes_;
  const Ops* ops_ = nullptr;
  alignas(std::max_align_t) std::byte storage_[kHolderBytes];
};

/// Where the executor's weights come from.
///
/// Contract: `acquire(index)` returns the bytes of tensor `index` of the LlamaModel's table
/// (exactly its size_bytes, as stored), valid while the handle lives; it may block, and
/// throws to abort the forward pass. Optional:
///   * `piece_count(index)` / `acquire_piece(index, p)`: a large matrix may be handed out
///     in P pieces of whole rows, in order: piece p holds the rows after piece p-1's, as
///     many as its bytes (pieces need not be equal; the cache's are whole tiles of the
///     TensorTiling). Pieces that are not whole rows, or do not add up to the tensor, are a
///     ConfigError. Default: one piece, the whole tensor.
///   * `read_rows(index, rows, dst)`: copy single rows (the token embedding lookup) as
///     float32. Default: acquire the tensor and convert the rows.
///   * `begin_step(s)` / `end_step(s)`: bracket the model's schedule steps.
/// Called from the executor's thread only.
class WeightProvider {
 public:
  virtual ~WeightProvider() = default;
  virtual WeightHandle acquire(std::size_t index) = 0;
  virtual std::size_t piece_count(std::size_t index) const {
    (void)index;
    return 1;
  }
  virtual WeightHandle acquire_piece(std::size_t index, std::size_t piece) {
    (void)piece;
    return acquire(index);
  }
  /// `dst` receives rows.size() rows of `row_elements` floats each.
  virtual void read_rows(std::size_t index, const TensorDesc& desc,
                         std::span<const std::uint32_t> rows, float* dst);
  virtual void begin_step(std::size_t step) { (void)step; }
  virtual void end_step(std::size_t step) { (void)step; }
};

/// Weights that are already in memory (a pool's read-only mapping, or test buffers).
class SpanWeights final : public WeightProvider {
 public:
  explicit SpanWeights(std::vector<std::span<const std::byte>> tensors)
      : tensors_(std::move(tensors)) {}
  WeightHandle acquire(std::size_t index) override { return WeightHandle(tensors_.at(index)); }

 private:
  std::vector<std::span<const std::byte>> tensors_;
};

/// How attention rounds its keys, values, queries and weighted sum.
enum class AttentionNumerics {
  /// Everything in float32 (the default; the reference of the F32/F16 oracles).
  kF32,
  /// As llama.cpp computes on a CPU with its default F16 KV cache and flash attention off:
  /// keys and values rounded to F16 as they are stored, queries and softmax weights rounded
  /// to F16 before their products, every matrix product summed in tinyBLAS's order (16 lanes
  /// of FMAs folded in halves), ggml's RoPE angles and RMS norm. Not more accurate than kF32
  /// (2-3e-4 from it on the quantized oracle): it reproduces llama.cpp's logits of the same
  /// weights to 2e-7..2e-5 where kF32 stays 2-3e-4 away. Plain loops (slow); storage stays
  /// float.
  kGgmlF16,
};

struct ExecutorOptions {
  /// Compute threads (the Executor's own team; the caller is one of them). Default 1.
  unsigned threads = 1;
  /// How long an idle compute thread spins for the next parallel step before it sleeps,
  /// in microseconds. Spinning starts back-to-back steps at once; sleeping leaves the cores
  /// to other threads (the copy placement's transfer threads). Default 200.
  std::uint32_t spin_us = 200;
  /// Products of Q8_0, Q4_K and Q6_K weights as integer dot products against activations
  /// quantized to 8 bits (per 32 values for Q8_0, per 256 for the K types), as llama.cpp
  /// computes them: several times faster than converting each weight to float, but no
  /// longer exactly the dequantized model (its reference is llama.cpp's own run, within
  /// ~2e-2). Other types are unaffected. AVX-512 VNNI where the CPU has it, else AVX2, else
  /// portable code (chosen at run time). Default false: the exact mode.
  bool quantized_activations = false;
  /// See AttentionNumerics. Default kF32.
  AttentionNumerics attention = AttentionNumerics::kF32;
};

class ComputeTeam;

class Executor {
 public:
  Executor(const LlamaModel& model, WeightProvider& weights, ExecutorOptions options = {});
  ~Executor();
  Executor(const Executor&) = delete;
  Executor& operator=(const Executor&) = delete;

  /// Runs `tokens` at positions kv.size() .. and appends them to `kv`. Writes the logits
  /// of every position (n x vocab, row-major) when `all_logits`, else of the last only.
  /// @throws ConfigError for a token outside the vocabulary or a full KV cache.
  void forward(std::span<const std::int32_t> tokens, KvCache& kv, std::vector<float>& logits,
               bool all_logits);

  /// One sequence's share of a batched forward pass.
  struct Segment {
    std::span<const std::int32_t> tokens;
    KvCache* kv = nullptr;
    bool all_logits = false;
    std::vector<float>* logits = nullptr;
  };
  /// Runs several sequences together: each weight is acquired once for the whole batch and
  /// the matrix products run over every sequence's rows at once; attention stays per
  /// sequence. Same results as running each alone. @throws ConfigError as forward().
  void forward_batch(std::span<Segment> segments);

  const LlamaModel& model() const noexcept { return model_; }

 private:
  // Y[n x rows] = X[n x cols] * W^T for W stored [rows x cols] as `dtype`.
  void matmul(std::span<const std::byte> w, DType dtype, std::size_t rows, std::size_t cols,
              const float* x, std::size_t n, float* y);
  // The quantized_activations products: `n` rows of x quantized to 8 bits for `dtype`
  // (into buf_.act), then integer dots of W's `rows` with them into y[i * y_stride + r].
  const std::byte* quantize_activations(DType dtype, const float* x, std::size_t n,
                                        std::size_t cols);
  void int_products(const std::byte* w, DType dtype, std::size_t rows, std::size_t cols,
                    const std::byte* act, std::size_t n, float* y, std::size_t y_stride);
  // The same for weight `index` of the model, piece by piece as the provider hands it out.
  void matmul_weight(std::size_t index, std::size_t rows, std::size_t cols, const float* x,
                     std::size_t n, float* y);
  void rms_norm(const float* x, std::span<const std::byte> w, DType dtype, std::size_t n, float* y);

  const LlamaModel& model_;
  WeightProvider& weights_;
  ExecutorOptions options_;
  std::unique_ptr<ComputeTeam> team_;
  std::vector<double> inv_freq_;
  // Activations and conversion buffers, reused across calls: once warm, a forward pass
  // allocates nothing per layer or per token. (One forward at a time per Executor.)
  struct Buffers {
    std::vector<float> x, xn, q, k, v, att, tmp, gate, up, picked, out, norm_weight, piece;
    std::vector<float> rope;     // cos, sin of each row's position, per pair of dimensions
    std::vector<std::byte> act;  // quantized activations (quantized_activations)
  } buf_;
};

/// How to pick the next token.
struct SamplingOptions {
  float temperature = 0.0f;  ///< <= 0: greedy (argmax)
  std::uint32_t top_k = 0;   ///< 0: all
  float top_p = 1.0f;        ///< nucleus: smallest set with probability >= top_p
  std::uint64_t seed = 0;
};

/// Picks a token from `logits` (greedy or sampled with `rng`).
std::int32_t sample_token(std::span<const float> logits, const SamplingOptions& options,
                          std::mt19937_64& rng);

}  // namespace xlshare
