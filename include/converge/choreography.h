// Choreographed sagas: services react to each other's events, without an orchestrator. This
// helper gives them a correlation id carried from event to event, and a read-side view of each
// saga's state built from the events it sees.
//
// Correlation: every event of one saga carries the CloudEvents extension "correlationid" (the
// saga's id) and, except the first, "causationid" (the id of the event it reacts to). Follow()
// makes a reaction event that carries both.
//
// The view (ChoreographyTracker) knows the saga's shape from a ChoreographyDefinition: the event
// that starts it and, per step, the event types that say the step was done, failed or was
// compensated. The state is derived from the set of facts seen, so events may arrive in any
// order and any number of times:
//   completed     every step done and none failed
//   compensating  a step failed, and some done step (with a compensation) is not compensated
//   compensated   a step failed and every done step with a compensation was compensated
//   running       otherwise
// A saga in flight whose last event is older than the definition's stuck_after_ms is listed as
// stuck. Finished sagas are kept up to finished_retain_max (oldest dropped first).
//
// ChoreographyMonitor feeds a tracker from log topics (read from their start, so the view is
// rebuilt after a restart).
//
// Thread-safety: ChoreographyTracker is not synchronized (one thread, or the caller's lock);
// ChoreographyMonitor is thread-safe and owns its tracker.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <tuple>
#include <vector>

#include "converge/env.h"
#include "converge/event.h"
#include "converge/log.h"
#include "converge/status.h"

namespace converge {

inline constexpr std::string_view kCorrelationIdExtension = "correlationid";
inline constexpr std::string_view kCausationIdExtension = "causationid";

// Sets the saga's correlation id on `event`.
void SetCorrelationId(Event& event, std::string correlation_id);
// The correlation id of `event`, if it has one.
std::optional<std::string_view> CorrelationId(const Event& event);
// A new event reacting to `cause`: the given id, source and type, the cause's correlation id
// (or the cause's own id when it has none: the cause started the saga) and causationid =
// cause.id(). Data is left empty.
Event Follow(const Event& cause, std::string id, std::string source, std::string type);

struct ChoreographyStep {
  std::string name;
  std::string done;         // event type: the step was done
  std::string failed;       // event type: the step failed (empty = it cannot fail)
  std::string compensated;  // event type: the step was undone (empty = nothing to undo)
};

struct ChoreographyDefinition {
  std::string name;
  std::string start;  // event type that starts a saga (its correlation id, or its id if none)
  std::vector<ChoreographyStep> steps;  // 1..100
  int64_t stuck_after_ms = 10 * 60 * 1000;
  // InvalidArgument for an empty name, no steps, a step without a name or done type, or an
  // event type used twice.
  Status Validate() const;
};

enum class ChoreographyState : uint8_t { kRunning, kCompensating, kCompleted, kCompensated };
std::string_view ChoreographyStateName(ChoreographyState s);

struct ChoreographyStepView {
  std::string name;
  bool done = false;
  bool failed = false;
  bool compensated = false;
};

struct ChoreographyEventSeen {
  int64_t time_micros = 0;  // when the tracker saw it
  std::string id;
  std::string type;
  std::string source;
};

struct ChoreographyView {
  std::string correlation_id;
  std::string definition;
  ChoreographyState state = ChoreographyState::kRunning;
  bool stuck = false;
  int64_t started_micros = 0;
  int64_t updated_micros = 0;
  std::vector<ChoreographyStepView> steps;
  std::vector<ChoreographyEventSeen> history;  // the last history_max_entries, oldest first
};

struct ChoreographyOptions {
  uint32_t history_max_entries = 64;
  uint32_t finished_retain_max = 100'000;
  uint32_t max_in_flight = 1'000'000;  // sagas in flight tracked; beyond, new ones are dropped
};

class ChoreographyTracker {
 public:
  // `clock` (wall time of observations) must outlive the tracker.
  ChoreographyTracker(Clock& clock, ChoreographyOptions options = {});

  // InvalidArgument if invalid; AlreadyExists if a definition shares a name or an event type.
  Status AddDefinition(const ChoreographyDefinition& definition);

  // Takes one event into account. Returns true if it belongs to a tracked saga (its type is in a
  // definition and it has a correlation id, or it is a start event); duplicates (same event id
  // for the same saga) change nothing and return true.
  bool Observe(const Event& event);

  // NotFound if the saga is unknown (or no longer retained).
  Result<ChoreographyView> Describe(const std::string& correlation_id) const;
  // Newest first, at most `limit`; `state` filters when set; `stuck_only` keeps stuck ones.
  std::vector<ChoreographyView> List(std::optional<ChoreographyState> state, bool stuck_only,
                                     size_t limit) const;
  size_t in_flight() const;

 private:
  struct Saga;
  Clock& clock_;
  ChoreographyOptions options_;
  std::vector<ChoreographyDefinition> defs_;
  // event type -> (definition index, step index or -1 for start, kind 0 done/1 failed/2 comp)
  std::map<std::string, std::tuple<size_t, int, int>, std::less<>> by_type_;
  std::map<std::string, std::shared_ptr<Saga>, std::less<>> sagas_;
  std::vector<std::string> finished_;  // oldest first
  uint64_t next_serial_ = 1;
  ChoreographyView ViewOf(const Saga& s) const;
};

struct ChoreographyMonitorOptions {
  std::vector<std::string> topics;  // read from their start; events are CloudEvents binary
  ChoreographyOptions tracker;
  uint32_t read_max_records = 4096;
  Executor* executor = nullptr;  // null = the Env's
};

// Follows log topics and keeps a ChoreographyTracker up to date.
class ChoreographyMonitor {
 public:
  // `env` and `log` must outlive the monitor. NotFound if a topic does not exist.
  static Result<std::unique_ptr<ChoreographyMonitor>> Start(
      Env& env, Log& log, std::vector<ChoreographyDefinition> definitions,
      ChoreographyMonitorOptions options);
  virtual ~ChoreographyMonitor() = default;
  // Reads what is new on every topic now; returns the events observed.
  virtual Result<size_t> RunOnce() = 0;
  virtual Result<ChoreographyView> Describe(const std::string& correlation_id) = 0;
  virtual std::vector<ChoreographyView> List(std::optional<ChoreographyState> state,
                                             bool stuck_only, size_t limit) = 0;
  virtual void Close() = 0;
};

}  // namespace converge
