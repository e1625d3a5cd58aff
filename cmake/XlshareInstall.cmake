# cmake --install: headers, libraries, the CMake package (xlshare-config.cmake, its version
# file and one export set per component) and pkg-config files (xlshare-core.pc, xlshare.pc)
# that find the prefix from where they lie, so the tree can be installed or moved anywhere.
include(CMakePackageConfigHelpers)
set(XLSHARE_CMAKE_DIR "${CMAKE_INSTALL_LIBDIR}/cmake/xlshare")

install(DIRECTORY include/xlshare DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
foreach(component core engine)
  install(EXPORT xlshare-${component}-targets NAMESPACE xlshare:: DESTINATION ${XLSHARE_CMAKE_DIR})
endforeach()
configure_package_config_file(cmake/xlshare-config.cmake.in
  "${PROJECT_BINARY_DIR}/xlshare-config.cmake" INSTALL_DESTINATION ${XLSHARE_CMAKE_DIR})
write_basic_package_version_file("${PROJECT_BINARY_DIR}/xlshare-config-version.cmake"
  COMPATIBILITY SameMinorVersion)
install(FILES "${PROJECT_BINARY_DIR}/xlshare-config.cmake"
              "${PROJECT_BINARY_DIR}/xlshare-config-version.cmake"
              cmake/Findxxhash.cmake cmake/FindNUMA.cmake cmake/FindUCX.cmake
        DESTINATION ${XLSHARE_CMAKE_DIR})

# pkg-config: the prefix is ${pcfiledir} less the path from the prefix to the .pc files.
set(XLSHARE_PC_DIR "${CMAKE_INSTALL_LIBDIR}/pkgconfig")
file(RELATIVE_PATH XLSHARE_PC_TO_PREFIX "/prefix/${XLSHARE_PC_DIR}" "/prefix")
string(REGEX REPLACE "/$" "" XLSHARE_PC_TO_PREFIX "${XLSHARE_PC_TO_PREFIX}")
# One Requires line (pkg-config 0.29 keeps only the last of two): a static libxlshare_core
# needs its own dependencies linked by the user; a shared one carries them.
set(XLSHARE_PC_DEPS "libxxhash numa")
if(XLSHARE_UCX)
  string(APPEND XLSHARE_PC_DEPS " ucx")
endif()
if(BUILD_SHARED_LIBS)
  set(XLSHARE_PC_STATIC_REQUIRES "")
  set(XLSHARE_PC_PRIVATE_LINE "Requires.private: ${XLSHARE_PC_DEPS}\n")
else()
  set(XLSHARE_PC_STATIC_REQUIRES " ${XLSHARE_PC_DEPS}")
  set(XLSHARE_PC_PRIVATE_LINE "")
endif()
configure_file(cmake/xlshare-core.pc.in "${PROJECT_BINARY_DIR}/xlshare-core.pc" @ONLY)
configure_file(cmake/xlshare.pc.in "${PROJECT_BINARY_DIR}/xlshare.pc" @ONLY)
install(FILES "${PROJECT_BINARY_DIR}/xlshare-core.pc" "${PROJECT_BINARY_DIR}/xlshare.pc"
        DESTINATION ${XLSHARE_PC_DIR})
