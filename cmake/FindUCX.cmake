# Finds UCX's UCP library (Debian: libucx-dev) and defines the imported target UCX::ucp.
find_path(UCX_INCLUDE_DIR ucp/api/ucp.h)
find_library(UCX_UCP_LIBRARY NAMES ucp)
find_library(UCX_UCS_LIBRARY NAMES ucs)
include(FindPackageHandleStandardArgs)
find_package_handle_standard_args(UCX REQUIRED_VARS UCX_UCP_LIBRARY UCX_UCS_LIBRARY UCX_INCLUDE_DIR)
if(UCX_FOUND AND NOT TARGET UCX::ucp)
  add_library(UCX::ucp UNKNOWN IMPORTED)
  set_target_properties(UCX::ucp PROPERTIES IMPORTED_LOCATION "${UCX_UCP_LIBRARY}"
                        INTERFACE_INCLUDE_DIRECTORIES "${UCX_INCLUDE_DIR}"
                        INTERFACE_LINK_LIBRARIES "${UCX_UCS_LIBRARY}")
endif()
mark_as_advanced(UCX_INCLUDE_DIR UCX_UCP_LIBRARY UCX_UCS_LIBRARY)
