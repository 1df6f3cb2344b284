// Shared by log_crash_writer and log_crash_test: the value stored for an event id, so the test
// can check every record the writer acknowledged without being told its content.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace converge::test {

inline std::string CrashValueFor(std::string_view id) {
  uint64_t x = 0xcbf29ce484222325ull;
  for (unsigned char c : id) x = (x ^ c) * 0x100000001b3ull;
  const size_t len = 16 + x % 240;
  std::string v(id);
  v.push_back('=');
  while (v.size() < len) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    v.push_back(static_cast<char>('A' + x % 26));
  }
  return v;
}

inline constexpr char kCrashTopic[] = "crash";
inline constexpr uint32_t kCrashPartitions = 3;

}  // namespace converge::test
