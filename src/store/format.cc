#include "store/format.h"

#include <cstdio>
#include <cstring>

#include "core/record_log.h"

namespace converge::store_internal {
namespace {

size_t BeginFrame(std::string* out, RecordType type, uint64_t seq) {
  const size_t start = internal::record_log::BeginFrame(out);
  out->push_back(static_cast<char>(type));
  PutVarint(out, seq);
  return start;
}

void FinishFrame(std::string* out, size_t start) { internal::record_log::FinishFrame(out, start); }

bool DecodeOp(Reader* r, WalOp* op) {
  uint8_t kind = 0;
  if (!r->GetU8(&kind)) return false;
  if (kind < 1 || kind > 3) return false;
  op->kind = static_cast<OpKind>(kind);
  if (!r->GetString(&op->collection) || !r->GetString(&op->key)) return false;
  if (op->kind == OpKind::kPut) {
    std::string_view value;
    uint64_t expires = 0;
    if (!r->GetString(&value) || !r->GetVarint(&expires)) return false;
    if (expires > static_cast<uint64_t>(INT64_MAX)) return false;
    op->value = std::make_shared<const std::string>(value);
    op->expires_at_ms = static_cast<int64_t>(expires);
  }
  return true;
}

void EncodeDoc(const std::string& key, const StoredDoc& doc, std::string* out) {
  PutString(out, key);
  PutString(out, *doc.value);
  PutVarint(out, doc.version);
  PutVarint(out, static_cast<uint64_t>(doc.expires_at_ms));
}

bool ParseNumberedName(std::string_view name, std::string_view prefix, std::string_view suffix,
                       uint64_t* n) {
  if (name.size() != prefix.size() + 20 + suffix.size()) return false;
  if (name.substr(0, prefix.size()) != prefix) return false;
  if (name.substr(name.size() - suffix.size()) != suffix) return false;
  uint64_t v = 0;
  for (char c : name.substr(prefix.size(), 20)) {
    if (c < '0' || c > '9') return false;
    const uint64_t d = static_cast<uint64_t>(c - '0');
    if (v > (UINT64_MAX - d) / 10) return false;
    v = v * 10 + d;
  }
  *n = v;
  return true;
}

std::string NumberedName(std::string_view prefix, uint64_t n, std::string_view suffix) {
  char digits[32];
  std::snprintf(digits, sizeof(digits), "%020llu", static_cast<unsigned long long>(n));
  std::string out(prefix);
  out += digits;
  out += suffix;
  return out;
}

}  // namespace

void AppendTxnRecord(uint64_t seq, int64_t wall_ms, const std::vector<WalOp>& ops,
                     std::string* out) {
  const size_t start = BeginFrame(out, RecordType::kTxn, seq);
  PutVarint(out, static_cast<uint64_t>(wall_ms));
  PutVarint(out, ops.size());
  for (const WalOp& op : ops) {
    out->push_back(static_cast<char>(op.kind));
    PutString(out, op.collection);
    PutString(out, op.key);
    if (op.kind == OpKind::kPut) {
      PutString(out, *op.value);
      PutVarint(out, static_cast<uint64_t>(op.expires_at_ms));
    }
  }
  FinishFrame(out, start);
}

void AppendPutCollectionRecord(uint64_t seq, const std::string& name,
                               const CollectionConfig& config, std::string* out) {
  const size_t start = BeginFrame(out, RecordType::kPutCollection, seq);
  PutString(out, name);
  EncodeConfig(config, out);
  FinishFrame(out, start);
}

void AppendDropCollectionRecord(uint64_t seq, const std::string& name, std::string* out) {
  const size_t start = BeginFrame(out, RecordType::kDropCollection, seq);
  PutString(out, name);
  FinishFrame(out, start);
}

bool DecodeWalPayload(std::string_view payload, WalRecord* rec) {
  Reader r(payload);
  uint8_t type = 0;
  if (!r.GetU8(&type) || !r.GetVarint(&rec->seq)) return false;
  switch (type) {
    case static_cast<uint8_t>(RecordType::kTxn): {
      rec->type = RecordType::kTxn;
      uint64_t wall = 0, n = 0;
      if (!r.GetVarint(&wall) || !r.GetVarint(&n)) return false;
      if (wall > static_cast<uint64_t>(INT64_MAX) || n > payload.size()) return false;
      rec->wall_ms = static_cast<int64_t>(wall);
      rec->ops.clear();
      rec->ops.resize(n);
      for (auto& op : rec->ops) {
        if (!DecodeOp(&r, &op)) return false;
      }
      break;
    }
    case static_cast<uint8_t>(RecordType::kPutCollection):
      rec->type = RecordType::kPutCollection;
      if (!r.GetString(&rec->collection) || !DecodeConfig(&r, &rec->config)) return false;
      break;
    case static_cast<uint8_t>(RecordType::kDropCollection):
      rec->type = RecordType::kDropCollection;
      if (!r.GetString(&rec->collection)) return false;
      break;
    default:
      return false;
  }
  return r.ok() && r.done();
}

void EncodeConfig(const CollectionConfig& config, std::string* out) {
  PutString(out, config.owner);
  PutVarint(out, config.writers.size());
  for (const auto& w : config.writers) PutString(out, w);
  PutVarint(out, static_cast<uint64_t>(config.default_ttl_ms));
  PutVarint(out, config.max_document_bytes);
  PutVarint(out, config.merge_fields.size());
  for (const auto& [field, fn] : config.merge_fields) {
    PutString(out, field);
    PutString(out, fn);
  }
}

bool DecodeConfig(Reader* r, CollectionConfig* config) {
  *config = CollectionConfig{};
  uint64_t n = 0;
  if (!r->GetString(&config->owner) || !r->GetVarint(&n) || n > r->remaining()) return false;
  config->writers.resize(n);
  for (auto& w : config->writers) {
    if (!r->GetString(&w)) return false;
  }
  uint64_t ttl = 0, max_doc = 0;
  if (!r->GetVarint(&ttl) || !r->GetVarint(&max_doc) || !r->GetVarint(&n)) return false;
  if (ttl > static_cast<uint64_t>(INT64_MAX) || max_doc > UINT32_MAX || n > r->remaining()) {
    return false;
  }
  config->default_ttl_ms = static_cast<int64_t>(ttl);
  config->max_document_bytes = static_cast<uint32_t>(max_doc);
  for (uint64_t i = 0; i < n; ++i) {
    std::string field, fn;
    if (!r->GetString(&field) || !r->GetString(&fn)) return false;
    config->merge_fields.emplace(std::move(field), std::move(fn));
  }
  return true;
}

std::string WalFileName(uint64_t first_seq) { return NumberedName("wal-", first_seq, ".log"); }
std::string SnapshotFileName(uint64_t seq) { return NumberedName("snapshot-", seq, ""); }
bool ParseWalFileName(std::string_view name, uint64_t* first_seq) {
  return ParseNumberedName(name, "wal-", ".log", first_seq);
}
bool ParseSnapshotFileName(std::string_view name, uint64_t* seq) {
  return ParseNumberedName(name, "snapshot-", "", seq);
}

Status WriteSnapshot(WritableFile* file, const SnapshotHeader& header, const Collections& state,
                     size_t chunk_bytes) {
  std::string buf;
  buf.reserve(chunk_bytes + 4096);
  uint32_t crc = 0;
  auto flush = [&]() -> Status {
    crc = Crc32cExtend(crc, buf.data(), buf.size());
    Status s = file->Append(buf);
    buf.clear();
    return s;
  };
  buf.append(kSnapshotMagic);
  PutVarint(&buf, header.seq);
  PutVarint(&buf, header.feed_cursor);
  PutVarint(&buf, state.size());
  for (const auto& [name, coll] : state) {
    PutString(&buf, name);
    EncodeConfig(coll.config, &buf);
    PutVarint(&buf, coll.created_seq);
    PutVarint(&buf, coll.docs.size());
    for (const auto& [key, doc] : coll.docs) {
      EncodeDoc(key, doc, &buf);
      if (buf.size() >= chunk_bytes) CONVERGE_RETURN_IF_ERROR(flush());
    }
  }
  CONVERGE_RETURN_IF_ERROR(flush());
  std::string tail;
  PutFixed32(&tail, crc);
  CONVERGE_RETURN_IF_ERROR(file->Append(tail));
  return file->Sync();
}

Status ReadSnapshot(std::string_view bytes, std::string_view name, SnapshotHeader* header,
                    Collections* state) {
  auto damaged = [&](std::string_view why) {
    return DataLossError("snapshot " + std::string(name) + " is damaged: " + std::string(why));
  };
  if (bytes.size() < kSnapshotMagic.size() + 4) return damaged("too short");
  const std::string_view body = bytes.substr(0, bytes.size() - 4);
  if (Crc32cExtend(0, body.data(), body.size()) != DecodeFixed32(bytes.data() + body.size())) {
    return damaged("checksum mismatch");
  }
  if (body.substr(0, kSnapshotMagic.size()) != kSnapshotMagic) return damaged("bad magic");
  Reader r(body.substr(kSnapshotMagic.size()));
  uint64_t ncoll = 0;
  if (!r.GetVarint(&header->seq) || !r.GetVarint(&header->feed_cursor) || !r.GetVarint(&ncoll)) {
    return damaged("bad header");
  }
  state->clear();
  for (uint64_t i = 0; i < ncoll; ++i) {
    std::string cname;
    CollectionState coll;
    uint64_t ndocs = 0;
    if (!r.GetString(&cname) || !DecodeConfig(&r, &coll.config) ||
        !r.GetVarint(&coll.created_seq) || !r.GetVarint(&ndocs)) {
      return damaged("bad collection");
    }
    auto hint = coll.docs.end();
    for (uint64_t d = 0; d < ndocs; ++d) {
      std::string key;
      std::string_view value;
      StoredDoc doc;
      uint64_t expires = 0;
      if (!r.GetString(&key) || !r.GetString(&value) || !r.GetVarint(&doc.version) ||
          !r.GetVarint(&expires) || expires > static_cast<uint64_t>(INT64_MAX)) {
        return damaged("bad document");
      }
      doc.value = std::make_shared<const std::string>(value);
      doc.expires_at_ms = static_cast<int64_t>(expires);
      coll.bytes += key.size() + value.size();
      hint = coll.docs.emplace_hint(hint, std::move(key), std::move(doc));
    }
    state->emplace(std::move(cname), std::move(coll));
  }
  if (!r.ok() || !r.done()) return damaged("trailing bytes");
  return Status::Ok();
}

}  // namespace converge::store_internal
