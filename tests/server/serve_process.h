// Runs the real `converge serve` binary (path in $CONVERGE_BINARY) as a child process for
// black-box tests: a fresh temp dir holds its data and config, it listens on 127.0.0.1 with a
// port chosen by the OS (read back from its "listening on" line, so there is no race), and
// the test talks to it over HTTP.
//
// Thread-safety: none; one test thread drives it.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "converge/client.h"
#include "converge/status.h"

namespace converge::testing {

class ServeProcess {
 public:
  // `data_dir` empty: a fresh temp dir, removed by the destructor. `config_yaml` is written
  // to a file passed with --config (empty: no config file).
  explicit ServeProcess(std::string config_yaml = "", std::string data_dir = "");
  ~ServeProcess();
  ServeProcess(const ServeProcess&) = delete;
  ServeProcess& operator=(const ServeProcess&) = delete;

  // Before Start: the child runs with this soft and hard RLIMIT_NOFILE (0: inherited; `hard`
  // 0: the same as `soft`).
  void set_open_files_limit(uint64_t soft, uint64_t hard = 0) {
    open_files_limit_ = soft;
    open_files_hard_limit_ = hard == 0 ? soft : hard;
  }
  // Before Start: listen on this HOST:PORT instead of 127.0.0.1:0 (a fixed port, e.g. for a
  // node other nodes reach by URL across its restarts).
  void set_listen(std::string address) { listen_ = std::move(address); }
  // Starts the binary and waits (up to 20 s) for its "listening on" line.
  Status Start();
  // Sends `signo` and waits up to timeout_ms for the exit. Returns the exit code (or
  // 128 + signal number), DeadlineExceeded if it did not exit.
  Result<int> Signal(int signo, int64_t timeout_ms = 20'000);
  // SIGKILL and reap.
  void Kill();

  bool running() const { return pid_ > 0; }
  pid_t pid() const { return pid_; }
  uint16_t port() const { return port_; }
  const std::string& data_dir() const { return data_dir_; }
  const std::string& dir() const { return dir_; }
  // The child's stderr so far (for failure messages).
  std::string Log() const;
  client::Options ClientOptions(std::string token = "") const;

 private:
  std::string config_yaml_;
  std::string dir_;  // temp dir of this fixture
  std::string data_dir_;
  bool own_dir_ = true;
  pid_t pid_ = -1;
  int stdout_fd_ = -1;
  uint16_t port_ = 0;
  std::string listen_ = "127.0.0.1:0";
  uint64_t open_files_limit_ = 0;
  uint64_t open_files_hard_limit_ = 0;
};

// Sends raw bytes over a new loopback TCP connection, half-closes, and returns everything the
// server sent back until it closed the connection (or timeout_ms passed).
Result<std::string> RawExchange(uint16_t port, const std::string& bytes, int64_t timeout_ms = 5000);

// Like RawExchange but keeps the sending side open: returns how long (ms) the server took to
// close the connection after `bytes` were sent, or DeadlineExceeded after timeout_ms.
Result<int64_t> RawTimeToClose(uint16_t port, const std::string& bytes, int64_t timeout_ms);

// The HTTP status code of the first response in `raw` ("HTTP/1.1 400 ..."), or 0.
int RawStatus(const std::string& raw);

}  // namespace converge::testing
