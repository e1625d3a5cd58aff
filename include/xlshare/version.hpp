// The version of xlshare these headers belong to. CMakeLists.txt reads it from here: this
// file is the one place it is written.
#pragma once

#define XLSHARE_VERSION_MAJOR 0
#define XLSHARE_VERSION_MINOR 2
#define XLSHARE_VERSION_PATCH 0
/// One number that grows with every release: major * 10000 + minor * 100 + patch.
#define XLSHARE_VERSION \
  (XLSHARE_VERSION_MAJOR * 10000 + XLSHARE_VERSION_MINOR * 100 + XLSHARE_VERSION_PATCH)

namespace xlshare {

/// The version of the library linked in ("0.2.0"); compare with XLSHARE_VERSION to catch a
/// header/library mismatch.
const char* version() noexcept;

}  // namespace xlshare
