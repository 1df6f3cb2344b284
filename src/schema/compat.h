// Compatibility of JSON Schemas: does every value one schema (the writer's) admits pass
// another (the reader's)? Used by the schema registry (a new version against the previous
// one, under a type's compatibility mode) and by topology checks (a consumer's expected
// schema against the producer's).
#pragma once

#include <boost/json.hpp>
#include <string>
#include <vector>

namespace converge::schema {

struct Finding {
  std::string path;  // JSON pointer into the schema where the difference is ("/properties/id/type")
  std::string reason;  // one line: "required field 'id' removed", "type narrowed from number to
                       // integer", ...
};

// Findings that show some instance valid against `writer` may be invalid against `reader`
// (empty: every value the writer produces, the reader accepts). Structural and conservative
// over the supported JSON-Schema subset; a keyword it cannot reason about is a finding.
std::vector<Finding> CheckReaderAccepts(const boost::json::value& writer,
                                        const boost::json::value& reader);

enum class Compatibility { kBackward, kForward, kFull, kNone };

// backward: new readers read old data  = CheckReaderAccepts(previous, next)
// forward:  old readers read new data  = CheckReaderAccepts(next, previous)
// full: both; none: always empty.
std::vector<Finding> CheckCompatibility(const boost::json::value& previous,
                                        const boost::json::value& next, Compatibility mode);

}  // namespace converge::schema
