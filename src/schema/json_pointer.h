// JSON Pointer (RFC 6901) segments: how the schema checks, the validator and the topology
// findings name a place in a document.
#pragma once

#include <string>
#include <string_view>

namespace converge::schema {

// One reference token escaped as RFC 6901 says: '~' becomes "~0", '/' becomes "~1".
inline std::string EscapePointerToken(std::string_view token) {
  std::string out;
  out.reserve(token.size());
  for (char c : token) {
    if (c == '~') {
      out += "~0";
    } else if (c == '/') {
      out += "~1";
    } else {
      out.push_back(c);
    }
  }
  return out;
}

}  // namespace converge::schema
