// JetStreamLog: the converge::Log (include/converge/log.h) over NATS JetStream (nats.c), so
// several `converge serve` instances share one log held by a (clustered) nats-server.
//
// Mapping (docs/formats/jetstream.md has the exact names and bytes):
// - Each partition of a topic is one stream `<prefix>_<T>_<p>` on the one subject
//   `<prefix>.<T>.<p>`, where <T> is the topic name with '.' and '_' escaped (`_2E`, `_5F`):
//   JetStream forbids '.' in stream names and uses it to split subjects. A stream's sequence
//   is dense, so the converge offset is the stream sequence - 1.
// - The topic's options travel in every partition stream's description (JSON), so any
//   instance reads them from the server. Partition 0's stream is created last and deleted
//   first: it is the topic's existence.
// - A record's payload is converge's own record encoding (version byte, timestamp, id, key,
//   value): reads return exactly the record appended.
// - Idempotent publish: the record id is the Nats-Msg-Id and the stream's duplicate window is
//   the topic's dedup window. A keyless record with an id is placed by its id, so a retry
//   lands in the same partition (the same stream), where JetStream deduplicates it.
// - An append is acknowledged only after JetStream's PubAck for every record of it.
//
// Differences from the embedded log (documented in docs/formats/jetstream.md):
// - A batch is not atomic: a failed Append may have stored some of its records (retrying with
//   the same ids appends none twice within the dedup window).
// - Durability is what JetStream does, whatever the topic's policy says: file storage, the
//   PubAck once the stream's replicas (a quorum of them) stored the message; nats-server does
//   not fsync each message. Sync() and EnforceRetention() have nothing to do (the server
//   applies retention itself).
//
// Thread-safety: thread-safe. Blocking: every call but AppendAsync waits for the server (each
// bounded by ack_timeout_ms); AppendAsync waits only for room among the pending publishes.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "converge/env.h"
#include "converge/log.h"
#include "converge/status.h"

namespace converge::jetstream {

struct JetStreamLogOptions {
  std::vector<std::string> servers;        // nats://host:port; one or more of a cluster
  uint32_t replicas = 1;                   // stream replica count, 1..5
  std::string stream_prefix = "converge";  // 1..32 of [A-Za-z0-9-]
  int64_t connect_timeout_ms = 5000;
  int64_t ack_timeout_ms = 5000;  // PubAck wait, and every JetStream API request
  // Bound on publishes waiting for their PubAck; AppendAsync waits up to ack_timeout_ms for
  // room beyond it (then Unavailable).
  int64_t max_pending_publishes = 65536;
};

// InvalidArgument naming the field ("servers", "replicas", ...).
Status ValidateJetStreamLogOptions(const JetStreamLogOptions& options);

// Connects (Unavailable if no server answers within connect_timeout_ms, or JetStream is not
// enabled there). `env` (the wall clock for record timestamps) must outlive the Log.
Result<std::unique_ptr<Log>> OpenJetStreamLog(Env& env, const JetStreamLogOptions& options);

// Names (exposed for tests and docs): the escaped topic, a partition's stream and subject.
std::string EscapeTopicName(std::string_view topic);
std::string StreamName(std::string_view prefix, std::string_view topic, uint32_t partition);
std::string SubjectName(std::string_view prefix, std::string_view topic, uint32_t partition);

// The record payload: version 1, fixed64 timestamp, length-prefixed id and key, then the value.
std::string EncodeRecordPayload(const RecordView& record, int64_t timestamp_micros);
// The same, appended to *out.
void AppendRecordPayload(const RecordView& record, int64_t timestamp_micros, std::string* out);
// False for a payload that is not in that encoding.
bool DecodeRecordPayload(std::string_view payload, int64_t* timestamp_micros, std::string_view* id,
                         std::string_view* key, std::string_view* value);

}  // namespace converge::jetstream
