// Stand-in for bench/converge_log.cc while the converge log (src/log: Log::Open) and the
// production Env (Env::Default) are not in this tree yet: no converge adapter, so
// `converge bench log` skips converge (or fails if --systems names it).
// TODO(bench): delete this file once bench.cmake compiles converge_log.cc.
#include "bench/log_bench.h"

namespace converge::bench {

std::unique_ptr<LogSystem> MakeConvergeSystem() { return nullptr; }

}  // namespace converge::bench
