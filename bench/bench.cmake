# `converge bench`: the benchmark harness (bench/) and the server fixtures it shares with the
# integration tests (tests/support/). Included at the end of tools/converge/CMakeLists.txt.
# Only the converge binary links the peers' clients (nats.c, hiredis), never libconverge.

# nats.c through pkg-config: Debian 12's cnats CMake package is unusable (its config names
# libnats_static.a, which libnats-dev does not ship, and find_package fails hard).
find_package(PkgConfig REQUIRED)
pkg_check_modules(NATS REQUIRED IMPORTED_TARGET libnats)
pkg_check_modules(HIREDIS REQUIRED IMPORTED_TARGET hiredis)

set(CONVERGE_BENCH_DIR ${CMAKE_SOURCE_DIR}/bench)
set(CONVERGE_TEST_SUPPORT_DIR ${CMAKE_SOURCE_DIR}/tests/support)

target_sources(converge_cli PRIVATE
  ${CONVERGE_BENCH_DIR}/report.cc
  ${CONVERGE_BENCH_DIR}/timing.cc
  ${CONVERGE_BENCH_DIR}/log_bench.cc
  ${CONVERGE_BENCH_DIR}/log_options.cc
  ${CONVERGE_BENCH_DIR}/log_workload.cc
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
  ${CONVERGE_BENCH_DIR}/saga_bench.cc
  ${CONVERGE_BENCH_DIR}/twopc_bench.cc
  ${CONVERGE_BENCH_DIR}/store_bench.cc
  ${CONVERGE_BENCH_DIR}/store_converge.cc
  ${CONVERGE_BENCH_DIR}/store_jetstream_kv.cc
  ${CONVERGE_BENCH_DIR}/store_postgres.cc
  ${CONVERGE_BENCH_DIR}/reconcile_bench.cc
  ${CONVERGE_BENCH_DIR}/topology_bench.cc
  ${CONVERGE_BENCH_DIR}/replica_bench.cc
  ${CONVERGE_TEST_SUPPORT_DIR}/server_process.cc
  ${CONVERGE_TEST_SUPPORT_DIR}/postgres_server.cc
)
target_include_directories(converge_cli PRIVATE ${CMAKE_SOURCE_DIR} ${CMAKE_SOURCE_DIR}/tests)
target_link_libraries(converge_cli PRIVATE PkgConfig::NATS PkgConfig::HIREDIS
  PostgreSQL::PostgreSQL Boost::headers)

converge_test(NAME bench_test LABELS unit LIBS Boost::json CLI11::CLI11 SOURCES
  ${CONVERGE_BENCH_DIR}/bench_test.cc
  ${CONVERGE_BENCH_DIR}/report.cc
  ${CONVERGE_BENCH_DIR}/timing.cc
  ${CONVERGE_BENCH_DIR}/log_options.cc
  ${CONVERGE_BENCH_DIR}/log_workload.cc
)
converge_test(NAME server_process_test LABELS integration TIMEOUT 120 SOURCES
  ${CONVERGE_TEST_SUPPORT_DIR}/server_process_test.cc
  ${CONVERGE_TEST_SUPPORT_DIR}/server_process.cc
)
if(TARGET bench_test)
  target_include_directories(bench_test PRIVATE ${CMAKE_SOURCE_DIR} ${CMAKE_SOURCE_DIR}/src)
endif()
# End to end through the binary (tiny workload, real servers): checks the output, not figures.
converge_test(NAME bench_smoke_test LABELS integration TIMEOUT 300 LIBS Boost::json SOURCES
  ${CONVERGE_BENCH_DIR}/bench_smoke_test.cc
  ${CONVERGE_TEST_SUPPORT_DIR}/server_process.cc
)
if(TARGET bench_smoke_test)
  add_dependencies(bench_smoke_test converge_cli)
endif()
