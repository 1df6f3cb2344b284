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

}  // namespace converge::store_internal
