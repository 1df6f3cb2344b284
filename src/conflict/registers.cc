#include "converge/conflict/registers.h"

#include <algorithm>
#include <tuple>

#include "conflict/binary_codec.h"
#include "conflict/json_codec.h"
#include "converge/conflict/crdt_kind.h"

namespace converge::conflict {

namespace json = internal::json;
using internal::BinaryReader;
using internal::BinaryWriter;

// ---- LwwRegister ------------------------------------------------------------------------

Result<LwwRegister> LwwRegister::Set(ReplicaId replica, HlcTimestamp timestamp, std::string value) {
  if (!replica.valid()) return InvalidArgumentError("lww-register: replica id 0 is reserved");
  const LwwStamp stamp{timestamp, replica};
  if (!(stamp_ < stamp)) {
    return FailedPreconditionError("lww-register: write stamped " + timestamp.ToString() + "@" +
                                   replica.ToString() + " is not after the current value's " +
                                   stamp_.timestamp.ToString() + "@" + stamp_.replica.ToString() +
                                   "; the writer's clock must observe the current stamp first");
  }
  stamp_ = stamp;
  has_value_ = true;
  value_ = std::move(value);
  return *this;
}

Result<LwwRegister> LwwRegister::Set(ReplicaId replica, HybridClock& clock, std::string value) {
  // Observing the current stamp first makes the new timestamp exceed it: a write made after
  // reading the register is causally later and must win.
  CONVERGE_ASSIGN_OR_RETURN(HlcTimestamp ts, clock.Update(stamp_.timestamp));
  return Set(replica, ts, std::move(value));
}

Result<LwwRegister> LwwRegister::Clear(ReplicaId replica, HlcTimestamp timestamp) {
  CONVERGE_RETURN_IF_ERROR(Set(replica, timestamp, std::string()).status());
  has_value_ = false;
  return *this;
}

void LwwRegister::Merge(const LwwRegister& other) {
  if (stamp_ < other.stamp_ ||
      (stamp_ == other.stamp_ &&
       std::tie(has_value_, value_) < std::tie(other.has_value_, other.value_))) {
    stamp_ = other.stamp_;
    has_value_ = other.has_value_;
    value_ = other.value_;
  }
}

std::string LwwRegister::ToJson() const {
  json::object o;
  o["type"] = CrdtKindName(CrdtKind::kLwwRegister);
  if (stamp_.replica.valid()) {
    o["timestamp"] = internal::HlcToJson(stamp_.timestamp);
    o["replica"] = internal::ReplicaToJson(stamp_.replica);
  }
  if (has_value_) o["value"] = internal::BytesToJson(value_);
  return internal::SerializeJson(o);
}

Result<LwwRegister> LwwRegister::FromJson(std::string_view text, const DecodeLimits& limits) {
  constexpr std::string_view kWhat = "lww-register";
  return internal::DecodeJson<LwwRegister>(
      text, limits, kWhat, [&](const json::value& v, LwwRegister* out) -> Status {
        CONVERGE_ASSIGN_OR_RETURN(const json::object* o, internal::ObjectFromJson(v, kWhat));
        CONVERGE_RETURN_IF_ERROR(internal::CheckType(*o, kWhat, kWhat));
        const json::value* ts = o->if_contains("timestamp");
        const json::value* replica = o->if_contains("replica");
        const json::value* value = o->if_contains("value");
        if ((ts == nullptr) != (replica == nullptr)) {
          return internal::JsonError(kWhat, "\"timestamp\" and \"replica\" go together");
        }
        if (ts != nullptr) {
          CONVERGE_RETURN_IF_ERROR(internal::HlcFromJson(*ts, &out->stamp_.timestamp, kWhat));
          CONVERGE_RETURN_IF_ERROR(
              internal::ReplicaFromJson(*replica, &out->stamp_.replica, kWhat));
        }
        if (value != nullptr) {
          if (ts == nullptr) return internal::JsonError(kWhat, "a value needs a stamp");
          out->has_value_ = true;
          CONVERGE_RETURN_IF_ERROR(internal::BytesFromJson(*value, &out->value_, kWhat));
        }
        return Status::Ok();
      });
}

void LwwRegister::AppendBinary(std::string* out) const {
  BinaryWriter w(out);
  w.Header(static_cast<uint8_t>(CrdtKind::kLwwRegister));
  internal::EncodeHlc(stamp_.timestamp, w);
  w.U64(stamp_.replica.value());
  w.Byte(has_value_ ? 1 : 0);
  if (has_value_) w.Bytes(value_);
}

std::string LwwRegister::ToBinary() const {
  std::string out;
  AppendBinary(&out);
  return out;
}

Result<LwwRegister> LwwRegister::FromBinary(std::string_view bytes, const DecodeLimits& limits) {
  CONVERGE_RETURN_IF_ERROR(internal::CheckInputSize(bytes, limits, "lww-register"));
  BinaryReader r(bytes, "lww-register");
  LwwRegister reg;
  uint64_t replica = 0;
  uint8_t flag = 0;
  if (r.Header(static_cast<uint8_t>(CrdtKind::kLwwRegister)) &&
      internal::DecodeHlc(r, &reg.stamp_.timestamp) && r.U64(&replica) && r.Byte(&flag)) {
    reg.stamp_.replica = ReplicaId(replica);
    if (flag > 1) {
      r.Fail("bad value flag");
    } else if (replica == 0 && (flag == 1 || reg.stamp_.timestamp != HlcTimestamp{})) {
      r.Fail("a write needs a replica id");
    } else if (flag == 1) {
      reg.has_value_ = true;
      r.Bytes(&reg.value_);
    }
  }
  CONVERGE_RETURN_IF_ERROR(r.Finish());
  return reg;
}

// ---- MvRegister --------------------------------------------------------------------------

namespace {
// An arbitrary but deterministic order on two versions of the same write.
bool SiblingLess(const MvRegister::Sibling& a, const MvRegister::Sibling& b) {
  if (a.value != b.value) return a.value < b.value;
  return std::lexicographical_compare(
      a.version.past.entries().begin(), a.version.past.entries().end(),
      b.version.past.entries().begin(), b.version.past.entries().end(),
      [](const VersionVector::Entry& x, const VersionVector::Entry& y) {
        return std::tie(x.replica, x.counter) < std::tie(y.replica, y.counter);
      });
}
}  // namespace

Result<MvRegister> MvRegister::Write(ReplicaId replica, std::string value,
                                     const CausalContext& observed) {
  if (!replica.valid()) return InvalidArgumentError("mv-register: replica id 0 is reserved");
  // The new dot must be fresh with respect to both what this replica knows and what the
  // writer claims to have observed, so it is never mistaken for an observed write.
  Dot dot;
  if (observed.IsCompact() && context_.IsCompact()) {
    const uint64_t top = std::max(observed.compact().Get(replica), context_.compact().Get(replica));
    if (top == UINT64_MAX) return OutOfRangeError("mv-register: dot counter exhausted");
    dot = Dot{replica, top + 1};
  } else {
    CausalContext all = context_;
    all.Merge(observed);
    CONVERGE_ASSIGN_OR_RETURN(dot, all.NextDot(replica));
  }
  MvRegister delta;
  delta.siblings_.push_back(
      Sibling{std::move(value), DottedVersionVector{dot, observed.compact()}});
  delta.context_ = observed;
  delta.context_.Add(dot);
  Merge(delta);
  return delta;
}

Result<MvRegister> MvRegister::Write(ReplicaId replica, std::string value) {
  return Write(replica, std::move(value), context_);
}

Result<MvRegister> MvRegister::ResolveWith(ReplicaId replica, const MergeFunction& merge) {
  if (!replica.valid()) return InvalidArgumentError("mv-register: replica id 0 is reserved");
  if (siblings_.size() < 2) return MvRegister();
  std::string acc = siblings_[0].value;
  for (size_t i = 1; i < siblings_.size(); ++i) {
    CONVERGE_ASSIGN_OR_RETURN(acc, merge(acc, siblings_[i].value));
  }
  return Write(replica, std::move(acc), context_);
}

MvRegister MvRegister::Clear(const CausalContext& observed) {
  MvRegister delta;
  delta.context_ = observed;
  Merge(delta);
  return delta;
}

void MvRegister::Merge(const MvRegister& other) {
  if (&other == this) return;
  std::vector<Sibling> merged;
  merged.reserve(siblings_.size() + other.siblings_.size());
  size_t i = 0, j = 0;
  while (i < siblings_.size() || j < other.siblings_.size()) {
    if (j == other.siblings_.size() ||
        (i < siblings_.size() && siblings_[i].version.dot < other.siblings_[j].version.dot)) {
      // Only here: keep unless the other side saw this write and dropped it.
      if (!other.context_.Contains(siblings_[i].version.dot)) {
        merged.push_back(std::move(siblings_[i]));
      }
      ++i;
    } else if (i == siblings_.size() || other.siblings_[j].version.dot < siblings_[i].version.dot) {
      if (!context_.Contains(other.siblings_[j].version.dot)) {
        merged.push_back(other.siblings_[j]);
      }
      ++j;
    } else {
      // The same write on both sides. Correct replicas agree on its content; the comparison
      // only keeps merge deterministic if they do not.
      const Sibling& theirs = other.siblings_[j];
      Sibling& ours = siblings_[i];
      if (SiblingLess(ours, theirs)) {
        merged.push_back(theirs);
      } else {
        merged.push_back(std::move(ours));
      }
      ++i;
      ++j;
    }
  }
  siblings_ = std::move(merged);
  context_.Merge(other.context_);
}

Status MvRegister::Validate() const {
  for (size_t i = 0; i < siblings_.size(); ++i) {
    const Dot dot = siblings_[i].version.dot;
    if (i > 0 && !(siblings_[i - 1].version.dot < dot)) {
      return InvalidArgumentError("mv-register: sibling dots not strictly increasing");
    }
    if (!context_.Contains(dot)) {
      return InvalidArgumentError("mv-register: sibling dot " + dot.ToString() +
                                  " is not in the causal context");
    }
    if (siblings_[i].version.past.Contains(dot)) {
      return InvalidArgumentError("mv-register: sibling dot " + dot.ToString() +
                                  " is in its own past");
    }
  }
  return Status::Ok();
}

std::string MvRegister::ToJson() const {
  json::object o;
  o["type"] = CrdtKindName(CrdtKind::kMvRegister);
  json::array sibs;
  sibs.reserve(siblings_.size());
  for (const Sibling& s : siblings_) {
    json::object so;
    so["value"] = internal::BytesToJson(s.value);
    so["dot"] = internal::DotToJson(s.version.dot);
    so["past"] = internal::VersionVectorToJson(s.version.past);
    sibs.push_back(std::move(so));
  }
  o["siblings"] = std::move(sibs);
  o["context"] = internal::CausalContextToJson(context_);
  return internal::SerializeJson(o);
}

Result<MvRegister> MvRegister::FromJson(std::string_view text, const DecodeLimits& limits) {
  constexpr std::string_view kWhat = "mv-register";
  return internal::DecodeJson<MvRegister>(
      text, limits, kWhat, [&](const json::value& v, MvRegister* out) -> Status {
        CONVERGE_ASSIGN_OR_RETURN(const json::object* o, internal::ObjectFromJson(v, kWhat));
        CONVERGE_RETURN_IF_ERROR(internal::CheckType(*o, kWhat, kWhat));
        CONVERGE_ASSIGN_OR_RETURN(const json::value* sibs, internal::Member(*o, "siblings", kWhat));
        CONVERGE_ASSIGN_OR_RETURN(const json::value* ctx, internal::Member(*o, "context", kWhat));
        CONVERGE_ASSIGN_OR_RETURN(const json::array* arr, internal::ArrayFromJson(*sibs, kWhat));
        for (const json::value& sv : *arr) {
          CONVERGE_ASSIGN_OR_RETURN(const json::object* so, internal::ObjectFromJson(sv, kWhat));
          Sibling s;
          CONVERGE_ASSIGN_OR_RETURN(const json::value* val, internal::Member(*so, "value", kWhat));
          CONVERGE_ASSIGN_OR_RETURN(const json::value* dot, internal::Member(*so, "dot", kWhat));
          CONVERGE_ASSIGN_OR_RETURN(const json::value* past, internal::Member(*so, "past", kWhat));
          CONVERGE_RETURN_IF_ERROR(internal::BytesFromJson(*val, &s.value, kWhat));
          CONVERGE_RETURN_IF_ERROR(internal::DotFromJson(*dot, &s.version.dot, kWhat));
          CONVERGE_RETURN_IF_ERROR(internal::VersionVectorFromJson(*past, &s.version.past, kWhat));
          out->siblings_.push_back(std::move(s));
        }
        CONVERGE_RETURN_IF_ERROR(internal::CausalContextFromJson(*ctx, &out->context_, kWhat));
        return out->Validate();
      });
}

void MvRegister::AppendBinary(std::string* out) const {
  BinaryWriter w(out);
  w.Header(static_cast<uint8_t>(CrdtKind::kMvRegister));
  internal::EncodeCausalContext(context_, w);
  w.U64(siblings_.size());
  for (const Sibling& s : siblings_) {
    internal::EncodeDot(s.version.dot, w);
    internal::EncodeVersionVector(s.version.past, w);
    w.Bytes(s.value);
  }
}

std::string MvRegister::ToBinary() const {
  std::string out;
  AppendBinary(&out);
  return out;
}

Result<MvRegister> MvRegister::FromBinary(std::string_view bytes, const DecodeLimits& limits) {
  CONVERGE_RETURN_IF_ERROR(internal::CheckInputSize(bytes, limits, "mv-register"));
  BinaryReader r(bytes, "mv-register");
  MvRegister reg;
  uint64_t n = 0;
  if (r.Header(static_cast<uint8_t>(CrdtKind::kMvRegister)) &&
      internal::DecodeCausalContext(r, &reg.context_) && r.Count(&n, 4)) {
    reg.siblings_.reserve(internal::kMaxDecodeReserve < n ? internal::kMaxDecodeReserve : n);
    for (uint64_t i = 0; i < n; ++i) {
      Sibling s;
      if (!internal::DecodeDot(r, &s.version.dot) ||
          !internal::DecodeVersionVector(r, &s.version.past) || !r.Bytes(&s.value)) {
        break;
      }
      reg.siblings_.push_back(std::move(s));
    }
  }
  CONVERGE_RETURN_IF_ERROR(r.Finish());
  CONVERGE_RETURN_IF_ERROR(reg.Validate());
  return reg;
}

}  // namespace converge::conflict
