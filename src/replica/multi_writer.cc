#include "replica/multi_writer.h"

#include <algorithm>
#include <boost/json.hpp>
#include <utility>

#include "core/coding.h"
#include "reconcile/riblt.h"

namespace converge::replica::mw {
namespace {

using namespace converge::internal;  // the varint and length-prefix codecs

using conflict::Dot;
using conflict::ReplicaId;
using conflict::VersionVector;

// The LWW order of siblings: (hlc, node, counter); the counter only orders one node's two
// writes with one timestamp, which a single HLC never hands out.
bool LwwLess(const Sibling& a, const Sibling& b) {
  return std::tie(a.hlc, a.dot.replica, a.dot.counter) <
         std::tie(b.hlc, b.dot.replica, b.dot.counter);
}

const Sibling* Greatest(const std::vector<Sibling>& siblings, bool live_only) {
  const Sibling* best = nullptr;
  for (const Sibling& s : siblings) {
    if (live_only && s.deleted) continue;
    if (best == nullptr || LwwLess(*best, s)) best = &s;
  }
  return best;
}

// Joins the declared CRDT fields of `from` into `into` (both JSON objects; a document that is
// not an object, or a field that is absent, contributes nothing).
Status JoinFields(const PolicySpec& spec, std::string_view from, std::string* into) {
  boost::system::error_code ec;
  boost::json::value f = boost::json::parse(from, ec);
  if (ec || !f.is_object()) return Status::Ok();
  boost::json::value t = boost::json::parse(*into, ec);
  if (ec || !t.is_object()) return Status::Ok();
  bool changed = false;
  for (const auto& [field, join] : spec.crdt_fields) {
    const boost::json::value* fv = f.as_object().if_contains(field);
    if (fv == nullptr) continue;
    const boost::json::value* tv = t.as_object().if_contains(field);
    std::string stored = tv == nullptr ? std::string() : boost::json::serialize(*tv);
    Result<std::string> joined = join(stored, boost::json::serialize(*fv));
    if (!joined.ok()) {
      return InvalidArgumentError("field '" + field +
                                  "': " + std::string(joined.status().message()));
    }
    boost::json::value jv = boost::json::parse(*joined, ec);
    if (ec) return InternalError("field '" + field + "': the join is not JSON");
    if (tv == nullptr || *tv != jv) {
      t.as_object()[field] = std::move(jv);
      changed = true;
    }
  }
  if (changed) *into = boost::json::serialize(t);
  return Status::Ok();
}

// Brings merged siblings to the policy's form: only LWW collapses, to its winner. The winner is
// the same whatever order states were merged in: a write that covers another was made after
// seeing it, so its HLC is greater, and the greatest sibling of all is never covered.
// crdt-fields keeps its siblings (one per writer at most, as each write covers what its node
// holds) and joins them on read: collapsing them early would lose a field's increments when the
// collapsed winner is later covered by a write that never saw the losers.
void Collapse(const PolicySpec& spec, KeyState* state) {
  if (state->siblings.size() <= 1 || spec.policy != Policy::kLww) return;
  Sibling winner = *Greatest(state->siblings, /*live_only=*/false);
  state->siblings.assign(1, std::move(winner));
}

// The greatest HLC among tombstones (a delete resets the CRDT fields of what it beat).
std::optional<HlcTimestamp> LatestTombstone(const std::vector<Sibling>& siblings) {
  std::optional<HlcTimestamp> t;
  for (const Sibling& s : siblings) {
    if (s.deleted && (!t || *t < s.hlc)) t = s.hlc;
  }
  return t;
}

bool Covers(const VersionVector& knowledge, const VersionVector& vv) {
  for (const auto& e : vv.entries()) {
    if (knowledge.Get(e.replica) < e.counter) return false;
  }
  return true;
}

void PutString(std::string* out, std::string_view s) { PutLengthPrefixed(out, s); }

// Work per PurgeTombstones call, so that one storage commit stays small.
constexpr size_t kMaxTrimPerCall = 400;
constexpr size_t kMaxPurgePerCall = 200;

}  // namespace

std::string_view PolicyName(Policy policy) {
  switch (policy) {
    case Policy::kLww:
      return "lww";
    case Policy::kMultiValue:
      return "multi-value";
    case Policy::kCrdtFields:
      return "crdt-fields";
    case Policy::kResolver:
      return "resolver";
  }
  return "unknown";
}

Result<Policy> ParsePolicy(std::string_view name) {
  for (Policy p : {Policy::kLww, Policy::kMultiValue, Policy::kCrdtFields, Policy::kResolver}) {
    if (PolicyName(p) == name) return p;
  }
  return InvalidArgumentError("unknown multi-writer policy '" + std::string(name) +
                              "' (one of lww, multi-value, crdt-fields, resolver)");
}

Status ValidatePolicy(const PolicySpec& spec) {
  if (spec.policy == Policy::kCrdtFields && spec.crdt_fields.empty()) {
    return InvalidArgumentError("policy crdt-fields needs at least one field");
  }
  if (spec.policy == Policy::kResolver && !spec.resolver) {
    return InvalidArgumentError("policy resolver needs a registered resolver");
  }
  if (spec.max_siblings == 0) return InvalidArgumentError("max_siblings must be >= 1");
  return Status::Ok();
}

bool KeyState::deleted() const {
  for (const Sibling& s : siblings) {
    if (!s.deleted) return false;
  }
  return true;
}

void KeyState::AppendBinary(std::string* out) const {
  PutString(out, vv.ToBinary());
  PutVarint64(out, siblings.size());
  for (const Sibling& s : siblings) {
    PutVarint64(out, s.dot.replica.value());
    PutVarint64(out, s.dot.counter);
    PutVarint64(out, ZigZagEncode(s.hlc.physical_micros));
    PutVarint64(out, s.hlc.logical);
    out->push_back(s.deleted ? 1 : 0);
    PutString(out, s.document);
  }
}

Result<KeyState> KeyState::FromBinary(std::string_view* in) {
  KeyState state;
  std::string_view vv;
  if (!GetLengthPrefixed(in, &vv)) return InvalidArgumentError("key state: truncated vv");
  CONVERGE_ASSIGN_OR_RETURN(state.vv, VersionVector::FromBinary(vv));
  uint64_t n = 0;
  if (!GetVarint64(in, &n) || n > in->size()) {
    return InvalidArgumentError("key state: bad sibling count");
  }
  for (uint64_t i = 0; i < n; ++i) {
    Sibling s;
    uint64_t replica = 0, counter = 0, physical = 0, logical = 0;
    std::string_view doc;
    if (!GetVarint64(in, &replica) || !GetVarint64(in, &counter) || !GetVarint64(in, &physical) ||
        !GetVarint64(in, &logical) || in->empty()) {
      return InvalidArgumentError("key state: truncated sibling");
    }
    const char deleted = in->front();
    in->remove_prefix(1);
    if (!GetLengthPrefixed(in, &doc) || (deleted != 0 && deleted != 1) || logical > UINT32_MAX ||
        replica == 0 || counter == 0) {
      return InvalidArgumentError("key state: bad sibling");
    }
    s.dot = Dot{ReplicaId(replica), counter};
    s.hlc = HlcTimestamp{ZigZagDecode(physical), static_cast<uint32_t>(logical)};
    s.deleted = deleted == 1;
    s.document = std::string(doc);
    if (!state.siblings.empty() && !(state.siblings.back().dot < s.dot)) {
      return InvalidArgumentError("key state: siblings not sorted by dot");
    }
    if (!state.vv.Contains(s.dot)) {
      return InvalidArgumentError("key state: a sibling's dot is not in its version vector");
    }
    state.siblings.push_back(std::move(s));
  }
  return state;
}

Result<KeyState> Merge(const PolicySpec& spec, const KeyState& a, const KeyState& b) {
  KeyState out;
  out.vv = a.vv;
  out.vv.Merge(b.vv);
  // Both lists are sorted by dot: walk them together.
  size_t i = 0, j = 0;
  while (i < a.siblings.size() || j < b.siblings.size()) {
    if (j == b.siblings.size() ||
        (i < a.siblings.size() && a.siblings[i].dot < b.siblings[j].dot)) {
      if (!b.vv.Contains(a.siblings[i].dot)) out.siblings.push_back(a.siblings[i]);
      ++i;
    } else if (i == a.siblings.size() || b.siblings[j].dot < a.siblings[i].dot) {
      if (!a.vv.Contains(b.siblings[j].dot)) out.siblings.push_back(b.siblings[j]);
      ++j;
    } else {
      out.siblings.push_back(a.siblings[i]);  // one write, on both sides
      ++i;
      ++j;
    }
  }
  Collapse(spec, &out);
  return out;
}

Result<KeyState> Write(const PolicySpec& spec, const KeyState& current, Dot dot, HlcTimestamp hlc,
                       std::optional<std::string> document, const VersionVector* context,
                       const VersionVector* seen) {
  if (!dot.replica.valid() || dot.counter == 0) return InvalidArgumentError("bad dot");
  // Only multi-value and resolver writes cover what they name: an LWW or CRDT write that named
  // a version this node never saw would cover it without having beaten it (a smaller HLC) or
  // joined its fields, and the outcome would depend on the order states meet.
  const bool named = context != nullptr &&
                     (spec.policy == Policy::kMultiValue || spec.policy == Policy::kResolver);
  const VersionVector& covered = named ? *context : current.vv;
  KeyState out;
  out.vv = current.vv;
  out.vv.Merge(covered);
  if (seen != nullptr) out.vv.Merge(*seen);
  out.vv.Observe(dot);
  Sibling mine{dot, hlc, !document.has_value(), document.value_or("")};
  std::vector<const Sibling*> joined;
  for (const Sibling& s : current.siblings) {
    if (!covered.Contains(s.dot)) {
      out.siblings.push_back(s);
    } else {
      joined.push_back(&s);
    }
  }
  if (spec.policy == Policy::kCrdtFields && !mine.deleted) {
    // A write of a CRDT field joins what it replaces, as the store's merge fields do; what a
    // delete beat is not joined (a delete resets the fields).
    std::vector<Sibling> covered_siblings;
    for (const Sibling* s : joined) covered_siblings.push_back(*s);
    const std::optional<HlcTimestamp> reset = LatestTombstone(covered_siblings);
    for (const Sibling* s : joined) {
      if (s->deleted || (reset && s->hlc < *reset)) continue;
      CONVERGE_RETURN_IF_ERROR(JoinFields(spec, s->document, &mine.document));
    }
  }
  out.siblings.push_back(std::move(mine));
  std::sort(out.siblings.begin(), out.siblings.end(),
            [](const Sibling& x, const Sibling& y) { return x.dot < y.dot; });
  Collapse(spec, &out);
  if ((spec.policy == Policy::kMultiValue || spec.policy == Policy::kResolver) &&
      out.siblings.size() > spec.max_siblings) {
    return ResourceExhaustedError("the write would leave " + std::to_string(out.siblings.size()) +
                                  " siblings, more than " + std::to_string(spec.max_siblings) +
                                  ": write with the context of the siblings to resolve them");
  }
  return out;
}

Result<std::optional<std::string>> Resolve(const PolicySpec& spec, const KeyState& state) {
  if (state.deleted()) return std::optional<std::string>();
  if (spec.policy == Policy::kResolver) {
    std::optional<std::string> acc;
    for (const Sibling& s : state.siblings) {
      if (s.deleted) continue;
      if (!acc) {
        acc = s.document;
        continue;
      }
      CONVERGE_ASSIGN_OR_RETURN(std::string next, spec.resolver(*acc, s.document));
      acc = std::move(next);
    }
    return acc;
  }
  if (spec.policy == Policy::kCrdtFields) {
    // The greatest write's other fields, each CRDT field joined over the live siblings written
    // after the latest delete; deleted when the greatest write is a delete.
    const Sibling* g = Greatest(state.siblings, /*live_only=*/false);
    if (g->deleted) return std::optional<std::string>();
    const std::optional<HlcTimestamp> reset = LatestTombstone(state.siblings);
    std::string doc = g->document;
    for (const Sibling& s : state.siblings) {
      if (s.deleted || s.dot == g->dot || (reset && s.hlc < *reset)) continue;
      CONVERGE_RETURN_IF_ERROR(JoinFields(spec, s.document, &doc));
    }
    return std::optional<std::string>(std::move(doc));
  }
  return std::optional<std::string>(Greatest(state.siblings, /*live_only=*/true)->document);
}

// ---- MemoryStorage ----

Status MemoryStorage::Commit(const mw::Commit& commit) {
  const Fault fault = std::exchange(fault_, Fault::kNone);
  if (fault == Fault::kBeforeCommit) return UnavailableError("simulated failure before commit");
  if (commit.peer) {
    auto it = data_.peers.find(commit.peer->first);
    const uint64_t stored = it == data_.peers.end() ? 1 : it->second.next;
    if (stored != commit.expect_next) {
      return AbortedError("the peer position moved (" + std::to_string(stored) + ", expected " +
                          std::to_string(commit.expect_next) + ")");
    }
  }
  for (const auto& [key, value] : commit.keys) {
    if (value) {
      data_.keys[key] = *value;
    } else {
      data_.keys.erase(key);
    }
  }
  for (const auto& [seq, key] : commit.origin) {
    if (key) {
      data_.origin[seq] = *key;
    } else {
      data_.origin.erase(seq);
    }
  }
  if (commit.own_seq) data_.own_seq = *commit.own_seq;
  if (commit.trimmed) data_.trimmed = *commit.trimmed;
  if (commit.hlc_floor) data_.hlc_floor = *commit.hlc_floor;
  if (commit.peer) data_.peers[commit.peer->first] = commit.peer->second;
  if (fault == Fault::kAfterCommit) return UnavailableError("simulated failure after commit");
  return Status::Ok();
}

// ---- Page ----

std::string Page::ToBinary() const {
  std::string out;
  out.push_back(1);  // format version
  PutVarint64(&out, origin);
  PutVarint64(&out, from);
  PutVarint64(&out, next);
  PutVarint64(&out, end);
  PutString(&out, knowledge.ToBinary());
  PutVarint64(&out, entries.size());
  for (const ExportEntry& e : entries) {
    PutVarint64(&out, e.seq);
    PutString(&out, e.key);
    std::string state;
    e.state.AppendBinary(&state);
    PutString(&out, state);
  }
  return out;
}

Result<Page> Page::FromBinary(std::string_view in) {
  Page page;
  if (in.empty() || in.front() != 1) return InvalidArgumentError("page: unknown format");
  in.remove_prefix(1);
  std::string_view knowledge;
  uint64_t n = 0;
  if (!GetVarint64(&in, &page.origin) || !GetVarint64(&in, &page.from) ||
      !GetVarint64(&in, &page.next) || !GetVarint64(&in, &page.end) ||
      !GetLengthPrefixed(&in, &knowledge) || !GetVarint64(&in, &n) || n > in.size()) {
    return InvalidArgumentError("page: truncated header");
  }
  if (page.origin == 0 || page.from == 0 || page.next < page.from || page.end < page.next) {
    return InvalidArgumentError("page: bad positions");
  }
  CONVERGE_ASSIGN_OR_RETURN(page.knowledge, VersionVector::FromBinary(knowledge));
  uint64_t last = 0;
  for (uint64_t i = 0; i < n; ++i) {
    ExportEntry e;
    std::string_view key, state;
    if (!GetVarint64(&in, &e.seq) || !GetLengthPrefixed(&in, &key) ||
        !GetLengthPrefixed(&in, &state)) {
      return InvalidArgumentError("page: truncated entry");
    }
    if (e.seq < page.from || e.seq >= page.next || e.seq <= last || key.empty()) {
      return InvalidArgumentError("page: entry outside the page or out of order");
    }
    last = e.seq;
    e.key = std::string(key);
    CONVERGE_ASSIGN_OR_RETURN(e.state, KeyState::FromBinary(&state));
    if (!state.empty()) return InvalidArgumentError("page: trailing bytes in a state");
    page.entries.push_back(std::move(e));
  }
  if (!in.empty()) return InvalidArgumentError("page: trailing bytes");
  return page;
}

std::string EncodeStates(const std::vector<std::pair<std::string, KeyState>>& states) {
  std::string out;
  out.push_back(1);  // format version
  PutVarint64(&out, states.size());
  for (const auto& [key, state] : states) {
    PutString(&out, key);
    std::string bytes;
    state.AppendBinary(&bytes);
    PutString(&out, bytes);
  }
  return out;
}

Result<std::vector<std::pair<std::string, KeyState>>> DecodeStates(std::string_view in) {
  std::vector<std::pair<std::string, KeyState>> out;
  uint64_t n = 0;
  if (in.empty() || in.front() != 1) return InvalidArgumentError("states: unknown format");
  in.remove_prefix(1);
  if (!GetVarint64(&in, &n) || n > in.size()) return InvalidArgumentError("states: bad count");
  for (uint64_t i = 0; i < n; ++i) {
    std::string_view key, state;
    if (!GetLengthPrefixed(&in, &key) || !GetLengthPrefixed(&in, &state) || key.empty()) {
      return InvalidArgumentError("states: truncated entry");
    }
    CONVERGE_ASSIGN_OR_RETURN(KeyState s, KeyState::FromBinary(&state));
    if (!state.empty()) return InvalidArgumentError("states: trailing bytes in a state");
    out.emplace_back(std::string(key), std::move(s));
  }
  if (!in.empty()) return InvalidArgumentError("states: trailing bytes");
  return out;
}

// ---- Node ----

Result<std::unique_ptr<Node>> Node::Open(Env& env, Storage& storage, NodeOptions options) {
  if (options.self == 0) return InvalidArgumentError("node id must be >= 1");
  for (uint64_t p : options.peers) {
    if (p == 0 || p == options.self) {
      return InvalidArgumentError("peer ids must be >= 1 and differ from the node's own");
    }
  }
  CONVERGE_RETURN_IF_ERROR(ValidatePolicy(options.policy));
  std::unique_ptr<Node> node(new Node(env, storage, std::move(options)));
  CONVERGE_RETURN_IF_ERROR(node->Reload());
  return node;
}

uint64_t StateVersion(const KeyState& state) {
  std::string bytes;
  state.AppendBinary(&bytes);
  return reconcile::KeyHash(bytes);
}

Status Node::Reload() {
  CONVERGE_ASSIGN_OR_RETURN(data_, storage_.Load());
  if (digest_ == nullptr) {
    reconcile::SetOptions so;
    so.maintained_symbols = options_.digest_symbols;
    digest_ = std::make_unique<reconcile::ReconcileSet>(so);
  }
  // The same set object across reloads (a responder or initiator may hold it): brought to the
  // stored keys' states.
  std::vector<std::string> gone;
  for (const auto& [key, version] : digest_->entries()) {
    if (!data_.keys.count(key)) gone.push_back(key);
  }
  for (const std::string& key : gone) digest_->Erase(key);
  for (const auto& [key, stored] : data_.keys) {
    const uint64_t v = StateVersion(stored.state);
    if (digest_->Get(key) != v) digest_->Put(key, v);
  }
  stale_ = false;
  return Status::Ok();
}

void Node::Track(const std::string& key, const std::optional<StoredKey>& value) {
  if (value) {
    digest_->Put(key, StateVersion(value->state));
  } else {
    digest_->Erase(key);
  }
}

void Node::NoteOwnDots(const KeyState& state, Commit* commit) const {
  const uint64_t mine = state.vv.Get(ReplicaId(options_.self));
  const uint64_t seq = commit->own_seq.value_or(data_.own_seq);
  if (mine > seq) commit->own_seq = mine;
}

Result<bool> Node::Repair(const std::string& key, const KeyState& remote) {
  CONVERGE_RETURN_IF_ERROR(EnsureLoaded());
  auto it = data_.keys.find(key);
  const StoredKey empty;
  const bool existed = it != data_.keys.end();
  const StoredKey& current = existed ? it->second : empty;
  CONVERGE_ASSIGN_OR_RETURN(KeyState merged, Merge(options_.policy, current.state, remote));
  if (existed && merged == current.state) return false;
  HlcTimestamp floor = data_.hlc_floor;
  for (const Sibling& s : remote.siblings) {
    (void)clock_.Update(s.hlc);
    floor = std::max(floor, s.hlc);
  }
  StoredKey next{std::move(merged), 0};
  if (next.state.deleted()) {
    next.tombstone_since_us = existed && current.state.deleted() && current.tombstone_since_us
                                  ? current.tombstone_since_us
                                  : env_.clock().NowWallMicros();
  }
  mw::Commit commit;
  NoteOwnDots(next.state, &commit);
  if (data_.hlc_floor < floor) commit.hlc_floor = floor;
  commit.keys.emplace_back(key, next);
  if (Status s = storage_.Commit(commit); !s.ok()) {
    Failed();
    return s;
  }
  Track(key, next);
  data_.keys[key] = std::move(next);
  if (commit.own_seq) data_.own_seq = *commit.own_seq;
  data_.hlc_floor = floor;
  return true;
}

Status Node::EnsureLoaded() { return stale_ ? Reload() : Status::Ok(); }

void Node::Failed() {
  // The commit may have happened (a lost reply): read back what the storage holds now, or at
  // the next operation if that fails too.
  stale_ = true;
  (void)Reload();
}

Result<KeyState> Node::LocalWrite(const std::string& key, std::optional<std::string> document,
                                  const VersionVector* context) {
  CONVERGE_RETURN_IF_ERROR(EnsureLoaded());
  if (key.empty()) return InvalidArgumentError("empty key");
  auto it = data_.keys.find(key);
  const StoredKey empty;
  const StoredKey& current = it == data_.keys.end() ? empty : it->second;
  // The write orders after everything the node ever saw, even if the wall clock went back
  // since (a restart): it covers all of it (below), and under LWW a covering write must win.
  HlcTimestamp hlc = clock_.Now();
  if (!(data_.hlc_floor < hlc)) {
    hlc = HlcTimestamp{data_.hlc_floor.physical_micros, data_.hlc_floor.logical + 1};
  }
  const uint64_t seq = data_.own_seq + 1;
  // The write has seen everything the node applied (its knowledge: every write of each node
  // up to a position, or a later state of the same key), so it covers those dots too: a write
  // after a purge then covers the purged tombstone wherever it is still kept.
  const VersionVector seen = Knowledge();
  CONVERGE_ASSIGN_OR_RETURN(
      KeyState state, Write(options_.policy, current.state, Dot{ReplicaId(options_.self), seq}, hlc,
                            std::move(document), context, &seen));
  StoredKey stored{state, 0};
  if (state.deleted()) {
    stored.tombstone_since_us = current.state.deleted() && current.tombstone_since_us != 0
                                    ? current.tombstone_since_us
                                    : env_.clock().NowWallMicros();
  }
  mw::Commit commit;
  commit.keys.emplace_back(key, stored);
  commit.origin.emplace_back(seq, key);
  commit.own_seq = seq;
  commit.hlc_floor = hlc;
  if (Status s = storage_.Commit(commit); !s.ok()) {
    Failed();
    return s;
  }
  Track(key, stored);
  data_.keys[key] = stored;
  data_.origin[seq] = key;
  data_.own_seq = seq;
  data_.hlc_floor = hlc;
  return state;
}

Result<KeyState> Node::Put(const std::string& key, std::string document,
                           const VersionVector* context) {
  return LocalWrite(key, std::move(document), context);
}

Result<KeyState> Node::Delete(const std::string& key, const VersionVector* context) {
  return LocalWrite(key, std::nullopt, context);
}

std::optional<KeyState> Node::Get(const std::string& key) const {
  auto it = data_.keys.find(key);
  if (it == data_.keys.end()) return std::nullopt;
  return it->second.state;
}

VersionVector Node::Knowledge() const {
  VersionVector k;
  k.Observe(ReplicaId(options_.self), data_.own_seq);
  for (const auto& [peer, pos] : data_.peers) k.Observe(ReplicaId(peer), pos.next - 1);
  return k;
}

uint64_t Node::NextFrom(uint64_t peer) const {
  auto it = data_.peers.find(peer);
  return it == data_.peers.end() ? 1 : it->second.next;
}

Result<Page> Node::Export(uint64_t from, size_t limit) const {
  Page page;
  page.origin = options_.self;
  page.from = std::max<uint64_t>(from, 1);
  page.end = data_.own_seq + 1;
  if (page.from <= data_.trimmed || page.from > page.end) {
    return FailedPreconditionError("position " + std::to_string(page.from) + " of node " +
                                   std::to_string(options_.self) +
                                   " is not kept (kept: " + std::to_string(data_.trimmed + 1) +
                                   " .. " + std::to_string(page.end) + ")");
  }
  page.next = page.end;
  page.knowledge = Knowledge();
  std::map<std::string, size_t> listed;  // a key once per page, at its latest position
  for (auto it = data_.origin.lower_bound(page.from); it != data_.origin.end(); ++it) {
    auto k = data_.keys.find(it->second);
    if (k == data_.keys.end()) continue;  // purged (stable: every peer has it)
    if (auto l = listed.find(it->second); l != listed.end()) {
      page.entries[l->second].seq = it->first;
      continue;
    }
    if (page.entries.size() == std::max<size_t>(limit, 1)) {
      page.next = it->first;  // the first write not covered
      break;
    }
    listed[it->second] = page.entries.size();
    page.entries.push_back(ExportEntry{it->first, it->second, k->second.state});
  }
  // Entries ordered by position (a key moved to its latest one).
  std::sort(page.entries.begin(), page.entries.end(),
            [](const ExportEntry& a, const ExportEntry& b) { return a.seq < b.seq; });
  return page;
}

Result<ApplyResult> Node::Apply(const Page& page) {
  CONVERGE_RETURN_IF_ERROR(EnsureLoaded());
  if (std::find(options_.peers.begin(), options_.peers.end(), page.origin) ==
      options_.peers.end()) {
    return InvalidArgumentError("node " + std::to_string(page.origin) + " is not a peer");
  }
  const uint64_t expect = NextFrom(page.origin);
  if (page.from != expect) {
    return AbortedError("page from " + std::to_string(page.from) + " of node " +
                        std::to_string(page.origin) + ", expected " + std::to_string(expect));
  }
  ApplyResult result;
  std::map<std::string, StoredKey> staged;
  const int64_t now = env_.clock().NowWallMicros();
  HlcTimestamp floor = data_.hlc_floor;
  for (const ExportEntry& e : page.entries) {
    auto sit = staged.find(e.key);
    const StoredKey* current = nullptr;
    if (sit != staged.end()) {
      current = &sit->second;
    } else if (auto it = data_.keys.find(e.key); it != data_.keys.end()) {
      current = &it->second;
    }
    const StoredKey empty;
    if (current == nullptr) current = &empty;
    CONVERGE_ASSIGN_OR_RETURN(KeyState merged, Merge(options_.policy, current->state, e.state));
    for (const Sibling& s : e.state.siblings) {
      (void)clock_.Update(s.hlc);  // beyond the skew bound: not adopted by the clock
      floor = std::max(floor, s.hlc);
    }
    const bool existed = current != &empty;
    if (existed && merged == current->state) {
      ++result.unchanged;
      continue;
    }
    StoredKey next{std::move(merged), 0};
    if (next.state.deleted()) {
      next.tombstone_since_us =
          existed && current->state.deleted() && current->tombstone_since_us != 0
              ? current->tombstone_since_us
              : now;
    }
    staged[e.key] = std::move(next);
    ++result.merged;
  }
  mw::Commit commit;
  for (const auto& [key, value] : staged) {
    commit.keys.emplace_back(key, value);
    result.changed_keys.push_back(key);
    NoteOwnDots(value.state, &commit);
  }
  PeerPosition position{page.next, page.knowledge};
  commit.peer = std::make_pair(page.origin, position);
  // The peer has pulled this node's writes further than this node remembers writing (its
  // storage was restored from a backup): never mint those dots again.
  if (page.knowledge.Get(ReplicaId(options_.self)) > commit.own_seq.value_or(data_.own_seq)) {
    commit.own_seq = page.knowledge.Get(ReplicaId(options_.self));
  }
  commit.expect_next = expect;
  if (data_.hlc_floor < floor) commit.hlc_floor = floor;
  if (Status s = storage_.Commit(commit); !s.ok()) {
    Failed();
    return s;
  }
  for (auto& [key, value] : staged) {
    Track(key, value);
    data_.keys[key] = std::move(value);
  }
  if (commit.own_seq) data_.own_seq = *commit.own_seq;
  data_.peers[page.origin] = std::move(position);
  data_.hlc_floor = floor;
  return result;
}

Result<size_t> Node::PurgeTombstones() {
  CONVERGE_RETURN_IF_ERROR(EnsureLoaded());
  const int64_t now = env_.clock().NowWallMicros();
  mw::Commit commit;
  // The origin log up to where every peer has pulled (each peer's report of its position here).
  uint64_t pulled = data_.own_seq;
  bool all_reported = true;
  for (uint64_t peer : options_.peers) {
    auto it = data_.peers.find(peer);
    if (it == data_.peers.end()) {
      pulled = 0;
      all_reported = false;
      break;
    }
    pulled = std::min(pulled, it->second.knowledge.Get(ReplicaId(options_.self)));
  }
  if (pulled > data_.trimmed) {
    // Bounded per call (a storage commit may be bounded in size); the rest at the next call.
    uint64_t upto = pulled;
    for (auto it = data_.origin.begin(); it != data_.origin.end() && it->first <= pulled; ++it) {
      if (commit.origin.size() == kMaxTrimPerCall) {
        upto = it->first - 1;
        break;
      }
      commit.origin.emplace_back(it->first, std::nullopt);
    }
    if (upto > data_.trimmed) commit.trimmed = upto;
  }
  // Stable: every peer saw the key's history, and every write a peer made before saying so
  // is here (so no write concurrent with the delete is still on its way).
  bool stable_possible = all_reported && options_.tombstone_retention_ms > 0;
  for (uint64_t peer : options_.peers) {
    if (!stable_possible) break;
    const PeerPosition& p = data_.peers.at(peer);
    if (p.next - 1 < p.knowledge.Get(ReplicaId(peer))) stable_possible = false;
  }
  size_t purged = 0;
  for (const auto& [key, stored] : data_.keys) {
    if (!stable_possible) break;
    if (!stored.state.deleted() || stored.tombstone_since_us == 0 ||
        now - stored.tombstone_since_us < options_.tombstone_retention_ms * 1000) {
      continue;
    }
    bool stable = true;
    for (uint64_t peer : options_.peers) {
      if (!Covers(data_.peers.at(peer).knowledge, stored.state.vv)) {
        stable = false;
        break;
      }
    }
    if (!stable) continue;
    commit.keys.emplace_back(key, std::nullopt);
    if (++purged == kMaxPurgePerCall) break;
  }
  if (commit.keys.empty() && !commit.trimmed) return size_t{0};
  if (Status s = storage_.Commit(commit); !s.ok()) {
    Failed();
    return s;
  }
  for (const auto& [key, unused] : commit.keys) {
    Track(key, std::nullopt);
    data_.keys.erase(key);
  }
  for (const auto& [seq, unused] : commit.origin) data_.origin.erase(seq);
  if (commit.trimmed) data_.trimmed = *commit.trimmed;
  return purged;
}

}  // namespace converge::replica::mw
