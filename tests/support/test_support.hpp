// Helpers shared by the tests: unique names, temporary directories, child processes.
#pragma once

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <random>
#include <string>

#include <fmt/format.h>

#include "xlshare/memory/backend_uri.hpp"

namespace xlshare::test {

/// A name no other test (or test process) uses: "xlshare-test-PID-RANDOM-N-tag". The random
/// part keeps a reused PID from meeting an object an earlier, crashed process left behind.
inline std::string unique_name(const std::string& tag) {
  static std::atomic<int> counter{0};
  static const std::uint32_t salt = std::random_device{}();
  return fmt::format("xlshare-test-{}-{:08x}-{}-{}", ::getpid(), salt, counter++, tag);
}

/// Removes a backend object (shm, file) when the test ends, whatever happened.
class BackendGuard {
 public:
  explicit BackendGuard(std::string uri) : uri_(std::move(uri)) {}
  ~BackendGuard() {
    try {
      if (backend_exists(uri_)) remove_backend(uri_);
    } catch (...) {
    }
  }
  const std::string& uri() const noexcept { return uri_; }

 private:
  std::string uri_;
};

/// A fresh directory under /tmp, removed with everything in it.
class TempDir {
 public:
  TempDir() {
    path_ = std::filesystem::temp_directory_path() / unique_name("dir");
    std::filesystem::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  const std::filesystem::path& path() const noexcept { return path_; }

 private:
  std::filesystem::path path_;
};

/// Runs `body` in a forked child; the child's exit status is body's return value (or 99 if
/// it threw). Returns the child's pid.
inline pid_t spawn(const std::function<int()>& body) {
  const pid_t pid = ::fork();
  if (pid == 0) {
    int rc = 99;
    try {
      rc = body();
    } catch (const std::exception& e) {
      fmt::print(stderr, "child {}: {}\n", ::getpid(), e.what());
    }
    ::_exit(rc);
  }
  return pid;
}

/// Waits for `pid`; returns its exit status, or 128 + signal.
inline int wait_exit(pid_t pid) {
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0) {
  }
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return -1;
}

/// A one-shot pipe for "I am ready" / "go on" between parent and child.
class Signal {
 public:
  Signal() {
    if (::pipe(fds_) != 0) throw std::runtime_error("pipe failed");
  }
  ~Signal() {
    ::close(fds_[0]);
    ::close(fds_[1]);
  }
  void notify() {
    const char c = 1;
    (void)!::write(fds_[1], &c, 1);
  }
  bool wait() {
    char c = 0;
    return ::read(fds_[0], &c, 1) == 1;
  }

 private:
  int fds_[2];
};

/// XORs `mask` into the byte at `offset` of shm://NAME's backing file, /dev/shm/NAME, as a
/// stray writer or a failing device would: every mapping of the pool sees it.
inline void flip_byte(const std::string& uri, std::uint64_t offset, std::uint8_t mask) {
  const std::string path = "/dev/shm/" + uri.substr(std::string("shm://").size());
  const int fd = ::open(path.c_str(), O_RDWR);
  ASSERT_GE(fd, 0) << path;
  unsigned char b = 0;
  ASSERT_EQ(::pread(fd, &b, 1, static_cast<off_t>(offset)), 1);
  b ^= mask;
  ASSERT_EQ(::pwrite(fd, &b, 1, static_cast<off_t>(offset)), 1);
  ::close(fd);
}

}  // namespace xlshare::test
