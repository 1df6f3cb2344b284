#include "store/feed.h"

#include <boost/json/serialize.hpp>
#include <boost/json/string.hpp>
#include <ctime>

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

std::string Rfc3339Millis(int64_t wall_ms) {
  const time_t secs = static_cast<time_t>(wall_ms / 1000);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[96];
  std::snprintf(buf, sizeof(buf), "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
                tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                static_cast<int>(wall_ms % 1000));
  return buf;
}

void AppendJsonString(std::string_view s, std::string* out) {
  *out += boost::json::serialize(boost::json::string(s.data(), s.size()));
}

void AppendMember(std::string_view name, std::string_view value, std::string* out) {
  out->push_back(',');
  AppendJsonString(name, out);
  out->push_back(':');
  AppendJsonString(value, out);
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

// CloudEvents 1.0, JSON structured mode.
Status AppendFeedRecords(const FeedTxn& txn, std::string_view source,
                         std::vector<FeedRecord>* out) {
  const std::string time = Rfc3339Millis(txn.wall_ms);
  const std::string seq = std::to_string(txn.seq);
  for (const WalOp& op : txn.ops) {
    FeedRecord rec;
    rec.id = FeedEventId(op.collection, op.key, txn.seq);
    rec.key.reserve(op.collection.size() + 1 + op.key.size());
    rec.key.append(op.collection).push_back('/');
    rec.key.append(op.key);
    rec.timestamp_micros = txn.wall_ms * 1000;
    std::string& v = rec.value;
    v.reserve(256 + (op.value ? op.value->size() : 0));
    v += "{\"specversion\":\"1.0\"";
    AppendMember("id", rec.id, &v);
    AppendMember("source", source, &v);
    AppendMember("type", EventType(op.kind), &v);
    AppendMember("subject", op.key, &v);
    AppendMember("time", time, &v);
    if (op.kind == OpKind::kPut) AppendMember("datacontenttype", "application/json", &v);
    AppendMember("collection", op.collection, &v);
    AppendMember("commitseq", seq, &v);
    AppendMember("partitionkey", rec.key, &v);
    AppendMember("version", seq, &v);
    if (op.kind == OpKind::kPut) {
      v += ",\"data\":";
      v += *op.value;
    }
    v.push_back('}');
    out->push_back(std::move(rec));
  }
  return Status::Ok();
}

}  // namespace converge::store_internal
