// SagaMachine: the saga orchestrator as a sans-IO state machine.
//
// Inputs: Start, OnReply (a participant's reply), Tick (the clock reached a timer), Cancel, timer
// changes, and Replay (records read back from the saga log after a restart) followed by Resume.
// Outputs (MachineOutput): framed log records, which must be durable before anything else
// happens; commands to send once they are; instances that reached a final state. The earliest
// timer is next_due(): the driver calls Tick when the clock reaches it.
//
// Event sourcing: an instance changes only by applying a record, in Apply. Handling an input
// builds the records that describe the transition, applies each one and appends it to the output.
// Replaying the durable records therefore rebuilds exactly the durable state; Resume then sends
// again the command each waiting instance had outstanding (participants deduplicate) and decides
// the next move of any instance whose last durable record left it between two steps.
//
// Decisions (file comment of converge/saga.h for the semantics):
// - forward: the first step not done gets an action; past the last, the saga completes;
// - a definitive refusal of an action at or before the pivot, or attempts exhausted (uncertain),
//   switches the saga to compensation;
// - backward: the highest step at or below the pivot that was (or may have been) applied gets a
//   compensation, or, for the pivot, a cancel (a fence: if it turns out applied, the saga goes
//   forward again); when none is left, the saga is compensated;
// - compensations, cancels and actions after the pivot are retried without a bound on attempts.
// Replies are accepted only for the instance's outstanding (step, kind) and an attempt no newer
// than the current one; a transient failure only from the current attempt while it is awaited.
// Every other reply is counted by reason and recorded in the instance's history.
// Commands retried without a bound (compensations, cancels, actions after the pivot) wait
// timeout_ms * 2^(attempt-1) for their reply, capped: a participant that is down gets a new
// command at a geometrically falling rate, not at every timeout.
//
// Thread-safety: none; the orchestrator serializes calls.
#pragma once

#include <algorithm>
#include <array>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include "converge/env.h"
#include "converge/saga.h"
#include "saga/records.h"

namespace converge::saga_internal {

struct Instance;

// A traceparent's text held in place (version 00 form: 55 characters), so that commands and
// instances carry one without an allocation each.
struct TraceText {
  std::array<char, 55> text{};
  bool set = false;
  // Keeps `t` if it is 55 characters (what StartTrace and ChildTraceparent write); else none.
  void Set(std::string_view t) {
    set = t.size() == text.size();
    if (set) std::copy(t.begin(), t.end(), text.begin());
  }
  bool empty() const { return !set; }
  std::string_view view() const {
    return set ? std::string_view(text.data(), text.size()) : std::string_view();
  }
};

struct OutCommand {
  std::string saga_id;
  std::shared_ptr<const SagaDefinition> def;
  std::shared_ptr<const std::string> data;
  uint32_t step = 0;
  SagaCommandKind kind = SagaCommandKind::kAction;
  uint32_t attempt = 0;
  bool retriable = false;
  std::string token;      // the reply token (ReplyToken); empty = none
  TraceText traceparent;  // the saga's trace id, this command's span id; empty = none
};

struct MachineOutput {
  std::string wal;  // framed records
  size_t records = 0;
  std::vector<OutCommand> commands;
  std::vector<SagaSummary> finished;
  std::vector<SagaStepOutcome> steps;  // steps settled (done or failed), for metrics
  void Clear() {
    wal.clear();
    records = 0;
    commands.clear();
    finished.clear();
    steps.clear();
  }
};

struct MachineOptions {
  uint32_t history_max_entries = 64;
  uint32_t finished_retain_max = 10'000;
  int64_t finished_retain_ms = 24LL * 3600 * 1000;
  uint32_t max_in_flight = 1'000'000;
  uint32_t max_data_bytes = 64 << 10;
  // Commands retried without a bound wait twice as long at each attempt, up to this.
  int64_t max_attempt_timeout_ms = 300'000;
  // Fill MachineOutput::steps (only someone listening pays for the outcomes).
  bool report_steps = false;
};

// Why a reply was not used (SagaOrchestratorStats and the saga's history name them).
enum class ReplyRejection : uint8_t {
  kStale = 0,        // not for the outstanding step/kind/attempt (late, duplicate) or finished
  kUnknownSaga = 1,  // no such saga
  kBadToken = 2,     // sagatoken missing or wrong: not from the command's participant
  kMalformed = 3,    // a saga reply whose attributes do not decode
};
inline constexpr size_t kReplyRejections = 4;
std::string_view ReplyRejectionName(ReplyRejection reason);

struct MachineStats {
  uint64_t started = 0;
  uint64_t completed = 0;
  uint64_t compensated = 0;
  uint64_t failed = 0;  // turned to compensation by a step failure or the deadline
  uint64_t replies = 0;
  uint64_t replies_ignored = 0;  // kStale + kUnknownSaga
  uint64_t timeouts = 0;
  uint64_t rejected[kReplyRejections] = {};
};

class SagaMachine {
 public:
  SagaMachine(Random& random, MachineOptions options);
  ~SagaMachine();
  SagaMachine(const SagaMachine&) = delete;
  SagaMachine& operator=(const SagaMachine&) = delete;

  // Registers a definition (a record when it is new). OK if identical to a registered one;
  // AlreadyExists if (name, version) is registered with other content; InvalidArgument if
  // invalid.
  Status AddDefinition(const SagaDefinition& def, int64_t now, MachineOutput* out);
  // version 0 = the latest. nullptr if unknown.
  std::shared_ptr<const SagaDefinition> FindDefinition(std::string_view name,
                                                       uint32_t version) const;
  std::vector<SagaDefinition> Definitions() const;

  // Starts an instance with request.id (which must be set). Returns the id; an existing id with
  // the same definition returns it unchanged. Errors as SagaOrchestrator::Start.
  Result<std::string> Start(const SagaStartRequest& request, int64_t now, MachineOutput* out);
  // True if the reply was accepted; a reply not used is counted and, for a known saga,
  // recorded in its history (RejectReply). The token is not checked here (ReplyAuthentic).
  bool OnReply(const SagaReply& reply, int64_t now, MachineOutput* out);
  // Whether the reply carries the token of the command it answers. False (with *why) if not.
  bool ReplyAuthentic(const SagaReply& reply, std::string* why) const;
  // Counts a reply that is not used and records it in the saga's history (a kReplyRejected
  // record) if the saga is known and the last history entry is not the same rejection. `step`
  // and `attempt` may be unknown (nullopt / 0).
  void RejectReply(std::string_view saga_id, std::optional<uint32_t> step, SagaCommandKind kind,
                   uint32_t attempt, ReplyRejection reason, std::string_view detail, int64_t now,
                   MachineOutput* out);
  // Makes sure a reply-token key exists (a kReplyKey record the first time). Call after Replay.
  void EnsureReplyKey(int64_t now, MachineOutput* out);
  // Fires the timers due at or before `now`; returns how many fired.
  size_t Tick(int64_t now, MachineOutput* out);
  Status Cancel(const std::string& id, std::string_view reason, int64_t now, MachineOutput* out);
  Status RescheduleTimer(const std::string& id, SagaTimerKind kind, int64_t due, int64_t now,
                         MachineOutput* out);
  Status CancelTimer(const std::string& id, SagaTimerKind kind, int64_t now, MachineOutput* out);

  // Applies a record read back from the log. DataLoss for a record that does not fit the state
  // (the caller reports it and goes on).
  Status Replay(const RecordView& record);
  // After the replay: resends outstanding commands and moves instances left between steps.
  void Resume(int64_t now, MachineOutput* out);
  // The whole retained state as records: kBaseBegin, definitions, a checkpoint per instance
  // (finished ones oldest first, then those in flight), kBaseEnd.
  void Snapshot(int64_t now, std::string* out) const;

  std::optional<int64_t> next_due() const;
  Result<SagaInfo> Describe(const std::string& id) const;
  std::vector<SagaSummary> List(const SagaListFilter& filter, int64_t now) const;
  std::vector<SagaTimerInfo> Timers(size_t limit) const;
  size_t in_flight() const { return in_flight_; }
  const MachineStats& stats() const { return stats_; }
  // For carrying the counters over to a machine rebuilt from the log.
  MachineStats& mutable_stats() { return stats_; }

 private:
  struct TimerKey {
    int64_t due;
    uint64_t serial;
    SagaTimerKind kind;
    Instance* inst;
    bool operator<(const TimerKey& o) const {
      if (due != o.due) return due < o.due;
      if (serial != o.serial) return serial < o.serial;
      return kind < o.kind;
    }
  };

  // Applies `r` to the state; `out` (may be null during replay) receives the record. `known` is
  // the record's instance when the caller has it (saves a lookup).
  Status Apply(const RecordView& r, MachineOutput* out, Instance* known = nullptr);
  // Emits and applies a record (it cannot fail for records the machine builds).
  void Emit(const RecordView& r, MachineOutput* out, Instance* known = nullptr);
  // Issues what comes next for an instance that is not waiting for anything.
  void Decide(Instance& inst, int64_t now, MachineOutput* out);
  void SendAttempt(Instance& inst, uint32_t step, SagaCommandKind kind, uint32_t attempt,
                   int64_t now, MachineOutput* out);
  void AddCommand(const Instance& inst, MachineOutput* out) const;
  // Adds the outcome of (step, kind), settled at `now`, to out->steps.
  void ReportStep(const Instance& inst, uint32_t step, SagaCommandKind kind, bool ok, int64_t now,
                  MachineOutput* out) const;
  void AttemptFailed(Instance& inst, const Status& status, int64_t now, MachineOutput* out);
  int64_t BackoffMicros(const SagaStepDefinition& step, uint32_t failed_attempt);
  // How long attempt `attempt` of (step, kind) waits for its reply.
  int64_t AttemptTimeoutMicros(const Instance& inst, uint32_t step, SagaCommandKind kind,
                               uint32_t attempt) const;
  bool PivotDone(const Instance& inst) const;
  void UpdateTimers(Instance& inst);
  void ClearTimers(Instance& inst);
  void Finish(Instance& inst, int64_t now, MachineOutput* out);
  void PruneFinished(int64_t now);
  void AddHistory(Instance& inst, int64_t time, std::string_view event, int32_t step,
                  uint32_t attempt, std::string_view detail);
  SagaSummary Summary(const Instance& inst) const;
  Status ApplyCheckpoint(std::string_view blob);
  void EncodeCheckpoint(const Instance& inst, std::string* out) const;
  Instance* Find(std::string_view id) const;

  // Lookups by string_view without building a std::string.
  struct IdHash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const { return std::hash<std::string_view>()(s); }
  };

  Random& random_;
  MachineOptions options_;
  // (name, version) -> definition; canonical JSON kept to compare re-registrations.
  std::map<std::pair<std::string, uint32_t>, std::shared_ptr<const SagaDefinition>> defs_;
  std::unordered_map<std::string, std::unique_ptr<Instance>, IdHash, std::equal_to<>> instances_;
  std::vector<Instance*> finished_fifo_;  // oldest first (a ring of pointers, compacted lazily)
  size_t finished_head_ = 0;
  size_t in_flight_ = 0;
  uint64_t next_serial_ = 1;
  std::set<TimerKey> timers_;
  MachineStats stats_;
  std::string reply_key_;  // of the reply tokens; empty until EnsureReplyKey or replayed
};

}  // namespace converge::saga_internal
