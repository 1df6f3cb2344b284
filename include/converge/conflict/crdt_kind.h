// The kinds of replicated state converge's conflict module knows, with their stable names.
//
// Contract: the numeric values are the type tags of the binary forms and the names are the
// "type" members of the JSON forms; neither ever changes meaning once released.
// Thread-safety: plain values and pure functions.
#pragma once

#include <cstdint>
#include <string_view>

#include "converge/status.h"

namespace converge::conflict {

enum class CrdtKind : uint8_t {
  kLwwRegister = 1,
  kMvRegister = 2,
  kGCounter = 3,
  kPnCounter = 4,
  kBoundedCounter = 5,
  kGSet = 6,
  kOrSet = 7,
  kFlag = 8,
  kLwwMap = 9,
  kOrMap = 10,
  kVersionedValue = 11,
};

// "lww-register", "mv-register", "g-counter", "pn-counter", "bounded-counter", "g-set",
// "or-set", "flag", "lww-map", "or-map", "versioned-value".
std::string_view CrdtKindName(CrdtKind kind);
// The kind named `name`; InvalidArgument for an unknown name.
Result<CrdtKind> ParseCrdtKind(std::string_view name);

}  // namespace converge::conflict
