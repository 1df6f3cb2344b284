// JSON helpers of the store: validation of documents and the merge-field resolution of
// collections with merge fields (see converge/store.h).
// Thread-safety: pure functions (merge functions must be thread-safe themselves).
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <string_view>

#include "converge/store.h"

namespace converge::store_internal {

// OK if `text` is exactly one JSON value (surrounding whitespace allowed) nesting at most
// `max_depth` deep, no object repeating a member name; InvalidArgument otherwise, saying
// where it fails.
Status ValidateJson(std::string_view text, uint32_t max_depth);

// True if `text` (valid JSON) is an object.
bool IsJsonObject(std::string_view text);

// The merge functions a collection uses, by field.
using FieldMergers = std::map<std::string, const MergeFunction*, std::less<>>;

// The document to store when `written` (a JSON object) is put over `stored` (empty if there
// is no stored document) in a collection with merge fields. `stale`: the write's If-Match did
// not match. Fresh write: `written` with each merge field joined with the stored one (a
// field the write omits keeps its stored value). Stale write: Aborted unless every top-level
// field outside the merge fields equals the stored one; then the stored document with the
// written merge fields joined in. InvalidArgument: `written` is not an object; a merge
// function's error is returned as is (prefixed with the field).
Result<std::string> ResolveMergeFields(std::string_view stored, std::string_view written,
                                       const FieldMergers& mergers, bool stale, uint32_t max_depth);

}  // namespace converge::store_internal
