// Hybrid logical clock (Kulkarni, Demirbas et al., "Logical Physical Clocks", 2014).
//
// An HLC timestamp is (physical microseconds, logical counter). It stays close to wall time,
// never goes backwards, and preserves causality: if event a happened before event b (same node,
// or a's timestamp was carried in a message received before b), then a's timestamp < b's.
// Ties between nodes are broken by the caller (e.g. by node id), never by the clock.
//
// Skew guard: a remote timestamp more than `max_skew_micros` ahead of the local wall clock is
// rejected with FailedPrecondition and does not move the clock, so one node with a bad clock
// cannot drag every other node into the future.
//
// Thread-safety: HybridClock is thread-safe. HlcTimestamp is a value.
#pragma once

#include <compare>
#include <cstdint>
#include <mutex>
#include <string>

#include "converge/env.h"
#include "converge/status.h"

namespace converge {

struct HlcTimestamp {
  int64_t physical_micros = 0;  // wall-clock component, microseconds since the Unix epoch
  uint32_t logical = 0;         // counter for events within one physical tick

  auto operator<=>(const HlcTimestamp&) const = default;
  bool operator==(const HlcTimestamp&) const = default;

  std::string ToString() const;  // "1732640000000000.3"
  static Result<HlcTimestamp> Parse(std::string_view text);
};

class HybridClock {
 public:
  // `clock` must outlive this object.
  explicit HybridClock(Clock& clock, int64_t max_skew_micros = 500'000);

  // A timestamp for a local or send event: greater than every timestamp this clock returned
  // or observed before.
  HlcTimestamp Now();

  // Merges a timestamp received in a message and returns the receive event's timestamp, which
  // is greater than both `remote` and everything this clock returned before.
  // FailedPrecondition (clock unchanged) when `remote` is beyond the skew bound.
  Result<HlcTimestamp> Update(const HlcTimestamp& remote);

  // The last timestamp returned, without advancing.
  HlcTimestamp Peek() const;

  int64_t max_skew_micros() const { return max_skew_micros_; }

 private:
  Clock& clock_;
  const int64_t max_skew_micros_;
  mutable std::mutex mu_;
  HlcTimestamp last_;
};

}  // namespace converge
