#include "xlshare/dtype.hpp"

namespace xlshare {

std::string_view to_string(DType t) noexcept {
  // By value: DType's values are 0..14 (dtype_is_valid).
  static constexpr std::string_view kNames[] = {"f32",  "f16",  "bf16", "q8_0", "i32",
                                                "u8",   "q4_0", "q4_1", "q5_0", "q5_1",
                                                "q2_k", "q3_k", "q4_k", "q5_k", "q6_k"};
  const auto raw = static_cast<std::uint32_t>(t);
  return dtype_is_valid(raw) ? kNames[raw] : "unknown";
}

std::optional<DType> parse_dtype(std::string_view name) noexcept {
  for (std::uint32_t raw = 0; dtype_is_valid(raw); ++raw) {
    const auto t = static_cast<DType>(raw);
    if (to_string(t) == name) return t;
  }
  return std::nullopt;
}

}  // namespace xlshare
