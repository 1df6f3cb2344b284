#include "bench/sidecar_process.h"

#include <unistd.h>

#include <cstdlib>

namespace converge::bench {

Result<std::unique_ptr<testing::ServerProcess>> StartSidecar(const std::string& config_path,
                                                             const std::string& data_dir,
                                                             const std::string& log_path) {
  char buf[4096];
  const ssize_t n = ::readlink("/proc/self/exe", buf, sizeof(buf) - 1);
  if (n <= 0) return InternalError("cannot find this executable (/proc/self/exe)");
  // converge-bench runs the converge binary built beside it.
  std::string exe(buf, static_cast<size_t>(n));
  exe = exe.substr(0, exe.rfind('/') + 1) + "converge";
  // Another build's server against this benchmark (before/after comparisons of the server).
  if (const char* other = std::getenv("CONVERGE_BENCH_SERVE_BINARY"); other != nullptr && *other) {
    exe = other;
  }
  Status last;
  for (int attempt = 0; attempt < 5; ++attempt) {  // a free port may be taken meanwhile
    CONVERGE_ASSIGN_OR_RETURN(uint16_t port, testing::FreeLoopbackPort());
    testing::ServerSpec spec;
    spec.name = "converge serve";
    spec.argv = {exe,         "serve", "--listen",   "127.0.0.1:" + std::to_string(port),
                 "--config",  config_path, "--data-dir", data_dir};
    spec.port = port;
    spec.log_path = log_path;
    Result<std::unique_ptr<testing::ServerProcess>> p = testing::ServerProcess::Start(spec);
    if (p.ok()) return p;
    last = p.status();
    if (last.code() != StatusCode::kUnavailable) return last;
  }
  return last;
}

}  // namespace converge::bench
