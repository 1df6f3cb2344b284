// Internal: the compact binary form shared by every conflict type.
//
// Integers are LEB128 varints (zigzag for signed), strings are a varint length and the bytes.
// Top-level states start with a two-byte header: the CrdtKind tag and a format version.
// The reader never trusts a count: a count is accepted only if the remaining input could hold
// that many items of their minimum size, so garbage cannot trigger a large allocation, and
// overlong varints are rejected so every value has one encoding.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "converge/conflict/causality.h"
#include "converge/status.h"
#include "core/coding.h"

namespace converge::conflict::internal {

inline constexpr uint8_t kBinaryFormatVersion = 1;
// Decoders pre-size containers from a validated count only up to this many items, so a count
// in hostile input cannot amplify into a large allocation (item structs outsize their bytes).
inline constexpr uint64_t kMaxDecodeReserve = 1024;

class BinaryWriter {
 public:
  explicit BinaryWriter(std::string* out) : out_(out) {}

  void Byte(uint8_t b) { out_->push_back(static_cast<char>(b)); }
  void U64(uint64_t v) { ::converge::internal::PutVarint64(out_, v); }
  void I64(int64_t v) { U64(::converge::internal::ZigZagEncode(v)); }
  void Bytes(std::string_view s) { ::converge::internal::PutLengthPrefixed(out_, s); }
  void Header(uint8_t kind) {
    Byte(kind);
    Byte(kBinaryFormatVersion);
  }
  std::string* out() { return out_; }

 private:
  std::string* out_;
};

class BinaryReader {
 public:
  // `what` names the thing being decoded in error messages ("or-set").
  BinaryReader(std::string_view data, std::string_view what) : data_(data), what_(what) {}

  bool ok() const { return status_.ok(); }
  const Status& status() const { return status_; }
  size_t remaining() const { return data_.size() - pos_; }
  size_t position() const { return pos_; }

  // Each returns false (and records the first error) on malformed input.
  bool Byte(uint8_t* b);
  bool U64(uint64_t* v);
  bool I64(int64_t* v);
  bool U32(uint32_t* v);
  bool Bytes(std::string* s);
  bool BytesView(std::string_view* s);
  // A count of items each taking at least `min_item_bytes` (>= 1) bytes.
  bool Count(uint64_t* n, size_t min_item_bytes);
  // The two-byte header of a top-level state of `kind`.
  bool Header(uint8_t kind);
  // Records an error at the current position; always returns false.
  bool Fail(std::string_view reason);
  // OK iff every read succeeded and the input was consumed entirely.
  Status Finish();

 private:
  std::string_view data_;
  size_t pos_ = 0;
  std::string_view what_;
  Status status_;
};

// Shared component encodings.
void EncodeVersionVector(const VersionVector& vv, BinaryWriter& w);
bool DecodeVersionVector(BinaryReader& r, VersionVector* vv);
void EncodeDot(Dot dot, BinaryWriter& w);
bool DecodeDot(BinaryReader& r, Dot* dot);
void EncodeCausalContext(const CausalContext& cc, BinaryWriter& w);
bool DecodeCausalContext(BinaryReader& r, CausalContext* cc);
void EncodeHlc(const HlcTimestamp& ts, BinaryWriter& w);
bool DecodeHlc(BinaryReader& r, HlcTimestamp* ts);

// Checks the input size limit before decoding anything.
Status CheckInputSize(std::string_view input, const DecodeLimits& limits, std::string_view what);

// A 128-bit non-cryptographic content hash (two independently seeded 64-bit lanes), used for
// ETags. Deterministic across processes and machines.
struct Hash128 {
  uint64_t hi = 0;
  uint64_t lo = 0;
};
Hash128 HashBytes(std::string_view bytes);
// 32 lowercase hex digits.
std::string HexHash(std::string_view bytes);

// Encodes `bytes` as standard base64 with padding.
std::string Base64Encode(std::string_view bytes);
// False for anything but canonical padded standard base64.
bool Base64Decode(std::string_view text, std::string* out);
// True iff `bytes` is well-formed UTF-8 (no overlongs, no surrogates, <= U+10FFFF).
bool IsValidUtf8(std::string_view bytes);

}  // namespace converge::conflict::internal
