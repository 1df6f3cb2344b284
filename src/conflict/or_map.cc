#include "converge/conflict/or_map.h"

#include <algorithm>
#include <limits>
#include <map>
#include <optional>
#include <tuple>
#include <unordered_set>
#include <variant>

#include "conflict/binary_codec.h"
#include "conflict/dot_kernel.h"
#include "conflict/json_codec.h"
#include "converge/conflict/crdt_kind.h"
#include "converge/conflict/sets.h"

namespace converge::conflict {

std::string_view ValueKindName(ValueKind kind) {
  switch (kind) {
    case ValueKind::kCounter:
      return "counter";
    case ValueKind::kFlag:
      return "flag";
    case ValueKind::kMvRegister:
      return "mv-register";
    case ValueKind::kLwwRegister:
      return "lww-register";
    case ValueKind::kOrSet:
      return "or-set";
    case ValueKind::kMap:
      return "map";
  }
  return "unknown";
}

namespace {
bool ParseValueKind(std::string_view name, ValueKind* out) {
  for (uint8_t k = 1; k <= 6; ++k) {
    if (ValueKindName(static_cast<ValueKind>(k)) == name) {
      *out = static_cast<ValueKind>(k);
      return true;
    }
  }
  return false;
}
}  // namespace

// ---- the dot stores ---------------------------------------------------------------------

namespace internal {

struct LwwCell {
  HlcTimestamp timestamp;
  std::string value;
  bool operator==(const LwwCell&) const = default;
  bool operator<(const LwwCell& o) const {
    return std::tie(timestamp, value) < std::tie(o.timestamp, o.value);
  }
};

// A function from dots to values, sorted by dot (the DotFun store).
template <typename V>
using DotFun = std::vector<std::pair<Dot, V>>;
using CounterStore = DotFun<int64_t>;
using FlagStore = std::vector<Dot>;
using MvStore = DotFun<std::string>;
using LwwStore = DotFun<LwwCell>;
using SetStore = std::map<std::string, std::vector<Dot>, std::less<>>;
struct MapEntry;
using MapStore = std::vector<MapEntry>;  // sorted by key
// Alternative index == ValueKind value.
using FieldValue =
    std::variant<std::monostate, CounterStore, FlagStore, MvStore, LwwStore, SetStore, MapStore>;
struct MapEntry {
  FieldKey key;
  FieldValue value;
  bool operator==(const MapEntry&) const = default;
};

struct OrMapStore {
  MapStore root;

  // OrMap befriends this type; these give the helpers below access to an OrMap's parts.
  static MapStore& Root(OrMap& m) { return m.store_->root; }
  static const MapStore& Root(const OrMap& m) { return m.store_->root; }
  static CausalContext& Context(OrMap& m) { return m.context_; }
};

namespace {

ValueKind KindOf(const FieldValue& v) { return static_cast<ValueKind>(v.index()); }

FieldValue EmptyOf(ValueKind kind) {
  switch (kind) {
    case ValueKind::kCounter:
      return CounterStore{};
    case ValueKind::kFlag:
      return FlagStore{};
    case ValueKind::kMvRegister:
      return MvStore{};
    case ValueKind::kLwwRegister:
      return LwwStore{};
    case ValueKind::kOrSet:
      return SetStore{};
    case ValueKind::kMap:
      return MapStore{};
  }
  return std::monostate{};
}

bool IsEmpty(const FieldValue& v) {
  return std::visit(
      [](const auto& s) {
        if constexpr (std::is_same_v<std::decay_t<decltype(s)>, std::monostate>) {
          return true;
        } else {
          return s.empty();
        }
      },
      v);
}

template <typename V>
DotFun<V> JoinDotFun(const DotFun<V>& a, const CausalContext& ca, const DotFun<V>& b,
                     const CausalContext& cb) {
  DotFun<V> out;
  out.reserve(a.size() + b.size());
  size_t i = 0, j = 0;
  while (i < a.size() || j < b.size()) {
    if (j == b.size() || (i < a.size() && a[i].first < b[j].first)) {
      if (!cb.Contains(a[i].first)) out.push_back(a[i]);
      ++i;
    } else if (i == a.size() || b[j].first < a[i].first) {
      if (!ca.Contains(b[j].first)) out.push_back(b[j]);
      ++j;
    } else {
      // One dot names one write, so both sides hold the same value; the max only keeps the
      // join deterministic should a faulty replica disagree.
      out.push_back(a[i].second < b[j].second ? b[j] : a[i]);
      ++i;
      ++j;
    }
  }
  return out;
}

SetStore JoinSet(const SetStore& a, const CausalContext& ca, const SetStore& b,
                 const CausalContext& cb) {
  static const std::vector<Dot> kNone;
  SetStore out;
  auto ia = a.begin();
  auto ib = b.begin();
  while (ia != a.end() || ib != b.end()) {
    const bool take_a = ib == b.end() || (ia != a.end() && ia->first <= ib->first);
    const bool take_b = ia == a.end() || (ib != b.end() && ib->first <= ia->first);
    const std::string& key = take_a ? ia->first : ib->first;
    std::vector<Dot> joined =
        JoinDotSets(take_a ? ia->second : kNone, ca, take_b ? ib->second : kNone, cb);
    if (!joined.empty()) out.emplace_hint(out.end(), key, std::move(joined));
    if (take_a) ++ia;
    if (take_b) ++ib;
  }
  return out;
}

FieldValue JoinField(const FieldValue& a, const CausalContext& ca, const FieldValue& b,
                     const CausalContext& cb);

MapStore JoinMap(const MapStore& a, const CausalContext& ca, const MapStore& b,
                 const CausalContext& cb) {
  MapStore out;
  out.reserve(std::max(a.size(), b.size()));
  size_t i = 0, j = 0;
  while (i < a.size() || j < b.size()) {
    const bool take_a = j == b.size() || (i < a.size() && !(b[j].key < a[i].key));
    const bool take_b = i == a.size() || (j < b.size() && !(a[i].key < b[j].key));
    const FieldKey& key = take_a ? a[i].key : b[j].key;
    FieldValue joined;
    if (take_a && take_b) {
      joined = JoinField(a[i].value, ca, b[j].value, cb);
    } else if (take_a) {
      joined = JoinField(a[i].value, ca, EmptyOf(key.kind), cb);
    } else {
      joined = JoinField(EmptyOf(key.kind), ca, b[j].value, cb);
    }
    if (!IsEmpty(joined)) out.push_back(MapEntry{key, std::move(joined)});
    if (take_a) ++i;
    if (take_b) ++j;
  }
  return out;
}

FieldValue JoinField(const FieldValue& a, const CausalContext& ca, const FieldValue& b,
                     const CausalContext& cb) {
  CONVERGE_CHECK(a.index() == b.index());
  switch (KindOf(a)) {
    case ValueKind::kCounter:
      return JoinDotFun(std::get<CounterStore>(a), ca, std::get<CounterStore>(b), cb);
    case ValueKind::kFlag:
      return JoinDotSets(std::get<FlagStore>(a), ca, std::get<FlagStore>(b), cb);
    case ValueKind::kMvRegister:
      return JoinDotFun(std::get<MvStore>(a), ca, std::get<MvStore>(b), cb);
    case ValueKind::kLwwRegister:
      return JoinDotFun(std::get<LwwStore>(a), ca, std::get<LwwStore>(b), cb);
    case ValueKind::kOrSet:
      return JoinSet(std::get<SetStore>(a), ca, std::get<SetStore>(b), cb);
    case ValueKind::kMap:
      return JoinMap(std::get<MapStore>(a), ca, std::get<MapStore>(b), cb);
  }
  return std::monostate{};
}

void CollectDots(const FieldValue& v, std::vector<Dot>* out) {
  switch (KindOf(v)) {
    case ValueKind::kCounter:
      for (const auto& [d, x] : std::get<CounterStore>(v)) out->push_back(d);
      break;
    case ValueKind::kFlag:
      for (const Dot& d : std::get<FlagStore>(v)) out->push_back(d);
      break;
    case ValueKind::kMvRegister:
      for (const auto& [d, x] : std::get<MvStore>(v)) out->push_back(d);
      break;
    case ValueKind::kLwwRegister:
      for (const auto& [d, x] : std::get<LwwStore>(v)) out->push_back(d);
      break;
    case ValueKind::kOrSet:
      for (const auto& [e, dots] : std::get<SetStore>(v))
        out->insert(out->end(), dots.begin(), dots.end());
      break;
    case ValueKind::kMap:
      for (const MapEntry& entry : std::get<MapStore>(v)) CollectDots(entry.value, out);
      break;
  }
}

MapStore::iterator FindKey(MapStore& m, const FieldKey& key) {
  auto it = std::lower_bound(m.begin(), m.end(), key,
                             [](const MapEntry& e, const FieldKey& k) { return e.key < k; });
  return it != m.end() && it->key == key ? it : m.end();
}

MapStore::const_iterator FindKey(const MapStore& m, const FieldKey& key) {
  auto it = std::lower_bound(m.begin(), m.end(), key,
                             [](const MapEntry& e, const FieldKey& k) { return e.key < k; });
  return it != m.end() && it->key == key ? it : m.end();
}

const FieldValue* FindPath(const MapStore& root, const MapPath& path) {
  const MapStore* m = &root;
  for (size_t i = 0; i < path.size(); ++i) {
    auto it = FindKey(*m, path[i]);
    if (it == m->end()) return nullptr;
    if (i + 1 == path.size()) return &it->value;
    m = &std::get<MapStore>(it->value);
  }
  return nullptr;
}

// The store at `path`, created empty (with its missing ancestors) if absent.
FieldValue* FindOrCreate(MapStore& root, const MapPath& path) {
  MapStore* m = &root;
  for (size_t i = 0; i < path.size(); ++i) {
    auto it = std::lower_bound(m->begin(), m->end(), path[i],
                               [](const MapEntry& e, const FieldKey& k) { return e.key < k; });
    if (it == m->end() || it->key != path[i]) {
      it = m->insert(it, MapEntry{path[i], EmptyOf(path[i].kind)});
    }
    if (i + 1 == path.size()) return &it->value;
    m = &std::get<MapStore>(it->value);
  }
  return nullptr;
}

// Removes the store at `path` if it is empty, then every ancestor map left empty.
void Prune(MapStore& root, const MapPath& path, size_t depth = 0) {
  auto it = FindKey(root, path[depth]);
  if (it == root.end()) return;
  if (depth + 1 < path.size()) Prune(std::get<MapStore>(it->value), path, depth + 1);
  if (IsEmpty(it->value)) root.erase(it);
}

void Erase(MapStore& root, const MapPath& path, size_t depth = 0) {
  auto it = FindKey(root, path[depth]);
  if (it == root.end()) return;
  if (depth + 1 == path.size()) {
    root.erase(it);
    return;
  }
  Erase(std::get<MapStore>(it->value), path, depth + 1);
  if (IsEmpty(it->value)) root.erase(it);
}

template <typename V>
void UpsertDot(DotFun<V>& fun, Dot dot, V value) {
  auto it = std::lower_bound(fun.begin(), fun.end(), dot,
                             [](const auto& p, const Dot& d) { return p.first < d; });
  fun.insert(it, {dot, std::move(value)});
}

__extension__ using Int128 = __int128;

}  // namespace
}  // namespace internal

using internal::CounterStore;
using internal::DotFun;
using internal::FieldValue;
using internal::FlagStore;
using internal::LwwCell;
using internal::LwwStore;
using internal::MapEntry;
using internal::MapStore;
using internal::MvStore;
using internal::OrMapStore;
using internal::SetStore;

namespace {

Status CheckPath(const MapPath& path, std::optional<ValueKind> leaf_kind) {
  if (path.empty()) return InvalidArgumentError("or-map: empty path");
  if (path.size() > kMaxOrMapDepth) {
    return InvalidArgumentError("or-map: path deeper than " + std::to_string(kMaxOrMapDepth));
  }
  for (size_t i = 0; i + 1 < path.size(); ++i) {
    if (path[i].kind != ValueKind::kMap) {
      return InvalidArgumentError("or-map: path element '" + path[i].name + "' is a " +
                                  std::string(ValueKindName(path[i].kind)) + ", not a map");
    }
  }
  const uint8_t k = static_cast<uint8_t>(path.back().kind);
  if (k < 1 || k > 6) return InvalidArgumentError("or-map: unknown value kind");
  if (leaf_kind.has_value() && path.back().kind != *leaf_kind) {
    return InvalidArgumentError("or-map: field '" + path.back().name + "' is a " +
                                std::string(ValueKindName(path.back().kind)) + ", expected " +
                                std::string(ValueKindName(*leaf_kind)));
  }
  return Status::Ok();
}

Status NotFoundAt(const MapPath& path) {
  std::string p;
  for (const FieldKey& k : path) p += "/" + k.name;
  return NotFoundError("or-map: nothing at " + p);
}

}  // namespace

OrMap::OrMap() : store_(std::make_unique<OrMapStore>()) {}
OrMap::~OrMap() = default;
OrMap::OrMap(const OrMap& other)
    : store_(std::make_unique<OrMapStore>(*other.store_)), context_(other.context_) {}
OrMap& OrMap::operator=(const OrMap& other) {
  if (&other != this) {
    *store_ = *other.store_;
    context_ = other.context_;
  }
  return *this;
}
OrMap::OrMap(OrMap&& other) noexcept
    : store_(std::exchange(other.store_, std::make_unique<OrMapStore>())),
      context_(std::move(other.context_)) {}
OrMap& OrMap::operator=(OrMap&& other) noexcept {
  if (&other != this) {
    std::swap(store_, other.store_);
    context_ = std::move(other.context_);
    other.store_->root.clear();
    other.context_ = CausalContext();
  }
  return *this;
}

bool OrMap::empty() const { return store_->root.empty(); }

bool OrMap::operator==(const OrMap& other) const {
  return context_ == other.context_ && store_->root == other.store_->root;
}

// ---- reads ------------------------------------------------------------------------------

bool OrMap::Contains(const MapPath& path) const {
  return CheckPath(path, std::nullopt).ok() && internal::FindPath(store_->root, path) != nullptr;
}

Result<std::vector<FieldKey>> OrMap::Keys(const MapPath& map_path) const {
  const MapStore* m = &store_->root;
  if (!map_path.empty()) {
    CONVERGE_RETURN_IF_ERROR(CheckPath(map_path, ValueKind::kMap));
    const FieldValue* v = internal::FindPath(store_->root, map_path);
    if (v == nullptr) return NotFoundAt(map_path);
    m = &std::get<MapStore>(*v);
  }
  std::vector<FieldKey> keys;
  keys.reserve(m->size());
  for (const MapEntry& e : *m) keys.push_back(e.key);
  return keys;
}

Result<int64_t> OrMap::CounterValue(const MapPath& path) const {
  CONVERGE_RETURN_IF_ERROR(CheckPath(path, ValueKind::kCounter));
  const FieldValue* v = internal::FindPath(store_->root, path);
  if (v == nullptr) return NotFoundAt(path);
  internal::Int128 sum = 0;
  for (const auto& [d, x] : std::get<CounterStore>(*v)) sum += x;
  if (sum > std::numeric_limits<int64_t>::max()) return std::numeric_limits<int64_t>::max();
  if (sum < std::numeric_limits<int64_t>::min()) return std::numeric_limits<int64_t>::min();
  return static_cast<int64_t>(sum);
}

Result<bool> OrMap::FlagValue(const MapPath& path) const {
  CONVERGE_RETURN_IF_ERROR(CheckPath(path, ValueKind::kFlag));
  const FieldValue* v = internal::FindPath(store_->root, path);
  if (v == nullptr) return NotFoundAt(path);
  return !std::get<FlagStore>(*v).empty();
}

Result<std::vector<std::string>> OrMap::RegisterValues(const MapPath& path) const {
  CONVERGE_RETURN_IF_ERROR(CheckPath(path, ValueKind::kMvRegister));
  const FieldValue* v = internal::FindPath(store_->root, path);
  if (v == nullptr) return NotFoundAt(path);
  std::vector<std::string> out;
  for (const auto& [d, x] : std::get<MvStore>(*v)) out.push_back(x);
  return out;
}

namespace {
// The winning cell of an LWW store: greatest (timestamp, writer, value).
const std::pair<Dot, LwwCell>* LwwWinner(const LwwStore& s) {
  const std::pair<Dot, LwwCell>* best = nullptr;
  for (const auto& cell : s) {
    if (best == nullptr ||
        std::tie(best->second.timestamp, best->first.replica, best->second.value) <
            std::tie(cell.second.timestamp, cell.first.replica, cell.second.value)) {
      best = &cell;
    }
  }
  return best;
}
}  // namespace

Result<std::string> OrMap::LwwValue(const MapPath& path) const {
  CONVERGE_RETURN_IF_ERROR(CheckPath(path, ValueKind::kLwwRegister));
  const FieldValue* v = internal::FindPath(store_->root, path);
  if (v == nullptr) return NotFoundAt(path);
  return LwwWinner(std::get<LwwStore>(*v))->second.value;
}

Result<std::vector<std::string>> OrMap::SetElements(const MapPath& path) const {
  CONVERGE_RETURN_IF_ERROR(CheckPath(path, ValueKind::kOrSet));
  const FieldValue* v = internal::FindPath(store_->root, path);
  if (v == nullptr) return NotFoundAt(path);
  std::vector<std::string> out;
  for (const auto& [e, dots] : std::get<SetStore>(*v)) out.push_back(e);
  return out;
}

// ---- mutations --------------------------------------------------------------------------

namespace {

// The delta of a mutation at `path`: `leaf` as the new content there (possibly empty) and
// `context` = the dots it supersedes plus the new dot, if any.
OrMap MakeDelta(const MapPath& path, FieldValue leaf, CausalContext context) {
  OrMap delta;
  if (!internal::IsEmpty(leaf))
    *internal::FindOrCreate(OrMapStore::Root(delta), path) = std::move(leaf);
  OrMapStore::Context(delta) = std::move(context);
  return delta;
}

CausalContext ContextOf(const std::vector<Dot>& dots) {
  CausalContext cc;
  for (const Dot& d : dots) cc.Add(d);
  return cc;
}

std::vector<Dot> DotsAt(const MapStore& root, const MapPath& path) {
  std::vector<Dot> dots;
  if (const FieldValue* v = internal::FindPath(root, path)) internal::CollectDots(*v, &dots);
  return dots;
}

}  // namespace

Result<OrMap> OrMap::IncrementCounter(ReplicaId replica, const MapPath& path, int64_t delta) {
  CONVERGE_RETURN_IF_ERROR(CheckPath(path, ValueKind::kCounter));
  CONVERGE_ASSIGN_OR_RETURN(const Dot dot, context_.NextDot(replica));
  // This replica's running total moves to the new dot; its old dot is superseded.
  std::vector<Dot> superseded;
  internal::Int128 total = delta;
  if (const FieldValue* v = internal::FindPath(store_->root, path)) {
    for (const auto& [d, x] : std::get<CounterStore>(*v)) {
      if (d.replica == replica) {
        superseded.push_back(d);
        total += x;
      }
    }
  }
  if (total > std::numeric_limits<int64_t>::max() || total < std::numeric_limits<int64_t>::min()) {
    return OutOfRangeError("or-map: counter total of replica " + replica.ToString() +
                           " would overflow");
  }
  const int64_t new_total = static_cast<int64_t>(total);
  auto& store = std::get<CounterStore>(*internal::FindOrCreate(store_->root, path));
  std::erase_if(store, [&](const auto& p) { return p.first.replica == replica; });
  internal::UpsertDot(store, dot, new_total);
  context_.Add(dot);
  CausalContext delta_context = ContextOf(superseded);
  delta_context.Add(dot);
  return MakeDelta(path, CounterStore{{dot, new_total}}, std::move(delta_context));
}

Result<OrMap> OrMap::EnableFlag(ReplicaId replica, const MapPath& path) {
  CONVERGE_RETURN_IF_ERROR(CheckPath(path, ValueKind::kFlag));
  CONVERGE_ASSIGN_OR_RETURN(const Dot dot, context_.NextDot(replica));
  CausalContext delta_context = ContextOf(DotsAt(store_->root, path));
  delta_context.Add(dot);
  std::get<FlagStore>(*internal::FindOrCreate(store_->root, path)) = FlagStore{dot};
  context_.Add(dot);
  return MakeDelta(path, FlagStore{dot}, std::move(delta_context));
}

Result<OrMap> OrMap::DisableFlag(const MapPath& path) {
  CONVERGE_RETURN_IF_ERROR(CheckPath(path, ValueKind::kFlag));
  CausalContext delta_context = ContextOf(DotsAt(store_->root, path));
  internal::Erase(store_->root, path);
  return MakeDelta(path, FlagStore{}, std::move(delta_context));
}

Result<OrMap> OrMap::AssignRegister(ReplicaId replica, const MapPath& path, std::string value) {
  CONVERGE_RETURN_IF_ERROR(CheckPath(path, ValueKind::kMvRegister));
  CONVERGE_ASSIGN_OR_RETURN(const Dot dot, context_.NextDot(replica));
  CausalContext delta_context = ContextOf(DotsAt(store_->root, path));
  delta_context.Add(dot);
  std::get<MvStore>(*internal::FindOrCreate(store_->root, path)) = MvStore{{dot, value}};
  context_.Add(dot);
  return MakeDelta(path, MvStore{{dot, std::move(value)}}, std::move(delta_context));
}

Result<OrMap> OrMap::AssignLww(ReplicaId replica, const MapPath& path, HlcTimestamp timestamp,
                               std::string value) {
  CONVERGE_RETURN_IF_ERROR(CheckPath(path, ValueKind::kLwwRegister));
  CONVERGE_ASSIGN_OR_RETURN(const Dot dot, context_.NextDot(replica));
  if (const FieldValue* v = internal::FindPath(store_->root, path)) {
    const auto* winner = LwwWinner(std::get<LwwStore>(*v));
    if (!(std::tie(winner->second.timestamp, winner->first.replica) <
          std::tie(timestamp, replica))) {
      return FailedPreconditionError("or-map: lww write stamped " + timestamp.ToString() + "@" +
                                     replica.ToString() + " is not after the current value's " +
                                     winner->second.timestamp.ToString() + "@" +
                                     winner->first.replica.ToString());
    }
  }
  CausalContext delta_context = ContextOf(DotsAt(store_->root, path));
  delta_context.Add(dot);
  LwwCell cell{timestamp, std::move(value)};
  std::get<LwwStore>(*internal::FindOrCreate(store_->root, path)) = LwwStore{{dot, cell}};
  context_.Add(dot);
  return MakeDelta(path, LwwStore{{dot, std::move(cell)}}, std::move(delta_context));
}

Result<OrMap> OrMap::AddToSet(ReplicaId replica, const MapPath& path, std::string element) {
  CONVERGE_RETURN_IF_ERROR(CheckPath(path, ValueKind::kOrSet));
  CONVERGE_ASSIGN_OR_RETURN(const Dot dot, context_.NextDot(replica));
  auto& set = std::get<SetStore>(*internal::FindOrCreate(store_->root, path));
  auto& dots = set[element];
  CausalContext delta_context = ContextOf(dots);
  delta_context.Add(dot);
  dots.assign(1, dot);
  context_.Add(dot);
  SetStore leaf;
  leaf.emplace(std::move(element), std::vector<Dot>{dot});
  return MakeDelta(path, std::move(leaf), std::move(delta_context));
}

Result<OrMap> OrMap::RemoveFromSet(const MapPath& path, std::string_view element) {
  CONVERGE_RETURN_IF_ERROR(CheckPath(path, ValueKind::kOrSet));
  CausalContext delta_context;
  if (FieldValue* v = const_cast<FieldValue*>(internal::FindPath(store_->root, path))) {
    auto& set = std::get<SetStore>(*v);
    auto it = set.find(element);
    if (it != set.end()) {
      delta_context = ContextOf(it->second);
      set.erase(it);
      internal::Prune(store_->root, path);
    }
  }
  return MakeDelta(path, SetStore{}, std::move(delta_context));
}

Result<OrMap> OrMap::Remove(const MapPath& path) {
  CONVERGE_RETURN_IF_ERROR(CheckPath(path, std::nullopt));
  CausalContext delta_context = ContextOf(DotsAt(store_->root, path));
  internal::Erase(store_->root, path);
  return MakeDelta(path, internal::EmptyOf(path.back().kind), std::move(delta_context));
}

void OrMap::Merge(const OrMap& other) {
  if (&other == this) return;
  store_->root = internal::JoinMap(store_->root, context_, other.store_->root, other.context_);
  context_.Merge(other.context_);
}

// ---- serialization ----------------------------------------------------------------------

namespace {

namespace json = internal::json;
using internal::BinaryReader;
using internal::BinaryWriter;

json::array MapToJson(const MapStore& m);

json::value FieldToJson(const FieldValue& v) {
  json::array a;
  switch (internal::KindOf(v)) {
    case ValueKind::kCounter:
      for (const auto& [d, x] : std::get<CounterStore>(v)) {
        json::object o;
        o["dot"] = internal::DotToJson(d);
        o["value"] = x;
        a.push_back(std::move(o));
      }
      break;
    case ValueKind::kFlag:
      for (const Dot& d : std::get<FlagStore>(v)) a.push_back(internal::DotToJson(d));
      break;
    case ValueKind::kMvRegister:
      for (const auto& [d, x] : std::get<MvStore>(v)) {
        json::object o;
        o["dot"] = internal::DotToJson(d);
        o["value"] = internal::BytesToJson(x);
        a.push_back(std::move(o));
      }
      break;
    case ValueKind::kLwwRegister:
      for (const auto& [d, cell] : std::get<LwwStore>(v)) {
        json::object o;
        o["dot"] = internal::DotToJson(d);
        o["timestamp"] = internal::HlcToJson(cell.timestamp);
        o["value"] = internal::BytesToJson(cell.value);
        a.push_back(std::move(o));
      }
      break;
    case ValueKind::kOrSet:
      for (const auto& [e, dots] : std::get<SetStore>(v)) {
        json::object o;
        o["value"] = internal::BytesToJson(e);
        json::array da;
        for (const Dot& d : dots) da.push_back(internal::DotToJson(d));
        o["dots"] = std::move(da);
        a.push_back(std::move(o));
      }
      break;
    case ValueKind::kMap:
      return MapToJson(std::get<MapStore>(v));
  }
  return a;
}

json::array MapToJson(const MapStore& m) {
  json::array fields;
  fields.reserve(m.size());
  for (const MapEntry& e : m) {
    json::object f;
    f["name"] = internal::BytesToJson(e.key.name);
    f["kind"] = ValueKindName(e.key.kind);
    f["value"] = FieldToJson(e.value);
    fields.push_back(std::move(f));
  }
  return fields;
}

constexpr std::string_view kWhat = "or-map";

// Checks a decoded dot list/function is strictly increasing and non-empty.
template <typename Seq, typename DotOf>
Status CheckSortedDots(const Seq& seq, DotOf dot_of) {
  if (seq.empty()) return internal::JsonError(kWhat, "empty value");
  for (size_t i = 1; i < seq.size(); ++i) {
    if (!(dot_of(seq[i - 1]) < dot_of(seq[i]))) {
      return InvalidArgumentError("or-map: dots not strictly increasing");
    }
  }
  return Status::Ok();
}

Status MapFromJson(const json::value& v, uint32_t depth, const DecodeLimits& limits, MapStore* out);

Status FieldFromJson(const json::value& v, ValueKind kind, uint32_t depth,
                     const DecodeLimits& limits, FieldValue* out) {
  if (kind == ValueKind::kMap) {
    MapStore m;
    CONVERGE_RETURN_IF_ERROR(MapFromJson(v, depth + 1, limits, &m));
    *out = std::move(m);
    return Status::Ok();
  }
  CONVERGE_ASSIGN_OR_RETURN(const json::array* a, internal::ArrayFromJson(v, kWhat));
  auto dot_member = [](const json::object& o, Dot* d) -> Status {
    CONVERGE_ASSIGN_OR_RETURN(const json::value* dv, internal::Member(o, "dot", kWhat));
    return internal::DotFromJson(*dv, d, kWhat);
  };
  auto by_first = [](const auto& p) { return p.first; };
  switch (kind) {
    case ValueKind::kCounter: {
      CounterStore s;
      for (const json::value& item : *a) {
        CONVERGE_ASSIGN_OR_RETURN(const json::object* o, internal::ObjectFromJson(item, kWhat));
        Dot d;
        int64_t x;
        CONVERGE_RETURN_IF_ERROR(dot_member(*o, &d));
        CONVERGE_ASSIGN_OR_RETURN(const json::value* xv, internal::Member(*o, "value", kWhat));
        CONVERGE_RETURN_IF_ERROR(internal::Int64FromJson(*xv, &x, kWhat));
        s.emplace_back(d, x);
      }
      std::sort(s.begin(), s.end());
      CONVERGE_RETURN_IF_ERROR(CheckSortedDots(s, by_first));
      *out = std::move(s);
      return Status::Ok();
    }
    case ValueKind::kFlag: {
      FlagStore s;
      for (const json::value& item : *a) {
        Dot d;
        CONVERGE_RETURN_IF_ERROR(internal::DotFromJson(item, &d, kWhat));
        s.push_back(d);
      }
      std::sort(s.begin(), s.end());
      CONVERGE_RETURN_IF_ERROR(CheckSortedDots(s, [](Dot d) { return d; }));
      *out = std::move(s);
      return Status::Ok();
    }
    case ValueKind::kMvRegister: {
      MvStore s;
      for (const json::value& item : *a) {
        CONVERGE_ASSIGN_OR_RETURN(const json::object* o, internal::ObjectFromJson(item, kWhat));
        Dot d;
        std::string x;
        CONVERGE_RETURN_IF_ERROR(dot_member(*o, &d));
        CONVERGE_ASSIGN_OR_RETURN(const json::value* xv, internal::Member(*o, "value", kWhat));
        CONVERGE_RETURN_IF_ERROR(internal::BytesFromJson(*xv, &x, kWhat));
        s.emplace_back(d, std::move(x));
      }
      std::sort(s.begin(), s.end());
      CONVERGE_RETURN_IF_ERROR(CheckSortedDots(s, by_first));
      *out = std::move(s);
      return Status::Ok();
    }
    case ValueKind::kLwwRegister: {
      LwwStore s;
      for (const json::value& item : *a) {
        CONVERGE_ASSIGN_OR_RETURN(const json::object* o, internal::ObjectFromJson(item, kWhat));
        Dot d;
        LwwCell cell;
        CONVERGE_RETURN_IF_ERROR(dot_member(*o, &d));
        CONVERGE_ASSIGN_OR_RETURN(const json::value* tv, internal::Member(*o, "timestamp", kWhat));
        CONVERGE_ASSIGN_OR_RETURN(const json::value* xv, internal::Member(*o, "value", kWhat));
        CONVERGE_RETURN_IF_ERROR(internal::HlcFromJson(*tv, &cell.timestamp, kWhat));
        CONVERGE_RETURN_IF_ERROR(internal::BytesFromJson(*xv, &cell.value, kWhat));
        s.emplace_back(d, std::move(cell));
      }
      std::sort(s.begin(), s.end(), [](const auto& x, const auto& y) { return x.first < y.first; });
      CONVERGE_RETURN_IF_ERROR(CheckSortedDots(s, by_first));
      *out = std::move(s);
      return Status::Ok();
    }
    case ValueKind::kOrSet: {
      SetStore s;
      for (const json::value& item : *a) {
        CONVERGE_ASSIGN_OR_RETURN(const json::object* o, internal::ObjectFromJson(item, kWhat));
        std::string e;
        CONVERGE_ASSIGN_OR_RETURN(const json::value* ev, internal::Member(*o, "value", kWhat));
        CONVERGE_ASSIGN_OR_RETURN(const json::value* dv, internal::Member(*o, "dots", kWhat));
        CONVERGE_RETURN_IF_ERROR(internal::BytesFromJson(*ev, &e, kWhat));
        CONVERGE_ASSIGN_OR_RETURN(const json::array* da, internal::ArrayFromJson(*dv, kWhat));
        std::vector<Dot> dots;
        for (const json::value& dj : *da) {
          Dot d;
          CONVERGE_RETURN_IF_ERROR(internal::DotFromJson(dj, &d, kWhat));
          dots.push_back(d);
        }
        std::sort(dots.begin(), dots.end());
        CONVERGE_RETURN_IF_ERROR(CheckSortedDots(dots, [](Dot d) { return d; }));
        if (!s.emplace(std::move(e), std::move(dots)).second) {
          return internal::JsonError(kWhat, "duplicate set element");
        }
      }
      if (s.empty()) return internal::JsonError(kWhat, "empty value");
      *out = std::move(s);
      return Status::Ok();
    }
    case ValueKind::kMap:
      break;
  }
  return internal::JsonError(kWhat, "unknown kind");
}

Status MapFromJson(const json::value& v, uint32_t depth, const DecodeLimits& limits,
                   MapStore* out) {
  if (depth > limits.max_depth) {
    return InvalidArgumentError("or-map: nesting deeper than " + std::to_string(limits.max_depth));
  }
  CONVERGE_ASSIGN_OR_RETURN(const json::array* fields, internal::ArrayFromJson(v, kWhat));
  MapStore m;
  for (const json::value& fv : *fields) {
    CONVERGE_ASSIGN_OR_RETURN(const json::object* f, internal::ObjectFromJson(fv, kWhat));
    CONVERGE_ASSIGN_OR_RETURN(const json::value* nv, internal::Member(*f, "name", kWhat));
    CONVERGE_ASSIGN_OR_RETURN(const json::value* kv, internal::Member(*f, "kind", kWhat));
    CONVERGE_ASSIGN_OR_RETURN(const json::value* vv, internal::Member(*f, "value", kWhat));
    MapEntry entry;
    CONVERGE_RETURN_IF_ERROR(internal::BytesFromJson(*nv, &entry.key.name, kWhat));
    if (!kv->is_string() ||
        !ParseValueKind(std::string_view(kv->get_string().data(), kv->get_string().size()),
                        &entry.key.kind)) {
      return internal::JsonError(kWhat, "unknown field kind");
    }
    CONVERGE_RETURN_IF_ERROR(FieldFromJson(*vv, entry.key.kind, depth, limits, &entry.value));
    if (internal::IsEmpty(entry.value)) return internal::JsonError(kWhat, "empty field");
    m.push_back(std::move(entry));
  }
  std::sort(m.begin(), m.end(), [](const MapEntry& a, const MapEntry& b) { return a.key < b.key; });
  for (size_t i = 1; i < m.size(); ++i) {
    if (m[i - 1].key == m[i].key) return internal::JsonError(kWhat, "duplicate field");
  }
  *out = std::move(m);
  return Status::Ok();
}

// Every dot must be in the context and tag exactly one thing.
Status ValidateDots(const MapStore& root, const CausalContext& context) {
  std::vector<Dot> dots;
  for (const MapEntry& e : root) internal::CollectDots(e.value, &dots);
  std::sort(dots.begin(), dots.end());
  if (std::adjacent_find(dots.begin(), dots.end()) != dots.end()) {
    return InvalidArgumentError("or-map: a dot tags two values");
  }
  for (const Dot& d : dots) {
    if (!context.Contains(d)) {
      return InvalidArgumentError("or-map: dot " + d.ToString() + " is not in the context");
    }
  }
  return Status::Ok();
}

void EncodeDotList(const std::vector<Dot>& dots, BinaryWriter& w) {
  w.U64(dots.size());
  for (const Dot& d : dots) internal::EncodeDot(d, w);
}

void EncodeMap(const MapStore& m, BinaryWriter& w);

void EncodeField(const FieldValue& v, BinaryWriter& w) {
  switch (internal::KindOf(v)) {
    case ValueKind::kCounter:
      w.U64(std::get<CounterStore>(v).size());
      for (const auto& [d, x] : std::get<CounterStore>(v)) {
        internal::EncodeDot(d, w);
        w.I64(x);
      }
      break;
    case ValueKind::kFlag:
      EncodeDotList(std::get<FlagStore>(v), w);
      break;
    case ValueKind::kMvRegister:
      w.U64(std::get<MvStore>(v).size());
      for (const auto& [d, x] : std::get<MvStore>(v)) {
        internal::EncodeDot(d, w);
        w.Bytes(x);
      }
      break;
    case ValueKind::kLwwRegister:
      w.U64(std::get<LwwStore>(v).size());
      for (const auto& [d, cell] : std::get<LwwStore>(v)) {
        internal::EncodeDot(d, w);
        internal::EncodeHlc(cell.timestamp, w);
        w.Bytes(cell.value);
      }
      break;
    case ValueKind::kOrSet:
      w.U64(std::get<SetStore>(v).size());
      for (const auto& [e, dots] : std::get<SetStore>(v)) {
        w.Bytes(e);
        EncodeDotList(dots, w);
      }
      break;
    case ValueKind::kMap:
      EncodeMap(std::get<MapStore>(v), w);
      break;
  }
}

void EncodeMap(const MapStore& m, BinaryWriter& w) {
  w.U64(m.size());
  for (const MapEntry& e : m) {
    w.Bytes(e.key.name);
    w.Byte(static_cast<uint8_t>(e.key.kind));
    EncodeField(e.value, w);
  }
}

bool DecodeDotList(BinaryReader& r, std::vector<Dot>* dots) {
  uint64_t n;
  if (!r.Count(&n, 2)) return false;
  if (n == 0) return r.Fail("empty value");
  dots->reserve(internal::kMaxDecodeReserve < n ? internal::kMaxDecodeReserve : n);
  for (uint64_t i = 0; i < n; ++i) {
    Dot d;
    if (!internal::DecodeDot(r, &d)) return false;
    if (!dots->empty() && !(dots->back() < d)) return r.Fail("dots not strictly increasing");
    dots->push_back(d);
  }
  return true;
}

// Reads a DotFun whose values `read_value` decodes.
template <typename V, typename ReadValue>
bool DecodeDotFun(BinaryReader& r, size_t min_item_bytes, DotFun<V>* out, ReadValue read_value) {
  uint64_t n;
  if (!r.Count(&n, min_item_bytes)) return false;
  if (n == 0) return r.Fail("empty value");
  out->reserve(internal::kMaxDecodeReserve < n ? internal::kMaxDecodeReserve : n);
  for (uint64_t i = 0; i < n; ++i) {
    Dot d;
    V v;
    if (!internal::DecodeDot(r, &d) || !read_value(&v)) return false;
    if (!out->empty() && !(out->back().first < d)) return r.Fail("dots not strictly increasing");
    out->emplace_back(d, std::move(v));
  }
  return true;
}

bool DecodeMap(BinaryReader& r, uint32_t depth, const DecodeLimits& limits, MapStore* out);

bool DecodeField(BinaryReader& r, ValueKind kind, uint32_t depth, const DecodeLimits& limits,
                 FieldValue* out) {
  switch (kind) {
    case ValueKind::kCounter: {
      CounterStore s;
      if (!DecodeDotFun(r, 3, &s, [&](int64_t* x) { return r.I64(x); })) return false;
      *out = std::move(s);
      return true;
    }
    case ValueKind::kFlag: {
      FlagStore s;
      if (!DecodeDotList(r, &s)) return false;
      *out = std::move(s);
      return true;
    }
    case ValueKind::kMvRegister: {
      MvStore s;
      if (!DecodeDotFun(r, 3, &s, [&](std::string* x) { return r.Bytes(x); })) return false;
      *out = std::move(s);
      return true;
    }
    case ValueKind::kLwwRegister: {
      LwwStore s;
      if (!DecodeDotFun(r, 5, &s, [&](LwwCell* c) {
            return internal::DecodeHlc(r, &c->timestamp) && r.Bytes(&c->value);
          })) {
        return false;
      }
      *out = std::move(s);
      return true;
    }
    case ValueKind::kOrSet: {
      SetStore s;
      uint64_t n;
      if (!r.Count(&n, 4)) return false;
      if (n == 0) return r.Fail("empty value");
      for (uint64_t i = 0; i < n; ++i) {
        std::string e;
        std::vector<Dot> dots;
        if (!r.Bytes(&e) || !DecodeDotList(r, &dots)) return false;
        if (!s.empty() && !(s.rbegin()->first < e)) {
          return r.Fail("set elements not strictly increasing");
        }
        s.emplace_hint(s.end(), std::move(e), std::move(dots));
      }
      *out = std::move(s);
      return true;
    }
    case ValueKind::kMap: {
      MapStore m;
      if (!DecodeMap(r, depth + 1, limits, &m)) return false;
      if (m.empty()) return r.Fail("empty value");
      *out = std::move(m);
      return true;
    }
  }
  return r.Fail("unknown value kind");
}

bool DecodeMap(BinaryReader& r, uint32_t depth, const DecodeLimits& limits, MapStore* out) {
  if (depth > limits.max_depth) return r.Fail("nesting deeper than the limit");
  uint64_t n;
  if (!r.Count(&n, 3)) return false;
  out->reserve(internal::kMaxDecodeReserve < n ? internal::kMaxDecodeReserve : n);
  for (uint64_t i = 0; i < n; ++i) {
    MapEntry e;
    uint8_t kind;
    if (!r.Bytes(&e.key.name) || !r.Byte(&kind)) return false;
    if (kind < 1 || kind > 6) return r.Fail("unknown value kind");
    e.key.kind = static_cast<ValueKind>(kind);
    if (!out->empty() && !(out->back().key < e.key)) {
      return r.Fail("fields not strictly increasing");
    }
    if (!DecodeField(r, e.key.kind, depth, limits, &e.value)) return false;
    out->push_back(std::move(e));
  }
  return true;
}

}  // namespace

std::string OrMap::ToJson() const {
  json::object o;
  o["type"] = CrdtKindName(CrdtKind::kOrMap);
  o["context"] = internal::CausalContextToJson(context_);
  o["fields"] = MapToJson(store_->root);
  return internal::SerializeJson(o);
}

Result<OrMap> OrMap::FromJson(std::string_view text, const DecodeLimits& limits) {
  return internal::DecodeJson<OrMap>(
      text, limits, kWhat, [&](const json::value& v, OrMap* out) -> Status {
        CONVERGE_ASSIGN_OR_RETURN(const json::object* o, internal::ObjectFromJson(v, kWhat));
        CONVERGE_RETURN_IF_ERROR(internal::CheckType(*o, kWhat, kWhat));
        CONVERGE_ASSIGN_OR_RETURN(const json::value* cv, internal::Member(*o, "context", kWhat));
        CONVERGE_ASSIGN_OR_RETURN(const json::value* fv, internal::Member(*o, "fields", kWhat));
        CONVERGE_RETURN_IF_ERROR(internal::CausalContextFromJson(*cv, &out->context_, kWhat));
        CONVERGE_RETURN_IF_ERROR(MapFromJson(*fv, 1, limits, &out->store_->root));
        return ValidateDots(out->store_->root, out->context_);
      });
}

void OrMap::AppendBinary(std::string* out) const {
  BinaryWriter w(out);
  w.Header(static_cast<uint8_t>(CrdtKind::kOrMap));
  internal::EncodeCausalContext(context_, w);
  EncodeMap(store_->root, w);
}

std::string OrMap::ToBinary() const {
  std::string out;
  AppendBinary(&out);
  return out;
}

Result<OrMap> OrMap::FromBinary(std::string_view bytes, const DecodeLimits& limits) {
  CONVERGE_RETURN_IF_ERROR(internal::CheckInputSize(bytes, limits, kWhat));
  BinaryReader r(bytes, kWhat);
  OrMap map;
  if (r.Header(static_cast<uint8_t>(CrdtKind::kOrMap)) &&
      internal::DecodeCausalContext(r, &map.context_)) {
    DecodeMap(r, 1, limits, &map.store_->root);
  }
  CONVERGE_RETURN_IF_ERROR(r.Finish());
  CONVERGE_RETURN_IF_ERROR(ValidateDots(map.store_->root, map.context_));
  return map;
}

}  // namespace converge::conflict
