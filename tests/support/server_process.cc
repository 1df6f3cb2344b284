// Child-process servers on loopback. This is an edge (test fixture / benchmark harness), so it
// uses POSIX and std::chrono directly rather than the Env.
#include "support/server_process.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <thread>

namespace converge::testing {
namespace {

using Clock = std::chrono::steady_clock;

std::string ErrnoMessage(const std::string& what) { return what + ": " + std::strerror(errno); }

void PollPause() { std::this_thread::sleep_for(std::chrono::milliseconds(5)); }

// Creates a socket on 127.0.0.1; returns -1 on failure.
int LoopbackSocket() { return ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0); }

sockaddr_in LoopbackAddress(uint16_t port) {
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  return addr;
}

constexpr int kStartAttempts = 4;

}  // namespace

// ---- ports ----

Result<uint16_t> FreeLoopbackPort() {
  int fd = LoopbackSocket();
  if (fd < 0) return InternalError(ErrnoMessage("socket"));
  sockaddr_in addr = LoopbackAddress(0);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    Status s = InternalError(ErrnoMessage("bind 127.0.0.1:0"));
    ::close(fd);
    return s;
  }
  socklen_t len = sizeof(addr);
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    Status s = InternalError(ErrnoMessage("getsockname"));
    ::close(fd);
    return s;
  }
  ::close(fd);
  return static_cast<uint16_t>(ntohs(addr.sin_port));
}

bool LoopbackPortAccepts(uint16_t port) {
  int fd = LoopbackSocket();
  if (fd < 0) return false;
  sockaddr_in addr = LoopbackAddress(port);
  bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
  ::close(fd);
  return ok;
}

// ---- ServerProcess ----

Result<std::unique_ptr<ServerProcess>> ServerProcess::Start(ServerSpec spec) {
  if (spec.argv.empty()) return InvalidArgumentError("ServerSpec.argv is empty");
  if (::access(spec.argv[0].c_str(), X_OK) != 0) {
    return NotFoundError(spec.name + ": cannot execute " + spec.argv[0] +
                         " (install it: scripts/install-deps)");
  }
  // Everything the child needs is prepared before fork: only async-signal-safe calls follow.
  std::vector<char*> argv;
  argv.reserve(spec.argv.size() + 1);
  for (std::string& arg : spec.argv) argv.push_back(arg.data());
  argv.push_back(nullptr);
  int log_fd = ::open(spec.log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (log_fd < 0) return InternalError(ErrnoMessage("open " + spec.log_path));
  int null_fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (null_fd < 0) {
    Status s = InternalError(ErrnoMessage("open /dev/null"));
    ::close(log_fd);
    return s;
  }
  const pid_t parent = ::getpid();

  pid_t pid = ::fork();
  if (pid < 0) {
    Status s = InternalError(ErrnoMessage("fork"));
    ::close(log_fd);
    ::close(null_fd);
    return s;
  }
  if (pid == 0) {
    // Child. The kernel kills it if the forking thread of the parent goes away.
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(126);
    ::dup2(null_fd, STDIN_FILENO);
    ::dup2(log_fd, STDOUT_FILENO);
    ::dup2(log_fd, STDERR_FILENO);
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
  ::close(log_fd);
  ::close(null_fd);

  std::unique_ptr<ServerProcess> process(new ServerProcess(std::move(spec)));
  process->pid_ = pid;
  if (process->spec_.port == 0) return process;
  const auto deadline = Clock::now() + std::chrono::milliseconds(process->spec_.ready_timeout_ms);
  while (true) {
    if (process->Exited()) {
      return UnavailableError(process->spec_.name + " exited before accepting connections on " +
                              "127.0.0.1:" + std::to_string(process->spec_.port) + "; log tail:\n" +
                              process->LogTail());
    }
    if (LoopbackPortAccepts(process->spec_.port)) return process;
    if (Clock::now() > deadline) {
      process->Stop().IgnoreError();
      return DeadlineExceededError(process->spec_.name + " not ready within " +
                                   std::to_string(process->spec_.ready_timeout_ms) +
                                   " ms; log tail:\n" + process->LogTail());
    }
    PollPause();
  }
}

ServerProcess::~ServerProcess() { Stop().IgnoreError(); }

bool ServerProcess::Exited() {
  if (pid_ <= 0) return true;
  int status = 0;
  pid_t r = ::waitpid(pid_, &status, WNOHANG);
  if (r == pid_ || (r < 0 && errno == ECHILD)) {
    pid_ = -1;
    return true;
  }
  return false;
}

Status ServerProcess::Stop() {
  if (pid_ <= 0) return Status::Ok();
  ::kill(pid_, SIGTERM);
  const auto deadline = Clock::now() + std::chrono::milliseconds(spec_.stop_timeout_ms);
  while (!Exited()) {
    if (Clock::now() > deadline) {
      ::kill(pid_, SIGKILL);
      int status = 0;
      pid_t r;
      do {
        r = ::waitpid(pid_, &status, 0);
      } while (r < 0 && errno == EINTR);
      if (r != pid_ && !(r < 0 && errno == ECHILD)) {
        return InternalError(ErrnoMessage(spec_.name + ": waitpid after SIGKILL"));
      }
      pid_ = -1;
      return Status::Ok();
    }
    PollPause();
  }
  return Status::Ok();
}

std::string ServerProcess::LogTail(size_t max_bytes) const {
  std::ifstream in(spec_.log_path, std::ios::binary | std::ios::ate);
  if (!in) return "(no log at " + spec_.log_path + ")";
  std::streamoff size = in.tellg();
  std::streamoff start = size > static_cast<std::streamoff>(max_bytes)
                             ? size - static_cast<std::streamoff>(max_bytes)
                             : 0;
  in.seekg(start);
  std::string out(static_cast<size_t>(size - start), '\0');
  in.read(out.data(), static_cast<std::streamsize>(out.size()));
  return out;
}

// ---- ManagedServer ----

ManagedServer::~ManagedServer() { Shutdown().IgnoreError(); }

std::string ManagedServer::Url(const std::string& scheme) const {
  return scheme + "://127.0.0.1:" + std::to_string(port());
}

Status ManagedServer::Shutdown() {
  Status stopped = process_ ? process_->Stop() : Status::Ok();
  Status removed = dir_.Remove();
  return stopped.ok() ? removed : stopped;
}

namespace {

// Starts argv built by `make_argv(port, dir)` in a fresh temp dir, retrying with a new port
// when the server exits early (most likely a port taken between probe and bind).
template <typename MakeArgv>
Result<std::unique_ptr<ManagedServer>> StartManaged(const std::string& name,
                                                    const std::string& base_dir,
                                                    MakeArgv make_argv) {
  Status last = InternalError(name + ": not started");
  for (int attempt = 0; attempt < kStartAttempts; ++attempt) {
    CONVERGE_ASSIGN_OR_RETURN(TempDir dir, TempDir::Create("converge-" + name + "-", base_dir));
    CONVERGE_ASSIGN_OR_RETURN(uint16_t port, FreeLoopbackPort());
    std::string data_dir = dir.path() + "/data";
    if (::mkdir(data_dir.c_str(), 0755) != 0) {
      return InternalError(ErrnoMessage("mkdir " + data_dir));
    }
    ServerSpec spec;
    spec.name = name;
    spec.port = port;
    spec.log_path = dir.path() + "/server.log";
    spec.argv = make_argv(port, data_dir);
    Result<std::unique_ptr<ServerProcess>> process = ServerProcess::Start(std::move(spec));
    if (process.ok()) {
      return std::make_unique<ManagedServer>(std::move(dir), std::move(process).value());
    }
    last = process.status();
    if (last.code() != StatusCode::kUnavailable) return last;
  }
  return last;
}

}  // namespace

Result<std::unique_ptr<ManagedServer>> StartNatsServer(const NatsServerOptions& options) {
  return StartManaged("nats-server", options.base_dir, [&](uint16_t port, const std::string& dir) {
    std::vector<std::string> argv = {options.executable,   "-js", "-a", "127.0.0.1", "-p",
                                     std::to_string(port), "-sd", dir};
    argv.insert(argv.end(), options.extra_args.begin(), options.extra_args.end());
    return argv;
  });
}

Result<std::unique_ptr<ManagedServer>> StartRedisServer(const RedisServerOptions& options) {
  return StartManaged("redis-server", options.base_dir, [&](uint16_t port, const std::string& dir) {
    std::vector<std::string> argv = {options.executable,
                                     "--port",
                                     std::to_string(port),
                                     "--bind",
                                     "127.0.0.1",
                                     "--protected-mode",
                                     "yes",
                                     "--dir",
                                     dir,
                                     "--appendonly",
                                     "yes",
                                     "--appendfsync",
                                     options.appendfsync,
                                     "--save",
                                     "",
                                     "--daemonize",
                                     "no",
                                     "--logfile",
                                     ""};
    argv.insert(argv.end(), options.extra_args.begin(), options.extra_args.end());
    return argv;
  });
}

}  // namespace converge::testing
