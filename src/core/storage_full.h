// Telling a write the disk refused (a full disk or quota) from the other ResourceExhausted
// errors (limits, load): the one is a retryable 503 on every HTTP route, the others are not.
#pragma once

#include <string_view>

#include "converge/status.h"

namespace converge {

// True for the error the file system gives when the disk (or the quota) refuses a write: a
// ResourceExhausted carrying the ENOSPC / EDQUOT text (the posix file system ends its message
// with strerror). The writer undid what it could; the caller may retry later.
inline bool IsStorageFull(const Status& status) {
  if (status.code() != StatusCode::kResourceExhausted) return false;
  const std::string_view m = status.message();
  return m.find("No space left on device") != std::string_view::npos ||
         m.find("Disk quota exceeded") != std::string_view::npos;
}

// `status` as Unavailable (same message) when IsStorageFull, else unchanged.
inline Status StorageFullAsUnavailable(Status status) {
  if (!IsStorageFull(status)) return status;
  return Status(StatusCode::kUnavailable, status.message());
}

}  // namespace converge
