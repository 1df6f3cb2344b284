// Byte-level encoding for the store's WAL records and snapshots: the shared encoders of
// core/coding.h (little-endian fixed-width integers, LEB128 varints, length-prefixed strings,
// CRC32C) and a Reader with a sticky failure state over them.
// Thread-safety: pure functions; a Reader is one object used by one thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "core/coding.h"

namespace converge::store_internal {

// The shared encoders of core/coding.h, by their names in this module.
using internal::Crc32c;
using internal::Crc32cExtend;
using internal::DecodeFixed32;
using internal::EncodeFixed32;
using internal::PutFixed32;
using internal::PutFixed64;
inline void PutVarint(std::string* out, uint64_t v) { internal::PutVarint64(out, v); }
inline void PutString(std::string* out, std::string_view s) { internal::PutLengthPrefixed(out, s); }

// Reads what the Put* functions wrote. Every getter returns false (and leaves the reader in a
// failed state) when the input is short or malformed; nothing reads past the end.
class Reader {
 public:
  explicit Reader(std::string_view in) : in_(in) {}

  bool GetU8(uint8_t* v) {
    if (in_.empty()) return Fail();
    *v = static_cast<uint8_t>(in_[0]);
    in_.remove_prefix(1);
    return true;
  }
  bool GetFixed64(uint64_t* v) { return internal::GetFixed64(&in_, v) || Fail(); }
  bool GetVarint(uint64_t* v) { return internal::GetVarint64(&in_, v) || Fail(); }
  bool GetString(std::string_view* s) { return internal::GetLengthPrefixed(&in_, s) || Fail(); }
  bool GetString(std::string* s) {
    std::string_view v;
    if (!GetString(&v)) return false;
    s->assign(v);
    return true;
  }
  bool done() const { return in_.empty(); }
  bool ok() const { return ok_; }
  size_t remaining() const { return in_.size(); }

 private:
  bool Fail() {
    ok_ = false;
    in_ = {};
    return false;
  }
  std::string_view in_;
  bool ok_ = true;
};

}  // namespace converge::store_internal
