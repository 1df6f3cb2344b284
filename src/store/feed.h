// The change feed's records: one CloudEvent per committed change (see converge/store.h).
// Thread-safety: pure functions.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "converge/store.h"
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

// The largest change-feed record (id + key + event) a document within `options` can make.
inline uint64_t FeedRecordBytesFor(const StoreOptions& options) {
  return options.max_document_bytes + 3ull * options.max_key_bytes + 4096;
}

// Appends `txns` (in commit order) to options.feed_topic of options.feed_log, whole
// transactions per Log::Append (at most feed_append_max_events events each, or one larger
// transaction), creating the topic on first use. *published: how many transactions are in
// the topic (a prefix of `txns`), also on failure. Shared by every Store implementation.
Status PublishFeedTxns(const StoreOptions& options, const std::vector<FeedTxn>& txns,
                       size_t* published);

// Where re-publication into options.feed_topic starts after a restart: the commit sequence
// number before the topic's last event (a crash may have kept only a prefix of the last
// append; the events already there are deduplicated by id), 0 for a missing or empty topic or
// an unreadable tail. FailedPrecondition for a topic the feed cannot use (partitions, record
// size).
Result<uint64_t> FeedCursorFromLog(const StoreOptions& options);

}  // namespace converge::store_internal
