// PoolServer: one pool of this host served to workers on other hosts over UCX.
//
// The server attaches to an existing pool as a reader, registers the pool's data area with
// UCX (ucp_mem_map of a read-only mapping, remote read access only) and listens on a
// UCX listener. A client connects, presents the token in a handshake and receives the pool's
// metadata (header and catalog: models, tensors, offsets, checksums) and the packed remote
// key; from then on it reads tensor bytes one-sidedly with ucp_get_nbx. On RDMA the NIC
// serves those reads; on shared memory (CMA) the kernel does; on TCP the server's UCX
// progress loop answers them without any xlshare code in the path. A client with a bad
// token, a malformed hello or the name of another pool is refused (and logged); the server
// keeps serving the others. UCX itself is not a security boundary: where it emulates remote
// reads in software (TCP, shared memory) a peer running its own UCX code can address any
// memory of this process. Serve on a network only trusted hosts reach, or name them in
// `allow`; docs/security.md has the whole trust model.
//
// Threading: serve() runs the server in the calling thread until stop() is called (from any
// thread) or `stop` becomes true (a flag a signal handler may set). Everything else may be
// called from any thread.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace xlshare {

struct PoolServerOptions {
  /// Address to listen on: an IPv4/IPv6 address or a host name. Default 127.0.0.1.
  std::string listen_host = "127.0.0.1";
  /// Port; 0 picks a free one (port() tells which).
  std::uint16_t port = 0;
  /// The token file (see xlshare/remote/token.hpp); empty: $XLSHARE_TOKEN_FILE.
  std::string token_file;
  /// The name clients ask for (ucx://HOST:PORT/NAME); empty: the pool's object name (the
  /// shm or numa name, the file's base name).
  std::string name;
  /// A client that has not completed its handshake after this long is dropped. Default 5 s.
  std::uint32_t handshake_timeout_ms = 5000;
  /// Connections served at once; further ones are rejected. Default 256.
  std::uint32_t max_clients = 256;
  /// Client addresses allowed to connect, as CIDR blocks ("10.0.0.0/8", "192.168.1.7",
  /// "fd00::/8"); a request from any other address is rejected before UCX makes an endpoint
  /// for it. Empty: every address that can reach the port (see docs/security.md: UCX itself
  /// is not a security boundary, so listen on a network only trusted hosts reach, or list
  /// them here).
  std::vector<std::string> allow;
};

struct PoolServerStats {
  std::uint64_t clients_attached = 0;   ///< handshakes that succeeded
  std::uint64_t clients_refused = 0;    ///< bad token, bad request, wrong name, too many
  std::uint64_t clients_connected = 0;  ///< connections open now
  std::uint64_t catalog_bytes_sent = 0;
};

class PoolServer {
 public:
  /// Attaches to the pool at `pool_uri`, registers its data area and starts listening.
  /// @throws ConfigError (options, token file), PoolError, BackendError (UCX failures, the
  /// address already in use).
  PoolServer(std::string_view pool_uri, PoolServerOptions options);
  ~PoolServer();
  PoolServer(const PoolServer&) = delete;
  PoolServer& operator=(const PoolServer&) = delete;

  /// The port the listener is bound to.
  std::uint16_t port() const noexcept;
  /// The name clients ask for.
  const std::string& name() const noexcept;
  /// "ucx://HOST:PORT/NAME" for the listen address.
  std::string client_uri() const;

  /// Serves until stop() or `*stop` (checked at least every 50 ms). Runs in this thread.
  void serve(const std::atomic<bool>* stop = nullptr);
  /// Makes serve() return soon. Thread-safe; not for signal handlers (use the flag).
  void stop() noexcept;

  PoolServerStats stats() const noexcept;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

/// Whether this build of xlshare has UCX (remote pools).
bool ucx_available() noexcept;

}  // namespace xlshare
