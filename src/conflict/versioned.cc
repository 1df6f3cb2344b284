#include "converge/conflict/versioned.h"

#include "conflict/binary_codec.h"
#include "conflict/json_codec.h"
#include "converge/conflict/crdt_kind.h"

namespace converge::conflict {

namespace json = internal::json;
using internal::BinaryReader;
using internal::BinaryWriter;

// ---- ETag -------------------------------------------------------------------------------

Result<ETag> ETag::Parse(std::string_view header_value) {
  if (header_value.size() >= 2 && header_value.substr(0, 2) == "W/") {
    return InvalidArgumentError("weak ETags cannot be used for conditional writes");
  }
  if (header_value.size() < 2 || header_value.front() != '"' || header_value.back() != '"') {
    return InvalidArgumentError("an ETag must be a quoted string");
  }
  for (size_t i = 1; i + 1 < header_value.size(); ++i) {
    const auto c = static_cast<unsigned char>(header_value[i]);
    if (!(c == 0x21 || (c >= 0x23 && c <= 0x7e) || c >= 0x80)) {
      return InvalidArgumentError("invalid character in ETag");
    }
  }
  return ETag(std::string(header_value));
}

ETag ETag::ForContent(std::string_view bytes) {
  std::string text;
  text.reserve(34);
  text.push_back('"');
  text.append(internal::HexHash(bytes));
  text.push_back('"');
  return ETag(std::move(text));
}

Status CheckPrecondition(const WritePrecondition& pre, const ETag& current, bool exists) {
  if (pre.if_none_match_any && exists) {
    return AlreadyExistsError("a value exists (If-None-Match: *)");
  }
  if (pre.if_match.has_value() && (!exists || *pre.if_match != current)) {
    return AbortedError("ETag " + pre.if_match->text() + " no longer matches " +
                        (exists ? current.text() : std::string("(no value)")) +
                        "; re-read and retry the read-modify-write");
  }
  return Status::Ok();
}

// ---- VersionedValue -----------------------------------------------------------------------

ETag VersionedValue::etag() const { return ETag::ForContent(ToBinary()); }

Result<ETag> VersionedValue::Apply(ReplicaId replica, bool exists, std::string value,
                                   const WritePrecondition& pre) {
  if (!replica.valid()) return InvalidArgumentError("versioned-value: replica id 0 is reserved");
  CONVERGE_RETURN_IF_ERROR(CheckPrecondition(pre, etag(), exists_));
  VersionVector next = version_;
  CONVERGE_RETURN_IF_ERROR(next.Increment(replica).status());
  version_ = std::move(next);
  exists_ = exists;
  value_ = std::move(value);
  return etag();
}

Result<ETag> VersionedValue::Write(ReplicaId replica, std::string value,
                                   const WritePrecondition& pre) {
  return Apply(replica, true, std::move(value), pre);
}

Result<ETag> VersionedValue::Delete(ReplicaId replica, const WritePrecondition& pre) {
  return Apply(replica, false, std::string(), pre);
}

Status VersionedValue::Merge(const VersionedValue& other) {
  switch (Compare(version_, other.version_)) {
    case Ordering::kBefore:
      *this = other;
      return Status::Ok();
    case Ordering::kAfter:
      return Status::Ok();
    case Ordering::kEqual:
      // Equal versions name the same writes; a content difference means a corrupt or forged
      // copy, which must not be papered over.
      if (exists_ != other.exists_ || value_ != other.value_) {
        return AbortedError("versioned-value: equal versions with different contents");
      }
      return Status::Ok();
    case Ordering::kConcurrent:
      break;
  }
  return AbortedError("versioned-value: concurrent writes (local " + ToJson() + ", remote " +
                      other.ToJson() + "); reject-on-conflict leaves the resolution to the caller");
}

std::string VersionedValue::ToJson() const {
  json::object o;
  o["type"] = CrdtKindName(CrdtKind::kVersionedValue);
  o["version"] = internal::VersionVectorToJson(version_);
  if (exists_) o["value"] = internal::BytesToJson(value_);
  return internal::SerializeJson(o);
}

Result<VersionedValue> VersionedValue::FromJson(std::string_view text, const DecodeLimits& limits) {
  constexpr std::string_view kWhat = "versioned-value";
  return internal::DecodeJson<VersionedValue>(
      text, limits, kWhat, [&](const json::value& v, VersionedValue* out) -> Status {
        CONVERGE_ASSIGN_OR_RETURN(const json::object* o, internal::ObjectFromJson(v, kWhat));
        CONVERGE_RETURN_IF_ERROR(internal::CheckType(*o, kWhat, kWhat));
        CONVERGE_ASSIGN_OR_RETURN(const json::value* vv, internal::Member(*o, "version", kWhat));
        CONVERGE_RETURN_IF_ERROR(internal::VersionVectorFromJson(*vv, &out->version_, kWhat));
        if (const json::value* val = o->if_contains("value")) {
          if (out->version_.empty()) return internal::JsonError(kWhat, "a value needs a version");
          out->exists_ = true;
          CONVERGE_RETURN_IF_ERROR(internal::BytesFromJson(*val, &out->value_, kWhat));
        }
        return Status::Ok();
      });
}

void VersionedValue::AppendBinary(std::string* out) const {
  BinaryWriter w(out);
  w.Header(static_cast<uint8_t>(CrdtKind::kVersionedValue));
  internal::EncodeVersionVector(version_, w);
  w.Byte(exists_ ? 1 : 0);
  if (exists_) w.Bytes(value_);
}

std::string VersionedValue::ToBinary() const {
  std::string out;
  AppendBinary(&out);
  return out;
}

Result<VersionedValue> VersionedValue::FromBinary(std::string_view bytes,
                                                  const DecodeLimits& limits) {
  CONVERGE_RETURN_IF_ERROR(internal::CheckInputSize(bytes, limits, "versioned-value"));
  BinaryReader r(bytes, "versioned-value");
  VersionedValue v;
  uint8_t flag = 0;
  if (r.Header(static_cast<uint8_t>(CrdtKind::kVersionedValue)) &&
      internal::DecodeVersionVector(r, &v.version_) && r.Byte(&flag)) {
    if (flag > 1) {
      r.Fail("bad existence flag");
    } else if (flag == 1) {
      if (v.version_.empty()) {
        r.Fail("a value needs a version");
      } else {
        v.exists_ = true;
        r.Bytes(&v.value_);
      }
    }
  }
  CONVERGE_RETURN_IF_ERROR(r.Finish());
  return v;
}

}  // namespace converge::conflict
