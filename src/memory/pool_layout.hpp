// The on-pool structures of format version 2. Private to src/ (and to tests that corrupt
// pools on purpose). Everything is plain data at fixed offsets; fields written after
// creation by more than one process are accessed through std::atomic_ref.
#pragma once

#include <pthread.h>

#include <cstddef>
#include <cstdint>

#include "xlshare/memory/link_state.hpp"

namespace xlshare::pool_format {

inline constexpr char kMagic[8] = {'X', 'L', 'S', 'P', 'O', 'O', 'L', '\0'};
inline constexpr std::uint32_t kMaxModels = 64;  // one bit each in AttachSlot::models_in_use
inline constexpr std::uint32_t kAttachSlots = 128;
inline constexpr std::size_t kModelNameBytes = 64;    // including the terminating NUL
inline constexpr std::size_t kTensorNameBytes = 112;  // including the terminating NUL

enum PoolState : std::uint64_t { kPoolCreating = 0, kPoolReady = 1 };
enum ModelState : std::uint64_t {
  kModelEmpty = 0,
  kModelLoading = 1,
  kModelSealed = 2,
  kModelRemoving = 3,
  // Force-removed while its loader was alive: the record and its extents stay reserved
  // until the loader notices (it checks before every write) and frees them, or dies and
  // `reclaim` frees them. No other loader can be handed those extents meanwhile.
  kModelFenced = 4,
};

// Process identities everywhere are (pid, pid-namespace inode, start ticks): a pid alone
// means nothing across PID namespaces.

struct Header {
  char magic[8];
  std::uint32_t version;
  std::uint32_t header_struct_bytes;
  std::uint64_t pool_bytes;
  std::uint64_t alignment_bytes;
  std::uint64_t control_offset, control_bytes;
  std::uint64_t catalog_offset, catalog_bytes;
  std::uint64_t models_offset, tensors_offset, extents_offset;
  std::uint32_t max_models, max_tensors;
  std::uint32_t model_record_bytes, tensor_record_bytes;
  std::uint64_t extent_capacity;
  std::uint64_t data_offset, data_bytes;
  std::uint32_t creator_uid, reserved0;
  std::uint64_t created_unix_ns;
  std::uint64_t header_checksum;  // XXH3 of every byte above this field
  // Mutable, outside the checksum:
  std::uint64_t state;       // PoolState
  std::uint64_t generation;  // bumped on every catalog change
};

struct AttachSlot {
  std::int32_t pid;      // 0: free
  std::uint32_t pid_ns;  // inode of the holder's PID namespace (0: unknown, written by v1)
  std::uint64_t start_ticks;
  std::uint64_t models_in_use;  // bit i: model slot i
  std::uint64_t attached_unix_ns;
};

struct Control {
  pthread_mutex_t mutex;  // process-shared, robust
  // Who holds `mutex` (written by the holder right after taking it, cleared before release),
  // so that a waiter that times out can name the holder. Fits in the mutex's cache line.
  std::int32_t lock_holder_pid;
  std::uint32_t lock_holder_ns;
  std::uint64_t lock_holder_start_ticks;
  alignas(64) LinkState link;
  alignas(64) AttachSlot slots[kAttachSlots];
};

struct ModelRecord {
  std::uint64_t state;  // ModelState
  std::int32_t owner_pid;
  std::uint32_t owner_pid_ns;  // inode of the loader's PID namespace (0: unknown)
  std::uint64_t owner_start_ticks;
  // Covered by record_checksum once sealed:
  char name[kModelNameBytes];
  std::uint32_t tensor_count;
  std::uint32_t epoch;  // fences loaders: set at begin_model, checked before every write
  std::uint64_t tensor_bytes;
  std::uint64_t metadata_offset, metadata_bytes, metadata_checksum;
  // The TensorTiling's checksums: for each tensor in ordinal order, one XXH3-64 per tile
  // (TensorRecord::tile_bytes). Written at seal.
  std::uint64_t tiles_offset, tiles_bytes, tiles_checksum;
  std::uint64_t record_checksum;
};

struct TensorRecord {
  std::uint32_t in_use;      // 0 free, 1 used
  std::uint32_t model_slot;  // which ModelRecord
  // Covered by record_checksum once the model is sealed:
  char name[kTensorNameBytes];
  std::uint32_t dtype;
  std::uint32_t n_dims;
  std::uint64_t shape[4];
  std::uint64_t offset_bytes, size_bytes, checksum;
  std::uint32_t model_slot_copy;
  std::uint32_t ordinal;     // position within the model
  std::uint64_t tile_bytes;  // the TensorTiling: whole rows, the last tile may be shorter
  std::uint64_t record_checksum;
};

}  // namespace xlshare::pool_format
