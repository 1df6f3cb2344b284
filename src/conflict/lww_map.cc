#include "converge/conflict/lww_map.h"

#include <algorithm>
#include <tuple>

#include "conflict/binary_codec.h"
#include "conflict/json_codec.h"
#include "converge/conflict/crdt_kind.h"

namespace converge::conflict {

namespace json = internal::json;
using internal::BinaryReader;
using internal::BinaryWriter;

namespace {
// True iff `a` beats `b`: the greater stamp; equal stamps (impossible between correct
// replicas) fall back to the contents so the choice is the same everywhere.
inline bool Beats(const LwwMap::Entry& a, const LwwMap::Entry& b) {
  if (b.stamp < a.stamp) return true;
  if (a.stamp < b.stamp) return false;
  return std::tie(b.deleted, b.value) < std::tie(a.deleted, a.value);
}
}  // namespace

const LwwMap::Entry* LwwMap::Find(std::string_view key) const {
  const size_t s = entries_.Find(key);
  return s == Map::npos ? nullptr : &entries_.slot(s).value;
}

const std::string* LwwMap::Get(std::string_view key) const {
  const Entry* e = Find(key);
  return e == nullptr || e->deleted ? nullptr : &e->value;
}

std::vector<std::string> LwwMap::Keys() const {
  std::vector<std::string> out;
  out.reserve(size());
  for (const auto& slot : entries_.slots()) {
    if (!slot.value.deleted) out.push_back(slot.key);
  }
  std::sort(out.begin(), out.end());
  return out;
}

void LwwMap::ForEach(const std::function<void(std::string_view, const Entry&)>& fn) const {
  for (const auto& slot : entries_.slots()) fn(slot.key, slot.value);
}

Result<LwwMap> LwwMap::Write(ReplicaId replica, HlcTimestamp timestamp, std::string key,
                             bool deleted, std::string value) {
  if (!replica.valid()) return InvalidArgumentError("lww-map: replica id 0 is reserved");
  const LwwStamp stamp{timestamp, replica};
  const uint64_t hash = internal::HashString(key);
  const size_t s = entries_.Find(key, hash);
  if (s != Map::npos && !(entries_.slot(s).value.stamp < stamp)) {
    const LwwStamp& current = entries_.slot(s).value.stamp;
    return FailedPreconditionError("lww-map: write of a key stamped " + timestamp.ToString() + "@" +
                                   replica.ToString() + " is not after its current stamp " +
                                   current.timestamp.ToString() + "@" + current.replica.ToString() +
                                   "; the writer's clock must observe the current stamp first");
  }
  Entry entry{stamp, deleted, std::move(value)};
  if (s == Map::npos) {
    entries_.InsertNew(hash, key, entry);
    if (deleted) ++tombstones_;
  } else {
    Entry& mine = entries_.slot(s).value;
    tombstones_ += static_cast<size_t>(deleted) - static_cast<size_t>(mine.deleted);
    mine = entry;
  }
  LwwMap delta;
  delta.entries_.InsertNew(hash, std::move(key), std::move(entry));
  delta.tombstones_ = deleted ? 1 : 0;
  return delta;
}

Result<LwwMap> LwwMap::Set(ReplicaId replica, HlcTimestamp timestamp, std::string key,
                           std::string value) {
  return Write(replica, timestamp, std::move(key), false, std::move(value));
}

Result<LwwMap> LwwMap::Remove(ReplicaId replica, HlcTimestamp timestamp, std::string key) {
  return Write(replica, timestamp, std::move(key), true, std::string());
}

namespace {
Result<HlcTimestamp> TimestampAfter(const LwwMap& map, std::string_view key, HybridClock& clock) {
  const LwwMap::Entry* e = map.Find(key);
  return clock.Update(e == nullptr ? HlcTimestamp{} : e->stamp.timestamp);
}
}  // namespace

Result<LwwMap> LwwMap::Set(ReplicaId replica, HybridClock& clock, std::string key,
                           std::string value) {
  CONVERGE_ASSIGN_OR_RETURN(HlcTimestamp ts, TimestampAfter(*this, key, clock));
  return Set(replica, ts, std::move(key), std::move(value));
}

Result<LwwMap> LwwMap::Remove(ReplicaId replica, HybridClock& clock, std::string key) {
  CONVERGE_ASSIGN_OR_RETURN(HlcTimestamp ts, TimestampAfter(*this, key, clock));
  return Remove(replica, ts, std::move(key));
}

void LwwMap::Merge(const LwwMap& other) {
  if (&other == this) return;
  if (entries_.empty()) {
    *this = other;
    return;
  }
  const auto& theirs = other.entries_.slots();
  const size_t n = theirs.size();
  // Where entry j of `other` lives here (npos: absent). Maps decoded from the sorted binary
  // form, or grown from a common copy, hold shared keys at the same positions, so the same
  // slot is tried before the hash table.
  auto locate = [&](size_t j) {
    if (j < entries_.size() && entries_.slot(j).hash == theirs[j].hash &&
        entries_.slot(j).key == theirs[j].key) {
      return j;
    }
    return entries_.Find(theirs[j].key, theirs[j].hash);
  };
  auto join = [&](size_t j, size_t s) {
    const Entry& in = theirs[j].value;
    if (s == Map::npos) {
      entries_.InsertNew(theirs[j].hash, theirs[j].key, in);
      tombstones_ += in.deleted;
      return;
    }
    Entry& mine = entries_.slot(s).value;
    if (Beats(in, mine)) {
      tombstones_ += static_cast<size_t>(in.deleted) - static_cast<size_t>(mine.deleted);
      mine.stamp = in.stamp;
      mine.deleted = in.deleted;
      mine.value = in.value;  // reuses mine's buffer when it is large enough
    }
  };
  // Small merges, and maps whose keys line up (sampled), need no pipelining.
  bool aligned = n < 64;
  if (!aligned) {
    aligned = true;
    for (size_t j = 0; j < n && aligned; j += n / 8) {
      aligned = j < entries_.size() && entries_.slot(j).hash == theirs[j].hash;
    }
  }
  if (aligned) {
    for (size_t j = 0; j < n; ++j) join(j, locate(j));
    return;
  }
  // Large merges are bound by cache misses on our table and slots. Pipeline them: prefetch the
  // bucket of entry i, look up entry i-16 (its bucket now cached) and prefetch its slot,
  // and join entry i-32. Lookups ahead of joins stay valid: joins only append slots, and `other`
  // has no duplicate keys.
  constexpr size_t kAhead = 16;
  size_t ring[kAhead];
  for (size_t i = 0; i < n + 2 * kAhead; ++i) {
    if (i >= 2 * kAhead) {
      const size_t j = i - 2 * kAhead;
      join(j, ring[j % kAhead]);
    }
    if (i >= kAhead && i - kAhead < n) {
      const size_t j = i - kAhead;
      const size_t s = locate(j);
      ring[j % kAhead] = s;
      if (s != Map::npos) entries_.PrefetchSlot(s);
    }
    if (i < n && !(i < entries_.size() && entries_.slot(i).hash == theirs[i].hash)) {
      entries_.PrefetchBucket(theirs[i].hash);
    }
  }
}

size_t LwwMap::PurgeTombstonesBefore(HlcTimestamp horizon) {
  const size_t purged = entries_.Filter([&](const Map::Slot& slot) {
    return !(slot.value.deleted && slot.value.stamp.timestamp < horizon);
  });
  tombstones_ -= purged;
  return purged;
}

std::string LwwMap::ToJson() const {
  std::vector<const Map::Slot*> sorted;
  sorted.reserve(entries_.size());
  for (const auto& slot : entries_.slots()) sorted.push_back(&slot);
  std::sort(sorted.begin(), sorted.end(), [](auto a, auto b) { return a->key < b->key; });
  json::object o;
  o["type"] = CrdtKindName(CrdtKind::kLwwMap);
  json::array a;
  a.reserve(sorted.size());
  for (const auto* kv : sorted) {
    json::object e;
    e["key"] = internal::BytesToJson(kv->key);
    e["timestamp"] = internal::HlcToJson(kv->value.stamp.timestamp);
    e["replica"] = internal::ReplicaToJson(kv->value.stamp.replica);
    if (kv->value.deleted) {
      e["deleted"] = true;
    } else {
      e["value"] = internal::BytesToJson(kv->value.value);
    }
    a.push_back(std::move(e));
  }
  o["entries"] = std::move(a);
  return internal::SerializeJson(o);
}

Status LwwMap::InsertDecoded(std::string key, Entry entry) {
  if (!entry.stamp.replica.valid()) return InvalidArgumentError("lww-map: replica id 0");
  const bool deleted = entry.deleted;
  const uint64_t hash = internal::HashString(key);
  if (entries_.Find(key, hash) != Map::npos) return InvalidArgumentError("lww-map: duplicate key");
  entries_.InsertNew(hash, std::move(key), std::move(entry));
  tombstones_ += deleted;
  return Status::Ok();
}

Result<LwwMap> LwwMap::FromJson(std::string_view text, const DecodeLimits& limits) {
  constexpr std::string_view kWhat = "lww-map";
  return internal::DecodeJson<LwwMap>(
      text, limits, kWhat, [&](const json::value& v, LwwMap* out) -> Status {
        CONVERGE_ASSIGN_OR_RETURN(const json::object* o, internal::ObjectFromJson(v, kWhat));
        CONVERGE_RETURN_IF_ERROR(internal::CheckType(*o, kWhat, kWhat));
        CONVERGE_ASSIGN_OR_RETURN(const json::value* ev, internal::Member(*o, "entries", kWhat));
        CONVERGE_ASSIGN_OR_RETURN(const json::array* a, internal::ArrayFromJson(*ev, kWhat));
        for (const json::value& item : *a) {
          CONVERGE_ASSIGN_OR_RETURN(const json::object* e, internal::ObjectFromJson(item, kWhat));
          CONVERGE_ASSIGN_OR_RETURN(const json::value* kv, internal::Member(*e, "key", kWhat));
          CONVERGE_ASSIGN_OR_RETURN(const json::value* tv,
                                    internal::Member(*e, "timestamp", kWhat));
          CONVERGE_ASSIGN_OR_RETURN(const json::value* rv, internal::Member(*e, "replica", kWhat));
          std::string key;
          Entry entry;
          CONVERGE_RETURN_IF_ERROR(internal::BytesFromJson(*kv, &key, kWhat));
          CONVERGE_RETURN_IF_ERROR(internal::HlcFromJson(*tv, &entry.stamp.timestamp, kWhat));
          CONVERGE_RETURN_IF_ERROR(internal::ReplicaFromJson(*rv, &entry.stamp.replica, kWhat));
          const json::value* dv = e->if_contains("deleted");
          if (dv != nullptr)
            CONVERGE_RETURN_IF_ERROR(internal::BoolFromJson(*dv, &entry.deleted, kWhat));
          const json::value* vv = e->if_contains("value");
          if (entry.deleted == (vv != nullptr)) {
            return internal::JsonError(kWhat, "an entry has either a value or \"deleted\": true");
          }
          if (vv != nullptr)
            CONVERGE_RETURN_IF_ERROR(internal::BytesFromJson(*vv, &entry.value, kWhat));
          CONVERGE_RETURN_IF_ERROR(out->InsertDecoded(std::move(key), std::move(entry)));
        }
        return Status::Ok();
      });
}

void LwwMap::AppendBinary(std::string* out) const {
  std::vector<const Map::Slot*> sorted;
  sorted.reserve(entries_.size());
  for (const auto& slot : entries_.slots()) sorted.push_back(&slot);
  std::sort(sorted.begin(), sorted.end(), [](auto a, auto b) { return a->key < b->key; });
  BinaryWriter w(out);
  w.Header(static_cast<uint8_t>(CrdtKind::kLwwMap));
  w.U64(sorted.size());
  for (const auto* kv : sorted) {
    w.Bytes(kv->key);
    internal::EncodeHlc(kv->value.stamp.timestamp, w);
    w.U64(kv->value.stamp.replica.value());
    w.Byte(kv->value.deleted ? 1 : 0);
    if (!kv->value.deleted) w.Bytes(kv->value.value);
  }
}

std::string LwwMap::ToBinary() const {
  std::string out;
  AppendBinary(&out);
  return out;
}

Result<LwwMap> LwwMap::FromBinary(std::string_view bytes, const DecodeLimits& limits) {
  CONVERGE_RETURN_IF_ERROR(internal::CheckInputSize(bytes, limits, "lww-map"));
  BinaryReader r(bytes, "lww-map");
  LwwMap map;
  uint64_t n = 0;
  Status insert_status;
  if (r.Header(static_cast<uint8_t>(CrdtKind::kLwwMap)) && r.Count(&n, 5)) {
    map.entries_.Reserve(internal::kMaxDecodeReserve < n ? internal::kMaxDecodeReserve : n);
    std::string prev;
    for (uint64_t i = 0; i < n; ++i) {
      std::string key;
      Entry e;
      uint64_t replica;
      uint8_t flag;
      if (!r.Bytes(&key) || !internal::DecodeHlc(r, &e.stamp.timestamp) || !r.U64(&replica) ||
          !r.Byte(&flag)) {
        break;
      }
      if (flag > 1) {
        r.Fail("bad deleted flag");
        break;
      }
      if (i > 0 && !(prev < key)) {
        r.Fail("keys not strictly increasing");
        break;
      }
      e.stamp.replica = ReplicaId(replica);
      e.deleted = flag == 1;
      if (!e.deleted && !r.Bytes(&e.value)) break;
      prev = key;
      insert_status = map.InsertDecoded(std::move(key), std::move(e));
      if (!insert_status.ok()) break;
    }
  }
  CONVERGE_RETURN_IF_ERROR(r.Finish());
  CONVERGE_RETURN_IF_ERROR(insert_status);
  return map;
}

}  // namespace converge::conflict
