// The one hook that runs the black-box suites on a distributed backend: ServeProcess::Start
// passes every config through WithTestBackend before writing it. The backend comes from the
// environment variable CONVERGE_TEST_BACKEND:
//   unset, "" or "embedded"  the config unchanged (the embedded files);
//   "jetstream"              the log in a nats-server started once per test process, with a
//                            stream prefix unique to `data_dir`;
//   "postgres"               the store in a PostgreSQL 15 started once per test process, with
//                            a table prefix unique to `data_dir` (a restart with the same
//                            data_dir sees the same store; two processes with different
//                            data_dirs do not share one);
//   "cluster"                the "jetstream" log plus a cluster: section (tables unique to
//                            `data_dir`, lease ttl 1 s): every consumer group runs through
//                            the shared-groups path, its state in PostgreSQL.
// Keys the test sets itself are kept; the hook adds the backend's keys. A server the backend
// needs that cannot be started fails the test process (never a silent fallback).
// Thread-safety: call from the test thread.
#pragma once

#include <string>
#include <string_view>

namespace converge::testing {

// "embedded", "jetstream", "postgres" or "cluster" (from CONVERGE_TEST_BACKEND).
std::string TestBackend();
// "jetstream" also holds for "cluster" (its log is JetStream too).
inline bool TestBackendIs(std::string_view name) {
  const std::string backend = TestBackend();
  return backend == name || (name == "jetstream" && backend == "cluster");
}

// `config_yaml` with the test backend's settings merged in (see above).
std::string WithTestBackend(std::string config_yaml, const std::string& data_dir);

// For tests that start servers sharing one backend themselves (several sidecars on one
// store): the conninfo of the process's PostgreSQL, started on first use.
std::string TestPostgresConnInfo();

}  // namespace converge::testing
