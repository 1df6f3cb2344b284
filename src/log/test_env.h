// Test helpers for the log: a simulated Env with a clock the test advances, and a temporary
// directory for tests on the production Env.
#pragma once

#include <stdlib.h>

#include <cstdint>
#include <filesystem>
#include <string>

#include "converge/sim_env.h"
#include "support/temp_dir.h"

namespace converge::test {

// A SimEnv plus the directory the log lives in.
class TestEnv {
 public:
  explicit TestEnv(uint64_t seed = 1) : sim_(seed) {}
  sim::SimEnv& env() { return sim_; }
  std::string Dir() const { return "/data/log"; }
  // Moves virtual time forward, running the timers that come due.
  void AdvanceMs(int64_t ms) { sim_.RunFor(ms * 1'000'000); }

 private:
  sim::SimEnv sim_;
};


// One temporary directory per test (tests/support/temp_dir.h).
using ::converge::testing::TempDir;

}  // namespace converge::test
