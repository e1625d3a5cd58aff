#include "xlshare/remote/ucx_backend.hpp"

#include <fmt/format.h>
#include <netdb.h>
#include <sys/socket.h>

#include <algorithm>
#include <cstring>
#include <mutex>
#include <vector>

#include "memory/pool_layout.hpp"
#include "remote/ucx_common.hpp"
#include "xlshare/error.hpp"
#include "xlshare/log.hpp"
#include "xlshare/remote/token.hpp"

namespace xlshare {

using namespace ucx_detail;

namespace {

// Pieces of one read, and how many are in flight at once.
constexpr std::size_t kChunkBytes = 256 * 1024;
constexpr std::size_t kInFlight = 8;
// Lanes (one per reading thread at a time) kept open.
constexpr std::size_t kMaxIdleLanes = 16;

// One connection: a UCX worker of its own, an endpoint to the server and its remote key.
// Used by one thread at a time.
struct Lane {
  ucp_worker_h worker = nullptr;
  ucp_ep_h ep = nullptr;
  ucp_rkey_h rkey = nullptr;
  std::uint64_t remote_data_address = 0;  // where this connection's server has the data
  bool broken = false;                    // set by the endpoint's error handler, inside progress

  Lane() = default;
  Lane(const Lane&) = delete;
  Lane& operator=(const Lane&) = delete;
  ~Lane() {
    if (rkey != nullptr) ucp_rkey_destroy(rkey);
    if (ep != nullptr) {
      // Forced: requests still in flight complete (cancelled) before the close does, so no
      // transfer writes into a buffer after this returns.
      ucp_request_param_t p{};
      p.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS;
      p.flags = UCP_EP_CLOSE_FLAG_FORCE;
      ucs_status_ptr_t request = ucp_ep_close_nbx(ep, &p);
      if (request != nullptr && !UCS_PTR_IS_ERR(request)) {
        const auto until = Clock::now() + std::chrono::seconds(5);
        while (ucp_request_check_status(request) == UCS_INPROGRESS && Clock::now() < until) {
          ucp_worker_progress(worker);
        }
        ucp_request_free(request);
      }
    }
    if (worker != nullptr) ucp_worker_destroy(worker);
  }

  static void on_error(void* arg, ucp_ep_h, ucs_status_t) {
    static_cast<Lane*>(arg)->broken = true;
  }
};

// Why a connection attempt failed, and whether retrying could help.
struct ConnectFailure {
  std::string message;
  bool refused = false;  // the server answered and said no: not worth retrying soon
};

class UcxBackend final : public MemoryBackend {
 public:
  UcxBackend(const BackendUri& uri, const BackendOptions& options) : uri_(uri.text), target_(uri) {
    if (options.remote_timeout_ms == 0 || options.remote_timeout_ms > 3600000) {
      throw ConfigError(fmt::format("{}: the remote timeout must be 1..3600000 ms", uri_));
    }
    if (target_.target.size() >= kWireNameBytes) {
      throw ConfigError(
          fmt::format("{}: a served pool's name is at most {} bytes", uri_, kWireNameBytes - 1));
    }
    timeout_ = std::chrono::milliseconds(options.remote_timeout_ms);
    token_ = read_token_file(token_file_or_default(options.token_file));
    static_assert(kMaxSecretBytes <= kWireTokenBytes);
    resolve();
    start_ucx();
    try {
      Reply reply{};
      std::vector<std::byte> catalog;
      ConnectFailure failure;
      auto lane = connect(true, reply, &catalog, failure);
      if (!lane) throw BackendError(fmt::format("{}: {}", uri_, failure.message));
      // The header in the catalog must describe the pool the reply describes: Pool::attach
      // checks the header against size_bytes() and alignment_bytes(), this the rest.
      pool_format::Header h;
      std::memcpy(&h, catalog.data(), sizeof h);
      if (h.pool_bytes != reply.pool_bytes || h.alignment_bytes != reply.alignment_bytes ||
          h.data_offset != reply.data_offset || h.data_bytes != reply.data_bytes ||
          h.header_checksum != reply.header_checksum) {
        throw BackendError(
            fmt::format("{}: the server's catalog and its answer describe different pools", uri_));
      }
      reply_ = reply;
      catalog_ = std::move(catalog);
      idle_.push_back(std::move(lane));
    } catch (...) {
      idle_.clear();
      ucp_cleanup(context_);
      throw;
    }
  }

  ~UcxBackend() override {
    idle_.clear();  // lanes before the context
    if (context_ != nullptr) ucp_cleanup(context_);
  }

  const std::string& uri() const noexcept override { return uri_; }
  std::uint64_t size_bytes() const noexcept override { return reply_.pool_bytes; }
  std::uint64_t alignment_bytes() const noexcept override { return reply_.alignment_bytes; }
  bool is_writable() const noexcept override { return false; }
  bool maps_data() const noexcept override { return false; }

  Mapping map(std::uint64_t offset_bytes, std::uint64_t length_bytes, Access access) override {
    if (access == Access::kReadWrite) {
      throw BackendError(fmt::format("{}: a remote pool is read-only", uri_));
    }
    check_map_request(*this, offset_bytes, length_bytes);
    if (offset_bytes + length_bytes > catalog_.size()) {
      throw BackendError(fmt::format(
          "{}: bytes [{}, {}) are the pool's data, which a remote pool does not map: it is "
          "read with the copy placement",
          uri_, offset_bytes, offset_bytes + length_bytes));
    }
    Mapping copy = allocate_local(static_cast<std::size_t>(length_bytes));
    std::memcpy(copy.data(), catalog_.data() + offset_bytes, length_bytes);
    return copy;
  }

 protected:
  ReadStatus do_read(std::uint64_t offset_bytes, std::span<std::byte> dst) noexcept override {
    const std::uint64_t begin = reply_.data_offset, end = reply_.data_offset + reply_.data_bytes;
    if (offset_bytes < begin || offset_bytes > end || dst.size() > end - offset_bytes) {
      return ReadStatus::kOutOfRange;
    }
    if (dst.empty()) return ReadStatus::kOk;
    try {
      std::unique_ptr<Lane> lane = take_lane();
      if (!lane) {
        ConnectFailure failure;
        Reply reply{};
        lane = connect(false, reply, nullptr, failure);
        if (!lane) {
          note_failure(failure.message);
          return ReadStatus::kOffline;
        }
        if (reply.header_checksum != reply_.header_checksum ||
            reply.pool_bytes != reply_.pool_bytes ||
            reply.alignment_bytes != reply_.alignment_bytes ||
            reply.data_offset != reply_.data_offset || reply.data_bytes != reply_.data_bytes) {
          note_failure("the server now serves another pool");
          return ReadStatus::kOffline;
        }
      }
      const ReadStatus status = get(*lane, offset_bytes - begin, dst);
      if (status == ReadStatus::kOk) {
        give_back(std::move(lane));
      } else {
        note_failure("the connection dropped during a read");
      }
      return status;
    } catch (...) {
      return ReadStatus::kTransientError;
    }
  }

 private:
  void resolve() {
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICSERV;
    addrinfo* found = nullptr;
    const std::string port = std::to_string(target_.port);
    if (const int rc = ::getaddrinfo(target_.host.c_str(), port.c_str(), &hints, &found);
        rc != 0 || found == nullptr) {
      throw BackendError(
          fmt::format("{}: cannot resolve '{}': {}", uri_, target_.host, ::gai_strerror(rc)));
    }
    std::memcpy(&address_, found->ai_addr, found->ai_addrlen);
    address_bytes_ = found->ai_addrlen;
    ::freeaddrinfo(found);
  }

  void start_ucx() {
    ucp_config_t* config = read_config(uri_);
    ucp_params_t params{};
    params.field_mask = UCP_PARAM_FIELD_FEATURES | UCP_PARAM_FIELD_MT_WORKERS_SHARED;
    params.features = UCP_FEATURE_RMA | UCP_FEATURE_STREAM;
    params.mt_workers_shared = 1;
    const ucs_status_t s = ucp_init(&params, config, &context_);
    ucp_config_release(config);
    if (s != UCS_OK) {
      context_ = nullptr;
      throw BackendError(fmt::format("{}: cannot start UCX: {}", uri_, status_text(s)));
    }
  }

  std::unique_ptr<Lane> take_lane() {
    std::lock_guard g(mu_);
    if (idle_.empty()) return nullptr;
    auto lane = std::move(idle_.back());
    idle_.pop_back();
    return lane;
  }

  void give_back(std::unique_ptr<Lane> lane) {
    std::lock_guard g(mu_);
    if (idle_.size() < kMaxIdleLanes) idle_.push_back(std::move(lane));
  }

  void note_failure(const std::string& why) {
    std::lock_guard g(mu_);
    if (why != last_failure_) logger().warn("{}: {}", uri_, why);
    last_failure_ = why;
  }

  Clock::time_point deadline() const { return Clock::now() + timeout_; }

  // A new lane with its handshake done, or null with `failure` set.
  std::unique_ptr<Lane> connect(bool want_catalog, Reply& reply, std::vector<std::byte>* catalog,
                                ConnectFailure& failure) {
    auto lane = std::make_unique<Lane>();
    auto fail = [&](std::string message) -> std::unique_ptr<Lane> {
      failure.message = std::move(message);
      return nullptr;
    };
    ucp_worker_params_t wp{};
    wp.field_mask = UCP_WORKER_PARAM_FIELD_THREAD_MODE;
    wp.thread_mode = UCS_THREAD_MODE_SERIALIZED;
    if (const ucs_status_t s = ucp_worker_create(context_, &wp, &lane->worker); s != UCS_OK) {
      lane->worker = nullptr;
      return fail(fmt::format("cannot create a UCX worker: {}", status_text(s)));
    }
    ucp_ep_params_t ep{};
    ep.field_mask = UCP_EP_PARAM_FIELD_FLAGS | UCP_EP_PARAM_FIELD_SOCK_ADDR |
                    UCP_EP_PARAM_FIELD_ERR_HANDLER | UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE;
    ep.flags = UCP_EP_PARAMS_FLAGS_CLIENT_SERVER;
    ep.sockaddr.addr = reinterpret_cast<const sockaddr*>(&address_);
    ep.sockaddr.addrlen = address_bytes_;
    ep.err_mode = UCP_ERR_HANDLING_MODE_PEER;
    ep.err_handler.cb = &Lane::on_error;
    ep.err_handler.arg = lane.get();
    if (const ucs_status_t s = ucp_ep_create(lane->worker, &ep, &lane->ep); s != UCS_OK) {
      lane->ep = nullptr;
      return fail(
          fmt::format("cannot reach {}:{}: {}", target_.host, target_.port, status_text(s)));
    }
    const auto until = deadline();
    Hello hello{};
    std::memcpy(hello.magic, kHelloMagic, sizeof hello.magic);
    hello.version = kProtocolVersion;
    hello.flags = want_catalog ? kHelloWantCatalog : 0;
    hello.token_bytes = static_cast<std::uint32_t>(token_.size());
    std::memcpy(hello.token, token_.data(), token_.size());
    hello.name_bytes = static_cast<std::uint32_t>(target_.target.size());
    std::memcpy(hello.name, target_.target.data(), target_.target.size());
    ucp_request_param_t sp{};
    ucs_status_t s =
        wait_request(lane->worker, ucp_stream_send_nbx(lane->ep, &hello, sizeof hello, &sp), until,
                     &lane->broken);
    if (s != UCS_OK) {
      return fail(
          fmt::format("cannot reach {}:{}: {}", target_.host, target_.port, status_text(s)));
    }
    auto receive = [&](void* buffer, std::size_t bytes) {
      ucp_request_param_t rp{};
      rp.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS;
      rp.flags = UCP_STREAM_RECV_FLAG_WAITALL;
      std::size_t length = 0;
      return wait_request(lane->worker, ucp_stream_recv_nbx(lane->ep, buffer, bytes, &length, &rp),
                          until, &lane->broken);
    };
    if (s = receive(&reply, sizeof reply); s != UCS_OK) {
      return fail(
          fmt::format("no answer from {}:{}: {}", target_.host, target_.port, status_text(s)));
    }
    if (std::memcmp(reply.magic, kReplyMagic, sizeof reply.magic) != 0 ||
        reply.version != kProtocolVersion) {
      return fail(fmt::format("{}:{} is not an xlshare pool server of protocol {}", target_.host,
                              target_.port, kProtocolVersion));
    }
    reply.message[sizeof reply.message - 1] = '\0';
    if (reply.status != kReplyOk) {
      failure.refused = true;
      return fail(fmt::format("the server refused: {}", reply.message));
    }
    const bool power_of_two =
        reply.alignment_bytes != 0 && (reply.alignment_bytes & (reply.alignment_bytes - 1)) == 0;
    if (!power_of_two || reply.alignment_bytes > (1ull << 30) ||
        reply.data_offset < sizeof(pool_format::Header) ||
        reply.data_offset % reply.alignment_bytes != 0 || reply.data_offset > reply.pool_bytes ||
        reply.data_bytes > reply.pool_bytes - reply.data_offset ||
        reply.catalog_bytes != (want_catalog ? reply.data_offset : 0) ||
        reply.catalog_bytes > kMaxCatalogBytes || reply.rkey_bytes == 0 ||
        reply.rkey_bytes > kMaxRkeyBytes) {
      return fail("the server's answer describes an impossible pool");
    }
    if (want_catalog) {
      catalog->resize(reply.catalog_bytes);
      if (s = receive(catalog->data(), catalog->size()); s != UCS_OK) {
        return fail(fmt::format("the catalog did not arrive: {}", status_text(s)));
      }
    }
    std::vector<std::byte> rkey(reply.rkey_bytes);
    if (s = receive(rkey.data(), rkey.size()); s != UCS_OK) {
      return fail(fmt::format("the remote key did not arrive: {}", status_text(s)));
    }
    lane->remote_data_address = reply.remote_data_address;
    if (s = ucp_ep_rkey_unpack(lane->ep, rkey.data(), &lane->rkey); s != UCS_OK) {
      lane->rkey = nullptr;
      return fail(fmt::format("the remote key does not unpack: {}", status_text(s)));
    }
    return lane;
  }

  // Reads [offset, offset + dst.size()) of the data area: kInFlight gets at a time.
  ReadStatus get(Lane& lane, std::uint64_t offset, std::span<std::byte> dst) {
    const auto until = deadline();
    std::size_t done = 0;
    ucs_status_ptr_t requests[kInFlight];
    while (done < dst.size()) {
      std::size_t posted = 0, pos = done;
      for (; posted < kInFlight && pos < dst.size(); ++posted) {
        const std::size_t n = std::min(kChunkBytes, dst.size() - pos);
        ucp_request_param_t p{};
        requests[posted] = ucp_get_nbx(lane.ep, dst.data() + pos, n,
                                       lane.remote_data_address + offset + pos, lane.rkey, &p);
        pos += n;
      }
      bool ok = true;
      for (std::size_t i = 0; i < posted; ++i) {
        if (!ok) {
          if (requests[i] != nullptr && !UCS_PTR_IS_ERR(requests[i])) ucp_request_free(requests[i]);
          continue;
        }
        ok = wait_request(lane.worker, requests[i], until, &lane.broken) == UCS_OK;
      }
      if (!ok) return ReadStatus::kTransientError;  // the caller's close cancels the rest
      done = pos;
    }
    return lane.broken ? ReadStatus::kTransientError : ReadStatus::kOk;
  }

  std::string uri_;
  BackendUri target_;
  std::string token_;
  std::chrono::milliseconds timeout_{10000};
  sockaddr_storage address_{};
  socklen_t address_bytes_ = 0;
  ucp_context_h context_ = nullptr;
  Reply reply_{};
  std::vector<std::byte> catalog_;
  std::mutex mu_;
  std::vector<std::unique_ptr<Lane>> idle_;
  std::string last_failure_;
};

}  // namespace

std::unique_ptr<MemoryBackend> open_ucx_backend(const BackendUri& uri,
                                                const BackendOptions& options) {
  return std::make_unique<UcxBackend>(uri, options);
}

}  // namespace xlshare
