// converge's native wire formats for the HTTP API: compact binary bodies that the C++ client
// uses instead of JSON where volume matters (publishing batches, fetching deliveries). They
// are optional: every endpoint speaks JSON / the CloudEvents binding; these are chosen by
// Content-Type (requests) and Accept (replies). Described in docs/api/openapi.yaml.
//
//   application/vnd.converge.event-batch (publish request body)
//       repeated: varint n, then n bytes: one event in the binary storage record format
//       (docs/formats/event-binary.md), exactly as EncodeBinary writes it.
//   application/vnd.converge.publish-results (publish reply body, one per event in order)
//       repeated: u32 partition, u64 offset, u8 duplicate (0 or 1)
//   application/vnd.converge.delivery-batch (fetch reply body)
//       repeated: u32 partition, u64 offset, u64 lease_id, u32 attempt,
//                 i64 lease_expires_at_ms, varint n, n bytes: the stored event record
// Integers are little-endian; varints are unsigned LEB128 (at most 10 bytes).
//
// Readers never read past their input and report malformed framing as InvalidArgument (from
// a client) or DataLoss (from the server), naming the item's index.
// Thread-safety: stateless functions.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "converge/status.h"

namespace converge::internal::wire {

inline constexpr std::string_view kEventBatchMediaType = "application/vnd.converge.event-batch";
inline constexpr std::string_view kPublishResultsMediaType =
    "application/vnd.converge.publish-results";
inline constexpr std::string_view kDeliveryBatchMediaType =
    "application/vnd.converge.delivery-batch";

void AppendVarint(std::string* out, uint64_t v);
// Reads a varint at *pos and advances it. False if truncated or longer than 10 bytes.
bool ReadVarint(std::string_view in, size_t* pos, uint64_t* v);

// Appends one record of an event batch.
void AppendEventRecord(std::string* out, std::string_view record);
// Splits an event batch into its records (views into `body`). InvalidArgument on malformed
// framing ("record[3]: ..."); ResourceExhausted past max_records records or for a record
// longer than max_record_bytes (the message names the limit).
Status SplitEventBatch(std::string_view body, size_t max_records, size_t max_record_bytes,
                       std::vector<std::string_view>* records);

struct PublishResult {
  uint32_t partition = 0;
  uint64_t offset = 0;
  bool duplicate = false;
};
void AppendPublishResult(std::string* out, const PublishResult& r);
// DataLoss on a truncated body.
Status ReadPublishResults(std::string_view body, std::vector<PublishResult>* out);

struct DeliveryHeader {
  uint32_t partition = 0;
  uint64_t offset = 0;
  uint64_t lease_id = 0;
  uint32_t attempt = 0;
  int64_t lease_expires_at_ms = 0;
};
void AppendDelivery(std::string* out, const DeliveryHeader& h, std::string_view record);
// Reads the delivery at *pos and advances it; `record` views into `in`. DataLoss if malformed.
Status ReadDelivery(std::string_view in, size_t* pos, DeliveryHeader* h, std::string_view* record);

// True if an Accept header value lists `media_type` (parameters and q-values ignored).
bool Accepts(std::string_view accept_header, std::string_view media_type);

}  // namespace converge::internal::wire
