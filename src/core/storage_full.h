// Telling a write the disk refused (a full disk or quota) from the other ResourceExhausted
// errors (limits, load): the one is a retryable 503 on every HTTP route, the others are not.
#pragma once

#include "converge/status.h"

namespace converge {

// True for the error the file system gives when the disk (or the quota) refuses a write: the
// status it made with StorageFullError at the source (converge/status.h), whatever context
// was added since. The writer undid what it could; the caller may retry later.
inline bool IsStorageFull(const Status& status) { return status.storage_full(); }

// `status` as Unavailable (same message) when IsStorageFull, else unchanged.
inline Status StorageFullAsUnavailable(Status status) {
  if (!IsStorageFull(status)) return status;
  return Status(StatusCode::kUnavailable, status.message());
}

}  // namespace converge
