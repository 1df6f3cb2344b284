# layers_test: proves that the build enforces the layer table of cmake/layers.cmake.
#   1. Every module's include root (LAYERS_DIR/<module>/) holds exactly the modules the table
#      lets it see, each a link to its folder in src/.
#   2. Probes: a one-line file that includes one header of another module, compiled with a
#      module's include root as its build compiles its sources. An include the table forbids
#      must fail with "No such file or directory" for that very header; the same header must
#      be found, with all it includes, from a root that may see it (so a probe cannot fail for
#      another reason), and allowed includes must compile (so the test cannot pass vacuously).
#   3. Nothing gets around the roots: no source includes "../", and no CMakeLists.txt of a
#      module or a suite puts src/ itself on an include path.
#   4. Every public header (include/converge/) has one owner module in the table, and a module's
#      files and public headers include only public headers of modules it may see (a check of
#      the text: the public headers are on every include path).
#   5. The layer table in docs/ARCHITECTURE.md is the one the build generated (layers.md).
# Run by ctest: cmake -DCXX=... -DSOURCE_DIR=... -DLAYERS_DIR=... -DTEST_ROOT=... -DWORK_DIR=...
#   -P check_layers.cmake
cmake_minimum_required(VERSION 3.25)
include(${LAYERS_DIR}/layers_table.cmake)  # MODULES, PRESENT, SEES_<module>
set(failures "")
set(checks 0)
macro(fail)
  string(APPEND failures "  - " ${ARGN} "\n")
endmacro()

# ---- 1. the include roots ----
foreach(m ${PRESENT})
  file(GLOB have LIST_DIRECTORIES true RELATIVE ${LAYERS_DIR}/${m} ${LAYERS_DIR}/${m}/*)
  set(want "")
  foreach(x ${SEES_${m}})
    if(x IN_LIST PRESENT)
      list(APPEND want ${x})
    endif()
  endforeach()
  list(SORT have)
  list(SORT want)
  math(EXPR checks "${checks} + 1")
  if(NOT have STREQUAL want)
    fail("include root of ${m} holds '${have}', the table says '${want}'")
  endif()
  foreach(x ${have})
    file(READ_SYMLINK ${LAYERS_DIR}/${m}/${x} target)
    if(NOT target STREQUAL "${SOURCE_DIR}/src/${x}")
      fail("${LAYERS_DIR}/${m}/${x} points to ${target}, not ${SOURCE_DIR}/src/${x}")
    endif()
  endforeach()
endforeach()

# ---- 2. probes ----
file(REMOVE_RECURSE ${WORK_DIR})
file(MAKE_DIRECTORY ${WORK_DIR})
set(probe_count 0)
# probe(<module>|SUITES <header> ALLOWED|FORBIDDEN [TESTS] [PREPROCESS]): TESTS compiles as
# the module's unit tests, SUITES as the suites under tests/; PREPROCESS only preprocesses.
function(probe module header expect)
  math(EXPR n "${probe_count} + 1")
  set(probe_count ${n} PARENT_SCOPE)
  if(NOT EXISTS ${SOURCE_DIR}/src/${header} AND NOT EXISTS ${SOURCE_DIR}/tests/${header})
    set(failures "${failures}  - probe header src/${header} is gone: pick another in tests/layers/check_layers.cmake\n" PARENT_SCOPE)
    return()
  endif()
  if(module STREQUAL "SUITES")  # the suites under tests/ (tests/server and the like)
    set(roots -I${SOURCE_DIR}/tests)
  else()
    set(roots -I${LAYERS_DIR}/${module})
  endif()
  set(what "${module}")
  if("TESTS" IN_LIST ARGN)
    list(APPEND roots -I${TEST_ROOT})
    set(what "${module}'s tests")
  endif()
  set(file ${WORK_DIR}/probe_${n}.cc)
  file(WRITE ${file} "// ${what} includes ${header}\n#include \"${header}\"\n")
  # Whether a header can be found is the preprocessor's question; a full parse (slower) is
  # for the includes that must compile.
  set(mode -fsyntax-only)
  if("PREPROCESS" IN_LIST ARGN)
    set(mode -E -o ${file}.i)
  endif()
  execute_process(
    COMMAND ${CXX} -std=c++20 ${mode} ${roots} -I${SOURCE_DIR}/include ${file}
    RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE out)
  if(expect STREQUAL "ALLOWED")
    if(NOT rc EQUAL 0)
      set(failures "${failures}  - ${what} may include ${header}, but it does not compile:\n${out}\n" PARENT_SCOPE)
    endif()
  else()
    string(FIND "${out}" "${header}: No such file or directory" at)
    if(rc EQUAL 0)
      set(failures "${failures}  - ${what} must not see ${header}, but it compiled\n" PARENT_SCOPE)
    elseif(at EQUAL -1)
      set(failures "${failures}  - ${what} including ${header} failed, but not for want of the header:\n${out}\n" PARENT_SCOPE)
    endif()
  endif()
endfunction()

# forbidden(<module> <header> <owner> [TESTS]): <module> may not include <header>, which
# compiles for <owner> (a module or SUITES).
function(forbidden module header owner)
  probe(${owner} ${header} ALLOWED PREPROCESS)
  probe(${module} ${header} FORBIDDEN PREPROCESS ${ARGN})
  set(probe_count ${probe_count} PARENT_SCOPE)
  set(failures "${failures}" PARENT_SCOPE)
endfunction()

# Upward: an edge into the server, the log below the server, core below the log.
forbidden(client server/metrics.h server)
forbidden(wire server/metrics.h server)
forbidden(log server/metrics.h server)
forbidden(log server/metrics.h server TESTS)
forbidden(core log/topic.h log)
forbidden(env log/topic.h log)
forbidden(groups outbox/outbox_row.h outbox)
forbidden(log groups/group.h groups)
# Sideways: strategies that do not use each other; an edge that does not use a strategy.
forbidden(store saga/records.h saga)
forbidden(outbox store/format.h store)
forbidden(saga outbox/outbox_row.h outbox)
forbidden(conflict log/topic.h log)
forbidden(client store/format.h store)
# Unit tests share tests/support only, not the black-box suites' fixtures.
forbidden(store server/serve_process.h SUITES TESTS)
# What the table allows compiles.
probe(client wire/wire_format.h ALLOWED)
probe(server wire/wire_format.h ALLOWED)
probe(log env/metered_env.h ALLOWED)
probe(conflict core/event_internal.h ALLOWED)
probe(store log/topic.h ALLOWED)
probe(server store/format.h ALLOWED)
probe(store support/kill_after_lines.h ALLOWED TESTS)
math(EXPR checks "${checks} + ${probe_count}")

# ---- 3. no way around the roots ----
file(GLOB_RECURSE sources ${SOURCE_DIR}/src/*.h ${SOURCE_DIR}/src/*.cc)
foreach(f ${sources})
  file(STRINGS ${f} lines REGEX "^[ \t]*#[ \t]*include[ \t]*\"\\.\\./")
  if(lines)
    fail("${f}: includes by a relative path out of its folder: ${lines}")
  endif()
endforeach()
file(GLOB_RECURSE lists ${SOURCE_DIR}/src/CMakeLists.txt ${SOURCE_DIR}/src/*.cmake
  ${SOURCE_DIR}/tests/CMakeLists.txt)
foreach(f ${lists})
  file(STRINGS ${f} lines REGEX "CMAKE_SOURCE_DIR}/src([ \t)\"]|$)")
  if(lines)
    fail("${f}: puts src/ on an include path (use converge_layer_includes): ${lines}")
  endif()
endforeach()
math(EXPR checks "${checks} + 2")

# ---- 4. public headers: one owner each; included only where the owner may be seen ----
set(include_dir ${SOURCE_DIR}/include/converge)
foreach(m ${MODULES})
  foreach(pattern ${PUBLIC_${m}})
    file(GLOB owned RELATIVE ${include_dir} ${include_dir}/${pattern})
    if(NOT owned)
      fail("cmake/layers.cmake: ${m}'s public header pattern '${pattern}' matches nothing")
    endif()
    foreach(h ${owned})
      if(DEFINED OWNER_${h})
        fail("include/converge/${h} has two owners: ${OWNER_${h}} and ${m}")
      endif()
      set(OWNER_${h} ${m})
    endforeach()
  endforeach()
endforeach()
file(GLOB_RECURSE public_headers RELATIVE ${include_dir} ${include_dir}/*.h)
# check_public_includes(<file> <module>): <file>, part of <module>, includes only public
# headers of modules <module> may see.
function(check_public_includes file module)
  file(STRINGS ${file} lines REGEX "^[ \t]*#[ \t]*include[ \t]*\"converge/")
  foreach(line ${lines})
    string(REGEX REPLACE "^[^\"]*\"converge/([^\"]+)\".*" "\\1" h "${line}")
    if(NOT DEFINED OWNER_${h})
      continue()  # reported below if it exists; the compiler reports it if not
    endif()
    if(NOT OWNER_${h} IN_LIST SEES_${module})
      string(REPLACE "${SOURCE_DIR}/" "" shown ${file})
      set(failures "${failures}  - ${shown} (${module}) includes converge/${h}, a public header of ${OWNER_${h}}, which ${module} may not use\n" PARENT_SCOPE)
    endif()
  endforeach()
endfunction()
foreach(h ${public_headers})
  if(NOT DEFINED OWNER_${h})
    fail("include/converge/${h} has no owner: add it to a module's PUBLIC list in cmake/layers.cmake")
  else()
    check_public_includes(${include_dir}/${h} ${OWNER_${h}})
  endif()
endforeach()
foreach(m ${PRESENT})
  file(GLOB_RECURSE files ${SOURCE_DIR}/src/${m}/*.h ${SOURCE_DIR}/src/${m}/*.cc)
  foreach(f ${files})
    check_public_includes(${f} ${m})
  endforeach()
endforeach()
math(EXPR checks "${checks} + 1")

# ---- 5. the docs show the build's table ----
set(begin_marker "<!-- layer table: generated by cmake/layers.cmake, checked by layers_test -->\n")
set(end_marker "<!-- end of layer table -->")
file(READ ${SOURCE_DIR}/docs/ARCHITECTURE.md doc)
file(READ ${LAYERS_DIR}/layers.md table)
string(FIND "${doc}" "${begin_marker}" b)
string(FIND "${doc}" "${end_marker}" e)
math(EXPR checks "${checks} + 1")
if(b EQUAL -1 OR e EQUAL -1)
  fail("docs/ARCHITECTURE.md has no layer table between the markers '${begin_marker}' and '${end_marker}'")
else()
  string(LENGTH "${begin_marker}" bl)
  math(EXPR start "${b} + ${bl}")
  math(EXPR len "${e} - ${start}")
  string(SUBSTRING "${doc}" ${start} ${len} doc_table)
  if(NOT doc_table STREQUAL table)
    fail("the layer table in docs/ARCHITECTURE.md differs from the build's (${LAYERS_DIR}/layers.md):\n${table}")
  endif()
endif()

if(failures)
  message(FATAL_ERROR "layers_test:\n${failures}")
endif()
message(STATUS "layers_test: ${checks} checks passed")
