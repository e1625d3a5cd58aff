// Pool's private parts, shared by the files that implement it: the on-pool helpers,
// Pool::Impl (the attached state), the catalog lock and the layout checks. Private to src/.
#pragma once

#include <fmt/format.h>
#include <pthread.h>
#include <time.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "memory/pool_layout.hpp"
#include "xlshare/error.hpp"
#include "xlshare/memory/checksum.hpp"
#include "xlshare/memory/pool.hpp"

namespace xlshare {

namespace pf = pool_format;

namespace pool_detail {

static_assert(sizeof(pf::Header) % 8 == 0);
static_assert(sizeof(pf::ModelRecord) % 8 == 0);
static_assert(sizeof(pf::TensorRecord) % 8 == 0);

template <typename T>
inline std::atomic_ref<T> aref(T& v) noexcept {
  return std::atomic_ref<T>(v);
}
template <typename T>
inline T aload(const T& v, std::memory_order order = std::memory_order_acquire) noexcept {
  return std::atomic_ref<T>(const_cast<T&>(v)).load(order);
}

inline bool is_pow2(std::uint64_t v) { return v != 0 && (v & (v - 1)) == 0; }
inline std::uint64_t round_up(std::uint64_t v, std::uint64_t a) { return (v + a - 1) / a * a; }

inline std::uint64_t unix_ns() {
  return static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                        std::chrono::system_clock::now().time_since_epoch())
                                        .count());
}

inline std::uint64_t header_checksum(const pf::Header& h) {
  return checksum64(&h, offsetof(pf::Header, header_checksum));
}
inline std::uint64_t model_record_checksum(const pf::ModelRecord& r) {
  constexpr std::size_t begin = offsetof(pf::ModelRecord, name);
  constexpr std::size_t end = offsetof(pf::ModelRecord, record_checksum);
  return checksum64(reinterpret_cast<const std::byte*>(&r) + begin, end - begin);
}
inline std::uint64_t tensor_record_checksum(const pf::TensorRecord& r) {
  constexpr std::size_t begin = offsetof(pf::TensorRecord, name);
  constexpr std::size_t end = offsetof(pf::TensorRecord, record_checksum);
  return checksum64(reinterpret_cast<const std::byte*>(&r) + begin, end - begin);
}

// A fixed-size name field holds a NUL-terminated string.
template <std::size_t N>
inline std::optional<std::string> read_name(const char (&field)[N]) {
  const void* nul = std::memchr(field, '\0', N);
  if (nul == nullptr) return std::nullopt;
  return std::string(field, static_cast<const char*>(nul));
}

inline void validate_model_name(std::string_view name) {
  if (name.empty() || name.size() >= pf::kModelNameBytes) {
    throw ConfigError(
        fmt::format("model name '{}' must be 1..{} bytes", name, pf::kModelNameBytes - 1));
  }
  for (char c : name) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '.' || c == '_' || c == '-';
    if (!ok) {
      throw ConfigError(
          fmt::format("model name '{}' has a character outside [A-Za-z0-9._-]", name));
    }
  }
  if (name == "." || name == "..")
    throw ConfigError(fmt::format("model name '{}' is reserved", name));
}

inline void validate_tensor_name(std::string_view name) {
  if (name.empty() || name.size() >= pf::kTensorNameBytes) {
    throw ConfigError(
        fmt::format("tensor name '{}' must be 1..{} bytes", name, pf::kTensorNameBytes - 1));
  }
  for (char c : name) {
    if (static_cast<unsigned char>(c) < 0x21 || static_cast<unsigned char>(c) > 0x7e) {
      throw ConfigError(fmt::format("tensor name '{}' has a space or non-printable byte", name));
    }
  }
}

// "pid N (stopped)", "pid N of another PID namespace", …: for messages naming a holder.
std::string describe_process(std::int32_t pid, std::uint32_t pid_ns);

// The smaps entry of the mapping at `base`: its KernelPageSize, and the bytes of it mapped
// with PMD-sized pages (ShmemPmdMapped, FilePmdMapped, AnonHugePages). Zero when unreadable.
void mapping_page_sizes(const void* base, std::uint64_t& page_bytes,
                        std::uint64_t& huge_bytes) noexcept;

// XXH3 of this boot's id: link times taken on another boot mean nothing now.
std::uint64_t boot_id_hash() noexcept;

// Where create() puts each region for a given alignment and capacity.
struct Geometry {
  std::uint64_t alignment, control_offset, control_bytes, catalog_offset, catalog_bytes,
      models_offset, tensors_offset, extents_offset, extent_capacity, data_offset;
};

Geometry plan_geometry(std::uint64_t alignment, std::uint32_t max_models,
                       std::uint32_t max_tensors);

// Why `h` is not the header of a usable pool in a backend of `backend_bytes`, or empty.
// `foreign` is set when the bytes are not an xlshare pool at all (magic, version).
std::string header_problem(const pf::Header& h, std::uint64_t backend_bytes,
                           std::uint64_t backend_align, bool* foreign);

}  // namespace pool_detail

using namespace pool_detail;

// ---------------------------------------------------------------------------------------
// Pool::Impl

class Pool::Impl {
 public:
  std::unique_ptr<MemoryBackend> backend;
  PoolRole role = PoolRole::kReader;
  std::string uri;
  Mapping whole;                                 // the whole pool: RW for writers, RO for readers
  Mapping control_map;                           // readers: the control region, RW
  std::unique_ptr<pf::Control> private_control;  // readers of a read-only backend
  const pf::Header* header = nullptr;
  pf::Header* header_rw = nullptr;  // writers only
  pf::Control* control = nullptr;
  pf::ModelRecord* models = nullptr;
  pf::TensorRecord* tensors = nullptr;
  ExtentTable* extents = nullptr;
  std::byte* base = nullptr;
  // Whether `whole` covers the data area. A remote backend maps the metadata only (header,
  // control and catalog, a copy it received); its data is read through backend->read().
  bool data_mapped = true;
  Layout lay{};
  std::uint64_t extent_capacity = 0;  // from the validated header
  int my_slot = -1;
  std::int32_t my_pid = 0;
  std::uint32_t my_pid_ns = 0;
  std::uint64_t my_start_ticks = 0;
  std::uint32_t tensor_hint = 0;
  // Sealed models found corrupted at attach, by slot, with the reason: they are refused by
  // name while every other model stays servable, and `reclaim` / `remove_model` drop them.
  std::vector<std::string> quarantined;

  Impl()
      : my_pid(static_cast<std::int32_t>(::getpid())),
        my_pid_ns(pid_namespace_inode()),
        my_start_ticks(process_start_ticks(my_pid)) {}

  ~Impl() { release_slot(); }

  std::string where() const { return fmt::format("pool {}", uri); }

  // -- attach slots -------------------------------------------------------------------
  void claim_slot();

  void release_slot() noexcept;

  // Live processes other than this one with model `slot` in use.
  std::vector<std::int32_t> users_of(std::uint32_t slot) const;

  // -- the robust mutex -----------------------------------------------------------------
  // Waits at most pool_lock_timeout_ms(): a holder that is stopped (SIGSTOP, a debugger) or
  // stuck would otherwise block every loader silently. The holder writes its identity next
  // to the mutex so the message can name it.
  class Lock {
   public:
    explicit Lock(Impl& impl);
    ~Lock();
    Lock(const Lock&) = delete;
    Lock& operator=(const Lock&) = delete;

   private:
    Impl& impl_;
  };

  void require_writer(std::string_view what) const {
    if (role != PoolRole::kWriter) {
      throw PoolError(fmt::format("{}: cannot {}: attached as a reader", where(), what));
    }
  }

  void bump_generation() noexcept {
    aref(header_rw->generation).fetch_add(1, std::memory_order_acq_rel);
  }

  // -- extents ------------------------------------------------------------------------
  // The free table is derived state: the catalog's records say what is allocated. It is
  // rebuilt from them on every writer attach and whenever it fails its consistency check,
  // and every allocation is checked against the records before it is handed out, so a
  // corrupted table can never give a loader the bytes of a live model.

  // Every extent a record of the catalog holds, in range, sorted and merged (a corrupted
  // record that overlaps another keeps both reserved: nothing is freed on a guess).
  std::vector<FreeExtent> live_extents_locked() const;

  bool overlaps_live_extent_locked(std::uint64_t offset, std::uint64_t bytes) const;

  void rebuild_extents_locked();

  // An extent for a new tensor or metadata, never one that a record already holds.
  std::optional<std::uint64_t> allocate_locked(std::uint64_t bytes);

  // Empties model `slot`'s records and returns their extents to the free table. The
  // records are not trusted (the model may be a corrupted one): the table is rebuilt from
  // the records that remain. Caller holds the lock.
  void free_model_locked(std::uint32_t slot);

  // After a process died holding the lock, and on every writer attach: drop orphaned
  // records and rebuild the free list from what the records say is allocated.
  void recover_locked();

  // Link times are CLOCK_MONOTONIC of one boot: a pool (file, DAX) that outlives a reboot
  // starts its link afresh.
  void reset_link_clock_if_other_boot() noexcept;

  // -- process identities ---------------------------------------------------------------
  bool owner_alive(const pf::ModelRecord& m) const {
    return process_alive(m.owner_pid, m.owner_start_ticks, m.owner_pid_ns);
  }
  bool owned_by_me(const pf::ModelRecord& m) const {
    return m.owner_pid == my_pid && m.owner_pid_ns == my_pid_ns &&
           m.owner_start_ticks == my_start_ticks;
  }

  // -- reading the catalog -------------------------------------------------------------
  [[noreturn]] void corrupt(std::string_view what) const {
    throw PoolError(fmt::format("{}: corrupted catalog: {}", where(), what));
  }

  bool in_data(std::uint64_t offset, std::uint64_t bytes) const {
    return offset >= lay.data_offset && offset <= lay.data_offset + lay.data_bytes &&
           bytes <= lay.data_offset + lay.data_bytes - offset;
  }

  // Validates sealed model `slot` and returns it. Throws PoolError when the record or any
  // of its tensors is inconsistent. `expected_name` only shapes the messages.
  std::shared_ptr<ModelView> load_model(std::uint32_t slot) const;

  std::optional<std::uint32_t> slot_of(std::string_view name) const;

  // Copies [offset, offset + dst.size()) of the data area (already checked with in_data):
  // from the mapping, or over the backend's read path when the data is not mapped.
  // @throws PoolError when the read fails.
  void read_data(std::uint64_t offset, std::span<std::byte> dst, std::string_view what) const;
};

}  // namespace xlshare
