// Topic names, option validation and the topic.json metadata file.
// Thread-safety: pure functions.
#pragma once

#include <string>
#include <string_view>

#include "converge/log.h"
#include "converge/status.h"

namespace converge::internal {

// Limits on TopicOptions (docs/formats/log.md).
inline constexpr uint32_t kMaxPartitions = 1024;
inline constexpr uint64_t kMinSegmentBytes = 1024;
inline constexpr uint64_t kMaxSegmentBytes = 1ull << 31;
inline constexpr uint32_t kMaxRecordBytesLimit = 64u << 20;
inline constexpr uint64_t kMaxDedupIds = 100'000'000;
inline constexpr int64_t kMaxSyncIntervalMs = 3'600'000;

// Declared in converge/log.h (callers outside the log check topics the same way).
using converge::ValidateTopicName;
using converge::ValidateTopicOptions;

// The content of topic.json for `name` and `options`.
std::string EncodeTopicMeta(const std::string& name, const TopicOptions& options);
// Parses topic.json; DataLoss if it is not a valid version-1 document.
Status DecodeTopicMeta(std::string_view json, std::string* name, TopicOptions* options);

}  // namespace converge::internal
