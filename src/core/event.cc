// Event: accessors, validation and the attribute helpers shared by the codecs.
#include "converge/event.h"

#include <algorithm>
#include <cstdio>
#include <cstring>

#include "core/event_internal.h"

namespace converge {
namespace internal {
namespace {

constexpr bool IsAsciiAlpha(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
constexpr bool IsAsciiDigit(char c) { return c >= '0' && c <= '9'; }
constexpr bool IsHexDigit(char c) {
  return IsAsciiDigit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}
constexpr char ToLowerAscii(char c) { return (c >= 'A' && c <= 'Z') ? char(c - 'A' + 'a') : c; }

// Eight bytes at a time ("SWAR"), for the scans every decoded event goes through.
constexpr uint64_t kOnes = 0x0101010101010101ULL;
constexpr uint64_t kHighs = 0x8080808080808080ULL;
inline uint64_t Load64(const unsigned char* p) {
  uint64_t w;
  std::memcpy(&w, p, sizeof(w));
  return w;
}
// Nonzero iff some byte of `w` is below `n` (n <= 128).
constexpr uint64_t HasByteBelow(uint64_t w, uint8_t n) { return (w - kOnes * n) & ~w & kHighs; }
// Nonzero iff some byte of `w` equals `b` (b < 128).
constexpr uint64_t HasByte(uint64_t w, uint8_t b) {
  const uint64_t y = w ^ (kOnes * b);
  return (y - kOnes) & ~y & kHighs;
}

// Decodes the UTF-8 sequence at p[0..n); returns its length and sets *cp, or returns 0 if
// it is malformed (truncated, overlong, a surrogate, past U+10FFFF).
size_t DecodeUtf8(const unsigned char* p, size_t n, uint32_t* cp) {
  const unsigned char b0 = p[0];
  if (b0 < 0x80) {
    *cp = b0;
    return 1;
  }
  auto cont = [&](size_t i) { return i < n && (p[i] & 0xC0) == 0x80; };
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    if (!cont(1)) return 0;
    *cp = (uint32_t(b0 & 0x1F) << 6) | (p[1] & 0x3F);
    return 2;
  }
  if (b0 >= 0xE0 && b0 <= 0xEF) {
    if (!cont(1) || !cont(2)) return 0;
    if (b0 == 0xE0 && p[1] < 0xA0) return 0;  // overlong
    if (b0 == 0xED && p[1] > 0x9F) return 0;  // surrogate
    *cp = (uint32_t(b0 & 0x0F) << 12) | (uint32_t(p[1] & 0x3F) << 6) | (p[2] & 0x3F);
    return 3;
  }
  if (b0 >= 0xF0 && b0 <= 0xF4) {
    if (!cont(1) || !cont(2) || !cont(3)) return 0;
    if (b0 == 0xF0 && p[1] < 0x90) return 0;  // overlong
    if (b0 == 0xF4 && p[1] > 0x8F) return 0;  // past U+10FFFF
    *cp = (uint32_t(b0 & 0x07) << 18) | (uint32_t(p[1] & 0x3F) << 12) |
          (uint32_t(p[2] & 0x3F) << 6) | (p[3] & 0x3F);
    return 4;
  }
  return 0;
}

bool IsForbiddenInString(uint32_t cp) {
  return cp <= 0x1F || (cp >= 0x7F && cp <= 0x9F) || (cp >= 0xFDD0 && cp <= 0xFDEF) ||
         (cp & 0xFFFE) == 0xFFFE;
}

std::string CodePointName(uint32_t cp) {
  char buf[16];
  std::snprintf(buf, sizeof(buf), "U+%04X", static_cast<unsigned>(cp));
  return buf;
}

Status AttributeError(std::string_view attribute, std::string_view what) {
  std::string msg = "attribute '";
  msg += attribute;
  msg += "' ";
  msg += what;
  return InvalidArgumentError(msg);
}

// A CloudEvents String: valid UTF-8 without the characters the spec forbids.
Status CheckString(std::string_view attribute, std::string_view value) {
  const auto* p = reinterpret_cast<const unsigned char*>(value.data());
  const size_t n = value.size();
  size_t i = 0;
  while (i < n) {
    if (i + 8 <= n) {
      const uint64_t w = Load64(p + i);
      if (((w & kHighs) | HasByteBelow(w, 0x20) | HasByte(w, 0x7F)) == 0) {
        i += 8;  // eight printable ASCII characters
        continue;
      }
    }
    if (p[i] >= 0x20 && p[i] < 0x7F) {
      ++i;
      continue;
    }
    uint32_t cp = 0;
    const size_t len = DecodeUtf8(p + i, n - i, &cp);
    if (len == 0) return AttributeError(attribute, "is not valid UTF-8");
    if (IsForbiddenInString(cp)) {
      return AttributeError(attribute, "contains " + CodePointName(cp) +
                                           ", which a CloudEvents String "
                                           "must not contain");
    }
    i += len;
  }
  return Status::Ok();
}

Status CheckNonEmptyString(std::string_view attribute, std::string_view value) {
  if (value.empty()) return AttributeError(attribute, "must be a non-empty string");
  return CheckString(attribute, value);
}

constexpr bool IsUriChar(char c) {
  if (IsAsciiAlpha(c) || IsAsciiDigit(c)) return true;
  switch (c) {
    case '-':
    case '.':
    case '_':
    case '~':  // unreserved
    case ':':
    case '/':
    case '?':
    case '#':
    case '[':
    case ']':
    case '@':  // gen-delims
    case '!':
    case '$':
    case '&':
    case '\'':
    case '(':
    case ')':
    case '*':  // sub-delims
    case '+':
    case ',':
    case ';':
    case '=':
      return true;
    default:
      return false;
  }
}

bool IsValidScheme(std::string_view s) {
  if (s.empty() || !IsAsciiAlpha(s[0])) return false;
  return std::all_of(s.begin(), s.end(), [](char c) {
    return IsAsciiAlpha(c) || IsAsciiDigit(c) || c == '+' || c == '-' || c == '.';
  });
}

// RFC 3986 URI-reference (or, with require_scheme, URI): only URI characters, '%' followed
// by two hex digits, at most one '#', and a leading "x:" only as a valid scheme.
Status CheckUri(std::string_view attribute, std::string_view value, bool require_scheme) {
  if (value.empty()) return AttributeError(attribute, "must be a non-empty string");
  const std::string_view kind = require_scheme ? "URI" : "URI-reference";
  auto bad = [&](std::string_view why) {
    return AttributeError(attribute, "must be a " + std::string(kind) + " (RFC 3986), got " +
                                         QuoteForMessage(value) + ": " + std::string(why));
  };
  int hashes = 0;
  for (size_t i = 0; i < value.size(); ++i) {
    const char c = value[i];
    if (c == '%') {
      if (i + 2 >= value.size() || !IsHexDigit(value[i + 1]) || !IsHexDigit(value[i + 2])) {
        return bad("'%' must be followed by two hex digits");
      }
      i += 2;
      continue;
    }
    if (!IsUriChar(c)) return bad("character not allowed in a URI");
    if (c == '#' && ++hashes > 1) return bad("more than one '#'");
  }
  const size_t delim = value.find_first_of(":/?#");
  const bool has_scheme = delim != std::string_view::npos && value[delim] == ':';
  if (has_scheme && !IsValidScheme(value.substr(0, delim))) return bad("invalid scheme");
  if (require_scheme && !has_scheme) return bad("no scheme");
  return Status::Ok();
}

// RFC 2045 token characters: printable ASCII except tspecials.
struct MediaTypeTokenTable {
  bool ok[256];
  constexpr MediaTypeTokenTable() : ok() {
    for (int c = 0x21; c < 0x7F; ++c) ok[c] = true;
    for (char c : std::string_view("()<>@,;:\\\"/[]?=")) ok[static_cast<unsigned char>(c)] = false;
  }
};
constexpr MediaTypeTokenTable kMediaTypeToken;
bool IsMediaTypeTokenChar(char c) { return kMediaTypeToken.ok[static_cast<unsigned char>(c)]; }

// RFC 2045: type "/" subtype, then optional ";"-separated parameters (checked only as a
// CloudEvents String).
Status CheckMediaType(std::string_view attribute, std::string_view value) {
  CONVERGE_RETURN_IF_ERROR(CheckNonEmptyString(attribute, value));
  size_t i = 0;
  auto token = [&] {
    const size_t start = i;
    while (i < value.size() && IsMediaTypeTokenChar(value[i])) ++i;
    return i > start;
  };
  bool ok = token() && i < value.size() && value[i++] == '/' && token();
  if (ok) {
    while (i < value.size() && (value[i] == ' ' || value[i] == '\t')) ++i;
    ok = i == value.size() || value[i] == ';';
  }
  if (!ok) {
    return AttributeError(
        attribute, "must be a media type like 'application/json', got " + QuoteForMessage(value));
  }
  return Status::Ok();
}

struct Rfc3339 {
  int year, month, day, hour, minute, second;
  int64_t nanos;
  int offset_minutes;
};

bool ParseDigits(std::string_view s, size_t pos, size_t count, int* out) {
  if (pos + count > s.size()) return false;
  int v = 0;
  for (size_t i = pos; i < pos + count; ++i) {
    if (!IsAsciiDigit(s[i])) return false;
    v = v * 10 + (s[i] - '0');
  }
  *out = v;
  return true;
}

bool IsLeapYear(int y) { return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0; }

int DaysInMonth(int y, int m) {
  static constexpr int kDays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  return m == 2 && IsLeapYear(y) ? 29 : kDays[m - 1];
}

// RFC 3339 section 5.6 date-time; 'T' and 'Z' in either case.
std::optional<Rfc3339> ParseRfc3339(std::string_view s) {
  Rfc3339 t{};
  if (!ParseDigits(s, 0, 4, &t.year) || s.size() < 20 || s[4] != '-' ||
      !ParseDigits(s, 5, 2, &t.month) || s[7] != '-' || !ParseDigits(s, 8, 2, &t.day) ||
      (s[10] != 'T' && s[10] != 't') || !ParseDigits(s, 11, 2, &t.hour) || s[13] != ':' ||
      !ParseDigits(s, 14, 2, &t.minute) || s[16] != ':' || !ParseDigits(s, 17, 2, &t.second)) {
    return std::nullopt;
  }
  if (t.month < 1 || t.month > 12 || t.day < 1 || t.day > DaysInMonth(t.year, t.month) ||
      t.hour > 23 || t.minute > 59 || t.second > 60) {
    return std::nullopt;
  }
  size_t i = 19;
  if (s[i] == '.') {
    ++i;
    const size_t start = i;
    int64_t scale = 100'000'000;
    while (i < s.size() && IsAsciiDigit(s[i])) {
      t.nanos += (s[i] - '0') * scale;
      scale /= 10;
      ++i;
    }
    if (i == start) return std::nullopt;
  }
  if (i == s.size()) return std::nullopt;
  if (s[i] == 'Z' || s[i] == 'z') {
    return i + 1 == s.size() ? std::optional<Rfc3339>(t) : std::nullopt;
  }
  if (s[i] != '+' && s[i] != '-') return std::nullopt;
  int oh = 0, om = 0;
  if (s.size() != i + 6 || !ParseDigits(s, i + 1, 2, &oh) || s[i + 3] != ':' ||
      !ParseDigits(s, i + 4, 2, &om) || oh > 23 || om > 59) {
    return std::nullopt;
  }
  t.offset_minutes = (s[i] == '-' ? -1 : 1) * (oh * 60 + om);
  return t;
}

// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
int64_t DaysFromCivil(int64_t y, int m, int d) {
  y -= m <= 2;
  const int64_t era = (y >= 0 ? y : y - 399) / 400;
  const int64_t yoe = y - era * 400;
  const int64_t doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
  const int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + doe - 719468;
}

void CivilFromDays(int64_t z, int64_t* y, int* m, int* d) {
  z += 719468;
  const int64_t era = (z >= 0 ? z : z - 146096) / 146097;
  const int64_t doe = z - era * 146097;
  const int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
  const int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
  const int64_t mp = (5 * doy + 2) / 153;
  *d = static_cast<int>(doy - (153 * mp + 2) / 5 + 1);
  *m = static_cast<int>(mp < 10 ? mp + 3 : mp - 9);
  *y = yoe + era * 400 + (*m <= 2);
}

// The integer text this build writes for an Integer extension: no '+', no leading zeros,
// no "-0", within int32.
bool IsCanonicalInt32(std::string_view s) {
  if (s.empty() || s.size() > 11) return false;
  size_t i = s[0] == '-' ? 1 : 0;
  if (i == s.size() || !std::all_of(s.begin() + i, s.end(), IsAsciiDigit)) return false;
  if (s[i] == '0' && (s.size() > i + 1 || i == 1)) return false;
  int64_t v = 0;
  for (size_t k = i; k < s.size(); ++k) v = v * 10 + (s[k] - '0');
  if (i == 1) v = -v;
  return v >= INT32_MIN && v <= INT32_MAX;
}

Status CheckExtension(const Extension& ext) {
  if (!IsValidExtensionName(ext.name)) {
    return InvalidArgumentError("attribute " + QuoteForMessage(ext.name) +
                                ": extension names must be 1-20 characters 'a'-'z' or '0'-'9'");
  }
  if (IsReservedAttributeName(ext.name)) {
    return AttributeError(ext.name, "is a context attribute, not an extension");
  }
  switch (ext.kind) {
    case ExtensionKind::kString:
      return CheckString(ext.name, ext.value);
    case ExtensionKind::kInteger:
      if (!IsCanonicalInt32(ext.value)) {
        return AttributeError(ext.name, "must be an integer in [-2147483648, 2147483647], got " +
                                            QuoteForMessage(ext.value));
      }
      return Status::Ok();
    case ExtensionKind::kBoolean:
      if (ext.value != "true" && ext.value != "false") {
        return AttributeError(ext.name,
                              "must be 'true' or 'false', got " + QuoteForMessage(ext.value));
      }
      return Status::Ok();
  }
  return AttributeError(ext.name, "has an unknown value kind");
}

constexpr char kBase64Alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

struct Base64DecodeTable {
  int8_t v[256];
  constexpr Base64DecodeTable() : v() {
    for (int i = 0; i < 256; ++i) v[i] = -1;
    for (int i = 0; i < 64; ++i) v[static_cast<unsigned char>(kBase64Alphabet[i])] = int8_t(i);
  }
};
constexpr Base64DecodeTable kBase64Decode;

struct JsonEscapeTable {
  bool needs[256];
  constexpr JsonEscapeTable() : needs() {
    for (int i = 0; i < 0x20; ++i) needs[i] = true;
    needs[static_cast<unsigned char>('"')] = true;
    needs[static_cast<unsigned char>('\\')] = true;
  }
};
constexpr JsonEscapeTable kJsonEscape;

}  // namespace

bool IsValidUtf8(std::string_view s) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const size_t n = s.size();
  size_t i = 0;
  while (i < n) {
    // Eight ASCII bytes at a time: the common case for text payloads.
    if (i + 8 <= n) {
      uint64_t word;
      std::memcpy(&word, p + i, 8);
      if ((word & 0x8080808080808080ULL) == 0) {
        i += 8;
        continue;
      }
    }
    if (p[i] < 0x80) {
      ++i;
      continue;
    }
    uint32_t cp;
    const size_t len = DecodeUtf8(p + i, n - i, &cp);
    if (len == 0) return false;
    i += len;
  }
  return true;
}

bool IsValidExtensionName(std::string_view name) {
  if (name.empty() || name.size() > Event::kMaxExtensionNameLength) return false;
  return std::all_of(name.begin(), name.end(),
                     [](char c) { return (c >= 'a' && c <= 'z') || IsAsciiDigit(c); });
}

bool IsReservedAttributeName(std::string_view name) {
  static constexpr std::string_view kReserved[] = {
      "specversion",     "id",         "source", "type",       "subject", "time",
      "datacontenttype", "dataschema", "data",   "data_base64"};
  return std::find(std::begin(kReserved), std::end(kReserved), name) != std::end(kReserved);
}

Status SortExtensions(std::vector<Extension>& extensions) {
  std::sort(extensions.begin(), extensions.end(),
            [](const Extension& a, const Extension& b) { return a.name < b.name; });
  for (size_t i = 1; i < extensions.size(); ++i) {
    if (extensions[i].name == extensions[i - 1].name) {
      return AttributeError(extensions[i].name, "appears more than once");
    }
  }
  return Status::Ok();
}

void AppendJsonEscaped(std::string_view s, std::string* out) {
  static constexpr char kHex[] = "0123456789abcdef";
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const size_t n = s.size();
  size_t run = 0;  // start of the pending run of bytes copied verbatim
  for (size_t i = 0; i < n; ++i) {
    while (i + 8 <= n) {
      const uint64_t w = Load64(p + i);
      if ((HasByteBelow(w, 0x20) | HasByte(w, '"') | HasByte(w, '\\')) != 0) break;
      i += 8;  // nothing to escape in these eight bytes
    }
    if (i >= n) break;
    const unsigned char c = p[i];
    if (!kJsonEscape.needs[c]) continue;
    out->append(s.data() + run, i - run);
    run = i + 1;
    switch (c) {
      case '"':
        out->append("\\\"");
        break;
      case '\\':
        out->append("\\\\");
        break;
      case '\b':
        out->append("\\b");
        break;
      case '\f':
        out->append("\\f");
        break;
      case '\n':
        out->append("\\n");
        break;
      case '\r':
        out->append("\\r");
        break;
      case '\t':
        out->append("\\t");
        break;
      default: {
        const char esc[6] = {'\\', 'u', '0', '0', kHex[c >> 4], kHex[c & 0xF]};
        out->append(esc, sizeof(esc));
      }
    }
  }
  out->append(s.data() + run, s.size() - run);
}

void AppendBase64(std::string_view bytes, std::string* out) {
  const size_t start = out->size();
  out->resize(start + (bytes.size() + 2) / 3 * 4);
  char* w = out->data() + start;
  const auto* p = reinterpret_cast<const unsigned char*>(bytes.data());
  size_t i = 0;
  for (; i + 3 <= bytes.size(); i += 3) {
    const uint32_t v = (uint32_t(p[i]) << 16) | (uint32_t(p[i + 1]) << 8) | p[i + 2];
    *w++ = kBase64Alphabet[v >> 18];
    *w++ = kBase64Alphabet[(v >> 12) & 63];
    *w++ = kBase64Alphabet[(v >> 6) & 63];
    *w++ = kBase64Alphabet[v & 63];
  }
  const size_t rest = bytes.size() - i;
  if (rest == 1) {
    const uint32_t v = uint32_t(p[i]) << 16;
    *w++ = kBase64Alphabet[v >> 18];
    *w++ = kBase64Alphabet[(v >> 12) & 63];
    *w++ = '=';
    *w++ = '=';
  } else if (rest == 2) {
    const uint32_t v = (uint32_t(p[i]) << 16) | (uint32_t(p[i + 1]) << 8);
    *w++ = kBase64Alphabet[v >> 18];
    *w++ = kBase64Alphabet[(v >> 12) & 63];
    *w++ = kBase64Alphabet[(v >> 6) & 63];
    *w++ = '=';
  }
}

bool DecodeBase64(std::string_view text, std::string* out) {
  if (text.size() % 4 != 0) return false;
  if (text.empty()) return true;
  size_t pad = 0;
  if (text.back() == '=') pad = text[text.size() - 2] == '=' ? 2 : 1;
  const size_t start = out->size();
  out->resize(start + text.size() / 4 * 3 - pad);
  char* w = out->data() + start;
  const auto* p = reinterpret_cast<const unsigned char*>(text.data());
  const size_t full = text.size() - (pad ? 4 : 0);
  for (size_t i = 0; i < full; i += 4) {
    const int a = kBase64Decode.v[p[i]], b = kBase64Decode.v[p[i + 1]];
    const int c = kBase64Decode.v[p[i + 2]], d = kBase64Decode.v[p[i + 3]];
    if ((a | b | c | d) < 0) return false;
    const uint32_t v = (uint32_t(a) << 18) | (uint32_t(b) << 12) | (uint32_t(c) << 6) | d;
    *w++ = char(v >> 16);
    *w++ = char((v >> 8) & 0xFF);
    *w++ = char(v & 0xFF);
  }
  if (pad == 0) return true;
  const unsigned char* q = p + full;
  const int a = kBase64Decode.v[q[0]], b = kBase64Decode.v[q[1]];
  if ((a | b) < 0) return false;
  if (pad == 2) {
    if ((b & 0x0F) != 0) return false;  // non-canonical: unused bits set
    *w++ = char((a << 2) | (b >> 4));
    return true;
  }
  const int c = kBase64Decode.v[q[2]];
  if (c < 0 || (c & 0x03) != 0) return false;
  *w++ = char((a << 2) | (b >> 4));
  *w++ = char(((b & 0x0F) << 4) | (c >> 2));
  return true;
}

std::string QuoteForMessage(std::string_view value) {
  static constexpr size_t kMaxShown = 64;
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out = "'";
  for (size_t i = 0; i < value.size() && i < kMaxShown; ++i) {
    const auto c = static_cast<unsigned char>(value[i]);
    if (c >= 0x20 && c < 0x7F && c != '\'') {
      out += char(c);
    } else {
      out += "\\x";
      out += kHex[c >> 4];
      out += kHex[c & 0xF];
    }
  }
  if (value.size() > kMaxShown) out += "...";
  out += "'";
  return out;
}

}  // namespace internal

using internal::AttributeError;
using internal::CheckNonEmptyString;

// ---------------------------------------------------------------------------------------
// Event

const Extension* Event::FindExtension(std::string_view name) const {
  auto it = std::lower_bound(extensions_.begin(), extensions_.end(), name,
                             [](const Extension& e, std::string_view n) { return e.name < n; });
  return it != extensions_.end() && it->name == name ? &*it : nullptr;
}

void Event::PutExtension(Extension ext) {
  auto it = std::lower_bound(extensions_.begin(), extensions_.end(), ext.name,
                             [](const Extension& e, const std::string& n) { return e.name < n; });
  if (it != extensions_.end() && it->name == ext.name) {
    *it = std::move(ext);
  } else {
    extensions_.insert(it, std::move(ext));
  }
}

void Event::SetExtension(std::string name, std::string value) {
  PutExtension(Extension{std::move(name), std::move(value), ExtensionKind::kString});
}

void Event::SetExtensionInteger(std::string name, int32_t value) {
  PutExtension(Extension{std::move(name), std::to_string(value), ExtensionKind::kInteger});
}

void Event::SetExtensionBoolean(std::string name, bool value) {
  PutExtension(Extension{std::move(name), value ? "true" : "false", ExtensionKind::kBoolean});
}

bool Event::RemoveExtension(std::string_view name) {
  const Extension* ext = FindExtension(name);
  if (ext == nullptr) return false;
  extensions_.erase(extensions_.begin() + (ext - extensions_.data()));
  return true;
}

static std::optional<std::string_view> ExtensionValue(const Event& e, std::string_view name) {
  const Extension* ext = e.FindExtension(name);
  if (ext == nullptr) return std::nullopt;
  return std::string_view(ext->value);
}

std::optional<std::string_view> Event::partitionkey() const {
  return ExtensionValue(*this, kPartitionKey);
}
std::optional<std::string_view> Event::traceparent() const {
  return ExtensionValue(*this, kTraceParent);
}
std::optional<std::string_view> Event::tracestate() const {
  return ExtensionValue(*this, kTraceState);
}

Status Event::SetTextData(std::string text) {
  if (!internal::IsValidUtf8(text)) return InvalidArgumentError("text data is not valid UTF-8");
  data_ = std::move(text);
  data_kind_ = DataKind::kText;
  return Status::Ok();
}

void Event::SetBinaryData(std::string bytes) {
  data_ = std::move(bytes);
  data_kind_ = DataKind::kBinary;
}

void Event::ClearData() {
  data_.clear();
  data_kind_ = DataKind::kNone;
}

Status Event::Validate() const {
  CONVERGE_RETURN_IF_ERROR(CheckNonEmptyString("id", id_));
  CONVERGE_RETURN_IF_ERROR(internal::CheckUri("source", source_, /*require_scheme=*/false));
  CONVERGE_RETURN_IF_ERROR(CheckNonEmptyString("type", type_));
  if (subject_) CONVERGE_RETURN_IF_ERROR(CheckNonEmptyString("subject", *subject_));
  if (time_ && !internal::ParseRfc3339(*time_)) {
    return AttributeError(
        "time", "must be an RFC 3339 timestamp, got " + internal::QuoteForMessage(*time_));
  }
  if (datacontenttype_) {
    CONVERGE_RETURN_IF_ERROR(internal::CheckMediaType("datacontenttype", *datacontenttype_));
  }
  if (dataschema_) {
    CONVERGE_RETURN_IF_ERROR(internal::CheckUri("dataschema", *dataschema_, true));
  }
  for (size_t i = 0; i < extensions_.size(); ++i) {
    CONVERGE_RETURN_IF_ERROR(internal::CheckExtension(extensions_[i]));
    if (i > 0 && !(extensions_[i - 1].name < extensions_[i].name)) {
      return AttributeError(extensions_[i].name, "appears more than once");
    }
  }
  const bool json_type = !datacontenttype_ || IsJsonContentType(*datacontenttype_);
  if (data_kind_ == DataKind::kText && json_type) {
    return AttributeError("data",
                          "holds text, which needs a non-JSON datacontenttype (got " +
                              (datacontenttype_ ? internal::QuoteForMessage(*datacontenttype_)
                                                : std::string("none")) +
                              ")");
  }
  if (data_kind_ == DataKind::kJson && !json_type) {
    return AttributeError("data", "holds a JSON value but datacontenttype " +
                                      internal::QuoteForMessage(*datacontenttype_) +
                                      " is not a JSON media type");
  }
  return Status::Ok();
}

Status CheckAttributeLimits(const Event& event) {
  auto check = [](std::string_view name, std::string_view value) -> Status {
    if (value.size() <= Event::kMaxAttributeBytes) return Status::Ok();
    return AttributeError(name, "is " + std::to_string(value.size()) +
                                    " bytes, more than the limit of " +
                                    std::to_string(Event::kMaxAttributeBytes) + " bytes");
  };
  CONVERGE_RETURN_IF_ERROR(check("id", event.id()));
  CONVERGE_RETURN_IF_ERROR(check("source", event.source()));
  CONVERGE_RETURN_IF_ERROR(check("type", event.type()));
  if (event.subject()) CONVERGE_RETURN_IF_ERROR(check("subject", *event.subject()));
  if (event.time()) CONVERGE_RETURN_IF_ERROR(check("time", *event.time()));
  if (event.datacontenttype()) {
    CONVERGE_RETURN_IF_ERROR(check("datacontenttype", *event.datacontenttype()));
  }
  if (event.dataschema()) CONVERGE_RETURN_IF_ERROR(check("dataschema", *event.dataschema()));
  for (const Extension& ext : event.extensions()) {
    CONVERGE_RETURN_IF_ERROR(check(ext.name, ext.value));
  }
  return Status::Ok();
}

void AppendEventIdentity(const Event& event, std::string* out) {
  out->append(std::to_string(event.source().size()));
  out->push_back(':');
  out->append(event.source());
  out->append(event.id());
}

std::string EventIdentity(const Event& event) {
  std::string out;
  out.reserve(event.source().size() + event.id().size() + 8);
  AppendEventIdentity(event, &out);
  return out;
}

// ---------------------------------------------------------------------------------------
// Attribute helpers

bool IsJsonContentType(std::string_view media_type) {
  const size_t semi = media_type.find(';');
  std::string_view mt = media_type.substr(0, semi);
  while (!mt.empty() && (mt.back() == ' ' || mt.back() == '\t')) mt.remove_suffix(1);
  const size_t slash = mt.find('/');
  if (slash == std::string_view::npos || slash == 0) return false;
  const std::string_view subtype = mt.substr(slash + 1);
  auto ends_with_ci = [](std::string_view s, std::string_view suffix) {
    if (s.size() < suffix.size()) return false;
    for (size_t i = 0; i < suffix.size(); ++i) {
      if (internal::ToLowerAscii(s[s.size() - suffix.size() + i]) != suffix[i]) return false;
    }
    return true;
  };
  return (subtype.size() == 4 && ends_with_ci(subtype, "json")) || ends_with_ci(subtype, "+json");
}

Result<int64_t> ParseRfc3339Nanos(std::string_view timestamp) {
  std::optional<internal::Rfc3339> t = internal::ParseRfc3339(timestamp);
  if (!t) {
    return InvalidArgumentError("not an RFC 3339 timestamp: " +
                                internal::QuoteForMessage(timestamp));
  }
  const int64_t days = internal::DaysFromCivil(t->year, t->month, t->day);
  const int64_t seconds =
      days * 86400 + t->hour * 3600 + t->minute * 60 + t->second - int64_t{t->offset_minutes} * 60;
  int64_t nanos;
  if (__builtin_mul_overflow(seconds, int64_t{1'000'000'000}, &nanos) ||
      __builtin_add_overflow(nanos, t->nanos, &nanos)) {
    return OutOfRangeError("timestamp outside the representable range: " +
                           internal::QuoteForMessage(timestamp));
  }
  return nanos;
}

std::string FormatRfc3339(int64_t unix_nanos) {
  int64_t seconds = unix_nanos / 1'000'000'000;
  int64_t frac = unix_nanos % 1'000'000'000;
  if (frac < 0) {
    frac += 1'000'000'000;
    --seconds;
  }
  int64_t days = seconds / 86400;
  int64_t sod = seconds % 86400;
  if (sod < 0) {
    sod += 86400;
    --days;
  }
  int64_t year;
  int month, day;
  internal::CivilFromDays(days, &year, &month, &day);
  char buf[48];
  int n = std::snprintf(buf, sizeof(buf), "%04lld-%02d-%02dT%02d:%02d:%02d",
                        static_cast<long long>(year), month, day, static_cast<int>(sod / 3600),
                        static_cast<int>(sod / 60 % 60), static_cast<int>(sod % 60));
  std::string out(buf, static_cast<size_t>(n));
  if (frac != 0) {
    int digits = 9;
    int64_t f = frac;
    if (f % 1'000'000 == 0) {
      digits = 3;
      f /= 1'000'000;
    } else if (f % 1'000 == 0) {
      digits = 6;
      f /= 1'000;
    }
    n = std::snprintf(buf, sizeof(buf), ".%0*lld", digits, static_cast<long long>(f));
    out.append(buf, static_cast<size_t>(n));
  }
  out += 'Z';
  return out;
}

static bool ParseLowerHex(std::string_view s, uint8_t* out) {
  auto nibble = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
  };
  for (size_t i = 0; i < s.size(); i += 2) {
    const int hi = nibble(s[i]), lo = nibble(s[i + 1]);
    if (hi < 0 || lo < 0) return false;
    out[i / 2] = static_cast<uint8_t>(hi << 4 | lo);
  }
  return true;
}

Result<TraceParent> TraceParent::Parse(std::string_view text) {
  auto bad = [&](std::string_view why) {
    return InvalidArgumentError("invalid traceparent " + internal::QuoteForMessage(text) + ": " +
                                std::string(why));
  };
  if (text.size() < 55) return bad("too short");
  if (text[2] != '-' || text[35] != '-' || text[52] != '-') return bad("misplaced '-'");
  TraceParent tp;
  if (!ParseLowerHex(text.substr(0, 2), &tp.version) ||
      !ParseLowerHex(text.substr(3, 32), tp.trace_id.data()) ||
      !ParseLowerHex(text.substr(36, 16), tp.parent_id.data()) ||
      !ParseLowerHex(text.substr(53, 2), &tp.flags)) {
    return bad("fields must be lowercase hex");
  }
  if (tp.version == 0xff) return bad("version ff is invalid");
  if (tp.version == 0 && text.size() != 55) return bad("version 00 has exactly four fields");
  if (text.size() > 55 && text[55] != '-') return bad("misplaced '-'");
  auto all_zero = [](const auto& a) {
    return std::all_of(a.begin(), a.end(), [](uint8_t b) { return b == 0; });
  };
  if (all_zero(tp.trace_id)) return bad("trace id is all zeros");
  if (all_zero(tp.parent_id)) return bad("parent id is all zeros");
  return tp;
}

std::string TraceParent::ToString() const {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(55);
  auto hex = [&](uint8_t b) {
    out += kHex[b >> 4];
    out += kHex[b & 0xF];
  };
  hex(version);
  out += '-';
  for (uint8_t b : trace_id) hex(b);
  out += '-';
  for (uint8_t b : parent_id) hex(b);
  out += '-';
  hex(flags);
  return out;
}

}  // namespace converge
