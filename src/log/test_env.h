// Test helpers for the log: a simulated Env with a clock the test advances, and a temporary
// directory for tests on the production Env.
#pragma once

#include <stdlib.h>

#include <cstdint>
#include <filesystem>
#include <string>

#include "converge/sim_env.h"

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

// A fresh directory under the system's temp dir, removed with everything in it at the end.
class TempDir {
 public:
  TempDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "converge-log-XXXXXX").string();
    if (::mkdtemp(tmpl.data()) != nullptr) path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    if (!path_.empty()) std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

}  // namespace converge::test
