// Reading API request bodies (JSON objects) strictly and writing replies fast.
//
// Contract: readers never throw; a malformed body gives InvalidArgument "request body is not
// valid JSON: ..."; a field of the wrong type or range gives InvalidArgument naming the field;
// an unknown field is rejected (it is almost always a typo), and so is a member name that
// appears twice in one object.
// Thread-safety: stateless functions.
#pragma once

#include <boost/json/object.hpp>
#include <cstdint>
#include <initializer_list>
#include <string>
#include <string_view>

#include "converge/status.h"

namespace converge::server {

// Parses a request body that must be a JSON object; an empty body is an empty object.
Result<boost::json::object> ParseJsonObject(std::string_view body);
// A JSON object converge stored itself (bookkeeping documents): DataLoss naming `what` when
// the text is not one, since only damage can make it so.
Result<boost::json::object> ParseStoredObject(const std::string& text, const std::string& what);
// The unsigned number in `field` of a stored object; 0 when absent or not a number.
uint64_t StoredU64(const boost::json::object& obj, const char* field);

// InvalidArgument naming the first field of `obj` that is not in `allowed`.
Status CheckFields(const boost::json::object& obj, std::initializer_list<std::string_view> allowed);

// Each reader leaves *out untouched when the field is absent (or null).
Status ReadInt(const boost::json::object& obj, std::string_view field, int64_t min, int64_t max,
               int64_t* out);
Status ReadUint(const boost::json::object& obj, std::string_view field, uint64_t min, uint64_t max,
                uint64_t* out);
Status ReadString(const boost::json::object& obj, std::string_view field, std::string* out);
Status ReadBool(const boost::json::object& obj, std::string_view field, bool* out);

// Appends `s` as a JSON string literal (quotes included).
void AppendJsonString(std::string* out, std::string_view s);

// Parses a decimal unsigned integer query parameter. InvalidArgument naming `name`.
Result<uint64_t> ParseUintParam(std::string_view name, std::string_view value, uint64_t min,
                                uint64_t max);

}  // namespace converge::server
