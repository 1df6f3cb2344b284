#include "schema/compat.h"

#include "schema/json_pointer.h"

#include <cmath>
#include <optional>
#include <set>
#include <string_view>
#include <utility>

namespace converge::schema {
namespace {

namespace json = boost::json;

// Keywords that say nothing about which values are valid (or only hold definitions that $ref
// reaches): they never make two schemas differ.
const std::set<std::string_view>& Annotations() {
  static const std::set<std::string_view> kSet = {
      "title",    "description", "$schema", "$id",      "id",        "default",   "examples",
      "$comment", "definitions", "$defs",   "readOnly", "writeOnly", "deprecated"};
  return kSet;
}

// The keywords the check reasons about. Anything else (allOf, anyOf, oneOf, not, if/then/else,
// patternProperties, dependencies, propertyNames, tuple items, contains, ...) is a finding:
// the check cannot prove it harmless.
const std::set<std::string_view>& Supported() {
  static const std::set<std::string_view> kSet = {"type",
                                                  "properties",
                                                  "required",
                                                  "additionalProperties",
                                                  "items",
                                                  "enum",
                                                  "const",
                                                  "$ref",
                                                  "minimum",
                                                  "maximum",
                                                  "exclusiveMinimum",
                                                  "exclusiveMaximum",
                                                  "multipleOf",
                                                  "minLength",
                                                  "maxLength",
                                                  "pattern",
                                                  "format",
                                                  "minItems",
                                                  "maxItems",
                                                  "uniqueItems",
                                                  "minProperties",
                                                  "maxProperties"};
  return kSet;
}

const char* const kAllTypes[] = {"null", "boolean", "object", "array", "number", "string"};

std::string Join(const std::set<std::string>& names) {
  std::string out;
  for (const auto& n : names) {
    if (!out.empty()) out += ", ";
    out += n;
  }
  return out;
}

std::optional<double> Number(const json::object& s, std::string_view key) {
  auto it = s.find(key);
  if (it == s.end() || !it->value().is_number()) return std::nullopt;
  return it->value().to_number<double>();
}

// A bound on a number: its value and whether it is exclusive.
struct Bound {
  double value;
  bool exclusive;
};

// The lower (or upper) bound of a schema, in draft-04 form (`minimum` with a boolean
// `exclusiveMinimum`) or draft-06+ form (`exclusiveMinimum` a number); the tighter one wins.
std::optional<Bound> NumberBound(const json::object& s, bool lower) {
  const char* inclusive_key = lower ? "minimum" : "maximum";
  const char* exclusive_key = lower ? "exclusiveMinimum" : "exclusiveMaximum";
  std::optional<Bound> bound;
  if (auto v = Number(s, inclusive_key)) {
    bool ex = false;
    if (auto it = s.find(exclusive_key); it != s.end() && it->value().is_bool()) {
      ex = it->value().get_bool();
    }
    bound = Bound{*v, ex};
  }
  if (auto v = Number(s, exclusive_key)) {
    bool tighter = !bound || (lower ? *v >= bound->value : *v <= bound->value);
    if (tighter) bound = Bound{*v, true};
  }
  return bound;
}

std::string FormatNumber(double v) {
  return json::serialize(json::value(v == std::floor(v) && std::fabs(v) < 9e15
                                         ? json::value(static_cast<std::int64_t>(v))
                                         : json::value(v)));
}

const char* TypeOf(const json::value& v) {
  switch (v.kind()) {
    case json::kind::null:
      return "null";
    case json::kind::bool_:
      return "boolean";
    case json::kind::object:
      return "object";
    case json::kind::array:
      return "array";
    case json::kind::string:
      return "string";
    case json::kind::double_: {
      double d = v.get_double();
      return d == std::floor(d) && std::isfinite(d) ? "integer" : "number";
    }
    default:
      return "integer";
  }
}

bool SameValue(const json::value& a, const json::value& b) {
  if (a.is_number() && b.is_number()) return a.to_number<double>() == b.to_number<double>();
  return a == b;
}

class Checker {
 public:
  Checker(const json::value& wroot, const json::value& rroot, std::string writer_name,
          std::string reader_name)
      : wroot_(wroot), rroot_(rroot), w_(std::move(writer_name)), r_(std::move(reader_name)) {}

  void Check(const json::value& w, const json::value& r, const std::string& path) {
    const json::value* ws = Resolve(wroot_, &w, path, w_);
    const json::value* rs = Resolve(rroot_, &r, path, r_);
    if (ws == nullptr || rs == nullptr) return;
    // A schema reached again through a recursive $ref: assume it holds (what it adds is
    // checked where it was first reached).
    if (!visited_.insert({ws, rs}).second) return;
    static const json::value kAny = json::object();
    if (ws->is_bool()) {
      if (!ws->get_bool()) return;  // the writer produces nothing
      ws = &kAny;
    }
    if (rs->is_bool()) {
      if (rs->get_bool()) return;
      Add(path, r_ + " rejects every value (schema false)");
      return;
    }
    if (!ws->is_object()) {
      Add(path, w_ + " schema is not an object or boolean");
      return;
    }
    if (!rs->is_object()) {
      Add(path, r_ + " schema is not an object or boolean");
      return;
    }
    CheckObjects(ws->get_object(), rs->get_object(), path);
  }

  std::vector<Finding> Take() { return std::move(findings_); }

 private:
  void Add(std::string path, std::string reason) {
    findings_.push_back(Finding{std::move(path), std::move(reason)});
  }

  // Follows $ref (a JSON pointer into the same document; draft-04 to 07 ignore a $ref's
  // siblings) to the schema it names. nullptr (with a finding) when it cannot.
  const json::value* Resolve(const json::value& root, const json::value* s, const std::string& path,
                             const std::string& who) {
    for (int hops = 0; s->is_object(); ++hops) {
      auto it = s->get_object().find("$ref");
      if (it == s->get_object().end()) break;
      if (hops > 64) {
        Add(path + "/$ref", who + " has a $ref cycle");
        return nullptr;
      }
      if (!it->value().is_string()) {
        Add(path + "/$ref", who + " has a $ref that is not a string");
        return nullptr;
      }
      std::string_view ref = it->value().get_string();
      if (ref.empty() || ref.front() != '#') {
        Add(path + "/$ref", who + " refers outside its document ('" + std::string(ref) +
                                "'), which the check cannot follow");
        return nullptr;
      }
      boost::system::error_code ec;
      const json::value* target = root.find_pointer(ref.substr(1), ec);
      if (target == nullptr) {
        Add(path + "/$ref", who + " has a $ref that names nothing ('" + std::string(ref) + "')");
        return nullptr;
      }
      s = target;
    }
    return s;
  }

  // The basic types a schema admits ("number" includes "integer"); nullopt: every type.
  static std::optional<std::set<std::string>> DeclaredTypes(const json::object& s) {
    auto it = s.find("type");
    if (it == s.end()) return std::nullopt;
    std::set<std::string> out;
    if (it->value().is_string()) {
      out.insert(std::string(it->value().get_string()));
    } else if (it->value().is_array()) {
      for (const auto& t : it->value().get_array()) {
        if (t.is_string()) out.insert(std::string(t.get_string()));
      }
    }
    return out;
  }

  // The values a schema limits itself to (enum and const together); nullopt: no such limit.
  static std::optional<std::vector<json::value>> Values(const json::object& s) {
    std::optional<std::vector<json::value>> out;
    if (auto it = s.find("enum"); it != s.end() && it->value().is_array()) {
      out.emplace(it->value().get_array().begin(), it->value().get_array().end());
    }
    if (auto it = s.find("const"); it != s.end()) {
      std::vector<json::value> one;
      if (!out) {
        one.push_back(it->value());
      } else {
        for (const auto& v : *out) {
          if (SameValue(v, it->value())) one.push_back(v);
        }
      }
      out = std::move(one);
    }
    return out;
  }

  static bool Admits(const std::set<std::string>& types, const std::string& t) {
    return types.count(t) > 0 || (t == "integer" && types.count("number") > 0);
  }

  void CheckObjects(const json::object& w, const json::object& r, const std::string& path) {
    for (const auto* side : {&w, &r}) {
      for (const auto& kv : *side) {
        std::string_view key = kv.key();
        if (Annotations().count(key) || Supported().count(key)) continue;
        Add(path + "/" + EscapePointerToken(key), "keyword '" + std::string(key) + "' (in " +
                                               (side == &w ? w_ : r_) +
                                               ") is not supported by the compatibility check");
      }
      if (auto it = side->find("items"); it != side->end() && it->value().is_array()) {
        Add(path + "/items", std::string("array-form 'items' (in ") + (side == &w ? w_ : r_) +
                                 ") is not supported by the compatibility check");
      }
    }

    // What the writer can produce: its declared types, or those of its enum values.
    auto wvalues = Values(w);
    std::set<std::string> wtypes;
    bool w_typed = false;
    if (auto t = DeclaredTypes(w)) {
      wtypes = *t;
      w_typed = true;
    } else if (wvalues) {
      for (const auto& v : *wvalues) wtypes.insert(TypeOf(v));
      w_typed = true;
    } else {
      wtypes.insert(std::begin(kAllTypes), std::end(kAllTypes));
    }
    if (wvalues && w_typed && DeclaredTypes(w)) {
      // The values the writer can produce are those of its enum of a declared type.
      std::vector<json::value> kept;
      for (const auto& v : *wvalues) {
        if (Admits(wtypes, TypeOf(v))) kept.push_back(v);
      }
      wvalues = std::move(kept);
    }

    // type
    if (auto rtypes = DeclaredTypes(r)) {
      std::set<std::string> lost;
      for (const auto& t : wtypes) {
        if (Admits(*rtypes, t)) continue;
        // A number the writer produces may be an integer the reader takes; still a loss.
        lost.insert(t);
      }
      if (!lost.empty()) {
        std::string reason;
        if (!w_typed) {
          reason = w_ + " allows any type, " + r_ + " only " + Join(*rtypes);
        } else if (lost == std::set<std::string>{"number"} && rtypes->count("integer")) {
          reason = "type narrowed from number to integer";
        } else {
          reason = "type changed from " + Join(wtypes) + " to " + Join(*rtypes) + " (" +
                   Join(lost) + " no longer accepted)";
        }
        Add(path + "/type", reason);
      }
    }

    // enum / const
    if (auto rvalues = Values(r)) {
      if (!wvalues) {
        Add(path + (r.contains("enum") ? "/enum" : "/const"),
            r_ + " limits the values to an enum, " + w_ + " does not");
      } else {
        std::string removed;
        for (const auto& v : *wvalues) {
          bool found = false;
          for (const auto& rv : *rvalues) found = found || SameValue(v, rv);
          if (!found) removed += (removed.empty() ? "" : ", ") + json::serialize(v);
        }
        if (!removed.empty()) {
          Add(path + (r.contains("enum") ? "/enum" : "/const"),
              "enum narrowed: " + removed + " not accepted by " + r_);
        }
      }
    }
    // Keywords of one type matter only when the writer can produce values of that type.
    auto admits = [&](const char* t) { return Admits(wtypes, t); };
    if (admits("number") || admits("integer")) CheckNumbers(w, r, path);
    if (admits("string")) {
      CheckLength(w, r, path, "minLength", true);
      CheckLength(w, r, path, "maxLength", false);
      CheckSame(w, r, path, "pattern");
      CheckSame(w, r, path, "format");
    }
    if (admits("array")) CheckArrays(w, r, path);
    if (admits("object")) CheckProperties(w, r, path);
  }

  void CheckNumbers(const json::object& w, const json::object& r, const std::string& path) {
    for (bool lower : {true, false}) {
      auto rb = NumberBound(r, lower);
      if (!rb) continue;
      auto wb = NumberBound(w, lower);
      const char* name = lower ? "minimum" : "maximum";
      std::string where =
          path + "/" +
          (r.contains(name) ? name : (lower ? "exclusiveMinimum" : "exclusiveMaximum"));
      if (!wb) {
        Add(where, r_ + " has a " + name + " (" + FormatNumber(rb->value) + "), " + w_ + " none");
        continue;
      }
      bool inside = lower ? wb->value > rb->value : wb->value < rb->value;
      bool same_ok = wb->value == rb->value && (wb->exclusive || !rb->exclusive);
      if (!inside && !same_ok) {
        Add(where, std::string(name) + " tightened from " + FormatNumber(wb->value) +
                       (wb->exclusive ? " (exclusive)" : "") + " to " + FormatNumber(rb->value) +
                       (rb->exclusive ? " (exclusive)" : ""));
      }
    }
    if (auto rm = Number(r, "multipleOf")) {
      auto wm = Number(w, "multipleOf");
      double q = wm ? *wm / *rm : 0.5;
      if (!wm || std::fabs(q - std::round(q)) > 1e-9 || std::round(q) < 1) {
        Add(path + "/multipleOf", r_ + " requires a multiple of " + FormatNumber(*rm) + ", " + w_ +
                                      (wm ? " of " + FormatNumber(*wm) : " any number"));
      }
    }
  }

  // minLength/minItems/minProperties (lower) and their max* (upper): the reader's must not be
  // tighter than the writer's.
  void CheckLength(const json::object& w, const json::object& r, const std::string& path,
                   const char* key, bool lower) {
    auto rv = Number(r, key);
    if (!rv) return;
    auto wv = Number(w, key);
    if (!wv || (lower ? *wv < *rv : *wv > *rv)) {
      Add(path + "/" + key, std::string(key) + " tightened from " +
                                (wv ? FormatNumber(*wv) : std::string("none")) + " to " +
                                FormatNumber(*rv));
    }
  }

  void CheckSame(const json::object& w, const json::object& r, const std::string& path,
                 const char* key) {
    auto rit = r.find(key);
    if (rit == r.end()) return;
    auto wit = w.find(key);
    if (wit == w.end() || wit->value() != rit->value()) {
      Add(path + "/" + key, std::string(key) + " " + json::serialize(rit->value()) + " of " + r_ +
                                " not guaranteed by " + w_);
    }
  }

  void CheckArrays(const json::object& w, const json::object& r, const std::string& path) {
    CheckLength(w, r, path, "minItems", true);
    CheckLength(w, r, path, "maxItems", false);
    if (auto it = r.find("uniqueItems"); it != r.end() && it->value() == json::value(true)) {
      auto wit = w.find("uniqueItems");
      if (wit == w.end() || wit->value() != json::value(true)) {
        Add(path + "/uniqueItems", r_ + " requires unique items, " + w_ + " does not");
      }
    }
    auto rit = r.find("items");
    if (rit == r.end() || rit->value().is_array()) return;
    auto wit = w.find("items");
    static const json::value kTrue = true;
    if (wit != w.end() && wit->value().is_array()) return;
    Check(wit == w.end() ? kTrue : wit->value(), rit->value(), path + "/items");
  }

  void CheckProperties(const json::object& w, const json::object& r, const std::string& path) {
    CheckLength(w, r, path, "minProperties", true);
    CheckLength(w, r, path, "maxProperties", false);
    static const json::object kEmpty;
    static const json::value kTrue = true;
    auto props = [](const json::object& s) -> const json::object& {
      auto it = s.find("properties");
      return it != s.end() && it->value().is_object() ? it->value().get_object() : kEmpty;
    };
    auto additional = [](const json::object& s) -> const json::value& {
      auto it = s.find("additionalProperties");
      return it != s.end() ? it->value() : kTrue;
    };
    auto required = [](const json::object& s) {
      std::set<std::string> out;
      if (auto it = s.find("required"); it != s.end() && it->value().is_array()) {
        for (const auto& n : it->value().get_array()) {
          if (n.is_string()) out.insert(std::string(n.get_string()));
        }
      }
      return out;
    };
    const json::object& wprops = props(w);
    const json::object& rprops = props(r);
    const json::value& wadd = additional(w);
    const json::value& radd = additional(r);

    std::set<std::string> wreq = required(w);
    for (const auto& name : required(r)) {
      if (wreq.count(name)) continue;
      bool known = wprops.contains(name);
      Add(path + "/required", "field '" + name + "' is required by " + r_ + " but " +
                                  (known ? "optional in " + w_ : "not required by " + w_));
    }

    // Each property the reader describes, against what the writer may put there.
    for (const auto& kv : rprops) {
      std::string sub = path + "/properties/" + EscapePointerToken(kv.key());
      if (auto it = wprops.find(kv.key()); it != wprops.end()) {
        Check(it->value(), kv.value(), sub);
      } else if (!(wadd.is_bool() && !wadd.get_bool())) {
        Check(wadd, kv.value(), sub);
      }
    }
    // Properties the writer may produce that the reader does not describe.
    bool radd_any = radd.is_bool() && radd.get_bool();
    if (radd_any) return;
    for (const auto& kv : wprops) {
      if (rprops.contains(kv.key())) continue;
      if (kv.value().is_bool() && !kv.value().get_bool()) continue;
      if (radd.is_bool()) {
        Add(path + "/additionalProperties", "field '" + std::string(kv.key()) + "' of " + w_ +
                                                " not allowed by " + r_ +
                                                " (additionalProperties false)");
      } else {
        Check(kv.value(), radd, path + "/additionalProperties");
      }
    }
    if (wadd.is_bool() && !wadd.get_bool()) return;
    if (radd.is_bool()) {
      Add(path + "/additionalProperties",
          w_ + " allows additional properties, " + r_ + " does not");
    } else {
      Check(wadd, radd, path + "/additionalProperties");
    }
  }

  const json::value& wroot_;
  const json::value& rroot_;
  std::string w_;
  std::string r_;
  std::set<std::pair<const void*, const void*>> visited_;
  std::vector<Finding> findings_;
};

std::vector<Finding> Run(const json::value& writer, const json::value& reader,
                         std::string writer_name, std::string reader_name) {
  Checker c(writer, reader, std::move(writer_name), std::move(reader_name));
  c.Check(writer, reader, "");
  return c.Take();
}

}  // namespace

std::vector<Finding> CheckReaderAccepts(const json::value& writer, const json::value& reader) {
  return Run(writer, reader, "the writer", "the reader");
}

std::vector<Finding> CheckCompatibility(const json::value& previous, const json::value& next,
                                        Compatibility mode) {
  std::vector<Finding> out;
  if (mode == Compatibility::kBackward || mode == Compatibility::kFull) {
    // New readers of old data: the new version reads what the previous one wrote.
    out = Run(previous, next, "the previous version", "the new version");
  }
  if (mode == Compatibility::kForward || mode == Compatibility::kFull) {
    auto more = Run(next, previous, "the new version", "the previous version");
    out.insert(out.end(), std::make_move_iterator(more.begin()),
               std::make_move_iterator(more.end()));
  }
  return out;
}

}  // namespace converge::schema
