#include "converge/conflict/sets.h"

#include <algorithm>

#include "conflict/binary_codec.h"
#include "conflict/dot_kernel.h"
#include "conflict/json_codec.h"
#include "converge/conflict/crdt_kind.h"

namespace converge::conflict {

namespace json = internal::json;
using internal::BinaryReader;
using internal::BinaryWriter;

// ---- GSet -------------------------------------------------------------------------------

GSet GSet::Add(std::string element) {
  GSet delta;
  elements_.insert(element);
  delta.elements_.insert(std::move(element));
  return delta;
}

void GSet::Merge(const GSet& other) {
  if (&other == this) return;
  auto hint = elements_.begin();
  for (const std::string& e : other.elements_) {
    // Both sides are sorted: a hinted insert walks forward instead of searching from the root.
    hint = elements_.insert(hint, e);
    ++hint;
  }
}

std::string GSet::ToJson() const {
  json::object o;
  o["type"] = CrdtKindName(CrdtKind::kGSet);
  json::array a;
  a.reserve(elements_.size());
  for (const std::string& e : elements_) a.push_back(internal::BytesToJson(e));
  o["elements"] = std::move(a);
  return internal::SerializeJson(o);
}

Result<GSet> GSet::FromJson(std::string_view text, const DecodeLimits& limits) {
  constexpr std::string_view kWhat = "g-set";
  return internal::DecodeJson<GSet>(
      text, limits, kWhat, [&](const json::value& v, GSet* out) -> Status {
        CONVERGE_ASSIGN_OR_RETURN(const json::object* o, internal::ObjectFromJson(v, kWhat));
        CONVERGE_RETURN_IF_ERROR(internal::CheckType(*o, kWhat, kWhat));
        CONVERGE_ASSIGN_OR_RETURN(const json::value* ev, internal::Member(*o, "elements", kWhat));
        CONVERGE_ASSIGN_OR_RETURN(const json::array* a, internal::ArrayFromJson(*ev, kWhat));
        for (const json::value& e : *a) {
          std::string element;
          CONVERGE_RETURN_IF_ERROR(internal::BytesFromJson(e, &element, kWhat));
          if (!out->elements_.insert(std::move(element)).second) {
            return internal::JsonError(kWhat, "duplicate element");
          }
        }
        return Status::Ok();
      });
}

void GSet::AppendBinary(std::string* out) const {
  BinaryWriter w(out);
  w.Header(static_cast<uint8_t>(CrdtKind::kGSet));
  w.U64(elements_.size());
  for (const std::string& e : elements_) w.Bytes(e);
}

std::string GSet::ToBinary() const {
  std::string out;
  AppendBinary(&out);
  return out;
}

Result<GSet> GSet::FromBinary(std::string_view bytes, const DecodeLimits& limits) {
  CONVERGE_RETURN_IF_ERROR(internal::CheckInputSize(bytes, limits, "g-set"));
  BinaryReader r(bytes, "g-set");
  GSet set;
  uint64_t n = 0;
  if (r.Header(static_cast<uint8_t>(CrdtKind::kGSet)) && r.Count(&n, 1)) {
    const std::string* prev = nullptr;
    for (uint64_t i = 0; i < n; ++i) {
      std::string_view e;
      if (!r.BytesView(&e)) break;
      if (prev != nullptr && !(*prev < e)) {
        r.Fail("elements not strictly increasing");
        break;
      }
      prev = &*set.elements_.emplace_hint(set.elements_.end(), e);
    }
  }
  CONVERGE_RETURN_IF_ERROR(r.Finish());
  return set;
}

// ---- OrSet ------------------------------------------------------------------------------

OrSet::OrSet(const OrSet& other) : elements_(other.elements_), context_(other.context_) {
  RebuildIndex();
}

OrSet& OrSet::operator=(const OrSet& other) {
  if (&other != this) {
    elements_ = other.elements_;
    context_ = other.context_;
    RebuildIndex();
  }
  return *this;
}

void OrSet::RebuildIndex() {
  index_.clear();
  for (const auto& [key, dots] : elements_) IndexDots(&key, dots);
}

void OrSet::IndexDots(const std::string* key, const DotList& dots) {
  for (const Dot& d : dots) index_[d] = key;
}

void OrSet::UnindexDots(const DotList& dots) {
  for (const Dot& d : dots) index_.erase(d);
}

std::vector<std::string> OrSet::Elements() const {
  std::vector<std::string> out;
  out.reserve(elements_.size());
  for (const auto& [key, dots] : elements_) out.push_back(key);
  std::sort(out.begin(), out.end());
  return out;
}

void OrSet::ForEach(const std::function<void(std::string_view)>& fn) const {
  for (const auto& [key, dots] : elements_) fn(key);
}

std::vector<Dot> OrSet::DotsOf(std::string_view element) const {
  auto it = elements_.find(element);
  return it == elements_.end() ? std::vector<Dot>() : it->second;
}

Result<OrSet> OrSet::Add(ReplicaId replica, std::string element) {
  if (!replica.valid()) return InvalidArgumentError("or-set: replica id 0 is reserved");
  CONVERGE_ASSIGN_OR_RETURN(const Dot dot, context_.NextDot(replica));
  OrSet delta;
  auto it = elements_.find(element);
  if (it != elements_.end()) {
    // The delta's context carries the dots this add supersedes, so a receiver drops them.
    for (const Dot& old : it->second) delta.context_.Add(old);
    UnindexDots(it->second);
    it->second.assign(1, dot);
  } else {
    it = elements_.emplace(element, DotList{dot}).first;
  }
  index_[dot] = &it->first;
  context_.Add(dot);
  delta.context_.Add(dot);
  auto dit = delta.elements_.emplace(std::move(element), DotList{dot}).first;
  delta.index_[dot] = &dit->first;
  return delta;
}

OrSet OrSet::Remove(std::string_view element) {
  OrSet delta;
  auto it = elements_.find(element);
  if (it == elements_.end()) return delta;
  for (const Dot& d : it->second) delta.context_.Add(d);
  UnindexDots(it->second);
  elements_.erase(it);
  return delta;
}

void OrSet::Merge(const OrSet& other) {
  if (&other == this) return;
  // 1. Elements the other side has: join their dot sets (a dot survives if both have it, or
  //    if the side lacking it never saw it).
  for (const auto& [key, theirs] : other.elements_) {
    auto it = elements_.find(key);
    if (it == elements_.end()) {
      DotList fresh;
      for (const Dot& d : theirs) {
        if (!context_.Contains(d)) fresh.push_back(d);
      }
      if (fresh.empty()) continue;  // we saw and removed every one of them
      auto nit = elements_.emplace(key, std::move(fresh)).first;
      IndexDots(&nit->first, nit->second);
      continue;
    }
    DotList& mine = it->second;
    if (mine == theirs) continue;
    DotList joined;
    joined.reserve(mine.size() + theirs.size());
    size_t i = 0, j = 0;
    while (i < mine.size() || j < theirs.size()) {
      if (j == theirs.size() || (i < mine.size() && mine[i] < theirs[j])) {
        if (other.context_.Contains(mine[i])) {
          index_.erase(mine[i]);
        } else {
          joined.push_back(mine[i]);
        }
        ++i;
      } else if (i == mine.size() || theirs[j] < mine[i]) {
        if (!context_.Contains(theirs[j])) {
          joined.push_back(theirs[j]);
          index_[theirs[j]] = &it->first;
        }
        ++j;
      } else {
        joined.push_back(mine[i]);
        ++i;
        ++j;
      }
    }
    if (joined.empty()) {
      elements_.erase(it);
    } else {
      mine = std::move(joined);
    }
  }

  // 2. Removals: our live dots that the other side has seen but no longer holds. Only dots of
  //    elements absent on the other side remain to check (step 1 handled the rest). Find them
  //    through the dot index, probing either the other context's dots or our live dots,
  //    whichever is fewer.
  auto remove_dot = [&](Dot d) {
    auto idx = index_.find(d);
    if (idx == index_.end()) return;
    const std::string* key = idx->second;
    if (other.elements_.count(*key) != 0) return;
    auto it = elements_.find(*key);
    DotList& dots = it->second;
    dots.erase(std::lower_bound(dots.begin(), dots.end(), d));
    index_.erase(idx);
    if (dots.empty()) elements_.erase(it);
  };
  if (!index_.empty()) {
    for (const Dot& d : other.context_.cloud()) remove_dot(d);
    uint64_t probes = 0;
    for (const auto& e : other.context_.compact().entries()) {
      probes += std::min(e.counter, internal::MaxCounterOf(context_, e.replica));
      if (probes > index_.size()) break;
    }
    if (probes <= index_.size()) {
      for (const auto& e : other.context_.compact().entries()) {
        const uint64_t top = std::min(e.counter, internal::MaxCounterOf(context_, e.replica));
        for (uint64_t k = 1; k <= top && !index_.empty(); ++k) remove_dot(Dot{e.replica, k});
      }
    } else {
      std::vector<Dot> covered;
      for (const auto& [d, key] : index_) {
        if (other.context_.compact().Contains(d)) covered.push_back(d);
      }
      for (const Dot& d : covered) remove_dot(d);
    }
  }
  context_.Merge(other.context_);
}

bool OrSet::operator==(const OrSet& other) const {
  return context_ == other.context_ && elements_ == other.elements_;
}

namespace {
template <typename Map>
std::vector<typename Map::const_pointer> SortedEntries(const Map& m) {
  std::vector<typename Map::const_pointer> out;
  out.reserve(m.size());
  for (const auto& kv : m) out.push_back(&kv);
  std::sort(out.begin(), out.end(), [](auto a, auto b) { return a->first < b->first; });
  return out;
}

json::array DotsToJson(const std::vector<Dot>& dots) {
  json::array a;
  a.reserve(dots.size());
  for (const Dot& d : dots) a.push_back(internal::DotToJson(d));
  return a;
}

Status DotsFromJson(const json::value& v, std::vector<Dot>* out, std::string_view what) {
  CONVERGE_ASSIGN_OR_RETURN(const json::array* a, internal::ArrayFromJson(v, what));
  for (const json::value& dv : *a) {
    Dot d;
    CONVERGE_RETURN_IF_ERROR(internal::DotFromJson(dv, &d, what));
    out->push_back(d);
  }
  std::sort(out->begin(), out->end());
  if (std::adjacent_find(out->begin(), out->end()) != out->end()) {
    return internal::JsonError(what, "duplicate dot");
  }
  return Status::Ok();
}

void EncodeDots(const std::vector<Dot>& dots, BinaryWriter& w) {
  w.U64(dots.size());
  for (const Dot& d : dots) internal::EncodeDot(d, w);
}

bool DecodeDots(BinaryReader& r, std::vector<Dot>* dots) {
  uint64_t n;
  if (!r.Count(&n, 2)) return false;
  dots->reserve(n);
  for (uint64_t i = 0; i < n; ++i) {
    Dot d;
    if (!internal::DecodeDot(r, &d)) return false;
    if (!dots->empty() && !(dots->back() < d)) return r.Fail("dots not strictly increasing");
    dots->push_back(d);
  }
  return true;
}
}  // namespace

Status OrSet::InsertDecoded(std::string element, DotList dots) {
  if (dots.empty()) return InvalidArgumentError("or-set: element without dots");
  for (const Dot& d : dots) {
    if (!context_.Contains(d)) {
      return InvalidArgumentError("or-set: dot " + d.ToString() + " is not in the context");
    }
    if (index_.count(d) != 0) {
      return InvalidArgumentError("or-set: dot " + d.ToString() + " tags two elements");
    }
  }
  auto [it, inserted] = elements_.emplace(std::move(element), std::move(dots));
  if (!inserted) return InvalidArgumentError("or-set: duplicate element");
  IndexDots(&it->first, it->second);
  return Status::Ok();
}

std::string OrSet::ToJson() const {
  json::object o;
  o["type"] = CrdtKindName(CrdtKind::kOrSet);
  json::array a;
  a.reserve(elements_.size());
  for (const auto* kv : SortedEntries(elements_)) {
    json::object e;
    e["value"] = internal::BytesToJson(kv->first);
    e["dots"] = DotsToJson(kv->second);
    a.push_back(std::move(e));
  }
  o["elements"] = std::move(a);
  o["context"] = internal::CausalContextToJson(context_);
  return internal::SerializeJson(o);
}

Result<OrSet> OrSet::FromJson(std::string_view text, const DecodeLimits& limits) {
  constexpr std::string_view kWhat = "or-set";
  return internal::DecodeJson<OrSet>(
      text, limits, kWhat, [&](const json::value& v, OrSet* out) -> Status {
        CONVERGE_ASSIGN_OR_RETURN(const json::object* o, internal::ObjectFromJson(v, kWhat));
        CONVERGE_RETURN_IF_ERROR(internal::CheckType(*o, kWhat, kWhat));
        CONVERGE_ASSIGN_OR_RETURN(const json::value* cv, internal::Member(*o, "context", kWhat));
        CONVERGE_RETURN_IF_ERROR(internal::CausalContextFromJson(*cv, &out->context_, kWhat));
        CONVERGE_ASSIGN_OR_RETURN(const json::value* ev, internal::Member(*o, "elements", kWhat));
        CONVERGE_ASSIGN_OR_RETURN(const json::array* a, internal::ArrayFromJson(*ev, kWhat));
        for (const json::value& e : *a) {
          CONVERGE_ASSIGN_OR_RETURN(const json::object* eo, internal::ObjectFromJson(e, kWhat));
          CONVERGE_ASSIGN_OR_RETURN(const json::value* val, internal::Member(*eo, "value", kWhat));
          CONVERGE_ASSIGN_OR_RETURN(const json::value* dv, internal::Member(*eo, "dots", kWhat));
          std::string element;
          DotList dots;
          CONVERGE_RETURN_IF_ERROR(internal::BytesFromJson(*val, &element, kWhat));
          CONVERGE_RETURN_IF_ERROR(DotsFromJson(*dv, &dots, kWhat));
          CONVERGE_RETURN_IF_ERROR(out->InsertDecoded(std::move(element), std::move(dots)));
        }
        return Status::Ok();
      });
}

void OrSet::AppendBinary(std::string* out) const {
  BinaryWriter w(out);
  w.Header(static_cast<uint8_t>(CrdtKind::kOrSet));
  internal::EncodeCausalContext(context_, w);
  w.U64(elements_.size());
  for (const auto* kv : SortedEntries(elements_)) {
    w.Bytes(kv->first);
    EncodeDots(kv->second, w);
  }
}

std::string OrSet::ToBinary() const {
  std::string out;
  AppendBinary(&out);
  return out;
}

Result<OrSet> OrSet::FromBinary(std::string_view bytes, const DecodeLimits& limits) {
  CONVERGE_RETURN_IF_ERROR(internal::CheckInputSize(bytes, limits, "or-set"));
  BinaryReader r(bytes, "or-set");
  OrSet set;
  uint64_t n = 0;
  Status insert_status;
  if (r.Header(static_cast<uint8_t>(CrdtKind::kOrSet)) &&
      internal::DecodeCausalContext(r, &set.context_) && r.Count(&n, 2)) {
    std::string prev;
    for (uint64_t i = 0; i < n; ++i) {
      std::string element;
      DotList dots;
      if (!r.Bytes(&element) || !DecodeDots(r, &dots)) break;
      if (i > 0 && !(prev < element)) {
        r.Fail("elements not strictly increasing");
        break;
      }
      prev = element;
      insert_status = set.InsertDecoded(std::move(element), std::move(dots));
      if (!insert_status.ok()) break;
    }
  }
  CONVERGE_RETURN_IF_ERROR(r.Finish());
  CONVERGE_RETURN_IF_ERROR(insert_status);
  return set;
}

// ---- EwFlag -----------------------------------------------------------------------------

Result<EwFlag> EwFlag::Enable(ReplicaId replica) {
  if (!replica.valid()) return InvalidArgumentError("flag: replica id 0 is reserved");
  CONVERGE_ASSIGN_OR_RETURN(const Dot dot, context_.NextDot(replica));
  EwFlag delta;
  for (const Dot& d : dots_) delta.context_.Add(d);
  delta.context_.Add(dot);
  delta.dots_.push_back(dot);
  dots_.assign(1, dot);
  context_.Add(dot);
  return delta;
}

EwFlag EwFlag::Disable() {
  EwFlag delta;
  for (const Dot& d : dots_) delta.context_.Add(d);
  dots_.clear();
  return delta;
}

void EwFlag::Merge(const EwFlag& other) {
  if (&other == this) return;
  dots_ = internal::JoinDotSets(dots_, context_, other.dots_, other.context_);
  context_.Merge(other.context_);
}

std::string EwFlag::ToJson() const {
  json::object o;
  o["type"] = CrdtKindName(CrdtKind::kFlag);
  o["value"] = value();
  o["dots"] = DotsToJson(dots_);
  o["context"] = internal::CausalContextToJson(context_);
  return internal::SerializeJson(o);
}

Result<EwFlag> EwFlag::FromJson(std::string_view text, const DecodeLimits& limits) {
  constexpr std::string_view kWhat = "flag";
  return internal::DecodeJson<EwFlag>(
      text, limits, kWhat, [&](const json::value& v, EwFlag* out) -> Status {
        CONVERGE_ASSIGN_OR_RETURN(const json::object* o, internal::ObjectFromJson(v, kWhat));
        CONVERGE_RETURN_IF_ERROR(internal::CheckType(*o, kWhat, kWhat));
        CONVERGE_ASSIGN_OR_RETURN(const json::value* dv, internal::Member(*o, "dots", kWhat));
        CONVERGE_ASSIGN_OR_RETURN(const json::value* cv, internal::Member(*o, "context", kWhat));
        CONVERGE_RETURN_IF_ERROR(DotsFromJson(*dv, &out->dots_, kWhat));
        CONVERGE_RETURN_IF_ERROR(internal::CausalContextFromJson(*cv, &out->context_, kWhat));
        for (const Dot& d : out->dots_) {
          if (!out->context_.Contains(d)) return internal::JsonError(kWhat, "dot not in context");
        }
        return Status::Ok();
      });
}

void EwFlag::AppendBinary(std::string* out) const {
  BinaryWriter w(out);
  w.Header(static_cast<uint8_t>(CrdtKind::kFlag));
  internal::EncodeCausalContext(context_, w);
  EncodeDots(dots_, w);
}

std::string EwFlag::ToBinary() const {
  std::string out;
  AppendBinary(&out);
  return out;
}

Result<EwFlag> EwFlag::FromBinary(std::string_view bytes, const DecodeLimits& limits) {
  CONVERGE_RETURN_IF_ERROR(internal::CheckInputSize(bytes, limits, "flag"));
  BinaryReader r(bytes, "flag");
  EwFlag flag;
  if (r.Header(static_cast<uint8_t>(CrdtKind::kFlag)) &&
      internal::DecodeCausalContext(r, &flag.context_) && DecodeDots(r, &flag.dots_)) {
    for (const Dot& d : flag.dots_) {
      if (!flag.context_.Contains(d)) {
        r.Fail("dot not in context");
        break;
      }
    }
  }
  CONVERGE_RETURN_IF_ERROR(r.Finish());
  return flag;
}

}  // namespace converge::conflict
