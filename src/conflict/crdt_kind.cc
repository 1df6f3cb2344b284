#include "converge/conflict/crdt_kind.h"

#include <string>

namespace converge::conflict {

std::string_view CrdtKindName(CrdtKind kind) {
  switch (kind) {
    case CrdtKind::kLwwRegister:
      return "lww-register";
    case CrdtKind::kMvRegister:
      return "mv-register";
    case CrdtKind::kGCounter:
      return "g-counter";
    case CrdtKind::kPnCounter:
      return "pn-counter";
    case CrdtKind::kBoundedCounter:
      return "bounded-counter";
    case CrdtKind::kGSet:
      return "g-set";
    case CrdtKind::kOrSet:
      return "or-set";
    case CrdtKind::kFlag:
      return "flag";
    case CrdtKind::kLwwMap:
      return "lww-map";
    case CrdtKind::kOrMap:
      return "or-map";
    case CrdtKind::kVersionedValue:
      return "versioned-value";
  }
  return "unknown";
}

Result<CrdtKind> ParseCrdtKind(std::string_view name) {
  for (uint8_t k = 1; k <= 11; ++k) {
    const auto kind = static_cast<CrdtKind>(k);
    if (CrdtKindName(kind) == name) return kind;
  }
  return InvalidArgumentError("unknown crdt kind '" + std::string(name.substr(0, 40)) + "'");
}

}  // namespace converge::conflict
