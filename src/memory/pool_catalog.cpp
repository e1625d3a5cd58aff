// Reading the catalog: layout checks of a header, validation of a sealed model's records,
// and the extent table derived from the records.
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

namespace pool_detail {

Geometry plan_geometry(std::uint64_t alignment, std::uint32_t max_models,
                       std::uint32_t max_tensors) {
  Geometry g{};
  g.alignment = alignment;
  g.control_offset = round_up(sizeof(pf::Header), alignment);
  g.control_bytes = round_up(sizeof(pf::Control), alignment);
  g.catalog_offset = g.control_offset + g.control_bytes;
  g.models_offset = g.catalog_offset;
  g.tensors_offset = g.models_offset + std::uint64_t{max_models} * sizeof(pf::ModelRecord);
  g.extents_offset = g.tensors_offset + std::uint64_t{max_tensors} * sizeof(pf::TensorRecord);
  g.extent_capacity = std::uint64_t{max_tensors} + max_models + 2;
  const std::uint64_t catalog_end = g.extents_offset + ExtentTable::bytes_for(g.extent_capacity);
  g.catalog_bytes = round_up(catalog_end - g.catalog_offset, alignment);
  g.data_offset = g.catalog_offset + g.catalog_bytes;
  return g;
}

// Why `h` is not the header of a usable pool in a backend of `backend_bytes`, or empty.
// `foreign` is set when the bytes are not an xlshare pool at all (magic, version).
std::string header_problem(const pf::Header& h, std::uint64_t backend_bytes,
                           std::uint64_t backend_align, bool* foreign) {
  *foreign = true;
  if (std::memcmp(h.magic, pf::kMagic, sizeof h.magic) != 0) {
    bool zero = true;
    for (char c : h.magic) zero = zero && c == 0;
    return zero ? "bad magic: the header is blank (never initialised, or erased)"
                : "bad magic: this is not an xlshare pool";
  }
  if (h.version != Pool::kFormatVersion) {
    // An older xlshare's pool is still ours (its magic says so): it cannot be attached, but
    // `pool rm --force` may remove it. An unknown version is not ours to touch.
    if (h.version >= 1 && h.version < Pool::kFormatVersion) *foreign = false;
    return fmt::format("format version {}{}; this build reads version {}", h.version,
                       *foreign ? "" : " (an older xlshare's: load the model into a new pool)",
                       Pool::kFormatVersion);
  }
  *foreign = false;
  if (h.header_struct_bytes != sizeof(pf::Header) || h.header_checksum != header_checksum(h)) {
    return std::string("the header fails its checksum: the header is corrupted");
  }
  if (backend_bytes < h.pool_bytes) {
    return fmt::format("the backing object is {} bytes but the pool was created with {}: truncated",
                       backend_bytes, h.pool_bytes);
  }
  if (h.pool_bytes != backend_bytes) {
    return fmt::format("the backing object is {} bytes but the pool was created with {}",
                       backend_bytes, h.pool_bytes);
  }
  // The layout must be the one create() would have made, and fit.
  const bool geometry_ok = [&] {
    if (!is_pow2(h.alignment_bytes) || h.alignment_bytes % backend_align != 0) return false;
    if (h.max_models == 0 || h.max_models > pf::kMaxModels || h.max_tensors == 0 ||
        h.max_tensors > (1u << 24))
      return false;
    if (h.model_record_bytes != sizeof(pf::ModelRecord) ||
        h.tensor_record_bytes != sizeof(pf::TensorRecord))
      return false;
    const Geometry g = plan_geometry(h.alignment_bytes, h.max_models, h.max_tensors);
    return g.control_offset == h.control_offset && g.control_bytes == h.control_bytes &&
           g.catalog_offset == h.catalog_offset && g.catalog_bytes == h.catalog_bytes &&
           g.models_offset == h.models_offset && g.tensors_offset == h.tensors_offset &&
           g.extents_offset == h.extents_offset && g.extent_capacity == h.extent_capacity &&
           g.data_offset == h.data_offset && h.data_offset <= h.pool_bytes &&
           h.data_bytes <= h.pool_bytes - h.data_offset && h.data_bytes % h.alignment_bytes == 0;
  }();
  if (!geometry_ok)
    return std::string("the header describes an impossible layout: the header is corrupted");
  return {};
}

}  // namespace pool_detail

std::vector<FreeExtent> Pool::Impl::live_extents_locked() const {
  std::vector<FreeExtent> used;
  auto add = [&](std::uint64_t offset, std::uint64_t bytes) {
    if (bytes == 0 || !in_data(offset, bytes)) return;
    const std::uint64_t a = lay.alignment_bytes;
    const std::uint64_t begin = offset / a * a;
    const std::uint64_t end =
        std::min(round_up(offset + bytes, a), lay.data_offset + lay.data_bytes);
    used.push_back({begin, end - begin});
  };
  for (std::uint32_t i = 0; i < lay.max_tensors; ++i) {
    const pf::TensorRecord& t = tensors[i];
    if (aload(t.in_use) == 0) continue;
    add(t.offset_bytes, t.size_bytes);
  }
  for (std::uint32_t m = 0; m < lay.max_models; ++m) {
    if (aload(models[m].state) == pf::kModelEmpty) continue;
    add(models[m].metadata_offset, models[m].metadata_bytes);
    add(models[m].tiles_offset, models[m].tiles_bytes);
  }
  std::sort(used.begin(), used.end(), [](const FreeExtent& a, const FreeExtent& b) {
    return a.offset_bytes < b.offset_bytes;
  });
  std::vector<FreeExtent> merged;
  for (const auto& e : used) {
    if (!merged.empty() &&
        e.offset_bytes <= merged.back().offset_bytes + merged.back().size_bytes) {
      const std::uint64_t end = std::max(merged.back().offset_bytes + merged.back().size_bytes,
                                         e.offset_bytes + e.size_bytes);
      merged.back().size_bytes = end - merged.back().offset_bytes;
    } else {
      merged.push_back(e);
    }
  }
  return merged;
}

bool Pool::Impl::overlaps_live_extent_locked(std::uint64_t offset, std::uint64_t bytes) const {
  for (const auto& e : live_extents_locked()) {
    if (offset < e.offset_bytes + e.size_bytes && e.offset_bytes < offset + bytes) return true;
  }
  return false;
}

void Pool::Impl::rebuild_extents_locked() {
  ExtentTable& t = *extents;
  t.capacity = extent_capacity;
  t.begin_bytes = lay.data_offset;
  t.end_bytes = lay.data_offset + lay.data_bytes;
  t.alignment_bytes = lay.alignment_bytes;
  ExtentAllocator(t).rebuild(live_extents_locked());
}

std::optional<std::uint64_t> Pool::Impl::allocate_locked(std::uint64_t bytes) {
  if (!ExtentAllocator(*extents).check().empty()) rebuild_extents_locked();
  for (int attempt = 0; attempt < 2; ++attempt) {
    auto offset = ExtentAllocator(*extents).allocate(bytes);
    if (!offset) return std::nullopt;
    const std::uint64_t rounded = ExtentAllocator(*extents).round_up(bytes);
    if (!overlaps_live_extent_locked(*offset, rounded)) return offset;
    logger().warn(
        "{}: the free-extent table handed out [{}, +{}), which a catalog record holds; "
        "rebuilding the table from the catalog",
        where(), *offset, rounded);
    rebuild_extents_locked();
  }
  corrupt("the free-extent table keeps handing out allocated bytes");
}

void Pool::Impl::free_model_locked(std::uint32_t slot) {
  pf::ModelRecord& m = models[slot];
  for (std::uint32_t i = 0; i < lay.max_tensors; ++i) {
    pf::TensorRecord& t = tensors[i];
    if (aload(t.in_use) == 0 || t.model_slot != slot) continue;
    aref(t.in_use).store(0, std::memory_order_release);
    std::memset(reinterpret_cast<std::byte*>(&t) + sizeof(std::uint32_t), 0,
                sizeof(pf::TensorRecord) - sizeof(std::uint32_t));
  }
  aref(m.state).store(pf::kModelRemoving, std::memory_order_seq_cst);
  std::memset(reinterpret_cast<std::byte*>(&m) + sizeof(std::uint64_t), 0,
              sizeof(pf::ModelRecord) - sizeof(std::uint64_t));
  aref(m.state).store(pf::kModelEmpty, std::memory_order_release);
  if (slot < quarantined.size()) quarantined[slot].clear();
  rebuild_extents_locked();
  bump_generation();
}

void Pool::Impl::recover_locked() {
  if (role != PoolRole::kWriter) return;  // readers never touch the allocator
  for (std::uint32_t i = 0; i < lay.max_tensors; ++i) {
    pf::TensorRecord& t = tensors[i];
    if (aload(t.in_use) == 0) continue;
    if (t.model_slot >= lay.max_models || aload(models[t.model_slot].state) == pf::kModelEmpty) {
      aref(t.in_use).store(0);
    }
  }
  rebuild_extents_locked();
  bump_generation();
}

std::shared_ptr<ModelView> Pool::Impl::load_model(std::uint32_t slot) const {
  const pf::ModelRecord& live = models[slot];
  if (aload(live.state) != pf::kModelSealed) return nullptr;
  pf::ModelRecord m;
  std::memcpy(&m, &live, sizeof m);
  auto name = read_name(m.name);
  if (m.record_checksum != model_record_checksum(m)) {
    corrupt(fmt::format("model record {} ('{}') fails its checksum", slot,
                        name ? *name : std::string("?")));
  }
  if (!name) corrupt(fmt::format("model record {} has an unterminated name", slot));
  auto view = std::make_shared<ModelView>();
  view->name_ = *name;
  view->slot_ = slot;
  if (m.tensor_count > lay.max_tensors) {
    corrupt(fmt::format("model '{}' claims {} tensors; the catalog holds at most {}", *name,
                        m.tensor_count, lay.max_tensors));
  }
  if (m.metadata_bytes > 0) {
    if (!in_data(m.metadata_offset, m.metadata_bytes) || m.metadata_bytes > (1u << 30)) {
      corrupt(fmt::format("model '{}' has metadata outside the data area", *name));
    }
    view->metadata_.resize(m.metadata_bytes);
    read_data(m.metadata_offset,
              std::as_writable_bytes(std::span<char>(view->metadata_.data(), m.metadata_bytes)),
              fmt::format("model '{}' metadata", *name));
    if (checksum64(view->metadata_.data(), m.metadata_bytes) != m.metadata_checksum) {
      corrupt(fmt::format("model '{}' metadata fails its checksum", *name));
    }
  }
  std::vector<TensorInfo> found(m.tensor_count);
  std::vector<bool> seen(m.tensor_count, false);
  std::uint32_t count = 0;
  for (std::uint32_t i = 0; i < lay.max_tensors; ++i) {
    if (aload(tensors[i].in_use) == 0 || tensors[i].model_slot != slot) continue;
    pf::TensorRecord t;
    std::memcpy(&t, &tensors[i], sizeof t);
    auto tname = read_name(t.name);
    const std::string label = fmt::format("model '{}' tensor record {} ('{}')", *name, i,
                                          tname ? *tname : std::string("?"));
    if (t.record_checksum != tensor_record_checksum(t)) corrupt(label + " fails its checksum");
    if (!tname || tname->empty()) corrupt(label + " has a bad name");
    if (t.model_slot_copy != slot) corrupt(label + " belongs to another model");
    if (!dtype_is_valid(t.dtype)) corrupt(fmt::format("{} has unknown dtype {}", label, t.dtype));
    if (t.n_dims < 1 || t.n_dims > kMaxTensorDims) {
      corrupt(fmt::format("{} has {} dimensions", label, t.n_dims));
    }
    std::uint64_t n = 1;
    for (std::uint32_t d = 0; d < t.n_dims; ++d) {
      if (t.shape[d] == 0 || n > UINT64_MAX / t.shape[d]) corrupt(label + " has a bad shape");
      n *= t.shape[d];
    }
    const auto bytes = dtype_bytes(static_cast<DType>(t.dtype), n);
    if (!bytes || *bytes != t.size_bytes) {
      corrupt(fmt::format("{}: {} bytes recorded, its shape and dtype need {}", label, t.size_bytes,
                          bytes ? *bytes : 0));
    }
    if (!in_data(t.offset_bytes, t.size_bytes) || t.offset_bytes % lay.alignment_bytes != 0) {
      corrupt(fmt::format("{} lies outside the data area (offset {}, {} bytes)", label,
                          t.offset_bytes, t.size_bytes));
    }
    if (t.ordinal >= m.tensor_count || seen[t.ordinal]) {
      corrupt(fmt::format("{} has ordinal {} of {}", label, t.ordinal, m.tensor_count));
    }
    seen[t.ordinal] = true;
    TensorInfo& info = found[t.ordinal];
    info.id = i;
    info.name = *tname;
    info.dtype = static_cast<DType>(t.dtype);
    info.n_dims = t.n_dims;
    for (std::uint32_t d = 0; d < kMaxTensorDims; ++d)
      info.shape[d] = d < t.n_dims ? t.shape[d] : 1;
    info.offset_bytes = t.offset_bytes;
    info.size_bytes = t.size_bytes;
    info.checksum = t.checksum;
    if (t.tile_bytes == 0 || t.tile_bytes > t.size_bytes ||
        (t.tile_bytes != t.size_bytes && t.tile_bytes % info.row_bytes() != 0)) {
      corrupt(fmt::format("{} has tiles of {} bytes, not whole rows of its {} bytes", label,
                          t.tile_bytes, t.size_bytes));
    }
    info.tile_bytes = t.tile_bytes;
    ++count;
  }
  if (count != m.tensor_count) {
    corrupt(fmt::format("model '{}' has {} tensor records, its record says {}", *name, count,
                        m.tensor_count));
  }
  // Extents must not overlap, within the model (other models were checked on their own;
  // the allocator's check covers the rest).
  std::vector<const TensorInfo*> by_offset;
  by_offset.reserve(found.size());
  std::unordered_set<std::string_view> names;
  std::uint64_t total = 0;
  for (const auto& t : found) {
    by_offset.push_back(&t);
    if (!names.insert(t.name).second)
      corrupt(fmt::format("model '{}' has two tensors named '{}'", *name, t.name));
    total += t.size_bytes;
  }
  std::sort(by_offset.begin(), by_offset.end(), [](const TensorInfo* a, const TensorInfo* b) {
    return a->offset_bytes < b->offset_bytes;
  });
  for (std::size_t i = 1; i < by_offset.size(); ++i) {
    if (by_offset[i - 1]->offset_bytes + by_offset[i - 1]->size_bytes >
        by_offset[i]->offset_bytes) {
      corrupt(fmt::format("model '{}': tensors '{}' and '{}' overlap", *name,
                          by_offset[i - 1]->name, by_offset[i]->name));
    }
  }
  // The TensorTiling's table: exactly one checksum per tile of every tensor, in order.
  std::uint64_t tiles = 0;
  for (const auto& t : found) tiles += (t.size_bytes + t.tile_bytes - 1) / t.tile_bytes;
  if (tiles > UINT64_MAX / 8 || m.tiles_bytes != tiles * 8 ||
      (tiles > 0 && !in_data(m.tiles_offset, m.tiles_bytes))) {
    corrupt(fmt::format(
        "model '{}' has a tile table of {} bytes at offset {}; its tensors have {} tiles", *name,
        m.tiles_bytes, m.tiles_offset, tiles));
  }
  auto table = std::make_shared<std::vector<std::uint64_t>>(tiles);
  if (tiles > 0) {
    read_data(m.tiles_offset, std::as_writable_bytes(std::span<std::uint64_t>(*table)),
              fmt::format("model '{}' tile table", *name));
  }
  if (tiles > 0 && checksum64(table->data(), m.tiles_bytes) != m.tiles_checksum) {
    corrupt(fmt::format("model '{}' tile table fails its checksum", *name));
  }
  std::size_t first = 0;
  for (auto& t : found) {
    t.tile_table = table;
    t.tile_first = first;
    t.tile_count = (t.size_bytes + t.tile_bytes - 1) / t.tile_bytes;
    first += t.tile_count;
  }
  view->tensors_ = std::move(found);
  view->total_bytes_ = total;
  // A remover may have started meanwhile: only a still-sealed record counts.
  if (aload(live.state, std::memory_order_seq_cst) != pf::kModelSealed) return nullptr;
  return view;
}

std::optional<std::uint32_t> Pool::Impl::slot_of(std::string_view name) const {
  for (std::uint32_t i = 0; i < lay.max_models; ++i) {
    if (aload(models[i].state) == pf::kModelEmpty) continue;
    auto n = read_name(models[i].name);
    if (n && *n == name) return i;
  }
  return std::nullopt;
}

void Pool::Impl::read_data(std::uint64_t offset, std::span<std::byte> dst,
                           std::string_view what) const {
  if (data_mapped) {
    std::memcpy(dst.data(), base + offset, dst.size());
    return;
  }
  const ReadStatus status = backend->read(offset, dst);
  if (status != ReadStatus::kOk) {
    throw PoolError(fmt::format("{}: cannot read {}: {}", where(), what, to_string(status)));
  }
}

}  // namespace xlshare
