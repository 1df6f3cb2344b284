#include "bench/saga_bench.h"

namespace converge::bench {

Status RunTwoPhaseBench(const SagaBenchOptions&, std::vector<Measurement>*) {
  return FailedPreconditionError("not built yet");
}

}  // namespace converge::bench
