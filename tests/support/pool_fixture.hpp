// A pool holding one model of `n` f32 tensors with seeded contents, for near-tier tests.
#pragma once

#include <random>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "support/test_support.hpp"
#include "xlshare/cache/transfer_engine.hpp"
#include "xlshare/memory/backend_uri.hpp"
#include "xlshare/memory/cxl_emulator.hpp"
#include "xlshare/memory/pool.hpp"

namespace xlshare::test {

class ModelPool {
 public:
  // Creates shm://<unique> with model "m": tensors "blk.i.w" of `floats` f32 each.
  ModelPool(std::size_t n, std::uint64_t floats, std::uint64_t seed = 1)
      : uri_("shm://" + unique_name("model")), guard_(uri_) {
    auto pool = Pool::create(
        create_backend(uri_, n * (floats * 4 + 4096) + (8u << 20)),
        PoolOptions{.max_models = 2, .max_tensors = static_cast<std::uint32_t>(n + 8)});
    auto w = pool->begin_model("m");
    std::mt19937 rng(static_cast<std::uint32_t>(seed));
    for (std::size_t i = 0; i < n; ++i) {
      const std::uint64_t shape[] = {floats};
      auto bytes = w.add_tensor(fmt::format("blk.{}.w", i), DType::kF32, shape);
      auto* f = reinterpret_cast<float*>(bytes.data());
      for (std::uint64_t k = 0; k < floats; ++k) f[k] = static_cast<float>(rng() % 1000) / 100.0f;
    }
    w.seal();
  }
  const std::string& uri() const { return uri_; }

  // Attaches through an emulator with these options.
  std::unique_ptr<Pool> attach(EmulatorOptions o = {}) const {
    o.check_host_rate = false;
    return Pool::attach(std::make_unique<CxlEmulator>(open_backend(uri_), std::move(o)));
  }

  // The tensor sources of the model in `primary` (and `replica`, if given), by key.
  static std::vector<TensorSource> sources(Pool& primary, Pool* replica = nullptr) {
    auto m = primary.model("m");
    std::shared_ptr<const ModelView> r = replica ? replica->model("m") : nullptr;
    std::vector<TensorSource> out;
    for (const auto& t : m->tensors()) {
      TensorSource s{t, std::nullopt};
      if (r) s.replica = r->at(t.name);
      out.push_back(s);
    }
    return out;
  }
  static std::vector<std::uint64_t> sizes(const std::vector<TensorSource>& s) {
    std::vector<std::uint64_t> out;
    for (const auto& t : s) out.push_back(t.primary.size_bytes);
    return out;
  }

 private:
  std::string uri_;
  BackendGuard guard_;
};

}  // namespace xlshare::test
