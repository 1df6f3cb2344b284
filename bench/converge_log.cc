// The converge adapter of `converge bench log`.
//
// TODO(bench): wire converge in once the log (src/log, Log::Open) and Env::Default (src/env)
// are in main, and consume + ack through consumer groups (include/converge/consumer_group.h)
// once they are. Until then this binary has no converge adapter: MakeConvergeSystem()
// returns nullptr and `converge bench log` skips converge (or fails if --systems names it).
#include "bench/log_bench.h"

namespace converge::bench {

std::unique_ptr<LogSystem> MakeConvergeSystem() { return nullptr; }

}  // namespace converge::bench
