#include "xlshare/remote/pool_server.hpp"

#include <arpa/inet.h>
#include <fmt/format.h>
#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <list>
#include <mutex>
#include <vector>

#include "memory/pool_layout.hpp"
#include "remote/ucx_common.hpp"
#include "xlshare/error.hpp"
#include "xlshare/log.hpp"
#include "xlshare/memory/backend_uri.hpp"
#include "xlshare/memory/pool.hpp"
#include "xlshare/remote/token.hpp"

namespace xlshare {

using namespace ucx_detail;

bool ucx_available() noexcept { return true; }

namespace {

// `text` with every byte outside printable ASCII as '?', for logs and messages.
std::string printable(std::string_view text) {
  std::string out(text);
  for (char& c : out) {
    if (c < 0x20 || c > 0x7e) c = '?';
  }
  return out;
}

std::string address_text(const sockaddr_storage& ss) {
  char host[INET6_ADDRSTRLEN] = "?";
  std::uint16_t port = 0;
  if (ss.ss_family == AF_INET) {
    const auto& a = reinterpret_cast<const sockaddr_in&>(ss);
    ::inet_ntop(AF_INET, &a.sin_addr, host, sizeof host);
    port = ntohs(a.sin_port);
    return fmt::format("{}:{}", host, port);
  }
  if (ss.ss_family == AF_INET6) {
    const auto& a = reinterpret_cast<const sockaddr_in6&>(ss);
    ::inet_ntop(AF_INET6, &a.sin6_addr, host, sizeof host);
    port = ntohs(a.sin6_port);
    return fmt::format("[{}]:{}", host, port);
  }
  return "?";
}

// The name a pool is served under when none is given: its object's name.
std::string default_name(std::string_view uri) {
  const BackendUri u = parse_backend_uri(uri);
  std::string name = u.target;
  if (u.scheme == BackendUri::Scheme::kFile || u.scheme == BackendUri::Scheme::kDax) {
    name = name.substr(name.rfind('/') + 1);
  }
  return name;
}

void check_served_name(const std::string& name) {
  if (name.empty() || name.size() >= kWireNameBytes) {
    throw ConfigError(fmt::format("served name '{}' must be 1..{} bytes", name.substr(0, 80),
                                  kWireNameBytes - 1));
  }
  for (char c : name) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '.' || c == '_' || c == '-';
    if (!ok)
      throw ConfigError(
          fmt::format("served name '{}' has a character outside [A-Za-z0-9._-]", name));
  }
}

// One CIDR block of PoolServerOptions::allow.
struct Cidr {
  int family = AF_INET;
  unsigned char bytes[16] = {};
  unsigned prefix = 0;

  static Cidr parse(const std::string& text) {
    Cidr c;
    const auto slash = text.find('/');
    const std::string address = text.substr(0, slash);
    if (::inet_pton(AF_INET, address.c_str(), c.bytes) == 1) {
      c.family = AF_INET;
      c.prefix = 32;
    } else if (::inet_pton(AF_INET6, address.c_str(), c.bytes) == 1) {
      c.family = AF_INET6;
      c.prefix = 128;
    } else {
      throw ConfigError(fmt::format("--allow '{}': not an IPv4 or IPv6 address", text));
    }
    if (slash != std::string::npos) {
      const std::string bits = text.substr(slash + 1);
      const unsigned max = c.prefix;
      if (bits.empty() || bits.size() > 3 ||
          bits.find_first_not_of("0123456789") != std::string::npos || std::stoul(bits) > max) {
        throw ConfigError(fmt::format("--allow '{}': the prefix must be 0..{}", text, max));
      }
      c.prefix = static_cast<unsigned>(std::stoul(bits));
    }
    return c;
  }

  bool contains(const sockaddr_storage& ss) const {
    const unsigned char* a = nullptr;
    unsigned char mapped[16] = {};
    if (ss.ss_family == AF_INET && family == AF_INET) {
      a = reinterpret_cast<const unsigned char*>(
          &reinterpret_cast<const sockaddr_in&>(ss).sin_addr);
    } else if (ss.ss_family == AF_INET6) {
      const auto* b = reinterpret_cast<const unsigned char*>(
          &reinterpret_cast<const sockaddr_in6&>(ss).sin6_addr);
      static const unsigned char v4_prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
      if (family == AF_INET6) {
        a = b;
      } else if (std::memcmp(b, v4_prefix, 12) == 0) {  // ::ffff:a.b.c.d
        std::memcpy(mapped, b + 12, 4);
        a = mapped;
      }
    }
    if (a == nullptr) return false;
    for (unsigned bit = 0; bit < prefix; ++bit) {
      const unsigned mask = 0x80u >> (bit % 8);
      if ((a[bit / 8] & mask) != (bytes[bit / 8] & mask)) return false;
    }
    return true;
  }
};

}  // namespace

struct PoolServer::Impl {
  struct Conn {
    Impl* server = nullptr;
    ucp_ep_h ep = nullptr;
    std::string peer;
    Hello hello{};
    std::size_t hello_length = 0;
    ucs_status_ptr_t recv = nullptr;
    std::vector<std::byte> out;
    ucs_status_ptr_t send = nullptr;
    char stray[64];  // a client says nothing after its handshake: anything here drops it
    std::size_t stray_length = 0;
    // kLingering: refused, the answer sent; the client closes once it has read it (closing
    // first would reset the connection under the answer), or the server does after a while.
    enum class State { kHello, kReplying, kRefusing, kLingering, kServing } state = State::kHello;
    bool broken = false;
    Clock::time_point deadline;
  };

  PoolServerOptions options;
  std::vector<Cidr> allowed;
  std::string token;
  std::string name;
  std::unique_ptr<Pool> pool;
  std::vector<std::shared_ptr<const ModelView>> models;  // held in use while served
  Pool::Layout layout{};
  std::uint64_t header_checksum = 0;
  Mapping metadata;  // [0, data_offset), read-only
  Mapping data;      // the data area, read-only, registered with UCX
  ucp_context_h context = nullptr;
  ucp_worker_h worker = nullptr;
  ucp_listener_h listener = nullptr;
  ucp_mem_h memh = nullptr;
  void* rkey_buffer = nullptr;
  std::size_t rkey_bytes = 0;
  int efd = -1;
  std::uint16_t port = 0;
  std::vector<ucp_conn_request_h> pending;
  std::list<std::unique_ptr<Conn>> conns;
  std::vector<std::pair<ucs_status_ptr_t, std::unique_ptr<Conn>>> closing;
  std::atomic<bool> stop_requested{false};
  std::atomic<std::uint64_t> attached{0}, refused{0}, connected{0}, catalog_sent{0};

  ~Impl() {
    for (auto& c : conns) begin_close(std::move(c));
    conns.clear();
    const auto deadline = Clock::now() + std::chrono::seconds(2);
    while (!closing.empty() && Clock::now() < deadline) {
      if (worker != nullptr) ucp_worker_progress(worker);
      reap_closed();
    }
    for (auto& [request, conn] : closing) {
      if (request != nullptr && !UCS_PTR_IS_ERR(request)) ucp_request_free(request);
    }
    for (auto request : pending) ucp_listener_reject(listener, request);
    if (listener != nullptr) ucp_listener_destroy(listener);
    if (rkey_buffer != nullptr) ucp_rkey_buffer_release(rkey_buffer);
    if (memh != nullptr) ucp_mem_unmap(context, memh);
    if (worker != nullptr) ucp_worker_destroy(worker);
    if (context != nullptr) ucp_cleanup(context);
  }

  static void on_connection(ucp_conn_request_h request, void* arg) {
    static_cast<Impl*>(arg)->pending.push_back(request);
  }
  static void on_error(void* arg, ucp_ep_h, ucs_status_t) {
    static_cast<Conn*>(arg)->broken = true;
  }

  void accept(ucp_conn_request_h request) {
    ucp_conn_request_attr_t attr{};
    attr.field_mask = UCP_CONN_REQUEST_ATTR_FIELD_CLIENT_ADDR;
    std::string peer = "?";
    const bool known = ucp_conn_request_query(request, &attr) == UCS_OK;
    if (known) peer = address_text(attr.client_address);
    if (!allowed.empty() &&
        (!known || std::none_of(allowed.begin(), allowed.end(),
                                [&](const Cidr& c) { return c.contains(attr.client_address); }))) {
      ucp_listener_reject(listener, request);
      refused.fetch_add(1);
      logger().warn("pool server: refused {}: not an allowed address", peer);
      return;
    }
    if (conns.size() >= options.max_clients) {
      ucp_listener_reject(listener, request);
      refused.fetch_add(1);
      logger().warn("pool server: refused {}: already serving {} connections", peer, conns.size());
      return;
    }
    auto conn = std::make_unique<Conn>();
    conn->server = this;
    conn->peer = peer;
    conn->deadline = Clock::now() + std::chrono::milliseconds(options.handshake_timeout_ms);
    ucp_ep_params_t params{};
    params.field_mask = UCP_EP_PARAM_FIELD_CONN_REQUEST | UCP_EP_PARAM_FIELD_ERR_HANDLER |
                        UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE;
    params.conn_request = request;
    params.err_mode = UCP_ERR_HANDLING_MODE_PEER;
    params.err_handler.cb = &Impl::on_error;
    params.err_handler.arg = conn.get();
    if (const ucs_status_t s = ucp_ep_create(worker, &params, &conn->ep); s != UCS_OK) {
      logger().warn("pool server: cannot accept {}: {}", peer, status_text(s));
      return;
    }
    ucp_request_param_t p{};
    p.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS;
    p.flags = UCP_STREAM_RECV_FLAG_WAITALL;
    conn->recv =
        ucp_stream_recv_nbx(conn->ep, &conn->hello, sizeof(Hello), &conn->hello_length, &p);
    connected.fetch_add(1);
    logger().info("pool server: connection from {}", peer);
    conns.push_back(std::move(conn));
  }

  // Builds the reply to a complete hello; returns whether the client is accepted.
  bool answer(Conn& c) {
    Reply r{};
    std::memcpy(r.magic, kReplyMagic, sizeof r.magic);
    r.version = kProtocolVersion;
    const Hello& h = c.hello;
    std::string problem;
    ReplyStatus status = kReplyOk;
    if (c.hello_length != sizeof(Hello) || std::memcmp(h.magic, kHelloMagic, sizeof h.magic) != 0) {
      status = kReplyBadRequest;
      problem = "not an xlshare hello";
    } else if (h.version != kProtocolVersion) {
      status = kReplyBadRequest;
      problem =
          fmt::format("protocol version {}; this server speaks {}", h.version, kProtocolVersion);
    } else if (h.token_bytes > kWireTokenBytes || h.name_bytes >= kWireNameBytes ||
               (h.flags & ~kHelloWantCatalog) != 0) {
      status = kReplyBadRequest;
      problem = "malformed hello";
    } else if (!tokens_equal(token, std::string_view(h.token, h.token_bytes))) {
      status = kReplyBadToken;
      problem = "bad token";
    } else if (std::string_view(h.name, h.name_bytes) != name) {
      status = kReplyNoSuchPool;
      problem = fmt::format("no pool '{}' here (this server serves '{}')",
                            printable(std::string_view(h.name, h.name_bytes)), name);
    }
    const bool ok = status == kReplyOk;
    r.status = status;
    fmt::format_to_n(r.message, sizeof r.message - 1, "{}", ok ? "ok" : problem);
    std::uint64_t catalog = 0;
    if (ok) {
      r.pool_bytes = layout.pool_bytes;
      r.alignment_bytes = layout.alignment_bytes;
      r.data_offset = layout.data_offset;
      r.data_bytes = layout.data_bytes;
      r.remote_data_address = reinterpret_cast<std::uintptr_t>(data.data());
      r.header_checksum = header_checksum;
      catalog = (h.flags & kHelloWantCatalog) != 0 ? layout.data_offset : 0;
      r.catalog_bytes = catalog;
      r.rkey_bytes = rkey_bytes;
    }
    c.out.resize(sizeof r + catalog + (ok ? rkey_bytes : 0));
    std::memcpy(c.out.data(), &r, sizeof r);
    if (catalog > 0) std::memcpy(c.out.data() + sizeof r, metadata.data(), catalog);
    if (ok) std::memcpy(c.out.data() + sizeof r + catalog, rkey_buffer, rkey_bytes);
    ucp_request_param_t p{};
    c.send = ucp_stream_send_nbx(c.ep, c.out.data(), c.out.size(), &p);
    if (ok) {
      hold_models();
      catalog_sent.fetch_add(catalog);
    } else {
      refused.fetch_add(1);
      logger().warn("pool server: refused {}: {}", c.peer, problem);
    }
    return ok;
  }

  // Marks every sealed model in use by this process, so that the pool's host cannot remove
  // (and reuse the bytes of) a model whose catalog entry a client holds. Models loaded after
  // the server started are held from the first handshake that hands them out.
  void hold_models() {
    try {
      for (const auto& model : pool->model_names()) {
        const bool held = std::any_of(models.begin(), models.end(),
                                      [&](const auto& v) { return v->name() == model; });
        if (!held) models.push_back(pool->model(model));
      }
    } catch (const std::exception& e) {
      logger().warn("pool server: {}", e.what());
    }
  }

  void begin_close(std::unique_ptr<Conn> conn) {
    ucp_request_param_t p{};
    p.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS;
    p.flags = UCP_EP_CLOSE_FLAG_FORCE;
    if (conn->recv != nullptr && !UCS_PTR_IS_ERR(conn->recv)) {
      ucp_request_cancel(worker, conn->recv);
      ucp_request_free(conn->recv);
      conn->recv = nullptr;
    }
    if (conn->send != nullptr && !UCS_PTR_IS_ERR(conn->send)) {
      ucp_request_free(conn->send);  // completes (cancelled) when the endpoint closes
      conn->send = nullptr;
    }
    ucs_status_ptr_t request = ucp_ep_close_nbx(conn->ep, &p);
    connected.fetch_sub(1);
    closing.emplace_back(request, std::move(conn));
  }

  void reap_closed() {
    for (auto it = closing.begin(); it != closing.end();) {
      ucs_status_ptr_t request = it->first;
      if (request == nullptr || UCS_PTR_IS_ERR(request)) {
        it = closing.erase(it);
      } else if (ucp_request_check_status(request) != UCS_INPROGRESS) {
        ucp_request_free(request);
        it = closing.erase(it);
      } else {
        ++it;
      }
    }
  }

  // True when a non-blocking request is finished (and freed); `status` is its outcome.
  static bool finished(ucs_status_ptr_t& request, ucs_status_t& status) {
    if (request == nullptr) {
      status = UCS_OK;
      return true;
    }
    if (UCS_PTR_IS_ERR(request)) {
      status = UCS_PTR_STATUS(request);
      request = nullptr;
      return true;
    }
    status = ucp_request_check_status(request);
    if (status == UCS_INPROGRESS) return false;
    ucp_request_free(request);
    request = nullptr;
    return true;
  }

  // As finished(), for a stream receive: also sets how many bytes arrived.
  static bool received(ucs_status_ptr_t& request, std::size_t& length, ucs_status_t& status) {
    if (request == nullptr || UCS_PTR_IS_ERR(request)) return finished(request, status);
    status = ucp_stream_recv_request_test(request, &length);
    if (status == UCS_INPROGRESS) return false;
    ucp_request_free(request);
    request = nullptr;
    return true;
  }

  void step() {
    std::vector<ucp_conn_request_h> requests;
    requests.swap(pending);
    for (auto request : requests) accept(request);
    const auto now = Clock::now();
    for (auto it = conns.begin(); it != conns.end();) {
      Conn& c = **it;
      bool drop = false;
      ucs_status_t status = UCS_OK;
      if (c.broken) {
        if (c.state == Conn::State::kServing) {
          logger().info("pool server: {} disconnected", c.peer);
        } else if (c.state != Conn::State::kLingering) {
          logger().warn("pool server: {} dropped before its handshake completed", c.peer);
        }
        drop = true;
      } else if (c.state == Conn::State::kHello) {
        if (received(c.recv, c.hello_length, status)) {
          if (status != UCS_OK) {
            logger().warn("pool server: {}: hello not received: {}", c.peer, status_text(status));
            drop = true;
          } else {
            c.state = answer(c) ? Conn::State::kReplying : Conn::State::kRefusing;
          }
        } else if (now > c.deadline) {
          refused.fetch_add(1);
          logger().warn("pool server: refused {}: no hello within {} ms", c.peer,
                        options.handshake_timeout_ms);
          drop = true;
        }
      } else if (c.state == Conn::State::kReplying || c.state == Conn::State::kRefusing) {
        if (finished(c.send, status)) {
          if (status != UCS_OK) {
            drop = true;
          } else if (c.state == Conn::State::kRefusing) {
            c.state = Conn::State::kLingering;
            c.deadline = now + std::chrono::seconds(2);
          } else {
            c.state = Conn::State::kServing;
            c.out.clear();
            c.out.shrink_to_fit();
            ucp_request_param_t p{};
            c.recv = ucp_stream_recv_nbx(c.ep, c.stray, sizeof c.stray, &c.stray_length, &p);
            attached.fetch_add(1);
            logger().info("pool server: {} attached", c.peer);
          }
        } else if (now > c.deadline + std::chrono::milliseconds(options.handshake_timeout_ms)) {
          drop = true;
        }
      } else if (c.state == Conn::State::kLingering) {
        drop = now > c.deadline;
      } else if (c.state == Conn::State::kServing) {
        if (received(c.recv, c.stray_length, status)) {
          logger().warn("pool server: dropped {}: it sent data after its handshake", c.peer);
          drop = true;
        }
      }
      if (drop) {
        begin_close(std::move(*it));
        it = conns.erase(it);
      } else {
        ++it;
      }
    }
    reap_closed();
  }
};

PoolServer::PoolServer(std::string_view pool_uri, PoolServerOptions options)
    : impl_(std::make_unique<Impl>()) {
  Impl& im = *impl_;
  if (options.handshake_timeout_ms == 0 || options.handshake_timeout_ms > 600000) {
    throw ConfigError("pool server: the handshake timeout must be 1..600000 ms");
  }
  if (options.max_clients == 0 || options.max_clients > 65536) {
    throw ConfigError("pool server: max clients must be 1..65536");
  }
  im.name = options.name.empty() ? default_name(pool_uri) : options.name;
  check_served_name(im.name);
  for (const auto& block : options.allow) im.allowed.push_back(Cidr::parse(block));
  im.token = read_token_file(token_file_or_default(options.token_file));
  im.options = std::move(options);

  im.pool = Pool::attach(open_backend(pool_uri), PoolRole::kReader);
  for (const auto& model : im.pool->model_names()) im.models.push_back(im.pool->model(model));
  im.layout = im.pool->layout();
  im.metadata = im.pool->backend().map(0, im.layout.data_offset, Access::kReadOnly);
  // The header's checksum identifies this pool (it covers its geometry and creation time):
  // a client that reconnects checks that it still reads the same pool.
  im.header_checksum =
      reinterpret_cast<const pool_format::Header*>(im.metadata.data())->header_checksum;
  if (im.layout.data_bytes == 0) throw PoolError(fmt::format("pool {}: no data area", pool_uri));
  im.data = im.pool->backend().map(im.layout.data_offset, im.layout.data_bytes, Access::kReadOnly);

  ucp_config_t* config = read_config("pool server");
  ucp_params_t params{};
  params.field_mask = UCP_PARAM_FIELD_FEATURES;
  params.features = UCP_FEATURE_RMA | UCP_FEATURE_STREAM | UCP_FEATURE_WAKEUP;
  const ucs_status_t init = ucp_init(&params, config, &im.context);
  ucp_config_release(config);
  if (init != UCS_OK) {
    im.context = nullptr;
    throw BackendError(fmt::format("pool server: cannot start UCX: {}", status_text(init)));
  }
  ucp_worker_params_t wp{};
  wp.field_mask = UCP_WORKER_PARAM_FIELD_THREAD_MODE;
  wp.thread_mode = UCS_THREAD_MODE_SINGLE;
  if (const ucs_status_t s = ucp_worker_create(im.context, &wp, &im.worker); s != UCS_OK) {
    im.worker = nullptr;
    throw BackendError(fmt::format("pool server: cannot create a UCX worker: {}", status_text(s)));
  }
  if (ucp_worker_get_efd(im.worker, &im.efd) != UCS_OK) im.efd = -1;

  ucp_mem_map_params_t mp{};
  mp.field_mask = UCP_MEM_MAP_PARAM_FIELD_ADDRESS | UCP_MEM_MAP_PARAM_FIELD_LENGTH |
                  UCP_MEM_MAP_PARAM_FIELD_PROT;
  mp.address = im.data.data();
  mp.length = im.data.size_bytes();
  mp.prot = UCP_MEM_MAP_PROT_LOCAL_READ | UCP_MEM_MAP_PROT_REMOTE_READ;
  if (const ucs_status_t s = ucp_mem_map(im.context, &mp, &im.memh); s != UCS_OK) {
    im.memh = nullptr;
    throw BackendError(
        fmt::format("pool server: cannot register the pool's data with UCX: {}", status_text(s)));
  }
  if (const ucs_status_t s = ucp_rkey_pack(im.context, im.memh, &im.rkey_buffer, &im.rkey_bytes);
      s != UCS_OK) {
    im.rkey_buffer = nullptr;
    throw BackendError(fmt::format("pool server: cannot pack the remote key: {}", status_text(s)));
  }
  if (im.rkey_bytes == 0 || im.rkey_bytes > kMaxRkeyBytes) {
    throw BackendError(fmt::format("pool server: a remote key of {} bytes", im.rkey_bytes));
  }

  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  addrinfo* found = nullptr;
  const std::string port_text = std::to_string(im.options.port);
  if (const int rc =
          ::getaddrinfo(im.options.listen_host.c_str(), port_text.c_str(), &hints, &found);
      rc != 0 || found == nullptr) {
    throw ConfigError(fmt::format("pool server: cannot resolve '{}': {}", im.options.listen_host,
                                  ::gai_strerror(rc)));
  }
  ucp_listener_params_t lp{};
  lp.field_mask = UCP_LISTENER_PARAM_FIELD_SOCK_ADDR | UCP_LISTENER_PARAM_FIELD_CONN_HANDLER;
  lp.sockaddr.addr = found->ai_addr;
  lp.sockaddr.addrlen = found->ai_addrlen;
  lp.conn_handler.cb = &Impl::on_connection;
  lp.conn_handler.arg = &im;
  const ucs_status_t ls = ucp_listener_create(im.worker, &lp, &im.listener);
  ::freeaddrinfo(found);
  if (ls != UCS_OK) {
    im.listener = nullptr;
    throw BackendError(fmt::format("pool server: cannot listen on {}:{}: {}{}",
                                   im.options.listen_host, im.options.port, status_text(ls),
                                   ls == UCS_ERR_BUSY ? " (the address is in use)" : ""));
  }
  ucp_listener_attr_t la{};
  la.field_mask = UCP_LISTENER_ATTR_FIELD_SOCKADDR;
  if (ucp_listener_query(im.listener, &la) == UCS_OK) {
    if (la.sockaddr.ss_family == AF_INET) {
      im.port = ntohs(reinterpret_cast<const sockaddr_in&>(la.sockaddr).sin_port);
    } else if (la.sockaddr.ss_family == AF_INET6) {
      im.port = ntohs(reinterpret_cast<const sockaddr_in6&>(la.sockaddr).sin6_port);
    }
  }
  if (im.port == 0) im.port = im.options.port;
}

PoolServer::~PoolServer() = default;

std::uint16_t PoolServer::port() const noexcept { return impl_->port; }
const std::string& PoolServer::name() const noexcept { return impl_->name; }

std::string PoolServer::client_uri() const {
  const std::string& host = impl_->options.listen_host;
  const bool v6 = host.find(':') != std::string::npos;
  return fmt::format("ucx://{}{}{}:{}/{}", v6 ? "[" : "", host, v6 ? "]" : "", impl_->port,
                     impl_->name);
}

void PoolServer::serve(const std::atomic<bool>* stop) {
  Impl& im = *impl_;
  // Where UCX emulates a remote read in software (TCP, and shared memory for memory UCX did
  // not allocate itself), this loop answers it. While reads flow it keeps polling (a read
  // is answered in microseconds, not after a sleep); idle for kSpin, it sleeps on the
  // worker's event descriptor, waking at least every kNap to look at deadlines and `stop`
  // (some transports, shared memory among them, raise no event).
  constexpr auto kSpin = std::chrono::milliseconds(2);
  constexpr int kNapMs = 1;
  auto last_event = Clock::now();
  while (!im.stop_requested.load(std::memory_order_acquire) &&
         (stop == nullptr || !stop->load(std::memory_order_acquire))) {
    bool active = false;
    while (ucp_worker_progress(im.worker) != 0) active = true;
    im.step();
    const auto now = Clock::now();
    if (active || !im.pending.empty()) {
      last_event = now;
      continue;
    }
    if (now - last_event < kSpin) continue;
    if (im.efd >= 0) {
      if (ucp_worker_arm(im.worker) == UCS_ERR_BUSY) continue;
      pollfd pfd{im.efd, POLLIN, 0};
      (void)::poll(&pfd, 1, im.conns.empty() ? 50 : kNapMs);
    } else {
      ::usleep(kNapMs * 1000);
    }
  }
}

void PoolServer::stop() noexcept {
  impl_->stop_requested.store(true, std::memory_order_release);
  if (impl_->worker != nullptr) (void)ucp_worker_signal(impl_->worker);
}

PoolServerStats PoolServer::stats() const noexcept {
  PoolServerStats s;
  s.clients_attached = impl_->attached.load();
  s.clients_refused = impl_->refused.load();
  s.clients_connected = impl_->connected.load();
  s.catalog_bytes_sent = impl_->catalog_sent.load();
  return s;
}

}  // namespace xlshare
