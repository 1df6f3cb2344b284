// Internal: JSON helpers for the conflict types (Boost.JSON stays inside src/).
//
// Conventions of the JSON forms:
// - Replica ids are decimal strings ("42"), so 64-bit ids survive JavaScript clients.
// - Counters are JSON numbers.
// - Application bytes (values, set elements, map keys used as values) are JSON strings when
//   they are valid UTF-8 and {"base64":"..."} otherwise, so any byte string round-trips.
// - Map keys (JSON object member names) must be valid UTF-8; a non-UTF-8 key is written as
//   an entry of a "binary_keys" array instead (see the types using it).
// - HLC timestamps are "<micros>.<logical>" strings.
#pragma once

#include <boost/json.hpp>
#include <string>
#include <string_view>

#include "converge/conflict/causality.h"
#include "converge/status.h"

namespace converge::conflict::internal {

namespace json = boost::json;

// Parses `text` (size and depth bounded by `limits`). InvalidArgument on malformed JSON.
Result<json::value> ParseJson(std::string_view text, const DecodeLimits& limits,
                              std::string_view what);
std::string SerializeJson(const json::value& v);

// A JSON-side error: InvalidArgument "malformed <what> JSON: <reason>".
Status JsonError(std::string_view what, std::string_view reason);

json::value BytesToJson(std::string_view bytes);
Status BytesFromJson(const json::value& v, std::string* out, std::string_view what);

Status Uint64FromJson(const json::value& v, uint64_t* out, std::string_view what);
Status Int64FromJson(const json::value& v, int64_t* out, std::string_view what);
Status BoolFromJson(const json::value& v, bool* out, std::string_view what);
// The object itself, or InvalidArgument.
Result<const json::object*> ObjectFromJson(const json::value& v, std::string_view what);
Result<const json::array*> ArrayFromJson(const json::value& v, std::string_view what);
// Member `key` of `obj`, or InvalidArgument when missing.
Result<const json::value*> Member(const json::object& obj, std::string_view key,
                                  std::string_view what);
// Checks the "type" member equals `type`.
Status CheckType(const json::object& obj, std::string_view type, std::string_view what);

json::value ReplicaToJson(ReplicaId r);
Status ReplicaFromJson(const json::value& v, ReplicaId* out, std::string_view what);
Status ReplicaFromKey(std::string_view key, ReplicaId* out, std::string_view what);

json::value HlcToJson(const HlcTimestamp& ts);
Status HlcFromJson(const json::value& v, HlcTimestamp* out, std::string_view what);

json::value VersionVectorToJson(const VersionVector& vv);
Status VersionVectorFromJson(const json::value& v, VersionVector* out, std::string_view what);
json::value DotToJson(Dot d);
Status DotFromJson(const json::value& v, Dot* out, std::string_view what);
json::value CausalContextToJson(const CausalContext& cc);
Status CausalContextFromJson(const json::value& v, CausalContext* out, std::string_view what);

// Runs `fn` (which builds a value of type T from a parsed JSON value) over `text`.
template <typename T, typename Fn>
Result<T> DecodeJson(std::string_view text, const DecodeLimits& limits, std::string_view what,
                     Fn&& fn) {
  try {
    CONVERGE_ASSIGN_OR_RETURN(json::value v, ParseJson(text, limits, what));
    T out;
    CONVERGE_RETURN_IF_ERROR(fn(v, &out));
    return out;
  } catch (const std::bad_alloc&) {
    return ResourceExhaustedError(std::string(what) + ": out of memory decoding JSON");
  } catch (const std::exception& e) {
    return JsonError(what, e.what());
  }
}

}  // namespace converge::conflict::internal
