#include "schema/validator.h"

// RAPIDJSON_SCHEMA_USE_INTERNALREGEX stays undefined: RapidJSON then uses its own regular
// expressions (a Thompson NFA, linear in the input, no recursion) for `pattern`. Defining it,
// to any value, switches to std::regex, which backtracks and recurses, so a hostile string
// could exhaust the stack.
#define RAPIDJSON_HAS_STDSTRING 1
#include <stdexcept>
// An internal inconsistency in RapidJSON (its asserts are off in a release build, where it
// would read out of bounds) throws instead; Validate turns it into a failed validation.
// The throw sits in a cold function of its own: written inline it made every small RapidJSON
// accessor (a stack's Top, run for each value) too big to inline.
namespace converge::schema {
[[noreturn, gnu::cold, gnu::noinline]] inline void RapidJsonAssertFailed(const char* what) {
  throw std::logic_error(what);
}
}  // namespace converge::schema
#define RAPIDJSON_ASSERT(x)                  \
  (__builtin_expect(static_cast<bool>(x), 1) \
       ? static_cast<void>(0)                \
       : ::converge::schema::RapidJsonAssertFailed("rapidjson: " #x))
#include <rapidjson/document.h>
#include <rapidjson/error/en.h>
#include <rapidjson/memorystream.h>
#include <rapidjson/reader.h>
#include <rapidjson/schema.h>
#include <rapidjson/stringbuffer.h>

#include <mutex>
#include <set>
#include <string_view>
#include <utility>
#include <vector>

#include "schema/json_pointer.h"

namespace converge::schema {
namespace {

namespace json = boost::json;

// Feeds a Boost.JSON value to a RapidJSON SAX handler (a validator, or a Document being
// built). Stops at the first event the handler refuses.
template <typename Handler>
bool Emit(const json::value& v, Handler& h) {
  switch (v.kind()) {
    case json::kind::null:
      return h.Null();
    case json::kind::bool_:
      return h.Bool(v.get_bool());
    case json::kind::int64:
      return h.Int64(v.get_int64());
    case json::kind::uint64:
      return h.Uint64(v.get_uint64());
    case json::kind::double_:
      return h.Double(v.get_double());
    case json::kind::string: {
      const auto& s = v.get_string();
      return h.String(s.data(), static_cast<rapidjson::SizeType>(s.size()), true);
    }
    case json::kind::array: {
      const auto& a = v.get_array();
      if (!h.StartArray()) return false;
      for (const auto& e : a) {
        if (!Emit(e, h)) return false;
      }
      return h.EndArray(static_cast<rapidjson::SizeType>(a.size()));
    }
    case json::kind::object: {
      const auto& o = v.get_object();
      if (!h.StartObject()) return false;
      for (const auto& kv : o) {
        if (!h.Key(kv.key().data(), static_cast<rapidjson::SizeType>(kv.key().size()), true)) {
          return false;
        }
        if (!Emit(kv.value(), h)) return false;
      }
      return h.EndObject(static_cast<rapidjson::SizeType>(o.size()));
    }
  }
  return false;
}

std::string PointerText(const rapidjson::Pointer& p) {
  rapidjson::StringBuffer sb;
  p.Stringify(sb);
  return std::string(sb.GetString(), sb.GetSize());
}

// Checks that a schema is one RapidJSON (draft-04) enforces as written: every keyword of the
// right JSON type (RapidJSON skips a malformed one silently), no keyword of a later draft that
// it would ignore, local $refs that resolve, valid patterns, bounded depth.
class ShapeCheck {
 public:
  explicit ShapeCheck(const json::value& root) : root_(root) {}

  Status Run() {
    const json::value* declared =
        root_.is_object() ? root_.get_object().if_contains("$schema") : nullptr;
    if (declared != nullptr) {
      std::string_view s =
          declared->is_string() ? std::string_view(declared->get_string()) : std::string_view();
      if (s != "http://json-schema.org/draft-04/schema#" &&
          s != "http://json-schema.org/draft-04/schema") {
        Fail("/$schema",
             "only draft-04 schemas are supported (\"$schema\": "
             "\"http://json-schema.org/draft-04/schema#\" or none)");
        return std::move(status_);
      }
    }
    Schema(root_, "", 0);
    return std::move(status_);
  }

 private:
  void Fail(const std::string& path, const std::string& why) {
    if (status_.ok()) {
      status_ = Status(StatusCode::kInvalidArgument,
                       "schema" + (path.empty() ? std::string() : " at " + path) + ": " + why);
    }
  }

  void Schema(const json::value& v, const std::string& path, int depth) {
    if (!status_.ok()) return;
    if (depth > kMaxSchemaDepth) {
      Fail(path, "nested deeper than " + std::to_string(kMaxSchemaDepth));
      return;
    }
    if (!v.is_object()) {
      Fail(path, v.is_bool() ? "boolean schemas are draft-06 and later (use {} or {\"not\": {}})"
                             : "a schema must be an object");
      return;
    }
    const auto& o = v.get_object();
    for (const auto& kv : o) {
      Keyword(kv.key(), kv.value(), path + "/" + EscapePointerToken(kv.key()), depth);
      if (!status_.ok()) return;
    }
    // RapidJSON (1.1.0) reads past its state on a property that matches patternProperties
    // when additionalProperties is false.
    if (o.contains("patternProperties") && o.contains("additionalProperties") &&
        o.at("additionalProperties") == json::value(false)) {
      Fail(path,
           "patternProperties with additionalProperties false is not supported (see "
           "docs/schemas.md)");
    }
  }

  void SchemaMap(const json::value& v, const std::string& path, int depth) {
    if (!v.is_object()) {
      Fail(path, "must be an object of schemas");
      return;
    }
    for (const auto& kv : v.get_object())
      Schema(kv.value(), path + "/" + EscapePointerToken(kv.key()), depth + 1);
  }

  void SchemaList(const json::value& v, const std::string& path, int depth) {
    if (!v.is_array() || v.get_array().empty()) {
      Fail(path, "must be a non-empty array of schemas");
      return;
    }
    for (std::size_t i = 0; i < v.get_array().size(); ++i) {
      Schema(v.get_array()[i], path + "/" + std::to_string(i), depth + 1);
    }
  }

  void Count(const json::value& v, const std::string& path) {
    if (!(v.is_int64() && v.get_int64() >= 0) && !v.is_uint64()) {
      Fail(path, "must be a non-negative integer");
    }
  }

  void Keyword(std::string_view key, const json::value& v, const std::string& path, int depth) {
    static const std::set<std::string_view> kMaps = {"properties", "patternProperties",
                                                     "definitions", "$defs"};
    static const std::set<std::string_view> kLists = {"allOf", "anyOf", "oneOf"};
    static const std::set<std::string_view> kCounts = {
        "minLength", "maxLength", "minItems", "maxItems", "minProperties", "maxProperties"};
    static const std::set<std::string_view> kLater = {"const",
                                                      "contains",
                                                      "propertyNames",
                                                      "if",
                                                      "then",
                                                      "else",
                                                      "dependentRequired",
                                                      "dependentSchemas",
                                                      "unevaluatedProperties",
                                                      "unevaluatedItems",
                                                      "prefixItems",
                                                      "minContains",
                                                      "maxContains",
                                                      "$anchor",
                                                      "$dynamicRef",
                                                      "$recursiveRef"};
    static const std::set<std::string_view> kTypes = {"null",   "boolean", "object", "array",
                                                      "number", "integer", "string"};
    if (kLater.count(key)) {
      Fail(path, "keyword '" + std::string(key) +
                     "' is from a later draft than draft-04 and would not be enforced");
    } else if (kMaps.count(key)) {
      SchemaMap(v, path, depth);
      if (key == "patternProperties" && v.is_object()) {
        for (const auto& kv : v.get_object()) Pattern(kv.key(), path + "/" + EscapePointerToken(kv.key()));
      }
    } else if (kLists.count(key)) {
      SchemaList(v, path, depth);
    } else if (kCounts.count(key)) {
      Count(v, path);
    } else if (key == "not") {
      Schema(v, path, depth + 1);
    } else if (key == "additionalProperties" || key == "additionalItems") {
      if (!v.is_bool()) Schema(v, path, depth + 1);
    } else if (key == "items") {
      if (v.is_array()) {
        for (std::size_t i = 0; i < v.get_array().size(); ++i) {
          Schema(v.get_array()[i], path + "/" + std::to_string(i), depth + 1);
        }
      } else {
        Schema(v, path, depth + 1);
      }
    } else if (key == "type") {
      auto one = [&](const json::value& t) {
        if (!t.is_string() || !kTypes.count(std::string_view(t.get_string()))) {
          Fail(path, "unknown type " + json::serialize(t));
        }
      };
      if (v.is_array()) {
        for (const auto& t : v.get_array()) one(t);
      } else {
        one(v);
      }
    } else if (key == "required") {
      if (!v.is_array()) {
        Fail(path, "must be an array of property names");
        return;
      }
      for (const auto& n : v.get_array()) {
        if (!n.is_string()) Fail(path, "must be an array of property names");
      }
    } else if (key == "enum") {
      if (!v.is_array() || v.get_array().empty()) Fail(path, "must be a non-empty array");
    } else if (key == "minimum" || key == "maximum") {
      if (!v.is_number()) Fail(path, "must be a number");
    } else if (key == "multipleOf") {
      if (!v.is_number() || v.to_number<double>() <= 0) Fail(path, "must be a number above 0");
    } else if (key == "exclusiveMinimum" || key == "exclusiveMaximum") {
      if (!v.is_bool()) {
        Fail(path, "must be a boolean in draft-04 (a number here is draft-06 and later)");
      }
    } else if (key == "uniqueItems") {
      if (!v.is_bool()) Fail(path, "must be a boolean");
    } else if (key == "pattern") {
      if (!v.is_string()) {
        Fail(path, "must be a string");
        return;
      }
      Pattern(v.get_string(), path);
    } else if (key == "dependencies") {
      if (!v.is_object()) {
        Fail(path, "must be an object");
        return;
      }
      for (const auto& kv : v.get_object()) {
        if (!kv.value().is_array()) Schema(kv.value(), path + "/" + EscapePointerToken(kv.key()), depth + 1);
      }
    } else if (key == "$ref") {
      Ref(v, path);
    } else if (key == "format" || key == "title" || key == "description" || key == "id" ||
               key == "$id") {
      if (!v.is_string()) Fail(path, "must be a string");
    }
    // Anything else (default, examples, $comment, $schema, extensions) says nothing about
    // validity: draft-04 ignores unknown keywords.
  }

  // RapidJSON drops a `pattern` its regular expressions cannot read (and crashes on such a
  // patternProperties name): refuse the schema instead.
  void Pattern(std::string_view pattern, const std::string& path) {
    std::string text(pattern);
    rapidjson::internal::GenericRegex<rapidjson::UTF8<>> re(text.c_str());
    if (!re.IsValid() || text.find('\0') != std::string::npos) {
      Fail(path, "regular expression '" + text + "' not supported (see docs/schemas.md)");
    }
  }

  // A $ref must name a schema of this document, and not only through more $refs in a loop.
  void Ref(const json::value& v, const std::string& path) {
    std::set<std::string> seen;
    const json::value* at = &v;
    while (true) {
      if (!at->is_string()) {
        Fail(path, "$ref must be a string");
        return;
      }
      std::string ref(at->get_string());
      if (ref.empty() || ref.front() != '#') {
        Fail(path, "$ref '" + ref +
                       "' is not within this document (remote references are "
                       "not supported)");
        return;
      }
      if (!seen.insert(ref).second) {
        Fail(path, "$ref '" + ref + "' only refers to itself");
        return;
      }
      boost::system::error_code ec;
      const json::value* target = root_.find_pointer(std::string_view(ref).substr(1), ec);
      if (target == nullptr) {
        Fail(path, "$ref '" + ref + "' names nothing in this document");
        return;
      }
      if (!target->is_object()) {
        Fail(path, "$ref '" + ref + "' does not name a schema");
        return;
      }
      auto it = target->get_object().find("$ref");
      if (it == target->get_object().end()) return;
      at = &it->value();
    }
  }

  const json::value& root_;
  Status status_;
};

}  // namespace

struct Validator::Impl {
  rapidjson::Document source;  // the schema as RapidJSON holds it; outlives the compiled ones
  // RapidJSON 1.1.0's regular expressions keep their matching state in the compiled pattern,
  // so two threads matching one `pattern` at once corrupt each other's match. A schema with
  // patterns is therefore compiled once per concurrent caller (each slot owns a copy); any
  // other schema is compiled once and shared by every slot.
  bool has_regex = false;
  std::optional<rapidjson::SchemaDocument> compiled;

  // What one call validates with: a validator (its stacks keep their capacity between calls,
  // so a warm validation allocates little) and, with patterns, its own compiled schema.
  struct Slot {
    std::unique_ptr<rapidjson::SchemaDocument> own;
    std::unique_ptr<rapidjson::SchemaValidator> validator;
    // The text parser, kept with the validator so its string stack (allocated at the first
    // string) keeps its capacity from one value to the next.
    rapidjson::Reader reader;
  };
  static constexpr size_t kMaxSpare = 64;  // idle slots kept (more callers at once: made anew)
  std::mutex mu;
  std::vector<std::unique_ptr<Slot>> spare;  // guarded by mu

  std::unique_ptr<Slot> Borrow() {
    {
      std::lock_guard lock(mu);
      if (!spare.empty()) {
        std::unique_ptr<Slot> slot = std::move(spare.back());
        spare.pop_back();
        return slot;
      }
    }
    auto slot = std::make_unique<Slot>();
    if (has_regex) slot->own = std::make_unique<rapidjson::SchemaDocument>(source);
    slot->validator =
        std::make_unique<rapidjson::SchemaValidator>(has_regex ? *slot->own : *compiled);
    return slot;
  }
  void Return(std::unique_ptr<Slot> slot) {
    slot->validator->Reset();
    std::lock_guard lock(mu);
    if (spare.size() < kMaxSpare) spare.push_back(std::move(slot));
  }
};

namespace {
// Gives a borrowed slot back however the call ends.
class Borrowed {
 public:
  explicit Borrowed(Validator::Impl& impl) : impl_(impl), slot_(impl.Borrow()) {}
  ~Borrowed() { impl_.Return(std::move(slot_)); }
  rapidjson::SchemaValidator& validator() { return *slot_->validator; }
  rapidjson::Reader& reader() { return slot_->reader; }

 private:
  Validator::Impl& impl_;
  std::unique_ptr<Validator::Impl::Slot> slot_;
};
}  // namespace

Validator::Validator(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Validator::~Validator() = default;

Result<std::shared_ptr<const Validator>> CompileUnchecked(const json::value& schema) {
  auto impl = std::make_unique<Validator::Impl>();
  // Populate finishes the document (the root) once the events are in.
  auto generate = [&schema](rapidjson::Document& handler) { return Emit(schema, handler); };
  impl->source.Populate(generate);
  if (impl->source.HasParseError()) {
    return Status(StatusCode::kInvalidArgument, "schema: not a JSON value");
  }
  impl->has_regex = json::serialize(schema).find("\"pattern") != std::string::npos;
  try {
    impl->compiled.emplace(impl->source);
  } catch (const std::logic_error& e) {
    return Status(StatusCode::kInvalidArgument, std::string("schema: ") + e.what());
  }
  return std::shared_ptr<const Validator>(new Validator(std::move(impl)));
}

Result<std::shared_ptr<const Validator>> Validator::Compile(const json::value& schema) {
  Status shape = ShapeCheck(schema).Run();
  if (!shape.ok()) return shape;
  return CompileUnchecked(schema);
}

namespace {
Violation ViolationOf(const rapidjson::SchemaValidator& v) {
  Violation out;
  out.instance_path = PointerText(v.GetInvalidDocumentPointer());
  const char* keyword = v.GetInvalidSchemaKeyword();
  out.keyword = keyword != nullptr ? keyword : "";
  out.schema_path = PointerText(v.GetInvalidSchemaPointer());
  return out;
}
}  // namespace

std::optional<Violation> Validator::Validate(const json::value& instance) const {
  // A validator per call (from the pool): it holds the walk's state.
  Borrowed slot(*impl_);
  rapidjson::SchemaValidator& validator = slot.validator();
  try {
    if (Emit(instance, validator) && validator.IsValid()) return std::nullopt;
    return ViolationOf(validator);
  } catch (const std::logic_error& e) {
    return Violation{"", "internal", e.what()};
  }
}

namespace {
// Passes a parse's events on to the validator, refusing nesting deeper than kMaxTextDepth, so
// RapidJSON's recursive parser (faster than its iterative one) recurses a bounded number of
// times whatever the text.
constexpr int kMaxTextDepth = 128;
class DepthGuard {
 public:
  explicit DepthGuard(rapidjson::SchemaValidator& v) : v_(v) {}
  bool Null() { return v_.Null(); }
  bool Bool(bool b) { return v_.Bool(b); }
  bool Int(int i) { return v_.Int(i); }
  bool Uint(unsigned u) { return v_.Uint(u); }
  bool Int64(int64_t i) { return v_.Int64(i); }
  bool Uint64(uint64_t u) { return v_.Uint64(u); }
  bool Double(double d) { return v_.Double(d); }
  bool RawNumber(const char* s, rapidjson::SizeType n, bool copy) {
    return v_.RawNumber(s, n, copy);
  }
  bool String(const char* s, rapidjson::SizeType n, bool copy) { return v_.String(s, n, copy); }
  bool Key(const char* s, rapidjson::SizeType n, bool copy) { return v_.Key(s, n, copy); }
  bool StartObject() { return ++depth_ <= kMaxTextDepth && v_.StartObject(); }
  bool EndObject(rapidjson::SizeType n) {
    --depth_;
    return v_.EndObject(n);
  }
  bool StartArray() { return ++depth_ <= kMaxTextDepth && v_.StartArray(); }
  bool EndArray(rapidjson::SizeType n) {
    --depth_;
    return v_.EndArray(n);
  }
  bool too_deep() const { return depth_ > kMaxTextDepth; }

 private:
  rapidjson::SchemaValidator& v_;
  int depth_ = 0;
};
}  // namespace

namespace {
std::optional<Violation> ValidateTextWith(rapidjson::SchemaValidator& validator,
                                          rapidjson::Reader& reader, std::string_view text);
}  // namespace

std::optional<Violation> Validator::ValidateText(std::string_view text) const {
  Borrowed slot(*impl_);
  return ValidateTextWith(slot.validator(), slot.reader(), text);
}

struct Validator::Batch::Slot {
  std::unique_ptr<Validator::Impl::Slot> slot;
};

Validator::Batch::Batch(const Validator& validator)
    : impl_(*validator.impl_), slot_(new Slot{impl_.Borrow()}) {}

Validator::Batch::~Batch() { impl_.Return(std::move(slot_->slot)); }

std::optional<Violation> Validator::Batch::ValidateText(std::string_view text) {
  std::optional<Violation> out =
      ValidateTextWith(*slot_->slot->validator, slot_->slot->reader, text);
  slot_->slot->validator->Reset();  // the next value starts from the top
  return out;
}

namespace {
std::optional<Violation> ValidateTextWith(rapidjson::SchemaValidator& validator,
                                          rapidjson::Reader& reader, std::string_view text) {
  DepthGuard guard(validator);
  // The text's UTF-8 is not checked again: the callers' text is (an event's JSON data is
  // checked when the event is decoded).
  rapidjson::MemoryStream ms(text.data(), text.size());
  // A long value gets a parser of its own, so a pooled one never keeps a big string stack.
  constexpr size_t kKeepReaderBytes = 64 * 1024;
  std::optional<rapidjson::Reader> own;
  rapidjson::Reader& parser = text.size() > kKeepReaderBytes ? own.emplace() : reader;
  try {
    rapidjson::ParseResult ok = parser.Parse<rapidjson::kParseNoFlags>(ms, guard);
    if (ok) return std::nullopt;
    if (guard.too_deep()) {
      return Violation{"", "json", "nested deeper than " + std::to_string(kMaxTextDepth)};
    }
    if (!validator.IsValid()) return ViolationOf(validator);
    return Violation{"", "json", rapidjson::GetParseError_En(ok.Code())};
  } catch (const std::logic_error& e) {
    return Violation{"", "internal", e.what()};
  }
}
}  // namespace

}  // namespace converge::schema
