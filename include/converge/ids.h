// Time-ordered unique ids: UUID version 7 (RFC 9562).
//
// Layout (big-endian, 128 bits):
//   unix_ts_ms (48) | ver = 7 (4) | rand_a (12) | var = 0b10 (2) | rand_b (62)
// The generator reads the wall clock and randomness only through the Clock and Random it is
// given, so ids are reproducible in the deterministic simulator.
//
// Ordering: ids from one UuidV7Generator strictly increase, both as Uuid values and as
// strings, even when many are made in one millisecond or the wall clock steps backwards
// (RFC 9562 section 6.2, method 1): rand_a is a 12-bit counter, started at a random value
// below 2048 in each new millisecond and incremented within it; when the clock has not
// advanced past the last id's millisecond, that millisecond is reused, and when the counter
// would overflow the timestamp is advanced by one millisecond. So a generator's timestamps
// may run slightly ahead of its clock under bursts above ~2k ids/ms, and stay at their
// high-water mark while the clock catches up after a backwards step. rand_b holds 62 fresh
// random bits per id, which makes ids from different generators unique with overwhelming
// probability; only ids from one generator are ordered.
//
// Thread-safety: UuidV7Generator is thread-safe (one mutex). Uuid is a value.
#pragma once

#include <array>
#include <compare>
#include <cstdint>
#include <mutex>
#include <string>
#include <string_view>

#include "converge/env.h"
#include "converge/status.h"

namespace converge {

class Uuid {
 public:
  // The nil UUID (all zeros).
  Uuid() = default;
  explicit Uuid(const std::array<uint8_t, 16>& bytes) : bytes_(bytes) {}

  const std::array<uint8_t, 16>& bytes() const { return bytes_; }
  // The version nibble (7 for UUIDv7).
  int version() const { return bytes_[6] >> 4; }
  // True for the RFC 9562 variant (the two top bits of byte 8 are 10).
  bool is_rfc9562_variant() const { return (bytes_[8] & 0xC0) == 0x80; }
  // The 48-bit Unix millisecond timestamp of a v7 UUID (meaningless for other versions).
  int64_t unix_ms() const;

  // Lowercase canonical form "xxxxxxxx-xxxx-7xxx-yxxx-xxxxxxxxxxxx" (36 characters).
  std::string ToString() const;

  // Parses the 36-character hyphenated form, hex digits in either case; any version and
  // variant. InvalidArgument otherwise.
  static Result<Uuid> Parse(std::string_view text);
  // Parse, then also requires version 7 and the RFC 9562 variant. InvalidArgument otherwise.
  static Result<Uuid> ParseV7(std::string_view text);

  // Byte order, which for v7 is creation order.
  auto operator<=>(const Uuid&) const = default;
  bool operator==(const Uuid&) const = default;

 private:
  std::array<uint8_t, 16> bytes_{};
};

class UuidV7Generator {
 public:
  // `clock` and `random` must outlive the generator.
  UuidV7Generator(Clock& clock, Random& random) : clock_(clock), random_(random) {}

  // A new id, greater than every id this generator returned before. Never fails.
  Uuid Next();
  // Next().ToString().
  std::string NextString() { return Next().ToString(); }

 private:
  Clock& clock_;
  Random& random_;
  std::mutex mu_;
  int64_t last_ms_ = -1;  // timestamp of the last id
  uint32_t counter_ = 0;  // rand_a of the last id
};

}  // namespace converge
