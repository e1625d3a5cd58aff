#include "xlshare/log.hpp"

#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include <mutex>

namespace xlshare {
namespace {

std::mutex g_mu;
std::shared_ptr<spdlog::logger> g_logger;  // under g_mu

std::shared_ptr<spdlog::logger> make_default() {
  auto l = std::make_shared<spdlog::logger>("xlshare",
                                            std::make_shared<spdlog::sinks::stderr_sink_mt>());
  l->set_level(spdlog::level::warn);
  l->set_pattern("xlshare: %l: %v");
  return l;
}

}  // namespace

spdlog::logger& logger() {
  std::lock_guard lock(g_mu);
  if (!g_logger) {
    g_logger = make_default();
    spdlog::drop("xlshare");
    spdlog::register_logger(g_logger);
  }
  return *g_logger;
}

void set_log_level(spdlog::level::level_enum level) { logger().set_level(level); }

void set_logger(std::shared_ptr<spdlog::logger> replacement) {
  std::lock_guard lock(g_mu);
  g_logger = replacement ? std::move(replacement) : make_default();
  spdlog::drop("xlshare");
  spdlog::register_logger(g_logger);
}

}  // namespace xlshare
