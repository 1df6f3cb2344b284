// Runs a shell command and collects what it writes to stdout (add "2>&1" for stderr), for
// tests that drive the converge binary or a helper program from outside.
#pragma once

#include <sys/wait.h>

#include <cstdio>
#include <string>

namespace converge::testing {

struct CommandOutput {
  int exit_code = -1;  // -1: it could not start, or ended by a signal
  std::string out;
};

inline CommandOutput RunCommand(const std::string& command) {
  CommandOutput r;
  std::FILE* p = ::popen(command.c_str(), "r");
  if (p == nullptr) return r;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof(buf), p)) > 0) r.out.append(buf, n);
  const int status = ::pclose(p);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

}  // namespace converge::testing
