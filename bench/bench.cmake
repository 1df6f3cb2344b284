# `converge bench`: the benchmark harness (bench/) and the server fixtures it shares with the
# integration tests (tests/support/). Included at the end of tools/converge/CMakeLists.txt.
# Only converge-bench links the peers' clients (nats.c, hiredis): never libconverge, never the
# converge binary.

# converge-bench is built when CONVERGE_BUILD_BENCH resolved to ON (the top CMakeLists.txt:
# nats.c, hiredis and Google Benchmark found, or required with -DCONVERGE_BUILD_BENCH=ON).
# nats.c through pkg-config: Debian 12's cnats CMake package is unusable (its config names
# libnats_static.a, which libnats-dev does not ship, and find_package fails hard).
set(CONVERGE_BENCH_DIR ${CMAKE_SOURCE_DIR}/bench)
set(CONVERGE_TEST_SUPPORT_DIR ${CMAKE_SOURCE_DIR}/tests/support)

# The parts bench_test checks (report rows, timing, the log workload and its options),
# compiled once for converge-bench and bench_test.
if(CONVERGE_BUILD_BENCH OR CONVERGE_BUILD_TESTS)
  add_library(converge_bench_core STATIC
    ${CONVERGE_BENCH_DIR}/report.cc
    ${CONVERGE_BENCH_DIR}/timing.cc
    ${CONVERGE_BENCH_DIR}/log_options.cc
    ${CONVERGE_BENCH_DIR}/log_workload.cc)
  target_include_directories(converge_bench_core PRIVATE
    ${CMAKE_SOURCE_DIR} ${CMAKE_SOURCE_DIR}/src)
  target_compile_options(converge_bench_core PRIVATE ${CONVERGE_WARNINGS})
  target_link_libraries(converge_bench_core PUBLIC converge Boost::json CLI11::CLI11)
endif()

if(CONVERGE_BUILD_BENCH)
  add_executable(converge_bench
    ${CONVERGE_BENCH_DIR}/main.cc
    ${CONVERGE_BENCH_DIR}/log_bench.cc
    ${CONVERGE_BENCH_DIR}/raw_disk.cc
    ${CONVERGE_BENCH_DIR}/jetstream.cc
    ${CONVERGE_BENCH_DIR}/redis_streams.cc
    ${CONVERGE_BENCH_DIR}/converge_log.cc
    ${CONVERGE_BENCH_DIR}/converge_server.cc
    ${CONVERGE_BENCH_DIR}/many_clients.cc
    ${CONVERGE_BENCH_DIR}/sidecar_process.cc
    ${CONVERGE_BENCH_DIR}/nats_util.cc
    ${CONVERGE_BENCH_DIR}/outbox_bench.cc
    ${CONVERGE_BENCH_DIR}/outbox_polling.cc
    ${CONVERGE_BENCH_DIR}/capture_bench.cc
    ${CONVERGE_BENCH_DIR}/saga_bench.cc
    ${CONVERGE_BENCH_DIR}/twopc_bench.cc
    ${CONVERGE_BENCH_DIR}/store_bench.cc
    ${CONVERGE_BENCH_DIR}/store_converge.cc
    ${CONVERGE_BENCH_DIR}/store_jetstream_kv.cc
    ${CONVERGE_BENCH_DIR}/store_postgres.cc
    ${CONVERGE_BENCH_DIR}/reconcile_bench.cc
    ${CONVERGE_BENCH_DIR}/topology_bench.cc
    ${CONVERGE_BENCH_DIR}/replica_bench.cc
    ${CONVERGE_BENCH_DIR}/client_publish.cc
    ${CONVERGE_BENCH_DIR}/push_bench.cc
  )
  # Beside the converge binary: `converge bench` runs it from there, and it starts
  # `converge serve` from there.
  set_target_properties(converge_bench PROPERTIES OUTPUT_NAME converge-bench
    RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR})
  target_include_directories(converge_bench PRIVATE ${CMAKE_SOURCE_DIR} ${CMAKE_SOURCE_DIR}/src
    ${CMAKE_SOURCE_DIR}/tests)
  target_compile_options(converge_bench PRIVATE ${CONVERGE_WARNINGS})
  # The server fixtures (server_process, postgres_server, nats_server) of tests/support.
  target_link_libraries(converge_bench PRIVATE converge_bench_core converge_test_support converge
    Boost::json Boost::headers CLI11::CLI11
    PkgConfig::NATS PkgConfig::HIREDIS PostgreSQL::PostgreSQL)
  # The benchmarks drive `converge serve`: building them builds it.
  add_dependencies(converge_bench converge_cli)
endif()

converge_test(NAME bench_test LABELS unit LIBS converge_bench_core Boost::json CLI11::CLI11 SOURCES
  ${CONVERGE_BENCH_DIR}/bench_test.cc
)
converge_test(NAME server_process_test LABELS integration TIMEOUT 120 SOURCES
  ${CONVERGE_TEST_SUPPORT_DIR}/server_process_test.cc
  ${CONVERGE_TEST_SUPPORT_DIR}/server_process.cc
)
if(TARGET bench_test)
  target_include_directories(bench_test PRIVATE ${CMAKE_SOURCE_DIR} ${CMAKE_SOURCE_DIR}/src)
endif()
# End to end through the binary (tiny workload, real servers): checks the output, not figures.
if(CONVERGE_BUILD_BENCH)
  converge_test(NAME bench_smoke_test LABELS integration TIMEOUT 300 LIBS Boost::json SOURCES
    ${CONVERGE_BENCH_DIR}/bench_smoke_test.cc
    ${CONVERGE_TEST_SUPPORT_DIR}/server_process.cc
  )
endif()
if(TARGET bench_smoke_test)
  add_dependencies(bench_smoke_test converge_cli converge_bench)
endif()
