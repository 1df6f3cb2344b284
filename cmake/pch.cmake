# Precompiled headers (CONVERGE_PCH; ON by default, except in the sanitizer builds): the
# standard library and Boost.Asio/Beast/JSON headers that the HTTP code parses again in each of
# its files, compiled once per target (GCC refuses a precompiled header made with other flags,
# and -Winvalid-pch with -Werror makes that an error):
#   - converge_server, whose code is mostly HTTP and JSON; converge_client (HTTP too, same
#     flags) reuses it.
#   - the converge binary (converge_cli): the same headers and CLI11.
# Only third-party headers are precompiled, so no include of the project's own headers goes
# around the include roots that enforce the layers (cmake/layers.cmake). A build with
# CONVERGE_PCH=OFF checks that every file includes what it uses.
#
# Not the other modules, the tests or the benchmarks: GCC 12 at -O3 then reports false
# -Wstringop-overflow, -Warray-bounds and -Wstringop-overread inside the standard headers
# (std::string copies inlined into src/topology/manifest.cc and into 9 test files), which it
# keeps quiet about when the same headers are parsed (code in a system header); -Werror makes
# each an error. (The tests' share, GoogleTest and the standard library, was the larger one.)
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
