// to_json/from_json of a plain struct from its field names, each field under its own name:
//   XLSHARE_JSON_TO(CacheStats, budget_bytes, bytes_resident, ...)
// defines `void to_json(nlohmann::json&, const CacheStats&)` (declared in the public header,
// so not inline as nlohmann's NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE would make it). Built on
// that macro's own field expansion. Private to src/.
#pragma once

#include <nlohmann/json.hpp>

#define XLSHARE_JSON_TO_FN(fn, Type, ...)                                    \
  void fn(nlohmann::json& nlohmann_json_j, const Type& nlohmann_json_t) {    \
    NLOHMANN_JSON_EXPAND(NLOHMANN_JSON_PASTE(NLOHMANN_JSON_TO, __VA_ARGS__)) \
  }
#define XLSHARE_JSON_TO(Type, ...) XLSHARE_JSON_TO_FN(to_json, Type, __VA_ARGS__)
#define XLSHARE_JSON_FROM_FN(fn, Type, ...)                                    \
  void fn(const nlohmann::json& nlohmann_json_j, Type& nlohmann_json_t) {      \
    NLOHMANN_JSON_EXPAND(NLOHMANN_JSON_PASTE(NLOHMANN_JSON_FROM, __VA_ARGS__)) \
  }
#define XLSHARE_JSON_FROM(Type, ...) XLSHARE_JSON_FROM_FN(from_json, Type, __VA_ARGS__)
