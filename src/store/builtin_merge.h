// Merge functions the store provides by name for CollectionConfig::merge_fields: the join of
// each state-based CRDT of converge/conflict, named by its CrdtKind ("g-counter",
// "pn-counter", "bounded-counter", "g-set", "or-set", "flag", "lww-register", "mv-register",
// "lww-map", "or-map"), on the CRDT's JSON form.
// Thread-safety: the returned functions are immutable and thread-safe.
#pragma once

#include <string_view>

#include "converge/store.h"

namespace converge::store_internal {

// The built-in merge function called `name`, or nullptr. A StoreOptions::merge_functions entry
// of the same name takes precedence.
const MergeFunction* BuiltinMergeFunction(std::string_view name);

}  // namespace converge::store_internal
