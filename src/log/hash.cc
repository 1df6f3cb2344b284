#include "log/hash.h"

#include <cstring>

namespace converge::internal {
namespace {

inline uint64_t Load64(const char* p) {
  uint64_t v;
  std::memcpy(&v, p, 8);
  return v;
}

inline uint64_t Rotl(uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }

// The 64-bit finalizer from MurmurHash3: every input bit affects every output bit.
inline uint64_t Fmix64(uint64_t k) {
  k ^= k >> 33;
  k *= 0xff51afd7ed558ccdULL;
  k ^= k >> 33;
  k *= 0xc4ceb9fe1a85ec53ULL;
  k ^= k >> 33;
  return k;
}

// Two lanes with different seeds and multipliers over 8-byte words; the tail is folded in with
// its length so "a" and "a\0" differ.
Hash128 Hash2x64(const char* p, size_t n) {
  constexpr uint64_t kM1 = 0x9E3779B97F4A7C15ULL;
  constexpr uint64_t kM2 = 0xC2B2AE3D27D4EB4FULL;
  uint64_t a = 0x243F6A8885A308D3ULL ^ (n * kM1);
  uint64_t b = 0x13198A2E03707344ULL ^ (n * kM2);
  while (n >= 8) {
    uint64_t w = Load64(p);
    a = Rotl(a ^ (w * kM1), 29) * kM2;
    b = Rotl(b ^ (w * kM2), 31) * kM1;
    p += 8;
    n -= 8;
  }
  if (n > 0) {
    uint64_t w = 0;
    std::memcpy(&w, p, n);
    w ^= static_cast<uint64_t>(n) << 56;
    a = Rotl(a ^ (w * kM1), 29) * kM2;
    b = Rotl(b ^ (w * kM2), 31) * kM1;
  }
  a += b;
  b += a;
  return Hash128{Fmix64(a), Fmix64(b ^ 0x452821E638D01377ULL)};
}

}  // namespace

uint64_t Fnv1a64(std::string_view data) {
  uint64_t h = 0xcbf29ce484222325ULL;
  for (unsigned char c : data) {
    h ^= c;
    h *= 0x100000001b3ULL;
  }
  return h;
}

Hash128 IdHash128(std::string_view data) { return Hash2x64(data.data(), data.size()); }

}  // namespace converge::internal
