// Event: a CloudEvents 1.0 event, and its codecs.
//
// The envelope (https://github.com/cloudevents/spec, version 1.0.2):
//   required   id, source (URI-reference), type, specversion (always "1.0")
//   optional   subject, time (RFC 3339), datacontenttype (RFC 2046 media type),
//              dataschema (URI)
//   extensions any further attribute: a name of 1-20 characters 'a'-'z' / '0'-'9' and a
//              String, Integer (32-bit signed) or Boolean value
//   data       the payload, one of four kinds (DataKind):
//                kNone    no payload
//                kJson    a JSON value; data() is its JSON text, in compact form when it came
//                         through SetJsonData or a JSON decoder (no insignificant whitespace,
//                         strings re-escaped minimally, numbers exactly as written; a binary
//                         record's text is kept as stored). Requires datacontenttype absent
//                         or JSON ("*/json", "*/*+json"). Encoded as the JSON member "data"
//                         holding that value.
//                kText    a string payload of a non-JSON datacontenttype (e.g. "text/plain",
//                         "application/xml"); data() is the text, valid UTF-8. Encoded as
//                         "data": "<the text as a JSON string>".
//                kBinary  raw bytes; encoded as "data_base64".
//              In every kind data() holds the payload bytes exactly as the HTTP binary
//              content mode would carry them in the body.
//
// Invariants and validation
// - Data is validated when it is set (SetJsonData, SetTextData) so an Event never holds
//   malformed JSON or UTF-8 data.
// - Attributes are plain values; Validate() checks every CloudEvents rule at once. Every
//   encoder validates first and fails with InvalidArgument (output untouched) for an invalid
//   event; every decoder returns only events that pass Validate().
// - String attributes (and String extension values) must be valid UTF-8 without the
//   characters the spec forbids: controls U+0000-U+001F and U+007F-U+009F, and Unicode
//   noncharacters.
// - Extensions are kept sorted by name, so two events with the same content compare equal
//   whatever order their attributes were set or decoded in.
//
// JSON structured mode (application/cloudevents+json) and batch mode
// (application/cloudevents-batch+json):
// - Decoding is strict: required attributes present and non-empty strings, specversion
//   "1.0", attribute types as the spec's JSON type mapping says, "data" and "data_base64"
//   mutually exclusive, data_base64 canonical base64 (RFC 4648, padded), member names
//   unique. A null attribute or extension value means "absent" (as the JSON format
//   requires); "data": null is an explicit JSON null payload (kJson, data() == "null").
// - A "data" string under a non-JSON datacontenttype becomes kText; any other "data" is
//   kJson. A non-string "data" under a non-JSON datacontenttype is rejected (the spec
//   allows failing there) because its bytes would not match the declared media type.
// - Extension values: a JSON string is a String; true/false a Boolean; an integer number in
//   [-2^31, 2^31) an Integer. Other numbers, objects and arrays are rejected. The Extension
//   keeps the kind, so integers and booleans are re-encoded as JSON numbers and booleans.
// - Errors: malformed JSON, a missing required attribute or a wrong type give
//   InvalidArgument whose message names the attribute ("attribute 'source' is required",
//   "attribute 'id' must be a string"); in a batch the message is prefixed with the index
//   ("event[3]: attribute 'type' is required"). A limit in DecodeOptions gives
//   ResourceExhausted.
// - Encoding emits compact JSON: specversion, id, source, type, the optional attributes,
//   the extensions by name, then data / data_base64. decode(encode(e)) == e for every valid
//   e.
//
// Binary storage mode: a compact, versioned record (docs/formats/event-binary.md).
//
// Thread-safety: Event is a value type (one object is not synchronized). The codec functions
// are thread-safe and keep no state between calls.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "converge/status.h"

namespace converge {

namespace internal {
struct EventAccess;  // lets the codecs fill an Event without re-validating piecewise
}  // namespace internal

enum class DataKind : uint8_t { kNone = 0, kJson = 1, kText = 2, kBinary = 3 };

enum class ExtensionKind : uint8_t { kString = 0, kInteger = 1, kBoolean = 2 };

// One extension attribute. `value` is its canonical text: the string itself, the decimal
// integer ("-42"), or "true" / "false".
struct Extension {
  std::string name;
  std::string value;
  ExtensionKind kind = ExtensionKind::kString;

  bool operator==(const Extension&) const = default;
};

class Event {
 public:
  static constexpr std::string_view kSpecVersion = "1.0";
  static constexpr size_t kMaxExtensionNameLength = 20;
  // The longest value (bytes) converge accepts from outside (publish, outbox rows) for each
  // context attribute and extension value; CheckAttributeLimits enforces it. The log stores
  // an event's identity (source and id together) and its partition key in 64 KiB fields, so
  // 16 KiB per attribute always fits whatever the combination.
  static constexpr size_t kMaxAttributeBytes = 16 * 1024;
  // Well-known extensions: per-key ordering, and W3C trace context (distributed tracing
  // extension).
  static constexpr std::string_view kPartitionKey = "partitionkey";
  static constexpr std::string_view kTraceParent = "traceparent";
  static constexpr std::string_view kTraceState = "tracestate";

  Event() = default;

  // ---- required attributes ----
  const std::string& id() const { return id_; }
  void set_id(std::string id) { id_ = std::move(id); }
  const std::string& source() const { return source_; }
  void set_source(std::string source) { source_ = std::move(source); }
  const std::string& type() const { return type_; }
  void set_type(std::string type) { type_ = std::move(type); }
  // Always "1.0": the only version this build speaks.
  std::string_view specversion() const { return kSpecVersion; }

  // ---- optional attributes (nullopt = absent) ----
  const std::optional<std::string>& subject() const { return subject_; }
  void set_subject(std::optional<std::string> subject) { subject_ = std::move(subject); }
  const std::optional<std::string>& time() const { return time_; }
  void set_time(std::optional<std::string> time) { time_ = std::move(time); }
  const std::optional<std::string>& datacontenttype() const { return datacontenttype_; }
  void set_datacontenttype(std::optional<std::string> media_type) {
    datacontenttype_ = std::move(media_type);
  }
  const std::optional<std::string>& dataschema() const { return dataschema_; }
  void set_dataschema(std::optional<std::string> uri) { dataschema_ = std::move(uri); }

  // ---- extensions ----
  // Sorted by name; names unique.
  const std::vector<Extension>& extensions() const { return extensions_; }
  // The extension called `name`, or nullptr.
  const Extension* FindExtension(std::string_view name) const;
  // Add or replace. The name is checked by Validate(), not here.
  void SetExtension(std::string name, std::string value);  // a String
  void SetExtensionInteger(std::string name, int32_t value);
  void SetExtensionBoolean(std::string name, bool value);
  // Returns whether it was present.
  bool RemoveExtension(std::string_view name);

  // Helpers for the well-known extensions: the value when present (of any kind).
  std::optional<std::string_view> partitionkey() const;
  void set_partitionkey(std::string key) {
    SetExtension(std::string(kPartitionKey), std::move(key));
  }
  std::optional<std::string_view> traceparent() const;
  void set_traceparent(std::string value) {
    SetExtension(std::string(kTraceParent), std::move(value));
  }
  std::optional<std::string_view> tracestate() const;
  void set_tracestate(std::string value) {
    SetExtension(std::string(kTraceState), std::move(value));
  }

  // ---- data ----
  DataKind data_kind() const { return data_kind_; }
  // The payload bytes (see the file comment); empty for kNone.
  const std::string& data() const { return data_; }
  // Sets kJson data from one JSON value (any type, surrounding whitespace allowed); stores
  // its compact form. InvalidArgument (event unchanged) if `json` is not exactly one valid
  // JSON value; ResourceExhausted if it nests deeper than `max_depth`.
  Status SetJsonData(std::string_view json, uint32_t max_depth = 64);
  // Sets kText data. InvalidArgument (event unchanged) if `text` is not valid UTF-8.
  // Validate() additionally requires a non-JSON datacontenttype.
  Status SetTextData(std::string text);
  // Sets kBinary data (any bytes).
  void SetBinaryData(std::string bytes);
  void ClearData();

  // OK if the event satisfies every rule in the file comment; otherwise InvalidArgument
  // naming the first offending attribute, e.g. "attribute 'time' must be an RFC 3339
  // timestamp, got 'yesterday'".
  Status Validate() const;

  bool operator==(const Event&) const = default;

 private:
  friend struct internal::EventAccess;
  void PutExtension(Extension ext);

  std::string id_;
  std::string source_;
  std::string type_;
  std::optional<std::string> subject_;
  std::optional<std::string> time_;
  std::optional<std::string> datacontenttype_;
  std::optional<std::string> dataschema_;
  std::vector<Extension> extensions_;
  DataKind data_kind_ = DataKind::kNone;
  std::string data_;
};

// InvalidArgument naming the first attribute (context attribute or extension) whose value is
// longer than Event::kMaxAttributeBytes: "attribute 'id' is 20000 bytes, more than the
// limit of 16384 bytes". Checked where events enter converge (publish, the outbox writer and
// relay), not by Validate(): events stored before the limit existed stay readable.
Status CheckAttributeLimits(const Event& event);

// An event's identity for deduplication: the pair (source, id), which CloudEvents defines as
// unique per event, as one string "<decimal byte length of source>:<source><id>" (the length
// makes the split unambiguous: ("a", "bc") and ("ab", "c") differ). converge uses it as the
// log record id of the events it takes in (HTTP publish, outbox relay) and as the inbox's
// event_id (docs/formats/outbox.md, "Event identity").
std::string EventIdentity(const Event& event);
// Appends EventIdentity(event) to *out.
void AppendEventIdentity(const Event& event, std::string* out);

// ---------------------------------------------------------------------------------------
// Attribute helpers

// True if `media_type` (parameters allowed) declares JSON content: its subtype is "json" or
// ends with "+json", case-insensitively ("application/json", "application/cloudevents+json;
// charset=utf-8"). An absent datacontenttype counts as JSON; callers handle that case.
bool IsJsonContentType(std::string_view media_type);

// Nanoseconds since the Unix epoch for an RFC 3339 timestamp ("2018-04-05T17:31:00Z",
// "2018-04-05T19:31:00.123+02:00"). Digits beyond nanoseconds are truncated; a leap second
// (":60") counts as the first instant of the next minute. InvalidArgument if malformed;
// OutOfRange outside the int64 range (years 1678-2261).
Result<int64_t> ParseRfc3339Nanos(std::string_view timestamp);
// The UTC RFC 3339 form of `unix_nanos`, with 0, 3, 6 or 9 fractional digits, whichever is
// the shortest exact form: "2018-04-05T17:31:00Z", "2018-04-05T17:31:00.120Z".
std::string FormatRfc3339(int64_t unix_nanos);

// W3C Trace Context "traceparent" (version-traceid-parentid-flags, lowercase hex).
struct TraceParent {
  uint8_t version = 0;
  std::array<uint8_t, 16> trace_id{};
  std::array<uint8_t, 8> parent_id{};
  uint8_t flags = 0;

  bool sampled() const { return (flags & 0x01) != 0; }
  // "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".
  std::string ToString() const;
  // InvalidArgument if `text` is not a valid traceparent (wrong length or separators,
  // uppercase or non-hex digits, version ff, an all-zero trace id or parent id). Versions
  // above 00 may carry further '-'-separated fields, which are ignored.
  static Result<TraceParent> Parse(std::string_view text);

  bool operator==(const TraceParent&) const = default;
};

// ---------------------------------------------------------------------------------------
// Codecs

inline constexpr std::string_view kCloudEventsJsonMediaType = "application/cloudevents+json";
inline constexpr std::string_view kCloudEventsBatchMediaType = "application/cloudevents-batch+json";

struct DecodeOptions {
  // Largest encoded event: its JSON text (for a batch: each element's) or its binary record.
  size_t max_event_bytes = 1u << 20;
  // Most events in one JSON batch.
  size_t max_batch_events = 10'000;
  // Deepest nesting of arrays/objects inside a JSON "data" value.
  uint32_t max_data_depth = 64;
  // DecodeBinary only: do not parse a record's JSON data to check it. For a caller that parses
  // that data completely itself right after (the sidecar validating a publish against a JSON
  // Schema), at least as strictly, and refuses the event, or decodes again without this, when
  // that parse fails.
  bool defer_json_data_check = false;
};

// Decodes one event in JSON structured mode. InvalidArgument for malformed JSON or an
// invalid event (the message names the attribute); ResourceExhausted if `json` is longer
// than max_event_bytes or data nests deeper than max_data_depth.
Result<Event> DecodeJson(std::string_view json, const DecodeOptions& options = {});

// Decodes a JSON batch (an array of events; [] is a valid empty batch). InvalidArgument for
// malformed JSON or any invalid event, with "event[<index>]: " before the message;
// ResourceExhausted for more than max_batch_events events or an element over a limit. No
// partial result: one bad event fails the whole batch.
Result<std::vector<Event>> DecodeJsonBatch(std::string_view json,
                                           const DecodeOptions& options = {});

// Appends the event's JSON structured-mode form to `*out`. InvalidArgument (out untouched)
// if the event fails Validate().
Status AppendJson(const Event& event, std::string* out);
Result<std::string> EncodeJson(const Event& event);

// Appends a JSON batch ("[e0,e1,...]") to `*out`. InvalidArgument naming the index of the
// first invalid event (out untouched).
Status AppendJsonBatch(std::span<const Event> events, std::string* out);
Result<std::string> EncodeJsonBatch(std::span<const Event> events);

// Appends the event's binary record (docs/formats/event-binary.md) to `*out`.
// InvalidArgument (out untouched) if the event fails Validate().
Status EncodeBinary(const Event& event, std::string* out);

// Decodes exactly one binary record (the whole of `record`). DataLoss if the bytes are not
// a well-formed record (truncated, trailing bytes, bad varint, unknown version or flag, a
// length past the end, invalid JSON/UTF-8 data); InvalidArgument if the record is
// well-formed but its event fails Validate(); ResourceExhausted if `record` is longer than
// max_event_bytes or its JSON data nests deeper than max_data_depth. Never reads outside
// `record`.
Result<Event> DecodeBinary(std::string_view record, const DecodeOptions& options = {});

}  // namespace converge
