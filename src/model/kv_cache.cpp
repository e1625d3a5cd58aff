#include "xlshare/model/kv_cache.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <new>
#include <utility>

#include "xlshare/error.hpp"

namespace xlshare {

// --- KvBlockPool --------------------------------------------------------------------------

std::uint64_t KvBlockPool::token_bytes(const LlamaConfig& c) noexcept {
  return 2ull * c.n_layers * c.n_kv_heads * c.head_dim * sizeof(float);
}

std::size_t KvBlockPool::blocks_in(const LlamaConfig& c, std::uint64_t bytes,
                                   std::uint32_t block_tokens) noexcept {
  const std::uint64_t per_block = token_bytes(c) * block_tokens;
  return per_block == 0 ? 0 : static_cast<std::size_t>(bytes / per_block);
}

KvBlockPool::KvBlockPool(const LlamaConfig& c, std::size_t blocks, std::uint32_t block_tokens)
    : block_tokens_(block_tokens),
      block_floats_(std::size_t{2} * c.n_layers * block_tokens * c.n_kv_heads * c.head_dim),
      blocks_(blocks) {
  if (blocks == 0 || block_tokens == 0 || block_floats_ == 0)
    throw ConfigError("KV block pool: needs at least one block of at least one token");
  if (blocks > (std::size_t{1} << 40) / block_floats_) {
    throw OutOfMemory(
        fmt::format("KV block pool: {} blocks of {} bytes are more than any machine has", blocks,
                    block_bytes()));
  }
  try {
    arena_.reset(new float[blocks * block_floats_]);  // not value-initialised: not touched
  } catch (const std::bad_alloc&) {
    throw OutOfMemory(
        fmt::format("KV block pool: cannot allocate {} blocks of {} bytes", blocks, block_bytes()));
  }
  free_.reserve(blocks);
  for (std::size_t b = blocks; b-- > 0;) free_.push_back(arena_.get() + b * block_floats_);
}

std::size_t KvBlockPool::free_blocks() const {
  std::lock_guard g(mu_);
  return free_.size();
}

std::uint64_t KvBlockPool::used_bytes() const {
  std::lock_guard g(mu_);
  return (blocks_ - free_.size()) * block_bytes();
}

float* KvBlockPool::take() {
  std::lock_guard g(mu_);
  if (free_.empty()) return nullptr;
  float* b = free_.back();
  free_.pop_back();
  return b;
}

void KvBlockPool::give(float* block) noexcept {
  std::lock_guard g(mu_);
  free_.push_back(block);  // reserved for every block at construction: cannot throw
}

// --- KvCache ------------------------------------------------------------------------------

namespace {

std::uint32_t checked_capacity(const LlamaConfig& c, std::uint32_t capacity_tokens) {
  const std::uint32_t capacity = std::min(capacity_tokens, c.context);
  if (capacity == 0) throw ConfigError("KV cache: capacity must be > 0 tokens");
  return capacity;
}

}  // namespace

KvCache::KvCache(const LlamaConfig& c, std::uint32_t capacity_tokens)
    : KvCache(std::make_shared<KvBlockPool>(c, (std::size_t{checked_capacity(c, capacity_tokens)} +
                                                KvBlockPool::kDefaultBlockTokens - 1) /
                                                   KvBlockPool::kDefaultBlockTokens),
              c, capacity_tokens) {}

KvCache::KvCache(std::shared_ptr<KvBlockPool> pool, const LlamaConfig& c,
                 std::uint32_t capacity_tokens)
    : pool_(std::move(pool)),
      capacity_(checked_capacity(c, capacity_tokens)),
      row_(c.n_kv_heads * c.head_dim),
      layers_(c.n_layers) {
  if (!pool_) throw ConfigError("KV cache: no block pool");
  block_tokens_ = pool_->block_tokens();
  if (pool_->block_bytes() != KvBlockPool::token_bytes(c) * block_tokens_)
    throw ConfigError("KV cache: the block pool was made for another model shape");
  blocks_.reserve(pool_->blocks_for(capacity_));
}

KvCache::KvCache(KvCache&& other) noexcept
    : pool_(std::move(other.pool_)),
      blocks_(std::move(other.blocks_)),
      capacity_(other.capacity_),
      size_(std::exchange(other.size_, 0)),
      row_(other.row_),
      layers_(other.layers_),
      block_tokens_(other.block_tokens_) {
  other.blocks_.clear();
}

KvCache& KvCache::operator=(KvCache&& other) noexcept {
  if (this != &other) {
    clear();
    pool_ = std::move(other.pool_);
    blocks_ = std::move(other.blocks_);
    other.blocks_.clear();
    capacity_ = other.capacity_;
    size_ = std::exchange(other.size_, 0);
    row_ = other.row_;
    layers_ = other.layers_;
    block_tokens_ = other.block_tokens_;
  }
  return *this;
}

void KvCache::clear() noexcept {
  size_ = 0;
  if (!pool_) return;  // moved from
  for (float* b : blocks_) pool_->give(b);
  blocks_.clear();
}

void KvCache::release_unused() noexcept {
  if (!pool_) return;
  const std::size_t keep = pool_->blocks_for(size_);
  while (blocks_.size() > keep) {
    pool_->give(blocks_.back());
    blocks_.pop_back();
  }
}

std::size_t KvCache::blocks_needed(std::uint32_t tokens) const noexcept {
  if (!pool_) return 0;
  const std::size_t want = pool_->blocks_for(std::uint64_t{size_} + tokens);
  return want > blocks_.size() ? want - blocks_.size() : 0;
}

bool KvCache::reserve(std::uint32_t tokens) {
  if (!pool_ || std::uint64_t{size_} + tokens > capacity_) return false;
  const std::size_t need = blocks_needed(tokens);
  const std::size_t had = blocks_.size();
  for (std::size_t i = 0; i < need; ++i) {
    float* b = pool_->take();
    if (b == nullptr) {  // all or nothing
      while (blocks_.size() > had) {
        pool_->give(blocks_.back());
        blocks_.pop_back();
      }
      return false;
    }
    blocks_.push_back(b);
  }
  return true;
}

}  // namespace xlshare
