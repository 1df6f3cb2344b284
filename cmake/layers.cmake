# The layers of libconverge (docs/ARCHITECTURE.md, "Layers"), enforced by the build.
#
# Every folder src/<module>/ is one module and compiles into the object library
# converge_<module>; libconverge (target `converge`) is all of them in one library. A module's
# sources and unit tests reach another module's headers ("log/topic.h") only through their
# include root, a folder of the build tree (layers/<module>/) that holds one symbolic link per
# module it may use, itself included. So an include of a module the table below does not allow
# fails to compile ("No such file or directory"). The public headers (include/converge/) are
# on every include path. tests/layers (layers_test) proves the enforcement and checks that the
# table in docs/ARCHITECTURE.md is the one below.
#
# converge_layer(<module> <layer> [USES <module>...] [PUBLIC <header>...])
#   USES: the modules whose code (public API or internal headers) this module's code uses
#   directly. A module may also include what those may include (the root is the transitive
#   closure). A module uses modules of lower layers only, or of its own layer where listed;
#   a cycle is thus confined to one layer (core and env: each uses the other's types).
#   PUBLIC: the module's public headers, as paths (globs) under include/converge/. Every public
#   header has one owner; layers_test checks that a module (and a public header) includes only
#   public headers of the modules it may see, which the include path cannot enforce.
# A listed module whose folder does not exist yet is skipped (no target, no link).

set(CONVERGE_LAYER_NAMES core storage strategies edges)

set(CONVERGE_LAYER_MODULES "")
macro(converge_layer module layer)
  cmake_parse_arguments(_L "" "" "USES;PUBLIC" ${ARGN})
  list(APPEND CONVERGE_LAYER_MODULES ${module})
  set(CONVERGE_LAYER_OF_${module} ${layer})
  set(CONVERGE_LAYER_USES_${module} ${_L_USES})
  set(CONVERGE_LAYER_PUBLIC_${module} ${_L_PUBLIC})
endmacro()

#              module   layer  USES (direct)                           PUBLIC (include/converge/)
converge_layer(core     1 USES env                                PUBLIC status.h event.h hlc.h ids.h retry.h version.h)
converge_layer(env      1 USES core                               PUBLIC env.h sim_env.h)
converge_layer(wire     1 USES core)
converge_layer(log      2 USES core env                           PUBLIC log.h)
converge_layer(groups   2 USES core env log                       PUBLIC consumer_group.h)
converge_layer(sql      2 USES core env                           PUBLIC sql.h sql_statement.h)
converge_layer(jetstream 2 USES core env log)
converge_layer(schema   2 USES core)
converge_layer(cdc      2 USES core env)
converge_layer(lease    2 USES core env sql)
converge_layer(conflict 3 USES core env                           PUBLIC conflict/*.h)
converge_layer(outbox   3 USES core env log groups sql cdc        PUBLIC outbox.h relay.h inbox.h)
converge_layer(store    3 USES core env log sql conflict          PUBLIC store.h)
converge_layer(saga     3 USES core env log sql                   PUBLIC saga.h twopc.h choreography.h)
converge_layer(reconcile 3 USES core env sql)
converge_layer(topology 3 USES core env schema)
converge_layer(replica  3 USES core env log sql conflict reconcile PUBLIC replica.h)
converge_layer(audit    3 USES core env log)
converge_layer(server   4 USES core env wire log groups sql jetstream schema lease outbox store saga topology replica reconcile audit client)
converge_layer(client   4 USES core env wire log                  PUBLIC client.h)

# ---- checks of the table itself ----
foreach(m ${CONVERGE_LAYER_MODULES})
  foreach(u ${CONVERGE_LAYER_USES_${m}})
    if(NOT u IN_LIST CONVERGE_LAYER_MODULES)
      message(FATAL_ERROR "cmake/layers.cmake: ${m} uses ${u}, which is not in the table")
    endif()
    if(CONVERGE_LAYER_OF_${u} GREATER CONVERGE_LAYER_OF_${m})
      message(FATAL_ERROR "cmake/layers.cmake: ${m} (layer ${CONVERGE_LAYER_OF_${m}}) may not use "
        "${u} (layer ${CONVERGE_LAYER_OF_${u}}), a higher layer")
    endif()
  endforeach()
endforeach()
file(GLOB _dirs LIST_DIRECTORIES true RELATIVE ${CMAKE_SOURCE_DIR}/src ${CMAKE_SOURCE_DIR}/src/*)
foreach(d ${_dirs})
  if(IS_DIRECTORY ${CMAKE_SOURCE_DIR}/src/${d} AND NOT d IN_LIST CONVERGE_LAYER_MODULES)
    message(FATAL_ERROR "src/${d}/ is not in the layer table: add it to cmake/layers.cmake "
      "(and to the table in docs/ARCHITECTURE.md)")
  endif()
endforeach()

# ---- the closure: everything a module may include ----
foreach(m ${CONVERGE_LAYER_MODULES})
  set(_seen ${m})
  set(_todo ${CONVERGE_LAYER_USES_${m}})
  while(_todo)
    list(POP_FRONT _todo u)
    if(NOT u IN_LIST _seen)
      list(APPEND _seen ${u})
      list(APPEND _todo ${CONVERGE_LAYER_USES_${u}})
    endif()
  endwhile()
  # In table order, so include roots and the docs read the same way.
  set(CONVERGE_LAYER_SEES_${m} "")
  foreach(x ${CONVERGE_LAYER_MODULES})
    if(x IN_LIST _seen)
      list(APPEND CONVERGE_LAYER_SEES_${m} ${x})
    endif()
  endforeach()
endforeach()

# ---- include roots: layers/<module>/<visible module> -> src/<visible module> ----
set(CONVERGE_LAYERS_DIR ${CMAKE_BINARY_DIR}/layers)
# Only tests/support is shared with the unit tests; the black-box suites (tests/server) and
# their fixtures are not a module's to include.
set(CONVERGE_LAYER_TEST_ROOT ${CONVERGE_LAYERS_DIR}/test-support)

# Makes `dir` hold exactly the links `names` -> `targets`; leaves links that are already right
# alone.
function(_converge_sync_links dir names targets)
  file(MAKE_DIRECTORY ${dir})
  file(GLOB have LIST_DIRECTORIES true RELATIVE ${dir} ${dir}/*)
  foreach(h ${have})
    if(NOT h IN_LIST names)
      file(REMOVE ${dir}/${h})
    endif()
  endforeach()
  foreach(name target IN ZIP_LISTS names targets)
    if(IS_SYMLINK ${dir}/${name})
      file(READ_SYMLINK ${dir}/${name} current)
      if(current STREQUAL target)
        continue()
      endif()
      file(REMOVE ${dir}/${name})
    endif()
    file(CREATE_LINK ${target} ${dir}/${name} SYMBOLIC)
  endforeach()
endfunction()

set(CONVERGE_MODULES_PRESENT "")
foreach(m ${CONVERGE_LAYER_MODULES})
  if(IS_DIRECTORY ${CMAKE_SOURCE_DIR}/src/${m})
    list(APPEND CONVERGE_MODULES_PRESENT ${m})
  endif()
endforeach()
foreach(m ${CONVERGE_MODULES_PRESENT})
  set(_names "")
  set(_targets "")
  foreach(x ${CONVERGE_LAYER_SEES_${m}})
    if(x IN_LIST CONVERGE_MODULES_PRESENT)
      list(APPEND _names ${x})
      list(APPEND _targets ${CMAKE_SOURCE_DIR}/src/${x})
    endif()
  endforeach()
  _converge_sync_links(${CONVERGE_LAYERS_DIR}/${m} "${_names}" "${_targets}")
endforeach()
_converge_sync_links(${CONVERGE_LAYER_TEST_ROOT} support ${CMAKE_SOURCE_DIR}/tests/support)

# converge_layer_includes(<target> <module> [TESTS]): <target>'s private include root is
# <module>'s; TESTS adds the shared test fixtures (tests/support as "support/...").
function(converge_layer_includes target module)
  if(NOT module IN_LIST CONVERGE_MODULES_PRESENT)
    message(FATAL_ERROR "converge_layer_includes: no module ${module}")
  endif()
  target_include_directories(${target} PRIVATE ${CONVERGE_LAYERS_DIR}/${module})
  if("TESTS" IN_LIST ARGN)
    target_include_directories(${target} PRIVATE ${CONVERGE_LAYER_TEST_ROOT})
  endif()
endfunction()

# ---- one object library per module; libconverge is all of them ----
foreach(m ${CONVERGE_MODULES_PRESENT})
  add_library(converge_${m} OBJECT)
  converge_layer_includes(converge_${m} ${m})
  target_include_directories(converge_${m} PRIVATE ${CMAKE_SOURCE_DIR}/include)
  target_compile_options(converge_${m} PRIVATE ${CONVERGE_WARNINGS})
  target_compile_definitions(converge_${m} PRIVATE BOOST_ASIO_NO_DEPRECATED)
  # For their headers only: libconverge links them.
  target_link_libraries(converge_${m} PRIVATE ${CONVERGE_THIRD_PARTY})
  target_sources(converge PRIVATE $<TARGET_OBJECTS:converge_${m}>)
endforeach()

# Fails the configure if a module added its sources to `converge` itself: they would compile
# without a layer (call at the end, after every module's folder).
function(converge_check_layer_sources)
  get_target_property(sources converge SOURCES)
  foreach(s ${sources})
    if(NOT s MATCHES "^\\$<TARGET_OBJECTS:converge_")
      message(FATAL_ERROR "${s} is a source of `converge` itself; a module adds its sources "
        "to its own layer target: target_sources(converge_<module> PRIVATE ...) "
        "(cmake/layers.cmake)")
    endif()
  endforeach()
endfunction()

# ---- the table for docs/ARCHITECTURE.md (layers_test compares the two) ----
set(_md "| layer | module | uses | may include (its include root) | public headers |\n")
string(APPEND _md "| --- | --- | --- | --- | --- |\n")
foreach(m ${CONVERGE_LAYER_MODULES})
  set(l ${CONVERGE_LAYER_OF_${m}})
  math(EXPR li "${l} - 1")
  list(GET CONVERGE_LAYER_NAMES ${li} lname)
  list(JOIN CONVERGE_LAYER_USES_${m} ", " uses)
  list(JOIN CONVERGE_LAYER_SEES_${m} ", " sees)
  if(uses STREQUAL "")
    set(uses "-")
  endif()
  set(pub "")
  foreach(h ${CONVERGE_LAYER_PUBLIC_${m}})
    string(APPEND pub ", `${h}`")
  endforeach()
  string(REGEX REPLACE "^, " "" pub "${pub}")
  if(pub STREQUAL "")
    set(pub "-")
  endif()
  string(APPEND _md "| ${l}. ${lname} | `src/${m}/` | ${uses} | ${sees} | ${pub} |\n")
endforeach()
file(CONFIGURE OUTPUT ${CONVERGE_LAYERS_DIR}/layers.md CONTENT "${_md}" @ONLY)

# What layers_test needs to know: each module's closure and public headers.
set(_cm "")
foreach(m ${CONVERGE_LAYER_MODULES})
  string(APPEND _cm "set(SEES_${m} \"${CONVERGE_LAYER_SEES_${m}}\")\n")
  string(APPEND _cm "set(PUBLIC_${m} \"${CONVERGE_LAYER_PUBLIC_${m}}\")\n")
endforeach()
string(APPEND _cm "set(MODULES \"${CONVERGE_LAYER_MODULES}\")\n")
string(APPEND _cm "set(PRESENT \"${CONVERGE_MODULES_PRESENT}\")\n")
file(CONFIGURE OUTPUT ${CONVERGE_LAYERS_DIR}/layers_table.cmake CONTENT "${_cm}" @ONLY)
