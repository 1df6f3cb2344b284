#include "schema/validator.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <map>
#include <mutex>
#include <set>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "schema/json_pointer.h"
#include "schema/json_tape.h"
#include "schema/regex.h"

namespace converge::schema {
namespace {

namespace json = boost::json;

// A $ref's text with its URI percent-escapes decoded ("#/definitions/percent%25field" names
// the member "percent%field"); anything not a well-formed escape stays as written.
std::string DecodeRef(std::string_view ref) {
  std::string out;
  out.reserve(ref.size());
  auto hex = [](char c) {
    return c >= '0' && c <= '9'   ? c - '0'
           : c >= 'a' && c <= 'f' ? c - 'a' + 10
           : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                  : -1;
  };
  for (size_t i = 0; i < ref.size(); ++i) {
    if (ref[i] == '%' && i + 2 < ref.size() && hex(ref[i + 1]) >= 0 && hex(ref[i + 2]) >= 0) {
      out.push_back(static_cast<char>(hex(ref[i + 1]) * 16 + hex(ref[i + 2])));
      i += 2;
    } else {
      out.push_back(ref[i]);
    }
  }
  return out;
}

// Checks that a schema is one the validator (draft-04) enforces as written: every keyword of
// the right JSON type, no keyword of a later draft that it would ignore, local $refs that
// resolve, patterns it can match, bounded depth.
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
        for (const auto& kv : v.get_object())
          Pattern(kv.key(), path + "/" + EscapePointerToken(kv.key()));
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
        if (!kv.value().is_array())
          Schema(kv.value(), path + "/" + EscapePointerToken(kv.key()), depth + 1);
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

  // A `pattern` (or patternProperties name) the regular expressions cannot read, or that
  // needs features they do not have, is refused rather than ignored.
  void Pattern(std::string_view pattern, const std::string& path) {
    auto re = Regex::Compile(pattern);
    if (!re.ok()) {
      Fail(path, "regular expression '" + std::string(pattern) + "' not supported (" +
                     std::string(re.status().message()) + "; see docs/schemas.md)");
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
      std::string ref = DecodeRef(at->get_string());
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

// Type bits of a compiled schema's `type`.
enum TypeBit : uint8_t {
  kNullBit = 1,
  kBooleanBit = 2,
  kIntegerBit = 4,
  kNumberBit = 8,
  kStringBit = 16,
  kArrayBit = 32,
  kObjectBit = 64,
  kAnyType = 127,
};

// A numeric bound or multipleOf as the schema wrote it: an integer is compared exactly with an
// integer value, anything else as doubles (as RapidJSON did, so answers stay the same).
struct Bound {
  bool present = false;
  enum { kInt, kUint, kDouble } kind = kDouble;
  int64_t i = 0;
  uint64_t u = 0;
  double d = 0;
};

Bound BoundOf(const json::value& v) {
  Bound b;
  b.present = true;
  if (v.is_int64()) {
    b.kind = Bound::kInt;
    b.i = v.get_int64();
    b.d = static_cast<double>(b.i);
  } else if (v.is_uint64()) {
    b.kind = Bound::kUint;
    b.u = v.get_uint64();
    b.d = static_cast<double>(b.u);
  } else {
    b.kind = Bound::kDouble;
    b.d = v.to_number<double>();
  }
  // RapidJSON held a non-negative int64 as both; the checks below ask "is it an int64".
  return b;
}
bool IsInt64(const Bound& b) { return b.kind == Bound::kInt; }
bool IsUint64(const Bound& b) {
  return b.kind == Bound::kUint || (b.kind == Bound::kInt && b.i >= 0);
}
uint64_t AsUint64(const Bound& b) {
  return b.kind == Bound::kUint ? b.u : static_cast<uint64_t>(b.i);
}

// Equality of two short strings without a call into the library's memcmp.
inline bool SameBytes(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  size_t i = 0;
  for (; i + 8 <= a.size(); i += 8) {
    uint64_t x, y;
    std::memcpy(&x, a.data() + i, 8);
    std::memcpy(&y, b.data() + i, 8);
    if (x != y) return false;
  }
  for (; i < a.size(); ++i) {
    if (a[i] != b[i]) return false;
  }
  return true;
}

}  // namespace

// One compiled (sub)schema. A $ref is resolved at compile time: the referring place points at
// the referred node, so a walk never looks anything up by name.
struct SchemaNode {
  std::string path;  // JSON pointer of this schema in the document (what a violation names)
  uint8_t types = kAnyType;

  Bound minimum, maximum, multiple_of;
  bool exclusive_minimum = false, exclusive_maximum = false;

  uint32_t min_length = 0, max_length = UINT32_MAX;
  std::shared_ptr<const Regex> pattern;

  const SchemaNode* items = nullptr;           // one schema for every element
  std::vector<const SchemaNode*> items_tuple;  // or one per position
  bool tuple = false;
  bool additional_items = true;  // beyond the tuple
  const SchemaNode* additional_items_schema = nullptr;
  uint32_t min_items = 0, max_items = UINT32_MAX;
  bool unique_items = false;

  // Properties: every name `properties`, `required` or `dependencies` mentions, found through
  // an open-addressing table (a slot holds index + 1, 0 is empty).
  struct Property {
    std::string name;
    const SchemaNode* schema = nullptr;  // null: only required / a dependency
    bool required = false;
    std::vector<uint32_t> dependency_names;         // dependencies: names that must be present too
    const SchemaNode* dependency_schema = nullptr;  // or a schema the object must pass
    bool has_dependency = false;
  };
  std::vector<Property> properties;
  std::vector<uint32_t> table;  // size a power of two
  uint64_t required_mask = 0;   // with at most 64 properties: the required ones' bits
  bool has_required = false, has_dependencies = false;
  struct PatternProperty {
    std::shared_ptr<const Regex> regex;
    const SchemaNode* schema;
  };
  std::vector<PatternProperty> pattern_properties;
  bool additional_properties = true;
  const SchemaNode* additional_properties_schema = nullptr;
  uint32_t min_properties = 0, max_properties = UINT32_MAX;

  const json::array* enum_values = nullptr;  // into the schema document the Impl keeps
  bool enum_all_strings = false;             // then compared as these
  std::vector<std::string> enum_strings;
  std::vector<const SchemaNode*> all_of, any_of, one_of;
  const SchemaNode* not_schema = nullptr;

  // Does this node check a value of kind k at all beyond its type (the fast path skips it)?
  bool has_combinators = false;  // enum, allOf, anyOf, oneOf, not

  uint32_t Find(std::string_view name) const {
    if (table.empty()) return UINT32_MAX;
    const size_t mask = table.size() - 1;
    for (size_t slot = Hash(name) & mask;; slot = (slot + 1) & mask) {
      const uint32_t e = table[slot];
      if (e == 0) return UINT32_MAX;
      if (SameBytes(properties[e - 1].name, name)) return e - 1;
    }
  }
  // Cheap and constant-time: the length and three of the bytes (a member name is hashed for
  // every member of every value; collisions only cost a comparison).
  static size_t Hash(std::string_view s) {
    if (s.empty()) return 0;
    const auto at = [&](size_t i) {
      return static_cast<uint64_t>(static_cast<unsigned char>(s[i]));
    };
    const uint64_t h = (s.size() * 0x9E3779B97F4A7C15ull) ^ (at(0) << 8) ^
                       (at(s.size() - 1) << 16) ^ (at(s.size() / 2) << 24);
    return static_cast<size_t>((h * 0xFF51AFD7ED558CCDull) >> 32);
  }
  uint32_t AddProperty(const std::string& name) {
    for (uint32_t k = 0; k < properties.size(); ++k) {
      if (properties[k].name == name) return k;
    }
    properties.emplace_back();
    properties.back().name = name;
    return static_cast<uint32_t>(properties.size() - 1);
  }
  void BuildTable() {
    if (properties.empty()) return;
    size_t size = 4;
    while (size < properties.size() * 2) size *= 2;
    table.assign(size, 0);
    for (uint32_t k = 0; k < properties.size(); ++k) {
      size_t slot = Hash(properties[k].name) & (size - 1);
      while (table[slot] != 0) slot = (slot + 1) & (size - 1);
      table[slot] = k + 1;
    }
    for (uint32_t k = 0; k < properties.size(); ++k) {
      if (properties[k].required) {
        has_required = true;
        if (k < 64) required_mask |= uint64_t{1} << k;
      }
      if (properties[k].has_dependency) has_dependencies = true;
    }
  }
};

namespace {

// Builds the nodes of a schema document (already shape-checked, or the suite's as they are).
class SchemaCompiler {
 public:
  SchemaCompiler(const json::value& root, std::vector<std::unique_ptr<SchemaNode>>& nodes)
      : root_(root), nodes_(nodes) {}

  Result<const SchemaNode*> Run() {
    const SchemaNode* n = Compile(root_, "", 0);
    if (!status_.ok()) return status_;
    CheckLoops();
    if (!status_.ok()) return status_;
    return n;
  }

 private:
  void Fail(const std::string& path, const std::string& why) {
    if (status_.ok()) {
      status_ = Status(StatusCode::kInvalidArgument,
                       "schema" + (path.empty() ? std::string() : " at " + path) + ": " + why);
    }
  }

  // The node of the schema `v` at `path`, following $refs (draft-04: a schema with $ref is
  // the referred schema; its other keywords are ignored).
  const SchemaNode* Compile(const json::value& v0, const std::string& path0, int hops) {
    const json::value* v = &v0;
    std::string path = path0;
    while (v->is_object()) {
      const json::value* ref = v->get_object().if_contains("$ref");
      if (ref == nullptr || !ref->is_string()) break;
      if (++hops > 64) {
        Fail(path, "$ref only refers to more $refs");
        return Any();
      }
      std::string decoded = DecodeRef(ref->get_string());
      boost::system::error_code ec;
      const json::value* target = !decoded.empty() && decoded.front() == '#'
                                      ? root_.find_pointer(std::string_view(decoded).substr(1), ec)
                                      : nullptr;
      if (target == nullptr) {
        Fail(path, "$ref '" + std::string(ref->get_string()) +
                       "' does not name a schema of this document");
        return Any();
      }
      v = target;
      path = decoded.substr(1);
    }
    if (auto it = by_address_.find(v); it != by_address_.end()) return it->second;
    nodes_.push_back(std::make_unique<SchemaNode>());
    SchemaNode* n = nodes_.back().get();
    by_address_[v] = n;
    n->path = path;
    if (!v->is_object()) return n;  // the suite's malformed schemas: constrain nothing
    if (path.size() > 4096 || nodes_.size() > 100000) {
      Fail(path, "too large");
      return n;
    }
    Fill(*n, v->get_object(), path);
    return n;
  }

  const SchemaNode* Any() {
    nodes_.push_back(std::make_unique<SchemaNode>());
    return nodes_.back().get();
  }

  static uint32_t Count(const json::value& v) {
    if (v.is_uint64()) return static_cast<uint32_t>(std::min<uint64_t>(v.get_uint64(), UINT32_MAX));
    if (v.is_int64()) {
      return static_cast<uint32_t>(std::clamp<int64_t>(v.get_int64(), 0, UINT32_MAX));
    }
    if (v.is_double()) return static_cast<uint32_t>(std::clamp(v.get_double(), 0.0, 4e9));
    return 0;
  }

  std::shared_ptr<const Regex> CompileRegex(std::string_view p, const std::string& path) {
    auto re = Regex::Compile(p);
    if (!re.ok()) {
      Fail(path, "regular expression '" + std::string(p) + "' not supported");
      return nullptr;
    }
    return *re;
  }

  static std::string Child(const std::string& path, std::string_view key) {
    return path + "/" + EscapePointerToken(key);
  }

  void Fill(SchemaNode& n, const json::object& o, const std::string& path) {
    if (const json::value* t = o.if_contains("type")) {
      auto bit = [](const json::value& name) -> uint8_t {
        if (!name.is_string()) return 0;
        std::string_view s = name.get_string();
        if (s == "null") return kNullBit;
        if (s == "boolean") return kBooleanBit;
        if (s == "integer") return kIntegerBit;
        if (s == "number") return kNumberBit | kIntegerBit;
        if (s == "string") return kStringBit;
        if (s == "array") return kArrayBit;
        if (s == "object") return kObjectBit;
        return 0;
      };
      if (t->is_array()) {
        n.types = 0;
        for (const auto& e : t->get_array()) n.types |= bit(e);
      } else if (t->is_string()) {
        n.types = bit(*t);
      }
    }
    auto number = [&](const char* key, Bound* b) {
      const json::value* v = o.if_contains(key);
      if (v != nullptr && v->is_number()) *b = BoundOf(*v);
    };
    number("minimum", &n.minimum);
    number("maximum", &n.maximum);
    number("multipleOf", &n.multiple_of);
    if (n.multiple_of.present && !(n.multiple_of.d > 0)) n.multiple_of.present = false;
    auto flag = [&](const char* key, bool* b) {
      const json::value* v = o.if_contains(key);
      if (v != nullptr && v->is_bool()) *b = v->get_bool();
    };
    flag("exclusiveMinimum", &n.exclusive_minimum);
    flag("exclusiveMaximum", &n.exclusive_maximum);
    flag("uniqueItems", &n.unique_items);
    auto count = [&](const char* key, uint32_t* c) {
      const json::value* v = o.if_contains(key);
      if (v != nullptr && v->is_number()) *c = Count(*v);
    };
    count("minLength", &n.min_length);
    count("maxLength", &n.max_length);
    count("minItems", &n.min_items);
    count("maxItems", &n.max_items);
    count("minProperties", &n.min_properties);
    count("maxProperties", &n.max_properties);
    if (const json::value* p = o.if_contains("pattern"); p != nullptr && p->is_string()) {
      n.pattern = CompileRegex(p->get_string(), Child(path, "pattern"));
    }

    if (const json::value* items = o.if_contains("items")) {
      if (items->is_array()) {
        n.tuple = true;
        for (size_t k = 0; k < items->get_array().size(); ++k) {
          n.items_tuple.push_back(
              Compile(items->get_array()[k], Child(path, "items") + "/" + std::to_string(k), 0));
        }
      } else if (items->is_object()) {
        n.items = Compile(*items, Child(path, "items"), 0);
      }
    }
    if (const json::value* a = o.if_contains("additionalItems")) {
      if (a->is_bool()) {
        n.additional_items = a->get_bool();
      } else if (a->is_object()) {
        n.additional_items_schema = Compile(*a, Child(path, "additionalItems"), 0);
      }
    }

    if (const json::value* props = o.if_contains("properties"); props && props->is_object()) {
      for (const auto& kv : props->get_object()) {
        uint32_t k = n.AddProperty(std::string(kv.key()));
        n.properties[k].schema = Compile(kv.value(), Child(Child(path, "properties"), kv.key()), 0);
      }
    }
    if (const json::value* req = o.if_contains("required"); req && req->is_array()) {
      for (const auto& name : req->get_array()) {
        if (name.is_string())
          n.properties[n.AddProperty(std::string(name.get_string()))].required = true;
      }
    }
    if (const json::value* deps = o.if_contains("dependencies"); deps && deps->is_object()) {
      for (const auto& kv : deps->get_object()) {
        uint32_t k = n.AddProperty(std::string(kv.key()));
        if (kv.value().is_array()) {
          std::vector<uint32_t> names;
          for (const auto& d : kv.value().get_array()) {
            if (d.is_string()) names.push_back(n.AddProperty(std::string(d.get_string())));
          }
          n.properties[k].dependency_names = std::move(names);
          n.properties[k].has_dependency = true;
        } else if (kv.value().is_object()) {
          n.properties[k].dependency_schema =
              Compile(kv.value(), Child(Child(path, "dependencies"), kv.key()), 0);
          n.properties[k].has_dependency = true;
        }
      }
    }
    if (const json::value* pp = o.if_contains("patternProperties"); pp && pp->is_object()) {
      for (const auto& kv : pp->get_object()) {
        std::string at = Child(Child(path, "patternProperties"), kv.key());
        auto re = CompileRegex(kv.key(), at);
        if (re) n.pattern_properties.push_back({std::move(re), Compile(kv.value(), at, 0)});
      }
    }
    if (const json::value* a = o.if_contains("additionalProperties")) {
      if (a->is_bool()) {
        n.additional_properties = a->get_bool();
      } else if (a->is_object()) {
        n.additional_properties_schema = Compile(*a, Child(path, "additionalProperties"), 0);
      }
    }
    n.BuildTable();

    if (const json::value* e = o.if_contains("enum"); e && e->is_array()) {
      n.enum_values = &e->get_array();
      n.enum_all_strings = true;
      for (const auto& v : *n.enum_values) {
        if (!v.is_string()) {
          n.enum_all_strings = false;
          n.enum_strings.clear();
          break;
        }
        n.enum_strings.emplace_back(v.get_string());
      }
    }
    auto list = [&](const char* key, std::vector<const SchemaNode*>* out) {
      const json::value* l = o.if_contains(key);
      if (l == nullptr || !l->is_array()) return;
      for (size_t k = 0; k < l->get_array().size(); ++k) {
        out->push_back(Compile(l->get_array()[k], Child(path, key) + "/" + std::to_string(k), 0));
      }
    };
    list("allOf", &n.all_of);
    list("anyOf", &n.any_of);
    list("oneOf", &n.one_of);
    if (const json::value* no = o.if_contains("not"); no && no->is_object()) {
      n.not_schema = Compile(*no, Child(path, "not"), 0);
    }
    n.has_combinators = n.enum_values != nullptr || !n.all_of.empty() || !n.any_of.empty() ||
                        !n.one_of.empty() || n.not_schema != nullptr;
  }

  // A schema that applies itself to the same value again (through allOf, anyOf, oneOf, not or
  // a dependency's schema, without descending into an element or member) would recurse
  // without end on any value: refused.
  void CheckLoops() {
    std::map<const SchemaNode*, int> state;  // 1: on the path, 2: done
    std::vector<std::pair<const SchemaNode*, size_t>> stack;
    auto same_value_edges = [](const SchemaNode* n) {
      std::vector<const SchemaNode*> out(n->all_of);
      out.insert(out.end(), n->any_of.begin(), n->any_of.end());
      out.insert(out.end(), n->one_of.begin(), n->one_of.end());
      if (n->not_schema) out.push_back(n->not_schema);
      for (const auto& p : n->properties) {
        if (p.dependency_schema) out.push_back(p.dependency_schema);
      }
      return out;
    };
    for (const auto& root : nodes_) {
      if (state[root.get()] != 0) continue;
      // Iterative DFS, so a long chain cannot exhaust the stack here either.
      std::vector<std::pair<const SchemaNode*, std::vector<const SchemaNode*>>> path;
      path.emplace_back(root.get(), same_value_edges(root.get()));
      state[root.get()] = 1;
      while (!path.empty()) {
        auto& [node, edges] = path.back();
        if (edges.empty()) {
          state[node] = 2;
          path.pop_back();
          continue;
        }
        const SchemaNode* next = edges.back();
        edges.pop_back();
        int& s = state[next];
        if (s == 1) {
          Fail(next->path,
               "applies itself to the same value again ($ref loop through "
               "allOf/anyOf/oneOf/not/dependencies): it could never finish");
          return;
        }
        if (s == 0) {
          s = 1;
          path.emplace_back(next, same_value_edges(next));
        }
      }
    }
  }

  const json::value& root_;
  std::vector<std::unique_ptr<SchemaNode>>& nodes_;
  std::map<const json::value*, SchemaNode*> by_address_;
  Status status_;
};

// ---- Instance checks ----

// Value equality as JSON Schema means it (enum, uniqueItems): numbers by value (1 == 1.0),
// objects regardless of member order.
bool NumberEqual(const TapeValue& a, const TapeValue& b) {
  using K = TapeValue;
  if ((a.kind == K::kInt || a.kind == K::kUint) && (b.kind == K::kInt || b.kind == K::kUint)) {
    if (a.kind != b.kind) return false;  // negative vs non-negative
    return a.u == b.u;
  }
  auto as_double = [](const TapeValue& v) {
    return v.kind == K::kInt    ? static_cast<double>(v.i)
           : v.kind == K::kUint ? static_cast<double>(v.u)
                                : v.d;
  };
  return as_double(a) == as_double(b);
}

bool TapeEqual(const std::vector<TapeValue>& t, uint32_t a, uint32_t b) {
  const TapeValue& x = t[a];
  const TapeValue& y = t[b];
  if (x.is_number() && y.is_number()) return NumberEqual(x, y);
  if (x.kind != y.kind) return false;
  switch (x.kind) {
    case TapeValue::kString:
      return x.text() == y.text();
    case TapeValue::kArray: {
      if (x.count != y.count) return false;
      uint32_t i = a + 1, j = b + 1;
      for (uint32_t k = 0; k < x.count; ++k) {
        if (!TapeEqual(t, i, j)) return false;
        i = t[i].end;
        j = t[j].end;
      }
      return true;
    }
    case TapeValue::kObject: {
      if (x.count != y.count) return false;
      uint32_t i = a + 1;
      for (uint32_t k = 0; k < x.count; ++k) {
        bool found = false;
        uint32_t j = b + 1;
        for (uint32_t m = 0; m < y.count; ++m) {
          if (t[j].text() == t[i].text() && TapeEqual(t, i + 1, j + 1)) {
            found = true;
            break;
          }
          j = t[j + 1].end;
        }
        if (!found) return false;
        i = t[i + 1].end;
      }
      return true;
    }
    default:
      return true;  // null, true, false
  }
}

bool EqualsJson(const std::vector<TapeValue>& t, uint32_t a, const json::value& v) {
  const TapeValue& x = t[a];
  switch (v.kind()) {
    case json::kind::null:
      return x.kind == TapeValue::kNull;
    case json::kind::bool_:
      return x.kind == (v.get_bool() ? TapeValue::kTrue : TapeValue::kFalse);
    case json::kind::int64:
    case json::kind::uint64:
    case json::kind::double_: {
      if (!x.is_number()) return false;
      TapeValue y;
      if (v.is_int64()) {
        y.kind = v.get_int64() < 0 ? TapeValue::kInt : TapeValue::kUint;
        y.i = v.get_int64();
      } else if (v.is_uint64()) {
        y.kind = TapeValue::kUint;
        y.u = v.get_uint64();
      } else {
        y.kind = TapeValue::kDouble;
        y.d = v.get_double();
      }
      return NumberEqual(x, y);
    }
    case json::kind::string:
      return x.kind == TapeValue::kString && x.text() == std::string_view(v.get_string());
    case json::kind::array: {
      const auto& arr = v.get_array();
      if (x.kind != TapeValue::kArray || x.count != arr.size()) return false;
      uint32_t i = a + 1;
      for (const auto& e : arr) {
        if (!EqualsJson(t, i, e)) return false;
        i = t[i].end;
      }
      return true;
    }
    case json::kind::object: {
      const auto& obj = v.get_object();
      if (x.kind != TapeValue::kObject || x.count != obj.size()) return false;
      uint32_t i = a + 1;
      for (uint32_t k = 0; k < x.count; ++k) {
        const json::value* m = obj.if_contains(t[i].text());
        if (m == nullptr || !EqualsJson(t, i + 1, *m)) return false;
        i = t[i + 1].end;
      }
      return true;
    }
  }
  return false;
}

// A hash that agrees with TapeEqual (equal values hash alike).
uint64_t TapeHash(const std::vector<TapeValue>& t, uint32_t a) {
  const TapeValue& x = t[a];
  auto mix = [](uint64_t h, uint64_t v) { return (h ^ v) * 0x100000001B3ull; };
  uint64_t h = 0xCBF29CE484222325ull;
  if (x.is_number()) {
    double d = x.kind == TapeValue::kInt    ? static_cast<double>(x.i)
               : x.kind == TapeValue::kUint ? static_cast<double>(x.u)
                                            : x.d;
    if (d == 0) d = 0;  // -0.0 and 0.0 alike
    uint64_t bits;
    std::memcpy(&bits, &d, sizeof bits);
    return mix(h, bits);
  }
  h = mix(h, x.kind);
  switch (x.kind) {
    case TapeValue::kString:
      return mix(h, std::hash<std::string_view>()(x.text()));
    case TapeValue::kArray: {
      uint32_t i = a + 1;
      for (uint32_t k = 0; k < x.count; ++k) {
        h = mix(h, TapeHash(t, i));
        i = t[i].end;
      }
      return h;
    }
    case TapeValue::kObject: {
      uint64_t sum = 0;  // order-independent
      uint32_t i = a + 1;
      for (uint32_t k = 0; k < x.count; ++k) {
        sum += mix(std::hash<std::string_view>()(t[i].text()), TapeHash(t, i + 1));
        i = t[i + 1].end;
      }
      return mix(h, sum);
    }
    default:
      return h;
  }
}

// Code points in valid UTF-8: the bytes that do not continue a sequence.
size_t CodePoints(std::string_view s) {
  size_t n = 0;
  for (char c : s) n += (static_cast<unsigned char>(c) & 0xC0) != 0x80;
  return n;
}

// How deep one walk may recurse (values nest at most 128 deep; a schema may apply several
// subschemas to one value): beyond it the value is refused rather than the stack exhausted.
constexpr int kMaxWalkDepth = 1000;

}  // namespace

// The per-call state of a validation: the parsed value, the matching state of the regular
// expressions, and where the first failure was found. Reused from call to call.
struct Scratch {
  Tape tape;
  RegexScratch regex;
  std::vector<std::pair<uint64_t, uint32_t>> hashes;  // uniqueItems
  const SchemaNode* failed_schema = nullptr;
  const char* failed_keyword = nullptr;
  uint32_t failed_value = 0;
  std::vector<uint64_t> seen_words;  // objects of more than 64 properties: which are present
};

namespace {

class Walk {
 public:
  explicit Walk(Scratch& s) : s_(s), t_(s.tape.values()) {}

  bool Check(const SchemaNode* n, uint32_t v) {
    if (++depth_ > kMaxWalkDepth) {
      --depth_;
      return Fail(n, "depth", v);
    }
    bool ok = CheckValue(n, v);
    --depth_;
    return ok;
  }

 private:
  bool Fail(const SchemaNode* n, const char* keyword, uint32_t v) {
    s_.failed_schema = n;
    s_.failed_keyword = keyword;
    s_.failed_value = v;
    return false;
  }

  bool CheckValue(const SchemaNode* n, uint32_t v) {
    const TapeValue& x = t_[v];
    switch (x.kind) {
      case TapeValue::kNull:
        if (!(n->types & kNullBit)) return Fail(n, "type", v);
        break;
      case TapeValue::kTrue:
      case TapeValue::kFalse:
        if (!(n->types & kBooleanBit)) return Fail(n, "type", v);
        break;
      case TapeValue::kInt:
        if (!CheckInt(n, x.i, v)) return false;
        break;
      case TapeValue::kUint:
        if (!CheckUint(n, x.u, v)) return false;
        break;
      case TapeValue::kBigInt:
        if (!(n->types & kIntegerBit)) return Fail(n, "type", v);
        if (!CheckDouble(n, x.d, v)) return false;
        break;
      case TapeValue::kDouble:
        if (!(n->types & kNumberBit)) return Fail(n, "type", v);
        if (!CheckDouble(n, x.d, v)) return false;
        break;
      case TapeValue::kString:
        if (!CheckString(n, x, v)) return false;
        break;
      case TapeValue::kArray:
        if (!CheckArray(n, x, v)) return false;
        break;
      case TapeValue::kObject:
        if (!CheckObject(n, x, v)) return false;
        break;
    }
    return !n->has_combinators || CheckCombinators(n, v);
  }

  bool CheckInt(const SchemaNode* n, int64_t i, uint32_t v) {
    if (!(n->types & (kIntegerBit | kNumberBit))) return Fail(n, "type", v);
    if (n->minimum.present) {
      if (IsInt64(n->minimum)) {
        if (n->exclusive_minimum ? i <= n->minimum.i : i < n->minimum.i) {
          return Fail(n, "minimum", v);
        }
      } else if (IsUint64(n->minimum)) {
        return Fail(n, "minimum", v);  // i <= INT64_MAX < minimum
      } else if (!CheckDoubleMinimum(n, static_cast<double>(i), v)) {
        return false;
      }
    }
    if (n->maximum.present) {
      if (IsInt64(n->maximum)) {
        if (n->exclusive_maximum ? i >= n->maximum.i : i > n->maximum.i) {
          return Fail(n, "maximum", v);
        }
      } else if (!IsUint64(n->maximum) && !CheckDoubleMaximum(n, static_cast<double>(i), v)) {
        return false;
      }
    }
    if (n->multiple_of.present) {
      if (IsUint64(n->multiple_of)) {
        const uint64_t a = i >= 0 ? static_cast<uint64_t>(i) : 0 - static_cast<uint64_t>(i);
        if (a % AsUint64(n->multiple_of) != 0) return Fail(n, "multipleOf", v);
      } else if (!CheckDoubleMultipleOf(n, static_cast<double>(i), v)) {
        return false;
      }
    }
    return true;
  }

  bool CheckUint(const SchemaNode* n, uint64_t u, uint32_t v) {
    if (u <= static_cast<uint64_t>(INT64_MAX) &&
        (!n->minimum.present || n->minimum.kind != Bound::kUint) &&
        (!n->maximum.present || n->maximum.kind != Bound::kUint)) {
      return CheckInt(n, static_cast<int64_t>(u), v);
    }
    if (!(n->types & (kIntegerBit | kNumberBit))) return Fail(n, "type", v);
    if (n->minimum.present) {
      if (IsUint64(n->minimum)) {
        if (n->exclusive_minimum ? u <= AsUint64(n->minimum) : u < AsUint64(n->minimum)) {
          return Fail(n, "minimum", v);
        }
      } else if (IsInt64(n->minimum)) {
        // a negative minimum: any unsigned value is above it
      } else if (!CheckDoubleMinimum(n, static_cast<double>(u), v)) {
        return false;
      }
    }
    if (n->maximum.present) {
      if (IsUint64(n->maximum)) {
        if (n->exclusive_maximum ? u >= AsUint64(n->maximum) : u > AsUint64(n->maximum)) {
          return Fail(n, "maximum", v);
        }
      } else if (IsInt64(n->maximum)) {
        return Fail(n, "maximum", v);  // u >= 0 > maximum
      } else if (!CheckDoubleMaximum(n, static_cast<double>(u), v)) {
        return false;
      }
    }
    if (n->multiple_of.present) {
      if (IsUint64(n->multiple_of)) {
        if (u % AsUint64(n->multiple_of) != 0) return Fail(n, "multipleOf", v);
      } else if (!CheckDoubleMultipleOf(n, static_cast<double>(u), v)) {
        return false;
      }
    }
    return true;
  }

  bool CheckDoubleMinimum(const SchemaNode* n, double d, uint32_t v) {
    if (n->exclusive_minimum ? d <= n->minimum.d : d < n->minimum.d) return Fail(n, "minimum", v);
    return true;
  }
  bool CheckDoubleMaximum(const SchemaNode* n, double d, uint32_t v) {
    if (n->exclusive_maximum ? d >= n->maximum.d : d > n->maximum.d) return Fail(n, "maximum", v);
    return true;
  }
  bool CheckDoubleMultipleOf(const SchemaNode* n, double d, uint32_t v) {
    const double a = std::abs(d), b = std::abs(n->multiple_of.d);
    const double q = std::floor(a / b);
    const double r = a - q * b;
    if (r > 0.0) return Fail(n, "multipleOf", v);
    return true;
  }

  bool CheckDouble(const SchemaNode* n, double d, uint32_t v) {
    if (n->minimum.present && !CheckDoubleMinimum(n, d, v)) return false;
    if (n->maximum.present && !CheckDoubleMaximum(n, d, v)) return false;
    if (n->multiple_of.present && !CheckDoubleMultipleOf(n, d, v)) return false;
    return true;
  }

  bool CheckString(const SchemaNode* n, const TapeValue& x, uint32_t v) {
    if (!(n->types & kStringBit)) return Fail(n, "type", v);
    if (n->min_length != 0 || n->max_length != UINT32_MAX) {
      // A code point takes 1 to 4 bytes: count only when the byte length cannot decide.
      const size_t bytes = x.count;
      size_t cps = bytes;
      if (bytes > n->max_length || bytes / 4 < n->min_length) cps = CodePoints(x.text());
      if (cps < n->min_length) return Fail(n, "minLength", v);
      if (cps > n->max_length) return Fail(n, "maxLength", v);
    }
    if (n->pattern && !n->pattern->Search(x.text(), s_.regex)) return Fail(n, "pattern", v);
    return true;
  }

  // The index of the first element equal to an earlier one, or UINT32_MAX.
  uint32_t FirstDuplicate(const TapeValue& x, uint32_t v) {
    auto& h = s_.hashes;
    h.clear();
    uint32_t e = v + 1;
    for (uint32_t k = 0; k < x.count; ++k) {
      h.emplace_back(TapeHash(t_, e), e);
      e = t_[e].end;
    }
    std::sort(h.begin(), h.end());
    uint32_t first = UINT32_MAX;
    for (size_t a = 0; a < h.size();) {
      size_t b = a + 1;
      while (b < h.size() && h[b].first == h[a].first) ++b;
      for (size_t j = a + 1; j < b; ++j) {
        for (size_t i = a; i < j; ++i) {
          if (TapeEqual(t_, h[i].second, h[j].second)) {
            first = std::min(first, h[j].second);
            break;
          }
        }
      }
      a = b;
    }
    return first;
  }

  bool CheckArray(const SchemaNode* n, const TapeValue& x, uint32_t v) {
    if (!(n->types & kArrayBit)) return Fail(n, "type", v);
    const uint32_t duplicate = n->unique_items && x.count > 1 ? FirstDuplicate(x, v) : UINT32_MAX;
    uint32_t e = v + 1;
    for (uint32_t k = 0; k < x.count; ++k) {
      const SchemaNode* item = n->items;
      if (n->tuple) {
        if (k < n->items_tuple.size()) {
          item = n->items_tuple[k];
        } else if (n->additional_items_schema != nullptr) {
          item = n->additional_items_schema;
        } else if (!n->additional_items) {
          return Fail(n, "items", e);
        }
      }
      if (item != nullptr && !Check(item, e)) return false;
      // Reported where RapidJSON did: after the duplicate element itself was checked.
      if (e == duplicate) return Fail(n, "uniqueItems", e);
      e = t_[e].end;
    }
    if (x.count < n->min_items) return Fail(n, "minItems", v);
    if (x.count > n->max_items) return Fail(n, "maxItems", v);
    return true;
  }

  bool CheckObject(const SchemaNode* n, const TapeValue& x, uint32_t v) {
    if (!(n->types & kObjectBit)) return Fail(n, "type", v);
    const size_t nprops = n->properties.size();
    // Which properties are present: a bit mask, or with more than 64 properties, words on the
    // scratch state's stack of them (given back however this returns).
    uint64_t seen = 0;
    struct Words {
      std::vector<uint64_t>& stack;
      size_t base = SIZE_MAX;
      ~Words() {
        if (base != SIZE_MAX) stack.resize(base);
      }
    } words{s_.seen_words};
    if (nprops > 64) {
      words.base = s_.seen_words.size();
      s_.seen_words.resize(words.base + (nprops + 63) / 64, 0);
    }
    auto present = [&](size_t p) -> bool {
      return words.base == SIZE_MAX ? (seen >> p) & 1
                                    : (s_.seen_words[words.base + p / 64] >> (p % 64)) & 1;
    };
    uint32_t key = v + 1;
    for (uint32_t k = 0; k < x.count; ++k) {
      const uint32_t value = key + 1;
      const std::string_view name = t_[key].text();
      const uint32_t p = n->Find(name);
      const SchemaNode* schema = nullptr;
      if (p != UINT32_MAX) {
        if (words.base == SIZE_MAX) {
          seen |= uint64_t{1} << p;
        } else {
          s_.seen_words[words.base + p / 64] |= uint64_t{1} << (p % 64);
        }
        schema = n->properties[p].schema;
      }
      bool matched_pattern = false;
      for (const auto& pp : n->pattern_properties) {
        if (pp.regex->Search(name, s_.regex)) {
          matched_pattern = true;
          break;
        }
      }
      if (!matched_pattern) {
        if (p == UINT32_MAX || schema == nullptr) {
          // Not in `properties` (a name only `required` or `dependencies` mention is not).
          if (p == UINT32_MAX || !HasPropertySchema(n, p)) {
            if (n->additional_properties_schema != nullptr) {
              schema = n->additional_properties_schema;
            } else if (!n->additional_properties) {
              return Fail(n, "additionalProperties", value);
            }
          }
        }
        if (schema != nullptr && !Check(schema, value)) return false;
      } else {
        // The value must pass its property's schema (if any) and every pattern it matches;
        // `additionalProperties` does not apply. Reported as RapidJSON did.
        bool ok = schema == nullptr || Check(schema, value);
        for (const auto& pp : n->pattern_properties) {
          if (!ok) break;
          if (pp.regex->Search(name, s_.regex)) ok = Check(pp.schema, value);
        }
        if (!ok) return Fail(n, "patternProperties", value);
      }
      key = t_[value].end;
    }
    if (n->has_required) {
      if (words.base == SIZE_MAX) {
        if ((seen & n->required_mask) != n->required_mask) return Fail(n, "required", v);
      } else {
        for (size_t p = 0; p < nprops; ++p) {
          if (n->properties[p].required && !present(p)) return Fail(n, "required", v);
        }
      }
    }
    if (x.count < n->min_properties) return Fail(n, "minProperties", v);
    if (x.count > n->max_properties) return Fail(n, "maxProperties", v);
    if (n->has_dependencies) {
      for (size_t p = 0; p < nprops; ++p) {
        const auto& prop = n->properties[p];
        if (!prop.has_dependency || !present(p)) continue;
        for (uint32_t d : prop.dependency_names) {
          if (!present(d)) return Fail(n, "dependencies", v);
        }
        if (prop.dependency_schema != nullptr && !Check(prop.dependency_schema, v)) {
          return Fail(n, "dependencies", v);
        }
      }
    }
    return true;
  }

  // Whether property p came from `properties` (rather than only `required`/`dependencies`).
  static bool HasPropertySchema(const SchemaNode* n, uint32_t p) {
    return n->properties[p].schema != nullptr;
  }

  bool CheckCombinators(const SchemaNode* n, uint32_t v) {
    if (n->enum_values != nullptr) {
      bool found = false;
      if (n->enum_all_strings) {
        if (t_[v].kind == TapeValue::kString) {
          const std::string_view text = t_[v].text();
          for (const std::string& e : n->enum_strings) {
            if (SameBytes(e, text)) {
              found = true;
              break;
            }
          }
        }
      } else {
        for (const auto& e : *n->enum_values) {
          if (EqualsJson(t_, v, e)) {
            found = true;
            break;
          }
        }
      }
      if (!found) return Fail(n, "enum", v);
    }
    for (const SchemaNode* s : n->all_of) {
      if (!Check(s, v)) return Fail(n, "allOf", v);
    }
    if (!n->any_of.empty()) {
      bool any = false;
      for (const SchemaNode* s : n->any_of) {
        if (Check(s, v)) {
          any = true;
          break;
        }
      }
      if (!any) return Fail(n, "anyOf", v);
    }
    if (!n->one_of.empty()) {
      int valid = 0;
      for (const SchemaNode* s : n->one_of) {
        if (Check(s, v) && ++valid > 1) break;
      }
      if (valid != 1) return Fail(n, "oneOf", v);
    }
    if (n->not_schema != nullptr && Check(n->not_schema, v)) return Fail(n, "not", v);
    return true;
  }

  Scratch& s_;
  const std::vector<TapeValue>& t_;
  int depth_ = 0;
};

}  // namespace

struct Validator::Impl {
  json::value source;  // the schema document (enum values point into it)
  std::vector<std::unique_ptr<SchemaNode>> nodes;
  const SchemaNode* root = nullptr;
  // Set when a schema stored before could not be compiled now (CompileUnchecked): why. Every
  // value is then refused (keyword "schema") rather than checked against part of it.
  std::string unusable;
};

Validator::Validator(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Validator::~Validator() = default;

Result<std::shared_ptr<const Validator>> CompileUnchecked(const json::value& schema) {
  auto impl = std::make_unique<Validator::Impl>();
  impl->source = schema;
  Result<const SchemaNode*> root = SchemaCompiler(impl->source, impl->nodes).Run();
  if (root.ok()) {
    impl->root = *root;
  } else {
    // A schema accepted (and stored) by an earlier version that this one cannot enforce (a
    // $ref loop that would never finish, a pattern it cannot read): it stays registered, and
    // refuses every value instead of half-checking it.
    impl->unusable = std::string(root.status().message());
    impl->nodes.clear();
    impl->nodes.push_back(std::make_unique<SchemaNode>());
    impl->root = impl->nodes.back().get();
  }
  return std::shared_ptr<const Validator>(new Validator(std::move(impl)));
}

Result<std::shared_ptr<const Validator>> Validator::Compile(const json::value& schema) {
  Status shape = ShapeCheck(schema).Run();
  if (!shape.ok()) return shape;
  auto impl = std::make_unique<Validator::Impl>();
  impl->source = schema;
  CONVERGE_ASSIGN_OR_RETURN(impl->root, SchemaCompiler(impl->source, impl->nodes).Run());
  return std::shared_ptr<const Validator>(new Validator(std::move(impl)));
}

namespace {

// A scratch keeps at most this much capacity from one text to the next.
constexpr size_t kKeepScratchBytes = 64 * 1024;

std::optional<Violation> ValidateWith(const Validator::Impl& impl, Scratch& s,
                                      std::string_view text, uint32_t max_depth) {
  if (!impl.unusable.empty()) return Violation{"", "schema", impl.unusable};
  const SchemaNode* root = impl.root;
  max_depth = std::min(max_depth, kMaxTextDepth);
  TapeError e = s.tape.Parse(text, max_depth);
  std::optional<Violation> out;
  if (e == TapeError::kTooDeep) {
    out = Violation{"", "json", "nested deeper than " + std::to_string(max_depth)};
  } else if (e != TapeError::kNone) {
    out =
        Violation{"", "json", "malformed JSON at offset " + std::to_string(s.tape.error_offset())};
  } else {
    s.seen_words.clear();
    if (!Walk(s).Check(root, 0)) {
      out = Violation{TapePointer(s.tape.values(), s.failed_value), s.failed_keyword,
                      s.failed_schema->path};
    }
  }
  if (text.size() > kKeepScratchBytes) s.tape.Trim(kKeepScratchBytes);
  return out;
}

Scratch& ThreadScratch() {
  thread_local Scratch scratch;
  return scratch;
}

}  // namespace

std::optional<Violation> Validator::Validate(const json::value& instance) const {
  // Serialized, then validated as text: one path for both (numbers keep their kind: an
  // integer prints as an integer, a double with a fraction or an exponent).
  return ValidateText(json::serialize(instance));
}

std::optional<Violation> Validator::ValidateText(std::string_view text) const {
  return ValidateWith(*impl_, ThreadScratch(), text, kMaxTextDepth);
}

struct Validator::Batch::Slot {
  Scratch scratch;
};

Validator::Batch::Batch(const Validator& validator)
    : impl_(*validator.impl_), slot_(std::make_unique<Slot>()) {}

Validator::Batch::~Batch() = default;

std::optional<Violation> Validator::Batch::ValidateText(std::string_view text, uint32_t max_depth) {
  return ValidateWith(impl_, slot_->scratch, text, max_depth);
}

}  // namespace converge::schema
