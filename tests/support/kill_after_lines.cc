#include "support/kill_after_lines.h"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace converge::testing {

bool KilledRun::EndedBySigkill() const {
  return killed && WIFSIGNALED(wait_status) && WTERMSIG(wait_status) == SIGKILL;
}

Result<KilledRun> RunAndKillAfterLines(const std::vector<std::string>& argv,
                                       size_t kill_after_lines) {
  if (argv.empty()) return InvalidArgumentError("RunAndKillAfterLines: empty argv");
  std::vector<char*> args;
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  int fds[2];
  if (::pipe(fds) != 0) return InternalError(std::string("pipe: ") + std::strerror(errno));
  const pid_t pid = ::fork();
  if (pid < 0) {
    ::close(fds[0]);
    ::close(fds[1]);
    return InternalError(std::string("fork: ") + std::strerror(errno));
  }
  if (pid == 0) {
    ::dup2(fds[1], STDOUT_FILENO);
    ::close(fds[0]);
    ::close(fds[1]);
    ::execv(args[0], args.data());
    ::_exit(127);
  }
  ::close(fds[1]);
  KilledRun run;
  std::string pending;  // the line being read
  char buf[65536];
  while (true) {
    const ssize_t n = ::read(fds[0], buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    for (ssize_t i = 0; i < n; ++i) {
      if (buf[i] != '\n') {
        pending.push_back(buf[i]);
        continue;
      }
      run.lines.push_back(std::move(pending));
      pending.clear();
    }
    if (!run.killed && run.lines.size() >= kill_after_lines) {
      ::kill(pid, SIGKILL);
      run.killed = true;
    }
  }
  ::close(fds[0]);
  while (::waitpid(pid, &run.wait_status, 0) < 0 && errno == EINTR) {
  }
  return run;
}

}  // namespace converge::testing
