// The change-event convention (docs/formats/replica.md) and consistency tokens.
#include <charconv>
#include <string>

#include "converge/event.h"
#include "converge/replica.h"

namespace converge::replica {
namespace {

// A decimal without sign, leading '+', spaces or trailing text, that fits in 64 bits.
bool ParseDecimal(std::string_view text, uint64_t* out) {
  if (text.empty() || text.size() > 20) return false;
  for (char c : text) {
    if (c < '0' || c > '9') return false;
  }
  auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), *out);
  return ec == std::errc() && ptr == text.data() + text.size();
}

Status Bad(const Event& event, std::string_view why) {
  return InvalidArgumentError("change event '" + event.id() + "' (type '" + event.type() +
                              "'): " + std::string(why));
}

}  // namespace

Result<Change> ParseChangeEvent(const Event& event, int64_t fallback_time_micros) {
  Change change;
  const std::string& type = event.type();
  if (type == kUpsertType || type == "converge.store.put") {
    change.kind = ChangeKind::kUpsert;
  } else if (type == kDeleteType || type == "converge.store.delete" ||
             type == "converge.store.expire") {
    change.kind = ChangeKind::kDelete;
  } else if (type == kTruncateType) {
    change.kind = ChangeKind::kTruncate;
  } else {
    return Bad(event, "the type is not an upsert or a delete, nor a truncate (" +
                          std::string(kUpsertType) + ", " + std::string(kDeleteType) + ", " +
                          std::string(kTruncateType) + ", converge.store.put/delete/expire)");
  }
  if (change.kind != ChangeKind::kTruncate &&
      (!event.subject().has_value() || event.subject()->empty())) {
    return Bad(event, "no subject (the subject is the key)");
  }
  if (event.subject().has_value()) change.key = *event.subject();
  const Extension* version = event.FindExtension("version");
  if (version == nullptr) return Bad(event, "no version extension");
  if (!ParseDecimal(version->value, &change.version) || change.version == 0) {
    return Bad(event, "version '" + version->value + "' is not a decimal integer >= 1");
  }
  if (const Extension* c = event.FindExtension("collection"); c != nullptr) {
    if (c->value.empty()) return Bad(event, "empty collection extension");
    change.collection = c->value;
  }
  if (const Extension* s = event.FindExtension("commitseq"); s != nullptr) {
    if (!ParseDecimal(s->value, &change.commitseq) || change.commitseq == 0) {
      return Bad(event, "commitseq '" + s->value + "' is not a decimal integer >= 1");
    }
  }
  if (event.time().has_value()) {
    Result<int64_t> nanos = ParseRfc3339Nanos(*event.time());
    if (!nanos.ok()) return Bad(event, "time: " + std::string(nanos.status().message()));
    change.commit_time_micros = *nanos / 1000;
  } else {
    change.commit_time_micros = fallback_time_micros;
  }
  if (change.kind == ChangeKind::kUpsert) {
    switch (event.data_kind()) {
      case DataKind::kJson:
      case DataKind::kText:
        change.document = event.data();
        break;
      case DataKind::kNone:
        return Bad(event, "an upsert without data (the data is the document)");
      case DataKind::kBinary:
        return Bad(event, "binary data (the document must be JSON or text)");
    }
  }
  return change;
}

Result<Change> ParseChangeRecord(std::string_view record, int64_t record_timestamp_micros) {
  Result<Event> event = DecodeBinary(record);
  if (!event.ok()) {
    return Status(event.status().code(),
                  "not a CloudEvent record: " + std::string(event.status().message()));
  }
  return ParseChangeEvent(*event, record_timestamp_micros);
}

Result<Event> MakeChangeEvent(const Change& change, std::string_view source) {
  Event event;
  event.set_source(std::string(source));
  std::string id;
  if (!change.collection.empty()) id.append(change.collection).push_back('/');
  if (change.kind == ChangeKind::kTruncate) {
    id.append(std::to_string(change.version)).append("/truncate");
  } else {
    id.append(change.key).push_back('/');
    id.append(std::to_string(change.version));
  }
  event.set_id(std::move(id));
  event.set_type(std::string(change.kind == ChangeKind::kUpsert   ? kUpsertType
                             : change.kind == ChangeKind::kDelete ? kDeleteType
                                                                  : kTruncateType));
  if (!change.key.empty()) event.set_subject(change.key);
  event.SetExtension("version", std::to_string(change.version));
  if (!change.collection.empty()) event.SetExtension("collection", change.collection);
  if (change.commitseq != 0) event.SetExtension("commitseq", std::to_string(change.commitseq));
  if (!change.key.empty()) event.set_partitionkey(change.key);
  if (change.commit_time_micros != 0) {
    event.set_time(FormatRfc3339(change.commit_time_micros * 1000));
  }
  if (change.kind == ChangeKind::kUpsert) {
    event.set_datacontenttype("application/json");
    CONVERGE_RETURN_IF_ERROR(event.SetJsonData(change.document));
  }
  CONVERGE_RETURN_IF_ERROR(event.Validate());
  return event;
}

std::string EncodeToken(const ConsistencyToken& token) {
  std::string out = "ct1~";
  out.append(token.topic).push_back('~');
  out.append(std::to_string(token.partition)).push_back('~');
  out.push_back(token.kind == ConsistencyToken::Kind::kOffset ? 'o' : 'c');
  out.append(std::to_string(token.value));
  return out;
}

Result<ConsistencyToken> DecodeToken(std::string_view text) {
  const Status bad = InvalidArgumentError(
      "not a consistency token (expected the opaque string a write returned)");
  if (text.size() > 512 || text.substr(0, 4) != "ct1~") return bad;
  text.remove_prefix(4);
  const size_t a = text.find('~');
  if (a == std::string_view::npos) return bad;
  const size_t b = text.find('~', a + 1);
  if (b == std::string_view::npos) return bad;
  ConsistencyToken token;
  token.topic = std::string(text.substr(0, a));
  if (!ValidateTopicName(token.topic, token.topic.starts_with('_')).ok()) return bad;
  uint64_t partition = 0;
  if (!ParseDecimal(text.substr(a + 1, b - a - 1), &partition) || partition > 1024) return bad;
  token.partition = static_cast<uint32_t>(partition);
  std::string_view pos = text.substr(b + 1);
  if (pos.empty()) return bad;
  if (pos[0] == 'o') {
    token.kind = ConsistencyToken::Kind::kOffset;
  } else if (pos[0] == 'c') {
    token.kind = ConsistencyToken::Kind::kCommitSeq;
  } else {
    return bad;
  }
  if (!ParseDecimal(pos.substr(1), &token.value)) return bad;
  return token;
}

std::string_view OnMalformedName(OnMalformed m) {
  return m == OnMalformed::kStop ? "stop" : "skip";
}

Result<OnMalformed> ParseOnMalformed(std::string_view name) {
  if (name == "stop") return OnMalformed::kStop;
  if (name == "skip") return OnMalformed::kSkip;
  return InvalidArgumentError("on_malformed must be 'stop' or 'skip', not '" +
                              std::string(name) + "'");
}

}  // namespace converge::replica
