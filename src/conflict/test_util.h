// Test helpers for the conflict module: a seeded generator, a manual clock, property-test
// settings from the environment.
#pragma once

#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "converge/env.h"

namespace converge::conflict::testing {

// SplitMix64: tiny, fast, and identical on every platform (unlike std:: distributions).
class Rng {
 public:
  explicit Rng(uint64_t seed) : state_(seed) {}
  uint64_t Next() {
    uint64_t z = (state_ += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  }
  // Uniform in [0, n), n >= 1 (the tiny modulo bias is irrelevant here).
  uint64_t Uniform(uint64_t n) { return Next() % n; }
  // Uniform in [lo, hi].
  int64_t Range(int64_t lo, int64_t hi) {
    return lo + static_cast<int64_t>(Uniform(static_cast<uint64_t>(hi - lo) + 1));
  }
  // True with probability percent/100.
  bool Percent(int percent) { return Uniform(100) < static_cast<uint64_t>(percent); }

 private:
  uint64_t state_;
};

inline uint64_t Mix(uint64_t a, uint64_t b) {
  Rng r(a * 0x9e3779b97f4a7c15ULL ^ b);
  r.Next();
  return r.Next();
}

inline uint64_t HashName(std::string_view s) {
  uint64_t h = 0xcbf29ce484222325ULL;
  for (char c : s) h = (h ^ static_cast<uint8_t>(c)) * 0x100000001b3ULL;
  return h;
}

inline uint64_t EnvU64(const char* name, uint64_t fallback) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == '\0') return fallback;
  return std::strtoull(v, nullptr, 0);
}

// CONVERGE_PROPERTY_CASES (default 100000): cases per property.
inline uint64_t PropertyCases() { return EnvU64("CONVERGE_PROPERTY_CASES", 100000); }
// CONVERGE_SIM_SEED: the base seed (default fixed, so runs are reproducible).
inline uint64_t PropertySeed() { return EnvU64("CONVERGE_SIM_SEED", 0x5eed'c0de'2024ULL); }
// CONVERGE_PROPERTY_CASE: run only this case index (to replay a failure).
inline int64_t PropertyOnlyCase() {
  const char* v = std::getenv("CONVERGE_PROPERTY_CASE");
  return v == nullptr || *v == '\0' ? -1 : std::strtoll(v, nullptr, 0);
}

class ManualClock : public Clock {
 public:
  explicit ManualClock(int64_t wall_ns = 1'700'000'000'000'000'000) : wall_ns_(wall_ns) {}
  int64_t NowMonotonicNanos() override { return mono_ns_; }
  int64_t NowWallNanos() override { return wall_ns_; }
  void Advance(int64_t ns) {
    wall_ns_ += ns;
    mono_ns_ += ns > 0 ? ns : 0;
  }
  void SetWall(int64_t ns) { wall_ns_ = ns; }

 private:
  int64_t wall_ns_;
  int64_t mono_ns_ = 0;
};

}  // namespace converge::conflict::testing
