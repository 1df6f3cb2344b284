#include "serve_process.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "server/test_backend.h"

namespace converge::testing {

namespace {

int64_t NowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

std::string MakeTempDir() {
  const char* base = std::getenv("TMPDIR");
  std::string tmpl = std::string(base && *base ? base : "/tmp") + "/converge-serve-XXXXXX";
  std::vector<char> buf(tmpl.begin(), tmpl.end());
  buf.push_back('\0');
  if (mkdtemp(buf.data()) == nullptr) return "";
  return std::string(buf.data());
}

}  // namespace

ServeProcess::ServeProcess(std::string config_yaml, std::string data_dir)
    : config_yaml_(std::move(config_yaml)) {
  dir_ = MakeTempDir();
  if (data_dir.empty()) {
    data_dir_ = dir_ + "/data";
  } else {
    data_dir_ = std::move(data_dir);
  }
}

ServeProcess::~ServeProcess() {
  Kill();
  if (!dir_.empty()) {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
}

Status ServeProcess::Start() {
  if (pid_ > 0) return FailedPreconditionError("already running");
  if (dir_.empty()) return InternalError("cannot create a temp dir");
  const char* binary = std::getenv("CONVERGE_BINARY");
  if (binary == nullptr || *binary == '\0') {
    return FailedPreconditionError("CONVERGE_BINARY is not set (run the test through ctest)");
  }
  std::vector<std::string> args = {binary,  "serve",      "--listen",
                                   listen_, "--data-dir", data_dir_};
  // The backend of this run (CONVERGE_TEST_BACKEND) adds its keys to the test's config.
  const std::string config_yaml = WithTestBackend(config_yaml_, data_dir_);
  if (!config_yaml.empty()) {
    std::string path = dir_ + "/converge.yaml";
    std::ofstream(path) << config_yaml;
    args.push_back("--config");
    args.push_back(path);
  }
  int out[2];
  if (pipe2(out, O_CLOEXEC) != 0) return InternalError("pipe failed");
  std::string log_path = dir_ + "/serve.log";
  pid_t pid = fork();
  if (pid < 0) return InternalError("fork failed");
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (open_files_limit_ > 0) {
      rlimit rl{static_cast<rlim_t>(open_files_limit_),
                static_cast<rlim_t>(open_files_hard_limit_)};
      if (setrlimit(RLIMIT_NOFILE, &rl) != 0) _exit(126);
    }
    dup2(out[1], STDOUT_FILENO);
    int log = open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (log >= 0) dup2(log, STDERR_FILENO);
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    execv(argv[0], argv.data());
    _exit(127);
  }
  close(out[1]);
  pid_ = pid;
  stdout_fd_ = out[0];
  // Read stdout until the "listening on http://127.0.0.1:PORT" line.
  std::string text;
  const int64_t deadline = NowMs() + 20'000;
  while (NowMs() < deadline) {
    pollfd p{stdout_fd_, POLLIN, 0};
    int r = poll(&p, 1, 100);
    if (r > 0) {
      char buf[512];
      ssize_t n = read(stdout_fd_, buf, sizeof(buf));
      if (n <= 0) break;  // exited
      text.append(buf, static_cast<size_t>(n));
      size_t at = text.find("listening on http");
      if (at != std::string::npos) {
        size_t colon = text.find("127.0.0.1:", at);
        size_t nl = text.find('\n', at);
        if (colon != std::string::npos && nl != std::string::npos) {
          port_ = static_cast<uint16_t>(std::atoi(text.c_str() + colon + 10));
          return Status::Ok();
        }
      }
    }
  }
  std::string log = Log();
  Kill();
  return UnavailableError("converge serve did not start: stdout: " + text + " log: " + log);
}

Result<int> ServeProcess::Signal(int signo, int64_t timeout_ms) {
  if (pid_ <= 0) return FailedPreconditionError("not running");
  // A pidfd becomes readable when the child exits: wait on it instead of polling.
  int pidfd = static_cast<int>(syscall(SYS_pidfd_open, pid_, 0));
  kill(pid_, signo);
  if (pidfd >= 0) {
    pollfd p{pidfd, POLLIN, 0};
    int r = poll(&p, 1, static_cast<int>(timeout_ms));
    close(pidfd);
    if (r <= 0) return DeadlineExceededError("converge serve did not exit within the timeout");
  }
  int status = 0;
  if (waitpid(pid_, &status, 0) != pid_) return InternalError("waitpid failed");
  pid_ = -1;
  if (stdout_fd_ >= 0) close(stdout_fd_);
  stdout_fd_ = -1;
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return -1;
}

void ServeProcess::Kill() {
  if (pid_ > 0) {
    kill(pid_, SIGKILL);
    int status;
    waitpid(pid_, &status, 0);
    pid_ = -1;
  }
  if (stdout_fd_ >= 0) close(stdout_fd_);
  stdout_fd_ = -1;
}

std::string ServeProcess::Log() const {
  std::ifstream in(dir_ + "/serve.log");
  std::stringstream s;
  s << in.rdbuf();
  std::string text = s.str();
  return text.size() > 4000 ? text.substr(text.size() - 4000) : text;
}

client::Options ServeProcess::ClientOptions(std::string token) const {
  client::Options o;
  o.host = "127.0.0.1";
  o.port = port_;
  o.token = std::move(token);
  o.timeout_ms = 20'000;
  return o;
}

Result<std::string> RawExchange(uint16_t port, const std::string& bytes, int64_t timeout_ms) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return InternalError("socket failed");
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    close(fd);
    return UnavailableError("connect failed");
  }
  size_t sent = 0;
  while (sent < bytes.size()) {
    ssize_t n = send(fd, bytes.data() + sent, bytes.size() - sent, MSG_NOSIGNAL);
    if (n <= 0) break;  // the server may close early (e.g. 413 before the whole body)
    sent += static_cast<size_t>(n);
  }
  shutdown(fd, SHUT_WR);
  std::string out;
  const int64_t deadline = NowMs() + timeout_ms;
  while (NowMs() < deadline) {
    pollfd p{fd, POLLIN, 0};
    if (poll(&p, 1, 50) <= 0) continue;
    char buf[4096];
    ssize_t n = recv(fd, buf, sizeof(buf), 0);
    if (n <= 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  close(fd);
  return out;
}

Result<int64_t> RawTimeToClose(uint16_t port, const std::string& bytes, int64_t timeout_ms) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return InternalError("socket failed");
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    close(fd);
    return UnavailableError("connect failed");
  }
  if (!bytes.empty()) send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL);
  const int64_t start = NowMs();
  while (NowMs() - start < timeout_ms) {
    pollfd p{fd, POLLIN, 0};
    if (poll(&p, 1, 50) <= 0) continue;
    char buf[4096];
    ssize_t n = recv(fd, buf, sizeof(buf), 0);
    if (n <= 0) {
      close(fd);
      return NowMs() - start;
    }
  }
  close(fd);
  return DeadlineExceededError("the server kept the connection open");
}

int RawStatus(const std::string& raw) {
  if (raw.compare(0, 9, "HTTP/1.1 ") != 0 || raw.size() < 12) return 0;
  return std::atoi(raw.c_str() + 9);
}

}  // namespace converge::testing
