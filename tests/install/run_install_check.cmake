# Installs the build tree into a fresh prefix, moves the prefix elsewhere (the package must
# be relocatable), and builds against it: the CMake package whole and core-only (with Eigen
# made unfindable, and checked absent from the link line), the examples' conformance test
# against the installed suites, and a program compiled with nothing but pkg-config's flags.
file(REMOVE_RECURSE "${WORK_DIR}")
file(MAKE_DIRECTORY "${WORK_DIR}")
set(installed "${WORK_DIR}/installed")
set(prefix "${WORK_DIR}/moved")

function(run)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "command failed (${rc}): ${ARGN}\n${out}\n${err}")
  endif()
  message(STATUS "${out}")
endfunction()

run(${CMAKE_COMMAND} --install "${XLSHARE_BUILD_DIR}" --prefix "${installed}")
file(RENAME "${installed}" "${prefix}")
file(GLOB_RECURSE pc_files "${prefix}/*/xlshare-core.pc")
if(NOT pc_files)
  message(FATAL_ERROR "cmake --install did not install xlshare-core.pc")
endif()
list(GET pc_files 0 core_pc)
get_filename_component(pc_dir "${core_pc}" DIRECTORY)
foreach(f include/xlshare/xlshare.hpp include/xlshare/version.hpp
          include/xlshare/testing/memory_backend_conformance.hpp
          include/xlshare/testing/eviction_policy_conformance.hpp
          include/xlshare/testing/prefetch_policy_conformance.hpp)
  if(NOT EXISTS "${prefix}/${f}")
    message(FATAL_ERROR "cmake --install did not install ${f}")
  endif()
endforeach()

# The whole package, and the examples' classes against the installed conformance suites.
run(${CMAKE_COMMAND} -S "${CONSUMER_SOURCE_DIR}" -B "${WORK_DIR}/all" -G "${GENERATOR}"
    -DCMAKE_PREFIX_PATH=${prefix} -DCMAKE_BUILD_TYPE=Release -DEXAMPLES_DIR=${EXAMPLES_DIR})
run(${CMAKE_COMMAND} --build "${WORK_DIR}/all" -j2)
run("${WORK_DIR}/all/consumer")
run("${WORK_DIR}/all/examples_conformance")

# Core only: Eigen may not even be findable, and nothing of it or of OpenMP is linked.
run(${CMAKE_COMMAND} -S "${CONSUMER_SOURCE_DIR}" -B "${WORK_DIR}/core" -G "${GENERATOR}"
    -DCMAKE_PREFIX_PATH=${prefix} -DCMAKE_BUILD_TYPE=Release -DCORE_ONLY=ON
    -DCMAKE_DISABLE_FIND_PACKAGE_Eigen3=TRUE)
run(${CMAKE_COMMAND} --build "${WORK_DIR}/core" -j2)
run("${WORK_DIR}/core/consumer")
if(EXISTS "${WORK_DIR}/core/CMakeFiles/consumer.dir/link.txt")
  file(READ "${WORK_DIR}/core/CMakeFiles/consumer.dir/link.txt" link_line)
else()
  file(STRINGS "${WORK_DIR}/core/build.ninja" link_line REGEX "LINK_LIBRARIES")
endif()
if(NOT link_line MATCHES "xlshare_core")
  message(FATAL_ERROR "no link line of the core consumer found: ${link_line}")
endif()
if(link_line MATCHES "[Ee]igen|omp|xlshare_engine")
  message(FATAL_ERROR "the core consumer links more than xlshare::core: ${link_line}")
endif()

# The engine component alone (core is loaded first, as it depends on it).
run(${CMAKE_COMMAND} -S "${CONSUMER_SOURCE_DIR}" -B "${WORK_DIR}/engine" -G "${GENERATOR}"
    -DCMAKE_PREFIX_PATH=${prefix} -DCMAKE_BUILD_TYPE=Release -DENGINE_ONLY=ON)
run(${CMAKE_COMMAND} --build "${WORK_DIR}/engine" -j2)
run("${WORK_DIR}/engine/consumer")

# pkg-config from the moved prefix: the flags name it, and they build and link the consumer.
find_program(PKG_CONFIG pkg-config REQUIRED)
set(ENV{PKG_CONFIG_PATH} "${pc_dir}")
execute_process(COMMAND ${PKG_CONFIG} --cflags --libs xlshare-core OUTPUT_VARIABLE flags
                OUTPUT_STRIP_TRAILING_WHITESPACE RESULT_VARIABLE rc)
if(NOT rc EQUAL 0 OR NOT flags MATCHES "moved")
  message(FATAL_ERROR "pkg-config xlshare-core from ${pc_dir}: '${flags}'")
endif()
file(STRINGS "${core_pc}" requires_lines REGEX "^Requires:")
list(LENGTH requires_lines n_requires)
if(NOT n_requires EQUAL 1)
  message(FATAL_ERROR "xlshare-core.pc has ${n_requires} Requires lines (pkg-config 0.29 reads the last only)")
endif()
execute_process(COMMAND ${PKG_CONFIG} --exists xlshare RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "pkg-config cannot resolve xlshare from ${pc_dir}")
endif()
separate_arguments(flag_list UNIX_COMMAND "${flags}")
run(${CXX} "${CONSUMER_SOURCE_DIR}/consumer.cpp" -o "${WORK_DIR}/pc_consumer" ${flag_list})
run("${WORK_DIR}/pc_consumer")
