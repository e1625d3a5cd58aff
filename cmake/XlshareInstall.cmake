# cmake --install: headers, libraries, the CMake package (xlshare-config.cmake + version) and xlshare.pc.
include(CMakePackageConfigHelpers)
set(XLSHARE_CMAKE_DIR "${CMAKE_INSTALL_LIBDIR}/cmake/xlshare")

install(DIRECTORY include/xlshare DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(EXPORT xlshare-targets NAMESPACE xlshare:: DESTINATION ${XLSHARE_CMAKE_DIR})
configure_package_config_file(cmake/xlshare-config.cmake.in
  "${PROJECT_BINARY_DIR}/xlshare-config.cmake" INSTALL_DESTINATION ${XLSHARE_CMAKE_DIR})
write_basic_package_version_file("${PROJECT_BINARY_DIR}/xlshare-config-version.cmake"
  COMPATIBILITY SameMinorVersion)
install(FILES "${PROJECT_BINARY_DIR}/xlshare-config.cmake"
              "${PROJECT_BINARY_DIR}/xlshare-config-version.cmake"
              cmake/Findxxhash.cmake cmake/FindNUMA.cmake
        DESTINATION ${XLSHARE_CMAKE_DIR})

configure_file(cmake/xlshare.pc.in "${PROJECT_BINARY_DIR}/xlshare.pc" @ONLY)
install(FILES "${PROJECT_BINARY_DIR}/xlshare.pc" DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)
