#include "conflict/json_codec.h"

#include <limits>

#include "conflict/binary_codec.h"

namespace converge::conflict::internal {

Status JsonError(std::string_view what, std::string_view reason) {
  return InvalidArgumentError("malformed " + std::string(what) + " JSON: " + std::string(reason));
}

Result<json::value> ParseJson(std::string_view text, const DecodeLimits& limits,
                              std::string_view what) {
  CONVERGE_RETURN_IF_ERROR(CheckInputSize(text, limits, what));
  json::parse_options options;
  // Every nesting level of an OR-Map costs a few JSON levels (entry object, value object).
  options.max_depth = 4 * static_cast<size_t>(limits.max_depth) + 8;
  boost::system::error_code ec;
  json::value v =
      json::parse(json::string_view(text.data(), text.size()), ec, json::storage_ptr(), options);
  if (ec) return JsonError(what, ec.message());
  return v;
}

std::string SerializeJson(const json::value& v) { return json::serialize(v); }

json::value BytesToJson(std::string_view bytes) {
  if (IsValidUtf8(bytes)) return json::string(json::string_view(bytes.data(), bytes.size()));
  json::object o;
  o["base64"] = Base64Encode(bytes);
  return o;
}

Status BytesFromJson(const json::value& v, std::string* out, std::string_view what) {
  if (const json::string* s = v.if_string()) {
    out->assign(s->data(), s->size());
    return Status::Ok();
  }
  if (const json::object* o = v.if_object()) {
    const json::value* b = o->if_contains("base64");
    if (o->size() == 1 && b != nullptr && b->is_string()) {
      const json::string& s = b->get_string();
      if (Base64Decode(std::string_view(s.data(), s.size()), out)) return Status::Ok();
      return JsonError(what, "invalid base64");
    }
  }
  return JsonError(what, "expected a string or {\"base64\": ...}");
}

Status Uint64FromJson(const json::value& v, uint64_t* out, std::string_view what) {
  if (v.is_uint64()) {
    *out = v.get_uint64();
    return Status::Ok();
  }
  if (v.is_int64() && v.get_int64() >= 0) {
    *out = static_cast<uint64_t>(v.get_int64());
    return Status::Ok();
  }
  return JsonError(what, "expected a non-negative integer");
}

Status Int64FromJson(const json::value& v, int64_t* out, std::string_view what) {
  if (v.is_int64()) {
    *out = v.get_int64();
    return Status::Ok();
  }
  if (v.is_uint64() && v.get_uint64() <= uint64_t{std::numeric_limits<int64_t>::max()}) {
    *out = static_cast<int64_t>(v.get_uint64());
    return Status::Ok();
  }
  return JsonError(what, "expected a 64-bit integer");
}

Status BoolFromJson(const json::value& v, bool* out, std::string_view what) {
  if (!v.is_bool()) return JsonError(what, "expected true or false");
  *out = v.get_bool();
  return Status::Ok();
}

Result<const json::object*> ObjectFromJson(const json::value& v, std::string_view what) {
  if (const json::object* o = v.if_object()) return o;
  return JsonError(what, "expected an object");
}

Result<const json::array*> ArrayFromJson(const json::value& v, std::string_view what) {
  if (const json::array* a = v.if_array()) return a;
  return JsonError(what, "expected an array");
}

Result<const json::value*> Member(const json::object& obj, std::string_view key,
                                  std::string_view what) {
  const json::value* v = obj.if_contains(json::string_view(key.data(), key.size()));
  if (v == nullptr) return JsonError(what, "missing member \"" + std::string(key) + "\"");
  return v;
}

Status CheckType(const json::object& obj, std::string_view type, std::string_view what) {
  CONVERGE_ASSIGN_OR_RETURN(const json::value* t, Member(obj, "type", what));
  if (!t->is_string() || t->get_string() != json::string_view(type.data(), type.size())) {
    return JsonError(what, "\"type\" must be \"" + std::string(type) + "\"");
  }
  return Status::Ok();
}

json::value ReplicaToJson(ReplicaId r) { return json::string(r.ToString()); }

Status ReplicaFromKey(std::string_view key, ReplicaId* out, std::string_view what) {
  Result<ReplicaId> r = ReplicaId::Parse(key);
  if (!r.ok() || !r->valid()) {
    return JsonError(what, "replica id must be a decimal uint64 >= 1, got \"" +
                               std::string(key.substr(0, 40)) + "\"");
  }
  *out = *r;
  return Status::Ok();
}

Status ReplicaFromJson(const json::value& v, ReplicaId* out, std::string_view what) {
  if (!v.is_string()) return JsonError(what, "replica id must be a decimal string");
  const json::string& s = v.get_string();
  return ReplicaFromKey(std::string_view(s.data(), s.size()), out, what);
}

json::value HlcToJson(const HlcTimestamp& ts) { return json::string(ts.ToString()); }

Status HlcFromJson(const json::value& v, HlcTimestamp* out, std::string_view what) {
  if (!v.is_string()) return JsonError(what, "hlc timestamp must be a \"micros.logical\" string");
  const json::string& s = v.get_string();
  Result<HlcTimestamp> ts = HlcTimestamp::Parse(std::string_view(s.data(), s.size()));
  if (!ts.ok()) return JsonError(what, ts.status().message());
  *out = *ts;
  return Status::Ok();
}

json::value VersionVectorToJson(const VersionVector& vv) {
  json::object o;
  o.reserve(vv.size());
  for (const auto& e : vv.entries()) o[e.replica.ToString()] = e.counter;
  return o;
}

Status VersionVectorFromJson(const json::value& v, VersionVector* out, std::string_view what) {
  CONVERGE_ASSIGN_OR_RETURN(const json::object* o, ObjectFromJson(v, what));
  VersionVector vv;
  for (const auto& member : *o) {
    ReplicaId r;
    CONVERGE_RETURN_IF_ERROR(
        ReplicaFromKey(std::string_view(member.key().data(), member.key().size()), &r, what));
    uint64_t counter;
    CONVERGE_RETURN_IF_ERROR(Uint64FromJson(member.value(), &counter, what));
    if (vv.Get(r) != 0) return JsonError(what, "duplicate replica " + r.ToString());
    vv.Observe(r, counter);
  }
  *out = std::move(vv);
  return Status::Ok();
}

json::value DotToJson(Dot d) {
  json::object o;
  o["replica"] = d.replica.ToString();
  o["counter"] = d.counter;
  return o;
}

Status DotFromJson(const json::value& v, Dot* out, std::string_view what) {
  CONVERGE_ASSIGN_OR_RETURN(const json::object* o, ObjectFromJson(v, what));
  CONVERGE_ASSIGN_OR_RETURN(const json::value* r, Member(*o, "replica", what));
  CONVERGE_ASSIGN_OR_RETURN(const json::value* c, Member(*o, "counter", what));
  Dot d;
  CONVERGE_RETURN_IF_ERROR(ReplicaFromJson(*r, &d.replica, what));
  CONVERGE_RETURN_IF_ERROR(Uint64FromJson(*c, &d.counter, what));
  if (d.counter == 0) return JsonError(what, "dot counter must be >= 1");
  *out = d;
  return Status::Ok();
}

json::value CausalContextToJson(const CausalContext& cc) {
  json::object o;
  o["vv"] = VersionVectorToJson(cc.compact());
  json::array dots;
  dots.reserve(cc.cloud().size());
  for (const Dot& d : cc.cloud()) dots.push_back(DotToJson(d));
  o["dots"] = std::move(dots);
  return o;
}

Status CausalContextFromJson(const json::value& v, CausalContext* out, std::string_view what) {
  CONVERGE_ASSIGN_OR_RETURN(const json::object* o, ObjectFromJson(v, what));
  CONVERGE_ASSIGN_OR_RETURN(const json::value* vvj, Member(*o, "vv", what));
  VersionVector vv;
  CONVERGE_RETURN_IF_ERROR(VersionVectorFromJson(*vvj, &vv, what));
  CausalContext cc(std::move(vv));
  if (const json::value* dots = o->if_contains("dots")) {
    CONVERGE_ASSIGN_OR_RETURN(const json::array* a, ArrayFromJson(*dots, what));
    for (const json::value& dj : *a) {
      Dot d;
      CONVERGE_RETURN_IF_ERROR(DotFromJson(dj, &d, what));
      cc.Add(d);
    }
  }
  *out = std::move(cc);
  return Status::Ok();
}

}  // namespace converge::conflict::internal
