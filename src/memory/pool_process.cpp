// Process identities (liveness across PID namespaces and PID reuse), attach slots, the
// catalog's robust lock, and what /proc says about a mapping.
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

std::atomic<std::uint64_t> g_lock_timeout_ms{10'000};

}  // namespace

namespace pool_detail {

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

}  // namespace pool_detail

void set_pool_lock_timeout_ms(std::uint64_t timeout_ms) noexcept {
  g_lock_timeout_ms.store(timeout_ms == 0 ? 1 : timeout_ms, std::memory_order_relaxed);
}
std::uint64_t pool_lock_timeout_ms() noexcept {
  return g_lock_timeout_ms.load(std::memory_order_relaxed);
}

// ---------------------------------------------------------------------------------------
// Attach slots and the catalog lock

void Pool::Impl::claim_slot() {
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

void Pool::Impl::release_slot() noexcept {
  if (my_slot < 0 || control == nullptr) return;
  pf::AttachSlot& s = control->slots[my_slot];
  aref(s.models_in_use).store(0);
  aref(s.start_ticks).store(0);
  aref(s.pid_ns).store(0);
  aref(s.pid).store(0, std::memory_order_release);
  my_slot = -1;
}

std::vector<std::int32_t> Pool::Impl::users_of(std::uint32_t slot) const {
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

Pool::Impl::Lock::Lock(Impl& impl) : impl_(impl) {
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

Pool::Impl::Lock::~Lock() {
  aref(impl_.control->lock_holder_pid).store(0, std::memory_order_release);
  pthread_mutex_unlock(&impl_.control->mutex);
}

void Pool::Impl::reset_link_clock_if_other_boot() noexcept {
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

}  // namespace xlshare
