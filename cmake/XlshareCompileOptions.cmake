# Compile options shared by every xlshare target: warnings, sanitizers, CPU tuning.
add_library(xlshare_options INTERFACE)
add_library(xlshare::options ALIAS xlshare_options)
target_compile_options(xlshare_options INTERFACE
  $<$<CXX_COMPILER_ID:GNU,Clang>:-Wall -Wextra -Wpedantic -Wshadow -Wnon-virtual-dtor
     -Wold-style-cast -Wcast-align -Woverloaded-virtual>
  # GCC 12 false positives inside its own headers: -Wrestrict in std::string (GCC bug
  # 105329) and -Wmaybe-uninitialized in the AVX-512 intrinsics Eigen uses (GCC bug 105593).
  $<$<CXX_COMPILER_ID:GNU>:-Wno-restrict -Wno-maybe-uninitialized>)
if(XLSHARE_WARNINGS_AS_ERRORS)
  target_compile_options(xlshare_options INTERFACE -Werror)
endif()
if(XLSHARE_NATIVE)
  target_compile_options(xlshare_options INTERFACE -march=native)
  message(STATUS "XLSHARE_NATIVE: tuned for this CPU; do not install or package this build")
endif()
if(XLSHARE_SANITIZE_ADDRESS AND XLSHARE_SANITIZE_THREAD)
  message(FATAL_ERROR "XLSHARE_SANITIZE_ADDRESS and XLSHARE_SANITIZE_THREAD cannot be combined")
endif()
if(XLSHARE_SANITIZE_ADDRESS)
  target_compile_options(xlshare_options INTERFACE -fsanitize=address,undefined -fno-omit-frame-pointer
                                                   -fno-sanitize-recover=undefined)
  target_link_options(xlshare_options INTERFACE -fsanitize=address,undefined)
endif()
if(XLSHARE_SANITIZE_THREAD)
  target_compile_options(xlshare_options INTERFACE -fsanitize=thread -fno-omit-frame-pointer)
  target_link_options(xlshare_options INTERFACE -fsanitize=thread)
endif()
if(XLSHARE_BUILD_FUZZERS)
  if(NOT CMAKE_CXX_COMPILER_ID STREQUAL "Clang")
    message(FATAL_ERROR "XLSHARE_BUILD_FUZZERS needs clang (CC=clang CXX=clang++)")
  endif()
  # Coverage for libFuzzer in everything the targets call, and ASan + UBSan throughout.
  target_compile_options(xlshare_options INTERFACE -fsanitize=fuzzer-no-link,address,undefined -fno-omit-frame-pointer)
  target_link_options(xlshare_options INTERFACE -fsanitize=address,undefined)
endif()
