#include "converge/hlc.h"

#include <algorithm>
#include <charconv>

namespace converge {

std::string HlcTimestamp::ToString() const {
  return std::to_string(physical_micros) + "." + std::to_string(logical);
}

Result<HlcTimestamp> HlcTimestamp::Parse(std::string_view text) {
  size_t dot = text.find('.');
  if (dot == std::string_view::npos) {
    return InvalidArgumentError("hlc timestamp must look like '<micros>.<logical>'");
  }
  HlcTimestamp ts;
  auto a = std::from_chars(text.data(), text.data() + dot, ts.physical_micros);
  auto b = std::from_chars(text.data() + dot + 1, text.data() + text.size(), ts.logical);
  if (a.ec != std::errc() || a.ptr != text.data() + dot || b.ec != std::errc() ||
      b.ptr != text.data() + text.size() || ts.physical_micros < 0) {
    return InvalidArgumentError("malformed hlc timestamp '" + std::string(text) + "'");
  }
  return ts;
}

HybridClock::HybridClock(Clock& clock, int64_t max_skew_micros)
    : clock_(clock), max_skew_micros_(max_skew_micros) {}

HlcTimestamp HybridClock::Now() {
  const int64_t pt = clock_.NowWallMicros();
  std::lock_guard<std::mutex> lock(mu_);
  if (pt > last_.physical_micros) {
    last_ = HlcTimestamp{pt, 0};
  } else {
    CONVERGE_CHECK_MSG(last_.logical != UINT32_MAX, "hlc logical counter overflow");
    ++last_.logical;
  }
  return last_;
}

Result<HlcTimestamp> HybridClock::Update(const HlcTimestamp& remote) {
  const int64_t pt = clock_.NowWallMicros();
  if (remote.physical_micros - pt > max_skew_micros_) {
    return FailedPreconditionError("remote hlc timestamp " + remote.ToString() + " is " +
                                   std::to_string(remote.physical_micros - pt) +
                                   "us ahead of the local clock (max skew " +
                                   std::to_string(max_skew_micros_) + "us)");
  }
  std::lock_guard<std::mutex> lock(mu_);
  const int64_t l = std::max({last_.physical_micros, remote.physical_micros, pt});
  uint64_t c;
  if (l == last_.physical_micros && l == remote.physical_micros) {
    c = uint64_t{std::max(last_.logical, remote.logical)} + 1;
  } else if (l == last_.physical_micros) {
    c = uint64_t{last_.logical} + 1;
  } else if (l == remote.physical_micros) {
    c = uint64_t{remote.logical} + 1;
  } else {
    c = 0;
  }
  if (c > UINT32_MAX) {
    return FailedPreconditionError("hlc logical counter would overflow merging " +
                                   remote.ToString());
  }
  last_ = HlcTimestamp{l, static_cast<uint32_t>(c)};
  return last_;
}

HlcTimestamp HybridClock::Peek() const {
  std::lock_guard<std::mutex> lock(mu_);
  return last_;
}

}  // namespace converge
