#include "xlshare/dtype.hpp"

namespace xlshare {

std::string_view to_string(DType t) noexcept {
  switch (t) {
    case DType::kF32:
      return "f32";
    case DType::kF16:
      return "f16";
    case DType::kBF16:
      return "bf16";
    case DType::kQ8_0:
      return "q8_0";
    case DType::kI32:
      return "i32";
    case DType::kU8:
      return "u8";
  }
  return "unknown";
}

std::optional<DType> parse_dtype(std::string_view name) noexcept {
  for (std::uint32_t raw = 0; dtype_is_valid(raw); ++raw) {
    const auto t = static_cast<DType>(raw);
    if (to_string(t) == name) return t;
  }
  return std::nullopt;
}

}  // namespace xlshare
