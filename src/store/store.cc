#include <algorithm>
#include <charconv>
#include <set>
#include <utility>

#include "store/store_impl.h"

namespace converge {

using store_internal::StoreImpl;

// ---------------------------------------------------------------------------------------
// Public helpers

std::string ETagForVersion(uint64_t version) {
  char buf[24];
  buf[0] = '"';
  auto [end, ec] = std::to_chars(buf + 1, buf + sizeof(buf) - 1, version);
  *end++ = '"';
  return std::string(buf, end);
}

Result<uint64_t> VersionFromETag(std::string_view etag) {
  if (etag.size() < 3 || etag.front() != '"' || etag.back() != '"' || etag.size() > 22) {
    return InvalidArgumentError("malformed ETag '" + std::string(etag.substr(0, 64)) +
                                "': expected a quoted version such as \"42\"");
  }
  const std::string_view digits = etag.substr(1, etag.size() - 2);
  uint64_t v = 0;
  auto [ptr, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), v);
  if (ec != std::errc() || ptr != digits.data() + digits.size() || digits[0] == '+') {
    return InvalidArgumentError("malformed ETag '" + std::string(etag) +
                                "': expected a quoted version such as \"42\"");
  }
  return v;
}

WriteOp WriteOp::Put(std::string collection, std::string key, std::string value, Precondition pre,
                     int64_t ttl_ms) {
  WriteOp op;
  op.kind = Kind::kPut;
  op.collection = std::move(collection);
  op.key = std::move(key);
  op.value = std::move(value);
  op.precondition = std::move(pre);
  op.ttl_ms = ttl_ms;
  return op;
}

WriteOp WriteOp::Delete(std::string collection, std::string key, Precondition pre) {
  WriteOp op;
  op.kind = Kind::kDelete;
  op.collection = std::move(collection);
  op.key = std::move(key);
  op.precondition = std::move(pre);
  return op;
}

WriteOp WriteOp::Check(std::string collection, std::string key, Precondition pre) {
  WriteOp op;
  op.kind = Kind::kCheck;
  op.collection = std::move(collection);
  op.key = std::move(key);
  op.precondition = std::move(pre);
  return op;
}

Status Store::ValidateCollectionName(std::string_view name) {
  if (name.empty() || name.size() > 128) {
    return InvalidArgumentError("collection names have 1 to 128 characters");
  }
  if (name[0] == '.' || name[0] == '_' || name[0] == '-') {
    return InvalidArgumentError("collection name '" + std::string(name) +
                                "' must not start with '.', '_' or '-'");
  }
  for (char c : name) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '.' || c == '_' || c == '-';
    if (!ok) {
      return InvalidArgumentError("collection name '" + std::string(name.substr(0, 128)) +
                                  "' may only contain A-Z a-z 0-9 . _ -");
    }
  }
  return Status::Ok();
}

Status Store::ValidateKey(std::string_view key, uint32_t max_key_bytes) {
  if (key.empty()) return InvalidArgumentError("document key is empty");
  if (key.size() > max_key_bytes) {
    return InvalidArgumentError("document key of " + std::to_string(key.size()) +
                                " bytes exceeds the limit of " + std::to_string(max_key_bytes));
  }
  for (char c : key) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '-' || c == '.' || c == '_' || c == '~' || c == ':' || c == '@' ||
                    c == '/' || c == '+' || c == '=' || c == ',' || c == '!';
    if (!ok) {
      return InvalidArgumentError(
          "document key may only contain A-Z a-z 0-9 and - . _ ~ : @ / + = , ! (found byte " +
          std::to_string(static_cast<unsigned char>(c)) + ")");
    }
  }
  return Status::Ok();
}

TopicOptions StoreFeedTopicOptions(const StoreOptions& options) {
  TopicOptions t = options.feed_topic_options;
  t.partitions = 1;  // the feed is one ordered sequence
  t.max_record_bytes = static_cast<uint32_t>(
      std::max<uint64_t>(t.max_record_bytes, store_internal::FeedRecordBytesFor(options)));
  return t;
}

Status ValidateStoreOptions(const StoreOptions& options, bool with_feed) {
  auto bad = [](std::string_view what) {
    return InvalidArgumentError("StoreOptions." + std::string(what));
  };
  if (options.dir.empty()) return bad("dir is empty");
  if (options.max_key_bytes == 0 || options.max_key_bytes > 4096) {
    return bad("max_key_bytes must be in 1..4096");
  }
  if (options.max_document_bytes == 0 || options.max_document_bytes > (64u << 20)) {
    return bad("max_document_bytes must be in 1..64 MiB");
  }
  if (options.max_json_depth == 0 || options.max_json_depth > store_internal::kMaxFeedJsonDepth) {
    return bad("max_json_depth must be in 1..1024");
  }
  if (options.max_collections == 0) return bad("max_collections must be > 0");
  if (options.max_transaction_ops == 0) return bad("max_transaction_ops must be > 0");
  if (options.max_transaction_bytes == 0) return bad("max_transaction_bytes must be > 0");
  if (options.commit_buffer_max_bytes == 0) return bad("commit_buffer_max_bytes must be > 0");
  if (options.checkpoint_wal_bytes == 0) return bad("checkpoint_wal_bytes must be > 0");
  if (options.list_max_limit == 0) return bad("list_max_limit must be > 0");
  if (options.list_max_bytes == 0) return bad("list_max_bytes must be > 0");
  if (options.ttl_sweep_interval_ms < 0) return bad("ttl_sweep_interval_ms must be >= 0");
  if (options.ttl_sweep_max_docs == 0) return bad("ttl_sweep_max_docs must be > 0");
  if (options.durability == Durability::kInterval && options.sync_interval_ms <= 0) {
    return bad("sync_interval_ms must be > 0 for interval durability");
  }
  if (with_feed) {
    if (options.feed_topic.empty()) return bad("feed_topic is empty");
    if (options.feed_source.empty()) return bad("feed_source is empty");
    if (options.feed_backlog_max_events == 0) return bad("feed_backlog_max_events must be > 0");
    if (options.feed_append_max_events == 0) return bad("feed_append_max_events must be > 0");
    // The store creates the feed topic at its first commit; a name or options the log would
    // refuse must fail here, not there.
    Status name = ValidateTopicName(options.feed_topic);
    if (!name.ok()) return bad("feed_topic: " + std::string(name.message()));
    Status topic = ValidateTopicOptions(StoreFeedTopicOptions(options));
    if (!topic.ok()) return bad("feed_topic_options: " + std::string(topic.message()));
  }
  for (const auto& [name, fn] : options.merge_functions) {
    if (name.empty() || !fn) return bad("merge_functions needs names and callable functions");
  }
  return Status::Ok();
}

Result<std::unique_ptr<Store>> Store::Open(Env& env, const StoreOptions& options) {
  CONVERGE_RETURN_IF_ERROR(ValidateStoreOptions(options, options.feed_log != nullptr));
  auto store = std::make_unique<StoreImpl>(env, options);
  CONVERGE_RETURN_IF_ERROR(store->Recover());
  return std::unique_ptr<Store>(std::move(store));
}

namespace store_internal {

bool CanWrite(const Caller& caller, const CollectionConfig& config) {
  if (caller.admin) return true;
  if (caller.service.empty()) return false;
  if (caller.service == config.owner) return true;
  for (const auto& w : config.writers) {
    if (w == "*" || w == caller.service) return true;
  }
  return false;
}

// The outcome class of a refused write op (see CollectionInfo::writes).
void CountRefusal(StatusCode code, WriteCounts* counts) {
  switch (code) {
    case StatusCode::kAborted:
    case StatusCode::kAlreadyExists:
      ++counts->conflict;
      break;
    case StatusCode::kPermissionDenied:
      ++counts->denied;
      break;
    default:
      ++counts->rejected;
  }
}

bool CanAdminister(const Caller& caller, const CollectionConfig& config) {
  return caller.admin || (!caller.service.empty() && caller.service == config.owner);
}

Status WriteDenied(const Caller& caller, const std::string& collection,
                   const CollectionConfig& config) {
  return PermissionDeniedError("service '" + caller.service + "' may not write collection '" +
                               collection + "' (owner '" + config.owner + "')");
}

std::string WithIndex(bool indexed, size_t i, std::string_view message) {
  if (!indexed) return std::string(message);
  return "op " + std::to_string(i) + ": " + std::string(message);
}

Status Indexed(const Status& s, bool indexed, size_t i) {
  if (s.ok() || !indexed) return s;
  return s.WithMessage(WithIndex(true, i, s.message()));
}

bool ValidName(std::string_view s, size_t max) {
  if (s.empty() || s.size() > max) return false;
  for (char c : s) {
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) return false;
  }
  return true;
}

// ---------------------------------------------------------------------------------------
// Construction, recovery, shutdown

StoreImpl::StoreImpl(Env& env, StoreOptions options)
    : env_(env), opt_(std::move(options)), timer_(std::make_shared<TimerState>()) {}

StoreImpl::~StoreImpl() {
  {
    std::lock_guard<std::mutex> g(timer_->mu);
    timer_->store = nullptr;
    if (timer_->id != 0) env_.executor().Cancel(timer_->id);
  }
  Lock lock(mu_);
  while (leader_active_ || feed_active_) WaitForStateLocked(lock);
  if (wal_ == nullptr) return;
  if (bg_error_.ok()) {
    // Graceful close: make everything durable and try once more to publish the feed.
    leader_active_ = true;
    LeadGroup(lock, /*force_sync=*/true);
    DoWorkLocked(lock);
  }
  if (!completions_.empty()) FailLocked(lock, CancelledError("the store is closing"));
  if (bg_error_.ok()) wal_->Close().IgnoreError();
}

// ---------------------------------------------------------------------------------------
// Applying changes

void StoreImpl::RememberDocLocked(uint64_t seq, const std::string& collection,
                                  const std::string& key, const CollectionState& coll) {
  if (!undo_enabled_) return;
  Undo u;
  u.seq = seq;
  u.collection = collection;
  u.key = key;
  auto it = coll.docs.find(key);
  if (it != coll.docs.end()) u.doc = it->second;
  u.last_delete_seq = coll.last_delete_seq;
  undo_.push_back(std::move(u));
}

void StoreImpl::RememberCollectionLocked(uint64_t seq, const std::string& name) {
  if (!undo_enabled_) return;
  Undo u;
  u.seq = seq;
  u.collection = name;
  u.catalog = true;
  u.last_catalog_seq = last_catalog_seq_;
  auto it = colls_.find(name);
  if (it != colls_.end()) {
    // A reconfiguration keeps the documents: only the configuration is restored on undo.
    u.coll.emplace();
    u.coll->config = it->second.config;
    u.coll->created_seq = it->second.created_seq;
  }
  undo_.push_back(std::move(u));
}

void StoreImpl::ApplyOpLocked(const WalOp& op, uint64_t seq) {
  auto cit = colls_.find(op.collection);
  CONVERGE_CHECK(cit != colls_.end());
  CollectionState& coll = cit->second;
  RememberDocLocked(seq, op.collection, op.key, coll);
  auto remove_expiry = [&](const std::string& key, const StoredDoc& doc) {
    if (doc.expires_at_ms != 0) expiry_.erase(ExpiryKey(doc.expires_at_ms, op.collection, key));
  };
  if (op.kind == OpKind::kPut) {
    auto [it, inserted] = coll.docs.try_emplace(op.key);
    StoredDoc& doc = it->second;
    if (!inserted) {
      const uint64_t old = it->first.size() + doc.value->size();
      coll.bytes -= old;
      total_bytes_ -= old;
      remove_expiry(it->first, doc);
    } else {
      ++total_docs_;
    }
    doc.value = op.value;
    doc.version = seq;
    doc.expires_at_ms = op.expires_at_ms;
    const uint64_t added = it->first.size() + doc.value->size();
    coll.bytes += added;
    total_bytes_ += added;
    if (doc.expires_at_ms != 0) expiry_.emplace(doc.expires_at_ms, op.collection, op.key);
    return;
  }
  auto it = coll.docs.find(op.key);
  if (it == coll.docs.end()) return;
  const uint64_t old = it->first.size() + it->second.value->size();
  coll.bytes -= old;
  total_bytes_ -= old;
  --total_docs_;
  remove_expiry(it->first, it->second);
  coll.docs.erase(it);
  coll.last_delete_seq = seq;
}

void StoreImpl::ApplyRecordLocked(const WalRecord& rec) {
  switch (rec.type) {
    case RecordType::kTxn:
      for (const WalOp& op : rec.ops) ApplyOpLocked(op, rec.seq);
      break;
    case RecordType::kPutCollection: {
      RememberCollectionLocked(rec.seq, rec.collection);
      CollectionState& coll = colls_[rec.collection];
      coll.config = rec.config;
      coll.created_seq = rec.seq;
      last_catalog_seq_ = rec.seq;
      break;
    }
    case RecordType::kDropCollection: {
      auto it = colls_.find(rec.collection);
      if (it == colls_.end()) break;
      for (const auto& [key, doc] : it->second.docs) {
        if (doc.expires_at_ms != 0) expiry_.erase(ExpiryKey(doc.expires_at_ms, it->first, key));
      }
      total_bytes_ -= it->second.bytes;
      total_docs_ -= it->second.docs.size();
      if (undo_enabled_) {
        // The whole collection is kept until the drop is durable: undoing it puts it back.
        Undo u;
        u.seq = rec.seq;
        u.collection = rec.collection;
        u.catalog = true;
        u.last_catalog_seq = last_catalog_seq_;
        u.coll = std::move(it->second);
        undo_.push_back(std::move(u));
      }
      colls_.erase(it);
      last_catalog_seq_ = rec.seq;
      break;
    }
  }
}

// ---------------------------------------------------------------------------------------
// Collections

const MergeFunction* FindMergeFunction(const StoreOptions& opt_, const std::string& name) {
  auto it = opt_.merge_functions.find(name);
  if (it != opt_.merge_functions.end()) return &it->second;
  return BuiltinMergeFunction(name);
}

Result<FieldMergers> MergersFor(const StoreOptions& opt_, const CollectionConfig& config) {
  FieldMergers out;
  for (const auto& [field, name] : config.merge_fields) {
    const MergeFunction* fn = FindMergeFunction(opt_, name);
    if (fn == nullptr) {
      return FailedPreconditionError("merge function '" + name + "' of field '" + field +
                                     "' is not registered in this store");
    }
    out.emplace(field, fn);
  }
  return out;
}

Status CheckPreconditions(const WriteOp& op, bool if_match_any,
                          std::optional<uint64_t> if_match_version, bool exists, uint64_t current,
                          bool* stale) {
  if (op.precondition.if_none_match_any && exists) {
    return AlreadyExistsError("document '" + op.key + "' exists (If-None-Match: *)");
  }
  if ((if_match_any || if_match_version) && !exists) {
    return AbortedError("precondition failed: document '" + op.key + "' does not exist (If-Match)");
  }
  *stale = if_match_version && *if_match_version != current;
  return Status::Ok();
}

Status StaleError(const WriteOp& op, uint64_t current, uint64_t named) {
  return AbortedError("precondition failed: document '" + op.key + "' is at version " +
                      std::to_string(current) + ", If-Match names " + std::to_string(named));
}

Status CheckNewCollection(const Caller& caller, const CollectionConfig& config, uint64_t count,
                          uint64_t max) {
  if (count >= max) {
    return ResourceExhaustedError("the store holds its maximum of " + std::to_string(max) +
                                  " collections");
  }
  if (!CanAdminister(caller, config)) {
    return PermissionDeniedError("service '" + caller.service +
                                 "' may not create a collection owned by '" + config.owner + "'");
  }
  return Status::Ok();
}

Status ValidateListOptions(const StoreOptions& store, const ListOptions& options) {
  if (options.limit == 0 || options.limit > store.list_max_limit) {
    return InvalidArgumentError("limit must be in 1.." + std::to_string(store.list_max_limit));
  }
  auto check_bound = [&](const std::string& k, std::string_view what) -> Status {
    if (k.empty()) return Status::Ok();
    Status s = Store::ValidateKey(k, store.max_key_bytes);
    return s.ok() ? s : InvalidArgumentError(std::string(what) + ": " + std::string(s.message()));
  };
  CONVERGE_RETURN_IF_ERROR(check_bound(options.start_key, "start_key"));
  CONVERGE_RETURN_IF_ERROR(check_bound(options.end_key, "end_key"));
  CONVERGE_RETURN_IF_ERROR(check_bound(options.prefix, "prefix"));
  CONVERGE_RETURN_IF_ERROR(check_bound(options.page_token, "page_token"));
  return Status::Ok();
}

Status ValidateCollectionConfig(const StoreOptions& opt_, const CollectionConfig& config) {
  if (!ValidName(config.owner, 128)) {
    return InvalidArgumentError("a collection needs an owner (1 to 128 printable characters)");
  }
  if (config.writers.size() > 256) return InvalidArgumentError("at most 256 writers");
  for (const auto& w : config.writers) {
    if (!ValidName(w, 128)) return InvalidArgumentError("writer names have 1 to 128 characters");
  }
  if (config.default_ttl_ms < 0 || config.default_ttl_ms > kMaxTtlMs) {
    return InvalidArgumentError("default_ttl_ms must be in [0, " + std::to_string(kMaxTtlMs) + "]");
  }
  if (config.max_document_bytes > opt_.max_document_bytes) {
    return InvalidArgumentError("max_document_bytes exceeds the store's limit of " +
                                std::to_string(opt_.max_document_bytes));
  }
  if (config.merge_fields.size() > 64) return InvalidArgumentError("at most 64 merge fields");
  for (const auto& [field, fn] : config.merge_fields) {
    if (!ValidName(field, 256)) return InvalidArgumentError("merge field names have 1..256 chars");
    if (FindMergeFunction(opt_, fn) == nullptr) {
      return InvalidArgumentError("unknown merge function '" + fn + "' for field '" + field + "'");
    }
  }
  return Status::Ok();
}

const MergeFunction* StoreImpl::FindMergeFunction(const std::string& name) const {
  return store_internal::FindMergeFunction(opt_, name);
}

Result<FieldMergers> StoreImpl::MergersFor(const CollectionConfig& config) const {
  return store_internal::MergersFor(opt_, config);
}

Status StoreImpl::ValidateConfig(const CollectionConfig& config) const {
  return ValidateCollectionConfig(opt_, config);
}

Status StoreImpl::CollectionChange(const Caller& caller, const std::string& name,
                                   const CollectionConfig* config, bool create) {
  CONVERGE_RETURN_IF_ERROR(ValidateCollectionName(name));
  if (config != nullptr) CONVERGE_RETURN_IF_ERROR(ValidateConfig(*config));
  Lock lock(mu_);
  CONVERGE_RETURN_IF_ERROR(AdmitLocked(lock, 1024));
  auto it = colls_.find(name);
  if (create) {
    if (it != colls_.end()) {
      CONVERGE_RETURN_IF_ERROR(WaitDurable(lock, last_catalog_seq_));
      return AlreadyExistsError("collection '" + name + "' exists");
    }
    CONVERGE_RETURN_IF_ERROR(
        CheckNewCollection(caller, *config, colls_.size(), opt_.max_collections));
  } else {
    if (it == colls_.end()) {
      CONVERGE_RETURN_IF_ERROR(WaitDurable(lock, last_catalog_seq_));
      return NotFoundError("collection '" + name + "' does not exist");
    }
    if (!CanAdminister(caller, it->second.config)) {
      return PermissionDeniedError("only the owner '" + it->second.config.owner +
                                   "' may change or delete collection '" + name + "'");
    }
  }
  CONVERGE_ASSIGN_OR_RETURN(const uint64_t seq, NextSeqLocked());
  WalRecord rec;
  rec.seq = seq;
  rec.collection = name;
  if (config != nullptr) {
    rec.type = RecordType::kPutCollection;
    rec.config = *config;
    AppendPutCollectionRecord(seq, name, *config, &pending_);
  } else {
    rec.type = RecordType::kDropCollection;
    AppendDropCollectionRecord(seq, name, &pending_);
  }
  ApplyRecordLocked(rec);
  return WaitDurable(lock, seq);
}

Status StoreImpl::CreateCollection(const Caller& caller, const std::string& name,
                                   const CollectionConfig& config) {
  return CollectionChange(caller, name, &config, /*create=*/true);
}

Status StoreImpl::UpdateCollection(const Caller& caller, const std::string& name,
                                   const CollectionConfig& config) {
  return CollectionChange(caller, name, &config, /*create=*/false);
}

Status StoreImpl::DeleteCollection(const Caller& caller, const std::string& name) {
  return CollectionChange(caller, name, nullptr, /*create=*/false);
}

Result<CollectionInfo> StoreImpl::DescribeCollection(const std::string& name) {
  Lock lock(mu_);
  if (!bg_error_.ok()) return bg_error_;
  auto it = colls_.find(name);
  CollectionInfo info;
  const uint64_t need = last_catalog_seq_;
  const bool found = it != colls_.end();
  if (found) {
    info.name = name;
    info.config = it->second.config;
    info.documents = it->second.docs.size();
    info.bytes = it->second.bytes;
    info.writes = it->second.write_counts;
  }
  CONVERGE_RETURN_IF_ERROR(WaitDurable(lock, need));
  if (!found) return NotFoundError("collection '" + name + "' does not exist");
  return info;
}

Status StoreImpl::CheckWriteAccess(const Caller& caller, const std::string& collection,
                                   bool administer) {
  Lock lock(mu_);
  auto it = colls_.find(collection);
  if (it == colls_.end()) {
    return NotFoundError("collection '" + collection + "' does not exist");
  }
  const CollectionConfig& cfg = it->second.config;
  if (administer) {
    if (CanAdminister(caller, cfg)) return Status::Ok();
    return PermissionDeniedError("only the owner '" + cfg.owner +
                                 "' may change or delete collection '" + collection + "'");
  }
  if (CanWrite(caller, cfg)) return Status::Ok();
  Status denied = WriteDenied(caller, collection, cfg);
  CountRefusal(denied.code(), &it->second.write_counts);
  return denied;
}

std::vector<std::string> StoreImpl::ListCollections() {
  Lock lock(mu_);
  std::vector<std::string> names;
  names.reserve(colls_.size());
  for (const auto& [name, coll] : colls_) names.push_back(name);
  WaitDurable(lock, last_catalog_seq_).IgnoreError();
  return names;
}

// ---------------------------------------------------------------------------------------
// Reads

Result<Document> StoreImpl::Get(const std::string& collection, const std::string& key) {
  return GetImpl(collection, key, /*wait=*/true);
}

Result<Document> StoreImpl::TryGet(const std::string& collection, const std::string& key) {
  return GetImpl(collection, key, /*wait=*/false);
}

Result<StoredDoc> StoreImpl::ReadLocked(const std::string& collection, const std::string& key,
                                        int64_t now_ms, uint64_t* need) {
  auto cit = colls_.find(collection);
  if (cit == colls_.end()) {
    *need = last_catalog_seq_;
    return NotFoundError("collection '" + collection + "' does not exist");
  }
  const CollectionState& coll = cit->second;
  auto dit = coll.docs.find(key);
  if (dit == coll.docs.end() || IsExpired(dit->second, now_ms)) {
    *need = std::max(coll.last_delete_seq, coll.created_seq);
    return NotFoundError("document '" + key + "' does not exist in collection '" + collection +
                         "'");
  }
  *need = std::max(dit->second.version, coll.created_seq);
  return dit->second;  // a copy: the value is shared, not copied
}

namespace {

Result<Document> ToDocument(const std::string& key, Result<StoredDoc> stored) {
  if (!stored.ok()) return stored.status();
  Document out;
  out.key = key;
  out.value = *stored->value;
  out.version = stored->version;
  out.etag = ETagForVersion(stored->version);
  out.expires_at_ms = stored->expires_at_ms;
  return out;
}

}  // namespace

Result<Document> StoreImpl::GetImpl(const std::string& collection, const std::string& key,
                                    bool wait) {
  CONVERGE_RETURN_IF_ERROR(ValidateKey(key, opt_.max_key_bytes));
  const int64_t now = NowMs();
  Lock lock(mu_);
  if (!bg_error_.ok()) return bg_error_;
  uint64_t need = 0;
  Result<StoredDoc> stored = ReadLocked(collection, key, now, &need);
  // What the answer depends on must be durable before it is given.
  if (durable_seq_ < need) {
    if (!wait) return UnavailableError("the document's last change is still being synced");
    CONVERGE_RETURN_IF_ERROR(WaitDurable(lock, need));
  }
  lock.unlock();
  return ToDocument(key, std::move(stored));
}

void StoreImpl::GetAsync(const std::string& collection, const std::string& key, GetCallback done) {
  if (Status valid = ValidateKey(key, opt_.max_key_bytes); !valid.ok()) return done(valid);
  const int64_t now = NowMs();
  Lock lock(mu_);
  if (!bg_error_.ok()) {
    Status error = bg_error_;
    lock.unlock();
    return done(error);
  }
  uint64_t need = 0;
  Result<StoredDoc> stored = ReadLocked(collection, key, now, &need);
  if (durable_seq_ >= need) {
    lock.unlock();
    return done(ToDocument(key, std::move(stored)));
  }
  // The answer as of now, given once the change it shows (or the deletion it misses) is
  // durable: what a blocking Get returns.
  AddCompletionLocked(
      need, [key, stored = std::move(stored), done = std::move(done)](const Status& s) mutable {
        if (s.ok()) {
          done(ToDocument(key, std::move(stored)));
        } else {
          done(s);
        }
      });
  KickLocked(lock);
}

Result<ListResult> StoreImpl::List(const std::string& collection, const ListOptions& options) {
  CONVERGE_RETURN_IF_ERROR(ValidateListOptions(opt_, options));
  const int64_t now = NowMs();

  std::vector<std::pair<std::string, StoredDoc>> found;
  std::string next_token;
  Lock lock(mu_);
  if (!bg_error_.ok()) return bg_error_;
  auto cit = colls_.find(collection);
  if (cit == colls_.end()) {
    CONVERGE_RETURN_IF_ERROR(WaitDurable(lock, last_catalog_seq_));
    return NotFoundError("collection '" + collection + "' does not exist");
  }
  const CollectionState& coll = cit->second;
  const std::string& from = std::max(options.start_key, options.prefix);
  auto it = !options.page_token.empty() && options.page_token >= from
                ? coll.docs.upper_bound(options.page_token)
                : coll.docs.lower_bound(from);
  uint64_t need = std::max(coll.last_delete_seq, coll.created_seq);
  uint64_t bytes = 0;
  for (; it != coll.docs.end(); ++it) {
    const std::string& k = it->first;
    if (!options.end_key.empty() && k >= options.end_key) break;
    if (!options.prefix.empty() && k.compare(0, options.prefix.size(), options.prefix) != 0) break;
    if (IsExpired(it->second, now)) continue;
    if (found.size() == options.limit || (!found.empty() && bytes >= opt_.list_max_bytes)) {
      next_token = found.back().first;
      break;
    }
    found.emplace_back(k, it->second);
    bytes += it->second.value->size();
    need = std::max(need, it->second.version);
  }
  CONVERGE_RETURN_IF_ERROR(WaitDurable(lock, need));
  lock.unlock();
  ListResult out;
  out.next_page_token = std::move(next_token);
  out.documents.reserve(found.size());
  for (auto& [key, doc] : found) {
    Document d;
    d.key = std::move(key);
    d.value = *doc.value;
    d.version = doc.version;
    d.etag = ETagForVersion(doc.version);
    d.expires_at_ms = doc.expires_at_ms;
    out.documents.push_back(std::move(d));
  }
  return out;
}

// ---------------------------------------------------------------------------------------
// Writes

Result<std::vector<CheckedOp>> ValidateWriteOps(const StoreOptions& opt_,
                                                std::span<const WriteOp> ops, bool indexed) {
  if (ops.empty()) return InvalidArgumentError("a transaction needs at least one op");
  if (ops.size() > opt_.max_transaction_ops) {
    return ResourceExhaustedError("a transaction may have at most " +
                                  std::to_string(opt_.max_transaction_ops) + " ops");
  }
  uint64_t total = 0;
  for (const WriteOp& op : ops) total += op.key.size() + op.value.size() + op.collection.size();
  if (total > opt_.max_transaction_bytes) {
    return ResourceExhaustedError("a transaction may carry at most " +
                                  std::to_string(opt_.max_transaction_bytes) + " bytes");
  }
  std::vector<CheckedOp> out(ops.size());
  std::set<std::pair<std::string_view, std::string_view>> seen;
  for (size_t i = 0; i < ops.size(); ++i) {
    const WriteOp& op = ops[i];
    CheckedOp& p = out[i];
    p.op = &op;
    p.kind = op.kind;
    CONVERGE_RETURN_IF_ERROR(Indexed(Store::ValidateCollectionName(op.collection), indexed, i));
    CONVERGE_RETURN_IF_ERROR(Indexed(Store::ValidateKey(op.key, opt_.max_key_bytes), indexed, i));
    if (op.kind != WriteOp::Kind::kPut && op.kind != WriteOp::Kind::kDelete &&
        op.kind != WriteOp::Kind::kCheck) {
      return InvalidArgumentError(WithIndex(indexed, i, "unknown op kind"));
    }
    if (ops.size() > 1 && !seen.emplace(op.collection, op.key).second) {
      return InvalidArgumentError(
          WithIndex(indexed, i, "a transaction may name each document only once"));
    }
    const Precondition& pre = op.precondition;
    if (pre.if_match && pre.if_none_match_any) {
      return InvalidArgumentError(
          WithIndex(indexed, i, "If-Match and If-None-Match: * exclude each other"));
    }
    if (pre.if_match) {
      if (*pre.if_match == "*") {
        p.if_match_any = true;
      } else {
        Result<uint64_t> v = VersionFromETag(*pre.if_match);
        if (!v.ok()) return Indexed(v.status(), indexed, i);
        p.if_match_version = *v;
      }
    }
    if (op.kind == WriteOp::Kind::kCheck && !pre.if_match && !pre.if_none_match_any) {
      return InvalidArgumentError(WithIndex(indexed, i, "a check needs a precondition"));
    }
    if (op.kind == WriteOp::Kind::kPut) {
      if (op.value.size() > opt_.max_document_bytes) {
        return ResourceExhaustedError(WithIndex(indexed, i,
                                                "document of " + std::to_string(op.value.size()) +
                                                    " bytes exceeds the limit of " +
                                                    std::to_string(opt_.max_document_bytes)));
      }
      if (op.ttl_ms < kCollectionDefaultTtl || op.ttl_ms > kMaxTtlMs) {
        return InvalidArgumentError(WithIndex(
            indexed, i,
            "ttl_ms must be in [0, " + std::to_string(kMaxTtlMs) + "] (or kCollectionDefaultTtl)"));
      }
      CONVERGE_RETURN_IF_ERROR(
          Indexed(store_internal::ValidateJson(op.value, opt_.max_json_depth), indexed, i));
    }
  }
  return out;
}

Result<std::vector<StoreImpl::Prepared>> StoreImpl::PrepareOps(std::span<const WriteOp> ops,
                                                               bool indexed) const {
  CONVERGE_ASSIGN_OR_RETURN(std::vector<CheckedOp> checked, ValidateWriteOps(opt_, ops, indexed));
  std::vector<Prepared> out(ops.size());
  for (size_t i = 0; i < ops.size(); ++i) {
    Prepared& p = out[i];
    p.op = checked[i].op;
    p.kind = checked[i].kind;
    p.if_match_any = checked[i].if_match_any;
    p.if_match_version = checked[i].if_match_version;
    if (p.kind == WriteOp::Kind::kPut) p.value = std::make_shared<const std::string>(p.op->value);
  }
  return out;
}

Result<CommitResult> StoreImpl::CommitPrepared(const Caller& caller,
                                               std::vector<Prepared>& prepared, bool indexed) {
  CommitResult result;
  uint64_t wait_seq = 0;
  Lock lock(mu_);
  CONVERGE_RETURN_IF_ERROR(ApplyTxnLocked(lock, caller, prepared, indexed, &result, &wait_seq));
  CONVERGE_RETURN_IF_ERROR(WaitDurable(lock, wait_seq));
  MaybeCheckpoint(lock);
  return result;
}

void StoreImpl::CommitAsync(const Caller& caller, std::vector<WriteOp> ops, CommitCallback done) {
  const bool indexed = ops.size() > 1;
  Result<std::vector<Prepared>> prepared = PrepareOps(ops, indexed);
  if (!prepared.ok()) {
    done(prepared.status());
    return;
  }
  CommitResult result;
  uint64_t wait_seq = 0;
  Lock lock(mu_);
  Status s = ApplyTxnLocked(lock, caller, *prepared, indexed, &result, &wait_seq);
  if (!s.ok() || wait_seq <= durable_seq_) {
    lock.unlock();
    if (s.ok()) {
      done(std::move(result));
    } else {
      done(std::move(s));
    }
    return;
  }
  AddCompletionLocked(
      wait_seq, [result = std::move(result), done = std::move(done)](const Status& st) mutable {
        if (st.ok()) {
          done(std::move(result));
        } else {
          done(st);
        }
      });
  KickLocked(lock);
}

void StoreImpl::KickLocked(Lock& lock) {
  if (!opt_.background) {
    DoWorkLocked(lock);
    MaybeCheckpoint(lock);
    return;
  }
  if (!bg_error_.ok()) return;
  // Two workers, so that the next group syncs while the last one's events are published.
  const bool start_wal =
      !wal_worker_ && !leader_active_ && (!pending_.empty() || !completions_.empty());
  const bool start_feed = !feed_worker_ && !feed_active_ && FeedPublishableLocked();
  if (!start_wal && !start_feed) return;
  if (start_wal) wal_worker_ = true;
  if (start_feed) feed_worker_ = true;
  // Handing work to the executor may wake a thread (a syscall): not while holding mu_, which
  // every reader and writer needs. The flags above keep anyone else from starting the same
  // worker meanwhile.
  lock.unlock();
  if (start_wal) {
    opt_.background([this] {
      Lock l(mu_);
      RunWalWorkerLocked(l);
    });
  }
  if (start_feed) {
    opt_.background([this] {
      Lock l(mu_);
      RunFeedWorkerLocked(l);
    });
  }
  lock.lock();
}

void StoreImpl::RunWalWorkerLocked(Lock& lock) {
  while (bg_error_.ok() && !leader_active_ && (!pending_.empty() || !completions_.empty())) {
    leader_active_ = true;
    LeadGroup(lock, /*force_sync=*/false);
    KickLocked(lock);  // the feed worker, for this group's events
  }
  MaybeCheckpoint(lock);
  wal_worker_ = false;
  KickLocked(lock);  // work queued after the loop's last look
}

void StoreImpl::RunFeedWorkerLocked(Lock& lock) {
  bool failed = false;
  while (bg_error_.ok() && !failed && !feed_active_ && FeedPublishableLocked()) {
    feed_active_ = true;
    failed = !PublishFeedLocked(lock).ok();  // stays queued: retried by the next kick
    feed_active_ = false;
    NotifyWaitersLocked();
  }
  feed_worker_ = false;
  if (!failed) KickLocked(lock);
}

Status StoreImpl::ApplyTxnLocked(Lock& lock, const Caller& caller, std::vector<Prepared>& prepared,
                                 bool indexed, CommitResult* out, uint64_t* wait_seq) {
  const int64_t now = NowMs();
  size_t record_bytes = 64;
  for (const Prepared& p : prepared) {
    record_bytes += p.op->collection.size() + p.op->key.size() + (p.value ? p.value->size() : 0);
  }
  CommitResult& result = *out;
  result.results.resize(prepared.size());
  std::vector<WalOp> walops;
  walops.reserve(prepared.size());
  uint64_t need = 0;  // for check-only transactions: what they observed must be durable

  CONVERGE_RETURN_IF_ERROR(AdmitLocked(lock, record_bytes));
  int64_t bytes_delta = 0;
  for (size_t i = 0; i < prepared.size(); ++i) {
    Prepared& p = prepared[i];
    const WriteOp& op = *p.op;
    auto fail = [&](Status s) { return Indexed(s, indexed, i); };
    auto cit = colls_.find(op.collection);
    if (cit == colls_.end()) {
      return fail(NotFoundError("collection '" + op.collection + "' does not exist"));
    }
    CollectionState& coll = cit->second;
    const CollectionConfig& cfg = coll.config;
    p.coll = &coll;
    // A refusal of this op, counted in its collection's write outcomes.
    auto refuse = [&](Status s) {
      CountRefusal(s.code(), &coll.write_counts);
      return fail(std::move(s));
    };
    if (p.kind != WriteOp::Kind::kCheck && !CanWrite(caller, cfg)) {
      return refuse(WriteDenied(caller, op.collection, cfg));
    }
    auto dit = coll.docs.find(op.key);
    const bool present = dit != coll.docs.end();
    const bool exists = present && !IsExpired(dit->second, now);
    const uint64_t current = exists ? dit->second.version : 0;
    bool stale = false;
    if (Status pre =
            CheckPreconditions(op, p.if_match_any, p.if_match_version, exists, current, &stale);
        !pre.ok()) {
      return refuse(std::move(pre));
    }
    auto stale_error = [&]() { return refuse(StaleError(op, current, *p.if_match_version)); };
    WriteResult& r = result.results[i];
    if (p.kind == WriteOp::Kind::kCheck) {
      if (stale) return stale_error();
      r.version = current;
      r.etag = exists ? ETagForVersion(current) : std::string();
      need = std::max({need, current, coll.last_delete_seq});
      continue;
    }
    if (p.kind == WriteOp::Kind::kDelete) {
      if (stale) return stale_error();
      if (!exists) {
        return refuse(NotFoundError("document '" + op.key + "' does not exist in collection '" +
                                    op.collection + "'"));
      }
      WalOp w;
      w.kind = OpKind::kDelete;
      w.collection = op.collection;
      w.key = op.key;
      walops.push_back(std::move(w));
      bytes_delta -= static_cast<int64_t>(op.key.size() + dit->second.value->size());
      continue;
    }
    // kPut
    std::shared_ptr<const std::string> value = p.value;
    if (!cfg.merge_fields.empty()) {
      Result<FieldMergers> mergers = MergersFor(cfg);
      if (!mergers.ok()) return refuse(mergers.status());
      Result<std::string> merged = ResolveMergeFields(exists ? *dit->second.value : "", *value,
                                                      *mergers, stale, opt_.max_json_depth);
      if (!merged.ok()) return refuse(merged.status());
      value = std::make_shared<const std::string>(std::move(*merged));
      r.merged = stale;
    } else if (stale) {
      return stale_error();
    }
    const uint32_t limit =
        cfg.max_document_bytes != 0 ? cfg.max_document_bytes : opt_.max_document_bytes;
    if (value->size() > limit) {
      return refuse(ResourceExhaustedError("document of " + std::to_string(value->size()) +
                                           " bytes exceeds the limit of " + std::to_string(limit) +
                                           " of collection '" + op.collection + "'"));
    }
    const int64_t ttl = op.ttl_ms == kCollectionDefaultTtl ? cfg.default_ttl_ms : op.ttl_ms;
    WalOp w;
    w.kind = OpKind::kPut;
    w.collection = op.collection;
    w.key = op.key;
    w.expires_at_ms = ttl > 0 ? now + ttl : 0;
    bytes_delta += static_cast<int64_t>(op.key.size() + value->size());
    if (present) bytes_delta -= static_cast<int64_t>(op.key.size() + dit->second.value->size());
    w.value = std::move(value);
    r.created = !exists;
    walops.push_back(std::move(w));
  }
  if (bytes_delta > 0 && total_bytes_ + static_cast<uint64_t>(bytes_delta) > opt_.max_store_bytes) {
    return ResourceExhaustedError("the store would exceed its limit of " +
                                  std::to_string(opt_.max_store_bytes) + " bytes");
  }
  if (walops.empty()) {
    result.commit_seq = 0;
    *wait_seq = need;
    return Status::Ok();
  }
  CONVERGE_ASSIGN_OR_RETURN(const uint64_t seq, NextSeqLocked());
  AppendTxnRecord(seq, now, walops, &pending_);
  for (const WalOp& w : walops) ApplyOpLocked(w, seq);
  ++commits_;
  for (const Prepared& p : prepared) {
    if (p.kind != WriteOp::Kind::kCheck) ++p.coll->write_counts.ok;
  }
  result.commit_seq = seq;
  for (size_t i = 0; i < prepared.size(); ++i) {
    if (prepared[i].kind == WriteOp::Kind::kCheck) continue;
    result.results[i].version = seq;
    result.results[i].etag = ETagForVersion(seq);
  }
  if (opt_.feed_log != nullptr) {
    feed_queue_events_ += walops.size();
    feed_queue_.push_back(FeedTxn{seq, now, std::move(walops)});
  }
  *wait_seq = seq;
  return Status::Ok();
}

void StoreImpl::MaybeCheckpoint(Lock& lock) {
  if (!want_checkpoint_ || checkpoint_running_) return;
  want_checkpoint_ = false;
  lock.unlock();
  // A failure leaves the WAL as it was (or poisons the store, which the next call reports).
  Checkpoint().IgnoreError();
  lock.lock();
}

Result<CommitResult> StoreImpl::Commit(const Caller& caller, std::span<const WriteOp> ops) {
  const bool indexed = ops.size() > 1;
  CONVERGE_ASSIGN_OR_RETURN(std::vector<Prepared> prepared, PrepareOps(ops, indexed));
  return CommitPrepared(caller, prepared, indexed);
}

Result<WriteResult> StoreImpl::Put(const Caller& caller, const std::string& collection,
                                   const std::string& key, std::string_view value,
                                   const Precondition& precondition, int64_t ttl_ms) {
  const WriteOp op = WriteOp::Put(collection, key, std::string(value), precondition, ttl_ms);
  CONVERGE_ASSIGN_OR_RETURN(std::vector<Prepared> prepared,
                            PrepareOps(std::span<const WriteOp>(&op, 1), false));
  CONVERGE_ASSIGN_OR_RETURN(CommitResult r, CommitPrepared(caller, prepared, false));
  return std::move(r.results[0]);
}

Result<WriteResult> StoreImpl::Delete(const Caller& caller, const std::string& collection,
                                      const std::string& key, const Precondition& precondition) {
  const WriteOp op = WriteOp::Delete(collection, key, precondition);
  CONVERGE_ASSIGN_OR_RETURN(std::vector<Prepared> prepared,
                            PrepareOps(std::span<const WriteOp>(&op, 1), false));
  CONVERGE_ASSIGN_OR_RETURN(CommitResult r, CommitPrepared(caller, prepared, false));
  return std::move(r.results[0]);
}

Result<size_t> StoreImpl::ExpireDue() {
  const int64_t now = NowMs();
  Lock lock(mu_);
  if (expiry_.empty() || std::get<0>(*expiry_.begin()) > now) return size_t{0};
  CONVERGE_RETURN_IF_ERROR(AdmitLocked(lock, 4096));
  std::vector<WalOp> walops;
  for (auto it = expiry_.begin(); it != expiry_.end() && walops.size() < opt_.ttl_sweep_max_docs;
       ++it) {
    const auto& [at, coll, key] = *it;
    if (at > now) break;
    WalOp w;
    w.kind = OpKind::kExpire;
    w.collection = coll;
    w.key = key;
    walops.push_back(std::move(w));
  }
  if (walops.empty()) return size_t{0};
  CONVERGE_ASSIGN_OR_RETURN(const uint64_t seq, NextSeqLocked());
  AppendTxnRecord(seq, now, walops, &pending_);
  for (const WalOp& w : walops) ApplyOpLocked(w, seq);
  const size_t n = walops.size();
  if (opt_.feed_log != nullptr) {
    feed_queue_events_ += n;
    feed_queue_.push_back(FeedTxn{seq, now, std::move(walops)});
  }
  CONVERGE_RETURN_IF_ERROR(WaitDurable(lock, seq));
  return n;
}

StoreStats StoreImpl::Stats() {
  Lock lock(mu_);
  StoreStats s;
  s.last_seq = last_seq_;
  s.durable_seq = durable_seq_;
  s.feed_published_seq = feed_published_seq_;
  s.feed_backlog_events = feed_queue_events_;
  s.group_commits = group_commits_;
  s.commits = commits_;
  s.checkpoints = checkpoints_;
  s.wal_bytes = wal_bytes_;
  s.documents = total_docs_;
  s.bytes = total_bytes_;
  return s;
}

}  // namespace store_internal
}  // namespace converge
