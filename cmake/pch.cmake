# Precompiled headers (CONVERGE_PCH; ON by default, except in the sanitizer builds): the
# standard library, Boost.Asio/Beast/JSON and GoogleTest headers that hundreds of translation
# units would otherwise parse again each, compiled once per group of targets whose flags match
# (GCC refuses a precompiled header made with other flags, and -Winvalid-pch with -Werror makes
# that an error):
#   - converge_server, whose code is mostly HTTP and JSON: the standard library and
#     Boost.Asio/Beast/JSON; converge_client (HTTP too) reuses it. The other modules have none:
#     their files are light, and GCC 12 reported a false -Wstringop-overflow in one of them
#     (src/topology/manifest.cc) with a standard-library one that it does not report without
#     (see CONVERGE_PCH_TEST_OPTIONS below).
#   - every converge_test(): one of GoogleTest and the standard library (converge_test_pch).
#   - the converge binary (converge_cli): its own, with Boost.Beast/JSON and CLI11.
# Only third-party headers are precompiled, so no include of the project's own headers goes
# around the include roots that enforce the layers (cmake/layers.cmake). A build with
# CONVERGE_PCH=OFF checks that every file includes what it uses.
#
# With ccache, a compile that uses a precompiled header is cached only with the sloppiness
# pch_defines,time_macros (the top CMakeLists.txt sets it for the compiler launcher).

# Off by default in the sanitizer builds (make asan, make tsan): a precompiled header changes
# which of GCC's warnings fire (above), -Werror makes each an error, and those builds were not
# checked with them; nor are they the build with a time limit. -DCONVERGE_PCH=ON overrides.
if(CONVERGE_SANITIZE)
  set(converge_pch_default OFF)
else()
  set(converge_pch_default ON)
endif()
option(CONVERGE_PCH "Precompile the heavy third-party headers (faster cold builds)"
  ${converge_pch_default})

set(CONVERGE_PCH_STD
  <algorithm> <array> <atomic> <chrono> <condition_variable> <cstddef> <cstdint> <cstdio>
  <cstdlib> <cstring> <deque> <filesystem> <fstream> <functional> <map> <memory> <mutex>
  <optional> <set> <sstream> <string> <string_view> <thread> <tuple> <unordered_map>
  <unordered_set> <utility> <variant> <vector>)
set(CONVERGE_PCH_HTTP
  <boost/asio/as_tuple.hpp> <boost/asio/awaitable.hpp> <boost/asio/co_spawn.hpp>
  <boost/asio/connect.hpp> <boost/asio/detached.hpp> <boost/asio/io_context.hpp>
  <boost/asio/ip/tcp.hpp> <boost/asio/post.hpp> <boost/asio/steady_timer.hpp>
  <boost/asio/use_awaitable.hpp> <boost/beast/core.hpp> <boost/beast/http.hpp>
  <boost/json.hpp>)
set(CONVERGE_PCH_TEST <gtest/gtest.h> <gmock/gmock.h>)

# libconverge's object libraries (call after they exist).
function(converge_pch_modules)
  if(NOT CONVERGE_PCH)
    return()
  endif()
  if(TARGET converge_server)
    target_precompile_headers(converge_server PRIVATE ${CONVERGE_PCH_STD} ${CONVERGE_PCH_HTTP})
    if(TARGET converge_client)
      target_precompile_headers(converge_client REUSE_FROM converge_server)
    endif()
  endif()
endfunction()

# GCC 12 at -O3 reports std::string's copies (char_traits.h, inlined into a test) as
# -Wstringop-overflow and -Warray-bounds when the standard headers come from the precompiled
# header (9 test files); the same files compile without them when the headers are parsed (GCC
# then keeps quiet about code in a system header). So the tests, all of which use the
# precompiled header, do without these two warnings; the library and the binary keep them.
if(CMAKE_CXX_COMPILER_ID STREQUAL "GNU")
  set(CONVERGE_PCH_TEST_OPTIONS -Wno-stringop-overflow -Wno-array-bounds)
else()
  set(CONVERGE_PCH_TEST_OPTIONS "")
endif()

# The donor of the tests' precompiled header: a program with a test's flags (converge_test).
function(converge_pch_test_donor)
  if(NOT CONVERGE_PCH OR NOT CONVERGE_BUILD_TESTS)
    return()
  endif()
  set(src ${CMAKE_BINARY_DIR}/converge_test_pch.cc)
  file(CONFIGURE OUTPUT ${src} CONTENT "int main() { return 0; }\n")
  add_executable(converge_test_pch ${src})
  target_compile_options(converge_test_pch PRIVATE
    ${CONVERGE_WARNINGS} ${CONVERGE_PCH_TEST_OPTIONS})
  target_link_libraries(converge_test_pch PRIVATE GTest::gtest GTest::gmock)
  target_precompile_headers(converge_test_pch PRIVATE ${CONVERGE_PCH_STD} ${CONVERGE_PCH_TEST})
endfunction()

# A converge_test() program.
function(converge_pch_test target)
  if(CONVERGE_PCH)
    target_precompile_headers(${target} REUSE_FROM converge_test_pch)
    target_compile_options(${target} PRIVATE ${CONVERGE_PCH_TEST_OPTIONS})
  endif()
endfunction()
