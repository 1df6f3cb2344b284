// Store: the shared document store. Collections of JSON documents addressed by key, each
// collection owned by one service, every write conditional on what was read, and every
// committed write also published as a CloudEvent to a change-feed topic of the event log.
//
// Model
// - A Store is a directory holding collections. A collection has a name, an owning service,
//   the services that may write besides the owner, an optional default TTL, a size bound and
//   optional merge fields (below). Any service may read any collection.
// - A document is one JSON value (object, array, string, number, boolean or null) stored under
//   a key. Keys are 1..max_key_bytes bytes of [A-Za-z0-9] and "-._~:@/+=,!" (no other bytes,
//   so a key is usable as-is in a URL path). Keys sort bytewise; range reads follow that order.
// - Every committed change gets the next commit sequence number (the store's total commit
//   order). A document's version is the sequence number of the write that produced it, so a
//   version is never reused, even across restarts and deletions. Its ETag is the quoted
//   decimal version ("\"42\"") — a strong entity tag.
//
// Writes
// - Put / Delete / Commit take the calling service (Caller). A write to a collection by a
//   service that is neither its owner nor one of its writers fails with PermissionDenied and
//   changes nothing. A Caller with admin = true may do everything (the HTTP server uses it
//   for its anonymous principal when authentication is disabled, and for admin tokens).
// - Preconditions: If-Match <etag> applies the write only if the document exists with that
//   ETag; If-None-Match: * only if the document does not exist. A failed If-Match is Aborted
//   (re-read and redo the read-modify-write); a failed If-None-Match is AlreadyExists.
//   Unconditional writes are allowed (a blind overwrite); services that must not lose updates
//   always send If-Match.
// - Merge fields (conflict strategies per collection): a collection may name top-level fields
//   of its (object) documents whose values are merged by a registered merge function (e.g. a
//   CRDT join from converge/conflict) instead of overwritten. Every write to such a collection
//   joins each merge field of the stored document into the written one. A write whose If-Match
//   is stale is then not refused if it changes nothing but merge fields (every other top-level
//   field equals the stored one): its merge fields are joined into the stored document. A stale
//   write that changes any other field still fails with Aborted.
// - Transactions (Commit): a list of puts, deletes and checks (a precondition on a document
//   that is not written, for values the transaction only read) over any keys of any
//   collections. All preconditions and permissions are checked and either every write is
//   applied or none is. Transactions are serializable: they are applied one at a time in
//   commit-sequence order, each against the state left by the previous ones. All writes of one
//   transaction share one commit sequence number (their new version).
// - TTL: a put may set ttl_ms (or inherit the collection's default). From its expiry time (the
//   Env's wall clock) on, the document reads as absent; a periodic sweep then removes it with
//   a committed expiry (which has its own sequence number and change event).
//
// Reads
// - Get and List see committed, durable state only: a read never returns a value (nor an
//   absence) that a crash could take back. A read of a document whose last write is still
//   being synced waits for that sync (at most one group commit); TryGet returns Unavailable
//   instead of waiting.
// - List returns documents of one collection in key order within [start_key, end_key) and
//   with an optional prefix, at most `limit` per page; next_page_token resumes after the last
//   key returned. Each page is a consistent snapshot; pages of one listing may reflect writes
//   committed between them.
//
// Durability (what an OK from Put / Delete / Commit / collection changes promises)
//   kFsync  (default) the change is in the store's write-ahead log and fdatasync'ed before the
//           call returns; concurrent writers share one sync (group commit). Survives process
//           and machine crashes.
//   kNone   the change is written to the OS before the call returns; survives a process crash,
//           a machine crash may lose it. Versions are still never reused.
//   (kInterval is treated as kNone plus a sync at least every sync_interval_ms by writers and
//   the sweep timer.)
//
// Change feed
// - When StoreOptions::feed_log is set, every committed put, delete and expiry is published as
//   one CloudEvent to the topic `feed_topic` (one partition, created by the first publication)
//   in commit order: a transaction's events are appended together, in the order of its ops.
//   The event id is "<collection>/<key>/<version>", so re-publication after a crash is
//   deduplicated by the log's idempotent publish and each committed write appears exactly once.
//   Event: source = feed_source, type = "converge.store.put" | "converge.store.delete" |
//   "converge.store.expire", subject = key, time = commit time, extensions collection,
//   version and commitseq (decimal strings) and partitionkey "<collection>/<key>"; a put's
//   data is the document (application/json).
// - Events are appended right after their group's WAL sync, by one publishing thread at a time
//   (so in order), while the next group syncs; a Put may return just before its event is
//   appended (FlushFeed waits). If the log refuses an append, acknowledged writes stay
//   acknowledged and their events stay queued (retried by each later group, by FlushFeed and
//   by the periodic timer); past feed_backlog_max_events queued events new writes fail with
//   Unavailable until the feed catches up. After a crash, Open re-publishes every committed
//   change from the last transaction found in the topic on. Delete of a whole collection
//   publishes no events for its documents.
//
// Errors (every method): InvalidArgument (malformed name, key, JSON, option), NotFound (no
// such collection or document), PermissionDenied, Aborted, AlreadyExists (see above),
// ResourceExhausted (a document, key list, transaction or the store over its bound),
// Unavailable (the change feed is too far behind, or the WAL could not be written or synced —
// a full disk — and the change was undone: nothing changed; retry later), FailedPrecondition (a
// merge function the collection needs is not registered), Internal (an I/O error that could
// not be undone: the store then refuses every later call until it is reopened, because what
// is in memory may not be on disk), DataLoss (Open: the WAL or snapshot is damaged before its
// tail).
//
// Thread-safety: Store is thread-safe; any number of threads may call it concurrently.
// Blocking: writes block for the group sync (CommitAsync does not; see there); reads may block
// for at most one group sync (TryGet never does). A thread calling in may perform group
// commits and change-feed appends for other callers while it waits for its own.
// All time, files and randomness come from the Env given at Open.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "converge/env.h"
#include "converge/log.h"
#include "converge/status.h"

namespace converge {

// Who is calling: the service name authenticated by the caller of the Store.
struct Caller {
  std::string service;
  bool admin = false;

  static Caller Service(std::string service) { return Caller{std::move(service), false}; }
  static Caller Admin() { return Caller{"admin", true}; }
};

// Merges a stored merge-field value into a written one (both compact JSON text; `stored` is
// empty when the stored document lacks the field). Returns the merged JSON value. Must be
// deterministic; a CRDT join is commutative, associative and idempotent. An error status
// refuses the write (InvalidArgument for a written value of the wrong shape).
using MergeFunction =
    std::function<Result<std::string>(std::string_view stored, std::string_view written)>;

struct CollectionConfig {
  // The owning service (required): may write, and may change or delete the collection.
  std::string owner;
  // Other services that may write; "*" allows every service.
  std::vector<std::string> writers;
  // TTL applied to puts that do not give one; 0 = documents never expire.
  int64_t default_ttl_ms = 0;
  // Largest document in this collection; 0 = the store's max_document_bytes.
  uint32_t max_document_bytes = 0;
  // Top-level field -> name of a merge function: a built-in CRDT join named by its kind
  // ("g-counter", "pn-counter", "bounded-counter", "g-set", "or-set", "flag", "lww-register",
  // "mv-register", "lww-map", "or-map"; values in converge/conflict's JSON form) or one of
  // StoreOptions::merge_functions. Documents must then be JSON objects.
  std::map<std::string, std::string> merge_fields;

  bool operator==(const CollectionConfig&) const = default;
};

// Outcomes of the write ops (puts and deletes; checks are not writes) addressed to one
// collection since the store was opened (not persisted). A refused transaction counts one
// refusal, for the op that was refused (a failed check included); ops refused before reaching
// the collection (malformed input, missing collection, a store over max_store_bytes) are not
// counted.
struct WriteCounts {
  uint64_t ok = 0;        // committed
  uint64_t conflict = 0;  // a failed If-Match / If-None-Match: * (also a refused merge)
  uint64_t denied = 0;    // the caller may not write to the collection
  uint64_t rejected = 0;  // refused otherwise: document too large, nothing to delete, ...
};

struct CollectionInfo {
  std::string name;
  CollectionConfig config;
  uint64_t documents = 0;  // including expired ones not yet swept
  uint64_t bytes = 0;      // keys + values
  WriteCounts writes;
};

// Preconditions of a write (HTTP If-Match / If-None-Match: *).
struct Precondition {
  std::optional<std::string> if_match;  // the ETag, with quotes
  bool if_none_match_any = false;

  static Precondition None() { return {}; }
  static Precondition IfMatch(std::string etag) { return {std::move(etag), false}; }
  static Precondition CreateOnly() { return {std::nullopt, true}; }
};

// ttl_ms values.
inline constexpr int64_t kCollectionDefaultTtl = -1;  // use the collection's default_ttl_ms
// The longest TTL a put or a collection default may set: 100 years (so that now + ttl never
// overflows an expiry time).
inline constexpr int64_t kMaxTtlMs = 100LL * 365 * 24 * 3600 * 1000;
inline constexpr int64_t kNoTtl = 0;                  // never expires

struct Document {
  std::string key;
  std::string value;  // JSON text
  uint64_t version = 0;
  std::string etag;
  int64_t expires_at_ms = 0;  // wall-clock ms since the epoch; 0 = never
};

// One operation of a transaction.
struct WriteOp {
  enum class Kind : uint8_t { kPut = 1, kDelete = 2, kCheck = 3 };
  Kind kind = Kind::kPut;
  std::string collection;
  std::string key;
  std::string value;  // kPut: JSON text
  Precondition precondition;
  int64_t ttl_ms = kCollectionDefaultTtl;  // kPut

  static WriteOp Put(std::string collection, std::string key, std::string value,
                     Precondition pre = {}, int64_t ttl_ms = kCollectionDefaultTtl);
  static WriteOp Delete(std::string collection, std::string key, Precondition pre = {});
  static WriteOp Check(std::string collection, std::string key, Precondition pre);
};

struct WriteResult {
  uint64_t version = 0;  // the new version (kCheck: the checked document's version)
  std::string etag;
  bool created = false;  // kPut: the document did not exist before
  bool merged = false;   // kPut: a stale If-Match was resolved by merging merge fields
};

struct CommitResult {
  uint64_t commit_seq = 0;
  std::vector<WriteResult> results;  // one per op, in order
};

struct ListOptions {
  std::string start_key;   // inclusive; empty = from the first key
  std::string end_key;     // exclusive; empty = to the last key
  std::string prefix;      // only keys with this prefix
  size_t limit = 100;      // 1..StoreOptions::list_max_limit
  std::string page_token;  // from a previous ListResult; resumes after its last key
};

struct ListResult {
  std::vector<Document> documents;
  std::string next_page_token;  // empty when there is nothing more
};

struct StoreStats {
  uint64_t last_seq = 0;            // last commit sequence number assigned
  uint64_t durable_seq = 0;         // every change up to this one is durable
  uint64_t feed_published_seq = 0;  // every change up to this one is in the change feed
  uint64_t feed_backlog_events = 0;
  uint64_t group_commits = 0;  // WAL syncs by the group-commit leader
  uint64_t commits = 0;        // transactions committed since Open
  uint64_t checkpoints = 0;
  uint64_t wal_bytes = 0;  // size of the current WAL file
  uint64_t documents = 0;
  uint64_t bytes = 0;
};

struct StoreOptions {
  // Created if missing; one Store per directory (locked).
  std::string dir;
  Durability durability = Durability::kFsync;
  int64_t sync_interval_ms = 50;  // kInterval

  // Bounds.
  uint32_t max_key_bytes = 512;
  uint32_t max_document_bytes = 1u << 20;
  uint32_t max_json_depth = 64;
  size_t max_collections = 10'000;
  size_t max_transaction_ops = 1000;
  uint64_t max_transaction_bytes = 16ull << 20;
  uint64_t max_store_bytes = 4ull << 30;  // keys + values of all documents
  size_t list_max_limit = 1000;
  uint64_t list_max_bytes = 8ull << 20;  // a page ends early past this many value bytes
  // Bytes of committed changes waiting for the group sync before writers wait.
  uint64_t commit_buffer_max_bytes = 64ull << 20;
  // A checkpoint (snapshot + new WAL) is taken when the WAL grows past this.
  uint64_t checkpoint_wal_bytes = 64ull << 20;

  // TTL sweep: every ttl_sweep_interval_ms (0 = only when ExpireDue is called) at most
  // ttl_sweep_max_docs expired documents are removed in one committed expiry.
  int64_t ttl_sweep_interval_ms = 1000;
  size_t ttl_sweep_max_docs = 1000;

  // Change feed (see the file comment); no feed when feed_log is null. Must outlive the Store.
  Log* feed_log = nullptr;
  std::string feed_topic = "store-changes";
  // Used when the store creates the topic (partitions is forced to 1).
  TopicOptions feed_topic_options;
  std::string feed_source = "/converge/store";
  size_t feed_backlog_max_events = 100'000;
  size_t feed_append_max_events = 1000;  // events per Log::Append (whole transactions)

  // Where CommitAsync hands the group commits, change-feed appends and checkpoints it would
  // otherwise run on the calling thread (e.g. a server's blocking pool), so that callers on
  // I/O threads are not blocked. At most two workers are outstanding (group commits; change
  // events), each running until no such work is left, plus the acknowledgements of a synced
  // group when the next group is waiting (so its sync starts at once). Every task handed over
  // must run before the Store is destroyed. Unset: the calling thread does the work.
  std::function<void(std::function<void()>)> background;

  // Merge functions by name, for CollectionConfig::merge_fields (in addition to built-ins).
  std::map<std::string, MergeFunction> merge_functions;
};

// The checks Store::Open applies to `options`, for callers that refuse bad settings earlier
// (e.g. a configuration at start). The change-feed fields, including the feed topic's name and
// the options the store creates it with, are checked when `with_feed` (Open: feed_log is set).
// InvalidArgument names the field.
Status ValidateStoreOptions(const StoreOptions& options, bool with_feed);
// The options the store creates its change-feed topic with: feed_topic_options with one
// partition and room for the largest change event.
TopicOptions StoreFeedTopicOptions(const StoreOptions& options);

class Store {
 public:
  virtual ~Store() = default;

  // Opens (recovering if needed) the store in options.dir and re-publishes change events the
  // feed is missing. `env` (and options.feed_log) must outlive the Store. FailedPrecondition if
  // another Store holds the directory; InvalidArgument for bad options; DataLoss if a snapshot
  // or a WAL record before the WAL's tail is damaged (a torn tail is cut off silently: it was
  // never acknowledged); Internal for I/O errors.
  static Result<std::unique_ptr<Store>> Open(Env& env, const StoreOptions& options);

  // ---- collections ----
  // Names: 1..128 chars of [A-Za-z0-9._-], not starting with '.', '_' or '-'.
  // Creates a collection. The caller must be the owner named in `config` (or admin).
  // AlreadyExists; InvalidArgument (name, empty owner, bad bounds, unknown merge function);
  // PermissionDenied; ResourceExhausted (max_collections).
  virtual Status CreateCollection(const Caller& caller, const std::string& name,
                                  const CollectionConfig& config) = 0;
  // Replaces a collection's config (owner or admin; the owner may hand it to another owner).
  // NotFound; PermissionDenied; InvalidArgument as above.
  virtual Status UpdateCollection(const Caller& caller, const std::string& name,
                                  const CollectionConfig& config) = 0;
  // Deletes a collection and its documents (owner or admin); no change events are published
  // for its documents. NotFound; PermissionDenied.
  virtual Status DeleteCollection(const Caller& caller, const std::string& name) = 0;
  // NotFound.
  virtual Result<CollectionInfo> DescribeCollection(const std::string& name) = 0;
  // Whether `caller` may write the documents of `collection` (`administer` false) or change or
  // delete the collection itself (true), checked before a request's body is read: OK;
  // PermissionDenied (a denied document write is counted in the collection's write outcomes,
  // as a refused write is); NotFound for a missing collection (collections are listed to every
  // caller, so this reveals nothing). A later write checks again.
  virtual Status CheckWriteAccess(const Caller& caller, const std::string& collection,
                                  bool administer) = 0;
  // Names in order.
  virtual std::vector<std::string> ListCollections() = 0;

  // ---- documents ----
  // The document. NotFound (no collection, no document, or expired); InvalidArgument (key).
  virtual Result<Document> Get(const std::string& collection, const std::string& key) = 0;
  // Like Get, but never blocks: Unavailable when the answer depends on a change still being
  // synced (call Get to wait for it).
  virtual Result<Document> TryGet(const std::string& collection, const std::string& key) = 0;
  // Like Get without blocking a thread: `done` is called exactly once with what Get returns —
  // before GetAsync returns when the answer is durable, else where CommitAsync's `done` of the
  // same group runs (without StoreOptions::background the calling thread may lead that sync).
  // `done` must be quick and must not call this Store.
  using GetCallback = std::function<void(Result<Document>)>;
  virtual void GetAsync(const std::string& collection, const std::string& key,
                        GetCallback done) = 0;
  // A page of documents in key order. NotFound (collection); InvalidArgument (bad range,
  // limit or page token).
  virtual Result<ListResult> List(const std::string& collection, const ListOptions& options) = 0;
  // Writes one document (a one-op transaction). Failures: see the file comment.
  virtual Result<WriteResult> Put(const Caller& caller, const std::string& collection,
                                  const std::string& key, std::string_view value,
                                  const Precondition& precondition = {},
                                  int64_t ttl_ms = kCollectionDefaultTtl) = 0;
  // Deletes one document. NotFound if it does not exist (and no precondition failed first).
  virtual Result<WriteResult> Delete(const Caller& caller, const std::string& collection,
                                     const std::string& key,
                                     const Precondition& precondition = {}) = 0;
  // Commits a transaction atomically. An empty list is InvalidArgument. A failure names the
  // index of the first failing op ("op 3: ...", when there are several) and nothing is applied. A
  // delete of a missing document is NotFound; ResourceExhausted over max_transaction_ops /
  // max_transaction_bytes.
  virtual Result<CommitResult> Commit(const Caller& caller, std::span<const WriteOp> ops) = 0;
  // Commit without blocking for the sync: `done` is called exactly once with what Commit would
  // return — on the calling thread for a refused transaction, else on the thread that finishes
  // the sync of the group holding it (possibly the calling thread, before CommitAsync returns)
  // or on a StoreOptions::background task it hands the group's acknowledgements to.
  // `done` must be quick and must not call this Store. The calling thread may lead a group
  // commit or publish change events for others before returning (blocking on that I/O) —
  // unless StoreOptions::background is set: then that work runs there and CommitAsync does
  // not wait for I/O (it may still wait in rare cases: the commit buffer is full, a block of
  // sequence numbers is reserved). Either way many concurrent writes need few threads and
  // share syncs.
  using CommitCallback = std::function<void(Result<CommitResult>)>;
  virtual void CommitAsync(const Caller& caller, std::vector<WriteOp> ops, CommitCallback done) = 0;

  // ---- maintenance ----
  // Removes up to ttl_sweep_max_docs expired documents now (one committed expiry); returns
  // how many. Internal on I/O errors.
  virtual Result<size_t> ExpireDue() = 0;
  // Writes a snapshot and starts a new WAL; deletes WAL files and snapshots no longer needed.
  virtual Status Checkpoint() = 0;
  // Makes every committed change durable (under kNone / kInterval).
  virtual Status Sync() = 0;
  // Publishes every queued change event; returns the log's error if it still refuses.
  // OK immediately without a feed.
  virtual Status FlushFeed() = 0;
  virtual StoreStats Stats() = 0;
  // OK unless the store refuses every call until it is reopened (an I/O error it could not
  // undo); then that error. A write the disk refused and the store undid is not reported here
  // (the store works again as soon as a write succeeds). For readiness checks.
  virtual Status Health() { return Status::Ok(); }

  // Validation helpers (also used by the HTTP layer). InvalidArgument with the reason.
  static Status ValidateCollectionName(std::string_view name);
  static Status ValidateKey(std::string_view key, uint32_t max_key_bytes);
};

// "\"<version>\"".
std::string ETagForVersion(uint64_t version);
// The version in an ETag made by ETagForVersion; InvalidArgument for anything else.
Result<uint64_t> VersionFromETag(std::string_view etag);

}  // namespace converge
