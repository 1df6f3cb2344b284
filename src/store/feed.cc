#include "store/feed.h"

#include "converge/event.h"

namespace converge::store_internal {
namespace {

std::string_view EventType(OpKind kind) {
  switch (kind) {
    case OpKind::kPut:
      return "converge.store.put";
    case OpKind::kDelete:
      return "converge.store.delete";
    case OpKind::kExpire:
      return "converge.store.expire";
  }
  return "converge.store.unknown";
}

}  // namespace

std::string FeedEventId(std::string_view collection, std::string_view key, uint64_t seq) {
  std::string id;
  id.reserve(collection.size() + key.size() + 22);
  id.append(collection).push_back('/');
  id.append(key).push_back('/');
  id += std::to_string(seq);
  return id;
}

bool SeqFromFeedEventId(std::string_view id, uint64_t* seq) {
  const size_t slash = id.rfind('/');
  if (slash == std::string_view::npos || slash + 1 == id.size()) return false;
  uint64_t v = 0;
  for (char c : id.substr(slash + 1)) {
    if (c < '0' || c > '9') return false;
    const uint64_t d = static_cast<uint64_t>(c - '0');
    if (v > (UINT64_MAX - d) / 10) return false;
    v = v * 10 + d;
  }
  *seq = v;
  return true;
}

// CloudEvents 1.0 in the binary storage form, as every converge topic holds events.
Status AppendFeedRecords(const FeedTxn& txn, std::string_view source,
                         std::vector<FeedRecord>* out) {
  const std::string time = FormatRfc3339(txn.wall_ms * 1'000'000);
  const std::string seq = std::to_string(txn.seq);
  Event event;
  event.set_source(std::string(source));
  event.set_time(time);
  event.SetExtension("commitseq", seq);
  event.SetExtension("version", seq);
  for (const WalOp& op : txn.ops) {
    FeedRecord rec;
    rec.id = FeedEventId(op.collection, op.key, txn.seq);
    rec.key.reserve(op.collection.size() + 1 + op.key.size());
    rec.key.append(op.collection).push_back('/');
    rec.key.append(op.key);
    rec.timestamp_micros = txn.wall_ms * 1000;
    event.set_id(rec.id);
    event.set_type(std::string(EventType(op.kind)));
    event.set_subject(op.key);
    event.SetExtension("collection", op.collection);
    event.set_partitionkey(rec.key);
    if (op.kind == OpKind::kPut) {
      event.set_datacontenttype("application/json");
      CONVERGE_RETURN_IF_ERROR(event.SetJsonData(*op.value, kMaxFeedJsonDepth));
    } else {
      event.set_datacontenttype(std::nullopt);
      event.ClearData();
    }
    CONVERGE_RETURN_IF_ERROR(EncodeBinary(event, &rec.value));
    out->push_back(std::move(rec));
  }
  return Status::Ok();
}

Status PublishFeedTxns(const StoreOptions& opt_, const std::vector<FeedTxn>& txns,
                       size_t* published) {
  std::vector<FeedRecord> records;
  std::vector<RecordView> views;
  size_t i = 0;
  while (i < txns.size()) {
    records.clear();
    size_t j = i;
    // Whole transactions per Append, so that each one lands atomically.
    while (j < txns.size() &&
           (j == i || records.size() + txns[j].ops.size() <= opt_.feed_append_max_events)) {
      CONVERGE_RETURN_IF_ERROR(AppendFeedRecords(txns[j], opt_.feed_source, &records));
      ++j;
    }
    views.clear();
    views.reserve(records.size());
    for (const FeedRecord& r : records) {
      views.push_back(RecordView{r.id, r.key, r.value, r.timestamp_micros});
    }
    Result<std::vector<AppendResult>> res = opt_.feed_log->Append(opt_.feed_topic, views);
    if (!res.ok() && res.status().code() == StatusCode::kNotFound) {
      // First publication (or the topic was deleted): create it, one partition.
      const TopicOptions topt = StoreFeedTopicOptions(opt_);
      Status created = opt_.feed_log->CreateTopic(opt_.feed_topic, topt);
      if (!created.ok() && created.code() != StatusCode::kAlreadyExists) {
        return created.WithContext("creating the change-feed topic");
      }
      res = opt_.feed_log->Append(opt_.feed_topic, views);
    }
    if (!res.ok()) return res.status().WithContext("publishing the store's change feed");
    *published = j;
    i = j;
  }
  return Status::Ok();
}

Result<uint64_t> FeedCursorFromLog(const StoreOptions& opt_) {
  Log& log = *opt_.feed_log;
  Result<TopicInfo> info = log.DescribeTopic(opt_.feed_topic);
  const uint64_t needed = FeedRecordBytesFor(opt_);
  if (!info.ok()) {
    // Created by the first publication (PublishTxns): an unused store adds no topic.
    if (info.status().code() != StatusCode::kNotFound) return info.status();
    return uint64_t{0};
  }
  if (info->partitions.size() != 1) {
    return FailedPreconditionError("change-feed topic '" + opt_.feed_topic +
                                   "' must have exactly one partition");
  }
  if (info->options.max_record_bytes < needed) {
    return FailedPreconditionError("change-feed topic '" + opt_.feed_topic +
                                   "' has max_record_bytes " +
                                   std::to_string(info->options.max_record_bytes) +
                                   ", the store needs " + std::to_string(needed));
  }
  const PartitionInfo& p = info->partitions[0];
  if (p.end_offset == 0 || p.end_offset <= p.start_offset) return uint64_t{0};
  Result<ReadBatch> batch = log.Read(opt_.feed_topic, 0, p.end_offset - 1, 1, 1);
  if (!batch.ok() || batch->records.empty()) {
    // A damaged or trimmed tail: fall back on the snapshot's cursor; re-published events are
    // deduplicated by id.
    return uint64_t{0};
  }
  uint64_t seq = 0;
  if (!SeqFromFeedEventId(batch->records.back().id, &seq) || seq == 0) return uint64_t{0};
  // A crash may have kept only a prefix of the last append: publish that transaction again
  // (its events already there are deduplicated by id).
  return seq - 1;
}

}  // namespace converge::store_internal
