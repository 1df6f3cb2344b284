// Byte-level encoding shared by every binary format (docs/formats/*.md): little-endian
// fixed-width integers, LEB128 varints (unsigned; signed values zigzag-encoded),
// length-prefixed byte strings, and CRC32C (core/crc32c.h).
//
// Encoders append to a std::string. Decoders take the input by view, check every bound, and
// report malformed input (a truncated varint, one that overflows 64 bits or 32 bits, a length
// beyond the end) instead of reading past the end; none asserts.
//
// Thread-safety: pure functions.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "core/crc32c.h"

namespace converge::internal {

inline constexpr size_t kMaxVarint64Bytes = 10;
inline constexpr size_t kMaxVarint32Bytes = 5;

// ---- fixed-width, little-endian ----
inline void EncodeFixed32(char* dst, uint32_t v) {
  for (int i = 0; i < 4; ++i) dst[i] = static_cast<char>((v >> (8 * i)) & 0xff);
}
inline void EncodeFixed64(char* dst, uint64_t v) {
  for (int i = 0; i < 8; ++i) dst[i] = static_cast<char>((v >> (8 * i)) & 0xff);
}
inline uint32_t DecodeFixed32(const char* p) {
  uint32_t v = 0;
  for (int i = 0; i < 4; ++i) v |= static_cast<uint32_t>(static_cast<uint8_t>(p[i])) << (8 * i);
  return v;
}
inline uint64_t DecodeFixed64(const char* p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v |= static_cast<uint64_t>(static_cast<uint8_t>(p[i])) << (8 * i);
  return v;
}
inline void PutFixed32(std::string* dst, uint32_t v) {
  char b[4];
  EncodeFixed32(b, v);
  dst->append(b, 4);
}
inline void PutFixed64(std::string* dst, uint64_t v) {
  char b[8];
  EncodeFixed64(b, v);
  dst->append(b, 8);
}
// Consume from the front of *in; false (and *in unchanged) if it is too short.
bool GetFixed32(std::string_view* in, uint32_t* v);
bool GetFixed64(std::string_view* in, uint64_t* v);

// ---- varints ----
// Writes v at dst (room for kMaxVarint64Bytes) and returns the byte after it.
char* EncodeVarint64(char* dst, uint64_t v);
void PutVarint64(std::string* dst, uint64_t v);
inline void PutVarint32(std::string* dst, uint32_t v) { PutVarint64(dst, v); }
size_t VarintLength(uint64_t v);

inline uint64_t ZigZagEncode(int64_t v) {
  return (static_cast<uint64_t>(v) << 1) ^ static_cast<uint64_t>(v >> 63);
}
inline int64_t ZigZagDecode(uint64_t v) {
  return static_cast<int64_t>(v >> 1) ^ -static_cast<int64_t>(v & 1);
}

enum class VarintError : uint8_t {
  kNone = 0,
  kTruncated,    // the input ends inside the varint
  kOverflow,     // more than 64 bits (or more than 32 for the 32-bit decoders)
  kNotShortest,  // a redundant trailing zero group (only when the shortest form is required)
};
// A short English description ("truncated varint", ...) for error messages.
std::string_view VarintErrorText(VarintError e);

// Decodes the varint at the front of `in`. On success returns kNone, sets *v and *consumed
// (1..10; also set on kNotShortest). Redundant trailing zero groups (0x80 0x00) are accepted unless
// `shortest` is set: formats that promise one encoding per value (event records, CRDT state)
// require it.
VarintError DecodeVarint64(std::string_view in, uint64_t* v, size_t* consumed,
                           bool shortest = false);

// Consume a varint from the front of *in; false (and *in unchanged) if it is malformed.
bool GetVarint64(std::string_view* in, uint64_t* v);
bool GetVarint32(std::string_view* in, uint32_t* v);  // also false above UINT32_MAX

// ---- length-prefixed byte strings: varint length, then the bytes ----
inline void PutLengthPrefixed(std::string* dst, std::string_view s) {
  PutVarint64(dst, s.size());
  dst->append(s.data(), s.size());
}
// *out views into the input. False (and *in unchanged) if malformed or longer than *in.
bool GetLengthPrefixed(std::string_view* in, std::string_view* out);

}  // namespace converge::internal
