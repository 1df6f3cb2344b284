// Internals shared by the Event codecs (event.cc, event_json.cc, event_binary.cc).
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_set>
#include <vector>

#include "converge/event.h"
#include "converge/status.h"

namespace converge::internal {

// Direct access to an Event's fields for decoders, which validate the whole event once at
// the end instead of through the public setters.
struct EventAccess {
  static std::string& id(Event& e) { return e.id_; }
  static std::string& source(Event& e) { return e.source_; }
  static std::string& type(Event& e) { return e.type_; }
  static std::optional<std::string>& subject(Event& e) { return e.subject_; }
  static std::optional<std::string>& time(Event& e) { return e.time_; }
  static std::optional<std::string>& datacontenttype(Event& e) { return e.datacontenttype_; }
  static std::optional<std::string>& dataschema(Event& e) { return e.dataschema_; }
  static std::vector<Extension>& extensions(Event& e) { return e.extensions_; }
  static DataKind& data_kind(Event& e) { return e.data_kind_; }
  static std::string& data(Event& e) { return e.data_; }
};

// Sorts extensions by name. InvalidArgument naming the first duplicated name.
Status SortExtensions(std::vector<Extension>& extensions);

// True if `s` is well-formed UTF-8 (no overlong forms, surrogates or code points past
// U+10FFFF).
bool IsValidUtf8(std::string_view s);

// Extension attribute names: 1-20 characters from 'a'-'z', '0'-'9'.
bool IsValidExtensionName(std::string_view name);
// True for the names the JSON format gives to context attributes and data members.
bool IsReservedAttributeName(std::string_view name);

// Appends `s` (valid UTF-8) as the contents of a JSON string, without the quotes: '"', '\\'
// and control characters escaped, everything else verbatim.
void AppendJsonEscaped(std::string_view s, std::string* out);

// Standard base64 (RFC 4648 section 4) with padding.
void AppendBase64(std::string_view bytes, std::string* out);
// Appends the decoded bytes; false (out unspecified) unless `text` is canonical padded
// base64: length a multiple of 4, only alphabet characters, '=' only as final padding, and
// the unused bits of the last group zero (so that re-encoding gives the same text).
bool DecodeBase64(std::string_view text, std::string* out);

// Replaces `*out` with the compact form of the single JSON value in `json`. InvalidArgument
// if it is not exactly one valid JSON value; ResourceExhausted if it nests deeper than
// `max_depth`.
Status CanonicalizeJson(std::string_view json, uint32_t max_depth, std::string* out);
// OK if `json` is exactly one valid JSON value nesting at most `max_depth` levels.
Status ValidateJson(std::string_view json, uint32_t max_depth);

// Quotes an attribute value for an error message, cut to a readable length.
std::string QuoteForMessage(std::string_view value);

// Tracks the member names of the JSON objects a streaming parser is inside, to find a name
// that appears twice in one object (Boost.JSON keeps only the last of them, other parsers
// the first: such a document means different things to different readers). Feed it the
// parser's object begin/end and key events.
class JsonKeyTracker {
 public:
  void BeginObject() {
    if (depth_ == levels_.size()) levels_.emplace_back();
    Level& l = levels_[depth_++];
    l.small_count = 0;
    l.big.clear();
    l.use_big = false;
  }
  void EndObject() { --depth_; }
  void KeyPart(std::string_view part) { key_.append(part); }
  // The last part of a member name: false if the current object already has that name
  // (then duplicate() is the name).
  bool Key(std::string_view last) {
    key_.append(last);
    const bool fresh = Insert(levels_[depth_ - 1]);
    if (!fresh) duplicate_ = key_;
    key_.clear();
    return fresh;
  }
  const std::string& duplicate() const { return duplicate_; }

 private:
  // Objects usually have few members: those are compared in a vector whose strings keep
  // their buffers from object to object (no allocation once warm); past kSmall, a hash set.
  static constexpr size_t kSmall = 32;
  struct Level {
    std::vector<std::string> small;
    size_t small_count = 0;
    std::unordered_set<std::string> big;
    bool use_big = false;
  };
  bool Insert(Level& l) {
    if (!l.use_big) {
      for (size_t i = 0; i < l.small_count; ++i) {
        if (l.small[i] == key_) return false;
      }
      if (l.small_count < kSmall) {
        if (l.small_count == l.small.size()) l.small.emplace_back();
        l.small[l.small_count++].assign(key_);
        return true;
      }
      l.big.insert(l.small.begin(), l.small.begin() + static_cast<std::ptrdiff_t>(l.small_count));
      l.use_big = true;
    }
    return l.big.insert(key_).second;
  }

  std::vector<Level> levels_;  // reused between objects
  size_t depth_ = 0;
  std::string key_;
  std::string duplicate_;
};

// OK if `json` is valid JSON (at most `max_depth` deep) in which no object has two members
// of the same name; InvalidArgument "duplicate key '<name>'" (or a malformed-JSON message).
Status CheckUniqueJsonKeys(std::string_view json, uint32_t max_depth);

}  // namespace converge::internal
