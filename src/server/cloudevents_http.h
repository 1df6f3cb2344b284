// The CloudEvents HTTP protocol binding (version 1.0.2) as the publish endpoint speaks it:
// decoding a request in structured, batched or binary content mode into Events.
//
// Contract
// - The mode comes from Content-Type:
//     application/cloudevents+json        structured: the body is one JSON event
//     application/cloudevents-batch+json  batched: the body is a JSON array of events
//     application/cloudevents+<other>     UnsupportedMediaType (only JSON is spoken)
//     application/vnd.converge.event-batch  converge's binary batch (wire/wire_format.h)
//     anything else (or none)             binary: attributes in ce-* headers, the body is
//                                         the data and Content-Type its datacontenttype
// - Binary mode: ce-specversion, ce-id, ce-source and ce-type are required; header values
//   are percent-decoded; ce-datacontenttype is rejected (Content-Type carries it); every
//   other ce-<name> header is a String extension. The body becomes JSON data under a JSON
//   media type, text data under text/* or XML (bytes if not UTF-8), bytes otherwise.
// - Every ce- header at most once, Content-Type at most once; every event within the
//   attribute limits (CheckAttributeLimits in converge/event.h).
// - Errors: InvalidArgument naming the attribute, header or event index (HTTP 400);
//   ResourceExhausted when a limit of `options` is exceeded (HTTP 413); FailedPrecondition
//   for an unsupported media type (HTTP 415). Either every event decodes or none is returned.
// Thread-safety: stateless functions.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "converge/event.h"
#include "server/http_server.h"

namespace converge::server {

// kNative: converge's binary event batch (wire/wire_format.h), not a CloudEvents mode.
enum class PublishMode { kStructured, kBatch, kBinary, kNative };
std::string_view PublishModeName(PublishMode mode);

struct DecodedPublish {
  PublishMode mode = PublishMode::kBinary;
  std::vector<Event> events;
  // kNative only: each event's binary record as sent (views into the request body), stored
  // as is since it decoded and validated.
  std::vector<std::string_view> records;
};

Result<DecodedPublish> DecodePublishRequest(const HttpRequest& request,
                                            const DecodeOptions& options);

// Lowercased media type without parameters: "Application/JSON; charset=utf-8" ->
// "application/json".
std::string MediaType(std::string_view content_type);

// Percent-encoded ce- header values are decoded by PercentDecode (server/router.h), the one
// decoder of the server.

// The log record id used for idempotent publish: EventIdentity(event) (converge/event.h),
// the pair (source, id) as "<len(source)>:<source><id>", the same as the outbox relay's.
std::string RecordIdFor(const Event& event);
// Appends RecordIdFor(event) to *out.
void AppendRecordId(const Event& event, std::string* out);

// The partition key: the partitionkey extension, else the subject, else empty (round-robin).
std::string_view PartitionKeyFor(const Event& event);

}  // namespace converge::server
