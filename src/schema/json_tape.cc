#include "schema/json_tape.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <cstring>

#include "schema/json_pointer.h"

namespace converge::schema {

class TapeParser {
 public:
  TapeParser(Tape& tape, std::string_view text, uint32_t max_depth)
      : t_(tape),
        begin_(text.data()),
        p_(text.data()),
        end_(text.data() + text.size()),
        max_depth_(max_depth) {}

  TapeError Run() {
    SkipSpace();
    if (!Value(0)) return Fail();
    SkipSpace();
    if (p_ != end_) {
      error_ = TapeError::kMalformed;
      return Fail();
    }
    return TapeError::kNone;
  }

 private:
  TapeError Fail() {
    if (error_ == TapeError::kNone) error_ = TapeError::kMalformed;
    t_.error_at_ = static_cast<size_t>(p_ - begin_);
    return error_;
  }

  void SkipSpace() {
    while (p_ != end_ && (*p_ == ' ' || *p_ == '\n' || *p_ == '\r' || *p_ == '\t')) ++p_;
  }

  uint32_t Push(TapeValue::Kind kind) {
    t_.values_.emplace_back();
    t_.values_.back().kind = kind;
    return static_cast<uint32_t>(t_.values_.size() - 1);
  }
  void Close(uint32_t at) { t_.values_[at].end = static_cast<uint32_t>(t_.values_.size()); }

  bool Literal(const char* word, size_t n, TapeValue::Kind kind) {
    if (static_cast<size_t>(end_ - p_) < n ||
        std::string_view(p_, n) != std::string_view(word, n)) {
      return false;
    }
    p_ += n;
    Close(Push(kind));
    return true;
  }

  bool Value(uint32_t depth) {
    if (p_ == end_) return false;
    switch (*p_) {
      case '{':
        return Object(depth + 1);
      case '[':
        return Array(depth + 1);
      case '"': {
        uint32_t at = Push(TapeValue::kString);
        if (!String(at)) return false;
        Close(at);
        return true;
      }
      case 't':
        return Literal("true", 4, TapeValue::kTrue);
      case 'f':
        return Literal("false", 5, TapeValue::kFalse);
      case 'n':
        return Literal("null", 4, TapeValue::kNull);
      default:
        return Number();
    }
  }

  bool Object(uint32_t depth) {
    if (depth > max_depth_) {
      error_ = TapeError::kTooDeep;
      return false;
    }
    ++p_;  // '{'
    uint32_t at = Push(TapeValue::kObject);
    uint32_t count = 0;
    SkipSpace();
    if (p_ != end_ && *p_ == '}') {
      ++p_;
    } else {
      while (true) {
        SkipSpace();
        if (p_ == end_ || *p_ != '"') return false;
        uint32_t key = Push(TapeValue::kString);
        if (!String(key)) return false;
        Close(key);
        SkipSpace();
        if (p_ == end_ || *p_ != ':') return false;
        ++p_;
        SkipSpace();
        if (!Value(depth)) return false;
        ++count;
        SkipSpace();
        if (p_ == end_) return false;
        if (*p_ == ',') {
          ++p_;
          continue;
        }
        if (*p_ != '}') return false;
        ++p_;
        break;
      }
    }
    t_.values_[at].count = count;
    Close(at);
    return true;
  }

  bool Array(uint32_t depth) {
    if (depth > max_depth_) {
      error_ = TapeError::kTooDeep;
      return false;
    }
    ++p_;  // '['
    uint32_t at = Push(TapeValue::kArray);
    uint32_t count = 0;
    SkipSpace();
    if (p_ != end_ && *p_ == ']') {
      ++p_;
    } else {
      while (true) {
        SkipSpace();
        if (!Value(depth)) return false;
        ++count;
        SkipSpace();
        if (p_ == end_) return false;
        if (*p_ == ',') {
          ++p_;
          continue;
        }
        if (*p_ != ']') return false;
        ++p_;
        break;
      }
    }
    t_.values_[at].count = count;
    Close(at);
    return true;
  }

  // One well-formed UTF-8 sequence of 2 to 4 bytes at p_ (no overlong forms, surrogates or
  // code points past U+10FFFF); advances past it.
  bool Utf8() {
    const auto* s = reinterpret_cast<const unsigned char*>(p_);
    const size_t left = static_cast<size_t>(end_ - p_);
    auto cont = [&](size_t k) { return k < left && (s[k] & 0xC0) == 0x80; };
    const unsigned char b = s[0];
    if (b >= 0xC2 && b <= 0xDF) {
      if (!cont(1)) return false;
      p_ += 2;
      return true;
    }
    if (b >= 0xE0 && b <= 0xEF) {
      if (!cont(1) || !cont(2)) return false;
      if (b == 0xE0 && s[1] < 0xA0) return false;   // overlong
      if (b == 0xED && s[1] >= 0xA0) return false;  // surrogate
      p_ += 3;
      return true;
    }
    if (b >= 0xF0 && b <= 0xF4) {
      if (!cont(1) || !cont(2) || !cont(3)) return false;
      if (b == 0xF0 && s[1] < 0x90) return false;   // overlong
      if (b == 0xF4 && s[1] >= 0x90) return false;  // past U+10FFFF
      p_ += 4;
      return true;
    }
    return false;
  }

  static int Hex(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  }
  bool Hex4(uint32_t* out) {
    if (end_ - p_ < 4) return false;
    uint32_t v = 0;
    for (int k = 0; k < 4; ++k) {
      int d = Hex(p_[k]);
      if (d < 0) return false;
      v = v * 16 + static_cast<uint32_t>(d);
    }
    p_ += 4;
    *out = v;
    return true;
  }

  // A string at p_ ('"'): its tape entry points into the text, or, when it has escapes, into
  // the decoded copy.
  bool String(uint32_t at) {
    ++p_;
    const char* start = p_;
    // The common case: no escapes. Eight bytes at a time while none is a quote, a backslash,
    // a control character or non-ASCII; then byte by byte.
    constexpr uint64_t kOnes = 0x0101010101010101ull, kHighs = 0x8080808080808080ull;
    auto has_zero = [](uint64_t v) { return (v - kOnes) & ~v & kHighs; };
    while (end_ - p_ >= 8) {
      uint64_t x;
      std::memcpy(&x, p_, 8);
      if ((x & kHighs) | has_zero(x ^ (kOnes * '"')) | has_zero(x ^ (kOnes * '\\')) |
          ((x - kOnes * 0x20) & ~x & kHighs)) {
        break;
      }
      p_ += 8;
    }
    while (true) {
      if (p_ == end_) return false;
      const auto c = static_cast<unsigned char>(*p_);
      if (c == '"') {
        TapeValue& v = t_.values_[at];
        v.str = start;
        v.count = static_cast<uint32_t>(p_ - start);
        ++p_;
        return true;
      }
      if (c == '\\') break;
      if (c < 0x20) return false;
      if (c < 0x80) {
        ++p_;
      } else if (!Utf8()) {
        return false;
      }
    }
    // Escapes: decode into unescaped_ (reserved up front to the text's size, so earlier
    // strings' pointers stay valid).
    std::string& out = t_.unescaped_;
    const size_t from = out.size();
    out.append(start, static_cast<size_t>(p_ - start));
    while (true) {
      if (p_ == end_) return false;
      const auto c = static_cast<unsigned char>(*p_);
      if (c == '"') {
        ++p_;
        break;
      }
      if (c < 0x20) return false;
      if (c >= 0x80) {
        const char* s = p_;
        if (!Utf8()) return false;
        out.append(s, static_cast<size_t>(p_ - s));
        continue;
      }
      if (c != '\\') {
        out.push_back(static_cast<char>(c));
        ++p_;
        continue;
      }
      ++p_;
      if (p_ == end_) return false;
      const char e = *p_++;
      switch (e) {
        case '"':
        case '\\':
        case '/':
          out.push_back(e);
          break;
        case 'b':
          out.push_back('\b');
          break;
        case 'f':
          out.push_back('\f');
          break;
        case 'n':
          out.push_back('\n');
          break;
        case 'r':
          out.push_back('\r');
          break;
        case 't':
          out.push_back('\t');
          break;
        case 'u': {
          uint32_t cp;
          if (!Hex4(&cp)) return false;
          if (cp >= 0xDC00 && cp <= 0xDFFF) return false;  // a lone low surrogate
          if (cp >= 0xD800 && cp <= 0xDBFF) {
            uint32_t low;
            if (end_ - p_ < 2 || p_[0] != '\\' || p_[1] != 'u') return false;
            p_ += 2;
            if (!Hex4(&low) || low < 0xDC00 || low > 0xDFFF) return false;
            cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
          }
          AppendUtf8(cp, &out);
          break;
        }
        default:
          return false;
      }
    }
    TapeValue& v = t_.values_[at];
    v.str = out.data() + from;
    v.count = static_cast<uint32_t>(out.size() - from);
    return true;
  }

  static void AppendUtf8(uint32_t cp, std::string* out) {
    if (cp < 0x80) {
      out->push_back(static_cast<char>(cp));
    } else if (cp < 0x800) {
      out->push_back(static_cast<char>(0xC0 | (cp >> 6)));
      out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    } else if (cp < 0x10000) {
      out->push_back(static_cast<char>(0xE0 | (cp >> 12)));
      out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
      out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    } else {
      out->push_back(static_cast<char>(0xF0 | (cp >> 18)));
      out->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
      out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
      out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    }
  }

  // -? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?
  bool Number() {
    const char* start = p_;
    const bool minus = *p_ == '-';
    if (minus) ++p_;
    if (p_ == end_) return false;
    uint64_t u = 0;
    bool overflow = false;
    if (*p_ == '0') {
      ++p_;
    } else if (*p_ >= '1' && *p_ <= '9') {
      while (p_ != end_ && *p_ >= '0' && *p_ <= '9') {
        const auto d = static_cast<uint64_t>(*p_ - '0');
        if (u > (UINT64_MAX - d) / 10) overflow = true;
        u = u * 10 + d;
        ++p_;
      }
    } else {
      return false;
    }
    bool integer = true;
    // For a short decimal (the common case): its digits as one integer and how many of them
    // follow the point.
    uint64_t digits = u;
    int frac_digits = 0;
    bool short_decimal = !overflow && u < (uint64_t{1} << 53);
    if (p_ != end_ && *p_ == '.') {
      integer = false;
      ++p_;
      if (p_ == end_ || *p_ < '0' || *p_ > '9') return false;
      while (p_ != end_ && *p_ >= '0' && *p_ <= '9') {
        if (short_decimal) {
          digits = digits * 10 + static_cast<uint64_t>(*p_ - '0');
          ++frac_digits;
          short_decimal = digits < (uint64_t{1} << 53) && frac_digits <= 22;
        }
        ++p_;
      }
    }
    const bool plain_fraction = !integer && short_decimal;
    bool has_exponent = false;
    if (p_ != end_ && (*p_ == 'e' || *p_ == 'E')) {
      integer = false;
      has_exponent = true;
      ++p_;
      if (p_ != end_ && (*p_ == '+' || *p_ == '-')) ++p_;
      if (p_ == end_ || *p_ < '0' || *p_ > '9') return false;
      // An exponent near or beyond 32 bits is refused, as Boost.JSON (the event decoder)
      // refuses it (a little more strictly, counting the mantissa's digits too: no text this
      // parser accepts is one the decoder refuses).
      const auto mantissa = static_cast<uint64_t>(p_ - start);
      uint64_t exponent = 0;
      while (p_ != end_ && *p_ >= '0' && *p_ <= '9') {
        exponent =
            std::min<uint64_t>(exponent * 10 + static_cast<uint64_t>(*p_ - '0'), uint64_t{1} << 40);
        ++p_;
      }
      if (exponent + mantissa >= 2147483647) return false;
    }
    uint32_t at = Push(TapeValue::kUint);
    TapeValue& v = t_.values_[at];
    if (integer && !overflow && !minus) {
      v.u = u;
    } else if (integer && !overflow && u <= uint64_t{1} << 63) {
      v.kind = TapeValue::kInt;
      v.i = u == uint64_t{1} << 63 ? INT64_MIN : -static_cast<int64_t>(u);
    } else if (plain_fraction && !has_exponent) {
      // digits / 10^k with both exact in a double: one correctly rounded division, the same
      // double a full conversion gives (Clinger's fast path).
      static constexpr double kPow10[] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,
                                          1e8,  1e9,  1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
                                          1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};
      v.kind = TapeValue::kDouble;
      const double d = static_cast<double>(digits) / kPow10[frac_digits];
      v.d = minus ? -d : d;
    } else {
      v.kind = integer ? TapeValue::kBigInt : TapeValue::kDouble;
      double d = 0;
      auto r = std::from_chars(start, p_, d);
      if (r.ec == std::errc::result_out_of_range) {
        // Beyond a double's range: infinity, or zero for a tiny one (the sign kept).
        d = std::strtod(std::string(start, p_).c_str(), nullptr);
      }
      v.d = d;
    }
    Close(at);
    return true;
  }

  Tape& t_;
  const char* begin_;
  const char* p_;
  const char* end_;
  uint32_t max_depth_;
  TapeError error_ = TapeError::kNone;
};

TapeError Tape::Parse(std::string_view text, uint32_t max_depth) {
  values_.clear();
  unescaped_.clear();
  unescaped_.reserve(text.size());
  error_at_ = 0;
  TapeParser parser(*this, text, max_depth);
  return parser.Run();
}

void Tape::Trim(size_t keep_bytes) {
  if (unescaped_.capacity() > keep_bytes) std::string().swap(unescaped_);
  if (values_.capacity() * sizeof(TapeValue) > keep_bytes) std::vector<TapeValue>().swap(values_);
}

std::string TapePointer(const std::vector<TapeValue>& tape, uint32_t index) {
  std::string out;
  uint32_t at = 0;
  while (at != index && at < tape.size()) {
    const TapeValue& c = tape[at];
    uint32_t child = at + 1;
    bool found = false;
    if (c.kind == TapeValue::kArray) {
      for (uint32_t k = 0; k < c.count; ++k) {
        if (index >= child && index < tape[child].end) {
          out.push_back('/');
          out.append(std::to_string(k));
          at = child;
          found = true;
          break;
        }
        child = tape[child].end;
      }
    } else if (c.kind == TapeValue::kObject) {
      for (uint32_t k = 0; k < c.count; ++k) {
        const uint32_t value = child + 1;
        if (index >= value && index < tape[value].end) {
          out.push_back('/');
          out.append(EscapePointerToken(tape[child].text()));
          at = value;
          found = true;
          break;
        }
        child = tape[value].end;
      }
    }
    if (!found) break;
  }
  return out;
}

}  // namespace converge::schema
