// What the UCX server and client share: the handshake's wire format and small helpers over
// UCP. Private to src/.
//
// The handshake, on a UCP stream after the client-server connection is up:
//   client -> server  Hello (fixed size): magic, version, flags, the token, the pool's name
//   server -> client  Reply (fixed size): status and message; on success the pool's geometry,
//                     the remote address of its data area and the lengths of what follows:
//                     the pool's metadata (bytes [0, data_offset): header, control, catalog;
//                     only when the Hello asked for it) and the packed remote key.
// After that the client reads the data area with ucp_get_nbx; the server answers nothing
// more on that connection. Every field is little-endian host order (x86-64 and AArch64
// servers and clients; a big-endian peer is refused by the magic).
#pragma once

#include <ucp/api/ucp.h>

#include <chrono>
#include <cstdint>
#include <string>

namespace xlshare::ucx_detail {

inline constexpr char kHelloMagic[8] = {'X', 'L', 'S', 'U', 'C', 'X', 'H', '\0'};
inline constexpr char kReplyMagic[8] = {'X', 'L', 'S', 'U', 'C', 'X', 'R', '\0'};
inline constexpr std::uint32_t kProtocolVersion = 1;
inline constexpr std::uint32_t kHelloWantCatalog = 1;  // Hello::flags
inline constexpr std::size_t kWireTokenBytes = 1024;
inline constexpr std::size_t kWireNameBytes = 64;
inline constexpr std::uint64_t kMaxCatalogBytes = 256ull << 20;
inline constexpr std::uint64_t kMaxRkeyBytes = 64 * 1024;

struct Hello {
  char magic[8];
  std::uint32_t version;
  std::uint32_t flags;
  std::uint32_t token_bytes;
  std::uint32_t name_bytes;
  char token[kWireTokenBytes];
  char name[kWireNameBytes];
};

enum ReplyStatus : std::uint32_t {
  kReplyOk = 0,
  kReplyBadToken = 1,
  kReplyBadRequest = 2,
  kReplyNoSuchPool = 3,
  kReplyBusy = 4,
};

struct Reply {
  char magic[8];
  std::uint32_t version;
  std::uint32_t status;  // ReplyStatus
  char message[192];     // NUL-terminated
  std::uint64_t pool_bytes, alignment_bytes, data_offset, data_bytes;
  std::uint64_t remote_data_address;  // the server's address of pool offset data_offset
  std::uint64_t header_checksum;      // which pool: changes if it is recreated
  std::uint64_t catalog_bytes;        // bytes of metadata that follow (0 or data_offset)
  std::uint64_t rkey_bytes;           // bytes of packed remote key that follow
};

using Clock = std::chrono::steady_clock;

/// "UCX: <ucs_status_string>"
std::string status_text(ucs_status_t status);

/// UCX's configuration from its environment, with shared-memory transports allowed on
/// endpoints that handle peer failure (UCX_MM_ERROR_HANDLING=y unless the environment says
/// otherwise): without it, a pool served on the same host is read over TCP.
/// @throws BackendError naming `who`.
ucp_config_t* read_config(const std::string& who);

/// Progresses `worker` until `request` (the result of a *_nbx call) completes or `deadline`
/// passes or `*broken` becomes true. Frees the request. Returns its status, UCS_ERR_TIMED_OUT
/// or UCS_ERR_CONNECTION_RESET (broken). A request still in flight on timeout is left to
/// the endpoint's close, which completes it: the caller must close the endpoint.
ucs_status_t wait_request(ucp_worker_h worker, ucs_status_ptr_t request, Clock::time_point deadline,
                          const bool* broken);

}  // namespace xlshare::ucx_detail
