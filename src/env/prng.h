// Small, fast, seedable pseudo-random generators shared by the Env implementations.
//
// SplitMix64 expands a 64-bit seed into well-mixed state; Xoshiro256StarStar (Blackman and
// Vigna) is the generator itself. Both are plain values: not thread-safe, cheap to copy.
// Never use std::random_device or std::mt19937 in converge logic: the simulator needs every
// random choice to come from one seed.
#pragma once

#include <cstddef>
#include <cstdint>

#include "converge/env.h"

namespace converge::internal {

class SplitMix64 {
 public:
  explicit SplitMix64(uint64_t seed) : state_(seed) {}
  uint64_t Next() {
    uint64_t z = (state_ += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  }

 private:
  uint64_t state_;
};

class Xoshiro256StarStar {
 public:
  explicit Xoshiro256StarStar(uint64_t seed) {
    SplitMix64 mix(seed);
    for (uint64_t& word : s_) word = mix.Next();
  }
  // Seeds from 256 bits; an all-zero state (the one fixed point) is replaced.
  Xoshiro256StarStar(uint64_t a, uint64_t b, uint64_t c, uint64_t d) : s_{a, b, c, d} {
    if ((a | b | c | d) == 0) s_[0] = 0x9e3779b97f4a7c15ULL;
  }

  uint64_t Next() {
    const uint64_t result = Rotl(s_[1] * 5, 7) * 9;
    const uint64_t t = s_[1] << 17;
    s_[2] ^= s_[0];
    s_[3] ^= s_[1];
    s_[1] ^= s_[2];
    s_[0] ^= s_[3];
    s_[2] ^= t;
    s_[3] = Rotl(s_[3], 45);
    return result;
  }

 private:
  static uint64_t Rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
  uint64_t s_[4];
};

// A Random over a seeded Xoshiro256StarStar: deterministic, not thread-safe.
class SeededRandom final : public Random {
 public:
  explicit SeededRandom(uint64_t seed) : rng_(seed) {}
  uint64_t Next64() override { return rng_.Next(); }

 private:
  Xoshiro256StarStar rng_;
};

// 64-bit FNV-1a, continuing from `h` (start with kFnvOffset).
inline constexpr uint64_t kFnvOffset = 0xcbf29ce484222325ULL;
inline uint64_t Fnv1a(uint64_t h, const void* data, size_t n) {
  const auto* p = static_cast<const unsigned char*>(data);
  for (size_t i = 0; i < n; ++i) {
    h ^= p[i];
    h *= 0x100000001b3ULL;
  }
  return h;
}

}  // namespace converge::internal
