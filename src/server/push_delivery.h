// Push delivery (docs/push.md): one subscription's delivery loop, as a state machine fed by an
// Env (time, randomness, its executor) and kept apart from the HTTP client that carries the
// requests (PushTransport; production: push_http_client.h, tests: a simulated endpoint).
//
// The loop adds no delivery state of its own: the subscription's consumer group
// (converge/consumer_group.h) keeps the offsets, the leases, the per-key windows, the attempt
// counts and the dead letters. The runner is one member of that group ("push.<name>"); it
// fetches at most `max_concurrency` events at a time, sends each to the endpoint and settles
// its lease from the answer:
//   2xx                              Ack (the acks of answers that arrive together go in one
//                                    AckBatch: one journal sync, shared by concurrent keys).
//   408, 429                         Nack with a delay: Retry-After when the endpoint gave one,
//                                    else the backoff below (retryable).
//   any other 4xx                    Nack(permanent): dead-lettered now ("rejected: ...").
//   1xx, 3xx, 5xx, connection error, timeout
//                                    Nack with the backoff delay (retryable).
// A retryable failure at the group's max_deliveries-th delivery is dead-lettered by the group.
// Backoff: initial_backoff_ms * 2^(attempt-1), capped at max_backoff_ms, with "equal jitter"
// (a uniform draw in [d/2, d]) so that many failing keys do not retry in lock-step. Every delay
// is also capped at the group's max_nack_delay_ms.
//
// Order: the group never leases a record while an earlier record of its key is pending, so at
// most one request per key is in flight and a key's events reach the endpoint in log order;
// different keys proceed in parallel up to max_concurrency.
//
// Crashes: leases are not durable, so after a restart every unacked event is delivered again
// (at-least-once; an endpoint deduplicates by the CloudEvents id and source). An event is
// committed only after its ack or its dead-letter append: nothing is lost.
//
// Threading: every method except the constructor must run on `executor` (one thread: the
// simulation's, or the server's push thread). Transport completions may arrive on any thread;
// they are posted to the executor. The runner may be destroyed (on the executor thread) while
// requests are outstanding: their completions are then ignored and the leases expire.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "converge/consumer_group.h"
#include "converge/env.h"
#include "converge/status.h"

namespace converge::server {

class Histogram;

enum class PushMode : uint8_t { kBinary, kStructured };

// The decision knobs of one subscription.
struct PushPolicy {
  uint32_t max_concurrency = 16;  // requests in flight at once, across keys (1 per key)
  int64_t timeout_ms = 10'000;    // one request, connect to last byte of the answer
  int64_t initial_backoff_ms = 250;
  int64_t max_backoff_ms = 60'000;
};

// What became of one request.
struct PushOutcome {
  enum class Kind : uint8_t { kHttp, kConnectError, kTimeout };
  Kind kind = Kind::kHttp;
  unsigned status = 0;                    // kHttp
  std::optional<int64_t> retry_after_ms;  // kHttp: a Retry-After header, read
  std::string detail;                     // for the nack reason (errors)
};

struct PushDecision {
  enum class Action : uint8_t { kAck, kRetry, kDeadLetter };
  Action action = Action::kAck;
  int64_t delay_ms = 0;  // kRetry
  std::string reason;    // kRetry, kDeadLetter: the nack reason
};

// The rule table above, as a pure function (randomness for the jitter only).
PushDecision DecidePush(const PushOutcome& outcome, uint32_t attempt, const PushPolicy& policy,
                        int64_t max_delay_ms, Random& random);

// Reads a Retry-After value: delay-seconds, or an HTTP-date relative to `now_wall_micros`.
// nullopt when malformed.
std::optional<int64_t> ParseRetryAfterMs(std::string_view value, int64_t now_wall_micros);

// One request to make: the leased record, copied (it outlives the fetch).
struct PushRequest {
  uint32_t partition = 0;
  uint64_t offset = 0;
  uint32_t attempt = 0;
  std::string key;
  std::string value;  // the stored record (a converge event in its binary form)
};

class PushTransport {
 public:
  virtual ~PushTransport() = default;
  // Sends `request` and calls `done` once with what happened, from any thread, within about
  // the policy's timeout. Never calls `done` inline.
  virtual void Send(const PushRequest& request, std::function<void(PushOutcome)> done) = 0;
};

// Counters of one subscription (read by /metrics from any thread).
struct PushStats {
  std::atomic<uint64_t> delivered{0};      // acked after a 2xx
  std::atomic<uint64_t> retried{0};        // nacked for redelivery
  std::atomic<uint64_t> dead_lettered{0};  // rejected (4xx) or out of deliveries
  std::atomic<uint64_t> errors{0};         // group calls that failed (logged, retried)
  std::atomic<int64_t> in_flight{0};
  Histogram* latency = nullptr;  // seconds per request, if set
};

struct PushRunnerOptions {
  std::string name;  // the subscription's name; the member is "push.<name>"
  std::string topic;
  std::string group;
  PushPolicy policy;
  uint64_t max_fetch_bytes = 16ull << 20;
  // When a call to the group fails (the disk refused a commit), the runner tries again after
  // this long.
  int64_t error_retry_ms = 500;
  std::function<void(const std::string&)> log;  // problems worth a line in the server log
};

class PushRunner {
 public:
  // The group must exist. Nothing happens before Start.
  PushRunner(Env& env, Executor& executor, ConsumerGroups& groups, PushTransport& transport,
             PushRunnerOptions options, PushStats* stats);
  ~PushRunner();
  PushRunner(const PushRunner&) = delete;
  PushRunner& operator=(const PushRunner&) = delete;

  // Joins the group, watches it and starts pumping. On the executor.
  Status Start();
  // Stops sending; leaves the group (its leases go back for immediate redelivery) unless
  // `leave` is false (a crash in the simulation). On the executor. Completions after Stop are
  // ignored.
  void Stop(bool leave = true);

  const std::string& member() const { return member_; }

 private:
  struct Shared;
  void Pump();
  void SchedulePump(int64_t delay_ns);
  void OnDone(const PushRequest& request, uint64_t lease_id, int64_t started_ns,
              PushOutcome outcome);
  void FlushAcks();

  Env& env_;
  Executor& executor_;
  ConsumerGroups& groups_;
  PushTransport& transport_;
  PushRunnerOptions options_;
  PushStats* stats_;
  std::string member_;
  int64_t max_delay_ms_ = 0;
  int64_t keep_alive_ns_ = 0;
  uint32_t in_flight_ = 0;
  bool running_ = false;
  bool joined_ = false;
  // Acks of answers that arrived since the last flush: one AckBatch (one journal sync) for all
  // of them, so that concurrent keys share a sync as pull consumers' acks do.
  std::vector<LeaseRef> pending_acks_;
  bool flush_posted_ = false;
  TimerId timer_ = 0;
  int64_t timer_due_ns_ = 0;
  std::shared_ptr<Shared> shared_;  // what outstanding callbacks reach
  std::unique_ptr<ConsumerGroups::ReadyWatch> watch_;
};

}  // namespace converge::server
