// One hook to run the black-box suites on another backend: ServeProcess::Start passes the
// test's configuration through WithTestBackend before writing it. The environment variable
// CONVERGE_TEST_BACKEND picks the backend (tests/server/CMakeLists.txt registers suites a
// second time with it set):
//   unset, "" or "embedded"  the configuration unchanged
//   "jetstream"              a nats-server with JetStream (started once per test process,
//                            stopped at exit) holds the log: `log: {backend: jetstream, ...}`
//                            with a stream prefix derived from `data_dir`, so a restart with
//                            the same data_dir finds the same streams and servers with
//                            different data_dirs share nothing.
// A test that sets `log:` itself keeps its own section. An unknown backend, or a server that
// cannot start, aborts the test process with a message (a test never silently runs on the
// wrong backend).
#pragma once

#include <string>

namespace converge::testing {

std::string WithTestBackend(std::string config_yaml, const std::string& data_dir);

// The backend named by CONVERGE_TEST_BACKEND ("embedded" when unset or empty).
std::string TestBackend();

}  // namespace converge::testing
