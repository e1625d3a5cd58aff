// Logging: every message of the library goes to one named spdlog logger, "xlshare".
//
// By default it writes to stderr at level `warn` (problems only: a quarantined model, a
// lock taken over from a dead process, a link slower than configured). `info` adds the
// key events: a pool attached, a model loaded or attached, a transfer failed over to the
// replica, a tile that failed its check. `debug` adds retries. A host program sets the
// level with set_log_level() (or spdlog::get("xlshare")->set_level), or hands xlshare a
// logger of its own, with its own sinks, through set_logger(). Logging is on cold paths
// only: nothing per tensor or per token logs below `debug`.
#pragma once

#include <spdlog/logger.h>

#include <memory>

namespace xlshare {

/// The "xlshare" logger (created on first use, registered with spdlog).
spdlog::logger& logger();
/// Sets the level of the "xlshare" logger.
void set_log_level(spdlog::level::level_enum level);
/// Replaces the "xlshare" logger (its name should be "xlshare"; nullptr restores the
/// default stderr logger).
void set_logger(std::shared_ptr<spdlog::logger> replacement);

}  // namespace xlshare
