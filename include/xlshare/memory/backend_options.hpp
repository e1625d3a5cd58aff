// Options shared by every MemoryBackend that opens or creates a named object.
#pragma once

#include <cstdint>
#include <string>

namespace xlshare {

struct BackendOptions {
  /// Permission bits of a newly created object. Default 0600: only the creating user.
  std::uint32_t mode = 0600;
  /// Open an existing object read-only. Such a process can read and attach to a pool but
  /// cannot take part in shared link accounting. Default: false.
  bool read_only = false;
  /// Accept an existing object owned by another user. Default: false (refused, with a
  /// message naming the owner).
  bool allow_foreign_owner = false;
  /// Reserve the whole object's memory at creation (fallocate), so that running out of
  /// space is an error at creation instead of a SIGBUS at first touch. Default: true.
  bool reserve_on_create = true;
  /// Root of sysfs, where devdax geometry is read from. Default "/sys"; tests use a fake.
  std::string sysfs_root = "/sys";
  /// Treat a regular file as a devdax character device (for tests of the devdax path on
  /// machines without one). Default: false.
  bool allow_regular_file_as_devdax = false;
  /// Remote pools (ucx://): the token file; empty: $XLSHARE_TOKEN_FILE.
  std::string token_file;
  /// Remote pools: how long a connection, a handshake or one read may take before it counts
  /// as failed. Default 10 000 ms.
  std::uint32_t remote_timeout_ms = 10000;
};

}  // namespace xlshare
