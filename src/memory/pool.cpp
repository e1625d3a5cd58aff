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

namespace xlshare {

namespace pf = pool_format;

namespace {

static_assert(sizeof(pf::Header) % 8 == 0);
static_assert(sizeof(pf::ModelRecord) % 8 == 0);
static_assert(sizeof(pf::TensorRecord) % 8 == 0);

template <typename T>
std::atomic_ref<T> aref(T& v) noexcept {
  return std::atomic_ref<T>(v);
}
template <typename T>
T aload(const T& v, std::memory_order order = std::memory_order_acquire) noexcept {
  return std::atomic_ref<T>(const_cast<T&>(v)).load(order);
}

bool is_pow2(std::uint64_t v) { return v != 0 && (v & (v - 1)) == 0; }
std::uint64_t round_up(std::uint64_t v, std::uint64_t a) { return (v + a - 1) / a * a; }

std::uint64_t unix_ns() {
  return static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                        std::chrono::system_clock::now().time_since_epoch())
                                        .count());
}

std::uint64_t header_checksum(const pf::Header& h) {
  return checksum64(&h, offsetof(pf::Header, header_checksum));
}
std::uint64_t model_record_checksum(const pf::ModelRecord& r) {
  constexpr std::size_t begin = offsetof(pf::ModelRecord, name);
  constexpr std::size_t end = offsetof(pf::ModelRecord, record_checksum);
  return checksum64(reinterpret_cast<const std::byte*>(&r) + begin, end - begin);
}
std::uint64_t tensor_record_checksum(const pf::TensorRecord& r) {
  constexpr std::size_t begin = offsetof(pf::TensorRecord, name);
  constexpr std::size_t end = offsetof(pf::TensorRecord, record_checksum);
  return checksum64(reinterpret_cast<const std::byte*>(&r) + begin, end - begin);
}

// A fixed-size name field holds a NUL-terminated string.
template <std::size_t N>
std::optional<std::string> read_name(const char (&field)[N]) {
  const void* nul = std::memchr(field, '\0', N);
  if (nul == nullptr) return std::nullopt;
  return std::string(field, static_cast<const char*>(nul));
}

void validate_model_name(std::string_view name) {
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

void validate_tensor_name(std::string_view name) {
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

}  // namespace

std::uint64_t process_start_ticks(std::int32_t pid) noexcept {
  try {
    std::ifstream in(fmt::format("/proc/{}/stat", pid));
    if (!in) return 0;
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    const auto close = text.rfind(')');
    if (close == std::string::npos) return 0;
    std::istringstream fields(text.substr(close + 2));
    std::string field;
    // Field 3 (state) is the first after ')'; starttime is field 22.
    for (int i = 3; i <= 22; ++i) {
      if (!(fields >> field)) return 0;
    }
    return std::stoull(field);
  } catch (...) {
    return 0;
  }
}

std::uint32_t pid_namespace_inode() noexcept {
  struct stat st {};
  if (::stat("/proc/self/ns/pid", &st) != 0) return 0;
  return static_cast<std::uint32_t>(st.st_ino);
}

bool process_alive(std::int32_t pid, std::uint64_t start_ticks, std::uint32_t pid_ns) noexcept {
  if (pid <= 0) return false;
  // A pid from another PID namespace names nobody we can look at: undecidable, so alive.
  if (pid_ns != 0) {
    const std::uint32_t mine = pid_namespace_inode();
    if (mine == 0 || mine != pid_ns) return true;
  }
  if (::kill(pid, 0) != 0 && errno != EPERM) return false;
  if (start_ticks == 0) return true;
  const std::uint64_t now = process_start_ticks(pid);
  return now == 0 || now == start_ticks;  // 0: cannot tell (no /proc): assume alive
}

namespace {

// One letter of /proc/PID/stat's state ('T': stopped), or '?'.
char process_state(std::int32_t pid) noexcept {
  try {
    std::ifstream in(fmt::format("/proc/{}/stat", pid));
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    const auto close = text.rfind(')');
    if (close == std::string::npos || close + 2 >= text.size()) return '?';
    return text[close + 2];
  } catch (...) {
    return '?';
  }
}

std::string describe_process(std::int32_t pid, std::uint32_t pid_ns) {
  if (pid_ns != 0 && pid_ns != pid_namespace_inode()) {
    return fmt::format("pid {} of another PID namespace (inode {})", pid, pid_ns);
  }
  switch (process_state(pid)) {
    case 'T':
    case 't':
      return fmt::format("pid {} (stopped)", pid);
    case '?':
      return fmt::format("pid {}", pid);
    default:
      return fmt::format("pid {} (running)", pid);
  }
}

std::atomic<std::uint64_t> g_lock_timeout_ms{10'000};

// The smaps entry of the mapping at `base`: its KernelPageSize, and the bytes of it mapped
// with PMD-sized pages (ShmemPmdMapped, FilePmdMapped, AnonHugePages). Zero when unreadable.
void mapping_page_sizes(const void* base, std::uint64_t& page_bytes,
                        std::uint64_t& huge_bytes) noexcept {
  page_bytes = huge_bytes = 0;
  try {
    std::ifstream in("/proc/self/smaps");
    std::string line;
    bool ours = false;
    const auto address = reinterpret_cast<std::uintptr_t>(base);
    while (std::getline(in, line)) {
      unsigned long long lo = 0, hi = 0;
      if (std::sscanf(line.c_str(), "%llx-%llx ", &lo, &hi) == 2 &&
          line.find(':') > line.find(' ')) {
        if (ours) return;  // the next mapping: done
        ours = address >= lo && address < hi;
        continue;
      }
      if (!ours) continue;
      unsigned long long kib = 0;
      if (std::sscanf(line.c_str(), "KernelPageSize: %llu kB", &kib) == 1) page_bytes = kib * 1024;
      for (const char* key :
           {"ShmemPmdMapped: %llu kB", "FilePmdMapped: %llu kB", "AnonHugePages: %llu kB"}) {
        if (std::sscanf(line.c_str(), key, &kib) == 1) huge_bytes += kib * 1024;
      }
    }
  } catch (...) {
    page_bytes = huge_bytes = 0;
  }
}

// XXH3 of this boot's id: link times taken on another boot mean nothing now.
std::uint64_t boot_id_hash() noexcept {
  try {
    std::ifstream in("/proc/sys/kernel/random/boot_id");
    std::string id;
    if (!(in >> id) || id.empty()) return 0;
    return checksum64(id.data(), id.size());
  } catch (...) {
    return 0;
  }
}

}  // namespace

void set_pool_lock_timeout_ms(std::uint64_t timeout_ms) noexcept {
  g_lock_timeout_ms.store(timeout_ms == 0 ? 1 : timeout_ms, std::memory_order_relaxed);
}
std::uint64_t pool_lock_timeout_ms() noexcept {
  return g_lock_timeout_ms.load(std::memory_order_relaxed);
}

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

std::string PoolStats::to_json() const {
  nlohmann::json j;
  j["uri"] = uri;
  j["pool_bytes"] = pool_bytes;
  j["data_bytes"] = data_bytes;
  j["generation"] = generation;
  j["models_sealed"] = models_sealed;
  j["models_loading"] = models_loading;
  j["tensors"] = tensors;
  j["attached_processes"] = attached_processes;
  j["extents"] = {
      {"bytes_total", extents.bytes_total},   {"bytes_used", extents.bytes_used},
      {"bytes_free", extents.bytes_free},     {"largest_free_extent", extents.largest_free_extent},
      {"free_extents", extents.free_extents}, {"fragmentation", extents.fragmentation}};
  j["link"] = {{"bytes", link_bytes},
               {"transfers", link_transfers},
               {"busy_ns", link_busy_ns},
               {"faults", link_faults},
               {"clock_clamps", link_clock_clamps}};
  j["mapping"] = {{"page_bytes", page_bytes}, {"huge_mapped_bytes", huge_mapped_bytes}};
  return j.dump(2);
}

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
  void claim_slot() {
    for (int pass = 0; pass < 2 && my_slot < 0; ++pass) {
      for (std::uint32_t i = 0; i < pf::kAttachSlots; ++i) {
        pf::AttachSlot& s = control->slots[i];
        std::int32_t pid = aload(s.pid);
        if (pid > 0 && pass == 1 && !process_alive(pid, aload(s.start_ticks), aload(s.pid_ns))) {
          // Free a dead process's slot: lock it with -1, clear, release.
          if (aref(s.pid).compare_exchange_strong(pid, -1)) {
            aref(s.start_ticks).store(0);
            aref(s.pid_ns).store(0);
            aref(s.models_in_use).store(0);
            aref(s.pid).store(0, std::memory_order_release);
          }
          pid = aload(s.pid);
        }
        if (pid != 0) continue;
        std::int32_t expected = 0;
        if (aref(s.pid).compare_exchange_strong(expected, my_pid)) {
          aref(s.models_in_use).store(0);
          aref(s.attached_unix_ns).store(unix_ns());
          aref(s.pid_ns).store(my_pid_ns);
          aref(s.start_ticks).store(my_start_ticks, std::memory_order_release);
          my_slot = static_cast<int>(i);
          break;
        }
      }
    }
    if (my_slot < 0) {
      throw PoolError(fmt::format("{}: all {} attach slots are held by live processes", where(),
                                  pf::kAttachSlots));
    }
  }

  void release_slot() noexcept {
    if (my_slot < 0 || control == nullptr) return;
    pf::AttachSlot& s = control->slots[my_slot];
    aref(s.models_in_use).store(0);
    aref(s.start_ticks).store(0);
    aref(s.pid_ns).store(0);
    aref(s.pid).store(0, std::memory_order_release);
    my_slot = -1;
  }

  // Live processes other than this one with model `slot` in use.
  std::vector<std::int32_t> users_of(std::uint32_t slot) const {
    std::vector<std::int32_t> pids;
    for (std::uint32_t i = 0; i < pf::kAttachSlots; ++i) {
      if (static_cast<int>(i) == my_slot) continue;
      const pf::AttachSlot& s = control->slots[i];
      const std::int32_t pid = aload(s.pid);
      if (pid <= 0) continue;
      if ((aload(s.models_in_use, std::memory_order_seq_cst) >> slot & 1u) == 0) continue;
      if (process_alive(pid, aload(s.start_ticks), aload(s.pid_ns))) pids.push_back(pid);
    }
    return pids;
  }

  // -- the robust mutex -----------------------------------------------------------------
  // Waits at most pool_lock_timeout_ms(): a holder that is stopped (SIGSTOP, a debugger) or
  // stuck would otherwise block every loader silently. The holder writes its identity next
  // to the mutex so the message can name it.
  class Lock {
   public:
    explicit Lock(Impl& impl) : impl_(impl) {
      pthread_mutex_t* mutex = &impl_.control->mutex;
      const std::uint64_t timeout_ms = pool_lock_timeout_ms();
      timespec deadline{};
      ::clock_gettime(CLOCK_REALTIME, &deadline);
      deadline.tv_sec += static_cast<time_t>(timeout_ms / 1000);
      deadline.tv_nsec += static_cast<long>(timeout_ms % 1000) * 1'000'000L;
      if (deadline.tv_nsec >= 1'000'000'000L) {
        deadline.tv_sec += 1;
        deadline.tv_nsec -= 1'000'000'000L;
      }
      const int rc = pthread_mutex_timedlock(mutex, &deadline);
      if (rc == ETIMEDOUT) {
        const pf::Control& c = *impl_.control;
        std::int32_t pid = aload(c.lock_holder_pid);
        std::uint32_t ns = aload(c.lock_holder_ns);
        if (pid <= 0) {
          // Taken outside Lock (or by an older build): glibc keeps the owner's thread id.
          const int owner = aload(c.mutex.__data.__owner);
          pid = owner > 0 && owner < 0x3fffffff ? owner : 0;
          ns = 0;
        }
        throw PoolError(fmt::format(
            "{}: timed out after {} ms waiting for the catalog lock, held by {}", impl_.where(),
            timeout_ms, pid > 0 ? describe_process(pid, ns) : "an unknown process"));
      }
      if (rc == EOWNERDEAD) {
        logger().warn("{}: a process died holding the catalog lock; rebuilding the allocator",
                      impl_.where());
        try {
          impl_.recover_locked();
        } catch (...) {
          pthread_mutex_consistent(mutex);
          pthread_mutex_unlock(mutex);
          throw;
        }
        pthread_mutex_consistent(mutex);
      } else if (rc != 0) {
        throw PoolError(
            errno_message(fmt::format("{}: cannot take the catalog lock", impl_.where()), rc));
      }
      pf::Control& c = *impl_.control;
      aref(c.lock_holder_ns).store(impl_.my_pid_ns, std::memory_order_relaxed);
      aref(c.lock_holder_start_ticks).store(impl_.my_start_ticks, std::memory_order_relaxed);
      aref(c.lock_holder_pid)
          .store(impl_.my_pid != 0 ? impl_.my_pid : static_cast<std::int32_t>(::getpid()),
                 std::memory_order_release);
    }
    ~Lock() {
      aref(impl_.control->lock_holder_pid).store(0, std::memory_order_release);
      pthread_mutex_unlock(&impl_.control->mutex);
    }
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
  std::vector<FreeExtent> live_extents_locked() const {
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

  bool overlaps_live_extent_locked(std::uint64_t offset, std::uint64_t bytes) const {
    for (const auto& e : live_extents_locked()) {
      if (offset < e.offset_bytes + e.size_bytes && e.offset_bytes < offset + bytes) return true;
    }
    return false;
  }

  void rebuild_extents_locked() {
    ExtentTable& t = *extents;
    t.capacity = extent_capacity;
    t.begin_bytes = lay.data_offset;
    t.end_bytes = lay.data_offset + lay.data_bytes;
    t.alignment_bytes = lay.alignment_bytes;
    ExtentAllocator(t).rebuild(live_extents_locked());
  }

  // An extent for a new tensor or metadata, never one that a record already holds.
  std::optional<std::uint64_t> allocate_locked(std::uint64_t bytes) {
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

  // Empties model `slot`'s records and returns their extents to the free table. The
  // records are not trusted (the model may be a corrupted one): the table is rebuilt from
  // the records that remain. Caller holds the lock.
  void free_model_locked(std::uint32_t slot) {
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

  // After a process died holding the lock, and on every writer attach: drop orphaned
  // records and rebuild the free list from what the records say is allocated.
  void recover_locked() {
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

  // Link times are CLOCK_MONOTONIC of one boot: a pool (file, DAX) that outlives a reboot
  // starts its link afresh.
  void reset_link_clock_if_other_boot() noexcept {
    const std::uint64_t mine = boot_id_hash();
    if (mine == 0) return;
    LinkState& link = control->link;
    std::uint64_t stored = link_field(link.boot_id_hash).load(std::memory_order_acquire);
    if (stored == mine) return;
    if (link_field(link.boot_id_hash)
            .compare_exchange_strong(stored, mine, std::memory_order_acq_rel)) {
      if (stored != 0) {
        logger().info("{}: the pool's link times come from another boot; resetting the link clock",
                      where());
      }
      link_field(link.link_free_ns).store(0, std::memory_order_release);
    }
  }

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
  std::shared_ptr<ModelView> load_model(std::uint32_t slot) const {
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
      const auto* p = reinterpret_cast<const char*>(base + m.metadata_offset);
      if (checksum64(p, m.metadata_bytes) != m.metadata_checksum) {
        corrupt(fmt::format("model '{}' metadata fails its checksum", *name));
      }
      view->metadata_.assign(p, m.metadata_bytes);
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
        corrupt(fmt::format("{}: {} bytes recorded, its shape and dtype need {}", label,
                            t.size_bytes, bytes ? *bytes : 0));
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
    if (tiles > 0) std::memcpy(table->data(), base + m.tiles_offset, m.tiles_bytes);
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

  std::optional<std::uint32_t> slot_of(std::string_view name) const {
    for (std::uint32_t i = 0; i < lay.max_models; ++i) {
      if (aload(models[i].state) == pf::kModelEmpty) continue;
      auto n = read_name(models[i].name);
      if (n && *n == name) return i;
    }
    return std::nullopt;
  }
};

// ---------------------------------------------------------------------------------------
// Creating and attaching

namespace {

struct Geometry {
  std::uint64_t alignment, control_offset, control_bytes, catalog_offset, catalog_bytes,
      models_offset, tensors_offset, extents_offset, extent_capacity, data_offset;
};

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

}  // namespace

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
  const std::uint64_t mapped = h.data_offset + h.data_bytes;
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
    logger().warn(
        "pool {}: opened read-only; this process's link traffic is not shared with "
        "other attachers",
        uri);
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
  impl->backend = std::move(backend);
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
  const auto& lay = impl_->lay;
  if (!impl_->in_data(tensor.offset_bytes, tensor.size_bytes)) return {};
  (void)lay;
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
  if (read_mapping) mapping_page_sizes(im.base, s.page_bytes, s.huge_mapped_bytes);
  return s;
}

// ---------------------------------------------------------------------------------------
// ModelWriter

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

// ---------------------------------------------------------------------------------------
// Creating and removing pools by URI

namespace {

// Where a backend's named object lives in the file system, for rename and cleanup.
struct ObjectPath {
  std::string dir, name;
};

std::optional<ObjectPath> object_path(const BackendUri& u) {
  switch (u.scheme) {
    case BackendUri::Scheme::kShm:
    case BackendUri::Scheme::kNuma:
      return ObjectPath{"/dev/shm", u.target};
    case BackendUri::Scheme::kFile: {
      const auto slash = u.target.rfind('/');
      return ObjectPath{slash == 0 ? "/" : u.target.substr(0, slash), u.target.substr(slash + 1)};
    }
    case BackendUri::Scheme::kDax:
      return std::nullopt;
  }
  return std::nullopt;
}

// Temporary objects of a creation of `name`: "xlshare-creating-HASH-NS-PID-TICKS-N".
std::string creation_prefix(const std::string& name) {
  return fmt::format("xlshare-creating-{:016x}-", checksum64(name.data(), name.size()));
}

std::string with_target(const BackendUri& u, const std::string& dir, const std::string& name) {
  switch (u.scheme) {
    case BackendUri::Scheme::kShm:
      return "shm://" + name;
    case BackendUri::Scheme::kNuma:
      return fmt::format("numa://{}/{}", u.numa_node, name);
    default:
      return "file://" + (dir == "/" ? "" : dir) + "/" + name;
  }
}

// Removes what creators of `name` that died left behind; only names of exactly our pattern.
std::uint32_t remove_dead_creations(const ObjectPath& where) {
  std::uint32_t removed = 0;
  const std::string prefix = creation_prefix(where.name);
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(where.dir, ec)) {
    const std::string file = entry.path().filename().string();
    if (file.rfind(prefix, 0) != 0) continue;
    unsigned long long ns = 0, pid = 0, ticks = 0, n = 0;
    char tail = 0;
    if (std::sscanf(file.c_str() + prefix.size(), "%llu-%llu-%llu-%llu%c", &ns, &pid, &ticks, &n,
                    &tail) != 4)
      continue;
    if (pid == 0 || pid > INT32_MAX || ns > UINT32_MAX) continue;
    if (process_alive(static_cast<std::int32_t>(pid), ticks, static_cast<std::uint32_t>(ns)))
      continue;
    logger().info("removing {}/{}, left by a pool creator (pid {}) that died", where.dir, file,
                  pid);
    if (::unlink(entry.path().c_str()) == 0) ++removed;
  }
  return removed;
}

}  // namespace

std::unique_ptr<Pool> create_pool(std::string_view uri, std::uint64_t size_bytes,
                                  const PoolOptions& options,
                                  const BackendOptions& backend_options) {
  const BackendUri u = parse_backend_uri(uri);
  const auto where = object_path(u);
  if (!where) return Pool::create(create_backend(uri, size_bytes, backend_options), options);
  if (backend_exists(uri)) {
    throw BackendError(
        fmt::format("{}: already exists (remove it with `xlshare pool rm {}`)", uri, uri));
  }
  remove_dead_creations(*where);
  const auto pid = static_cast<std::int32_t>(::getpid());
  static std::atomic<std::uint32_t> creations{0};
  const std::string temp_name =
      fmt::format("{}{}-{}-{}-{}", creation_prefix(where->name), pid_namespace_inode(), pid,
                  process_start_ticks(pid), creations.fetch_add(1, std::memory_order_relaxed));
  const std::string temp_uri = with_target(u, where->dir, temp_name);
  const std::string temp_path = where->dir + "/" + temp_name;
  const std::string final_path = where->dir + "/" + where->name;
  bool created = false;  // only what this call created is removed on failure
  try {
    auto backend = create_backend(temp_uri, size_bytes, backend_options);
    created = true;
    (void)Pool::create(std::move(backend), options);
    if (::renameat2(AT_FDCWD, temp_path.c_str(), AT_FDCWD, final_path.c_str(), RENAME_NOREPLACE) !=
        0) {
      const int err = errno;
      if (err == EEXIST) {
        throw BackendError(
            fmt::format("{}: already exists (created meanwhile by another process)", uri));
      }
      // A file system without RENAME_NOREPLACE: link(2) never replaces either.
      if (err != EINVAL || ::link(temp_path.c_str(), final_path.c_str()) != 0) {
        throw BackendError(errno_message(fmt::format("{}: publishing the new pool", uri), errno));
      }
      ::unlink(temp_path.c_str());
    }
  } catch (...) {
    if (created) ::unlink(temp_path.c_str());
    throw;
  }
  return Pool::attach(open_backend(uri, backend_options), PoolRole::kWriter);
}

void remove_pool(std::string_view uri, bool force) {
  const BackendUri u = parse_backend_uri(uri);
  // What creators of this name killed mid-create left behind goes first: it is ours.
  if (const auto where = object_path(u);
      where && remove_dead_creations(*where) > 0 && !backend_exists(uri)) {
    return;
  }
  BackendOptions read_only;
  read_only.read_only = true;
  auto backend = open_backend(uri, read_only);
  const std::uint64_t bytes = backend->size_bytes(), align = backend->alignment_bytes();
  if (bytes < sizeof(pf::Header) || bytes < align) {
    throw PoolError(
        fmt::format("{}: not an xlshare pool ({} bytes, too small for a pool header); "
                    "refusing to remove it",
                    uri, bytes));
  }
  pf::Header h;
  {
    Mapping first = backend->map(0, align, Access::kReadOnly);
    std::memcpy(&h, first.data(), sizeof h);
  }
  bool foreign = false;
  const std::string problem = header_problem(h, bytes, align, &foreign);
  if (foreign) {
    throw PoolError(
        fmt::format("{}: not an xlshare pool ({}); refusing to remove it", uri, problem));
  }
  if (!problem.empty() && !force) {
    throw PoolError(
        fmt::format("{}: {}; its attach slots cannot be read, so attachment cannot be "
                    "ruled out (--force removes it anyway)",
                    uri, problem));
  }
  if (problem.empty() && !force) {
    // Read the attach slots and model owners without attaching: a full slot table is still
    // a table of holders.
    Mapping control = backend->map(h.control_offset, h.control_bytes, Access::kReadOnly);
    const auto& c = *reinterpret_cast<const pf::Control*>(control.data());
    std::vector<std::string> holders;
    for (const auto& slot : c.slots) {
      const std::int32_t pid = aload(slot.pid);
      if (pid == 0) continue;
      if (pid < 0 || process_alive(pid, aload(slot.start_ticks), aload(slot.pid_ns))) {
        holders.push_back(pid < 0 ? std::string("a slot being freed")
                                  : describe_process(pid, aload(slot.pid_ns)));
      }
    }
    Mapping catalog = backend->map(h.catalog_offset, h.catalog_bytes, Access::kReadOnly);
    const auto* records = reinterpret_cast<const pf::ModelRecord*>(
        catalog.data() + (h.models_offset - h.catalog_offset));
    for (std::uint32_t i = 0; i < h.max_models; ++i) {
      const pf::ModelRecord& m = records[i];
      const std::uint64_t s = aload(m.state);
      if ((s == pf::kModelLoading || s == pf::kModelFenced) &&
          process_alive(m.owner_pid, m.owner_start_ticks, m.owner_pid_ns)) {
        holders.push_back(fmt::format("the loader of '{}', {}", read_name(m.name).value_or("?"),
                                      describe_process(m.owner_pid, m.owner_pid_ns)));
      }
    }
    if (!holders.empty()) {
      std::string named;
      for (std::size_t i = 0; i < holders.size() && i < 4; ++i)
        named += (i ? "; " : "") + holders[i];
      throw PoolError(fmt::format("{}: {} process(es) may be using the pool ({}{}); use --force",
                                  uri, holders.size(), named, holders.size() > 4 ? "; ..." : ""));
    }
  }
  backend.reset();
  remove_backend(uri);
}

}  // namespace xlshare
