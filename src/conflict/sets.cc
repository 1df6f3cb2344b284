#include "converge/conflict/sets.h"

#include <algorithm>
#include <type_traits>

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

void OrSet::BuildIndex() {
  size_t live = 0;
  for (const auto& slot : elements_.slots()) live += slot.value.size();
  // Room for as many stale entries again before the next rebuild.
  index_.Reset(2 * live);
  for (size_t s = 0; s < elements_.size(); ++s) {
    for (const Dot& d : elements_.slot(s).value) index_.Insert(d, static_cast<uint32_t>(s));
  }
  index_valid_ = true;
  stale_ = 0;
}

void OrSet::AddStale(size_t n) {
  if (!index_valid_) return;
  stale_ += n;
  // Rebuild once stale entries outnumber live ones: a sequential pass over the elements,
  // amortized to about one index write per stale entry.
  if (stale_ > 1024 && 2 * stale_ > index_.size()) BuildIndex();
}

uint32_t OrSet::SlotOfDot(Dot d) const {
  return index_.Find(
      d, [&](uint32_t s) { return s < elements_.size() && elements_.slot(s).value.Contains(d); });
}

void OrSet::EraseSlot(size_t s) {
  const size_t moved = elements_.EraseAt(s);
  if (moved != ElementMap::npos && index_valid_) {
    for (const Dot& d : elements_.slot(s).value) {
      index_.Retarget(d, static_cast<uint32_t>(moved), static_cast<uint32_t>(s));
    }
  }
}

std::vector<std::string> OrSet::Elements() const {
  std::vector<std::string> out;
  out.reserve(elements_.size());
  for (const auto& slot : elements_.slots()) out.push_back(slot.key);
  std::sort(out.begin(), out.end());
  return out;
}

void OrSet::ForEach(const std::function<void(std::string_view)>& fn) const {
  for (const auto& slot : elements_.slots()) fn(slot.key);
}

std::vector<Dot> OrSet::DotsOf(std::string_view element) const {
  const size_t s = elements_.Find(element);
  return s == ElementMap::npos ? std::vector<Dot>() : elements_.slot(s).value.ToVector();
}

Result<OrSet> OrSet::Add(ReplicaId replica, std::string element) {
  if (!replica.valid()) return InvalidArgumentError("or-set: replica id 0 is reserved");
  CONVERGE_ASSIGN_OR_RETURN(const Dot dot, context_.NextDot(replica));
  OrSet delta;
  const uint64_t hash = internal::HashString(element);
  const auto [s, inserted] = elements_.FindOrInsert(element, hash);
  internal::DotList& dots = elements_.slot(s).value;
  // The delta's context carries the dots this add supersedes, so a receiver drops them.
  for (const Dot& old : dots) delta.context_.Add(old);
  AddStale(dots.size());
  dots.AssignOne(dot);
  if (index_valid_) index_.Insert(dot, static_cast<uint32_t>(s));
  context_.Add(dot);
  delta.context_.Add(dot);
  delta.elements_.InsertNew(hash, std::move(element), internal::DotList(dot));
  return delta;
}

OrSet OrSet::Remove(std::string_view element) {
  OrSet delta;
  const size_t s = elements_.Find(element);
  if (s == ElementMap::npos) return delta;
  for (const Dot& d : elements_.slot(s).value) delta.context_.Add(d);
  AddStale(elements_.slot(s).value.size());
  EraseSlot(s);
  return delta;
}

void OrSet::Merge(const OrSet& other) {
  if (&other == this) return;
  // Dots step 1 drops from elements the other side carries; step 2 need not look them up.
  Dot handled[8];
  size_t handled_count = 0;
  size_t stale = 0;

  // 1. Elements the other side has: join their dot sets (a dot survives if both have it, or
  //    if the side lacking it never saw it).
  for (const auto& theirs : other.elements_.slots()) {
    const size_t s = elements_.Find(theirs.key, theirs.hash);
    if (s == ElementMap::npos) {
      internal::DotList fresh;
      for (const Dot& d : theirs.value) {
        if (!context_.Contains(d)) fresh.PushBack(d);
      }
      if (fresh.empty()) continue;  // we saw and removed every one of them
      const size_t n = elements_.InsertNew(theirs.hash, theirs.key, std::move(fresh));
      if (index_valid_) {
        for (const Dot& d : elements_.slot(n).value) index_.Insert(d, static_cast<uint32_t>(n));
      }
      continue;
    }
    internal::DotList& mine = elements_.slot(s).value;
    if (mine == theirs.value) continue;
    for (size_t i = 0; i < mine.size();) {
      const Dot a = mine[i];
      if (!theirs.value.Contains(a) && other.context_.Contains(a)) {
        mine.RemoveAt(i);
        ++stale;
        if (handled_count < 8) handled[handled_count++] = a;
      } else {
        ++i;
      }
    }
    for (const Dot& b : theirs.value) {
      if (!context_.Contains(b) && !mine.Contains(b)) {
        mine.Insert(b);
        if (index_valid_) index_.Insert(b, static_cast<uint32_t>(s));
      }
    }
    if (mine.empty()) EraseSlot(s);
  }

  // 2. Removals: our live dots that the other side has seen but no longer holds. Only dots of
  //    elements absent on the other side remain to check (step 1 handled the rest). Find them
  //    through the dot index, probing either the other context's dots or our live dots,
  //    whichever is fewer.
  if (!elements_.empty()) {
    if (!index_valid_) BuildIndex();
    auto remove_dot = [&](Dot d) {
      const uint32_t s = SlotOfDot(d);
      if (s == internal::DotSlotIndex::kNone) return;
      auto& slot = elements_.slot(s);
      if (other.elements_.Find(slot.key, slot.hash) != ElementMap::npos) return;
      slot.value.Remove(d);
      index_.Erase(d, s);
      if (slot.value.empty()) EraseSlot(s);
    };
    // A delta carries few elements; the cloud dots tagging them were handled in step 1.
    const bool small_other = other.elements_.size() <= 4;
    auto skip = [&](Dot d) {
      for (size_t i = 0; i < handled_count; ++i) {
        if (handled[i] == d) return true;
      }
      for (const auto& slot : other.elements_.slots()) {
        if (slot.value.Contains(d)) return true;
      }
      return false;
    };
    for (const Dot& d : other.context_.cloud()) {
      if (small_other && skip(d)) continue;
      remove_dot(d);
    }
    // Probing costs one lookup per covered dot, scanning one visit per live element.
    const uint64_t scan_cost = elements_.size();
    uint64_t probes = 0;
    for (const auto& e : other.context_.compact().entries()) {
      probes += std::min(e.counter, internal::MaxCounterOf(context_, e.replica));
      if (probes > scan_cost) break;
    }
    if (probes <= scan_cost) {
      for (const auto& e : other.context_.compact().entries()) {
        const uint64_t top = std::min(e.counter, internal::MaxCounterOf(context_, e.replica));
        for (uint64_t k = 1; k <= top && !elements_.empty(); ++k) remove_dot(Dot{e.replica, k});
      }
    } else {
      std::vector<Dot> covered;
      for (const auto& slot : elements_.slots()) {
        for (const Dot& d : slot.value) {
          if (other.context_.compact().Contains(d)) covered.push_back(d);
        }
      }
      for (const Dot& d : covered) remove_dot(d);
    }
  }
  AddStale(stale);
  context_.Merge(other.context_);
}

namespace {
template <typename Map>
std::vector<const typename Map::Slot*> SortedSlots(const Map& m) {
  std::vector<const typename Map::Slot*> out;
  out.reserve(m.size());
  for (const auto& slot : m.slots()) out.push_back(&slot);
  std::sort(out.begin(), out.end(), [](auto a, auto b) { return a->key < b->key; });
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

// Reads a strictly increasing dot list into `dots` (a std::vector or a DotList).
template <typename List>
bool DecodeDots(BinaryReader& r, List* dots) {
  uint64_t n;
  if (!r.Count(&n, 2)) return false;
  Dot prev{};
  for (uint64_t i = 0; i < n; ++i) {
    Dot d;
    if (!internal::DecodeDot(r, &d)) return false;
    if (i > 0 && !(prev < d)) return r.Fail("dots not strictly increasing");
    if constexpr (std::is_same_v<List, std::vector<Dot>>) {
      dots->push_back(d);
    } else {
      dots->PushBack(d);
    }
    prev = d;
  }
  return true;
}
}  // namespace

Status OrSet::InsertDecoded(std::string element, internal::DotList dots,
                            std::vector<Dot>* all_dots) {
  if (dots.empty()) return InvalidArgumentError("or-set: element without dots");
  const uint64_t hash = internal::HashString(element);
  if (elements_.Find(element, hash) != ElementMap::npos) {
    return InvalidArgumentError("or-set: duplicate element");
  }
  for (const Dot& d : dots) {
    if (!context_.Contains(d)) {
      return InvalidArgumentError("or-set: dot " + d.ToString() + " is not in the context");
    }
    if (all_dots != nullptr) all_dots->push_back(d);
  }
  elements_.InsertNew(hash, std::move(element), std::move(dots));
  return Status::Ok();
}

namespace {
Status CheckDotsDistinct(std::vector<Dot>* all_dots) {
  std::sort(all_dots->begin(), all_dots->end());
  auto dup = std::adjacent_find(all_dots->begin(), all_dots->end());
  if (dup != all_dots->end()) {
    return InvalidArgumentError("or-set: dot " + dup->ToString() + " tags two elements");
  }
  return Status::Ok();
}
}  // namespace

std::string OrSet::ToJson() const {
  json::object o;
  o["type"] = CrdtKindName(CrdtKind::kOrSet);
  json::array a;
  a.reserve(elements_.size());
  for (const auto* slot : SortedSlots(elements_)) {
    json::object e;
    e["value"] = internal::BytesToJson(slot->key);
    e["dots"] = DotsToJson(slot->value.ToVector());
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
        std::vector<Dot> all_dots;
        for (const json::value& e : *a) {
          CONVERGE_ASSIGN_OR_RETURN(const json::object* eo, internal::ObjectFromJson(e, kWhat));
          CONVERGE_ASSIGN_OR_RETURN(const json::value* val, internal::Member(*eo, "value", kWhat));
          CONVERGE_ASSIGN_OR_RETURN(const json::value* dv, internal::Member(*eo, "dots", kWhat));
          std::string element;
          std::vector<Dot> dots;
          CONVERGE_RETURN_IF_ERROR(internal::BytesFromJson(*val, &element, kWhat));
          CONVERGE_RETURN_IF_ERROR(DotsFromJson(*dv, &dots, kWhat));
          internal::DotList list;
          for (const Dot& d : dots) list.PushBack(d);  // sorted and distinct
          CONVERGE_RETURN_IF_ERROR(
              out->InsertDecoded(std::move(element), std::move(list), &all_dots));
        }
        return CheckDotsDistinct(&all_dots);
      });
}

void OrSet::AppendBinary(std::string* out) const {
  BinaryWriter w(out);
  w.Header(static_cast<uint8_t>(CrdtKind::kOrSet));
  internal::EncodeCausalContext(context_, w);
  w.U64(elements_.size());
  for (const auto* slot : SortedSlots(elements_)) {
    w.Bytes(slot->key);
    w.U64(slot->value.size());
    for (const Dot& d : slot->value) internal::EncodeDot(d, w);
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
  std::vector<Dot> all_dots;
  if (r.Header(static_cast<uint8_t>(CrdtKind::kOrSet)) &&
      internal::DecodeCausalContext(r, &set.context_) && r.Count(&n, 2)) {
    // One element cannot repeat a dot (its list is strictly increasing); several need the
    // cross-element check.
    std::vector<Dot>* collect = n > 1 ? &all_dots : nullptr;
    std::string_view prev;
    for (uint64_t i = 0; i < n; ++i) {
      std::string_view element;
      internal::DotList dots;
      if (!r.BytesView(&element) || !DecodeDots(r, &dots)) break;
      if (i > 0 && !(prev < element)) {
        r.Fail("elements not strictly increasing");
        break;
      }
      prev = element;
      insert_status = set.InsertDecoded(std::string(element), std::move(dots), collect);
      if (!insert_status.ok()) break;
    }
  }
  CONVERGE_RETURN_IF_ERROR(r.Finish());
  CONVERGE_RETURN_IF_ERROR(insert_status);
  CONVERGE_RETURN_IF_ERROR(CheckDotsDistinct(&all_dots));
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
