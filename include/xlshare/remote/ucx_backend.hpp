// The remote backend: `ucx://HOST:PORT/NAME`, a pool served by a PoolServer on another host
// (or on this one), read one-sidedly over UCX.
//
// It is a read-only MemoryBackend without a local mapping of the pool's data (maps_data() is
// false): map() serves only the pool's metadata, a copy received in the handshake, and reads
// of the data area are ucp_get_nbx calls into the caller's buffer, several outstanding per
// read. Every thread that reads gets a connection of its own (a lane: UCX worker, endpoint,
// remote key), made on first use and kept. The catalog is a snapshot of the handshake: a
// model the server's pool gains later is seen by the next attach, and one it loses is caught
// by the checksums the TransferEngine verifies on arrival.
//
// Faults: a connection that drops during a read fails that read as a transient error (the
// TransferEngine retries it, and the retry reconnects); a server that cannot be reached, that
// refuses the token or that now serves another pool makes reads fail as offline (the
// TransferEngine fails over to its replica, or fails the request). Reconnecting logs and
// allocates: that cold path is the one exception to MemoryBackend's "reads never log".
//
// Processes: a process that has used UCX (opened a remote pool) must not fork children that
// use UCX in turn (their connections time out): make a WorkerGroup before opening a remote
// pool in its parent, or start workers with exec (`xlshare worker`). Each process opens the
// pool itself, with a connection of its own.
#pragma once

#include <memory>
#include <string_view>

#include "xlshare/memory/backend_options.hpp"
#include "xlshare/memory/backend_uri.hpp"
#include "xlshare/memory/memory_backend.hpp"

namespace xlshare {

/// Connects to the server named by `uri` (scheme ucx), authenticates with the token of
/// `options.token_file` (or $XLSHARE_TOKEN_FILE) and receives the pool's catalog.
/// @throws ConfigError (URI, token file), BackendError (unreachable, refused, malformed reply,
/// or a build without UCX).
std::unique_ptr<MemoryBackend> open_ucx_backend(const BackendUri& uri,
                                                const BackendOptions& options = {});

}  // namespace xlshare
