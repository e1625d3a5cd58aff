// The keys and values a sequence has computed, in fixed-size blocks (paged KV).
//
// A KvBlockPool is the KV memory of one worker: `blocks` blocks of `block_tokens` tokens
// each (every layer's keys and values for those tokens), allocated once and handed out
// again and again. A KvCache is one sequence's share: it takes blocks as its tokens need
// them and gives them back when cleared or destroyed, so memory follows the tokens a
// sequence holds, not the longest it could grow to. The serving scheduler admits and
// preempts sequences by the blocks a pool has free.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include "xlshare/model/llama_config.hpp"

namespace xlshare {

class KvBlockPool {
 public:
  static constexpr std::uint32_t kDefaultBlockTokens = 32;

  /// @throws ConfigError for 0 blocks or tokens, OutOfMemory when the blocks cannot be had.
  /// The memory is reserved, not touched: pages become resident as blocks are first filled.
  KvBlockPool(const LlamaConfig& config, std::size_t blocks,
              std::uint32_t block_tokens = kDefaultBlockTokens);
  KvBlockPool(const KvBlockPool&) = delete;
  KvBlockPool& operator=(const KvBlockPool&) = delete;

  /// Bytes of one token's keys and values over every layer of `config`.
  static std::uint64_t token_bytes(const LlamaConfig& config) noexcept;
  /// Blocks of `block_tokens` that `bytes` hold (at least 1 when bytes >= one block).
  static std::size_t blocks_in(const LlamaConfig& config, std::uint64_t bytes,
                               std::uint32_t block_tokens = kDefaultBlockTokens) noexcept;

  std::uint32_t block_tokens() const noexcept { return block_tokens_; }
  std::uint64_t block_bytes() const noexcept { return block_floats_ * sizeof(float); }
  std::size_t blocks() const noexcept { return blocks_; }
  std::size_t free_blocks() const;
  std::uint64_t used_bytes() const;
  std::uint64_t capacity_bytes() const noexcept { return blocks_ * block_bytes(); }
  /// Blocks needed to hold `tokens` tokens.
  std::size_t blocks_for(std::uint64_t tokens) const noexcept {
    return static_cast<std::size_t>((tokens + block_tokens_ - 1) / block_tokens_);
  }

 private:
  friend class KvCache;
  float* take();                     // nullptr when none is free
  void give(float* block) noexcept;  // back to the free list

  std::uint32_t block_tokens_;
  std::size_t block_floats_, blocks_;
  std::unique_ptr<float[]> arena_;
  mutable std::mutex mu_;
  std::vector<float*> free_;  // a stack: the block given back last (still warm) goes first
};

class KvCache {
 public:
  /// One sequence of up to `capacity_tokens` (at most the model's context), with blocks of
  /// its own, as many as that capacity needs.
  KvCache(const LlamaConfig& config, std::uint32_t capacity_tokens);
  /// The same, taking its blocks from `pool` as it grows.
  KvCache(std::shared_ptr<KvBlockPool> pool, const LlamaConfig& config,
          std::uint32_t capacity_tokens);
  ~KvCache() { clear(); }
  KvCache(KvCache&& other) noexcept;
  KvCache& operator=(KvCache&& other) noexcept;
  KvCache(const KvCache&) = delete;
  KvCache& operator=(const KvCache&) = delete;

  std::uint32_t size() const noexcept { return size_; }
  std::uint32_t capacity() const noexcept { return capacity_; }
  /// Forgets every token and gives every block back.
  void clear() noexcept;
  /// Makes room for `tokens` more tokens, taking the blocks they need. False, and nothing
  /// taken, when the capacity would be exceeded or the pool has too few blocks free.
  bool reserve(std::uint32_t tokens);
  /// Blocks needed for `tokens` more tokens beyond those already room for.
  std::size_t blocks_needed(std::uint32_t tokens) const noexcept;
  std::size_t blocks_held() const noexcept { return blocks_.size(); }
  std::uint64_t bytes_held() const noexcept {
    return pool_ ? blocks_.size() * pool_->block_bytes() : 0;
  }
  /// Gives back the blocks beyond those its tokens fill.
  void release_unused() noexcept;

 private:
  friend class Executor;
  float* key(std::size_t layer, std::size_t pos) noexcept {
    return blocks_[pos / block_tokens_] + (layer * block_tokens_ + pos % block_tokens_) * row_;
  }
  float* value(std::size_t layer, std::size_t pos) noexcept {
    return key(layer, pos) + std::size_t{layers_} * block_tokens_ * row_;
  }

  std::shared_ptr<KvBlockPool> pool_;
  std::vector<float*> blocks_;
  std::uint32_t capacity_ = 0, size_ = 0, row_ = 0, layers_ = 0, block_tokens_ = 1;
};

}  // namespace xlshare
