#include "option_checks.hpp"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <string>

#include <fmt/format.h>

namespace xlshare::cli {

CLI::Validator integer_in(std::uint64_t lo, std::uint64_t hi) {
  return CLI::Validator(
      [lo, hi](std::string& text) -> std::string {
        const auto digit = [](char c) { return c >= '0' && c <= '9'; };
        unsigned long long v = 0;
        bool ok =
            !text.empty() && text.size() <= 20 && std::all_of(text.begin(), text.end(), digit);
        if (ok) {
          errno = 0;
          v = std::strtoull(text.c_str(), nullptr, 10);
          ok = errno == 0 && v >= lo && v <= hi;
        }
        if (!ok) return fmt::format("'{}' is not an integer in {}..{}", text, lo, hi);
        text = std::to_string(v);  // "010" would be octal to CLI11's conversion
        return {};
      },
      fmt::format("{}..{}", lo, hi));
}

CLI::Validator real_in(double lo, double hi) {
  return CLI::Validator(
      [lo, hi](std::string& text) -> std::string {
        char* end = nullptr;
        errno = 0;
        const double v = text.empty() ? 0.0 : std::strtod(text.c_str(), &end);
        // !(v >= lo) also refuses NaN, which compares false with everything.
        if (text.empty() || end != text.c_str() + text.size() || errno != 0 || !std::isfinite(v) ||
            !(v >= lo) || !(v <= hi)) {
          return fmt::format("'{}' is not a number in {}..{}", text, lo, hi);
        }
        return {};
      },
      fmt::format("{}..{}", lo, hi));
}

}  // namespace xlshare::cli
