// `converge serve` for the benchmarks that measure converge through its sidecar: started from
// this very binary on 127.0.0.1 (a free port; retried if another process takes it first), or
// from $CONVERGE_BENCH_SERVE_BINARY when set (another build's server, for before/after pairs).
#pragma once

#include <memory>
#include <string>

#include "converge/status.h"
#include "support/server_process.h"

namespace converge::bench {

// Starts `converge serve --config <config_path> --data-dir <data_dir>` with its output in
// `log_path` (the converge binary beside this program), and returns once it accepts
// connections. Internal if this executable cannot be found; otherwise what
// ServerProcess::Start returns.
Result<std::unique_ptr<testing::ServerProcess>> StartSidecar(const std::string& config_path,
                                                             const std::string& data_dir,
                                                             const std::string& log_path);

}  // namespace converge::bench
