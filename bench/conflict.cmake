# conflict_bench: Google Benchmark program for the conflict module (issue 6).
# Included from src/conflict/CMakeLists.txt; the binary lands in ${CMAKE_BINARY_DIR}/bench/.
# Built with the other benchmarks (CONVERGE_BUILD_BENCH, the top CMakeLists.txt).
if(CONVERGE_BUILD_BENCH)
  add_executable(conflict_bench ${CMAKE_SOURCE_DIR}/bench/conflict_bench.cc)
  set_target_properties(conflict_bench PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/bench)
  target_compile_options(conflict_bench PRIVATE ${CONVERGE_WARNINGS})
  target_link_libraries(conflict_bench PRIVATE converge benchmark::benchmark)
endif()
