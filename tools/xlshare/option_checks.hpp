// Checks of numeric command-line options, shared by the xlshare program and the demo.
// CLI11 reads "-3" into an unsigned as 2^64 - 3, "010" as octal and "nan" as a float that
// passes every range test, so every numeric option goes through one of these.
#pragma once

#include <CLI/CLI.hpp>
#include <cstdint>

namespace xlshare::cli {

/// An integer option: decimal digits only (no sign), in lo..hi.
CLI::Validator integer_in(std::uint64_t lo, std::uint64_t hi);
/// A real option: a finite number in lo..hi.
CLI::Validator real_in(double lo, double hi);

}  // namespace xlshare::cli
