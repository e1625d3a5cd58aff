// A small, real near tier for conformance suites: a shared-memory pool holding a model of
// `steps` steps of three tensors each (of unequal sizes), attached through the emulator
// with an unpaced link, and a way to run the schedule through a DeviceCache, a
// TransferEngine and a Prefetcher with the policies under test, checking every byte that
// compute is handed. Header-only; used by the policy conformance suites.
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "xlshare/cache/device_cache.hpp"
#include "xlshare/cache/eviction_policy.hpp"
#include "xlshare/cache/transfer_engine.hpp"
#include "xlshare/engine/worker.hpp"
#include "xlshare/memory/backend_uri.hpp"
#include "xlshare/memory/cxl_emulator.hpp"
#include "xlshare/memory/pool.hpp"
#include "xlshare/prefetch/prefetch_policy.hpp"
#include "xlshare/prefetch/prefetcher.hpp"
#include "xlshare/prefetch/schedule.hpp"

namespace xlshare::conformance {

class NearTierRig {
 public:
  /// What one run of the schedule did.
  struct Run {
    std::uint64_t acquires = 0;     ///< leases compute was handed
    std::uint64_t wrong_bytes = 0;  ///< bytes of those leases that differ from the pool
    std::string cache_problem;      ///< DeviceCache::check() after the run (empty: sound)
    CacheStats cache;
  };

  explicit NearTierRig(std::size_t steps = 6, std::uint64_t seed = 1)
      : uri_(fmt::format("shm://xlshare-conformance-{}-{}", ::getpid(), counter()++)),
        remover_{uri_} {
    static constexpr std::uint64_t kFloats[3] = {3000, 12000, 40000};  // 12, 48, 160 KB
    std::vector<std::string> names;
    {
      auto pool = create_pool(uri_, steps * 3 * (220u << 10) + (4u << 20));
      ModelWriter w = pool->begin_model("m");
      std::uint64_t state = seed * 0x9e3779b97f4a7c15ull + 1;
      for (std::size_t s = 0; s < steps; ++s) {
        for (std::size_t t = 0; t < 3; ++t) {
          const std::uint64_t shape[] = {kFloats[(s + t) % 3]};
          names.push_back(fmt::format("blk.{}.w{}", s, t));
          auto bytes = w.add_tensor(names.back(), DType::kF32, shape);
          auto* f = reinterpret_cast<float*>(bytes.data());
          for (std::uint64_t k = 0; k < shape[0]; ++k) {
            state = state * 6364136223846793005ull + 1442695040888963407ull;
            f[k] = static_cast<float>(state >> 40) / 65536.0f;
          }
        }
      }
      w.seal();
    }
    EmulatorOptions o;
    o.link = link_preset("none");
    o.check_host_rate = false;
    pool_ = Pool::attach(std::make_unique<CxlEmulator>(open_backend(uri_), o), PoolRole::kReader);
    const auto view = pool_->model("m");
    for (const auto& name : names) {
      const TensorInfo& t = view->at(name);
      sources_.push_back(TensorSource{t, std::nullopt});
      key_bytes_.push_back(t.size_bytes);
      key_tensors_.push_back(t.name);
    }
    schedule_ = Schedule::for_transformer(key_tensors_);
  }
  ~NearTierRig() { pool_.reset(); }  // then remover_ removes the pool
  NearTierRig(const NearTierRig&) = delete;
  NearTierRig& operator=(const NearTierRig&) = delete;

  const Schedule& schedule() const noexcept { return schedule_; }
  std::span<const std::uint64_t> key_bytes() const noexcept { return key_bytes_; }
  std::span<const std::string> key_tensors() const noexcept { return key_tensors_; }
  std::size_t key_count() const noexcept { return key_bytes_.size(); }
  /// The most bytes one step holds at once: the smallest cache that runs the schedule.
  std::uint64_t heaviest_step_bytes() const noexcept {
    std::uint64_t most = 0;
    for (const auto& step : schedule_.steps()) {
      std::uint64_t bytes = 0;
      for (TensorKey k : step.keys) bytes += key_bytes_[k];
      most = std::max(most, bytes);
    }
    return most;
  }
  std::uint64_t total_bytes() const noexcept {
    std::uint64_t total = 0;
    for (auto b : key_bytes_) total += b;
    return total;
  }
  /// The caches the suites run in: a roomy one (half the model) and the smallest that runs
  /// the schedule.
  std::array<std::uint64_t, 2> cache_sizes() const noexcept {
    return {total_bytes() / 2, heaviest_step_bytes() + 4096};
  }
  /// What every run must show: each key of each pass handed to compute with the pool's
  /// bytes, the cache sound and never over its budget.
  void expect_served_right(const Run& r, int passes, std::uint64_t cache_bytes) const {
    EXPECT_EQ(r.acquires, static_cast<std::uint64_t>(passes) * key_count());
    EXPECT_EQ(r.wrong_bytes, 0u);
    EXPECT_EQ(r.cache_problem, "");
    EXPECT_LE(r.cache.peak_bytes, cache_bytes);
  }
  /// What an EvictionPolicyFactory receives for a cache of `cache_bytes`.
  CacheKeys keys(std::uint64_t cache_bytes) const noexcept {
    return CacheKeys{schedule_, key_bytes_, key_tensors_, cache_bytes};
  }

  /// Runs `passes` passes of the schedule (every step's keys acquired, in order) with
  /// these policies and a cache of `cache_bytes`, comparing each lease with the pool.
  Run run(std::unique_ptr<PrefetchPolicy> prefetch, std::unique_ptr<EvictionPolicy> eviction,
          std::uint64_t cache_bytes, int passes) {
    DeviceCache cache(cache_bytes, key_bytes_, std::move(eviction));
    TransferConfig tc;
    tc.threads = 2;
    TransferEngine engine(*pool_, nullptr, sources_, cache, tc);
    Prefetcher prefetcher(schedule_, std::move(prefetch), engine, cache);
    Run r;
    for (int pass = 0; pass < passes; ++pass) {
      for (std::size_t s = 0; s < schedule_.size(); ++s) {
        prefetcher.begin_step(s);
        for (TensorKey k : schedule_.step(s).keys) {
          const DeviceCache::Lease lease = prefetcher.acquire(k);
          ++r.acquires;
          r.wrong_bytes += differing_bytes(lease.bytes(), pool_->view(sources_[k].primary));
        }
        prefetcher.end_step(s);
      }
    }
    r.cache_problem = cache.check();
    r.cache = cache.stats();
    return r;
  }

 private:
  static std::atomic<unsigned>& counter() {
    static std::atomic<unsigned> n{0};
    return n;
  }
  static std::uint64_t differing_bytes(std::span<const std::byte> got,
                                       std::span<const std::byte> want) noexcept {
    if (got.size() != want.size()) return std::max(got.size(), want.size());
    if (std::memcmp(got.data(), want.data(), got.size()) == 0) return 0;
    std::uint64_t n = 0;
    for (std::size_t i = 0; i < got.size(); ++i) n += got[i] != want[i];
    return n;
  }

  // Removes the pool when the rig goes, also when its constructor throws part way.
  struct Remover {
    const std::string& uri;
    ~Remover() {
      try {
        if (backend_exists(uri)) remove_backend(uri);
      } catch (...) {
      }
    }
  };

  std::string uri_;
  Remover remover_;
  std::unique_ptr<Pool> pool_;
  std::vector<TensorSource> sources_;
  std::vector<std::uint64_t> key_bytes_;
  std::vector<std::string> key_tensors_;
  Schedule schedule_;
};

}  // namespace xlshare::conformance
