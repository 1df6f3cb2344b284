#include "store/json_util.h"

#include <boost/json/basic_parser_impl.hpp>
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <boost/json/value.hpp>

#include "core/event_internal.h"

namespace converge::store_internal {
namespace {

namespace json = boost::json;

// basic_parser does the grammar and depth checks; the handler refuses a member name repeated
// within one object (readers disagree on which one counts).
struct NullHandler {
  static constexpr std::size_t max_object_size = std::size_t(-1);
  static constexpr std::size_t max_array_size = std::size_t(-1);
  static constexpr std::size_t max_key_size = std::size_t(-1);
  static constexpr std::size_t max_string_size = std::size_t(-1);
  bool top_is_object = false;
  int depth = 0;
  ::converge::internal::JsonKeyTracker keys;

  bool on_document_begin(json::error_code&) { return true; }
  bool on_document_end(json::error_code&) { return true; }
  bool on_array_begin(json::error_code&) {
    ++depth;
    return true;
  }
  bool on_array_end(std::size_t, json::error_code&) {
    --depth;
    return true;
  }
  bool on_object_begin(json::error_code&) {
    if (depth++ == 0) top_is_object = true;
    keys.BeginObject();
    return true;
  }
  bool on_object_end(std::size_t, json::error_code&) {
    --depth;
    keys.EndObject();
    return true;
  }
  bool on_string_part(json::string_view, std::size_t, json::error_code&) { return true; }
  bool on_string(json::string_view, std::size_t, json::error_code&) { return true; }
  bool on_key_part(json::string_view s, std::size_t, json::error_code&) {
    keys.KeyPart(std::string_view(s.data(), s.size()));
    return true;
  }
  bool on_key(json::string_view s, std::size_t, json::error_code& ec) {
    if (keys.Key(std::string_view(s.data(), s.size()))) return true;
    ec = json::error::exception;
    return false;
  }
  bool on_number_part(json::string_view, json::error_code&) { return true; }
  bool on_int64(int64_t, json::string_view, json::error_code&) { return true; }
  bool on_uint64(uint64_t, json::string_view, json::error_code&) { return true; }
  bool on_double(double, json::string_view, json::error_code&) { return true; }
  bool on_bool(bool, json::error_code&) { return true; }
  bool on_null(json::error_code&) { return true; }
  bool on_comment_part(json::string_view, json::error_code&) { return true; }
  bool on_comment(json::string_view, json::error_code&) { return true; }
};

Result<json::value> Parse(std::string_view text, uint32_t max_depth, std::string_view what) {
  json::parse_options opts;
  opts.max_depth = max_depth;
  json::error_code ec;
  json::value v = json::parse(json::string_view(text.data(), text.size()), ec, {}, opts);
  if (ec) return InvalidArgumentError(std::string(what) + " is not valid JSON: " + ec.message());
  return v;
}

}  // namespace

Status ValidateJson(std::string_view text, uint32_t max_depth) {
  json::parse_options opts;
  opts.max_depth = max_depth;
  json::basic_parser<NullHandler> parser(opts);
  json::error_code ec;
  const size_t n = parser.write_some(false, text.data(), text.size(), ec);
  if (!ec && n != text.size()) ec = json::error::extra_data;
  if (ec == json::error::exception) {
    return InvalidArgumentError(
        "document is not valid: the key " +
        ::converge::internal::QuoteForMessage(parser.handler().keys.duplicate()) +
        " appears more than once in one object (at byte " +
        std::to_string(std::min(n, text.size())) + ")");
  }
  if (ec) {
    return InvalidArgumentError("document is not valid JSON (at byte " +
                                std::to_string(std::min(n, text.size())) + "): " + ec.message());
  }
  return Status::Ok();
}

bool IsJsonObject(std::string_view text) {
  for (char c : text) {
    if (c == ' ' || c == '\t' || c == '\n' || c == '\r') continue;
    return c == '{';
  }
  return false;
}

Result<std::string> ResolveMergeFields(std::string_view stored, std::string_view written,
                                       const FieldMergers& mergers, bool stale,
                                       uint32_t max_depth) {
  CONVERGE_ASSIGN_OR_RETURN(json::value w, Parse(written, max_depth, "document"));
  if (!w.is_object()) {
    return InvalidArgumentError("documents of a collection with merge fields must be objects");
  }
  json::object stored_obj;
  if (!stored.empty()) {
    // The stored document was validated when written; a non-object (written before the
    // collection gained merge fields) counts as an empty object.
    Result<json::value> s = Parse(stored, max_depth, "stored document");
    if (s.ok() && s->is_object()) stored_obj = std::move(s->as_object());
  }
  const json::object wobj = std::move(w.as_object());
  if (stale) {
    // Only a write confined to merge fields may be merged over a newer version.
    auto differs = [&](const json::object& a, const json::object& b) {
      for (const auto& kv : a) {
        if (mergers.count(std::string_view(kv.key()))) continue;
        const json::value* other = b.if_contains(kv.key());
        if (other == nullptr || *other != kv.value()) return true;
      }
      return false;
    };
    if (differs(wobj, stored_obj) || differs(stored_obj, wobj)) {
      return AbortedError(
          "precondition failed: the document changed since it was read and the write changes "
          "fields that are not merge fields");
    }
  }
  json::object result = stale ? stored_obj : wobj;
  for (const auto& [field, fn] : mergers) {
    const json::string_view f(field.data(), field.size());
    const json::value* wv = wobj.if_contains(f);
    const json::value* sv = stored_obj.if_contains(f);
    if (wv == nullptr) {
      if (sv != nullptr) result[f] = *sv;  // omitted by the write: keep the stored value
      continue;
    }
    const std::string sjson = sv ? json::serialize(*sv) : std::string();
    Result<std::string> merged = (*fn)(sjson, json::serialize(*wv));
    if (!merged.ok()) return merged.status().WithContext("merge field '" + field + "'");
    CONVERGE_ASSIGN_OR_RETURN(json::value mv, Parse(*merged, max_depth, "merged value"));
    result[f] = std::move(mv);
  }
  return json::serialize(result);
}

}  // namespace converge::store_internal
