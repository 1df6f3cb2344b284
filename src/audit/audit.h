// End-to-end audit of the log: finds acknowledged events that readers cannot read (missing),
// events read more than once (duplicates) and events found at another position than the one
// acknowledged (out of order), whatever backend holds the log. docs/formats/audit.md is the
// reference.
//
// A producer (the sidecar) stamps each event it appends with its producer id and a sequence
// number (two CloudEvents extension attributes, Stamp below) and, once the log acknowledges
// the append, records (topic, partition, offset, seq) in an AckJournal. The Auditor then reads
// each partition through the Log interface from the oldest acknowledged offset it tracks and
// compares what it reads with what was acknowledged.
//
// Nothing here uses threads or sleeps: AuditService schedules runs on the Env's executor.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "converge/env.h"
#include "converge/event.h"
#include "converge/log.h"
#include "converge/status.h"

namespace converge::internal::record_log {
class Writer;
}  // namespace converge::internal::record_log

namespace converge::audit {

// The extension attributes of a stamped event.
inline constexpr std::string_view kProducerAttribute = "convergeproducer";
inline constexpr std::string_view kSeqAttribute = "convergeseq";

struct Stamp {
  std::string producer;
  uint64_t seq = 0;
};

// Sets the two attributes on `event` (seq as a decimal String: Integer extensions are 32-bit).
void StampEvent(Event* event, std::string_view producer, uint64_t seq);
// How stamping and ReadStamp decode a record: any size and depth (the log's limits decide),
// the JSON data not parsed (a stamp changes only the attributes). The same on both sides, so
// every record stamped can be read back.
DecodeOptions StampDecodeOptions();
// The stamp of a stored record (an encoded CloudEvent), or nullopt when it has none or the
// record does not decode.
std::optional<Stamp> ReadStamp(std::string_view record_value);

// The journal's key of an acknowledged record that is not a CloudEvent and so carries no stamp
// (a consumer group's dead letter, a relay's dead-letter row): its record id's fingerprint,
// the top bit set and the low 63 bits of XXH3-64 (seed 0) of the id. Stamps' numbers stay below
// 2^63 (epoch < 2^23), so the two never meet. A record without an id has no key and is not
// audited.
inline constexpr uint64_t kIdKeyBit = uint64_t{1} << 63;
uint64_t IdKey(std::string_view record_id);
inline bool IsIdKey(uint64_t seq) { return (seq & kIdKeyBit) != 0; }

// The producer id kept in `dir`/producer (created with random bytes of the Env on first use).
Result<std::string> LoadOrCreateProducerId(Env& env, const std::string& dir);

// A number that grows with every call over the life of `dir` (`dir`/epoch, rewritten
// atomically): each start of the producer takes a new one, so sequence numbers assigned after
// a restart never repeat earlier ones (a repeat would look like a duplicate).
Result<uint64_t> NextEpoch(Env& env, const std::string& dir);

// Assigns sequence numbers per topic: (epoch << 40) + 1, + 2, ... Thread-safe. A number is
// taken before the append, so an append that fails, or that the log drops as a duplicate of
// an earlier id, leaves a gap; gaps are not findings (only acknowledged numbers are checked).
class Stamper {
 public:
  Stamper(std::string producer, uint64_t epoch) : producer_(std::move(producer)), epoch_(epoch) {}
  const std::string& producer() const { return producer_; }
  // The first of `n` consecutive numbers for `topic`.
  uint64_t Take(const std::string& topic, uint64_t n);

 private:
  const std::string producer_;
  const uint64_t epoch_;
  std::mutex mu_;
  std::map<std::string, uint64_t, std::less<>> next_;
};

// One acknowledged append of this producer.
struct Ack {
  std::string topic;
  uint32_t partition = 0;
  uint64_t offset = 0;
  uint64_t seq = 0;
};

// The acknowledged appends, in memory and in `dir`/acks (framed records). Record() writes
// without syncing; Sync() (each audit run) makes them durable. A crash of the process loses
// nothing written; a crash of the machine may lose acks written since the last Sync: those
// appends are then not checked (a false negative, never a false alarm, since an ack is only
// recorded after the log acknowledged the append). At most `max_tracked` acks are kept, a
// sliding window: a new ack past the bound makes room by dropping an old one, first the oldest
// ack an audit run verified (read at its acknowledged offset, in a partition's clean prefix,
// MarkVerified), else the oldest ack of the new ack's partition (else of the fullest one),
// counted in untracked() since it was never checked. New acks are always tracked.
// Thread-safe.
class AckJournal {
 public:
  static Result<std::unique_ptr<AckJournal>> Open(Env& env, const std::string& dir,
                                                  uint64_t max_tracked);
  ~AckJournal();

  // Records acknowledged appends. Returns the first write error (the acks stay in memory).
  Status Record(const std::vector<Ack>& acks);
  Status Sync();
  // Forgets the acks of `topic` partition `partition` below `offset` (expired by retention),
  // or every ack of the topic when `offset` is nullopt (the topic is gone). Rewrites the file
  // when at least half of what it holds was forgotten.
  Status Forget(const std::string& topic, std::optional<uint32_t> partition,
                std::optional<uint64_t> below);

  // topic -> partition -> offset -> seq. An offset holds more than one seq when the log
  // acknowledged an append at an offset it had acknowledged before (a backend that lost its
  // tail and reuses offsets): the earlier event is lost, and stays reported as missing.
  using Offsets = std::multimap<uint64_t, uint64_t>;
  using Tracked = std::map<std::string, std::map<uint32_t, Offsets>>;
  Tracked Snapshot() const;
  uint64_t tracked() const;
  uint64_t untracked() const;
  // The acks of `topic` partition `partition` below offset `below` were all read where they
  // were acknowledged by a run that checked `checked` (that partition's acks in the run's
  // Snapshot): they may make room first. An ack recorded since at an offset below `below`
  // (not in `checked`) was not verified: the verified prefix stops before it.
  void MarkVerified(const std::string& topic, uint32_t partition, uint64_t below,
                    const Offsets& checked);
  // Acks dropped since the start to make room after a run verified them.
  uint64_t retired() const;

 private:
  AckJournal(Env& env, std::string path, uint64_t max_tracked);
  Status Rewrite();  // with mu_ held
  // Adds one ack; false if it is there already. With mu_ held (or before sharing).
  bool Insert(const std::string& topic, uint32_t partition, uint64_t offset, uint64_t seq);
  // Drops one ack to make room (see the class comment); `topic`/`partition`: the new ack's.
  // With mu_ held.
  void EvictOne(const std::string& topic, uint32_t partition);

  Env& env_;
  const std::string path_;
  const uint64_t max_tracked_;
  mutable std::mutex mu_;
  Tracked acks_;
  uint64_t count_ = 0;
  uint64_t in_file_ = 0;
  uint64_t untracked_ = 0;
  uint64_t retired_ = 0;
  // Per topic and partition: every ack below this offset was verified by the last run.
  std::map<std::string, std::map<uint32_t, uint64_t>> verified_below_;
  std::unique_ptr<internal::record_log::Writer> writer_;
};

enum class FindingKind : uint8_t { kMissing, kDuplicate, kOutOfOrder };
std::string_view FindingKindName(FindingKind k);  // "missing" | "duplicate" | "out_of_order"

struct Finding {
  FindingKind kind = FindingKind::kMissing;
  std::string topic;
  uint32_t partition = 0;
  uint64_t seq = 0;
  uint64_t acked_offset = 0;  // where the log acknowledged it
  // For a duplicate or an out-of-order event: an offset it was read at; else acked_offset.
  uint64_t found_offset = 0;
  bool operator==(const Finding&) const = default;
};

struct PartitionCounts {
  uint64_t missing = 0;
  uint64_t duplicates = 0;
  uint64_t out_of_order = 0;
};

struct AuditReport {
  int64_t run_wall_micros = 0;  // when the run finished (0: no run yet)
  uint64_t runs = 0;
  uint64_t checked = 0;           // acknowledged events checked by this run
  uint64_t records_read = 0;      // records this run read
  uint64_t expired = 0;           // acks dropped because retention removed them
  uint64_t untracked = 0;         // acks dropped unchecked (journal bound reached), in total
  std::vector<Finding> findings;  // this run's, at most max_findings
  uint64_t findings_total = 0;    // this run's, including those not listed
  // This run's counts per (topic, partition).
  std::map<std::pair<std::string, uint32_t>, PartitionCounts> counts;
  // Partitions that could not be read (no findings for them), and offsets reads did not get
  // past (stepped over; findings still made).
  std::vector<std::string> errors;
};

struct AuditorOptions {
  std::string producer;        // the stamps to check
  size_t max_findings = 1000;  // listed per report
  size_t read_batch_records = 1000;
  size_t read_batch_bytes = 4u << 20;
};

// Compares the journal with the log. Run() reads, for every tracked partition, from the oldest
// tracked offset to the end (a full check each run, so damage after an earlier clean run is
// found too). Not thread-safe: one run at a time (AuditService serializes).
class Auditor {
 public:
  Auditor(Env& env, Log& log, AckJournal& journal, AuditorOptions options)
      : env_(env), log_(log), journal_(journal), options_(std::move(options)) {}
  AuditReport Run();

 private:
  // Reads [oldest acked offset, end) of the partition and compares.
  void CheckPartition(const std::string& topic, uint32_t partition, uint64_t end,
                      const AckJournal::Offsets& acked, AuditReport* report);
  void Add(AuditReport* report, Finding f);

  Env& env_;
  Log& log_;
  AckJournal& journal_;
  AuditorOptions options_;
  uint64_t runs_ = 0;
};

// Runs an Auditor every `interval_ms` on the Env's executor and keeps the last report plus
// cumulative totals of distinct findings (each (kind, topic, partition, seq) counted once).
// Thread-safe.
class AuditService {
 public:
  AuditService(Env& env, Log& log, AckJournal& journal, AuditorOptions options,
               int64_t interval_ms);
  ~AuditService();  // Stop()
  void Start();
  // Cancels the next run and waits for a running one to end (never call it from a run).
  void Stop();
  // Runs now (on the calling thread), serialized with the scheduled runs.
  AuditReport RunNow();

  AuditReport last() const;
  // Distinct findings per (topic, partition) since the start.
  std::map<std::pair<std::string, uint32_t>, PartitionCounts> totals() const;
  uint64_t checked_total() const;

 private:
  void Tick();

  Env& env_;
  Auditor auditor_;
  AckJournal& journal_;
  const int64_t interval_ms_;
  std::mutex run_mu_;  // one run at a time
  mutable std::mutex mu_;
  std::condition_variable idle_;  // armed_ or ticking_ became false
  bool stopped_ = true;
  bool armed_ = false;    // a timer is scheduled (or fired and Tick has not taken it yet)
  bool ticking_ = false;  // Tick is running a scheduled run
  TimerId timer_ = 0;
  AuditReport last_;
  std::set<std::tuple<FindingKind, std::string, uint32_t, uint64_t>> seen_;
  std::map<std::pair<std::string, uint32_t>, PartitionCounts> totals_;
  uint64_t checked_total_ = 0;
};

}  // namespace converge::audit
