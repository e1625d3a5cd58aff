// A MemoryBackend of your own, reachable by URI: "memfd://NAME" names an anonymous memory
// file (memfd_create) that this process created. Processes forked after the creation
// inherit the descriptor, so forked workers share one copy, as they do with shm://.
//
// What a backend implements (the contract is at the top of xlshare/memory/memory_backend.hpp):
// uri(), size_bytes(), alignment_bytes(), is_writable() and map(); the read path comes from
// the base class once the constructor installs a read-only view of the whole object. The
// scheme's four functions (create, open, exists, remove) make every URI-taking part of
// xlshare accept "memfd://…": create_pool, InferenceEngine, remove_pool.
#pragma once

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include <fmt/format.h>

#include "xlshare/error.hpp"
#include "xlshare/memory/backend_uri.hpp"
#include "xlshare/memory/memory_backend.hpp"

namespace example {

class MemfdBackend final : public xlshare::MemoryBackend {
 public:
  /// Creates memfd://name of `size_bytes` rounded up to whole pages.
  /// @throws xlshare::BackendError.
  static std::unique_ptr<MemfdBackend> create(const std::string& name, std::uint64_t size_bytes) {
    const auto page = static_cast<std::uint64_t>(::sysconf(_SC_PAGESIZE));
    size_bytes = (size_bytes + page - 1) / page * page;
    std::lock_guard lock(table().mutex);
    if (table().fds.count(name) != 0) {
      throw xlshare::BackendError(fmt::format("memfd://{}: already exists", name));
    }
    const int fd = ::memfd_create(name.c_str(), MFD_CLOEXEC);
    if (fd < 0) throw xlshare::BackendError(xlshare::errno_message("memfd://" + name, errno));
    std::unique_ptr<MemfdBackend> backend;
    try {
      if (::ftruncate(fd, static_cast<off_t>(size_bytes)) != 0) {
        throw xlshare::BackendError(xlshare::errno_message("memfd://" + name + ": size", errno));
      }
      backend.reset(new MemfdBackend(name, ::fcntl(fd, F_DUPFD_CLOEXEC, 0), size_bytes, true));
    } catch (...) {
      ::close(fd);  // nothing is registered: the name stays free
      throw;
    }
    table().fds[name] = fd;  // the table keeps the object alive until remove()
    return backend;
  }
  /// Opens memfd://name; read-only through a new read-only descriptor of the same file
  /// (reopened through /proc/self/fd, which must be mounted).
  static std::unique_ptr<MemfdBackend> open(const std::string& name, bool read_only) {
    std::lock_guard lock(table().mutex);
    const auto it = table().fds.find(name);
    if (it == table().fds.end()) {
      throw xlshare::BackendError(fmt::format("memfd://{}: no such object", name));
    }
    const int fd = read_only ? ::open(fmt::format("/proc/self/fd/{}", it->second).c_str(),
                                      O_RDONLY | O_CLOEXEC)
                             : ::fcntl(it->second, F_DUPFD_CLOEXEC, 0);
    if (fd < 0) throw xlshare::BackendError(xlshare::errno_message("memfd://" + name, errno));
    const off_t size = ::lseek(fd, 0, SEEK_END);
    return std::unique_ptr<MemfdBackend>(
        new MemfdBackend(name, fd, static_cast<std::uint64_t>(size), !read_only));
  }
  static bool exists(const std::string& name) {
    std::lock_guard lock(table().mutex);
    return table().fds.count(name) != 0;
  }
  /// Forgets memfd://name; the memory goes when the last mapping and descriptor do.
  static void remove(const std::string& name) {
    std::lock_guard lock(table().mutex);
    const auto it = table().fds.find(name);
    if (it == table().fds.end()) {
      throw xlshare::BackendError(fmt::format("memfd://{}: no such object", name));
    }
    ::close(it->second);
    table().fds.erase(it);
  }

  ~MemfdBackend() override { ::close(fd_); }

  const std::string& uri() const noexcept override { return uri_; }
  std::uint64_t size_bytes() const noexcept override { return size_bytes_; }
  std::uint64_t alignment_bytes() const noexcept override {
    return static_cast<std::uint64_t>(::sysconf(_SC_PAGESIZE));
  }
  bool is_writable() const noexcept override { return writable_; }

  xlshare::Mapping map(std::uint64_t offset_bytes, std::uint64_t length_bytes,
                       xlshare::Access access) override {
    xlshare::check_map_request(*this, offset_bytes, length_bytes);  // alignment and range
    const bool write = access == xlshare::Access::kReadWrite;
    if (write && !writable_) {
      throw xlshare::BackendError(fmt::format("{}: opened read-only", uri_));
    }
    void* p = ::mmap(nullptr, length_bytes, write ? PROT_READ | PROT_WRITE : PROT_READ, MAP_SHARED,
                     fd_, static_cast<off_t>(offset_bytes));
    if (p == MAP_FAILED)
      throw xlshare::BackendError(xlshare::errno_message(uri_ + ": mmap", errno));
    return xlshare::Mapping(p, length_bytes);
  }

 private:
  struct Table {
    std::mutex mutex;
    std::map<std::string, int> fds;
  };
  static Table& table() {
    static Table t;
    return t;
  }

  // Takes `fd` (closed here if construction fails).
  MemfdBackend(const std::string& name, int fd, std::uint64_t size_bytes, bool writable)
      : uri_("memfd://" + name), fd_(fd), size_bytes_(size_bytes), writable_(writable) {
    if (fd_ < 0) throw xlshare::BackendError(xlshare::errno_message(uri_, errno));
    try {
      // The base class's read() copies from this view (override do_read() to read otherwise).
      set_read_view(map(0, size_bytes_, xlshare::Access::kReadOnly));
    } catch (...) {
      ::close(fd_);
      throw;
    }
  }

  std::string uri_;
  int fd_;
  std::uint64_t size_bytes_;
  bool writable_;
};

/// Makes "memfd://NAME" a backend URI in this process (once; later calls do nothing).
inline void register_memfd_scheme() {
  static std::once_flag once;
  std::call_once(once, [] {
    xlshare::BackendScheme scheme;
    scheme.create = [](const xlshare::BackendUri& u, std::uint64_t bytes,
                       const xlshare::BackendOptions&) -> std::unique_ptr<xlshare::MemoryBackend> {
      return MemfdBackend::create(u.target, bytes);
    };
    scheme.open =
        [](const xlshare::BackendUri& u,
           const xlshare::BackendOptions& options) -> std::unique_ptr<xlshare::MemoryBackend> {
      return MemfdBackend::open(u.target, options.read_only);
    };
    scheme.exists = [](const xlshare::BackendUri& u) { return MemfdBackend::exists(u.target); };
    scheme.remove = [](const xlshare::BackendUri& u) { MemfdBackend::remove(u.target); };
    xlshare::register_backend_scheme("memfd", std::move(scheme));
  });
}

}  // namespace example
