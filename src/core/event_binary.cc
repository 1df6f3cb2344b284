// Event <-> the binary storage record (docs/formats/event-binary.md).
//
// The decoder treats its input as hostile: every length is checked against the bytes left
// before anything is read or allocated, varints must be canonical, and reserved bits must be
// zero, so a truncated or garbled record yields DataLoss instead of a crash or a misread.
#include <charconv>
#include <exception>

#include "converge/event.h"
#include "core/coding.h"
#include "core/event_internal.h"

namespace converge {
namespace {

using internal::EventAccess;

constexpr uint8_t kFormatVersion = 1;

// Flag bits (second byte of a record).
constexpr uint8_t kHasSubject = 1u << 0;
constexpr uint8_t kHasTime = 1u << 1;
constexpr uint8_t kHasDataContentType = 1u << 2;
constexpr uint8_t kHasDataSchema = 1u << 3;
constexpr unsigned kDataKindShift = 4;
constexpr uint8_t kDataKindMask = 0x3u << kDataKindShift;
constexpr uint8_t kReservedFlags = 0xC0;

void PutString(std::string_view s, std::string* out) { internal::PutLengthPrefixed(out, s); }

// Reads a record front to back; every read is bounds-checked.
class Reader {
 public:
  explicit Reader(std::string_view in) : p_(in.data()), end_(in.data() + in.size()) {}

  size_t remaining() const { return static_cast<size_t>(end_ - p_); }

  Status Byte(std::string_view what, uint8_t* out) {
    if (p_ == end_) return Truncated(what);
    *out = static_cast<uint8_t>(*p_++);
    return Status::Ok();
  }

  // LEB128; at most 10 bytes, no redundant trailing zero groups.
  Status Varint(std::string_view what, uint64_t* out) {
    size_t n = 0;
    const internal::VarintError e =
        internal::DecodeVarint64(std::string_view(p_, remaining()), out, &n, /*shortest=*/true);
    if (e == internal::VarintError::kTruncated) return Truncated(what);
    if (e != internal::VarintError::kNone) return Garbled(what, internal::VarintErrorText(e));
    p_ += n;
    return Status::Ok();
  }

  Status String(std::string_view what, std::string* out) {
    uint64_t len = 0;
    CONVERGE_RETURN_IF_ERROR(Varint(what, &len));
    if (len > remaining()) {
      return DataLossError("event record truncated: " + std::string(what) + " claims " +
                           std::to_string(len) + " bytes, " + std::to_string(remaining()) +
                           " left");
    }
    out->assign(p_, static_cast<size_t>(len));
    p_ += len;
    return Status::Ok();
  }

  static Status Truncated(std::string_view what) {
    return DataLossError("event record truncated reading " + std::string(what));
  }
  static Status Garbled(std::string_view what, std::string_view why) {
    return DataLossError("event record garbled at " + std::string(what) + ": " + std::string(why));
  }

 private:
  const char* p_;
  const char* end_;
};

Status ReadOptional(Reader& r, uint8_t flags, uint8_t bit, std::string_view what,
                    std::optional<std::string>& field) {
  if (!(flags & bit)) return Status::Ok();
  return r.String(what, &field.emplace());
}

Status ReadExtension(Reader& r, Extension* ext) {
  uint8_t kind = 0;
  CONVERGE_RETURN_IF_ERROR(r.Byte("extension kind", &kind));
  CONVERGE_RETURN_IF_ERROR(r.String("extension name", &ext->name));
  switch (kind) {
    case static_cast<uint8_t>(ExtensionKind::kString):
      ext->kind = ExtensionKind::kString;
      return r.String("extension value", &ext->value);
    case static_cast<uint8_t>(ExtensionKind::kInteger): {
      ext->kind = ExtensionKind::kInteger;
      uint64_t raw = 0;
      CONVERGE_RETURN_IF_ERROR(r.Varint("extension value", &raw));
      const int64_t v = internal::ZigZagDecode(raw);
      if (v < INT32_MIN || v > INT32_MAX) {
        return Reader::Garbled("extension value", "integer outside 32 bits");
      }
      ext->value = std::to_string(v);
      return Status::Ok();
    }
    case static_cast<uint8_t>(ExtensionKind::kBoolean): {
      ext->kind = ExtensionKind::kBoolean;
      uint8_t b = 0;
      CONVERGE_RETURN_IF_ERROR(r.Byte("extension value", &b));
      if (b > 1) return Reader::Garbled("extension value", "boolean byte not 0 or 1");
      ext->value = b ? "true" : "false";
      return Status::Ok();
    }
    default:
      return Reader::Garbled("extension kind", "unknown kind " + std::to_string(kind));
  }
}

Status ReadRecord(std::string_view record, const DecodeOptions& options, Event* event) {
  Event& e = *event;
  Reader r(record);
  uint8_t version = 0, flags = 0;
  CONVERGE_RETURN_IF_ERROR(r.Byte("version", &version));
  if (version != kFormatVersion) {
    return DataLossError("event record has unknown format version " + std::to_string(version));
  }
  CONVERGE_RETURN_IF_ERROR(r.Byte("flags", &flags));
  if (flags & kReservedFlags) return Reader::Garbled("flags", "reserved bits set");
  CONVERGE_RETURN_IF_ERROR(r.String("id", &EventAccess::id(e)));
  CONVERGE_RETURN_IF_ERROR(r.String("source", &EventAccess::source(e)));
  CONVERGE_RETURN_IF_ERROR(r.String("type", &EventAccess::type(e)));
  CONVERGE_RETURN_IF_ERROR(ReadOptional(r, flags, kHasSubject, "subject", EventAccess::subject(e)));
  CONVERGE_RETURN_IF_ERROR(ReadOptional(r, flags, kHasTime, "time", EventAccess::time(e)));
  CONVERGE_RETURN_IF_ERROR(ReadOptional(r, flags, kHasDataContentType, "datacontenttype",
                                        EventAccess::datacontenttype(e)));
  CONVERGE_RETURN_IF_ERROR(
      ReadOptional(r, flags, kHasDataSchema, "dataschema", EventAccess::dataschema(e)));

  uint64_t count = 0;
  CONVERGE_RETURN_IF_ERROR(r.Varint("extension count", &count));
  // Each extension takes at least 3 bytes (kind, name length, value), which bounds the
  // count by the input before anything is allocated for it.
  if (count > r.remaining() / 3) {
    return Reader::Garbled("extension count", std::to_string(count) + " cannot fit");
  }
  auto& exts = EventAccess::extensions(e);
  exts.resize(static_cast<size_t>(count));
  for (size_t i = 0; i < exts.size(); ++i) {
    CONVERGE_RETURN_IF_ERROR(ReadExtension(r, &exts[i]));
    if (i > 0 && !(exts[i - 1].name < exts[i].name)) {
      return Reader::Garbled("extension name", "extensions not in strictly increasing order");
    }
  }

  const auto kind = static_cast<DataKind>((flags & kDataKindMask) >> kDataKindShift);
  EventAccess::data_kind(e) = kind;
  if (kind != DataKind::kNone) {
    std::string& data = EventAccess::data(e);
    CONVERGE_RETURN_IF_ERROR(r.String("data", &data));
    if (kind == DataKind::kJson && !options.defer_json_data_check) {
      Status s = internal::ValidateJson(data, options.max_data_depth);
      if (s.code() == StatusCode::kResourceExhausted) return s.WithContext("event record");
      if (!s.ok()) {
        return DataLossError("event record garbled: JSON data: " + std::string(s.message()));
      }
    } else if (kind == DataKind::kText && !internal::IsValidUtf8(data)) {
      return Reader::Garbled("data", "text data is not valid UTF-8");
    }
  }
  if (r.remaining() != 0) {
    return DataLossError("event record has " + std::to_string(r.remaining()) + " trailing bytes");
  }
  Status valid = e.Validate();
  if (!valid.ok()) return valid.WithContext("event record");
  return Status::Ok();
}

}  // namespace

Status EncodeBinary(const Event& event, std::string* out) {
  CONVERGE_RETURN_IF_ERROR(event.Validate());
  size_t estimate = 2 + 4 * 10;
  estimate += event.id().size() + event.source().size() + event.type().size();
  for (const auto* opt :
       {&event.subject(), &event.time(), &event.datacontenttype(), &event.dataschema()}) {
    if (*opt) estimate += (*opt)->size() + internal::VarintLength((*opt)->size());
  }
  for (const Extension& ext : event.extensions())
    estimate += 12 + ext.name.size() + ext.value.size();
  estimate += event.data().size() + internal::VarintLength(event.data().size());
  out->reserve(out->size() + estimate);

  uint8_t flags = static_cast<uint8_t>(static_cast<uint8_t>(event.data_kind()) << kDataKindShift);
  if (event.subject()) flags |= kHasSubject;
  if (event.time()) flags |= kHasTime;
  if (event.datacontenttype()) flags |= kHasDataContentType;
  if (event.dataschema()) flags |= kHasDataSchema;
  out->push_back(static_cast<char>(kFormatVersion));
  out->push_back(static_cast<char>(flags));
  PutString(event.id(), out);
  PutString(event.source(), out);
  PutString(event.type(), out);
  for (const auto* opt :
       {&event.subject(), &event.time(), &event.datacontenttype(), &event.dataschema()}) {
    if (*opt) PutString(**opt, out);
  }
  internal::PutVarint64(out, event.extensions().size());
  for (const Extension& ext : event.extensions()) {
    out->push_back(static_cast<char>(ext.kind));
    PutString(ext.name, out);
    switch (ext.kind) {
      case ExtensionKind::kString:
        PutString(ext.value, out);
        break;
      case ExtensionKind::kInteger: {
        // Validate() guaranteed a canonical int32 text.
        int64_t v = 0;
        std::from_chars(ext.value.data(), ext.value.data() + ext.value.size(), v);
        internal::PutVarint64(out, internal::ZigZagEncode(v));
        break;
      }
      case ExtensionKind::kBoolean:
        out->push_back(ext.value == "true" ? '\1' : '\0');
        break;
    }
  }
  if (event.data_kind() != DataKind::kNone) PutString(event.data(), out);
  return Status::Ok();
}

Result<Event> DecodeBinary(std::string_view record, const DecodeOptions& options) {
  if (record.size() > options.max_event_bytes) {
    return ResourceExhaustedError("event record is " + std::to_string(record.size()) +
                                  " bytes, more than max_event_bytes (" +
                                  std::to_string(options.max_event_bytes) + ")");
  }
  Event event;
  try {
    CONVERGE_RETURN_IF_ERROR(ReadRecord(record, options, &event));
  } catch (const std::bad_alloc&) {
    return ResourceExhaustedError("out of memory decoding an event record");
  } catch (const std::exception& e) {
    return InternalError(std::string("decoding an event record: ") + e.what());
  }
  return event;
}

}  // namespace converge
