#include "core/coding.h"

namespace converge::internal {

bool GetFixed32(std::string_view* in, uint32_t* v) {
  if (in->size() < 4) return false;
  *v = DecodeFixed32(in->data());
  in->remove_prefix(4);
  return true;
}

bool GetFixed64(std::string_view* in, uint64_t* v) {
  if (in->size() < 8) return false;
  *v = DecodeFixed64(in->data());
  in->remove_prefix(8);
  return true;
}

char* EncodeVarint64(char* dst, uint64_t v) {
  while (v >= 0x80) {
    *dst++ = static_cast<char>((v & 0x7f) | 0x80);
    v >>= 7;
  }
  *dst++ = static_cast<char>(v);
  return dst;
}

void PutVarint64(std::string* dst, uint64_t v) {
  char buf[kMaxVarint64Bytes];
  const char* end = EncodeVarint64(buf, v);
  dst->append(buf, static_cast<size_t>(end - buf));
}

size_t VarintLength(uint64_t v) {
  size_t n = 1;
  while (v >= 0x80) {
    v >>= 7;
    ++n;
  }
  return n;
}

std::string_view VarintErrorText(VarintError e) {
  switch (e) {
    case VarintError::kNone:
      return "ok";
    case VarintError::kTruncated:
      return "truncated varint";
    case VarintError::kOverflow:
      return "varint overflows 64 bits";
    case VarintError::kNotShortest:
      return "varint is not in its shortest form";
  }
  return "malformed varint";
}

VarintError DecodeVarint64(std::string_view in, uint64_t* v, size_t* consumed, bool shortest) {
  uint64_t result = 0;
  for (size_t i = 0; i < kMaxVarint64Bytes; ++i) {
    if (i >= in.size()) return VarintError::kTruncated;
    const auto b = static_cast<uint8_t>(in[i]);
    // The tenth byte holds bit 63 only; anything more (including a continuation bit, so no
    // varint is longer than ten bytes) does not fit in 64 bits.
    if (i == kMaxVarint64Bytes - 1 && b > 1) return VarintError::kOverflow;
    result |= static_cast<uint64_t>(b & 0x7f) << (7 * i);
    if ((b & 0x80) == 0) {
      *consumed = i + 1;  // also on kNotShortest: where the offending varint ends
      if (shortest && b == 0 && i > 0) return VarintError::kNotShortest;
      *v = result;
      return VarintError::kNone;
    }
  }
  return VarintError::kOverflow;  // not reached: the tenth byte check returns first
}

bool GetVarint64(std::string_view* in, uint64_t* v) {
  size_t n = 0;
  if (DecodeVarint64(*in, v, &n) != VarintError::kNone) return false;
  in->remove_prefix(n);
  return true;
}

bool GetVarint32(std::string_view* in, uint32_t* v) {
  std::string_view copy = *in;
  uint64_t x = 0;
  if (!GetVarint64(&copy, &x) || x > UINT32_MAX) return false;
  *v = static_cast<uint32_t>(x);
  *in = copy;
  return true;
}

bool GetLengthPrefixed(std::string_view* in, std::string_view* out) {
  std::string_view copy = *in;
  uint64_t n = 0;
  if (!GetVarint64(&copy, &n) || n > copy.size()) return false;
  *out = copy.substr(0, static_cast<size_t>(n));
  copy.remove_prefix(static_cast<size_t>(n));
  *in = copy;
  return true;
}

}  // namespace converge::internal
