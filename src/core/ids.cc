#include "converge/ids.h"

namespace converge {
namespace {

constexpr int64_t kMaxUnixMs = (int64_t{1} << 48) - 1;
constexpr uint32_t kCounterMax = 0xFFF;
// A new millisecond's counter starts below this, leaving at least 2048 increments.
constexpr uint32_t kCounterStartBound = 0x800;
// Offsets of the four hyphens in the canonical form.
constexpr size_t kHyphens[] = {8, 13, 18, 23};

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

}  // namespace

int64_t Uuid::unix_ms() const {
  int64_t ms = 0;
  for (int i = 0; i < 6; ++i) ms = (ms << 8) | bytes_[i];
  return ms;
}

std::string Uuid::ToString() const {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out(36, '-');
  size_t pos = 0;
  for (size_t i = 0; i < 16; ++i) {
    if (pos == 8 || pos == 13 || pos == 18 || pos == 23) ++pos;
    out[pos++] = kHex[bytes_[i] >> 4];
    out[pos++] = kHex[bytes_[i] & 0xF];
  }
  return out;
}

Result<Uuid> Uuid::Parse(std::string_view text) {
  auto bad = [&] {
    return InvalidArgumentError("not a UUID (want xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx): '" +
                                std::string(text.substr(0, 64)) + "'");
  };
  if (text.size() != 36) return bad();
  for (size_t h : kHyphens) {
    if (text[h] != '-') return bad();
  }
  std::array<uint8_t, 16> bytes{};
  size_t pos = 0;
  for (size_t i = 0; i < 16; ++i) {
    if (pos == 8 || pos == 13 || pos == 18 || pos == 23) ++pos;
    const int hi = HexValue(text[pos]), lo = HexValue(text[pos + 1]);
    if (hi < 0 || lo < 0) return bad();
    bytes[i] = static_cast<uint8_t>(hi << 4 | lo);
    pos += 2;
  }
  return Uuid(bytes);
}

Result<Uuid> Uuid::ParseV7(std::string_view text) {
  CONVERGE_ASSIGN_OR_RETURN(Uuid id, Parse(text));
  if (id.version() != 7 || !id.is_rfc9562_variant()) {
    return InvalidArgumentError("not a version 7 UUID: '" + std::string(text) + "'");
  }
  return id;
}

Uuid UuidV7Generator::Next() {
  int64_t now_ms = clock_.NowWallNanos() / 1'000'000;
  if (now_ms < 0) now_ms = 0;
  if (now_ms > kMaxUnixMs) now_ms = kMaxUnixMs;
  std::lock_guard<std::mutex> lock(mu_);
  const uint64_t rand_b = random_.Next64();
  if (now_ms > last_ms_) {
    last_ms_ = now_ms;
    counter_ = static_cast<uint32_t>(random_.Uniform(kCounterStartBound));
  } else if (counter_ < kCounterMax) {
    ++counter_;  // same (or an earlier) millisecond: count up within the last one
  } else {
    // 4096 ids in one millisecond: borrow the next one. At the 48-bit limit (year 10889)
    // the timestamp cannot grow; the counter wraps, which only loses ordering there.
    if (last_ms_ < kMaxUnixMs) ++last_ms_;
    counter_ = 0;
  }
  std::array<uint8_t, 16> b{};
  const auto ms = static_cast<uint64_t>(last_ms_);
  for (int i = 0; i < 6; ++i) b[i] = static_cast<uint8_t>(ms >> (8 * (5 - i)));
  b[6] = static_cast<uint8_t>(0x70 | (counter_ >> 8));
  b[7] = static_cast<uint8_t>(counter_ & 0xFF);
  b[8] = static_cast<uint8_t>(0x80 | ((rand_b >> 56) & 0x3F));
  for (int i = 9; i < 16; ++i) b[i] = static_cast<uint8_t>(rand_b >> (8 * (15 - i)));
  return Uuid(b);
}

}  // namespace converge
