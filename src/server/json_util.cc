#include "server/json_util.h"
#include "core/event_internal.h"

#include <boost/json/parse.hpp>
#include <boost/json/value.hpp>
#include <charconv>

namespace converge::server {

namespace json = boost::json;

Result<json::object> ParseStoredObject(const std::string& text, const std::string& what) {
  json::error_code ec;
  json::value v = json::parse(text, ec);
  if (ec || !v.is_object()) return DataLossError(what + " is not a JSON object");
  return std::move(v.as_object());
}

uint64_t StoredU64(const json::object& obj, const char* field) {
  const json::value* v = obj.if_contains(field);
  return v != nullptr && v->is_number() ? v->to_number<uint64_t>() : 0;
}

Result<json::object> ParseJsonObject(std::string_view body) {
  if (body.find_first_not_of(" \t\r\n") == std::string_view::npos) return json::object();
  boost::system::error_code ec;
  json::parse_options opts;
  opts.max_depth = 32;
  json::value v = json::parse(json::string_view(body.data(), body.size()), ec, {}, opts);
  if (ec) return InvalidArgumentError("request body is not valid JSON: " + ec.message());
  if (!v.is_object()) return InvalidArgumentError("request body must be a JSON object");
  // Boost.JSON keeps the last of repeated members; refuse them instead of guessing.
  if (Status unique = ::converge::internal::CheckUniqueJsonKeys(body, opts.max_depth);
      !unique.ok()) {
    return InvalidArgumentError("request body: " + std::string(unique.message()));
  }
  return std::move(v.as_object());
}

Status CheckFields(const json::object& obj, std::initializer_list<std::string_view> allowed) {
  for (const auto& kv : obj) {
    std::string_view key(kv.key().data(), kv.key().size());
    bool known = false;
    for (std::string_view a : allowed) known = known || a == key;
    if (!known) return InvalidArgumentError("unknown field '" + std::string(key) + "'");
  }
  return Status::Ok();
}

namespace {
const json::value* Find(const json::object& obj, std::string_view field) {
  auto it = obj.find(json::string_view(field.data(), field.size()));
  if (it == obj.end() || it->value().is_null()) return nullptr;
  return &it->value();
}

template <typename Int>
std::string Range(Int min, Int max) {
  // Built with append: GCC 12 warns (-Wrestrict, a false positive) on chained operator+.
  std::string out = "[";
  out.append(std::to_string(min));
  out.append(", ");
  out.append(std::to_string(max));
  out.append("]");
  return out;
}

Status RangeError(std::string_view field, const std::string& range) {
  std::string msg = "field '";
  msg.append(field);
  msg.append("' must be an integer in ");
  msg.append(range);
  return InvalidArgumentError(msg);
}
}  // namespace

Status ReadInt(const json::object& obj, std::string_view field, int64_t min, int64_t max,
               int64_t* out) {
  const json::value* v = Find(obj, field);
  if (!v) return Status::Ok();
  std::string range = Range(min, max);
  int64_t x;
  if (v->is_int64()) {
    x = v->as_int64();
  } else if (v->is_uint64() && v->as_uint64() <= static_cast<uint64_t>(INT64_MAX)) {
    x = static_cast<int64_t>(v->as_uint64());
  } else {
    return RangeError(field, range);
  }
  if (x < min || x > max) return RangeError(field, range);
  *out = x;
  return Status::Ok();
}

Status ReadUint(const json::object& obj, std::string_view field, uint64_t min, uint64_t max,
                uint64_t* out) {
  const json::value* v = Find(obj, field);
  if (!v) return Status::Ok();
  std::string range = Range(min, max);
  uint64_t x;
  if (v->is_uint64()) {
    x = v->as_uint64();
  } else if (v->is_int64() && v->as_int64() >= 0) {
    x = static_cast<uint64_t>(v->as_int64());
  } else {
    return RangeError(field, range);
  }
  if (x < min || x > max) return RangeError(field, range);
  *out = x;
  return Status::Ok();
}

Status ReadString(const json::object& obj, std::string_view field, std::string* out) {
  const json::value* v = Find(obj, field);
  if (!v) return Status::Ok();
  if (!v->is_string()) {
    return InvalidArgumentError("field '" + std::string(field) + "' must be a string");
  }
  *out = std::string(v->as_string().data(), v->as_string().size());
  return Status::Ok();
}

Status ReadBool(const json::object& obj, std::string_view field, bool* out) {
  const json::value* v = Find(obj, field);
  if (!v) return Status::Ok();
  if (!v->is_bool()) {
    return InvalidArgumentError("field '" + std::string(field) + "' must be true or false");
  }
  *out = v->as_bool();
  return Status::Ok();
}

void AppendJsonString(std::string* out, std::string_view s) {
  out->push_back('"');
  ::converge::internal::AppendJsonEscaped(s, out);
  out->push_back('"');
}

Result<uint64_t> ParseUintParam(std::string_view name, std::string_view value, uint64_t min,
                                uint64_t max) {
  uint64_t v = 0;
  auto [ptr, ec] = std::from_chars(value.data(), value.data() + value.size(), v);
  if (value.empty() || ec != std::errc() || ptr != value.data() + value.size() || v < min ||
      v > max) {
    return InvalidArgumentError("query parameter '" + std::string(name) +
                                "' must be an integer in [" + std::to_string(min) + ", " +
                                std::to_string(max) + "], got '" + std::string(value) + "'");
  }
  return v;
}

}  // namespace converge::server
