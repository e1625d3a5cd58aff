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

std::uint64_t TensorInfo::n_elements() const noexcept {
  std::uint64_t n = 1;
  for (std::uint32_t i = 0; i < n_dims; ++i) n *= shape[i];
  return n;
}

std::uint64_t TensorInfo::rows() const noexcept {
  std::uint64_t n = 1;
  for (std::uint32_t i = 1; i < n_dims; ++i) n *= shape[i];
  return n;
}

std::uint64_t TensorInfo::row_bytes() const noexcept {
  const std::uint64_t r = rows();
  return r == 0 ? size_bytes : size_bytes / r;
}

std::uint64_t tile_bytes_for(DType dtype, std::uint32_t n_dims,
                             std::span<const std::uint64_t> shape,
                             std::uint64_t size_bytes) noexcept {
  if (n_dims < 2 || shape.empty() || size_bytes == 0) return size_bytes;
  const auto row = dtype_bytes(dtype, shape[0]);
  if (!row || *row == 0 || size_bytes % *row != 0) return size_bytes;
  const std::uint64_t rows_per_tile = std::max<std::uint64_t>(1, kTileTargetBytes / *row);
  return std::min(size_bytes, rows_per_tile * *row);
}

const TensorInfo* ModelView::find(std::string_view name) const noexcept {
  for (const auto& t : tensors_) {
    if (t.name == name) return &t;
  }
  return nullptr;
}

const TensorInfo& ModelView::at(std::string_view name) const {
  if (const TensorInfo* t = find(name)) return *t;
  throw PoolError(fmt::format("model '{}' has no tensor '{}'", name_, name));
}

// ---------------------------------------------------------------------------------------
// Creating and attaching

Pool::Pool(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Pool::~Pool() = default;

std::unique_ptr<Pool> Pool::create(std::unique_ptr<MemoryBackend> backend,
                                   const PoolOptions& options) {
  if (!backend) throw ConfigError("Pool::create: no backend");
  const std::string uri = backend->uri();
  if (!backend->is_writable()) {
    throw PoolError(fmt::format("pool {}: cannot create: the backend is read-only", uri));
  }
  if (options.max_models == 0 || options.max_models > pf::kMaxModels) {
    throw ConfigError(fmt::format("pool {}: max_models must be 1..{}", uri, pf::kMaxModels));
  }
  if (options.max_tensors == 0 || options.max_tensors > (1u << 24)) {
    throw ConfigError(fmt::format("pool {}: max_tensors must be 1..{}", uri, 1u << 24));
  }
  if (!is_pow2(options.data_alignment)) {
    throw ConfigError(fmt::format("pool {}: data_alignment {} is not a power of two", uri,
                                  options.data_alignment));
  }
  const std::uint64_t alignment = std::max(options.data_alignment, backend->alignment_bytes());
  const Geometry g = plan_geometry(alignment, options.max_models, options.max_tensors);
  const std::uint64_t pool_bytes = backend->size_bytes();
  const std::uint64_t usable = pool_bytes / alignment * alignment;
  if (usable < g.data_offset + alignment) {
    throw PoolError(fmt::format(
        "pool {}: the backend's {} bytes are too small for a pool of {} models and {} tensors "
        "(header, control and catalog need {} bytes before any data)",
        uri, pool_bytes, options.max_models, options.max_tensors, g.data_offset));
  }

  auto impl = std::make_unique<Impl>();
  impl->uri = uri;
  impl->role = PoolRole::kWriter;
  impl->whole = backend->map(0, usable, Access::kReadWrite);
  std::byte* base = impl->whole.data();
  auto* h = reinterpret_cast<pf::Header*>(base);
  std::memset(h, 0, sizeof *h);
  std::memcpy(h->magic, pf::kMagic, sizeof h->magic);
  h->version = kFormatVersion;
  h->header_struct_bytes = sizeof(pf::Header);
  h->pool_bytes = pool_bytes;
  h->alignment_bytes = alignment;
  h->control_offset = g.control_offset;
  h->control_bytes = g.control_bytes;
  h->catalog_offset = g.catalog_offset;
  h->catalog_bytes = g.catalog_bytes;
  h->models_offset = g.models_offset;
  h->tensors_offset = g.tensors_offset;
  h->extents_offset = g.extents_offset;
  h->max_models = options.max_models;
  h->max_tensors = options.max_tensors;
  h->model_record_bytes = sizeof(pf::ModelRecord);
  h->tensor_record_bytes = sizeof(pf::TensorRecord);
  h->extent_capacity = g.extent_capacity;
  h->data_offset = g.data_offset;
  h->data_bytes = usable - g.data_offset;
  h->creator_uid = static_cast<std::uint32_t>(::getuid());
  h->created_unix_ns = unix_ns();
  h->header_checksum = header_checksum(*h);
  aref(h->state).store(pf::kPoolCreating, std::memory_order_release);

  auto* control = reinterpret_cast<pf::Control*>(base + g.control_offset);
  std::memset(static_cast<void*>(control), 0, sizeof *control);
  pthread_mutexattr_t attr;
  pthread_mutexattr_init(&attr);
  pthread_mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED);
  pthread_mutexattr_setrobust(&attr, PTHREAD_MUTEX_ROBUST);
  const int rc = pthread_mutex_init(&control->mutex, &attr);
  pthread_mutexattr_destroy(&attr);
  if (rc != 0) throw PoolError(errno_message(fmt::format("pool {}: pthread_mutex_init", uri), rc));

  std::memset(base + g.catalog_offset, 0, g.catalog_bytes);
  auto* extents = reinterpret_cast<ExtentTable*>(base + g.extents_offset);
  ExtentAllocator::init(*extents, g.extent_capacity, g.data_offset, usable, alignment);

  impl->header = h;
  impl->header_rw = h;
  impl->control = control;
  impl->models = reinterpret_cast<pf::ModelRecord*>(base + g.models_offset);
  impl->tensors = reinterpret_cast<pf::TensorRecord*>(base + g.tensors_offset);
  impl->extents = extents;
  impl->base = base;
  impl->lay = Layout{pool_bytes,
                     alignment,
                     g.control_offset,
                     g.control_bytes,
                     g.catalog_offset,
                     g.catalog_bytes,
                     g.models_offset,
                     g.tensors_offset,
                     g.extents_offset,
                     g.data_offset,
                     usable - g.data_offset,
                     options.max_models,
                     options.max_tensors,
                     sizeof(pf::ModelRecord),
                     sizeof(pf::TensorRecord)};
  impl->extent_capacity = g.extent_capacity;
  impl->quarantined.assign(options.max_models, std::string());
  impl->reset_link_clock_if_other_boot();
  aref(h->state).store(pf::kPoolReady, std::memory_order_release);
  impl->backend = std::move(backend);
  impl->backend->bind_link_state(&control->link);
  impl->claim_slot();
  return std::unique_ptr<Pool>(new Pool(std::move(impl)));
}

std::unique_ptr<Pool> Pool::attach(std::unique_ptr<MemoryBackend> backend, PoolRole role) {
  if (!backend) throw ConfigError("Pool::attach: no backend");
  const std::string uri = backend->uri();
  auto fail = [&](std::string_view problem) -> PoolError {
    return PoolError(fmt::format("pool {}: cannot attach: {}", uri, problem));
  };
  const std::uint64_t backend_bytes = backend->size_bytes();
  const std::uint64_t backend_align = backend->alignment_bytes();
  if (backend_bytes < sizeof(pf::Header) || backend_bytes < backend_align) {
    throw fail(fmt::format("the backing object is {} bytes, too small to hold a pool header",
                           backend_bytes));
  }
  if (role == PoolRole::kWriter && !backend->maps_data()) {
    throw fail("a remote pool is read-only here: load and remove models on the pool's host");
  }
  if (role == PoolRole::kWriter && !backend->is_writable()) {
    throw fail("a writer needs a writable backend");
  }
  pf::Header h;
  {
    Mapping first = backend->map(0, backend_align, Access::kReadOnly);
    std::memcpy(&h, first.data(), sizeof h);
  }
  bool foreign = false;
  if (auto problem = header_problem(h, backend_bytes, backend_align, &foreign); !problem.empty()) {
    throw fail(problem);
  }
  const std::uint64_t state = h.state;
  if (state == pf::kPoolCreating) {
    throw fail("the pool is unsealed (state 'creating'): its creator has not finished, or died");
  }
  if (state != pf::kPoolReady) throw fail(fmt::format("unknown pool state {}", state));

  auto impl = std::make_unique<Impl>();
  impl->uri = uri;
  impl->role = role;
  // A backend without a local mapping of its data (a remote pool) maps the metadata only;
  // the data, model metadata and tile tables included, is read through read().
  impl->data_mapped = backend->maps_data();
  const std::uint64_t mapped = impl->data_mapped ? h.data_offset + h.data_bytes : h.data_offset;
  impl->whole =
      backend->map(0, mapped, role == PoolRole::kWriter ? Access::kReadWrite : Access::kReadOnly);
  std::byte* base = impl->whole.data();
  impl->base = base;
  impl->header = reinterpret_cast<const pf::Header*>(base);
  if (role == PoolRole::kWriter) {
    impl->header_rw = reinterpret_cast<pf::Header*>(base);
    impl->control = reinterpret_cast<pf::Control*>(base + h.control_offset);
  } else if (backend->is_writable()) {
    impl->control_map = backend->map(h.control_offset, h.control_bytes, Access::kReadWrite);
    impl->control = reinterpret_cast<pf::Control*>(impl->control_map.data());
  } else {
    if (impl->data_mapped) {  // a remote pool's link is the network: nothing to share
      logger().warn(
          "pool {}: opened read-only; this process's link traffic is not shared with "
          "other attachers",
          uri);
    }
    impl->private_control = std::make_unique<pf::Control>();
    impl->control = impl->private_control.get();
  }
  impl->models = const_cast<pf::ModelRecord*>(
      reinterpret_cast<const pf::ModelRecord*>(base + h.models_offset));
  impl->tensors = const_cast<pf::TensorRecord*>(
      reinterpret_cast<const pf::TensorRecord*>(base + h.tensors_offset));
  impl->extents =
      const_cast<ExtentTable*>(reinterpret_cast<const ExtentTable*>(base + h.extents_offset));
  impl->lay = Layout{h.pool_bytes,     h.alignment_bytes,    h.control_offset,     h.control_bytes,
                     h.catalog_offset, h.catalog_bytes,      h.models_offset,      h.tensors_offset,
                     h.extents_offset, h.data_offset,        h.data_bytes,         h.max_models,
                     h.max_tensors,    h.model_record_bytes, h.tensor_record_bytes};
  impl->extent_capacity = h.extent_capacity;
  // Every sealed model must validate before anything of it is trusted. One that does not
  // is quarantined: refused by name, listed as corrupted, droppable by reclaim or remove;
  // the other models stay servable.
  impl->backend = std::move(backend);  // load_model reads through it when data is not mapped
  impl->quarantined.assign(h.max_models, std::string());
  for (std::uint32_t i = 0; i < h.max_models; ++i) {
    const std::uint64_t s = aload(impl->models[i].state);
    if (s > pf::kModelFenced) {
      impl->quarantined[i] = fmt::format("model record {} has unknown state {}", i, s);
    } else {
      try {
        (void)impl->load_model(i);
      } catch (const PoolError& e) {
        impl->quarantined[i] = e.what();
      }
    }
    if (!impl->quarantined[i].empty()) {
      logger().warn("pool {}: quarantined: {}", uri, impl->quarantined[i]);
    }
  }
  if (role == PoolRole::kWriter) {
    // The free table is rebuilt from the records on every writer attach: a table corrupted
    // while no writer was attached (even one that passes its own consistency check) is
    // never used.
    typename Impl::Lock lock(*impl);
    impl->recover_locked();
  }
  impl->reset_link_clock_if_other_boot();
  impl->backend->bind_link_state(&impl->control->link);
  impl->claim_slot();
  return std::unique_ptr<Pool>(new Pool(std::move(impl)));
}

const std::string& Pool::uri() const noexcept { return impl_->uri; }
PoolRole Pool::role() const noexcept { return impl_->role; }
MemoryBackend& Pool::backend() noexcept { return *impl_->backend; }
LinkState& Pool::link_state() noexcept { return impl_->control->link; }
Pool::Layout Pool::layout() const noexcept { return impl_->lay; }

// ---------------------------------------------------------------------------------------
// Catalog changes

ModelWriter Pool::begin_model(std::string_view name) {
  Impl& im = *impl_;
  im.require_writer("add a model");
  validate_model_name(name);
  Impl::Lock lock(im);
  if (auto existing = im.slot_of(name)) {
    const pf::ModelRecord& m = im.models[*existing];
    const std::uint64_t s = aload(m.state);
    if ((s == pf::kModelLoading || s == pf::kModelFenced) && !im.owner_alive(m)) {
      im.free_model_locked(*existing);  // its loader died: take the name back
    } else {
      throw PoolError(fmt::format("{}: a model named '{}' already exists ({})", im.where(), name,
                                  s == pf::kModelSealed ? "sealed" : "being loaded or removed"));
    }
  }
  for (std::uint32_t i = 0; i < im.lay.max_models; ++i) {
    pf::ModelRecord& m = im.models[i];
    if (aload(m.state) != pf::kModelEmpty) continue;
    std::memset(reinterpret_cast<std::byte*>(&m) + sizeof(std::uint64_t), 0,
                sizeof(pf::ModelRecord) - sizeof(std::uint64_t));
    m.owner_pid = im.my_pid;
    m.owner_pid_ns = im.my_pid_ns;
    m.owner_start_ticks = im.my_start_ticks;
    // A new epoch for every record handed out: a loader that lost its record (force-removed,
    // reclaimed) can never mistake a later record in the same slot for its own.
    m.epoch = static_cast<std::uint32_t>(aload(im.header->generation)) + 1;
    std::memcpy(m.name, name.data(), name.size());
    aref(m.state).store(pf::kModelLoading, std::memory_order_release);
    im.bump_generation();
    ModelWriter writer(*this, i, std::string(name));
    writer.epoch_ = m.epoch;
    return writer;
  }
  throw OutOfMemory(
      fmt::format("{}: the catalog holds {} models and is full", im.where(), im.lay.max_models));
}

void Pool::remove_model(std::string_view name, bool force) {
  Impl& im = *impl_;
  im.require_writer("remove a model");
  Impl::Lock lock(im);
  auto slot = im.slot_of(name);
  if (!slot) throw PoolError(fmt::format("{}: no model named '{}'", im.where(), name));
  pf::ModelRecord& m = im.models[*slot];
  const std::uint64_t state = aload(m.state);
  const bool loading = state == pf::kModelLoading || state == pf::kModelFenced;
  if (loading && im.owner_alive(m)) {
    if (!force) {
      throw PoolError(fmt::format("{}: model '{}' is being loaded by live process {}", im.where(),
                                  name, m.owner_pid));
    }
    // Fence the loader: its extents stay reserved until it notices (before its next write)
    // or dies, so they are never handed to another loader while it may still write them.
    aref(m.state).store(pf::kModelFenced, std::memory_order_seq_cst);
    im.bump_generation();
    return;
  }
  aref(m.state).store(pf::kModelRemoving, std::memory_order_seq_cst);
  const auto users = im.users_of(*slot);
  if (!users.empty() && !force) {
    aref(m.state).store(state, std::memory_order_seq_cst);
    throw PoolError(fmt::format("{}: model '{}' is in use by {} live process(es), e.g. pid {}",
                                im.where(), name, users.size(), users.front()));
  }
  im.free_model_locked(*slot);
}

std::uint32_t Pool::reclaim_abandoned() {
  Impl& im = *impl_;
  im.require_writer("reclaim abandoned models");
  Impl::Lock lock(im);
  std::uint32_t n = 0;
  for (std::uint32_t i = 0; i < im.lay.max_models; ++i) {
    pf::ModelRecord& m = im.models[i];
    const std::uint64_t s = aload(m.state);
    if (s == pf::kModelEmpty) continue;
    std::string why;
    if ((s == pf::kModelLoading || s == pf::kModelFenced) && !im.owner_alive(m)) {
      why = fmt::format("its loader (pid {}) died", m.owner_pid);
    } else if (s == pf::kModelRemoving) {
      why = "a removal was interrupted";  // removals run under the lock: its remover died
    } else if (s > pf::kModelFenced) {
      why = fmt::format("its record has unknown state {}", s);
    } else if (s == pf::kModelSealed) {
      try {
        (void)im.load_model(i);
      } catch (const PoolError& e) {
        why = e.what();
      }
    }
    if (why.empty()) continue;
    logger().info("{}: reclaiming model record {} ('{}'): {}", im.where(), i,
                  read_name(m.name).value_or("?"), why);
    im.free_model_locked(i);
    ++n;
  }
  return n;
}

std::vector<ModelEntry> Pool::list_models() const {
  const Impl& im = *impl_;
  std::vector<ModelEntry> out;
  for (std::uint32_t i = 0; i < im.lay.max_models; ++i) {
    const pf::ModelRecord& m = im.models[i];
    const std::uint64_t s = aload(m.state);
    if (s == pf::kModelEmpty) continue;
    ModelEntry e;
    e.name = read_name(m.name).value_or("?");
    const bool quarantined = i < im.quarantined.size() && !im.quarantined[i].empty();
    e.state = quarantined || s > pf::kModelFenced ? "corrupted"
              : s == pf::kModelLoading            ? "loading"
              : s == pf::kModelSealed             ? "sealed"
              : s == pf::kModelFenced             ? "fenced"
                                                  : "removing";
    e.owner_pid = m.owner_pid;
    e.owner_alive = im.owner_alive(m);
    e.tensor_count = m.tensor_count;
    e.bytes = m.tensor_bytes;
    if (quarantined) e.problem = im.quarantined[i];
    out.push_back(std::move(e));
  }
  return out;
}

std::vector<std::string> Pool::model_names() const {
  std::vector<std::string> names;
  for (const auto& e : list_models()) {
    if (e.state == "sealed") names.push_back(e.name);
  }
  return names;
}

std::shared_ptr<const ModelView> Pool::model(std::string_view name) {
  Impl& im = *impl_;
  auto slot = im.slot_of(name);
  if (!slot) {
    std::string known;
    for (const auto& n : model_names()) known += (known.empty() ? "" : ", ") + n;
    throw PoolError(fmt::format("{}: no model named '{}' (sealed models: {})", im.where(), name,
                                known.empty() ? "none" : known));
  }
  const pf::ModelRecord& m = im.models[*slot];
  const std::uint64_t s = aload(m.state);
  if (*slot < im.quarantined.size() && !im.quarantined[*slot].empty()) {
    throw PoolError(
        fmt::format("{}: model '{}' is quarantined: {}", im.where(), name, im.quarantined[*slot]));
  }
  if (s == pf::kModelLoading) {
    const bool alive = im.owner_alive(m);
    throw PoolError(fmt::format(
        "{}: model '{}' is unsealed: {}", im.where(), name,
        alive ? fmt::format("process {} is still loading it", m.owner_pid)
              : fmt::format("its loader (pid {}) died before sealing it; `xlshare pool reclaim` "
                            "frees it",
                            m.owner_pid)));
  }
  if (s != pf::kModelSealed) {
    throw PoolError(fmt::format("{}: model '{}' is being removed", im.where(), name));
  }
  // Announce the use before the final check, so a concurrent remove sees one or the other.
  if (im.my_slot >= 0) {
    aref(im.control->slots[im.my_slot].models_in_use)
        .fetch_or(std::uint64_t{1} << *slot, std::memory_order_seq_cst);
  }
  auto view = im.load_model(*slot);
  if (!view) {
    throw PoolError(fmt::format("{}: model '{}' was removed while attaching", im.where(), name));
  }
  return view;
}

TensorInfo Pool::find_tensor(std::string_view qualified_name) {
  const auto slash = qualified_name.find('/');
  if (slash == std::string_view::npos) {
    throw PoolError(fmt::format("{}: tensor name '{}' is not of the form model/tensor",
                                impl_->where(), qualified_name));
  }
  auto m = model(qualified_name.substr(0, slash));
  return m->at(qualified_name.substr(slash + 1));
}

ReadStatus Pool::read(const TensorInfo& tensor, std::uint64_t offset_bytes,
                      std::span<std::byte> dst) noexcept {
  if (offset_bytes > tensor.size_bytes || dst.size() > tensor.size_bytes - offset_bytes) {
    return ReadStatus::kOutOfRange;
  }
  return impl_->backend->read(tensor.offset_bytes + offset_bytes, dst);
}

std::span<const std::byte> Pool::view(const TensorInfo& tensor) const noexcept {
  if (!impl_->data_mapped || !impl_->in_data(tensor.offset_bytes, tensor.size_bytes)) return {};
  return {impl_->base + tensor.offset_bytes, tensor.size_bytes};
}

bool Pool::verify(const TensorInfo& tensor) const noexcept {
  const auto bytes = view(tensor);
  return bytes.size() == tensor.size_bytes && checksum64(bytes) == tensor.checksum;
}

PoolStats Pool::stats(bool read_mapping) const {
  const Impl& im = *impl_;
  PoolStats s;
  s.uri = im.uri;
  s.pool_bytes = im.lay.pool_bytes;
  s.data_bytes = im.lay.data_bytes;
  s.generation = aload(im.header->generation);
  for (std::uint32_t i = 0; i < im.lay.max_models; ++i) {
    const std::uint64_t st = aload(im.models[i].state);
    if (st == pf::kModelSealed) {
      ++s.models_sealed;
      s.tensors += im.models[i].tensor_count;
    } else if (st == pf::kModelLoading) {
      ++s.models_loading;
    }
  }
  for (std::uint32_t i = 0; i < pf::kAttachSlots; ++i) {
    const auto& slot = im.control->slots[i];
    const std::int32_t pid = aload(slot.pid);
    if (pid > 0 && process_alive(pid, aload(slot.start_ticks), aload(slot.pid_ns)))
      ++s.attached_processes;
  }
  // Readers never validated the allocator's table (only writers use it): read it only when
  // its shape matches the header, so a corrupted table cannot send stats() out of bounds.
  const ExtentTable& t = *im.extents;
  const std::uint64_t capacity = aload(t.capacity), count = aload(t.count);
  if (capacity == im.extent_capacity && count <= capacity)
    s.extents = ExtentAllocator(*im.extents).stats();
  LinkState& link = im.control->link;
  s.link_bytes = link_field(link.bytes_total).load();
  s.link_transfers = link_field(link.transfers_total).load();
  s.link_busy_ns = link_field(link.busy_ns_total).load();
  s.link_faults = link_field(link.faults_total).load();
  s.link_clock_clamps = link_field(link.clock_clamps_total).load();
  // (A remote pool maps only a copy of its catalog: nothing to say about its pages.)
  if (read_mapping && im.data_mapped)
    mapping_page_sizes(im.base, s.page_bytes, s.huge_mapped_bytes);
  return s;
}

}  // namespace xlshare
