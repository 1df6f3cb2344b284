// A JSON text parsed into a flat tape: one entry per value (an object's member is its key's
// entry followed by its value's), in document order, each container knowing where its subtree
// ends. What the validator walks: parsing into a reused tape allocates nothing once warm, and
// strings without escapes point into the text itself.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace converge::schema {

struct TapeValue {
  enum Kind : uint8_t {
    kNull,
    kFalse,
    kTrue,
    kInt,     // a negative integer (i)
    kUint,    // a non-negative integer (u)
    kBigInt,  // an integer beyond 64 bits (d holds it approximately)
    kDouble,  // a number with a fraction or an exponent (d)
    kString,  // also an object member's key
    kArray,
    kObject,
  };
  Kind kind = kNull;
  uint32_t end = 0;    // index just past this value's subtree
  uint32_t count = 0;  // containers: elements or members; strings: length in bytes
  const char* str = nullptr;
  union {
    int64_t i;
    uint64_t u;
    double d;
  };
  TapeValue() : u(0) {}
  std::string_view text() const { return std::string_view(str, count); }
  bool is_number() const { return kind >= kInt && kind <= kDouble; }
};

// Why a text did not parse.
enum class TapeError { kNone, kMalformed, kTooDeep };

class Tape {
 public:
  // Parses `text` (exactly one JSON value, optionally surrounded by whitespace; strings must be
  // valid UTF-8 and escapes well-formed, as RFC 8259 and Boost.JSON's defaults say) nesting at
  // most `max_depth` arrays/objects. The tape (and the strings it points to) stay valid until
  // the next Parse and while `text` lives.
  TapeError Parse(std::string_view text, uint32_t max_depth);

  const std::vector<TapeValue>& values() const { return values_; }
  // Where parsing stopped (for the error message).
  size_t error_offset() const { return error_at_; }

  // Drops capacity kept from a very large text.
  void Trim(size_t keep_bytes);

 private:
  std::vector<TapeValue> values_;
  std::string unescaped_;  // strings with escapes, decoded (never longer than the text)
  size_t error_at_ = 0;
  friend class TapeParser;
};

// The JSON pointer (RFC 6901) of the value at `index` of a tape.
std::string TapePointer(const std::vector<TapeValue>& tape, uint32_t index);

}  // namespace converge::schema
