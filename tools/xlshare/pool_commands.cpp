#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <signal.h>

#include <atomic>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "commands.hpp"
#include "xlshare/error.hpp"
#include "xlshare/log.hpp"
#include "xlshare/memory/backend_uri.hpp"
#include "xlshare/memory/pool.hpp"
#include "xlshare/remote/pool_server.hpp"

namespace xlshare::cli {
namespace {

std::string human(std::uint64_t bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(bytes);
  int u = 0;
  while (v >= 1024 && u < 4) {
    v /= 1024;
    ++u;
  }
  return u == 0 ? fmt::format("{} B", bytes) : fmt::format("{:.1f} {}", v, units[u]);
}

struct PoolArgs {
  std::string uri;
  std::string size = "1G";
  std::uint32_t max_models = 16;
  std::uint32_t max_tensors = 4096;
  bool json = false;
  bool force = false;
  std::string model;
};

void pool_create(const PoolArgs& a) {
  PoolOptions o;
  o.max_models = a.max_models;
  o.max_tensors = a.max_tensors;
  const std::uint64_t bytes = parse_bytes(a.size);
  // Laid out under a temporary name and renamed into place: nothing half-made is left.
  auto pool = create_pool(a.uri, bytes, o);
  const auto s = pool->stats();
  if (a.json) {
    fmt::print("{}\n", s.to_json());
  } else {
    fmt::print("created pool {}: {} total, {} for data\n", a.uri, human(s.pool_bytes),
               human(s.data_bytes));
  }
}

void pool_info(const PoolArgs& a) {
  auto pool = Pool::attach(open_backend(a.uri));
  const auto s = pool->stats(/*read_mapping=*/true);
  const auto models = pool->list_models();
  if (a.json) {
    nlohmann::json j = s;
    j["models"] = nlohmann::json::array();
    for (const auto& m : models) {
      j["models"].push_back({{"name", m.name},
                             {"state", m.state},
                             {"tensors", m.tensor_count},
                             {"bytes", m.bytes},
                             {"owner_pid", m.owner_pid},
                             {"owner_alive", m.owner_alive},
                             {"problem", m.problem}});
    }
    fmt::print("{}\n", j.dump(2));
    return;
  }
  fmt::print("pool {}\n", s.uri);
  fmt::print("  size        {} ({} for data)\n", human(s.pool_bytes), human(s.data_bytes));
  fmt::print("  used        {}  free {}  largest free extent {}  fragmentation {:.3f}\n",
             human(s.extents.bytes_used), human(s.extents.bytes_free),
             human(s.extents.largest_free_extent), s.extents.fragmentation);
  fmt::print("  attached    {} process(es) (this one included)\n", s.attached_processes);
  if (s.page_bytes != 0) {
    fmt::print("  mapping     {} pages{}\n", human(s.page_bytes),
               s.huge_mapped_bytes
                   ? fmt::format(", {} of it mapped with huge pages", human(s.huge_mapped_bytes))
                   : std::string(", no huge pages mapped"));
  }
  fmt::print("  link        {} moved in {} transfers, {} faults\n", human(s.link_bytes),
             s.link_transfers, s.link_faults);
  fmt::print("  models      {} sealed, {} loading\n", s.models_sealed, s.models_loading);
  for (const auto& m : models) {
    fmt::print(
        "    {:<24} {:<8} {:>6} tensors {:>12}{}\n", m.name, m.state, m.tensor_count,
        human(m.bytes),
        m.state == "loading" || m.state == "fenced"
            ? fmt::format("  (loader pid {} {})", m.owner_pid, m.owner_alive ? "alive" : "dead")
        : m.state == "corrupted" ? fmt::format("  ({}; `xlshare pool reclaim` drops it)", m.problem)
                                 : "");
  }
}

void pool_rm(const PoolArgs& a) {
  if (!a.model.empty()) {
    auto pool = Pool::attach(open_backend(a.uri), PoolRole::kWriter);
    pool->remove_model(a.model, a.force);
    for (const auto& m : pool->list_models()) {
      if (m.name == a.model && m.state == "fenced") {
        fmt::print(
            "model {} of {} is fenced: its loader (pid {}) stops at its next write and frees it\n",
            a.model, a.uri, m.owner_pid);
        return;
      }
    }
    fmt::print("removed model {} from {}\n", a.model, a.uri);
    return;
  }
  remove_pool(a.uri, a.force);  // only a pool, and only when nobody can be attached
  fmt::print("removed pool {}\n", a.uri);
}

void pool_reclaim(const PoolArgs& a) {
  auto pool = Pool::attach(open_backend(a.uri), PoolRole::kWriter);
  const auto n = pool->reclaim_abandoned();
  fmt::print("reclaimed {} abandoned model(s) in {}\n", n, a.uri);
}

std::atomic<bool> g_stop{false};
extern "C" void on_stop_signal(int) { g_stop.store(true); }

// "HOST:PORT" or "[ADDR]:PORT"; PORT 0 picks a free one.
void parse_listen(const std::string& text, PoolServerOptions& o) {
  const auto bad = [&] {
    return ConfigError(fmt::format("--listen '{}': expected HOST:PORT or [ADDR]:PORT", text));
  };
  std::string host, port;
  if (!text.empty() && text.front() == '[') {
    const auto close = text.find(']');
    if (close == std::string::npos || close + 1 >= text.size() || text[close + 1] != ':')
      throw bad();
    host = text.substr(1, close - 1);
    port = text.substr(close + 2);
  } else {
    const auto colon = text.rfind(':');
    if (colon == std::string::npos || text.find(':') != colon) throw bad();
    host = text.substr(0, colon);
    port = text.substr(colon + 1);
  }
  if (host.empty() || port.empty() || port.size() > 5 ||
      port.find_first_not_of("0123456789") != std::string::npos || std::stoul(port) > 65535) {
    throw bad();
  }
  o.listen_host = host;
  o.port = static_cast<std::uint16_t>(std::stoul(port));
}

void pool_serve(const PoolArgs& a, const std::string& listen, const std::string& name,
                std::uint32_t handshake_ms, const std::vector<std::string>& allow) {
  PoolServerOptions o;
  parse_listen(listen, o);
  o.name = name;
  o.allow = allow;
  o.handshake_timeout_ms = handshake_ms;
  PoolServer server(a.uri, o);
  struct sigaction sa {};
  sa.sa_handler = &on_stop_signal;
  sigemptyset(&sa.sa_mask);
  ::sigaction(SIGINT, &sa, nullptr);
  ::sigaction(SIGTERM, &sa, nullptr);
  if (allow.empty() && o.listen_host != "127.0.0.1" && o.listen_host != "::1" &&
      o.listen_host != "localhost") {
    logger().warn(
        "pool server: every host that reaches {} may connect; UCX is not a security boundary "
        "(docs/security.md): list trusted clients with --allow",
        listen);
  }
  fmt::print("serving pool {} as {}\n", a.uri, server.client_uri());
  std::fflush(stdout);
  if (logger().level() > spdlog::level::info) set_log_level(spdlog::level::info);  // logs clients
  server.serve(&g_stop);
  const auto s = server.stats();
  fmt::print("stopped: {} client(s) attached, {} refused\n", s.clients_attached, s.clients_refused);
}

}  // namespace

void add_pool_commands(CLI::App& app) {
  auto args = std::make_shared<PoolArgs>();
  CLI::App* pool = app.add_subcommand("pool", "create, inspect and remove pools");
  pool->require_subcommand(1);

  CLI::App* create = pool->add_subcommand("create", "create an empty pool");
  create
      ->add_option("uri", args->uri,
                   "shm://NAME, file:///PATH, dax:///dev/daxX.Y or numa://NODE/NAME")
      ->required();
  create->add_option("--size", args->size, "pool size, e.g. 512M, 4G")
      ->capture_default_str()
      ->check(size_in(1, UINT64_MAX));
  // The catalog limits Pool::create enforces, refused here with the option's name.
  create->add_option("--max-models", args->max_models, "models the catalog can hold (1..64)")
      ->capture_default_str()
      ->check(integer_in(1, 64));
  create
      ->add_option("--max-tensors", args->max_tensors, "tensors the catalog can hold (1..16777216)")
      ->capture_default_str()
      ->check(integer_in(1, 1u << 24));
  create->add_flag("--json", args->json, "print the pool's stats as JSON");
  create->callback([args] { pool_create(*args); });

  CLI::App* info = pool->add_subcommand("info", "show a pool's layout, models and link counters");
  info->add_option("uri", args->uri, "the pool's URI")->required();
  info->add_flag("--json", args->json, "print JSON");
  info->callback([args] { pool_info(*args); });

  CLI::App* rm = pool->add_subcommand("rm", "remove a pool, or one model from it");
  rm->add_option("uri", args->uri, "the pool's URI")->required();
  rm->add_option("--model", args->model, "remove only this model");
  rm->add_flag(
      "--force", args->force,
      "remove even while other processes are attached. Unsafe with --model: processes still "
      "reading that model keep reading its old space, and once a later load reuses the space they "
      "read another model's bytes (wrong answers; silent under --no-verify). Without --model, "
      "attached processes keep the old pool until they exit");
  rm->callback([args] { pool_rm(*args); });

  CLI::App* reclaim =
      pool->add_subcommand("reclaim", "free models whose loader died before sealing");
  reclaim->add_option("uri", args->uri, "the pool's URI")->required();
  reclaim->callback([args] { pool_reclaim(*args); });

  auto listen = std::make_shared<std::string>();
  auto name = std::make_shared<std::string>();
  auto handshake_ms = std::make_shared<std::uint32_t>(5000);
  CLI::App* serve = pool->add_subcommand(
      "serve", "serve a pool to other hosts over UCX (read-only) until SIGINT or SIGTERM");
  serve->add_option("uri", args->uri, "the pool's URI on this host")->required();
  serve->add_option("--listen", *listen, "HOST:PORT to listen on (PORT 0: a free one)")->required();
  serve->add_option("--name", *name,
                    "the name clients ask for (ucx://HOST:PORT/NAME); default: the pool's own");
  serve
      ->add_option("--handshake-timeout-ms", *handshake_ms,
                   "drop a client that has not authenticated after this long (1..600000)")
      ->capture_default_str()
      ->check(integer_in(1, 600000));
  auto allow = std::make_shared<std::vector<std::string>>();
  serve->add_option("--allow", *allow,
                    "client addresses allowed to connect, CIDR (repeatable: 10.0.0.0/8, "
                    "192.168.1.7, fd00::/8); default: any that reaches the port");
  serve->callback([args, listen, name, handshake_ms, allow] {
    pool_serve(*args, *listen, *name, *handshake_ms, *allow);
  });
}

}  // namespace xlshare::cli
