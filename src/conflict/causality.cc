#include "converge/conflict/causality.h"

#include <algorithm>
#include <charconv>
#include <limits>

#include "conflict/binary_codec.h"
#include "conflict/json_codec.h"

namespace converge::conflict {

using internal::BinaryReader;
using internal::BinaryWriter;

// ---- ReplicaId / Dot / Ordering --------------------------------------------------------

std::string ReplicaId::ToString() const { return std::to_string(value_); }

Result<ReplicaId> ReplicaId::Parse(std::string_view text) {
  uint64_t v = 0;
  const auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (text.empty() || ec != std::errc() || ptr != text.data() + text.size() ||
      (text.size() > 1 && text[0] == '0')) {
    return InvalidArgumentError("replica id must be a decimal uint64, got '" +
                                std::string(text.substr(0, 40)) + "'");
  }
  return ReplicaId(v);
}

std::string Dot::ToString() const { return replica.ToString() + ":" + std::to_string(counter); }

std::string_view OrderingName(Ordering ordering) {
  switch (ordering) {
    case Ordering::kBefore:
      return "before";
    case Ordering::kAfter:
      return "after";
    case Ordering::kEqual:
      return "equal";
    case Ordering::kConcurrent:
      return "concurrent";
  }
  return "unknown";
}

Ordering Compare(const HlcTimestamp& a, const HlcTimestamp& b) {
  if (a < b) return Ordering::kBefore;
  if (b < a) return Ordering::kAfter;
  return Ordering::kEqual;
}

namespace {
Ordering FromSubsets(bool a_in_b, bool b_in_a) {
  if (a_in_b && b_in_a) return Ordering::kEqual;
  if (a_in_b) return Ordering::kBefore;
  if (b_in_a) return Ordering::kAfter;
  return Ordering::kConcurrent;
}
}  // namespace

// ---- VersionVector -----------------------------------------------------------------

VersionVector::VersionVector(std::initializer_list<Entry> entries) {
  for (const Entry& e : entries) Observe(e.replica, e.counter);
}

uint64_t VersionVector::Get(ReplicaId replica) const {
  // Vectors are small (one entry per writer); a linear scan beats binary search up to a few
  // dozen entries, and binary search bounds the rest.
  if (entries_.size() <= 16) {
    for (const Entry& e : entries_) {
      if (e.replica == replica) return e.counter;
      if (e.replica > replica) return 0;
    }
    return 0;
  }
  auto it = std::lower_bound(entries_.begin(), entries_.end(), replica,
                             [](const Entry& e, ReplicaId r) { return e.replica < r; });
  return it != entries_.end() && it->replica == replica ? it->counter : 0;
}

void VersionVector::Observe(ReplicaId replica, uint64_t counter) {
  if (counter == 0) return;
  auto it = std::lower_bound(entries_.begin(), entries_.end(), replica,
                             [](const Entry& e, ReplicaId r) { return e.replica < r; });
  if (it != entries_.end() && it->replica == replica) {
    it->counter = std::max(it->counter, counter);
  } else {
    entries_.insert(it, Entry{replica, counter});
  }
}

Result<Dot> VersionVector::Increment(ReplicaId replica) {
  if (!replica.valid()) return InvalidArgumentError("replica id 0 is reserved");
  const uint64_t current = Get(replica);
  if (current == std::numeric_limits<uint64_t>::max()) {
    return OutOfRangeError("version vector counter of replica " + replica.ToString() +
                           " is exhausted");
  }
  Observe(replica, current + 1);
  return Dot{replica, current + 1};
}

void VersionVector::Merge(const VersionVector& other) {
  if (other.entries_.empty()) return;
  if (entries_.empty()) {
    entries_ = other.entries_;
    return;
  }
  // Common case: the other vector names no replica we lack — raise counters in place, no
  // allocation.
  if (other.entries_.size() <= entries_.size()) {
    size_t i = 0;
    bool subset = true;
    for (const Entry& e : other.entries_) {
      while (i < entries_.size() && entries_[i].replica < e.replica) ++i;
      if (i == entries_.size() || entries_[i].replica != e.replica) {
        subset = false;
        break;
      }
    }
    if (subset) {
      i = 0;
      for (const Entry& e : other.entries_) {
        while (entries_[i].replica < e.replica) ++i;
        entries_[i].counter = std::max(entries_[i].counter, e.counter);
      }
      return;
    }
  }
  std::vector<Entry> merged;
  merged.reserve(entries_.size() + other.entries_.size());
  auto a = entries_.begin();
  auto b = other.entries_.begin();
  while (a != entries_.end() || b != other.entries_.end()) {
    if (b == other.entries_.end() || (a != entries_.end() && a->replica < b->replica)) {
      merged.push_back(*a++);
    } else if (a == entries_.end() || b->replica < a->replica) {
      merged.push_back(*b++);
    } else {
      merged.push_back(Entry{a->replica, std::max(a->counter, b->counter)});
      ++a;
      ++b;
    }
  }
  entries_ = std::move(merged);
}

uint64_t VersionVector::EventCount() const {
  uint64_t sum = 0;
  for (const Entry& e : entries_) {
    if (__builtin_add_overflow(sum, e.counter, &sum)) return std::numeric_limits<uint64_t>::max();
  }
  return sum;
}

Ordering Compare(const VersionVector& a, const VersionVector& b) {
  bool a_in_b = true;  // every a[r] <= b[r]
  bool b_in_a = true;
  auto ia = a.entries().begin();
  auto ib = b.entries().begin();
  while (ia != a.entries().end() || ib != b.entries().end()) {
    if (ib == b.entries().end() || (ia != a.entries().end() && ia->replica < ib->replica)) {
      a_in_b = false;
      ++ia;
    } else if (ia == a.entries().end() || ib->replica < ia->replica) {
      b_in_a = false;
      ++ib;
    } else {
      if (ia->counter < ib->counter) b_in_a = false;
      if (ia->counter > ib->counter) a_in_b = false;
      ++ia;
      ++ib;
    }
    if (!a_in_b && !b_in_a) return Ordering::kConcurrent;
  }
  return FromSubsets(a_in_b, b_in_a);
}

std::string VersionVector::ToJson() const {
  return internal::SerializeJson(internal::VersionVectorToJson(*this));
}

Result<VersionVector> VersionVector::FromJson(std::string_view json, const DecodeLimits& limits) {
  return internal::DecodeJson<VersionVector>(
      json, limits, "version vector", [](const internal::json::value& v, VersionVector* out) {
        return internal::VersionVectorFromJson(v, out, "version vector");
      });
}

void VersionVector::AppendBinary(std::string* out) const {
  BinaryWriter w(out);
  internal::EncodeVersionVector(*this, w);
}

std::string VersionVector::ToBinary() const {
  std::string out;
  AppendBinary(&out);
  return out;
}

Result<VersionVector> VersionVector::FromBinary(std::string_view bytes,
                                                const DecodeLimits& limits) {
  CONVERGE_RETURN_IF_ERROR(internal::CheckInputSize(bytes, limits, "version vector"));
  BinaryReader r(bytes, "version vector");
  VersionVector vv;
  internal::DecodeVersionVector(r, &vv);
  CONVERGE_RETURN_IF_ERROR(r.Finish());
  return vv;
}

// ---- DottedVersionVector ----------------------------------------------------------------

namespace {
// True iff history(a) ⊆ history(b), where history(x) = x.past ∪ {x.dot}.
bool DvvHistoryIncluded(const DottedVersionVector& a, const DottedVersionVector& b) {
  if (!b.HistoryContains(a.dot)) return false;
  for (const auto& e : a.past.entries()) {
    const uint64_t covered = b.past.Get(e.replica);
    if (e.counter <= covered) continue;
    // b's history for this replica is 1..covered plus possibly b.dot; it covers 1..e.counter
    // only if b.dot is exactly the one missing event.
    if (!(e.counter == covered + 1 && b.dot == Dot{e.replica, e.counter})) return false;
  }
  return true;
}
}  // namespace

Ordering Compare(const DottedVersionVector& a, const DottedVersionVector& b) {
  return FromSubsets(DvvHistoryIncluded(a, b), DvvHistoryIncluded(b, a));
}

namespace {
internal::json::value DvvToJsonValue(const DottedVersionVector& dvv) {
  internal::json::object o;
  o["dot"] = internal::DotToJson(dvv.dot);
  o["past"] = internal::VersionVectorToJson(dvv.past);
  return o;
}
}  // namespace

std::string DottedVersionVector::ToJson() const {
  return internal::SerializeJson(DvvToJsonValue(*this));
}

Result<DottedVersionVector> DottedVersionVector::FromJson(std::string_view json,
                                                          const DecodeLimits& limits) {
  constexpr std::string_view kWhat = "dotted version vector";
  return internal::DecodeJson<DottedVersionVector>(
      json, limits, kWhat, [&](const internal::json::value& v, DottedVersionVector* out) {
        CONVERGE_ASSIGN_OR_RETURN(const internal::json::object* o,
                                  internal::ObjectFromJson(v, kWhat));
        CONVERGE_ASSIGN_OR_RETURN(const internal::json::value* dot,
                                  internal::Member(*o, "dot", kWhat));
        CONVERGE_ASSIGN_OR_RETURN(const internal::json::value* past,
                                  internal::Member(*o, "past", kWhat));
        CONVERGE_RETURN_IF_ERROR(internal::DotFromJson(*dot, &out->dot, kWhat));
        return internal::VersionVectorFromJson(*past, &out->past, kWhat);
      });
}

void DottedVersionVector::AppendBinary(std::string* out) const {
  BinaryWriter w(out);
  internal::EncodeDot(dot, w);
  internal::EncodeVersionVector(past, w);
}

Result<DottedVersionVector> DottedVersionVector::FromBinary(std::string_view bytes,
                                                            const DecodeLimits& limits) {
  CONVERGE_RETURN_IF_ERROR(internal::CheckInputSize(bytes, limits, "dotted version vector"));
  BinaryReader r(bytes, "dotted version vector");
  DottedVersionVector dvv;
  if (internal::DecodeDot(r, &dvv.dot)) internal::DecodeVersionVector(r, &dvv.past);
  CONVERGE_RETURN_IF_ERROR(r.Finish());
  return dvv;
}

// ---- CausalContext ----------------------------------------------------------------------

bool CausalContext::Contains(Dot dot) const {
  if (dot.counter == 0) return false;
  if (dot.counter <= compact_.Get(dot.replica)) return true;
  return !cloud_.empty() && std::binary_search(cloud_.begin(), cloud_.end(), dot);
}

void CausalContext::Add(Dot dot) {
  if (dot.counter == 0) return;
  auto& entries = compact_.entries_;
  auto it =
      std::lower_bound(entries.begin(), entries.end(), dot.replica,
                       [](const VersionVector::Entry& e, ReplicaId r) { return e.replica < r; });
  const bool found = it != entries.end() && it->replica == dot.replica;
  const uint64_t covered = found ? it->counter : 0;
  if (dot.counter <= covered) return;
  if (dot.counter == covered + 1) {
    uint64_t top = dot.counter;
    if (!cloud_.empty()) {
      // Absorb the run of cloud dots that now continues the gap-free prefix.
      auto c = std::lower_bound(cloud_.begin(), cloud_.end(), Dot{dot.replica, top + 1});
      auto end = c;
      while (end != cloud_.end() && end->replica == dot.replica && end->counter == top + 1) {
        ++top;
        ++end;
      }
      cloud_.erase(c, end);
    }
    if (found) {
      it->counter = top;
    } else {
      entries.insert(it, VersionVector::Entry{dot.replica, top});
    }
    return;
  }
  auto c = std::lower_bound(cloud_.begin(), cloud_.end(), dot);
  if (c == cloud_.end() || *c != dot) cloud_.insert(c, dot);
}

void CausalContext::Add(const VersionVector& vv) {
  compact_.Merge(vv);
  AbsorbCloud();
}

void CausalContext::AbsorbCloud() {
  if (cloud_.empty()) return;
  size_t kept = 0;
  for (size_t i = 0; i < cloud_.size(); ++i) {
    const Dot d = cloud_[i];
    const uint64_t covered = compact_.Get(d.replica);
    if (d.counter <= covered) continue;
    if (d.counter == covered + 1) {
      compact_.Observe(d.replica, d.counter);
      continue;
    }
    cloud_[kept++] = d;
  }
  cloud_.resize(kept);
}

void CausalContext::Merge(const CausalContext& other) {
  compact_.Merge(other.compact_);
  if (other.cloud_.size() <= 8) {
    // A delta's context: a few dots, usually continuing our vector. Adding them one by one
    // absorbs them without building a merged cloud.
    AbsorbCloud();
    for (const Dot& d : other.cloud_) Add(d);
    return;
  }
  if (!other.cloud_.empty()) {
    if (cloud_.empty()) {
      cloud_ = other.cloud_;
    } else {
      std::vector<Dot> merged;
      merged.reserve(cloud_.size() + other.cloud_.size());
      std::set_union(cloud_.begin(), cloud_.end(), other.cloud_.begin(), other.cloud_.end(),
                     std::back_inserter(merged));
      cloud_ = std::move(merged);
    }
  }
  AbsorbCloud();
}

Result<Dot> CausalContext::NextDot(ReplicaId replica) const {
  if (!replica.valid()) return InvalidArgumentError("replica id 0 is reserved");
  uint64_t top = compact_.Get(replica);
  if (!cloud_.empty()) {
    auto it =
        std::lower_bound(cloud_.begin(), cloud_.end(), Dot{ReplicaId(replica.value() + 1), 0});
    if (it != cloud_.begin() && std::prev(it)->replica == replica) {
      top = std::max(top, std::prev(it)->counter);
    }
  }
  if (top == std::numeric_limits<uint64_t>::max()) {
    return OutOfRangeError("dot counter of replica " + replica.ToString() + " is exhausted");
  }
  return Dot{replica, top + 1};
}

VersionVector CausalContext::Ceiling() const {
  VersionVector vv = compact_;
  for (const Dot& d : cloud_) vv.Observe(d);
  return vv;
}

namespace {
// True iff every dot of a is in b (both normalized: a cloud never continues its vector).
bool ContextIncluded(const CausalContext& a, const CausalContext& b) {
  for (const auto& e : a.compact().entries()) {
    // b's dot (r, b.compact[r]+1) is never in b's cloud, so b covers a's prefix only if its
    // own prefix is at least as long.
    if (e.counter > b.compact().Get(e.replica)) return false;
  }
  for (const Dot& d : a.cloud()) {
    if (!b.Contains(d)) return false;
  }
  return true;
}
}  // namespace

Ordering Compare(const CausalContext& a, const CausalContext& b) {
  return FromSubsets(ContextIncluded(a, b), ContextIncluded(b, a));
}

std::string CausalContext::ToJson() const {
  return internal::SerializeJson(internal::CausalContextToJson(*this));
}

Result<CausalContext> CausalContext::FromJson(std::string_view json, const DecodeLimits& limits) {
  return internal::DecodeJson<CausalContext>(
      json, limits, "causal context", [](const internal::json::value& v, CausalContext* out) {
        return internal::CausalContextFromJson(v, out, "causal context");
      });
}

void CausalContext::AppendBinary(std::string* out) const {
  BinaryWriter w(out);
  internal::EncodeCausalContext(*this, w);
}

std::string CausalContext::ToBinary() const {
  std::string out;
  AppendBinary(&out);
  return out;
}

Result<CausalContext> CausalContext::FromBinary(std::string_view bytes,
                                                const DecodeLimits& limits) {
  CONVERGE_RETURN_IF_ERROR(internal::CheckInputSize(bytes, limits, "causal context"));
  BinaryReader r(bytes, "causal context");
  CausalContext cc;
  internal::DecodeCausalContext(r, &cc);
  CONVERGE_RETURN_IF_ERROR(r.Finish());
  return cc;
}

}  // namespace converge::conflict
