// Fixtures that run real servers (nats-server, redis-server, ...) as child processes on
// loopback, for integration tests and benchmarks. Not part of libconverge: link
// tests/support/server_process.cc into the test or tool that uses it.
//
// Contract
// - A test whose server cannot start fails (also on NotFound: a missing executable); it never
//   skips (the rule of postgres_server.h).
// - Servers listen on 127.0.0.1 only, on a free port, with their data in a fresh temporary
//   directory. Nothing here ever talks to another host.
// - Start returns only once the server accepts TCP connections (or fails with a Status that
//   carries the tail of the server's log).
// - Stop sends SIGTERM, waits up to a bound, then SIGKILLs. Destructors stop the process and
//   then remove the temporary directory, so an early return on error cleans up too. A child
//   also gets SIGKILL from the kernel if this process dies first (PR_SET_PDEATHSIG).
//
// Thread-safety: none; each object is used by one thread at a time.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "converge/status.h"
#include "support/temp_dir.h"

namespace converge::testing {


// A TCP port on 127.0.0.1 that was free a moment ago (bind port 0, read it, close).
// Another process may take it before it is used: callers retry on a bind failure.
Result<uint16_t> FreeLoopbackPort();

// True if a TCP connection to 127.0.0.1:port succeeds right now.
bool LoopbackPortAccepts(uint16_t port);

struct ServerSpec {
  std::string name;               // for messages: "nats-server"
  std::vector<std::string> argv;  // argv[0] is the executable path
  uint16_t port = 0;              // the port the server listens on; 0 = do not wait for one
  std::string log_path;           // the child's stdout and stderr go here
  int64_t ready_timeout_ms = 15'000;
  int64_t stop_timeout_ms = 10'000;
};

// One running child process.
class ServerProcess {
 public:
  // Forks and execs spec.argv, then waits until 127.0.0.1:spec.port accepts connections
  // (with port 0 it returns once the process is started).
  // NotFound if the executable does not exist; Unavailable if the process exited before it
  // was ready (e.g. the port was taken: retry with another port); DeadlineExceeded if it was
  // not ready within ready_timeout_ms (the process is killed). Messages include the log tail.
  static Result<std::unique_ptr<ServerProcess>> Start(ServerSpec spec);

  ~ServerProcess();
  ServerProcess(const ServerProcess&) = delete;
  ServerProcess& operator=(const ServerProcess&) = delete;

  // SIGTERM, wait up to stop_timeout_ms, then SIGKILL. OK once the process is gone
  // (idempotent); Internal if it could not be reaped.
  Status Stop();

  uint16_t port() const { return spec_.port; }
  pid_t pid() const { return pid_; }
  bool running() const { return pid_ > 0; }
  const ServerSpec& spec() const { return spec_; }
  // The last `max_bytes` of the server's log, for error messages.
  std::string LogTail(size_t max_bytes = 2000) const;

 private:
  explicit ServerProcess(ServerSpec spec) : spec_(std::move(spec)) {}
  // True (and reaped) if the child has exited.
  bool Exited();

  ServerSpec spec_;
  pid_t pid_ = -1;
};

// nats-server with JetStream on file storage (Debian's /usr/sbin/nats-server).
struct NatsServerOptions {
  std::string executable = "/usr/sbin/nats-server";
  std::string base_dir;  // where the temp dir goes; empty = $TMPDIR or /tmp
  std::vector<std::string> extra_args;
};

// redis-server with an append-only file (Debian's /usr/bin/redis-server).
struct RedisServerOptions {
  std::string executable = "/usr/bin/redis-server";
  std::string base_dir;
  std::string appendfsync = "everysec";  // "always" | "everysec" | "no"
  std::vector<std::string> extra_args;
};

// A server process plus the temp dir holding its data; the destructor stops the process
// before removing the directory.
class ManagedServer {
 public:
  ManagedServer(TempDir dir, std::unique_ptr<ServerProcess> process)
      : dir_(std::move(dir)), process_(std::move(process)) {}
  ~ManagedServer();
  ManagedServer(const ManagedServer&) = delete;
  ManagedServer& operator=(const ManagedServer&) = delete;

  uint16_t port() const { return process_->port(); }
  const std::string& dir() const { return dir_.path(); }
  ServerProcess& process() { return *process_; }
  // "nats://127.0.0.1:<port>" style URL with the given scheme.
  std::string Url(const std::string& scheme) const;
  // Stops the process and removes the directory. OK if both succeeded.
  Status Shutdown();

 private:
  TempDir dir_;
  std::unique_ptr<ServerProcess> process_;
};

// Start a server on a free loopback port in a fresh temp dir; retries a few times if the
// port was taken meanwhile. Errors as ServerProcess::Start.
Result<std::unique_ptr<ManagedServer>> StartNatsServer(const NatsServerOptions& options);
Result<std::unique_ptr<ManagedServer>> StartRedisServer(const RedisServerOptions& options);

}  // namespace converge::testing
