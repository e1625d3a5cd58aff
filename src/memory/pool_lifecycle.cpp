// Creating and removing pools by URI: crash-safe creation under a temporary name, and
// removal that refuses what is not an xlshare pool.
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
    case BackendUri::Scheme::kUcx:
    case BackendUri::Scheme::kRegistered:
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
  if (!where) {
    // No file-system name to rename into place (a devdax device, a registered scheme): made
    // where it lies. What this call created is removed again if the pool cannot be made in
    // it (a device is not ours to remove).
    auto backend = create_backend(uri, size_bytes, backend_options);
    try {
      return Pool::create(std::move(backend), options);
    } catch (...) {
      if (u.scheme == BackendUri::Scheme::kRegistered) {
        try {
          remove_backend(uri);
        } catch (const std::exception& e) {
          logger().warn("{}: made for a pool that failed; it stays: {}", uri, e.what());
        }
      }
      throw;
    }
  }
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
  if (u.scheme == BackendUri::Scheme::kUcx) {
    throw ConfigError(fmt::format(
        "{}: a remote pool cannot be removed from here; stop its server and remove it on its host",
        uri));
  }
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
