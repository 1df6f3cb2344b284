#include "server/multi_writers.h"
#include "server/json_util.h"

#include <atomic>
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <boost/json/value.hpp>
#include <charconv>
#include <condition_variable>
#include <cstdio>
#include <mutex>
#include <set>
#include <thread>

#include "core/event_internal.h"
#include "reconcile/session.h"
#include "server/remote_source.h"
#include "store/builtin_merge.h"

namespace converge::server {

namespace json = boost::json;
namespace mw = replica::mw;

namespace {

constexpr char kOwner[] = "converge-multi-writer";
constexpr char kMetaPrefix[] = "converge-mw.";
constexpr size_t kListPage = 1000;
// Keys per pulled page: a page is one store transaction of two ops per key.
constexpr uint64_t kPullLimit = 100;

Caller OwnerCaller() { return Caller{kOwner, true}; }

std::string OriginKey(uint64_t seq) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "o/%020llu", static_cast<unsigned long long>(seq));
  return buf;
}

std::string Base64(std::string_view bytes) {
  std::string out;
  internal::AppendBase64(bytes, &out);
  return out;
}



Result<std::string> Unbase64(const json::object& o, const char* name, const std::string& what) {
  const json::value* v = o.if_contains(name);
  std::string out;
  if (v == nullptr || !v->is_string() || !internal::DecodeBase64(v->as_string(), &out)) {
    return DataLossError(what + ": field '" + name + "' is not base64");
  }
  return out;
}

Result<uint64_t> Number(std::string_view text, const std::string& what) {
  uint64_t v = 0;
  auto [p, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (ec != std::errc() || p != text.data() + text.size()) {
    return DataLossError(what + ": not a number in its key");
  }
  return v;
}

// Creates `name` owned by the multi-writer runner, or checks that it is.
Status EnsureCollection(Store& store, const std::string& name) {
  Result<CollectionInfo> info = store.DescribeCollection(name);
  if (info.ok()) {
    if (info->config.owner != kOwner) {
      return FailedPreconditionError("collection '" + name + "' exists and is owned by '" +
                                     info->config.owner +
                                     "': a multi-writer collection is one of its own");
    }
    return Status::Ok();
  }
  if (info.status().code() != StatusCode::kNotFound) return info.status();
  CollectionConfig config;
  config.owner = kOwner;
  Status created = store.CreateCollection(OwnerCaller(), name, config);
  if (created.code() == StatusCode::kAlreadyExists) return EnsureCollection(store, name);
  return created;
}

// The node's state in the store: the collection holds each key's resolved document (what the
// store's routes and feed show), the bookkeeping collection the rest:
//   n          {"own_seq","trimmed","hlc"}
//   k/<key>    {"t":<tombstone_since_us>,"s":"<base64 KeyState>"}
//   o/<seq>    {"k":"<key>"}                  (20 digits, so listing order is numeric order)
//   p/<peer>   {"next":N,"k":"<base64 knowledge vv>"}
// A Commit is one store transaction. Positions are guarded by the collection's mutex (one
// Node per collection per server), not by If-Match.
class StoreStorage : public mw::Storage {
 public:
  StoreStorage(Store& store, std::string collection, mw::PolicySpec spec)
      : store_(store),
        collection_(std::move(collection)),
        meta_(MultiWriterMetaCollection(collection_)),
        spec_(std::move(spec)) {}

  Result<mw::Snapshot> Load() override {
    CONVERGE_RETURN_IF_ERROR(EnsureCollection(store_, meta_));
    CONVERGE_RETURN_IF_ERROR(EnsureCollection(store_, collection_));
    visible_.clear();
    CONVERGE_RETURN_IF_ERROR(ListAll(collection_, [&](const Document& d) {
      visible_.insert(d.key);
      return Status::Ok();
    }));
    mw::Snapshot snap;
    CONVERGE_RETURN_IF_ERROR(ListAll(meta_, [&](const Document& d) -> Status {
      const std::string what = "'" + meta_ + "/" + d.key + "'";
      CONVERGE_ASSIGN_OR_RETURN(json::object o, ParseStoredObject(d.value, what));
      if (d.key == "n") {
        snap.own_seq = StoredU64(o, "own_seq");
        snap.trimmed = StoredU64(o, "trimmed");
        const json::value* h = o.if_contains("hlc");
        if (h != nullptr && h->is_string()) {
          CONVERGE_ASSIGN_OR_RETURN(snap.hlc_floor, HlcTimestamp::Parse(h->as_string()));
        }
      } else if (d.key.starts_with("k/")) {
        CONVERGE_ASSIGN_OR_RETURN(std::string bytes, Unbase64(o, "s", what));
        std::string_view in = bytes;
        Result<mw::KeyState> state = mw::KeyState::FromBinary(&in);
        if (!state.ok()) return DataLossError(what + ": " + std::string(state.status().message()));
        snap.keys[d.key.substr(2)] =
            mw::StoredKey{std::move(*state), static_cast<int64_t>(StoredU64(o, "t"))};
      } else if (d.key.starts_with("o/")) {
        const json::value* k = o.if_contains("k");
        if (k == nullptr || !k->is_string()) return DataLossError(what + ": no key");
        CONVERGE_ASSIGN_OR_RETURN(uint64_t seq, Number(d.key.substr(2), what));
        snap.origin[seq] = std::string(k->as_string());
      } else if (d.key.starts_with("p/")) {
        CONVERGE_ASSIGN_OR_RETURN(std::string bytes, Unbase64(o, "k", what));
        Result<conflict::VersionVector> k = conflict::VersionVector::FromBinary(bytes);
        if (!k.ok()) return DataLossError(what + ": " + std::string(k.status().message()));
        CONVERGE_ASSIGN_OR_RETURN(uint64_t peer, Number(d.key.substr(2), what));
        snap.peers[peer] = mw::PeerPosition{std::max<uint64_t>(StoredU64(o, "next"), 1), *k};
      }
      return Status::Ok();
    }));
    n_ = snap;
    n_.keys.clear();
    n_.origin.clear();
    n_.peers.clear();
    return snap;
  }

  Status Commit(const mw::Commit& c) override {
    std::vector<WriteOp> ops;
    std::set<std::string> now_visible = visible_;
    for (const auto& [key, value] : c.keys) {
      if (value) {
        std::string state;
        value->state.AppendBinary(&state);
        ops.push_back(WriteOp::Put(meta_, "k/" + key,
                                   "{\"t\":" + std::to_string(value->tombstone_since_us) +
                                       ",\"s\":\"" + Base64(state) + "\"}",
                                   {}, kNoTtl));
        CONVERGE_ASSIGN_OR_RETURN(std::optional<std::string> doc, mw::Resolve(spec_, value->state));
        if (doc) {
          ops.push_back(WriteOp::Put(collection_, key, *doc, {}, kNoTtl));
          now_visible.insert(key);
          continue;
        }
      } else {
        ops.push_back(WriteOp::Delete(meta_, "k/" + key));
      }
      if (now_visible.erase(key) != 0) ops.push_back(WriteOp::Delete(collection_, key));
    }
    for (const auto& [seq, key] : c.origin) {
      if (key) {
        std::string v = "{\"k\":";
        json::string s(*key);
        v += json::serialize(json::value(s));
        v += "}";
        ops.push_back(WriteOp::Put(meta_, OriginKey(seq), v, {}, kNoTtl));
      } else {
        ops.push_back(WriteOp::Delete(meta_, OriginKey(seq)));
      }
    }
    mw::Snapshot n = n_;
    if (c.own_seq) n.own_seq = *c.own_seq;
    if (c.trimmed) n.trimmed = *c.trimmed;
    if (c.hlc_floor) n.hlc_floor = *c.hlc_floor;
    if (c.own_seq || c.trimmed || c.hlc_floor) {
      ops.push_back(WriteOp::Put(meta_, "n",
                                 "{\"own_seq\":" + std::to_string(n.own_seq) +
                                     ",\"trimmed\":" + std::to_string(n.trimmed) + ",\"hlc\":\"" +
                                     n.hlc_floor.ToString() + "\"}",
                                 {}, kNoTtl));
    }
    if (c.peer) {
      ops.push_back(WriteOp::Put(meta_, "p/" + std::to_string(c.peer->first),
                                 "{\"next\":" + std::to_string(c.peer->second.next) + ",\"k\":\"" +
                                     Base64(c.peer->second.knowledge.ToBinary()) + "\"}",
                                 {}, kNoTtl));
    }
    if (ops.empty()) return Status::Ok();
    Result<CommitResult> r = store_.Commit(OwnerCaller(), ops);
    if (!r.ok()) return r.status();
    visible_ = std::move(now_visible);
    n_ = std::move(n);
    return Status::Ok();
  }

 private:
  template <typename F>
  Status ListAll(const std::string& collection, F each) {
    ListOptions options;
    options.limit = kListPage;
    for (;;) {
      CONVERGE_ASSIGN_OR_RETURN(ListResult page, store_.List(collection, options));
      for (const Document& d : page.documents) CONVERGE_RETURN_IF_ERROR(each(d));
      if (page.next_page_token.empty()) return Status::Ok();
      options.page_token = page.next_page_token;
    }
  }

  Store& store_;
  const std::string collection_;
  const std::string meta_;
  const mw::PolicySpec spec_;
  std::set<std::string> visible_;  // keys with a document in the collection
  mw::Snapshot n_;                 // own_seq, trimmed, hlc_floor as stored
};

}  // namespace

std::string MultiWriterMetaCollection(const std::string& collection) {
  return kMetaPrefix + collection;
}

Status ValidateMultiWriterCollection(const std::string& collection) {
  CONVERGE_RETURN_IF_ERROR(Store::ValidateCollectionName(collection));
  if (collection.starts_with(kMetaPrefix) || collection.starts_with("converge-replica.")) {
    return InvalidArgumentError("collection names starting with '" + std::string(kMetaPrefix) +
                                "' or 'converge-replica.' are bookkeeping");
  }
  return Store::ValidateCollectionName(MultiWriterMetaCollection(collection));
}

Result<mw::PolicySpec> PolicySpecFor(const MultiWriterConfig& config) {
  mw::PolicySpec spec;
  CONVERGE_ASSIGN_OR_RETURN(spec.policy, mw::ParsePolicy(config.policy));
  for (const auto& [field, kind] : config.crdt_fields) {
    const MergeFunction* f = store_internal::BuiltinMergeFunction(kind);
    if (f == nullptr) return InvalidArgumentError("unknown CRDT kind '" + kind + "'");
    spec.crdt_fields[field] = *f;
  }
  if (!config.resolver.empty()) {
    const MergeFunction* f = store_internal::BuiltinMergeFunction(config.resolver);
    if (f == nullptr) return InvalidArgumentError("no resolver '" + config.resolver + "'");
    spec.resolver_name = config.resolver;
    spec.resolver = *f;
  }
  spec.max_siblings = config.max_siblings;
  CONVERGE_RETURN_IF_ERROR(mw::ValidatePolicy(spec));
  return spec;
}

std::string FormatContext(const conflict::VersionVector& vv) {
  std::string out = "mwc1:";
  bool first = true;
  for (const auto& e : vv.entries()) {
    if (!first) out += ',';
    first = false;
    out += std::to_string(e.replica.value()) + "=" + std::to_string(e.counter);
  }
  return out;
}

Result<conflict::VersionVector> ParseContext(std::string_view text) {
  auto bad = [&] {
    return InvalidArgumentError("Converge-Context: not a context this server handed out ('" +
                                std::string(text.substr(0, 100)) + "')");
  };
  if (!text.starts_with("mwc1:") || text.size() > 16384) return bad();
  text.remove_prefix(5);
  conflict::VersionVector vv;
  while (!text.empty()) {
    const size_t comma = text.find(',');
    std::string_view item = text.substr(0, comma);
    const size_t eq = item.find('=');
    if (eq == std::string_view::npos) return bad();
    uint64_t node = 0, counter = 0;
    auto [p1, e1] = std::from_chars(item.data(), item.data() + eq, node);
    auto [p2, e2] = std::from_chars(item.data() + eq + 1, item.data() + item.size(), counter);
    if (e1 != std::errc() || p1 != item.data() + eq || e2 != std::errc() ||
        p2 != item.data() + item.size() || node == 0 || counter == 0 ||
        vv.Get(conflict::ReplicaId(node)) != 0) {
      return bad();
    }
    vv.Observe(conflict::ReplicaId(node), counter);
    if (comma == std::string_view::npos) break;
    text.remove_prefix(comma + 1);
    if (text.empty()) return bad();
  }
  return vv;
}

struct MultiWriters::Collection {
  Collection(Env& e, Store& s, MultiWriterConfig c) : env(e), store(s), config(std::move(c)) {}
  Env& env;
  Store& store;
  const MultiWriterConfig config;
  mw::PolicySpec spec;

  std::mutex mu;  // the node and its storage
  std::unique_ptr<StoreStorage> storage;
  std::unique_ptr<mw::Node> node;
  Status not_open = UnavailableError("not opened yet");

  std::vector<std::unique_ptr<RemoteNode>> remotes;  // same order as config.peers
  std::thread thread;
  std::mutex stop_mu;
  std::condition_variable stop_cv;
  bool stop = false;

  std::atomic<uint64_t> writes{0}, merged{0}, unchanged{0}, pulls{0}, pull_errors{0}, purged{0};
  std::atomic<uint64_t> keys{0};
  std::atomic<uint64_t> reconcile_runs{0}, reconcile_differences{0}, reconcile_repaired{0},
      reconcile_failures{0};
  std::unique_ptr<reconcile::Responder> responder;  // under mu, over node->digest()
  // Per peer (same order as config.peers): its writes not pulled yet as of the last pull, and
  // when a pull last succeeded (monotonic ms; 0 = never).
  std::vector<std::atomic<uint64_t>> peer_lag;
  std::vector<std::atomic<int64_t>> peer_pulled_ms;
  std::map<std::string, bool> logged;  // errors logged once (thread only)

  void Log(const std::string& what) {
    if (logged.emplace(what, true).second) {
      std::fprintf(stderr, "converge serve: multi-writer collection '%s': %s\n",
                   config.collection.c_str(), what.c_str());
    }
  }

  // Under mu.
  Status EnsureOpen() {
    if (node != nullptr) return Status::Ok();
    auto s = std::make_unique<StoreStorage>(store, config.collection, spec);
    mw::NodeOptions o;
    o.self = config.node_id;
    for (const MultiWriterPeerConfig& p : config.peers) o.peers.push_back(p.node_id);
    o.policy = spec;
    o.tombstone_retention_ms = config.tombstone_retention_ms;
    Result<std::unique_ptr<mw::Node>> n = mw::Node::Open(env, *s, o);
    if (!n.ok()) {
      not_open = n.status();
      return n.status();
    }
    storage = std::move(s);
    node = std::move(*n);
    keys = node->keys().size();
    not_open = Status::Ok();
    return Status::Ok();
  }

  // One anti-entropy run with peer i (docs/formats/replica.md, "Multi-writer collections"):
  // a reconciliation session over both nodes' (key, state) digests, then every key the peer
  // has and this node lacks, or holds in another state, is merged from the peer's state now.
  // A merge never reverts a write, also one made during the run; keys written during the run
  // are left to the next run.
  Status AntiEntropy(size_t i) {
    CONVERGE_RETURN_IF_ERROR(Connect(i));
    ++reconcile_runs;
    std::unique_ptr<reconcile::Initiator> initiator;
    std::string message;
    {
      std::lock_guard lock(mu);
      initiator = std::make_unique<reconcile::Initiator>(node->digest(), env.random().Next64());
      message = initiator->Start();
    }
    for (int round = 0; round < 64; ++round) {
      Result<std::string> reply = remotes[i]->MultiWriterPost("reconcile", message);
      for (int retry = 0;
           !reply.ok() && reply.status().code() == StatusCode::kUnavailable && retry < 3; ++retry) {
        std::string again;
        {
          std::lock_guard lock(mu);
          again = initiator->Retransmit();
        }
        reply = remotes[i]->MultiWriterPost("reconcile", std::move(again));
      }
      if (!reply.ok()) return reply.status();
      std::lock_guard lock(mu);
      Result<reconcile::Initiator::Step> step = initiator->OnReply(*reply);
      if (!step.ok()) return step.status();
      if (step->kind == reconcile::Initiator::Step::kDone) break;
      if (step->kind == reconcile::Initiator::Step::kSend) message = step->message;
    }
    if (!initiator->done()) return DeadlineExceededError("the reconciliation did not finish");
    (void)remotes[i]->MultiWriterPost("reconcile", initiator->Finish());
    const reconcile::ReconcileResult& result = initiator->result();
    reconcile_differences += result.differences();
    std::string keys;
    for (const auto* list : {&result.missing_local, &result.divergent}) {
      for (const reconcile::Difference& d : *list) keys += d.key + "\n";
    }
    if (keys.empty()) return Status::Ok();
    CONVERGE_ASSIGN_OR_RETURN(std::string bytes, remotes[i]->MultiWriterPost("states", keys));
    CONVERGE_ASSIGN_OR_RETURN(auto states, mw::DecodeStates(bytes));
    std::lock_guard lock(mu);
    for (const auto& [key, state] : states) {
      CONVERGE_ASSIGN_OR_RETURN(bool changed, node->Repair(key, state));
      if (changed) ++reconcile_repaired;
    }
    keys_count();
    return Status::Ok();
  }
  void keys_count() { keys = node->keys().size(); }

  void Run() {
    std::vector<int64_t> next_try(config.peers.size(), 0), backoff(config.peers.size(), 100);
    int64_t next_reconcile =
        env.clock().NowMonotonicNanos() / 1'000'000 + config.reconcile_interval_ms;
    for (;;) {
      {
        std::unique_lock lock(stop_mu);
        if (stop) return;
      }
      bool more = false;
      Status open;
      {
        std::lock_guard lock(mu);
        open = EnsureOpen();
      }
      if (!open.ok()) {
        Log("cannot open: " + std::string(open.message()));
      } else {
        for (size_t i = 0; i < config.peers.size(); ++i) {
          const int64_t now = env.clock().NowMonotonicNanos() / 1'000'000;
          if (now < next_try[i]) continue;
          Status s = PullOnce(i, &more);
          if (s.ok()) {
            backoff[i] = 100;
            continue;
          }
          ++pull_errors;
          Log("peer " + std::to_string(config.peers[i].node_id) + ": " + std::string(s.message()));
          next_try[i] = now + backoff[i];
          backoff[i] = std::min<int64_t>(backoff[i] * 2, 5000);
        }
        {
          std::lock_guard lock(mu);
          Result<size_t> p = node->PurgeTombstones();
          if (p.ok()) {
            purged += *p;
          } else {
            Log("purge: " + std::string(p.status().message()));
          }
          keys = node->keys().size();
        }
        const int64_t now = env.clock().NowMonotonicNanos() / 1'000'000;
        if (config.reconcile_interval_ms > 0 && now >= next_reconcile) {
          next_reconcile = now + config.reconcile_interval_ms;
          for (size_t i = 0; i < config.peers.size(); ++i) {
            Status s = AntiEntropy(i);
            if (!s.ok()) {
              ++reconcile_failures;
              Log("anti-entropy with peer " + std::to_string(config.peers[i].node_id) + ": " +
                  std::string(s.message()));
            }
          }
        }
      }
      if (more) continue;
      std::unique_lock lock(stop_mu);
      stop_cv.wait_for(lock, std::chrono::milliseconds(config.poll_interval_ms),
                       [this] { return stop; });
    }
  }

  // The connection to peer i, opened again if it could not be (a CA file unreadable at start).
  Status Connect(size_t i) {
    if (remotes[i] != nullptr) return Status::Ok();
    const MultiWriterPeerConfig& p = config.peers[i];
    RemoteSourceOptions o;
    o.url = p.url;
    o.token = p.token;
    o.collection = config.collection;
    o.ca_file = p.ca_file;
    CONVERGE_ASSIGN_OR_RETURN(remotes[i], RemoteNode::Open(o));
    return Status::Ok();
  }

  Status PullOnce(size_t i, bool* more) {
    CONVERGE_RETURN_IF_ERROR(Connect(i));
    const uint64_t peer = config.peers[i].node_id;
    uint64_t from;
    {
      std::lock_guard lock(mu);
      from = node->NextFrom(peer);
    }
    ++pulls;
    CONVERGE_ASSIGN_OR_RETURN(std::string bytes, remotes[i]->MultiWriterChanges(from, kPullLimit));
    Result<mw::Page> page = mw::Page::FromBinary(bytes);
    if (!page.ok()) return page.status();
    if (page->origin != peer) {
      return FailedPreconditionError("the node at " + config.peers[i].url + " is node " +
                                     std::to_string(page->origin) + ", not " +
                                     std::to_string(peer));
    }
    std::lock_guard lock(mu);
    Result<mw::ApplyResult> r = node->Apply(*page);
    if (!r.ok()) return r.status();
    merged += r->merged;
    unchanged += r->unchanged;
    peer_lag[i] = page->end - page->next;
    peer_pulled_ms[i] = env.clock().NowMonotonicNanos() / 1'000'000;
    if (page->next < page->end) *more = true;
    return Status::Ok();
  }
};

std::unique_ptr<MultiWriters> MultiWriters::Start(Env& env, Store& store,
                                                  const ServerConfig& config) {
  std::unique_ptr<MultiWriters> out(new MultiWriters());
  for (const MultiWriterConfig& c : config.multi_writer) {
    auto col = std::make_unique<Collection>(env, store, c);
    Result<mw::PolicySpec> spec = PolicySpecFor(c);
    // Validated with the config; a failure here would be a bug, reported on every request.
    if (spec.ok()) col->spec = std::move(*spec);
    col->remotes.resize(c.peers.size());  // connected by the collection's thread
    col->peer_lag = std::vector<std::atomic<uint64_t>>(c.peers.size());
    col->peer_pulled_ms = std::vector<std::atomic<int64_t>>(c.peers.size());
    if (!spec.ok()) {
      col->not_open = spec.status();
    } else {
      Collection* raw = col.get();
      raw->thread = std::thread([raw] { raw->Run(); });
    }
    out->collections_[c.collection] = std::move(col);
  }
  return out;
}

MultiWriters::~MultiWriters() { Stop(); }

void MultiWriters::Stop() {
  for (auto& [name, c] : collections_) {
    {
      std::lock_guard lock(c->stop_mu);
      c->stop = true;
    }
    c->stop_cv.notify_all();
  }
  for (auto& [name, c] : collections_) {
    if (c->thread.joinable()) c->thread.join();
  }
}

const MultiWriterConfig* MultiWriters::Find(const std::string& collection) const {
  auto it = collections_.find(collection);
  return it == collections_.end() ? nullptr : &it->second->config;
}

Result<MultiWriters::Collection*> MultiWriters::Open(const std::string& collection) {
  auto it = collections_.find(collection);
  if (it == collections_.end()) {
    return NotFoundError("collection '" + collection.substr(0, 200) +
                         "' is not a multi-writer collection on this node");
  }
  return it->second.get();
}

Result<std::optional<MultiWriters::Read>> MultiWriters::Get(const std::string& collection,
                                                            const std::string& key) {
  CONVERGE_ASSIGN_OR_RETURN(Collection * c, Open(collection));
  std::lock_guard lock(c->mu);
  if (Status s = c->EnsureOpen(); !s.ok()) return UnavailableError(s.message());
  std::optional<mw::KeyState> state = c->node->Get(key);
  if (!state) return std::optional<Read>();
  CONVERGE_ASSIGN_OR_RETURN(std::optional<std::string> doc, mw::Resolve(c->spec, *state));
  return std::optional<Read>(Read{std::move(*state), std::move(doc)});
}

Result<MultiWriters::Read> MultiWriters::Write(
    const std::string& collection, const std::string& key, std::optional<std::string> document,
    const std::optional<conflict::VersionVector>& context) {
  CONVERGE_ASSIGN_OR_RETURN(Collection * c, Open(collection));
  std::lock_guard lock(c->mu);
  if (Status s = c->EnsureOpen(); !s.ok()) return UnavailableError(s.message());
  const conflict::VersionVector* ctx = context ? &*context : nullptr;
  Result<mw::KeyState> state =
      document ? c->node->Put(key, std::move(*document), ctx) : c->node->Delete(key, ctx);
  if (!state.ok()) {
    if (state.status().code() == StatusCode::kResourceExhausted) {
      return FailedPreconditionError(state.status().message());
    }
    return state.status();
  }
  ++c->writes;
  c->keys = c->node->keys().size();
  CONVERGE_ASSIGN_OR_RETURN(std::optional<std::string> doc, mw::Resolve(c->spec, *state));
  return Read{std::move(*state), std::move(doc)};
}

Result<std::string> MultiWriters::Export(const std::string& collection, uint64_t from,
                                         uint64_t limit) {
  CONVERGE_ASSIGN_OR_RETURN(Collection * c, Open(collection));
  std::lock_guard lock(c->mu);
  if (Status s = c->EnsureOpen(); !s.ok()) return UnavailableError(s.message());
  CONVERGE_ASSIGN_OR_RETURN(mw::Page page, c->node->Export(from, limit));
  return page.ToBinary();
}

Result<std::optional<std::string>> MultiWriters::Reconcile(const std::string& collection,
                                                           std::string_view message) {
  CONVERGE_ASSIGN_OR_RETURN(Collection * c, Open(collection));
  std::lock_guard lock(c->mu);
  if (Status s = c->EnsureOpen(); !s.ok()) return UnavailableError(s.message());
  if (c->responder == nullptr) {
    c->responder = std::make_unique<reconcile::Responder>(c->node->digest(), c->env);
  }
  return c->responder->Handle(message);
}

Result<std::string> MultiWriters::States(const std::string& collection, std::string_view keys) {
  CONVERGE_ASSIGN_OR_RETURN(Collection * c, Open(collection));
  std::lock_guard lock(c->mu);
  if (Status s = c->EnsureOpen(); !s.ok()) return UnavailableError(s.message());
  std::vector<std::pair<std::string, mw::KeyState>> out;
  size_t n = 0;
  while (!keys.empty()) {
    const size_t nl = keys.find('\n');
    std::string key(keys.substr(0, nl));
    keys.remove_prefix(nl == std::string_view::npos ? keys.size() : nl + 1);
    if (key.empty()) continue;
    if (++n > 100'000) return InvalidArgumentError("more than 100000 keys");
    if (std::optional<mw::KeyState> state = c->node->Get(key)) {
      out.emplace_back(std::move(key), std::move(*state));
    }
  }
  return mw::EncodeStates(out);
}

void MultiWriters::CollectMetrics(std::vector<MetricsRegistry::Sample>* out) const {
  for (const auto& [name, c] : collections_) {
    const Labels labels = {{"collection", name}};
    auto counter = [&](const char* metric, const char* help, uint64_t v) {
      out->push_back({metric, help, "counter", labels, static_cast<double>(v)});
    };
    counter("converge_multi_writer_writes_total", "Local writes to the multi-writer collection.",
            c->writes.load());
    counter("converge_multi_writer_merged_total",
            "Peer states that changed a key of the collection when merged.", c->merged.load());
    counter("converge_multi_writer_unchanged_total",
            "Peer states already covered here (merging them changed nothing).",
            c->unchanged.load());
    counter("converge_multi_writer_pulls_total", "Pages asked of the peers.", c->pulls.load());
    counter("converge_multi_writer_pull_errors_total",
            "Pulls that failed (peer unreachable, token refused, ...; see the server's log).",
            c->pull_errors.load());
    counter("converge_multi_writer_purged_total", "Stable tombstones purged.", c->purged.load());
    counter("converge_multi_writer_reconcile_runs_total",
            "Anti-entropy runs with a peer (reconcile_interval_ms).", c->reconcile_runs.load());
    counter("converge_multi_writer_reconcile_differences_total",
            "Keys the anti-entropy runs found different (missing here, there, or in another "
            "state).",
            c->reconcile_differences.load());
    counter("converge_multi_writer_reconcile_repaired_total",
            "Keys the anti-entropy runs repaired by merging the peer's state.",
            c->reconcile_repaired.load());
    counter("converge_multi_writer_reconcile_failures_total",
            "Anti-entropy runs that failed (see the server's log).", c->reconcile_failures.load());
    const int64_t now_ms = c->env.clock().NowMonotonicNanos() / 1'000'000;
    for (size_t i = 0; i < c->config.peers.size(); ++i) {
      const Labels peer = {{"collection", name},
                           {"peer", std::to_string(c->config.peers[i].node_id)}};
      out->push_back({"converge_multi_writer_peer_lag_writes",
                      "Writes of the peer not pulled yet, as of the last pull.", "gauge", peer,
                      static_cast<double>(c->peer_lag[i].load())});
      const int64_t pulled = c->peer_pulled_ms[i].load();
      out->push_back({"converge_multi_writer_peer_last_pull_age_ms",
                      "Time since the last successful pull from the peer (-1: none yet).", "gauge",
                      peer, pulled == 0 ? -1.0 : static_cast<double>(now_ms - pulled)});
    }
    out->push_back({"converge_multi_writer_keys",
                    "Keys with causal state (live, or tombstones not yet purged).", "gauge", labels,
                    static_cast<double>(c->keys.load())});
  }
}

}  // namespace converge::server
