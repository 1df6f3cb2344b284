#include "server/store_target.h"
#include "server/json_util.h"

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <boost/json/value.hpp>
#include <map>

namespace converge::server {

namespace json = boost::json;

namespace {

constexpr char kOwner[] = "converge-replica";
// Keys listed per page while loading positions and purging.
constexpr size_t kPage = 1000;
// Deletions per purge transaction (well below the store's max_transaction_ops).
constexpr size_t kPurgeChunk = 400;
// Changes per transaction of a bootstrap applied in pages (two operations each).
constexpr size_t kPageChanges = 400;
// The marker of a bootstrap in progress, in the bookkeeping collection.
constexpr char kBootstrapKey[] = "b";

Caller ReplicaCaller() { return Caller{kOwner, true}; }

struct Meta {
  uint64_t version = 0;
  bool deleted = false;
  uint32_t partition = 0;
  int64_t commit_us = 0;
  int64_t applied_us = 0;
};

std::string EncodeMeta(const Meta& m) {
  return "{\"v\":" + std::to_string(m.version) + ",\"d\":" + (m.deleted ? "true" : "false") +
         ",\"p\":" + std::to_string(m.partition) + ",\"c\":" + std::to_string(m.commit_us) +
         ",\"a\":" + std::to_string(m.applied_us) + "}";
}

int64_t I64(const json::object& o, const char* name) {
  const json::value* v = o.if_contains(name);
  return v != nullptr && v->is_number() ? v->to_number<int64_t>() : 0;
}


Result<Meta> DecodeMeta(const std::string& text) {
  CONVERGE_ASSIGN_OR_RETURN(json::object o, ParseStoredObject(text, "a replica row entry"));
  Meta m;
  m.version = StoredU64(o, "v");
  const json::value* d = o.if_contains("d");
  m.deleted = d != nullptr && d->is_bool() && d->as_bool();
  m.partition = static_cast<uint32_t>(StoredU64(o, "p"));
  m.commit_us = I64(o, "c");
  m.applied_us = I64(o, "a");
  return m;
}

replica::Position DecodePosition(uint32_t partition, const json::object& o) {
  replica::Position p;
  p.partition = partition;
  p.next_offset = StoredU64(o, "next_offset");
  p.commitseq = StoredU64(o, "commitseq");
  p.purge_watermark = StoredU64(o, "purge_watermark");
  return p;
}

std::string EncodePosition(const replica::Position& p, int64_t now_us) {
  return "{\"next_offset\":" + std::to_string(p.next_offset) +
         ",\"commitseq\":" + std::to_string(p.commitseq) +
         ",\"purge_watermark\":" + std::to_string(p.purge_watermark) +
         ",\"updated_us\":" + std::to_string(now_us) + "}";
}

// The document as the store keeps it: JSON as it is, anything else as a JSON string.
std::string AsJson(const std::string& document) {
  json::error_code ec;
  json::parse(document, ec);
  if (!ec) return document;
  return json::serialize(json::string_view(document.data(), document.size()));
}

// Get that answers nullopt for a missing document (or collection).
Result<std::optional<Document>> Find(Store& store, const std::string& collection,
                                     const std::string& key) {
  Result<Document> d = store.Get(collection, key);
  if (d.ok()) return std::optional<Document>(std::move(d).value());
  if (d.status().code() == StatusCode::kNotFound) return std::optional<Document>();
  return d.status();
}

class StoreTarget : public replica::Target {
 public:
  StoreTarget(Store& store, Env& env, std::string replica, std::string collection)
      : store_(store),
        env_(env),
        replica_(std::move(replica)),
        collection_(std::move(collection)),
        meta_(ReplicaMetaCollection(replica_)) {}

  Result<replica::TargetState> Load() override {
    replica::TargetState state;
    ListOptions list;
    list.prefix = "p/";
    list.limit = kPage;
    while (true) {
      CONVERGE_ASSIGN_OR_RETURN(ListResult page, store_.List(meta_, list));
      for (const Document& d : page.documents) {
        uint64_t partition = 0;
        try {
          partition = std::stoull(d.key.substr(2));
        } catch (...) {
          return DataLossError("replica '" + replica_ + "': a bad position key '" + d.key + "'");
        }
        CONVERGE_ASSIGN_OR_RETURN(json::object o, ParseStoredObject(d.value, "a replica position"));
        state.positions.push_back(DecodePosition(static_cast<uint32_t>(partition), o));
      }
      if (page.next_page_token.empty()) break;
      list.page_token = page.next_page_token;
    }
    return state;
  }

  Result<replica::ApplyOutcome> Apply(const replica::ApplyBatch& batch) override {
    const std::string pos_key = "p/" + std::to_string(batch.position.partition);
    CONVERGE_ASSIGN_OR_RETURN(std::optional<Document> pos, Find(store_, meta_, pos_key));
    replica::Position stored{batch.position.partition, 0, 0, 0};
    if (pos) {
      CONVERGE_ASSIGN_OR_RETURN(json::object o, ParseStoredObject(pos->value, "a replica position"));
      stored = DecodePosition(batch.position.partition, o);
    }
    if (stored.next_offset != batch.from_offset) {
      return AbortedError("replica '" + replica_ + "': the position is " +
                          std::to_string(stored.next_offset) + ", not " +
                          std::to_string(batch.from_offset) + " (another applier?)");
    }
    if (!pos) {
      // Nothing committed yet. A batch too large for one store transaction (a bootstrap
      // snapshot), or one after a bootstrap that did not finish, is applied in pages.
      CONVERGE_ASSIGN_OR_RETURN(std::optional<Document> marker,
                                Find(store_, meta_, kBootstrapKey));
      if (marker || batch.changes.size() > kPageChanges) return ApplyInPages(batch, marker);
    }
    replica::ApplyOutcome out;
    std::vector<WriteOp> ops;
    ops.reserve(batch.changes.size() * 2 + 1);
    for (const replica::Change* c : batch.changes) {
      CONVERGE_ASSIGN_OR_RETURN(std::optional<Document> entry, Find(store_, meta_, "v/" + c->key));
      std::optional<Meta> row;
      if (entry) {
        CONVERGE_ASSIGN_OR_RETURN(Meta m, DecodeMeta(entry->value));
        row = m;
      }
      const bool apply = row ? row->version < c->version : c->version > stored.purge_watermark;
      if (!apply) {
        ++(row ? out.stale : out.below_watermark);
        continue;
      }
      const bool del = c->kind == replica::ChangeKind::kDelete;
      if (!del) {
        ops.push_back(WriteOp::Put(collection_, c->key, AsJson(c->document)));
      } else if (row && !row->deleted) {
        ops.push_back(WriteOp::Delete(collection_, c->key));
      }
      ops.push_back(MetaOf(*c, batch));
      ++out.applied;
    }
    replica::Position to = batch.position;
    to.purge_watermark = stored.purge_watermark;  // an Apply keeps the target's watermark
    Precondition pre;
    if (pos) {
      pre.if_match = pos->etag;
    } else {
      pre.if_none_match_any = true;
    }
    ops.push_back(WriteOp::Put(meta_, pos_key, EncodePosition(to, batch.applied_time_micros),
                               std::move(pre)));
    Result<CommitResult> committed = store_.Commit(ReplicaCaller(), ops);
    if (!committed.ok()) {
      return Status(committed.status().code(),
                    "replica '" + replica_ + "': writing collection '" + collection_ +
                        "': " + std::string(committed.status().message()));
    }
    return out;
  }

  Result<uint64_t> PurgeTombstones(int64_t applied_before_micros) override {
    // The tombstones to remove, and per partition the highest version removed.
    std::vector<std::pair<std::string, Meta>> purge;
    ListOptions list;
    list.prefix = "v/";
    list.limit = kPage;
    while (true) {
      CONVERGE_ASSIGN_OR_RETURN(ListResult page, store_.List(meta_, list));
      for (const Document& d : page.documents) {
        CONVERGE_ASSIGN_OR_RETURN(Meta m, DecodeMeta(d.value));
        if (m.deleted && m.applied_us < applied_before_micros) purge.emplace_back(d.key, m);
      }
      if (page.next_page_token.empty()) break;
      list.page_token = page.next_page_token;
    }
    uint64_t removed = 0;
    for (size_t at = 0; at < purge.size(); at += kPurgeChunk) {
      std::map<uint32_t, uint64_t> highest;
      std::vector<WriteOp> ops;
      for (size_t i = at; i < purge.size() && i < at + kPurgeChunk; ++i) {
        ops.push_back(WriteOp::Delete(meta_, purge[i].first));
        uint64_t& h = highest[purge[i].second.partition];
        h = std::max(h, purge[i].second.version);
      }
      // Each chunk raises the watermarks it removed tombstones under, in its transaction.
      for (const auto& [partition, version] : highest) {
        const std::string pos_key = "p/" + std::to_string(partition);
        CONVERGE_ASSIGN_OR_RETURN(std::optional<Document> pos, Find(store_, meta_, pos_key));
        replica::Position p{partition, 0, 0, 0};
        Precondition pre;
        if (pos) {
          CONVERGE_ASSIGN_OR_RETURN(json::object o, ParseStoredObject(pos->value, "a replica position"));
          p = DecodePosition(partition, o);
          pre.if_match = pos->etag;
        } else {
          pre.if_none_match_any = true;
        }
        p.purge_watermark = std::max(p.purge_watermark, version);
        ops.push_back(WriteOp::Put(meta_, pos_key, EncodePosition(p, env_.clock().NowWallMicros()),
                                   std::move(pre)));
      }
      CONVERGE_ASSIGN_OR_RETURN(CommitResult c, store_.Commit(ReplicaCaller(), ops));
      (void)c;
      removed += std::min(kPurgeChunk, purge.size() - at);
    }
    return removed;
  }

 private:
  Status CommitOps(const std::vector<WriteOp>& ops) {
    Result<CommitResult> committed = store_.Commit(ReplicaCaller(), ops);
    if (!committed.ok()) {
      return Status(committed.status().code(),
                    "replica '" + replica_ + "': bootstrapping collection '" + collection_ +
                        "': " + std::string(committed.status().message()));
    }
    return Status::Ok();
  }

  // Removes every document of `collection` (with `prefix`), kPurgeChunk per transaction.
  Status Wipe(const std::string& collection, const std::string& prefix) {
    while (true) {
      ListOptions list;
      list.prefix = prefix;
      list.limit = kPurgeChunk;
      Result<ListResult> page = store_.List(collection, list);
      if (!page.ok()) {
        if (page.status().code() == StatusCode::kNotFound) return Status::Ok();
        return page.status();
      }
      if (page->documents.empty()) return Status::Ok();
      std::vector<WriteOp> ops;
      for (const Document& d : page->documents) ops.push_back(WriteOp::Delete(collection, d.key));
      CONVERGE_RETURN_IF_ERROR(CommitOps(ops));
    }
  }

  // A first batch larger than one store transaction (docs/formats/replica.md, "A store
  // collection as the target"): the marker "b" goes first, so the replica answers as
  // bootstrapping until the last page, which commits the position and removes the marker in
  // one transaction. A marker found here is an earlier bootstrap that did not finish: what it
  // wrote is removed first (it may list keys the new snapshot no longer has), so a crash at
  // any point restarts the bootstrap from a clean copy.
  Result<replica::ApplyOutcome> ApplyInPages(const replica::ApplyBatch& batch,
                                             std::optional<Document> marker) {
    const std::string body = "{\"next_offset\":" + std::to_string(batch.position.next_offset) +
                             ",\"started_us\":" + std::to_string(batch.applied_time_micros) +
                             "}";
    if (marker) {
      CONVERGE_RETURN_IF_ERROR(Wipe(meta_, "v/"));
      CONVERGE_RETURN_IF_ERROR(Wipe(collection_, ""));
    }
    {
      // If-Match / If-None-Match: a second applier of the same replica fails here.
      WriteOp put = WriteOp::Put(meta_, kBootstrapKey, body);
      if (marker) {
        put.precondition.if_match = marker->etag;
      } else {
        put.precondition.if_none_match_any = true;
      }
      CONVERGE_RETURN_IF_ERROR(CommitOps({put}));
    }
    if (!marker) {
      // No marker before: nothing but an unfinished bootstrap of an older server could have
      // left entries, and none may stay.
      CONVERGE_RETURN_IF_ERROR(Wipe(meta_, "v/"));
      CONVERGE_RETURN_IF_ERROR(Wipe(collection_, ""));
    }
    replica::ApplyOutcome out;
    const std::string pos_key = "p/" + std::to_string(batch.position.partition);
    size_t at = 0;
    do {
      std::vector<WriteOp> ops;
      const size_t end = std::min(batch.changes.size(), at + kPageChanges);
      for (; at < end; ++at) {
        const replica::Change* c = batch.changes[at];
        // The copy is empty and each key comes once per batch: only the watermark (0 for a
        // copy that never committed) can refuse a change.
        if (c->version == 0) {
          ++out.below_watermark;
          continue;
        }
        const bool del = c->kind == replica::ChangeKind::kDelete;
        if (!del) ops.push_back(WriteOp::Put(collection_, c->key, AsJson(c->document)));
        ops.push_back(MetaOf(*c, batch));
        ++out.applied;
      }
      if (at == batch.changes.size()) {
        // The last page: the position moves and the marker goes, together.
        replica::Position to = batch.position;
        to.purge_watermark = 0;
        WriteOp put = WriteOp::Put(meta_, pos_key, EncodePosition(to, batch.applied_time_micros));
        put.precondition.if_none_match_any = true;
        ops.push_back(std::move(put));
        ops.push_back(WriteOp::Delete(meta_, kBootstrapKey));
      }
      CONVERGE_RETURN_IF_ERROR(CommitOps(ops));
    } while (at < batch.changes.size());
    return out;
  }

  // The bookkeeping entry of an applied change: its version, whether it deletes, where and
  // when it came from.
  WriteOp MetaOf(const replica::Change& c, const replica::ApplyBatch& batch) const {
    Meta m;
    m.version = c.version;
    m.deleted = c.kind == replica::ChangeKind::kDelete;
    m.partition = batch.position.partition;
    m.commit_us = c.commit_time_micros;
    m.applied_us = batch.applied_time_micros;
    return WriteOp::Put(meta_, "v/" + c.key, EncodeMeta(m));
  }

  Store& store_;
  Env& env_;
  const std::string replica_;
  const std::string collection_;
  const std::string meta_;
};

// Creates `name` owned by the replica, or checks that it is.
Status EnsureCollection(Store& store, const std::string& name) {
  Result<CollectionInfo> info = store.DescribeCollection(name);
  if (info.ok()) {
    if (info->config.owner != kOwner) {
      return FailedPreconditionError("collection '" + name + "' exists and is owned by '" +
                                     info->config.owner +
                                     "': a replica copies into a collection "
                                     "of its own (choose another target.store_collection)");
    }
    return Status::Ok();
  }
  if (info.status().code() != StatusCode::kNotFound) return info.status();
  CollectionConfig config;
  config.owner = kOwner;
  Status created = store.CreateCollection(ReplicaCaller(), name, config);
  if (created.code() == StatusCode::kAlreadyExists) return EnsureCollection(store, name);
  return created;
}

}  // namespace

std::string ReplicaMetaCollection(const std::string& replica) {
  return "converge-replica." + replica;
}

Status ValidateStoreTarget(const std::string& replica, const std::string& collection) {
  CONVERGE_RETURN_IF_ERROR(Store::ValidateCollectionName(collection));
  if (collection.starts_with("converge-replica.")) {
    return InvalidArgumentError(
        "collection names starting with 'converge-replica.' are the "
        "replicas' bookkeeping");
  }
  return Store::ValidateCollectionName(ReplicaMetaCollection(replica));
}

Result<std::unique_ptr<replica::Target>> NewStoreTarget(Store& store, Env& env,
                                                        const std::string& replica,
                                                        const std::string& collection,
                                                        const std::string& source_topic) {
  CONVERGE_RETURN_IF_ERROR(ValidateStoreTarget(replica, collection));
  const std::string meta = ReplicaMetaCollection(replica);
  CONVERGE_RETURN_IF_ERROR(EnsureCollection(store, meta));
  CONVERGE_RETURN_IF_ERROR(EnsureCollection(store, collection));
  std::string record =
      "{\"source\":" +
      json::serialize(json::string_view(source_topic.data(), source_topic.size())) +
      ",\"collection\":" +
      json::serialize(json::string_view(collection.data(), collection.size())) + "}";
  CONVERGE_ASSIGN_OR_RETURN(std::optional<Document> r, Find(store, meta, "r"));
  if (r) {
    CONVERGE_ASSIGN_OR_RETURN(json::object o, ParseStoredObject(r->value, "the replica's record"));
    if (json::serialize(o) != json::serialize(json::parse(record))) {
      return FailedPreconditionError("replica '" + replica + "' was set up as " + r->value +
                                     ", not " + record + ": a re-pointed replica needs a new name");
    }
  } else {
    WriteOp put = WriteOp::Put(meta, "r", record);
    put.precondition.if_none_match_any = true;
    CONVERGE_ASSIGN_OR_RETURN(CommitResult c, store.Commit(ReplicaCaller(), {&put, 1}));
    (void)c;
  }
  return std::unique_ptr<replica::Target>(new StoreTarget(store, env, replica, collection));
}

Result<std::optional<replica::Row>> ReadStoreTargetRow(Store& store, const std::string& replica,
                                                       const std::string& collection,
                                                       const std::string& key) {
  CONVERGE_ASSIGN_OR_RETURN(std::optional<Document> bootstrapping,
                            Find(store, ReplicaMetaCollection(replica), kBootstrapKey));
  if (bootstrapping) {
    return UnavailableError("replica '" + replica +
                            "' is bootstrapping from a snapshot of its source: its copy is "
                            "not complete yet");
  }
  CONVERGE_ASSIGN_OR_RETURN(std::optional<Document> entry,
                            Find(store, ReplicaMetaCollection(replica), "v/" + key));
  if (!entry) return std::optional<replica::Row>();
  CONVERGE_ASSIGN_OR_RETURN(Meta m, DecodeMeta(entry->value));
  replica::Row row;
  row.source_partition = m.partition;
  row.version = m.version;
  row.deleted = m.deleted;
  row.commit_time_micros = m.commit_us;
  row.applied_time_micros = m.applied_us;
  if (!m.deleted) {
    CONVERGE_ASSIGN_OR_RETURN(std::optional<Document> doc, Find(store, collection, key));
    if (!doc)
      return DataLossError("replica '" + replica + "': key '" + key.substr(0, 200) +
                           "' has an entry but no document");
    row.document = std::move(doc->value);
  }
  return std::optional<replica::Row>(std::move(row));
}

Status ScanStoreTarget(Store& store, const std::string& replica,
                       const std::function<void(const std::string& key, uint64_t version)>& put) {
  ListOptions list;
  list.prefix = "v/";
  list.limit = kPage;
  while (true) {
    Result<ListResult> page = store.List(ReplicaMetaCollection(replica), list);
    if (!page.ok()) {
      if (page.status().code() == StatusCode::kNotFound) return Status::Ok();
      return page.status();
    }
    for (const Document& d : page->documents) {
      CONVERGE_ASSIGN_OR_RETURN(Meta m, DecodeMeta(d.value));
      if (!m.deleted) put(d.key.substr(2), m.version);
    }
    if (page->next_page_token.empty()) return Status::Ok();
    list.page_token = page->next_page_token;
  }
}

Result<bool> RepairStoreTargetRow(Store& store, const std::string& replica,
                                  const std::string& collection, const std::string& key,
                                  std::optional<uint64_t> copy_version,
                                  const std::optional<Document>& now, int64_t now_us) {
  const std::string meta = ReplicaMetaCollection(replica);
  CONVERGE_ASSIGN_OR_RETURN(std::optional<Document> pos, Find(store, meta, "p/0"));
  if (!pos) return false;  // nothing applied yet: the applier's first batch is not fenced
  CONVERGE_ASSIGN_OR_RETURN(std::optional<Document> entry, Find(store, meta, "v/" + key));
  std::optional<Meta> row;
  if (entry) {
    CONVERGE_ASSIGN_OR_RETURN(Meta m, DecodeMeta(entry->value));
    row = m;
  }
  const bool gated_upsert = now && (!copy_version || now->version > *copy_version);
  if (gated_upsert) {
    if (row && row->version >= now->version) return false;  // the gate (tombstones too)
  } else if (!row || row->deleted || row->version != copy_version) {
    return false;  // no longer the entry the run compared
  }
  std::vector<WriteOp> ops;
  ops.push_back(WriteOp::Put(meta, "p/0", pos->value, Precondition::IfMatch(pos->etag)));
  const Precondition same = entry ? Precondition::IfMatch(entry->etag) : Precondition::CreateOnly();
  if (now) {
    ops.push_back(WriteOp::Put(collection, key, AsJson(now->value)));
    Meta m;
    m.version = now->version;
    m.commit_us = now_us;
    m.applied_us = now_us;
    ops.push_back(WriteOp::Put(meta, "v/" + key, EncodeMeta(m), same));
  } else {
    // As a purged tombstone: neither a document nor an entry.
    ops.push_back(WriteOp::Delete(collection, key));
    ops.push_back(WriteOp::Delete(meta, "v/" + key, same));
  }
  Result<CommitResult> committed = store.Commit(ReplicaCaller(), ops);
  if (committed.ok()) return true;
  const StatusCode code = committed.status().code();
  if (code == StatusCode::kAborted || code == StatusCode::kAlreadyExists ||
      code == StatusCode::kNotFound) {
    return false;  // the position or the entry moved meanwhile
  }
  return committed.status();
}

}  // namespace converge::server
