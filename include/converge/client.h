// A C++ client for the HTTP API v1 of `converge serve` (docs/api/openapi.yaml).
//
// Contract
// - Every call is one HTTP/1.1 request on a kept-alive connection (reconnected when the
//   server closed it). Calls block until the reply arrives or options.timeout_ms passes.
// - Errors are Statuses carrying the server's {code, message}: "<CODE>: <message>", with the
//   StatusCode of the HTTP status: 400 InvalidArgument, 401 Unauthenticated, 403
//   PermissionDenied, 404 NotFound, 409 AlreadyExists (code ALREADY_EXISTS) or
//   FailedPrecondition, 413 and 429 ResourceExhausted, 503 Unavailable, other 5xx Internal.
//   A connection failure or timeout is Unavailable (DeadlineExceeded for a timeout while
//   waiting for a reply: the request may have been applied).
// - Publishing is idempotent per (source, id): retrying a publish whose outcome is unknown is
//   safe, the reply then says duplicate=true.
// - A Subscription holds its own connection (Server-Sent Events stream).
// Thread-safety: a Client or Subscription is used by one thread at a time; use one per thread.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "converge/event.h"
#include "converge/log.h"
#include "converge/status.h"

namespace converge::client {

struct Options {
  std::string host = "127.0.0.1";
  uint16_t port = 8080;
  std::string token;            // bearer token; empty sends none
  bool tls = false;             // https
  std::string tls_ca_file;      // PEM CA bundle to verify the server; empty = system default
  bool tls_verify = true;       // false accepts any certificate (tests only)
  int64_t timeout_ms = 30'000;  // per request: connect, send, receive
  uint64_t max_response_bytes = 64ull << 20;
  // Fetch deliveries in converge's binary delivery batch instead of JSON (less work on both
  // sides; the events are the same). See docs/api/openapi.yaml.
  bool native_fetch = true;
};

// A raw HTTP exchange, for callers that need the status line and headers.
struct HttpRequest {
  std::string method = "GET";
  std::string target = "/";  // path and query
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
};
struct HttpResponse {
  int status = 0;
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
  // The first header called `name` (case-insensitive), or "".
  std::string Header(std::string_view name) const;
};

enum class PublishMode : uint8_t {
  kStructured,  // application/cloudevents+json, one event per request
  kBatch,       // application/cloudevents-batch+json
  kBinary,      // ce-* headers, the body is the data, one event per request
  kNative,      // application/vnd.converge.event-batch: binary records, the fastest batch
};

struct Published {
  std::string id;
  uint32_t partition = 0;
  uint64_t offset = 0;
  bool duplicate = false;
};

struct TopicSpec {
  std::string name;
  uint32_t partitions = 1;
  Durability durability = Durability::kFsync;
  uint64_t retention_max_bytes = 0;  // per partition; 0 = unlimited
  int64_t retention_max_age_ms = 0;  // 0 = unlimited
};

struct PartitionOffsets {
  uint32_t partition = 0;
  uint64_t start_offset = 0;
  uint64_t end_offset = 0;
  uint64_t size_bytes = 0;
};

struct GroupPartitionLag {
  uint32_t partition = 0;
  uint64_t committed_offset = 0;
  uint64_t end_offset = 0;
  uint64_t lag = 0;
  uint32_t in_flight = 0;
};

struct GroupInfo {
  std::string name;
  uint64_t lag = 0;
  uint32_t members = 0;
  int64_t lease_ms = 0;
  uint32_t max_deliveries = 0;
  uint64_t dead_letters = 0;
  uint64_t dead_letters_replayed = 0;
  std::vector<GroupPartitionLag> partitions;
};

struct TopicDescription {
  std::string name;
  uint32_t partitions = 0;
  Durability durability = Durability::kFsync;
  uint64_t retention_max_bytes = 0;
  int64_t retention_max_age_ms = 0;
  std::vector<PartitionOffsets> offsets;  // Describe only
  std::vector<GroupInfo> groups;          // Describe only
};

struct GroupSpec {
  std::string name;
  int64_t lease_ms = 0;         // 0 = the server's default
  uint32_t max_deliveries = 0;  // 0 = the server's default
  uint32_t max_in_flight = 0;   // leased events per partition and per member; 0 = default
  bool start_latest = false;    // only events published after creation
};

// Names one leased delivery, for Ack and Nack.
struct Lease {
  uint32_t partition = 0;
  uint64_t offset = 0;
  uint64_t lease_id = 0;
};

struct Delivery {
  uint32_t partition = 0;
  uint64_t offset = 0;
  uint64_t lease_id = 0;
  uint32_t attempt = 0;  // 1 on first delivery
  int64_t lease_expires_at_ms = 0;
  // The event; nullopt if the stored record is not a CloudEvent (decode_error says why).
  std::optional<Event> event;
  std::string decode_error;

  Lease lease() const { return Lease{partition, offset, lease_id}; }
};

struct FetchOptions {
  uint32_t max_events = 100;
  uint64_t max_bytes = 0;  // 0 = the server's limit
  int64_t wait_ms = 0;     // long poll: wait up to this long for something to arrive
  std::string consumer;    // member name; empty = the server's "default"
};

struct AckResult {
  uint64_t acked = 0;
  std::vector<size_t> lost;  // indexes of leases that had expired and were re-leased
};

struct ExtendResult {
  uint64_t extended = 0;
  std::vector<size_t> lost;  // indexes of leases no longer held (not extended, not revived)
};

struct Nack {
  Lease lease;
  int64_t delay_ms = 0;    // redeliver after this long
  bool permanent = false;  // dead-letter now
  std::string reason;
};

struct NackResult {
  uint64_t nacked = 0;
  std::vector<size_t> lost;
  std::vector<std::pair<size_t, Status>> failed;
};

struct DeadLetterEntry {
  uint64_t dead_letter_offset = 0;
  uint32_t partition = 0;
  uint64_t offset = 0;
  uint32_t delivery_count = 0;
  std::string reason;
  std::string last_error;
  int64_t dead_lettered_at_ms = 0;
  bool replayed = false;
  std::optional<Event> event;
};

struct DeadLetterList {
  std::vector<DeadLetterEntry> dead_letters;
  uint64_t next_offset = 0;
  uint64_t end_offset = 0;
};

struct ReplayRequest {
  uint64_t from_offset = 0;
  uint64_t to_offset = UINT64_MAX;
  uint32_t max_events = 1000;
  std::string target_topic;  // empty = the group's topic
  bool include_replayed = false;
};

struct ReplayReply {
  uint64_t replayed = 0;
  uint64_t skipped_already_replayed = 0;
  uint64_t next_offset = 0;
};

struct SubscribeOptions {
  std::string consumer;       // empty = a fresh member per stream
  uint32_t max_events = 100;  // per server-side fetch
  bool auto_ack = false;      // the server acks what it has sent (at-most-once)
};

// A streaming subscription (Server-Sent Events). Deliveries must still be acked (unless
// auto_ack) through Client::Ack with the same group.
class Subscription {
 public:
  virtual ~Subscription() = default;
  // The next delivery; nullopt if none arrived within timeout_ms. Unavailable when the
  // stream ended (server shutdown or connection lost); the server's error event as its code.
  virtual Result<std::optional<Delivery>> Next(int64_t timeout_ms) = 0;
};

class Client {
 public:
  explicit Client(Options options);
  ~Client();
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  // ---- raw ----
  // Sends one request (Authorization added if a token is set). OK for any HTTP status;
  // Unavailable / DeadlineExceeded for transport failures.
  Result<HttpResponse> Send(const HttpRequest& request);

  // ---- operations ----
  // OK when /healthz answers 200.
  Status Health();
  // OK when /readyz answers 200 (Unavailable while draining).
  Status Ready();
  // The Prometheus text of /metrics.
  Result<std::string> Metrics();

  // ---- topics ----
  Result<TopicDescription> CreateTopic(const TopicSpec& spec);
  Result<std::vector<TopicDescription>> ListTopics();
  Result<TopicDescription> DescribeTopic(const std::string& topic);

  // ---- publish ----
  // Publishes events; the reply has one entry per event, in order. kStructured and kBinary
  // take exactly one event (InvalidArgument otherwise). Nothing is appended on error.
  Result<std::vector<Published>> Publish(const std::string& topic, std::span<const Event> events,
                                         PublishMode mode = PublishMode::kBatch);
  Result<Published> PublishOne(const std::string& topic, const Event& event,
                               PublishMode mode = PublishMode::kStructured);

  // ---- consumer groups ----
  Result<GroupInfo> CreateGroup(const std::string& topic, const GroupSpec& spec);
  // Leases up to max_events deliveries (the group is created with defaults on first use).
  Result<std::vector<Delivery>> Fetch(const std::string& topic, const std::string& group,
                                      const FetchOptions& options = {});
  Result<AckResult> Ack(const std::string& topic, const std::string& group,
                        std::span<const Lease> leases, const std::string& consumer = "");
  // Keeps leases for lease_ms from now (a handler slower than the group's lease): they are not
  // redelivered meanwhile. A lease that already ended is listed in `lost`.
  Result<ExtendResult> ExtendLeases(const std::string& topic, const std::string& group,
                                    std::span<const Lease> leases, int64_t lease_ms,
                                    const std::string& consumer = "");
  Result<NackResult> NackMany(const std::string& topic, const std::string& group,
                              std::span<const Nack> nacks, const std::string& consumer = "");
  // One nack; FailedPrecondition if the lease was lost.
  Status NackOne(const std::string& topic, const std::string& group, const Nack& nack);
  Result<std::unique_ptr<Subscription>> Subscribe(const std::string& topic,
                                                  const std::string& group,
                                                  const SubscribeOptions& options = {});

  // ---- dead letters ----
  Result<DeadLetterList> ListDeadLetters(const std::string& topic, const std::string& group,
                                         uint64_t from_offset = 0, uint32_t limit = 100);
  Result<ReplayReply> ReplayDeadLetters(const std::string& topic, const std::string& group,
                                        const ReplayRequest& request = {});

 private:
  class Connection;
  Options options_;
  std::unique_ptr<Connection> connection_;
};

// Maps an HTTP error reply (status and JSON body {code, message}) to a Status.
Status StatusFromHttp(int http_status, std::string_view body);

}  // namespace converge::client
