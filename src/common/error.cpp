#include "xlshare/error.hpp"

#include <cstring>

#include <fmt/format.h>

namespace xlshare {

std::string errno_message(const std::string& what, int errnum) {
  return fmt::format("{}: {} (errno {})", what, std::strerror(errnum), errnum);
}

}  // namespace xlshare
