// Pool: one copy of one or more models' weights in a MemoryBackend, shared by every worker
// process that attaches to it.
//
// Layout (every offset a multiple of the backend's alignment; nothing inside is a pointer):
//
//   [header]   magic "XLSPOOL", format version, sizes and offsets of every region below,
//              creator uid, header checksum (XXH3 over the immutable part); then the pool
//              state (creating / ready) and the catalog generation, both atomics.
//   [control]  the link/attach area: a process-shared robust mutex guarding the catalog and
//              allocator, the LinkState of the emulated link, and one AttachSlot per
//              attached process. The only region attachers map writable.
//   [catalog]  ModelRecords (name, state loading / sealed / removing, loader pid, metadata
//              extent, record checksum), TensorRecords (model, name, dtype, shape, offset,
//              bytes, XXH3 of the contents, record checksum) and the extent allocator's
//              free list.
//   [data]     tensor bytes and model metadata, in extents.
//
// A loader (Pool::create, or Pool::attach with PoolRole::kWriter) maps the whole pool
// read-write, writes a model's tensors through a ModelWriter and seals the model: it
// computes the checksums and publishes the record with release ordering. Readers (workers)
// map header, catalog and data read-only and the control region read-write, so they can
// share link accounting and announce themselves, but cannot write a weight. A reader
// verifies magic, version, header checksum, pool size, every sealed model's records and
// every tensor's extent before it trusts an offset; a model that is not sealed (still
// loading, or its loader died) is refused by name. `reclaim_abandoned()` frees what dead
// loaders left behind.
//
// Threading: a Pool is safe to use from many threads. read() and view() are the hot path
// and never throw. Changing the catalog takes the pool's robust mutex.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <nlohmann/json_fwd.hpp>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "xlshare/dtype.hpp"
#include "xlshare/memory/backend_options.hpp"
#include "xlshare/memory/extent_allocator.hpp"
#include "xlshare/memory/link_state.hpp"
#include "xlshare/memory/memory_backend.hpp"

namespace xlshare {

/// Layout limits chosen when a pool is created.
struct PoolOptions {
  /// Models the catalog can hold (at most 64). Default 16.
  std::uint32_t max_models = 16;
  /// Tensors the catalog can hold, over all models. Default 4096.
  std::uint32_t max_tensors = 4096;
  /// Alignment of every extent in the data area; raised to the backend's alignment.
  /// Default 4096.
  std::uint64_t data_alignment = 4096;
};

/// What an attacher may do.
enum class PoolRole : std::uint8_t {
  kReader,  ///< a worker: data read-only, control region writable
  kWriter,  ///< a loader: may add and remove models
};

/// Maximum tensor rank.
inline constexpr std::size_t kMaxTensorDims = 4;

/// One tensor of a sealed model, copied out of the catalog and validated.
struct TensorInfo {
  std::uint32_t id = 0;  ///< catalog slot: unique in the pool, stable while the model lives
  std::string name;      ///< tensor name within its model ("blk.0.attn_q.weight")
  DType dtype = DType::kF32;
  std::uint32_t n_dims = 0;
  std::array<std::uint64_t, kMaxTensorDims> shape{};  ///< shape[0] is the fastest-varying
  std::uint64_t offset_bytes = 0;  ///< absolute offset of the bytes in the backend
  std::uint64_t size_bytes = 0;
  std::uint64_t checksum = 0;  ///< XXH3-64 of the bytes
  /// The TensorTiling, fixed when the model was sealed: the bytes are cut into tiles of
  /// `tile_bytes` (whole rows; the last tile may be shorter), each with its XXH3-64 in
  /// `tile_checksums()` (entries [tile_first, tile_first + tile_count) of the model's
  /// table, shared by every copy of the info). Pieces of the cache and in-place
  /// verification are made of whole tiles, so nothing at attach hashes the model.
  std::uint64_t tile_bytes = 0;
  std::shared_ptr<const std::vector<std::uint64_t>> tile_table;
  std::size_t tile_first = 0, tile_count = 0;
  std::span<const std::uint64_t> tile_checksums() const noexcept {
    if (!tile_table || tile_first > tile_table->size() ||
        tile_count > tile_table->size() - tile_first)
      return {};
    return std::span<const std::uint64_t>(*tile_table).subspan(tile_first, tile_count);
  }
  std::uint64_t n_elements() const noexcept;
  /// Bytes of one row (shape[0] elements; the whole tensor for one dimension).
  std::uint64_t row_bytes() const noexcept;
  /// Rows (the product of shape[1..]; 1 for one dimension).
  std::uint64_t rows() const noexcept;
};

/// The TensorTiling's target tile size: tiles hold as many whole rows as fit (at least one).
/// Small enough that verifying the tiles of a few embedding rows touches little beyond
/// them, large enough that the table is 1/8192 of the model.
inline constexpr std::uint64_t kTileTargetBytes = 64 * 1024;
/// The tile size the TensorTiling gives a tensor of this dtype and shape (size_bytes when it
/// has one dimension or its rows are not whole blocks).
std::uint64_t tile_bytes_for(DType dtype, std::uint32_t n_dims,
                             std::span<const std::uint64_t> shape,
                             std::uint64_t size_bytes) noexcept;

/// One sealed model: its tensors (in load order) and its metadata blob.
class ModelView {
 public:
  const std::string& name() const noexcept { return name_; }
  std::uint32_t slot() const noexcept { return slot_; }
  std::span<const TensorInfo> tensors() const noexcept { return tensors_; }
  /// The tensor called `name`, or nullptr.
  const TensorInfo* find(std::string_view name) const noexcept;
  /// The tensor called `name`. @throws PoolError naming the model and the tensor.
  const TensorInfo& at(std::string_view name) const;
  /// The metadata the loader stored (JSON by convention: config and schedule).
  const std::string& metadata() const noexcept { return metadata_; }
  std::uint64_t total_bytes() const noexcept { return total_bytes_; }

 private:
  friend class Pool;
  std::string name_;
  std::uint32_t slot_ = 0;
  std::vector<TensorInfo> tensors_;
  std::string metadata_;
  std::uint64_t total_bytes_ = 0;
};

/// A model's state in the catalog, as listed by Pool::list_models().
struct ModelEntry {
  std::string name;
  /// "loading", "sealed", "removing", "fenced" (force-removed while its loader lives; freed
  /// when the loader notices or dies) or "corrupted" (quarantined; see `problem`)
  std::string state;
  std::string problem;  ///< why a corrupted record was quarantined, else empty
  std::int32_t owner_pid = 0;
  bool owner_alive = false;
  std::uint32_t tensor_count = 0;
  std::uint64_t bytes = 0;
};

/// A snapshot of a pool.
struct PoolStats {
  std::string uri;
  std::uint64_t pool_bytes = 0;
  std::uint64_t data_bytes = 0;
  std::uint64_t generation = 0;
  std::uint32_t models_sealed = 0;
  std::uint32_t models_loading = 0;
  std::uint32_t tensors = 0;
  std::uint32_t attached_processes = 0;
  ExtentStats extents;
  std::uint64_t link_bytes = 0;
  std::uint64_t link_transfers = 0;
  std::uint64_t link_busy_ns = 0;
  std::uint64_t link_faults = 0;
  std::uint64_t link_clock_clamps = 0;  ///< link times from another clock, clamped
  /// How this process maps the pool, from /proc/self/smaps: the kernel's page size for the
  /// mapping and how many of its resident bytes are mapped with huge (2 MiB) pages
  /// (0/0 where it cannot be read, or not asked for: Pool::stats(true)). Huge pages need DAX
  /// alignment, or shmem THP enabled.
  std::uint64_t page_bytes = 0;
  std::uint64_t huge_mapped_bytes = 0;
  std::string to_json() const;
};
/// Nested as `xlshare pool info --json` prints it: extents, link and mapping grouped.
void to_json(nlohmann::json& j, const PoolStats& s);

class Pool;

/// Writes one model into a pool, then seals it. Destroying an unsealed writer abandons
/// the model and frees its extents. Not thread-safe; one writer per model.
class ModelWriter {
 public:
  ModelWriter(ModelWriter&& other) noexcept;
  ModelWriter& operator=(ModelWriter&&) = delete;
  ~ModelWriter();

  /// Allocates a tensor and returns its bytes for the caller to fill.
  /// @throws ConfigError for a bad name, dtype or shape; OutOfMemory when the pool or its
  /// catalog is full.
  std::span<std::byte> add_tensor(std::string_view name, DType dtype,
                                  std::span<const std::uint64_t> shape);
  /// Stores the model's metadata (replacing earlier metadata). @throws OutOfMemory.
  void set_metadata(std::string_view metadata);
  /// Computes every tensor's checksum and publishes the model. After this the writer is
  /// empty. @throws PoolError if the model is no longer the writer's.
  void seal();
  /// Frees everything written so far; the model disappears.
  void abandon() noexcept;

  const std::string& model_name() const noexcept { return name_; }
  std::uint32_t tensor_count() const noexcept {
    return static_cast<std::uint32_t>(tensor_slots_.size());
  }

 private:
  friend class Pool;
  ModelWriter(Pool& pool, std::uint32_t slot, std::string name);
  void check_owner_locked();
  Pool* pool_;
  std::uint32_t slot_;
  std::uint32_t epoch_ = 0;
  std::string name_;
  std::vector<std::uint32_t> tensor_slots_;
  std::vector<std::string> tensor_names_;
};

class Pool {
 public:
  /// Lays out a new pool in `backend` (writable, freshly created, all zero).
  /// @throws ConfigError for bad options, PoolError when the backend is too small.
  static std::unique_ptr<Pool> create(std::unique_ptr<MemoryBackend> backend,
                                      const PoolOptions& options = {});
  /// Attaches to an existing pool, validating it first.
  /// @throws PoolError naming the pool and the problem.
  static std::unique_ptr<Pool> attach(std::unique_ptr<MemoryBackend> backend,
                                      PoolRole role = PoolRole::kReader);

  ~Pool();
  Pool(const Pool&) = delete;
  Pool& operator=(const Pool&) = delete;

  const std::string& uri() const noexcept;
  PoolRole role() const noexcept;
  MemoryBackend& backend() noexcept;

  /// Starts writing a model called `name` ([A-Za-z0-9._-], 1..63 bytes).
  /// @throws PoolError if this pool was attached as a reader or the name is taken,
  /// OutOfMemory when the catalog is full.
  ModelWriter begin_model(std::string_view name);
  /// Removes a sealed, abandoned or corrupted model and frees its extents. Refused while a
  /// live process has it in use, or a live loader is still writing it, unless `force`.
  /// Forcing the removal of a model being loaded fences its loader: the record and extents
  /// stay reserved until that loader stops (at its next write) or dies. Forcing the removal
  /// of a model that readers use frees its bytes under them: once a new load reuses them
  /// they would compute on another model's bytes, which only checksum verification (on by
  /// default, and the Scrubber) catches. @throws PoolError.
  void remove_model(std::string_view name, bool force = false);
  /// Frees models whose loader died before sealing them, removals that were interrupted and
  /// records that fail validation (quarantined); returns how many.
  std::uint32_t reclaim_abandoned();

  /// Every model in the catalog, in any state.
  std::vector<ModelEntry> list_models() const;
  /// Names of the sealed models.
  std::vector<std::string> model_names() const;
  /// A sealed model, validated, and recorded as in use by this process (so that
  /// remove_model refuses while it lives). @throws PoolError naming the pool, the model and
  /// the problem (absent, still loading, loader died, corrupted record).
  std::shared_ptr<const ModelView> model(std::string_view name);
  /// A tensor by "model/tensor". @throws PoolError.
  TensorInfo find_tensor(std::string_view qualified_name);

  /// Copies [offset, offset + dst.size()) of `tensor` over the backend's read path (the
  /// emulated link when the backend is a CxlEmulator). Never throws.
  ReadStatus read(const TensorInfo& tensor, std::uint64_t offset_bytes,
                  std::span<std::byte> dst) noexcept;
  /// The tensor's bytes in this process's read-only mapping (no link emulation).
  std::span<const std::byte> view(const TensorInfo& tensor) const noexcept;
  /// Whether the tensor's bytes in the pool still match its catalog checksum.
  bool verify(const TensorInfo& tensor) const noexcept;

  /// `read_mapping`: also read this process's page sizes for the pool from /proc/self/smaps
  /// (page_bytes, huge_mapped_bytes; a few ms, so only on request).
  PoolStats stats(bool read_mapping = false) const;
  /// The shared link of this pool.
  LinkState& link_state() noexcept;

  /// Where the regions lie, for tools and tests.
  struct Layout {
    std::uint64_t pool_bytes, alignment_bytes, control_offset, control_bytes, catalog_offset,
        catalog_bytes, models_offset, tensors_offset, extents_offset, data_offset, data_bytes;
    std::uint32_t max_models, max_tensors, model_record_bytes, tensor_record_bytes;
  };
  Layout layout() const noexcept;

  /// The current on-pool format version.
  static constexpr std::uint32_t kFormatVersion = 2;

  class Impl;

 private:
  friend class ModelWriter;
  explicit Pool(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

/// Whether process `pid`, started at `start_ticks` (0: any), of the PID namespace with inode
/// `pid_ns` (0: unknown, taken as this one), is alive. A process of another PID namespace
/// cannot be looked up from here: it counts as alive.
bool process_alive(std::int32_t pid, std::uint64_t start_ticks, std::uint32_t pid_ns = 0) noexcept;
/// The inode of this process's PID namespace (/proc/self/ns/pid), or 0.
std::uint32_t pid_namespace_inode() noexcept;
/// How long a catalog change waits for the pool's lock before it fails with a message naming
/// the holder (default 10 000 ms; process-wide).
void set_pool_lock_timeout_ms(std::uint64_t timeout_ms) noexcept;
std::uint64_t pool_lock_timeout_ms() noexcept;

/// Creates a pool crash-safely: the object is created, sized and laid out under a temporary
/// name and renamed into place only when its header is complete, so a creator killed at any
/// point leaves no half-made pool under `uri` (shm, numa and file backends; a devdax device
/// and an object of a registered scheme are laid out in place, so a creator killed there
/// leaves a blank or half-made object; a registered one is removed when the pool cannot be
/// made in it). Temporary objects of dead creators of the
/// same name are removed first. Returns the new pool attached as a writer.
/// @throws ConfigError, BackendError (e.g. `uri` exists), PoolError.
std::unique_ptr<Pool> create_pool(std::string_view uri, std::uint64_t size_bytes,
                                  const PoolOptions& options = {},
                                  const BackendOptions& backend_options = {});

/// Removes the pool at `uri` (`xlshare pool rm`). Only an object that validates as an xlshare
/// pool (magic, version) is removed, `force` or not. Without `force` it is refused whenever
/// attachment cannot be ruled out: a live (or undecidable) process in an attach slot, a live
/// loader, or a header too corrupted to find the attach slots. Never attaches (so a pool
/// whose attach slots are all taken is judged, not mistaken for an unreadable object).
/// Temporary objects that creators of the same name left when they were killed mid-create
/// are removed too (only those: dead creators, exactly our naming pattern).
/// @throws PoolError naming the pool and the reason, BackendError.
void remove_pool(std::string_view uri, bool force = false);
/// /proc/PID/stat's start time of `pid` (clock ticks since boot), or 0.
std::uint64_t process_start_ticks(std::int32_t pid) noexcept;

}  // namespace xlshare
