// Merge functions the store provides by name for CollectionConfig::merge_fields.
// Thread-safety: the returned functions are immutable and thread-safe.
#pragma once

#include <string_view>

#include "converge/store.h"

namespace converge::store_internal {

// The built-in merge function called `name`, or nullptr.
const MergeFunction* BuiltinMergeFunction(std::string_view name);

}  // namespace converge::store_internal
