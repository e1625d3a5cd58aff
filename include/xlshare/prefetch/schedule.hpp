// Schedule: a model's execution order — an ordered list of steps (embedding, block 0 ...
// block L-1, head), each naming the tensors it needs. A decode loop repeats it.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "xlshare/types.hpp"

namespace xlshare {

struct ScheduleStep {
  std::string name;             ///< "embedding", "block.3", "head"
  std::vector<TensorKey> keys;  ///< in the order compute acquires them
};

class Schedule {
 public:
  Schedule() = default;
  /// @throws ConfigError for an empty schedule or one without any tensor.
  explicit Schedule(std::vector<ScheduleStep> steps, bool repeats = true);

  std::span<const ScheduleStep> steps() const noexcept { return steps_; }
  std::size_t size() const noexcept { return steps_.size(); }
  const ScheduleStep& step(std::size_t i) const noexcept { return steps_[i]; }
  /// Whether the schedule runs again after its last step (decode does).
  bool repeats() const noexcept { return repeats_; }
  /// The step after `i` (wrapping when the schedule repeats; size() past the end).
  std::size_t next(std::size_t i) const noexcept;
  /// Every key of one pass, in order: the access trace of one pass.
  std::vector<TensorKey> trace() const;
  /// A set of keys for FixedSetPolicy of at most `bytes` in all (`key_bytes[k]` is key k's
  /// size), spread so that what streams through each step is as even as it can be: again
  /// and again the largest key that fits, from the step with the most bytes still outside.
  std::vector<TensorKey> fixed_set(std::span<const std::uint64_t> key_bytes,
                                   std::uint64_t bytes) const;
  /// The fixed set for a cache of `cache_bytes`: the largest fixed_set of 80%, 75%, ... of
  /// the cache that leaves the rest at least 1.4x the bytes the heaviest step has outside
  /// the set, so that the next step streams in while one computes (the rule measured best
  /// on the bench shape, docs/results.md); failing that (a small cache), the largest that
  /// leaves 1x; empty when none does.
  std::vector<TensorKey> fixed_set_for_cache(std::span<const std::uint64_t> key_bytes,
                                             std::uint64_t cache_bytes) const;
  /// The most bytes any one step needs outside `set` (each key counted in its first step).
  std::uint64_t heaviest_step_outside(std::span<const std::uint64_t> key_bytes,
                                      std::span<const TensorKey> set) const;

  /// Groups tensor names into the usual transformer schedule: names containing "blk.N."
  /// or "layers.N." form step "block.N" (in N order), names before the first block
  /// (embeddings) form "embedding", and the rest form "head". `names[k]` is key k.
  static Schedule for_transformer(std::span<const std::string> names, bool repeats = true);

 private:
  std::vector<ScheduleStep> steps_;
  bool repeats_ = true;
};

}  // namespace xlshare
