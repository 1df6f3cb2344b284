#include "store/builtin_merge.h"

namespace converge::store_internal {

const MergeFunction* BuiltinMergeFunction(std::string_view name) { return nullptr; }

}  // namespace converge::store_internal
