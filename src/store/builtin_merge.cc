#include "store/builtin_merge.h"

#include <map>
#include <string>
#include <type_traits>

#include "converge/conflict/counters.h"
#include "converge/conflict/crdt_kind.h"
#include "converge/conflict/lww_map.h"
#include "converge/conflict/or_map.h"
#include "converge/conflict/registers.h"
#include "converge/conflict/sets.h"

namespace converge::store_internal {
namespace {

// Joins CRDT states in their JSON form ({"type":"pn-counter",...}, converge/conflict). A
// written value of another shape is the writer's error (InvalidArgument); a stored value that
// is not this CRDT (the field existed before it became a merge field) is replaced.
template <typename T>
MergeFunction JoinOf() {
  return [](std::string_view stored, std::string_view written) -> Result<std::string> {
    Result<T> w = T::FromJson(written);
    if (!w.ok()) {
      return InvalidArgumentError("not a valid " + std::string(w.status().message()));
    }
    if (stored.empty()) return w->ToJson();
    Result<T> s = T::FromJson(stored);
    if (!s.ok()) return w->ToJson();
    if constexpr (std::is_same_v<decltype(s->Merge(*w)), Status>) {
      CONVERGE_RETURN_IF_ERROR(s->Merge(*w));
    } else {
      s->Merge(*w);
    }
    return s->ToJson();
  };
}

const std::map<std::string, MergeFunction, std::less<>>& Builtins() {
  using conflict::CrdtKind;
  using conflict::CrdtKindName;
  static const auto* builtins = new std::map<std::string, MergeFunction, std::less<>>{
      {std::string(CrdtKindName(CrdtKind::kGCounter)), JoinOf<conflict::GCounter>()},
      {std::string(CrdtKindName(CrdtKind::kPnCounter)), JoinOf<conflict::PnCounter>()},
      {std::string(CrdtKindName(CrdtKind::kBoundedCounter)), JoinOf<conflict::BoundedCounter>()},
      {std::string(CrdtKindName(CrdtKind::kGSet)), JoinOf<conflict::GSet>()},
      {std::string(CrdtKindName(CrdtKind::kOrSet)), JoinOf<conflict::OrSet>()},
      {std::string(CrdtKindName(CrdtKind::kFlag)), JoinOf<conflict::EwFlag>()},
      {std::string(CrdtKindName(CrdtKind::kLwwRegister)), JoinOf<conflict::LwwRegister>()},
      {std::string(CrdtKindName(CrdtKind::kMvRegister)), JoinOf<conflict::MvRegister>()},
      {std::string(CrdtKindName(CrdtKind::kLwwMap)), JoinOf<conflict::LwwMap>()},
      {std::string(CrdtKindName(CrdtKind::kOrMap)), JoinOf<conflict::OrMap>()},
  };
  return *builtins;
}

}  // namespace

const MergeFunction* BuiltinMergeFunction(std::string_view name) {
  const auto& all = Builtins();
  auto it = all.find(name);
  return it == all.end() ? nullptr : &it->second;
}

}  // namespace converge::store_internal
