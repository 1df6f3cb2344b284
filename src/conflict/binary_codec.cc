#include "conflict/binary_codec.h"
#include "core/event_internal.h"

#include <array>
#include <bit>
#include <cstring>
#include <limits>

namespace converge::conflict::internal {

bool BinaryReader::Fail(std::string_view reason) {
  if (status_.ok()) {
    status_ = InvalidArgumentError("malformed " + std::string(what_) + " at byte " +
                                   std::to_string(pos_) + ": " + std::string(reason));
  }
  return false;
}

bool BinaryReader::Byte(uint8_t* b) {
  if (!ok()) return false;
  if (pos_ >= data_.size()) return Fail("unexpected end of input");
  *b = static_cast<uint8_t>(data_[pos_++]);
  return true;
}

bool BinaryReader::U64(uint64_t* v) {
  if (!ok()) return false;
  namespace coding = ::converge::internal;
  size_t n = 0;
  // Shortest form only, so every value has one encoding.
  switch (coding::DecodeVarint64(data_.substr(pos_), v, &n, /*shortest=*/true)) {
    case coding::VarintError::kNone:
      pos_ += n;
      return true;
    case coding::VarintError::kTruncated:
      pos_ = data_.size();
      return Fail("truncated varint");
    case coding::VarintError::kOverflow:
      pos_ += 10;
      return Fail("varint overflows 64 bits");
    case coding::VarintError::kNotShortest:
      pos_ += n;
      return Fail("overlong varint");
  }
  return Fail("malformed varint");
}

bool BinaryReader::I64(int64_t* v) {
  uint64_t u;
  if (!U64(&u)) return false;
  *v = ::converge::internal::ZigZagDecode(u);
  return true;
}

bool BinaryReader::U32(uint32_t* v) {
  uint64_t u;
  if (!U64(&u)) return false;
  if (u > std::numeric_limits<uint32_t>::max()) return Fail("value exceeds 32 bits");
  *v = static_cast<uint32_t>(u);
  return true;
}

bool BinaryReader::BytesView(std::string_view* s) {
  uint64_t n;
  if (!U64(&n)) return false;
  if (n > remaining()) return Fail("string length beyond end of input");
  *s = data_.substr(pos_, n);
  pos_ += n;
  return true;
}

bool BinaryReader::Bytes(std::string* s) {
  std::string_view view;
  if (!BytesView(&view)) return false;
  s->assign(view);
  return true;
}

bool BinaryReader::Count(uint64_t* n, size_t min_item_bytes) {
  if (!U64(n)) return false;
  if (*n > remaining() / min_item_bytes) return Fail("item count exceeds the input size");
  return true;
}

bool BinaryReader::Header(uint8_t kind) {
  uint8_t tag, version;
  if (!Byte(&tag) || !Byte(&version)) return false;
  if (tag != kind) {
    return Fail("type tag " + std::to_string(tag) + ", expected " + std::to_string(kind));
  }
  if (version != kBinaryFormatVersion) {
    return Fail("unsupported format version " + std::to_string(version));
  }
  return true;
}

Status BinaryReader::Finish() {
  if (ok() && pos_ != data_.size()) Fail("trailing bytes");
  return status_;
}

void EncodeVersionVector(const VersionVector& vv, BinaryWriter& w) {
  w.U64(vv.size());
  uint64_t prev = 0;
  for (const auto& e : vv.entries()) {
    w.U64(e.replica.value() - prev);  // sorted and distinct: deltas after the first are >= 1
    w.U64(e.counter);
    prev = e.replica.value();
  }
}

bool DecodeVersionVector(BinaryReader& r, VersionVector* vv) {
  uint64_t n;
  if (!r.Count(&n, 2)) return false;
  VersionVector out;
  uint64_t prev = 0;
  for (uint64_t i = 0; i < n; ++i) {
    uint64_t delta, counter;
    if (!r.U64(&delta) || !r.U64(&counter)) return false;
    if (i > 0 && delta == 0) return r.Fail("version vector replicas not strictly increasing");
    if (delta > std::numeric_limits<uint64_t>::max() - prev) return r.Fail("replica id overflow");
    const uint64_t replica = prev + delta;
    if (replica == 0) return r.Fail("replica id 0 is reserved");
    if (counter == 0) return r.Fail("version vector counter 0");
    out.Observe(ReplicaId(replica), counter);
    prev = replica;
  }
  *vv = std::move(out);
  return true;
}

void EncodeDot(Dot dot, BinaryWriter& w) {
  w.U64(dot.replica.value());
  w.U64(dot.counter);
}

bool DecodeDot(BinaryReader& r, Dot* dot) {
  uint64_t replica, counter;
  if (!r.U64(&replica) || !r.U64(&counter)) return false;
  if (replica == 0) return r.Fail("replica id 0 is reserved");
  if (counter == 0) return r.Fail("dot counter 0");
  *dot = Dot{ReplicaId(replica), counter};
  return true;
}

void EncodeCausalContext(const CausalContext& cc, BinaryWriter& w) {
  EncodeVersionVector(cc.compact(), w);
  const auto& cloud = cc.cloud();
  w.U64(cloud.size());
  Dot prev{};
  for (const Dot& d : cloud) {
    // Sorted by (replica, counter): same replica as the previous dot costs a counter delta.
    const uint64_t replica_delta = d.replica.value() - prev.replica.value();
    w.U64(replica_delta);
    w.U64(replica_delta == 0 ? d.counter - prev.counter : d.counter);
    prev = d;
  }
}

bool DecodeCausalContext(BinaryReader& r, CausalContext* cc) {
  CausalContext out;
  VersionVector compact;
  if (!DecodeVersionVector(r, &compact)) return false;
  out.Add(compact);
  uint64_t n;
  if (!r.Count(&n, 2)) return false;
  Dot prev{};
  for (uint64_t i = 0; i < n; ++i) {
    uint64_t replica_delta, c;
    if (!r.U64(&replica_delta) || !r.U64(&c)) return false;
    if (replica_delta > std::numeric_limits<uint64_t>::max() - prev.replica.value()) {
      return r.Fail("replica id overflow");
    }
    Dot d;
    d.replica = ReplicaId(prev.replica.value() + replica_delta);
    if (!d.replica.valid()) return r.Fail("replica id 0 is reserved");
    if (replica_delta == 0) {
      if (i == 0 || c == 0) return r.Fail("dot cloud not strictly increasing");
      if (c > std::numeric_limits<uint64_t>::max() - prev.counter) {
        return r.Fail("dot counter overflow");
      }
      d.counter = prev.counter + c;
    } else {
      if (c == 0) return r.Fail("dot counter 0");
      d.counter = c;
    }
    out.Add(d);
    prev = d;
  }
  *cc = std::move(out);
  return true;
}

void EncodeHlc(const HlcTimestamp& ts, BinaryWriter& w) {
  w.I64(ts.physical_micros);
  w.U64(ts.logical);
}

bool DecodeHlc(BinaryReader& r, HlcTimestamp* ts) {
  int64_t physical;
  uint32_t logical;
  if (!r.I64(&physical) || !r.U32(&logical)) return false;
  if (physical < 0) return r.Fail("negative hlc timestamp");
  *ts = HlcTimestamp{physical, logical};
  return true;
}

Status CheckInputSize(std::string_view input, const DecodeLimits& limits, std::string_view what) {
  if (input.size() > limits.max_input_bytes) {
    return ResourceExhaustedError(std::string(what) + " input of " + std::to_string(input.size()) +
                                  " bytes exceeds the limit of " +
                                  std::to_string(limits.max_input_bytes));
  }
  return Status::Ok();
}

// ---- hashing -------------------------------------------------------------------------

namespace {

constexpr uint64_t kMul = 0xc6a4a7935bd1e995ULL;

uint64_t Load64(const char* p) {
  uint64_t v;
  std::memcpy(&v, p, 8);
  return v;
}

// A multiply-xorshift hash over 8-byte words (in the style of MurmurHash64A), with the bytes
// read in little-endian order explicitly so the result does not depend on the host.
uint64_t HashLane(std::string_view bytes, uint64_t seed) {
  uint64_t h = seed ^ (bytes.size() * kMul);
  size_t i = 0;
  for (; i + 8 <= bytes.size(); i += 8) {
    uint64_t k = Load64(bytes.data() + i);
    if constexpr (std::endian::native == std::endian::big) k = __builtin_bswap64(k);
    k *= kMul;
    k ^= k >> 47;
    k *= kMul;
    h ^= k;
    h *= kMul;
  }
  uint64_t tail = 0;
  for (size_t j = 0; i + j < bytes.size(); ++j) {
    tail |= uint64_t{static_cast<uint8_t>(bytes[i + j])} << (8 * j);
  }
  if (i < bytes.size()) {
    h ^= tail;
    h *= kMul;
  }
  h ^= h >> 47;
  h *= kMul;
  h ^= h >> 47;
  return h;
}

}  // namespace

Hash128 HashBytes(std::string_view bytes) {
  return Hash128{HashLane(bytes, 0x9e3779b97f4a7c15ULL), HashLane(bytes, 0x243f6a8885a308d3ULL)};
}

std::string HexHash(std::string_view bytes) {
  static constexpr char kHex[] = "0123456789abcdef";
  const Hash128 h = HashBytes(bytes);
  std::string out(32, '0');
  for (int i = 0; i < 16; ++i) {
    out[15 - i] = kHex[(h.hi >> (4 * i)) & 0xf];
    out[31 - i] = kHex[(h.lo >> (4 * i)) & 0xf];
  }
  return out;
}

// ---- base64 / utf-8 ----------------------------------------------------------------------

namespace {

int B64Value(char c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '+') return 62;
  if (c == '/') return 63;
  return -1;
}
}  // namespace

std::string Base64Encode(std::string_view bytes) {
  std::string out;
  ::converge::internal::AppendBase64(bytes, &out);
  return out;
}

bool Base64Decode(std::string_view text, std::string* out) {
  if (text.size() % 4 != 0) return false;
  std::string result;
  result.reserve(text.size() / 4 * 3);
  for (size_t i = 0; i < text.size(); i += 4) {
    const bool last = i + 4 == text.size();
    int v[4];
    int pad = 0;
    for (int j = 0; j < 4; ++j) {
      const char c = text[i + j];
      if (c == '=' && last && j >= 2) {
        v[j] = 0;
        ++pad;
        continue;
      }
      if (pad > 0) return false;  // data after padding
      v[j] = B64Value(c);
      if (v[j] < 0) return false;
    }
    const uint32_t n =
        uint32_t(v[0]) << 18 | uint32_t(v[1]) << 12 | uint32_t(v[2]) << 6 | uint32_t(v[3]);
    // Canonical form: the bits dropped by padding must be zero.
    if (pad == 1 && (n & 0xff) != 0) return false;
    if (pad == 2 && (n & 0xffff) != 0) return false;
    result.push_back(static_cast<char>(n >> 16));
    if (pad < 2) result.push_back(static_cast<char>((n >> 8) & 0xff));
    if (pad < 1) result.push_back(static_cast<char>(n & 0xff));
  }
  *out = std::move(result);
  return true;
}

bool IsValidUtf8(std::string_view bytes) {
  size_t i = 0;
  const size_t n = bytes.size();
  while (i < n) {
    const uint8_t c = static_cast<uint8_t>(bytes[i]);
    if (c < 0x80) {
      ++i;
      continue;
    }
    int len;
    uint32_t cp;
    if ((c & 0xe0) == 0xc0) {
      len = 2;
      cp = c & 0x1f;
    } else if ((c & 0xf0) == 0xe0) {
      len = 3;
      cp = c & 0x0f;
    } else if ((c & 0xf8) == 0xf0) {
      len = 4;
      cp = c & 0x07;
    } else {
      return false;
    }
    if (i + len > n) return false;
    for (int j = 1; j < len; ++j) {
      const uint8_t cc = static_cast<uint8_t>(bytes[i + j]);
      if ((cc & 0xc0) != 0x80) return false;
      cp = (cp << 6) | (cc & 0x3f);
    }
    static constexpr std::array<uint32_t, 5> kMin = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < kMin[len] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return false;
    i += len;
  }
  return true;
}

}  // namespace converge::conflict::internal
