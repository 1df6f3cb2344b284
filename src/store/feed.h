// The change feed's records: one CloudEvent per committed change (see converge/store.h).
// Thread-safety: pure functions.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "store/format.h"

namespace converge::store_internal {

// A committed transaction waiting to be published.
struct FeedTxn {
  uint64_t seq = 0;
  int64_t wall_ms = 0;
  std::vector<WalOp> ops;
};

// One log record: id for idempotent publish, partition key, encoded event.
struct FeedRecord {
  std::string id;
  std::string key;
  std::string value;
  int64_t timestamp_micros = 0;
};

// Documents were validated with StoreOptions::max_json_depth, which the feed must accept too.
inline constexpr uint32_t kMaxFeedJsonDepth = 1024;

// "<collection>/<key>/<seq>".
std::string FeedEventId(std::string_view collection, std::string_view key, uint64_t seq);
// The commit sequence number at the end of a feed event id; false if it has none.
bool SeqFromFeedEventId(std::string_view id, uint64_t* seq);

// Appends the records of `txn` to `out`, in the order of its ops.
Status AppendFeedRecords(const FeedTxn& txn, std::string_view source, std::vector<FeedRecord>* out);

}  // namespace converge::store_internal
