#include "converge/conflict/counters.h"

#include <algorithm>
#include <limits>
#include <map>

#include "conflict/binary_codec.h"
#include "conflict/json_codec.h"
#include "converge/conflict/crdt_kind.h"

namespace converge::conflict {

namespace json = internal::json;
using internal::BinaryReader;
using internal::BinaryWriter;

namespace {

__extension__ using Int128 = __int128;

constexpr int64_t kInt64Max = std::numeric_limits<int64_t>::max();
constexpr int64_t kInt64Min = std::numeric_limits<int64_t>::min();

int64_t ClampToInt64(Int128 v) {
  if (v > kInt64Max) return kInt64Max;
  if (v < kInt64Min) return kInt64Min;
  return static_cast<int64_t>(v);
}

template <typename Entry>
auto FindReplica(std::vector<Entry>& v, ReplicaId r) {
  return std::lower_bound(v.begin(), v.end(), r,
                          [](const Entry& e, ReplicaId id) { return e.replica < id; });
}
template <typename Entry>
auto FindReplica(const std::vector<Entry>& v, ReplicaId r) {
  return std::lower_bound(v.begin(), v.end(), r,
                          [](const Entry& e, ReplicaId id) { return e.replica < id; });
}

// Merges two replica-sorted vectors, combining entries of the same replica with `join`.
template <typename Entry, typename Join>
void MergeSorted(std::vector<Entry>& mine, const std::vector<Entry>& theirs, Join join) {
  if (theirs.empty()) return;
  // Fast path: same replicas in the same order (the common steady state) — join in place.
  if (mine.size() == theirs.size()) {
    bool same = true;
    for (size_t i = 0; i < mine.size(); ++i) {
      if (mine[i].replica != theirs[i].replica) {
        same = false;
        break;
      }
    }
    if (same) {
      for (size_t i = 0; i < mine.size(); ++i) join(mine[i], theirs[i]);
      return;
    }
  }
  std::vector<Entry> out;
  out.reserve(mine.size() + theirs.size());
  size_t i = 0, j = 0;
  while (i < mine.size() || j < theirs.size()) {
    if (j == theirs.size() || (i < mine.size() && mine[i].replica < theirs[j].replica)) {
      out.push_back(std::move(mine[i++]));
    } else if (i == mine.size() || theirs[j].replica < mine[i].replica) {
      out.push_back(theirs[j++]);
    } else {
      join(mine[i], theirs[j]);
      out.push_back(std::move(mine[i]));
      ++i;
      ++j;
    }
  }
  mine = std::move(out);
}

Status CheckReplica(ReplicaId r, std::string_view what) {
  if (!r.valid()) return InvalidArgumentError(std::string(what) + ": replica id 0 is reserved");
  return Status::Ok();
}

}  // namespace

// ---- GCounter ---------------------------------------------------------------------------

uint64_t GCounter::Value() const {
  uint64_t sum = 0;
  for (const Entry& e : entries_) {
    if (__builtin_add_overflow(sum, e.count, &sum)) return std::numeric_limits<uint64_t>::max();
  }
  return sum;
}

uint64_t GCounter::Get(ReplicaId replica) const {
  auto it = FindReplica(entries_, replica);
  return it != entries_.end() && it->replica == replica ? it->count : 0;
}

Result<GCounter> GCounter::Increment(ReplicaId replica, uint64_t amount) {
  CONVERGE_RETURN_IF_ERROR(CheckReplica(replica, "g-counter"));
  GCounter delta;
  if (amount == 0) return delta;
  auto it = FindReplica(entries_, replica);
  const bool found = it != entries_.end() && it->replica == replica;
  uint64_t next;
  if (__builtin_add_overflow(found ? it->count : 0, amount, &next)) {
    return OutOfRangeError("g-counter: total of replica " + replica.ToString() + " would overflow");
  }
  if (found) {
    it->count = next;
  } else {
    entries_.insert(it, Entry{replica, next});
  }
  delta.entries_.push_back(Entry{replica, next});
  return delta;
}

void GCounter::Merge(const GCounter& other) {
  if (&other == this) return;
  MergeSorted(entries_, other.entries_,
              [](Entry& a, const Entry& b) { a.count = std::max(a.count, b.count); });
}

std::string GCounter::ToJson() const {
  json::object o;
  o["type"] = CrdtKindName(CrdtKind::kGCounter);
  json::object entries;
  for (const Entry& e : entries_) entries[e.replica.ToString()] = e.count;
  o["entries"] = std::move(entries);
  return internal::SerializeJson(o);
}

Result<GCounter> GCounter::FromJson(std::string_view text, const DecodeLimits& limits) {
  constexpr std::string_view kWhat = "g-counter";
  return internal::DecodeJson<GCounter>(
      text, limits, kWhat, [&](const json::value& v, GCounter* out) -> Status {
        CONVERGE_ASSIGN_OR_RETURN(const json::object* o, internal::ObjectFromJson(v, kWhat));
        CONVERGE_RETURN_IF_ERROR(internal::CheckType(*o, kWhat, kWhat));
        CONVERGE_ASSIGN_OR_RETURN(const json::value* ev, internal::Member(*o, "entries", kWhat));
        CONVERGE_ASSIGN_OR_RETURN(const json::object* entries,
                                  internal::ObjectFromJson(*ev, kWhat));
        for (const auto& m : *entries) {
          Entry e;
          CONVERGE_RETURN_IF_ERROR(internal::ReplicaFromKey(
              std::string_view(m.key().data(), m.key().size()), &e.replica, kWhat));
          CONVERGE_RETURN_IF_ERROR(internal::Uint64FromJson(m.value(), &e.count, kWhat));
          if (e.count == 0) continue;
          auto it = FindReplica(out->entries_, e.replica);
          if (it != out->entries_.end() && it->replica == e.replica) {
            return internal::JsonError(kWhat, "duplicate replica " + e.replica.ToString());
          }
          out->entries_.insert(it, e);
        }
        return Status::Ok();
      });
}

void GCounter::AppendBinary(std::string* out) const {
  BinaryWriter w(out);
  w.Header(static_cast<uint8_t>(CrdtKind::kGCounter));
  w.U64(entries_.size());
  uint64_t prev = 0;
  for (const Entry& e : entries_) {
    w.U64(e.replica.value() - prev);
    w.U64(e.count);
    prev = e.replica.value();
  }
}

std::string GCounter::ToBinary() const {
  std::string out;
  AppendBinary(&out);
  return out;
}

namespace {
// Reads a replica id stored as a delta from the previous one in a strictly increasing list.
bool ReadReplicaDelta(BinaryReader& r, uint64_t* prev, bool first, ReplicaId* out) {
  uint64_t delta;
  if (!r.U64(&delta)) return false;
  if (!first && delta == 0) return r.Fail("replicas not strictly increasing");
  if (delta > std::numeric_limits<uint64_t>::max() - *prev) return r.Fail("replica id overflow");
  *prev += delta;
  if (*prev == 0) return r.Fail("replica id 0 is reserved");
  *out = ReplicaId(*prev);
  return true;
}
}  // namespace

Result<GCounter> GCounter::FromBinary(std::string_view bytes, const DecodeLimits& limits) {
  CONVERGE_RETURN_IF_ERROR(internal::CheckInputSize(bytes, limits, "g-counter"));
  BinaryReader r(bytes, "g-counter");
  GCounter c;
  uint64_t n = 0, prev = 0;
  if (r.Header(static_cast<uint8_t>(CrdtKind::kGCounter)) && r.Count(&n, 2)) {
    c.entries_.reserve(internal::kMaxDecodeReserve < n ? internal::kMaxDecodeReserve : n);
    for (uint64_t i = 0; i < n; ++i) {
      Entry e;
      if (!ReadReplicaDelta(r, &prev, i == 0, &e.replica) || !r.U64(&e.count)) break;
      if (e.count == 0) {
        r.Fail("zero count");
        break;
      }
      c.entries_.push_back(e);
    }
  }
  CONVERGE_RETURN_IF_ERROR(r.Finish());
  return c;
}

// ---- PnCounter --------------------------------------------------------------------------

int64_t PnCounter::Value() const {
  Int128 sum = 0;
  for (const Entry& e : entries_) sum += Int128(e.increments) - Int128(e.decrements);
  return ClampToInt64(sum);
}

PnCounter::Entry& PnCounter::EntryFor(ReplicaId replica) {
  auto it = FindReplica(entries_, replica);
  if (it == entries_.end() || it->replica != replica) it = entries_.insert(it, Entry{replica});
  return *it;
}

Result<PnCounter> PnCounter::Increment(ReplicaId replica, uint64_t amount) {
  CONVERGE_RETURN_IF_ERROR(CheckReplica(replica, "pn-counter"));
  PnCounter delta;
  if (amount == 0) return delta;
  auto it = FindReplica(entries_, replica);
  const uint64_t current = it != entries_.end() && it->replica == replica ? it->increments : 0;
  uint64_t next;
  if (__builtin_add_overflow(current, amount, &next)) {
    return OutOfRangeError("pn-counter: increments of replica " + replica.ToString() +
                           " would overflow");
  }
  Entry& e = EntryFor(replica);
  e.increments = next;
  delta.entries_.push_back(e);
  return delta;
}

Result<PnCounter> PnCounter::Decrement(ReplicaId replica, uint64_t amount) {
  CONVERGE_RETURN_IF_ERROR(CheckReplica(replica, "pn-counter"));
  PnCounter delta;
  if (amount == 0) return delta;
  auto it = FindReplica(entries_, replica);
  const uint64_t current = it != entries_.end() && it->replica == replica ? it->decrements : 0;
  uint64_t next;
  if (__builtin_add_overflow(current, amount, &next)) {
    return OutOfRangeError("pn-counter: decrements of replica " + replica.ToString() +
                           " would overflow");
  }
  Entry& e = EntryFor(replica);
  e.decrements = next;
  delta.entries_.push_back(e);
  return delta;
}

Result<PnCounter> PnCounter::Add(ReplicaId replica, int64_t delta) {
  if (delta >= 0) return Increment(replica, static_cast<uint64_t>(delta));
  // -INT64_MIN does not fit in int64; negate in unsigned arithmetic.
  return Decrement(replica, uint64_t{0} - static_cast<uint64_t>(delta));
}

void PnCounter::Merge(const PnCounter& other) {
  if (&other == this) return;
  MergeSorted(entries_, other.entries_, [](Entry& a, const Entry& b) {
    a.increments = std::max(a.increments, b.increments);
    a.decrements = std::max(a.decrements, b.decrements);
  });
}

std::string PnCounter::ToJson() const {
  json::object o;
  o["type"] = CrdtKindName(CrdtKind::kPnCounter);
  json::object entries;
  for (const Entry& e : entries_) {
    json::object pn;
    pn["p"] = e.increments;
    pn["n"] = e.decrements;
    entries[e.replica.ToString()] = std::move(pn);
  }
  o["entries"] = std::move(entries);
  return internal::SerializeJson(o);
}

Result<PnCounter> PnCounter::FromJson(std::string_view text, const DecodeLimits& limits) {
  constexpr std::string_view kWhat = "pn-counter";
  return internal::DecodeJson<PnCounter>(
      text, limits, kWhat, [&](const json::value& v, PnCounter* out) -> Status {
        CONVERGE_ASSIGN_OR_RETURN(const json::object* o, internal::ObjectFromJson(v, kWhat));
        CONVERGE_RETURN_IF_ERROR(internal::CheckType(*o, kWhat, kWhat));
        CONVERGE_ASSIGN_OR_RETURN(const json::value* ev, internal::Member(*o, "entries", kWhat));
        CONVERGE_ASSIGN_OR_RETURN(const json::object* entries,
                                  internal::ObjectFromJson(*ev, kWhat));
        for (const auto& m : *entries) {
          Entry e;
          CONVERGE_RETURN_IF_ERROR(internal::ReplicaFromKey(
              std::string_view(m.key().data(), m.key().size()), &e.replica, kWhat));
          CONVERGE_ASSIGN_OR_RETURN(const json::object* pn,
                                    internal::ObjectFromJson(m.value(), kWhat));
          CONVERGE_ASSIGN_OR_RETURN(const json::value* p, internal::Member(*pn, "p", kWhat));
          CONVERGE_ASSIGN_OR_RETURN(const json::value* n, internal::Member(*pn, "n", kWhat));
          CONVERGE_RETURN_IF_ERROR(internal::Uint64FromJson(*p, &e.increments, kWhat));
          CONVERGE_RETURN_IF_ERROR(internal::Uint64FromJson(*n, &e.decrements, kWhat));
          if (e.increments == 0 && e.decrements == 0) continue;
          auto it = FindReplica(out->entries_, e.replica);
          if (it != out->entries_.end() && it->replica == e.replica) {
            return internal::JsonError(kWhat, "duplicate replica " + e.replica.ToString());
          }
          out->entries_.insert(it, e);
        }
        return Status::Ok();
      });
}

void PnCounter::AppendBinary(std::string* out) const {
  BinaryWriter w(out);
  w.Header(static_cast<uint8_t>(CrdtKind::kPnCounter));
  w.U64(entries_.size());
  uint64_t prev = 0;
  for (const Entry& e : entries_) {
    w.U64(e.replica.value() - prev);
    w.U64(e.increments);
    w.U64(e.decrements);
    prev = e.replica.value();
  }
}

std::string PnCounter::ToBinary() const {
  std::string out;
  AppendBinary(&out);
  return out;
}

Result<PnCounter> PnCounter::FromBinary(std::string_view bytes, const DecodeLimits& limits) {
  CONVERGE_RETURN_IF_ERROR(internal::CheckInputSize(bytes, limits, "pn-counter"));
  BinaryReader r(bytes, "pn-counter");
  PnCounter c;
  uint64_t n = 0, prev = 0;
  if (r.Header(static_cast<uint8_t>(CrdtKind::kPnCounter)) && r.Count(&n, 3)) {
    c.entries_.reserve(internal::kMaxDecodeReserve < n ? internal::kMaxDecodeReserve : n);
    for (uint64_t i = 0; i < n; ++i) {
      Entry e;
      if (!ReadReplicaDelta(r, &prev, i == 0, &e.replica) || !r.U64(&e.increments) ||
          !r.U64(&e.decrements)) {
        break;
      }
      if (e.increments == 0 && e.decrements == 0) {
        r.Fail("empty entry");
        break;
      }
      c.entries_.push_back(e);
    }
  }
  CONVERGE_RETURN_IF_ERROR(r.Finish());
  return c;
}

// ---- BoundedCounter ---------------------------------------------------------------------

namespace {

uint64_t TransferAmount(const BoundedCounter::Row& row, ReplicaId to) {
  auto it =
      std::lower_bound(row.transfers.begin(), row.transfers.end(), to,
                       [](const BoundedCounter::Transfer& t, ReplicaId id) { return t.to < id; });
  return it != row.transfers.end() && it->to == to ? it->amount : 0;
}

Int128 SignedRights(const std::vector<BoundedCounter::Row>& rows, ReplicaId replica) {
  Int128 rights = 0;
  for (const auto& row : rows) {
    if (row.replica == replica) {
      rights += Int128(row.increments) - Int128(row.decrements);
      for (const auto& t : row.transfers) rights -= Int128(t.amount);
    } else {
      rights += Int128(TransferAmount(row, replica));
    }
  }
  return rights;
}

}  // namespace

int64_t BoundedCounter::Value() const {
  Int128 v = bound_;
  for (const Row& row : rows_) v += Int128(row.increments) - Int128(row.decrements);
  return ClampToInt64(v);
}

uint64_t BoundedCounter::RightsOf(ReplicaId replica) const {
  const Int128 r = SignedRights(rows_, replica);
  if (r <= 0) return 0;
  if (r > Int128(std::numeric_limits<uint64_t>::max())) return std::numeric_limits<uint64_t>::max();
  return static_cast<uint64_t>(r);
}

BoundedCounter::Row& BoundedCounter::RowFor(ReplicaId replica) {
  auto it = FindReplica(rows_, replica);
  if (it == rows_.end() || it->replica != replica) it = rows_.insert(it, Row{replica, 0, 0, {}});
  return *it;
}

Status BoundedCounter::CheckRights() const {
  // Every replica that could hold rights: the row owners and the transfer targets.
  std::map<ReplicaId, Int128> rights;
  for (const Row& row : rows_) {
    rights[row.replica] += Int128(row.increments) - Int128(row.decrements);
    for (const Transfer& t : row.transfers) {
      rights[row.replica] -= Int128(t.amount);
      rights[t.to] += Int128(t.amount);
    }
  }
  for (const auto& [replica, r] : rights) {
    if (r < 0) {
      return FailedPreconditionError("bounded-counter: replica " + replica.ToString() +
                                     " would hold negative rights; the state is inconsistent");
    }
  }
  return Status::Ok();
}

Result<BoundedCounter> BoundedCounter::Increment(ReplicaId replica, uint64_t amount) {
  CONVERGE_RETURN_IF_ERROR(CheckReplica(replica, "bounded-counter"));
  if (amount == 0) return InvalidArgumentError("bounded-counter: amount must be >= 1");
  Int128 v = bound_;
  for (const Row& row : rows_) v += Int128(row.increments) - Int128(row.decrements);
  auto it = FindReplica(rows_, replica);
  const uint64_t current = it != rows_.end() && it->replica == replica ? it->increments : 0;
  uint64_t next;
  if (v + Int128(amount) > kInt64Max || __builtin_add_overflow(current, amount, &next)) {
    return OutOfRangeError("bounded-counter: value would exceed INT64_MAX");
  }
  RowFor(replica).increments = next;
  return *this;
}

Result<BoundedCounter> BoundedCounter::Decrement(ReplicaId replica, uint64_t amount) {
  CONVERGE_RETURN_IF_ERROR(CheckReplica(replica, "bounded-counter"));
  if (amount == 0) return InvalidArgumentError("bounded-counter: amount must be >= 1");
  const Int128 rights = SignedRights(rows_, replica);
  if (rights < Int128(amount)) {
    return FailedPreconditionError(
        "bounded-counter: replica " + replica.ToString() + " holds " +
        std::to_string(static_cast<int64_t>(std::max<Int128>(rights, 0))) +
        " rights, cannot decrement by " + std::to_string(amount) +
        " without risking the bound; transfer rights to it first");
  }
  Row& row = RowFor(replica);
  // rights <= increments + incoming transfers, so decrements cannot overflow unless the
  // incoming transfers do; check anyway, arithmetic must never wrap.
  if (__builtin_add_overflow(row.decrements, amount, &row.decrements)) {
    return InternalError("bounded-counter: decrement total overflow");
  }
  return *this;
}

Result<BoundedCounter> BoundedCounter::TransferRights(ReplicaId from, ReplicaId to,
                                                      uint64_t amount) {
  CONVERGE_RETURN_IF_ERROR(CheckReplica(from, "bounded-counter"));
  CONVERGE_RETURN_IF_ERROR(CheckReplica(to, "bounded-counter"));
  if (from == to) return InvalidArgumentError("bounded-counter: transfer to itself");
  if (amount == 0) return InvalidArgumentError("bounded-counter: amount must be >= 1");
  const Int128 rights = SignedRights(rows_, from);
  if (rights < Int128(amount)) {
    return FailedPreconditionError(
        "bounded-counter: replica " + from.ToString() + " holds " +
        std::to_string(static_cast<int64_t>(std::max<Int128>(rights, 0))) +
        " rights, cannot transfer " + std::to_string(amount));
  }
  uint64_t next;
  auto row_it = FindReplica(rows_, from);
  const uint64_t current =
      row_it != rows_.end() && row_it->replica == from ? TransferAmount(*row_it, to) : 0;
  if (__builtin_add_overflow(current, amount, &next)) {
    return OutOfRangeError("bounded-counter: cumulative transfer would overflow");
  }
  Row& row = RowFor(from);
  auto it = std::lower_bound(row.transfers.begin(), row.transfers.end(), to,
                             [](const Transfer& t, ReplicaId id) { return t.to < id; });
  if (it != row.transfers.end() && it->to == to) {
    it->amount = next;
  } else {
    row.transfers.insert(it, Transfer{to, next});
  }
  return *this;
}

Status BoundedCounter::Merge(const BoundedCounter& other) {
  if (&other == this) return Status::Ok();
  if (other.bound_ != bound_) {
    return FailedPreconditionError("bounded-counter: cannot merge bound " +
                                   std::to_string(other.bound_) + " into bound " +
                                   std::to_string(bound_));
  }
  std::vector<Row> merged = rows_;
  MergeSorted(merged, other.rows_, [](Row& a, const Row& b) {
    a.increments = std::max(a.increments, b.increments);
    a.decrements = std::max(a.decrements, b.decrements);
    std::vector<Transfer> out;
    out.reserve(a.transfers.size() + b.transfers.size());
    size_t i = 0, j = 0;
    while (i < a.transfers.size() || j < b.transfers.size()) {
      if (j == b.transfers.size() ||
          (i < a.transfers.size() && a.transfers[i].to < b.transfers[j].to)) {
        out.push_back(a.transfers[i++]);
      } else if (i == a.transfers.size() || b.transfers[j].to < a.transfers[i].to) {
        out.push_back(b.transfers[j++]);
      } else {
        out.push_back(
            Transfer{a.transfers[i].to, std::max(a.transfers[i].amount, b.transfers[j].amount)});
        ++i;
        ++j;
      }
    }
    a.transfers = std::move(out);
  });
  BoundedCounter candidate(bound_);
  candidate.rows_ = std::move(merged);
  CONVERGE_RETURN_IF_ERROR(candidate.CheckRights());
  // The value must stay representable too (a forged state could claim huge increments).
  Int128 v = bound_;
  for (const Row& row : candidate.rows_) v += Int128(row.increments) - Int128(row.decrements);
  if (v > kInt64Max) return FailedPreconditionError("bounded-counter: merged value overflows");
  rows_ = std::move(candidate.rows_);
  return Status::Ok();
}

std::string BoundedCounter::ToJson() const {
  json::object o;
  o["type"] = CrdtKindName(CrdtKind::kBoundedCounter);
  o["bound"] = bound_;
  json::object rows;
  for (const Row& row : rows_) {
    json::object r;
    r["p"] = row.increments;
    r["n"] = row.decrements;
    json::object t;
    for (const Transfer& tr : row.transfers) t[tr.to.ToString()] = tr.amount;
    r["t"] = std::move(t);
    rows[row.replica.ToString()] = std::move(r);
  }
  o["rows"] = std::move(rows);
  return internal::SerializeJson(o);
}

namespace {
// Structural checks shared by both decoders (sortedness is guaranteed by construction there).
Status ValidateRows(const std::vector<BoundedCounter::Row>& rows, int64_t bound) {
  Int128 v = bound;
  for (const auto& row : rows) {
    v += Int128(row.increments) - Int128(row.decrements);
    if (row.increments == 0 && row.decrements == 0 && row.transfers.empty()) {
      return InvalidArgumentError("bounded-counter: empty row for replica " +
                                  row.replica.ToString());
    }
    for (const auto& t : row.transfers) {
      if (t.to == row.replica || t.amount == 0 || !t.to.valid()) {
        return InvalidArgumentError("bounded-counter: invalid transfer in row of replica " +
                                    row.replica.ToString());
      }
    }
  }
  if (v > kInt64Max) return InvalidArgumentError("bounded-counter: value overflows");
  return Status::Ok();
}
}  // namespace

Result<BoundedCounter> BoundedCounter::FromJson(std::string_view text, const DecodeLimits& limits) {
  constexpr std::string_view kWhat = "bounded-counter";
  return internal::DecodeJson<BoundedCounter>(
      text, limits, kWhat, [&](const json::value& v, BoundedCounter* out) -> Status {
        CONVERGE_ASSIGN_OR_RETURN(const json::object* o, internal::ObjectFromJson(v, kWhat));
        CONVERGE_RETURN_IF_ERROR(internal::CheckType(*o, kWhat, kWhat));
        CONVERGE_ASSIGN_OR_RETURN(const json::value* bv, internal::Member(*o, "bound", kWhat));
        CONVERGE_RETURN_IF_ERROR(internal::Int64FromJson(*bv, &out->bound_, kWhat));
        CONVERGE_ASSIGN_OR_RETURN(const json::value* rv, internal::Member(*o, "rows", kWhat));
        CONVERGE_ASSIGN_OR_RETURN(const json::object* rows, internal::ObjectFromJson(*rv, kWhat));
        for (const auto& m : *rows) {
          Row row;
          CONVERGE_RETURN_IF_ERROR(internal::ReplicaFromKey(
              std::string_view(m.key().data(), m.key().size()), &row.replica, kWhat));
          CONVERGE_ASSIGN_OR_RETURN(const json::object* ro,
                                    internal::ObjectFromJson(m.value(), kWhat));
          CONVERGE_ASSIGN_OR_RETURN(const json::value* p, internal::Member(*ro, "p", kWhat));
          CONVERGE_ASSIGN_OR_RETURN(const json::value* n, internal::Member(*ro, "n", kWhat));
          CONVERGE_RETURN_IF_ERROR(internal::Uint64FromJson(*p, &row.increments, kWhat));
          CONVERGE_RETURN_IF_ERROR(internal::Uint64FromJson(*n, &row.decrements, kWhat));
          if (const json::value* tv = ro->if_contains("t")) {
            CONVERGE_ASSIGN_OR_RETURN(const json::object* t, internal::ObjectFromJson(*tv, kWhat));
            for (const auto& tm : *t) {
              Transfer tr;
              CONVERGE_RETURN_IF_ERROR(internal::ReplicaFromKey(
                  std::string_view(tm.key().data(), tm.key().size()), &tr.to, kWhat));
              CONVERGE_RETURN_IF_ERROR(internal::Uint64FromJson(tm.value(), &tr.amount, kWhat));
              if (tr.amount == 0) continue;
              auto it = std::lower_bound(row.transfers.begin(), row.transfers.end(), tr.to,
                                         [](const Transfer& x, ReplicaId id) { return x.to < id; });
              if (it != row.transfers.end() && it->to == tr.to) {
                return internal::JsonError(kWhat, "duplicate transfer target");
              }
              row.transfers.insert(it, tr);
            }
          }
          auto it = FindReplica(out->rows_, row.replica);
          if (it != out->rows_.end() && it->replica == row.replica) {
            return internal::JsonError(kWhat, "duplicate replica " + row.replica.ToString());
          }
          out->rows_.insert(it, std::move(row));
        }
        CONVERGE_RETURN_IF_ERROR(ValidateRows(out->rows_, out->bound_));
        Status rights = out->CheckRights();
        if (!rights.ok()) return InvalidArgumentError(rights.message());
        return Status::Ok();
      });
}

void BoundedCounter::AppendBinary(std::string* out) const {
  BinaryWriter w(out);
  w.Header(static_cast<uint8_t>(CrdtKind::kBoundedCounter));
  w.I64(bound_);
  w.U64(rows_.size());
  uint64_t prev = 0;
  for (const Row& row : rows_) {
    w.U64(row.replica.value() - prev);
    prev = row.replica.value();
    w.U64(row.increments);
    w.U64(row.decrements);
    w.U64(row.transfers.size());
    uint64_t prev_to = 0;
    for (const Transfer& t : row.transfers) {
      w.U64(t.to.value() - prev_to);
      w.U64(t.amount);
      prev_to = t.to.value();
    }
  }
}

std::string BoundedCounter::ToBinary() const {
  std::string out;
  AppendBinary(&out);
  return out;
}

Result<BoundedCounter> BoundedCounter::FromBinary(std::string_view bytes,
                                                  const DecodeLimits& limits) {
  CONVERGE_RETURN_IF_ERROR(internal::CheckInputSize(bytes, limits, "bounded-counter"));
  BinaryReader r(bytes, "bounded-counter");
  BoundedCounter c;
  uint64_t n = 0, prev = 0;
  if (r.Header(static_cast<uint8_t>(CrdtKind::kBoundedCounter)) && r.I64(&c.bound_) &&
      r.Count(&n, 4)) {
    for (uint64_t i = 0; i < n && r.ok(); ++i) {
      Row row;
      uint64_t nt = 0, prev_to = 0;
      if (!ReadReplicaDelta(r, &prev, i == 0, &row.replica) || !r.U64(&row.increments) ||
          !r.U64(&row.decrements) || !r.Count(&nt, 2)) {
        break;
      }
      for (uint64_t k = 0; k < nt; ++k) {
        Transfer t;
        if (!ReadReplicaDelta(r, &prev_to, k == 0, &t.to) || !r.U64(&t.amount)) break;
        row.transfers.push_back(t);
      }
      c.rows_.push_back(std::move(row));
    }
  }
  CONVERGE_RETURN_IF_ERROR(r.Finish());
  CONVERGE_RETURN_IF_ERROR(ValidateRows(c.rows_, c.bound_));
  Status rights = c.CheckRights();
  if (!rights.ok()) return InvalidArgumentError(rights.message());
  return c;
}

}  // namespace converge::conflict
