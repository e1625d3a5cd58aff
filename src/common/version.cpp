#include "xlshare/version.hpp"

#define XLSHARE_STRINGIFY_(x) #x
#define XLSHARE_STRINGIFY(x) XLSHARE_STRINGIFY_(x)

namespace xlshare {

const char* version() noexcept {
  return XLSHARE_STRINGIFY(XLSHARE_VERSION_MAJOR) "." XLSHARE_STRINGIFY(
      XLSHARE_VERSION_MINOR) "." XLSHARE_STRINGIFY(XLSHARE_VERSION_PATCH);
}

}  // namespace xlshare
