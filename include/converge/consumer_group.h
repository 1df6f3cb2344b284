// Consumer groups and dead letters on top of the durable Log (converge/log.h).
//
// A consumer group reads one topic. Its members share the topic's partitions: each live member
// is assigned a subset, and a member fetches only from its partitions. Every fetched record is
// leased to the fetching member for `lease_ms`; the member acks it (done), nacks it (retry now
// or after a delay, or dead-letter it at once), or lets the lease expire (redelivered). Delivery
// is at-least-once: a record is committed only after an ack or a successful dead-letter append.
//
// Per-key order. Within a partition, a record is not delivered while an earlier record with the
// same key is still leased, waiting for redelivery, delayed by a nack, or waiting for its
// dead-letter append. Records with different keys proceed in parallel, so one slow or failing
// key never holds up the others. Records without a key have no ordering constraint. (Keys are
// compared by a 64-bit hash: two keys that collide are simply ordered together.)
//
// Leases and attempts. Delivery::attempt counts deliveries of the record: 1 for the first. When
// a lease ends without an ack (expiry, or a non-permanent nack) and attempt >= max_deliveries,
// the record is dead-lettered with reason "max deliveries (N) exceeded" and the last nack
// reason as last_error. A lease released because its member left gracefully (Leave) does not
// count as a failed attempt; one that ends because its member vanished (a session expiry, or
// Abandon: the consumer's connection closed with the lease outstanding) does, like a lease
// expiry, so a record that crashes its consumer is dead-lettered in the end instead of
// being redelivered forever. Attempt counts are kept in memory: after a restart they start
// again from 1.
//
// Membership. Join adds a member (or refreshes it) and rebalances: the group's partitions are
// spread round-robin over the live members sorted by id, and the generation is bumped. A member
// stays live while it calls Join/Heartbeat/Fetch/Ack/Nack at least every session_timeout_ms;
// past that it is removed, its leases expire at once (a failed attempt) and the group
// rebalances. Leave removes a member and releases its leases for immediate redelivery; Abandon
// removes it like a session expiry, at once. A record
// leased before a rebalance stays leased to its member until acked, nacked or expired; per-key
// order holds across rebalances because leases belong to the group, not to the member.
//
// Dead letters. Each group has a dead-letter topic (default DefaultDeadLetterTopic(topic,
// group), internal, one partition, fsync durability, created with the group). A dead letter holds
// the original record (id, key, value, timestamp), its coordinates (topic, partition, offset), the
// number of deliveries, the reason, the last error and the time. The source record is committed
// only after the dead-letter append returned OK; if the append fails the record stays pending in
// state "dead-letter pending" (blocking its key) and the append is retried every
// dead_letter_retry_ms by Fetch/Tick. Nothing is ever dropped. Dead letters can be listed and
// replayed (appended again to the group's topic, to the original partition, or to any chosen
// topic); a replayed dead letter is durably marked and skipped by later replays unless asked.
//
// Durability of acks (ConsumerGroupsOptions::commit_mode):
//   kSync      an OK from Ack/AckBatch/Nack(permanent) means the group's committed position
//              including this ack is on disk (fdatasync of the group journal): after a crash
//              the record is not redelivered. Concurrent ackers share one sync (group commit).
//   kPeriodic  an OK means the ack is applied in memory; it is made durable by the next
//              flush, at most commit_interval_ms later (the background timer, Tick, Flush or
//              any operation past the interval). A crash may lose that window: those records are
//              delivered again (never lost).
// CreateGroup, DeleteGroup, Seek and ReplayDeadLetters are durable when they return OK, in
// both modes. What is durable: per partition the committed offset (every record below it is
// done) and the set of acked offsets above it, the groups, the replayed marks; leases, delays,
// attempts and members are not (after a restart every pending record is delivered again, at
// once). An ack that is lost in a crash only causes a redelivery.
//
// Journal-first: every call that changes durable state writes the change to the state journal
// (and syncs it) before applying it in memory, so a call that returns an error changed nothing
// visible and a call that returns OK survives a crash. CreateGroup, DeleteGroup, Seek and the
// replayed marks of ReplayDeadLetters are journal-first in both modes; Ack, AckBatch and a
// Nack that dead-letters (permanent, or the last allowed delivery) in kSync mode. When the
// journal cannot be written they return the error (Unavailable for a full disk, to retry
// later; Internal for another I/O error) and:
// the group is not created / not deleted / not seeked (leases and pending records stay);
// acked records stay leased; no dead letter is marked replayed (the events already appended
// to the target are found there by a retry, not appended twice); a dead-lettering Nack's
// record stays "dead-letter pending", uncommitted, and the group retries its (deduplicated)
// append and then the commit. A refused CreateGroup leaves its dead-letter topic created. In
// kPeriodic mode an ack is applied at once and its OK promises no more; a failed flush is
// retried by the next one. Dead-lettering by the group itself (a lease expired at its last
// delivery, Abandon, a retried dead-letter append) is applied in memory when the dead letter is
// appended and committed by the next flush; a crash before it delivers the record again, never
// loses it. Members, leases and delays are never journaled. (A crash right after a failed sync
// may still find the refused change on disk: an error means "not done", as for any write whose
// outcome is unknown; the compaction that follows the failure writes the state without it.)
//
// The log may lose records under a group (damage, or a machine crash under interval/none
// durability after they were read and acked): Open moves a committed offset that is beyond
// the log's end back to it, and reads of damaged ranges are skipped or stop delivery
// (ConsumerGroupsOptions::on_damage); both are counted in PartitionDescription and reported
// through ConsumerGroupsOptions::report_damage.
//
// State files live in options.dir (a lock file keeps out a second instance): a snapshot written
// atomically plus an append-only journal of changes, compacted into a new snapshot when it
// grows past journal_max_bytes.
//
// Time comes from the Env: leases, sessions and nack delays use its monotonic clock,
// dead-letter times and Delivery::lease_expires_at_micros its wall clock. No thread is needed
// for correctness: expiries are applied lazily by every call; the background timer (on the
// Env's executor) only makes periodic commits and dead-letter retries happen while idle.
//
// Waiting without polling: WatchReady registers a callback run when the group may have
// something new to deliver (records appended to the topic, a key unblocked by an ack, a lease
// released, a seek, a delay or lease expiry noticed by Tick). NextDueMonotonicNanos says when
// the next delay or lease expires, for a timed wait.
//
// Thread-safety: ConsumerGroups is thread-safe; calls on different groups run in parallel
// (one mutex per group), calls on one group are serialized. Blocking: Fetch reads the Log
// (file I/O); dead-letter appends wait for the dead-letter topic's fsync; in kSync mode
// acks wait for the journal sync.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "converge/env.h"
#include "converge/log.h"
#include "converge/status.h"

namespace converge {

// Where a new group starts reading, for every partition.
enum class StartPosition : uint8_t {
  kEarliest,  // the oldest retained record
  kLatest,    // the end at creation: only records appended later
  kOffset,    // GroupOptions::start_offset (clamped into [start, end] of each partition)
  kTime,      // the first record with timestamp >= GroupOptions::start_time_micros
};

struct GroupOptions {
  int64_t lease_ms = 30'000;                    // 1 ms .. 24 h
  uint32_t max_deliveries = 5;                  // 1..10000 deliveries before dead-lettering
  int64_t session_timeout_ms = 30'000;          // 1 ms .. 24 h
  uint32_t max_in_flight_per_partition = 1000;  // leased records per partition, 1..100000
  uint32_t max_in_flight_per_member = 1000;     // leased records per member, 1..1000000
  // Records read and not yet committed, per partition (leased, waiting behind their key,
  // delayed, or acked above an older unacked record). Reading stops at this bound.
  // max_in_flight_per_partition..1000000.
  uint32_t max_pending_per_partition = 10'000;
  uint32_t max_members = 1000;                     // 1..100000
  int64_t max_nack_delay_ms = 24ll * 3600 * 1000;  // upper bound for Nack delays
  uint32_t max_reason_bytes = 1024;     // longer nack reasons are cut (at a UTF-8 boundary)
  int64_t dead_letter_retry_ms = 1000;  // wait before retrying a failed dead-letter append
  StartPosition start = StartPosition::kEarliest;
  uint64_t start_offset = 0;      // for kOffset
  int64_t start_time_micros = 0;  // for kTime
  // Empty: "_dlq.<topic>.<group>". Otherwise the name of an internal ('_'-prefixed) or normal
  // topic; created if missing.
  std::string dead_letter_topic;
};

enum class CommitMode : uint8_t { kSync, kPeriodic };

enum class DamagePolicy : uint8_t { kSkip, kStop };

struct ConsumerGroupsOptions {
  std::string dir;  // state directory; created if missing
  CommitMode commit_mode = CommitMode::kSync;
  int64_t commit_interval_ms = 100;  // kPeriodic: max time an ack waits to become durable
  // Runs Tick on the Env's executor every tick_interval_ms (0 = never; then call Tick).
  int64_t tick_interval_ms = 100;
  uint64_t journal_max_bytes = 16ull << 20;  // compact the journal into a snapshot past this
  uint32_t max_groups = 10'000;
  uint32_t fetch_max_records = 10'000;     // upper bound for Fetch's max_records
  uint64_t fetch_max_bytes = 16ull << 20;  // upper bound for Fetch's max_bytes
  uint32_t ack_max_leases = 100'000;       // upper bound for one AckBatch
  uint32_t read_max_records = 1000;        // records read from the Log per partition read
  uint64_t read_max_bytes = 1ull << 20;    // bytes read from the Log per partition read
  uint32_t max_ready_watches = 10'000;     // WatchReady registrations in total
  uint32_t replay_max_records = 10'000;    // upper bound for one ReplayDeadLetters call
  uint32_t list_max_records = 10'000;      // upper bound for one ListDeadLetters call
  // Replayed dead letters are remembered as offset ranges; past this many ranges per group a
  // replay fails with ResourceExhausted.
  uint32_t max_replayed_ranges = 100'000;
  // What a group does where the log reports damaged records (Log::Read returns DataLoss):
  //   kSkip  skips the range and delivers what follows; the records are counted in
  //          PartitionDescription::damaged_skipped, named in last_error and reported through
  //          report_damage.
  //   kStop  delivers nothing more from that partition: Fetch fails with DataLoss naming the
  //          range (when nothing else could be delivered) until the group is seeked past it.
  DamagePolicy on_damage = DamagePolicy::kSkip;
  // Told about every loss the groups notice: a damaged range skipped or stopped at, a committed
  // offset found beyond the log's end at Open. Runs on the calling thread with a group's lock
  // held: it must be quick and must not call back into ConsumerGroups (the server writes it to
  // its log).
  std::function<void(const std::string& message)> report_damage;
  // Where AckBatchAsync hands the journal syncs (and, kPeriodic, the due flushes) its callers
  // would otherwise wait for: one task at a time, which syncs every commit asked for meanwhile
  // together and then calls their `done`s. Every task handed over must run before the
  // ConsumerGroups is destroyed. Unset: the calling thread does that work.
  std::function<void(std::function<void()>)> background;
};

// A member's share of the group.
struct Assignment {
  uint64_t generation = 0;           // bumped by every rebalance
  std::vector<uint32_t> partitions;  // sorted
};

// What Ack and Nack name: one lease on one record.
struct LeaseRef {
  uint32_t partition = 0;
  uint64_t offset = 0;
  uint64_t lease_id = 0;
};

// One leased record. The views point into FetchResult::storage.
struct Delivery {
  uint32_t partition = 0;
  uint64_t offset = 0;
  uint32_t attempt = 0;                 // 1 for the first delivery
  uint64_t lease_id = 0;                // unique per delivery within the group
  int64_t lease_expires_at_micros = 0;  // wall clock (estimate: leases run on monotonic time)
  int64_t timestamp_micros = 0;         // the record's timestamp
  std::string_view id;
  std::string_view key;
  std::string_view value;

  LeaseRef lease() const { return LeaseRef{partition, offset, lease_id}; }
};

struct FetchResult {
  std::vector<Delivery> deliveries;
  std::vector<std::shared_ptr<const void>> storage;  // keeps the bytes behind the views alive
};

struct AckBatchResult {
  size_t acked = 0;  // leases acked now or already done
  // Indexes into the request of leases that were lost: the record was redelivered under a newer
  // lease, or the group was seeked past it. Their records were not acked by this call.
  std::vector<size_t> lost;
};

struct ExtendLeasesResult {
  size_t extended = 0;  // leases that run until their new expiry
  // Indexes into the request of leases that were not extended: the record was acked, nacked,
  // dead-lettered or redelivered under a newer lease, its lease expired, or the group seeked.
  std::vector<size_t> lost;
  // Per request index: the new expiry (wall clock, an estimate as for Delivery); 0 if lost.
  std::vector<int64_t> lease_expires_at_micros;
};

struct NackOptions {
  int64_t delay_ms = 0;     // redeliver after this long (0 = at once); 0..max_nack_delay_ms
  bool permanent = false;   // dead-letter now, whatever the attempt count
  std::string_view reason;  // stored as the dead letter's last error / reason
};

// Where to move a group's position.
struct SeekTarget {
  enum class Kind : uint8_t { kEarliest, kLatest, kOffset, kTime };
  Kind kind = Kind::kOffset;
  uint64_t offset = 0;                // kOffset (clamped into [start, end] of the partition)
  int64_t time_micros = 0;            // kTime: Log::OffsetForTime
  std::optional<uint32_t> partition;  // one partition, or all when empty
};

struct MemberDescription {
  std::string member;
  std::vector<uint32_t> partitions;
  uint32_t in_flight = 0;
  int64_t idle_ms = 0;  // since the last call that kept it alive
};

struct PartitionDescription {
  uint32_t partition = 0;
  uint64_t committed = 0;   // every record below is done (acked or dead-lettered)
  uint64_t end_offset = 0;  // the Log's end offset
  uint64_t lag = 0;         // end_offset - max(committed, log start offset)
  uint32_t in_flight = 0;   // leased now
  uint32_t pending = 0;     // read and not yet committed (see max_pending_per_partition)
  uint32_t delayed = 0;     // waiting for a nack delay
  uint32_t acked_above_committed = 0;
  uint32_t dead_letter_pending = 0;  // waiting to be appended to the dead-letter topic
  std::string member;                // assigned member, empty if none
  std::string last_error;            // the last read or dead-letter error on this partition, if any
  // Records of this partition the group will never deliver because the log lost them, counted
  // since ConsumerGroups::Open (each case is also reported through
  // ConsumerGroupsOptions::on_damage):
  // damaged_skipped: reads met a damaged range (DATA_LOSS) and the group skipped it;
  uint64_t damaged_skipped = 0;
  // lost_beyond_end: at Open the committed offset was beyond the log's end (the log lost its
  // tail: damage, or a machine crash under interval/none durability after the records were
  // acked); the committed offset was moved back to the end so new records are delivered.
  uint64_t lost_beyond_end = 0;
};

struct GroupDescription {
  std::string topic;
  std::string group;
  GroupOptions options;
  uint64_t generation = 0;
  std::vector<MemberDescription> members;  // sorted by id
  std::vector<PartitionDescription> partitions;
  std::string dead_letter_topic;
  uint64_t dead_letters = 0;           // records in the dead-letter topic
  uint64_t dead_letters_replayed = 0;  // of which replayed
  uint64_t total_lag = 0;
};

struct DeadLetter {
  uint64_t dead_letter_offset = 0;  // position in the dead-letter topic (partition 0)
  std::string topic;                // original coordinates
  uint32_t partition = 0;
  uint64_t offset = 0;
  uint32_t delivery_count = 0;
  std::string reason;                   // "max deliveries (5) exceeded" or "rejected: <reason>"
  std::string last_error;               // the last nack reason, if any
  int64_t dead_lettered_at_micros = 0;  // wall clock
  bool permanent = false;               // dead-lettered directly by a consumer
  bool replayed = false;
  // The original record.
  std::string id;
  std::string key;
  std::string value;
  int64_t timestamp_micros = 0;
};

struct DeadLetterPage {
  std::vector<DeadLetter> dead_letters;
  uint64_t next_offset = 0;  // pass as `from_offset` to continue
  uint64_t end_offset = 0;   // end of the dead-letter topic
};

struct ReplayOptions {
  uint64_t from_offset = 0;         // dead-letter offsets [from_offset, to_offset)
  uint64_t to_offset = UINT64_MAX;  // clamped to the end of the dead-letter topic
  uint32_t max_records = 1000;      // at most this many replayed per call
  // Empty: the group's topic, to the original partition. Otherwise appended by key.
  std::string target_topic;
  bool include_replayed = false;  // replay again dead letters already marked replayed
};

struct ReplayResult {
  uint64_t replayed = 0;  // appended by this call
  // Found already in the target topic by the Log's idempotent publish (a replay retried after
  // it appended but before it marked them): marked replayed, not appended again.
  uint64_t deduplicated = 0;
  uint64_t skipped_already_replayed = 0;
  uint64_t next_offset = 0;  // where a following call continues
};

// The checks ConsumerGroups::Open (options) and CreateGroup (group options) apply, for
// callers that refuse bad settings before that (e.g. a configuration at start).
// InvalidArgument names the field and its range.
Status ValidateConsumerGroupsOptions(const ConsumerGroupsOptions& options);
Status ValidateGroupOptions(const GroupOptions& options);

class ConsumerGroups {
 public:
  virtual ~ConsumerGroups() = default;

  // Opens (recovering the state in options.dir). `env` and `log` must outlive the object.
  // Groups whose topic no longer exists are kept (and reported by DescribeGroup as NotFound
  // errors of the topic) until deleted. Errors: InvalidArgument (bad options),
  // FailedPrecondition (another instance holds options.dir), DataLoss (a state snapshot is
  // corrupt; nothing is guessed), Internal (I/O).
  static Result<std::unique_ptr<ConsumerGroups>> Open(Env& env, Log& log,
                                                      const ConsumerGroupsOptions& options);

  // Creates a group on `topic` and its dead-letter topic. Group names: 1..64 chars of
  // [A-Za-z0-9_-]. OK when durable; journal-first (the group exists only once the journal
  // holds it). NotFound (no such topic), AlreadyExists (group exists), InvalidArgument (bad
  // name or options), ResourceExhausted (max_groups), Internal (I/O: no group; the dead-letter
  // topic may have been created).
  virtual Status CreateGroup(const std::string& topic, const std::string& group,
                             const GroupOptions& options) = 0;

  // Deletes the group's state. If its dead-letter topic holds dead letters not yet replayed,
  // FailedPrecondition unless `force`; with force the dead-letter topic is deleted too (a
  // custom dead_letter_topic is never deleted). NotFound if no such group. Journal-first: on
  // Internal (the journal cannot be written) the group is untouched; the dead-letter topic is
  // deleted only after the deletion is durable (if that fails, the error says so and the group
  // stays deleted).
  virtual Status DeleteGroup(const std::string& topic, const std::string& group,
                             bool force = false) = 0;

  // Group names on `topic`, sorted (empty if none).
  virtual std::vector<std::string> ListGroups(const std::string& topic) = 0;

  // Adds or refreshes `member` (1..128 chars of [A-Za-z0-9._:@-]) and returns its assignment.
  // NotFound (no group), InvalidArgument (bad id), ResourceExhausted (max_members).
  virtual Result<Assignment> Join(const std::string& topic, const std::string& group,
                                  const std::string& member) = 0;
  // Removes a member and releases its leases for immediate redelivery. OK if it was not a
  // member. NotFound (no group).
  virtual Status Leave(const std::string& topic, const std::string& group,
                       const std::string& member) = 0;
  // Removes a member whose consumer is gone without settling its leases (its connection
  // closed, it crashed): like a session expiry, now. Its leases end as failed attempts (last
  // error `why` where they have none): each is redelivered at once, or dead-lettered if it was
  // its max_deliveries-th delivery; the group rebalances. OK if it was not a member. NotFound
  // (no group).
  virtual Status Abandon(const std::string& topic, const std::string& group,
                         const std::string& member, std::string_view why) = 0;
  // Keeps a member alive; returns its current assignment. FailedPrecondition if it is not a
  // member (never joined, left or expired): call Join. NotFound (no group).
  virtual Result<Assignment> Heartbeat(const std::string& topic, const std::string& group,
                                       const std::string& member) = 0;

  // Leases up to `max_records` records (at least 1; clamped to fetch_max_records) of at most
  // about `max_bytes` (id + key + value; at least one record is returned if any is ready) from
  // the member's partitions, within the in-flight bounds. Returns an empty result when nothing
  // is ready. Keeps the member alive. FailedPrecondition (not a member: call Join), NotFound (no
  // group), InvalidArgument (max_records == 0). A Log read error on one partition is reported
  // by DescribeGroup and skipped; it fails the call only if no record could be returned.
  virtual Result<FetchResult> Fetch(const std::string& topic, const std::string& group,
                                    const std::string& member, uint32_t max_records,
                                    uint64_t max_bytes) = 0;

  // Acks one lease: the record is done. OK if acked now or already done (acked, dead-lettered
  // or committed). FailedPrecondition if the lease was lost (the record was leased again or the
  // group seeked). NotFound (no group), InvalidArgument (no such partition). Durability: see
  // CommitMode; in kSync mode a commit the journal refused changes nothing (Unavailable for a
  // full disk, else Internal).
  // `member` is kept alive if it is one; any member may ack any lease it was given.
  virtual Status Ack(const std::string& topic, const std::string& group, const std::string& member,
                     const LeaseRef& lease) = 0;
  // Acks many leases with one commit. Lost leases are listed, not errors. InvalidArgument
  // (more than ack_max_leases, or a bad partition: then nothing is acked).
  virtual Result<AckBatchResult> AckBatch(const std::string& topic, const std::string& group,
                                          const std::string& member,
                                          std::span<const LeaseRef> leases) = 0;
  // AckBatch without waiting for the journal's sync: `done` is called exactly once with what
  // AckBatch would return. A refused batch (no group, a bad partition, too many leases) and,
  // in kPeriodic mode, every batch is answered on the calling thread before AckBatchAsync
  // returns; in kSync mode an accepted batch is answered once the commit holding it is durable,
  // on the thread that synced it (a ConsumerGroupsOptions::background task, or without one
  // the calling thread). No thread waits per pending batch: batches acked while a sync runs
  // share the next one. `done` must be quick, must not block and must not call back into
  // ConsumerGroups; `leases` must stay valid until it is called.
  using AckBatchDone = std::function<void(Result<AckBatchResult>)>;
  virtual void AckBatchAsync(const std::string& topic, const std::string& group,
                             const std::string& member, std::span<const LeaseRef> leases,
                             AckBatchDone done) {
    done(AckBatch(topic, group, member, leases));
  }

  // Extends leases still held: each runs `lease_ms` (1..24 h) from now instead of until its
  // old expiry, so a consumer whose handler needs longer than the group's lease keeps the
  // record (it is not redelivered meanwhile). A lease that already ended (acked, nacked, expired,
  // superseded, seeked) is listed in `lost`; extending never revives one. Not journaled (leases
  // never are): after a restart every lease is gone anyway. `member` is kept alive if it is one.
  // NotFound (no group), InvalidArgument (lease_ms out of range, more than ack_max_leases
  // leases, a bad partition: then nothing is extended). The default implementation, for
  // backends without lease extension: FailedPrecondition.
  virtual Result<ExtendLeasesResult> ExtendLeases(const std::string& topic,
                                                  const std::string& group,
                                                  const std::string& member,
                                                  std::span<const LeaseRef> leases,
                                                  int64_t lease_ms);

  // Ends a lease without success. Not permanent: the record is redelivered after delay_ms, or
  // dead-lettered if this was its max_deliveries-th delivery. Permanent: dead-lettered now
  // (reason "rejected: <reason>"). OK when done; the dead-letter append (if any) is synchronous:
  // if it fails, its error is returned and the record stays pending (retried by the group).
  // In kSync mode a dead-lettered record is committed journal-first: if the journal cannot be
  // written, Internal, and the record stays pending (uncommitted) like after a failed append.
  // FailedPrecondition (lease lost), InvalidArgument (delay out of range, bad partition),
  // NotFound (no group).
  virtual Status Nack(const std::string& topic, const std::string& group, const std::string& member,
                      const LeaseRef& lease, const NackOptions& options) = 0;

  // Moves the group's position: drops every lease, delay and pending record of the affected
  // partitions (their acks become lost) and sets the committed offset to the target. OK when
  // durable. Journal-first: on Internal nothing moved or was dropped. NotFound (no group or
  // topic), InvalidArgument (bad partition), Internal.
  virtual Status Seek(const std::string& topic, const std::string& group,
                      const SeekTarget& target) = 0;

  // Members, per-partition committed / end / lag / in-flight, and dead-letter counts.
  // NotFound (no group, or its topic was deleted).
  virtual Result<GroupDescription> DescribeGroup(const std::string& topic,
                                                 const std::string& group) = 0;

  // Dead letters at offsets >= from_offset, at most max (clamped to list_max_records).
  // NotFound (no group), DataLoss (a dead letter could not be decoded: its offset is named).
  virtual Result<DeadLetterPage> ListDeadLetters(const std::string& topic, const std::string& group,
                                                 uint64_t from_offset, uint32_t max) = 0;

  // Appends dead letters again (original id is not reused: the record id is
  // "replay.<group>.<dead-letter offset>" so a retried replay is deduplicated by the Log's
  // idempotent publish) and marks them replayed, durably. With include_replayed, a dead letter
  // already marked replayed is appended again under a fresh id
  // ("replay.<group>.<dead-letter offset>.<random hex>"): every such call adds a copy. Stops at the
  // first error, returning it; what was replayed and marked before stays so. One call examines at
  // most 10 x replay_max_records dead letters; next_offset says where to continue. NotFound (no
  // group or target topic), ResourceExhausted (too many replayed ranges), errors of Log::Append,
  // Internal (the marks could not be written: journal-first, nothing of this call is marked;
  // the events it appended are found by a retry, which counts them as deduplicated).
  virtual Result<ReplayResult> ReplayDeadLetters(const std::string& topic, const std::string& group,
                                                 const ReplayOptions& options) = 0;

  // Registers `fn`, run when the group may have records ready (see the file comment). `fn`
  // runs on the thread that caused the change (an appender, an acker, the executor): it must be
  // quick, must not block and must not call back into ConsumerGroups or the Log. Unregistered
  // when the handle is destroyed (which must happen before the ConsumerGroups is destroyed, and
  // not from inside `fn`). NotFound (no group), ResourceExhausted (max_ready_watches).
  class ReadyWatch {
   public:
    virtual ~ReadyWatch() = default;
  };
  virtual Result<std::unique_ptr<ReadyWatch>> WatchReady(const std::string& topic,
                                                         const std::string& group,
                                                         std::function<void()> fn) = 0;

  // Like WatchReady, for a caller that waits on behalf of many members (the HTTP server's long
  // polls and streams): `fn(member)` names the member whose Fetch may find something new — a
  // record appended, acked past or released in a partition it owns, a lease it held ended, or
  // partitions newly assigned to it — or is empty when any member's may (a nack, a seek, an
  // abandoned member, the group deleted). So a member that owns no partition is not told about
  // records it cannot fetch, and one change does not wake every waiting member. A call may name
  // several members, one `fn` call each. The same rules for `fn` and the handle as WatchReady.
  // The default tells every change as "" (any member).
  virtual Result<std::unique_ptr<ReadyWatch>> WatchReadyByMember(
      const std::string& topic, const std::string& group,
      std::function<void(std::string_view member)> fn) {
    return WatchReady(topic, group, [fn = std::move(fn)] { fn(std::string_view()); });
  }

  // The Env monotonic time (ns) at which the group's next lease expiry, nack delay or
  // dead-letter retry falls due; nullopt if none. NotFound (no group).
  virtual Result<std::optional<int64_t>> NextDueMonotonicNanos(const std::string& topic,
                                                               const std::string& group) = 0;

  // Applies due expiries (leases, sessions, delays), retries pending dead-letter appends,
  // notifies watchers of records that became ready, and makes a periodic commit if due.
  // Returns the first error met (the rest still runs).
  virtual Status Tick() = 0;

  // Makes every ack so far durable. Unavailable when the disk refused the write (retry later),
  // Internal on another I/O failure.
  virtual Status Flush() = 0;
  // Whether the journal writes. After a failed flush this flushes again (a write that probes
  // the disk): OK once it succeeds, else Unavailable naming the error. For readiness checks.
  virtual Status JournalHealth() { return Status::Ok(); }
};

// The per-group operations of ConsumerGroups (Join through NextDueMonotonicNanos, and Tick),
// declared `override`: written once for the classes that implement them all, the groups
// module's own and the cluster's router (server/cluster_groups.h), so an operation added to
// the interface is declared for both here. The interface above documents them.
#define CONVERGE_CONSUMER_GROUP_OPERATIONS_OVERRIDE                                                \
  Result<Assignment> Join(const std::string& topic, const std::string& group,                      \
                          const std::string& member) override;                                     \
  Status Leave(const std::string& topic, const std::string& group,                                 \
               const std::string& member) override;                                                \
  Status Abandon(const std::string& topic, const std::string& group, const std::string& member,    \
                 std::string_view why) override;                                                   \
  Result<Assignment> Heartbeat(const std::string& topic, const std::string& group,                 \
                               const std::string& member) override;                                \
  Result<FetchResult> Fetch(const std::string& topic, const std::string& group,                    \
                            const std::string& member, uint32_t max_records,                       \
                            uint64_t max_bytes) override;                                          \
  Status Ack(const std::string& topic, const std::string& group, const std::string& member,        \
             const LeaseRef& lease) override;                                                      \
  Result<AckBatchResult> AckBatch(const std::string& topic, const std::string& group,              \
                                  const std::string& member,                                       \
                                  std::span<const LeaseRef> leases) override;                      \
  void AckBatchAsync(const std::string& topic, const std::string& group,                           \
                     const std::string& member, std::span<const LeaseRef> leases,                  \
                     AckBatchDone done) override;                                                  \
  Result<ExtendLeasesResult> ExtendLeases(const std::string& topic, const std::string& group,      \
                                          const std::string& member,                               \
                                          std::span<const LeaseRef> leases,                        \
                                          int64_t lease_ms) override;                              \
  Status Nack(const std::string& topic, const std::string& group, const std::string& member,       \
              const LeaseRef& lease, const NackOptions& options) override;                         \
  Status Seek(const std::string& topic, const std::string& group,                                  \
              const SeekTarget& target) override;                                                  \
  Result<GroupDescription> DescribeGroup(const std::string& topic,                                 \
                                         const std::string& group) override;                       \
  Result<DeadLetterPage> ListDeadLetters(const std::string& topic, const std::string& group,       \
                                         uint64_t from_offset, uint32_t max) override;             \
  Result<ReplayResult> ReplayDeadLetters(const std::string& topic, const std::string& group,       \
                                         const ReplayOptions& options) override;                   \
  Result<std::unique_ptr<ReadyWatch>> WatchReady(const std::string& topic,                         \
                                                 const std::string& group,                         \
                                                 std::function<void()> fn) override;               \
  Result<std::unique_ptr<ReadyWatch>> WatchReadyByMember(                                          \
      const std::string& topic, const std::string& group,                                          \
      std::function<void(std::string_view member)> fn) override;                                   \
  Result<std::optional<int64_t>> NextDueMonotonicNanos(const std::string& topic,                   \
                                                       const std::string& group) override;         \
  Status Tick() override;

// The default dead-letter topic of a group: "_dlq.<topic>.<group>" when that fits the Log's
// 200-character topic names. Longer (a topic name over 129 characters with a long group name)
// it is "_dlq-<16 hex digits>.<first characters of topic>.<group>" cut to 200 characters, where
// the hex digits are the FNV-1a 64-bit hash of "<topic>\0<group>": one name per (topic,
// group) pair, the same on every run, and never the default name of another pair (those
// start with "_dlq.").
std::string DefaultDeadLetterTopic(std::string_view topic, std::string_view group);

}  // namespace converge
