// ModelWriter: a model's tensors written into the pool, sealed or abandoned.
#include "xlshare/memory/pool.hpp"

#include <fcntl.h>
#include <fmt/format.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <sstream>
#include <unordered_set>
#include <utility>

#include "memory/pool_layout.hpp"
#include "xlshare/error.hpp"
#include "xlshare/log.hpp"
#include "xlshare/memory/backend_uri.hpp"
#include "xlshare/memory/checksum.hpp"

#include "memory/pool_impl.hpp"

namespace xlshare {

ModelWriter::ModelWriter(Pool& pool, std::uint32_t slot, std::string name)
    : pool_(&pool), slot_(slot), name_(std::move(name)) {}

ModelWriter::ModelWriter(ModelWriter&& other) noexcept
    : pool_(std::exchange(other.pool_, nullptr)),
      slot_(other.slot_),
      epoch_(other.epoch_),
      name_(std::move(other.name_)),
      tensor_slots_(std::move(other.tensor_slots_)),
      tensor_names_(std::move(other.tensor_names_)) {}

ModelWriter::~ModelWriter() { abandon(); }

// A loader re-checks, under the lock and before every write, that its record is still its
// own: same slot, same owner, same epoch, still loading. A record that was force-removed
// (fenced) is freed here, by the loader that held it; either way the loader stops.
void ModelWriter::check_owner_locked() {
  Pool::Impl& im = *pool_->impl_;
  pf::ModelRecord& m = im.models[slot_];
  const std::uint64_t state = aload(m.state);
  const bool mine = im.owned_by_me(m) && m.epoch == epoch_;
  if (mine && state == pf::kModelLoading) return;
  if (mine && state == pf::kModelFenced) im.free_model_locked(slot_);
  pool_ = nullptr;  // nothing left to abandon: the record is not ours any more
  tensor_slots_.clear();
  tensor_names_.clear();
  throw PoolError(
      fmt::format("{}: model '{}' was removed while this process was loading it "
                  "(forced removal or reclaim); loading stopped",
                  im.where(), name_));
}

std::span<std::byte> ModelWriter::add_tensor(std::string_view name, DType dtype,
                                             std::span<const std::uint64_t> shape) {
  if (pool_ == nullptr) throw PoolError(fmt::format("model '{}': writer already sealed", name_));
  Pool::Impl& im = *pool_->impl_;
  validate_tensor_name(name);
  if (!dtype_is_valid(static_cast<std::uint32_t>(dtype))) {
    throw ConfigError(fmt::format("tensor '{}': unknown dtype", name));
  }
  if (shape.empty() || shape.size() > kMaxTensorDims) {
    throw ConfigError(fmt::format("tensor '{}': {} dimensions; 1..{} are supported", name,
                                  shape.size(), kMaxTensorDims));
  }
  std::uint64_t n = 1;
  for (auto d : shape) {
    if (d == 0 || n > UINT64_MAX / d)
      throw ConfigError(fmt::format("tensor '{}': bad shape", name));
    n *= d;
  }
  const auto bytes = dtype_bytes(dtype, n);
  if (!bytes) {
    throw ConfigError(
        fmt::format("tensor '{}': {} elements are not whole {} blocks", name, n, to_string(dtype)));
  }
  for (const auto& existing : tensor_names_) {
    if (existing == name) {
      throw ConfigError(fmt::format("model '{}': tensor '{}' added twice", name_, name));
    }
  }
  Pool::Impl::Lock lock(im);
  check_owner_locked();
  // A free catalog slot.
  std::optional<std::uint32_t> record;
  for (std::uint32_t k = 0; k < im.lay.max_tensors; ++k) {
    const std::uint32_t i = (im.tensor_hint + k) % im.lay.max_tensors;
    if (aload(im.tensors[i].in_use) == 0) {
      record = i;
      break;
    }
  }
  if (!record) {
    throw OutOfMemory(fmt::format("{}: the catalog holds {} tensors and is full (tensor '{}/{}')",
                                  im.where(), im.lay.max_tensors, name_, name));
  }
  auto offset = im.allocate_locked(*bytes);
  if (!offset) {
    const auto st = ExtentAllocator(*im.extents).stats();
    throw OutOfMemory(fmt::format(
        "{}: no room for tensor '{}/{}' of {} bytes ({} bytes free, largest free extent {})",
        im.where(), name_, name, *bytes, st.bytes_free, st.largest_free_extent));
  }
  pf::TensorRecord& t = im.tensors[*record];
  std::memset(reinterpret_cast<std::byte*>(&t) + sizeof(std::uint32_t), 0,
              sizeof(pf::TensorRecord) - sizeof(std::uint32_t));
  t.model_slot = slot_;
  std::memcpy(t.name, name.data(), name.size());
  t.dtype = static_cast<std::uint32_t>(dtype);
  t.n_dims = static_cast<std::uint32_t>(shape.size());
  for (std::size_t d = 0; d < shape.size(); ++d) t.shape[d] = shape[d];
  t.offset_bytes = *offset;
  t.size_bytes = *bytes;
  t.model_slot_copy = slot_;
  t.ordinal = static_cast<std::uint32_t>(tensor_slots_.size());
  aref(t.in_use).store(1, std::memory_order_release);
  im.tensor_hint = *record + 1;
  tensor_slots_.push_back(*record);
  tensor_names_.emplace_back(name);
  pf::ModelRecord& m = im.models[slot_];
  m.tensor_count = static_cast<std::uint32_t>(tensor_slots_.size());
  m.tensor_bytes += *bytes;
  return {im.base + *offset, *bytes};
}

void ModelWriter::set_metadata(std::string_view metadata) {
  if (pool_ == nullptr) throw PoolError(fmt::format("model '{}': writer already sealed", name_));
  Pool::Impl& im = *pool_->impl_;
  Pool::Impl::Lock lock(im);
  check_owner_locked();
  pf::ModelRecord& m = im.models[slot_];
  if (m.metadata_bytes > 0) {
    m.metadata_offset = m.metadata_bytes = 0;
    im.rebuild_extents_locked();
  }
  if (metadata.empty()) return;
  auto offset = im.allocate_locked(metadata.size());
  if (!offset) {
    throw OutOfMemory(fmt::format("{}: no room for {} bytes of metadata of model '{}'", im.where(),
                                  metadata.size(), name_));
  }
  std::memcpy(im.base + *offset, metadata.data(), metadata.size());
  m.metadata_offset = *offset;
  m.metadata_bytes = metadata.size();
}

void ModelWriter::seal() {
  if (pool_ == nullptr) throw PoolError(fmt::format("model '{}': writer already sealed", name_));
  Pool::Impl& im = *pool_->impl_;
  pf::ModelRecord& m = im.models[slot_];
  {
    Pool::Impl::Lock lock(im);
    check_owner_locked();
  }
  // Checksums are computed without the lock: only this writer touches these records. Each
  // tile is hashed on its own and into the whole tensor's checksum while it is in cache.
  std::vector<std::uint64_t> tiles;
  for (std::uint32_t slot : tensor_slots_) {
    pf::TensorRecord& t = im.tensors[slot];
    t.tile_bytes = tile_bytes_for(static_cast<DType>(t.dtype), t.n_dims,
                                  std::span(t.shape, t.n_dims), t.size_bytes);
    Checksum64 whole;
    for (std::uint64_t at = 0; at < t.size_bytes; at += t.tile_bytes) {
      const std::span<const std::byte> tile(
          reinterpret_cast<const std::byte*>(im.base + t.offset_bytes + at),
          std::min(t.tile_bytes, t.size_bytes - at));
      whole.update(tile);
      tiles.push_back(checksum64(tile));
    }
    t.checksum = whole.digest();
    t.record_checksum = tensor_record_checksum(t);
  }
  Pool::Impl::Lock lock(im);
  check_owner_locked();
  if (!tiles.empty()) {
    const std::uint64_t bytes = tiles.size() * sizeof(std::uint64_t);
    auto offset = im.allocate_locked(bytes);
    if (!offset) {
      throw OutOfMemory(fmt::format("{}: no room for the {}-byte tile table of model '{}'",
                                    im.where(), bytes, name_));
    }
    std::memcpy(im.base + *offset, tiles.data(), bytes);
    m.tiles_offset = *offset;
    m.tiles_bytes = bytes;
    m.tiles_checksum = checksum64(tiles.data(), bytes);
  }
  if (m.metadata_bytes > 0) {
    m.metadata_checksum = checksum64(im.base + m.metadata_offset, m.metadata_bytes);
  }
  m.record_checksum = model_record_checksum(m);
  aref(m.state).store(pf::kModelSealed, std::memory_order_release);
  im.bump_generation();
  pool_ = nullptr;
  tensor_slots_.clear();
  tensor_names_.clear();
}

void ModelWriter::abandon() noexcept {
  if (pool_ == nullptr) return;
  Pool::Impl& im = *pool_->impl_;
  try {
    Pool::Impl::Lock lock(im);
    pf::ModelRecord& m = im.models[slot_];
    const std::uint64_t state = aload(m.state);
    if ((state == pf::kModelLoading || state == pf::kModelFenced) && im.owned_by_me(m) &&
        m.epoch == epoch_) {
      im.free_model_locked(slot_);
    }
  } catch (const std::exception& e) {
    logger().error("{}: could not abandon model '{}': {}", im.where(), name_, e.what());
  }
  pool_ = nullptr;
}

}  // namespace xlshare
