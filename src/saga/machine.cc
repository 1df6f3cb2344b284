#include "saga/machine.h"

#include <algorithm>
#include <cmath>

#include "saga/messages.h"

namespace converge::saga_internal {

struct StepProgress {
  SagaStepState state = SagaStepState::kPending;
  uint32_t attempts = 0;
};

struct HistoryItem {
  int64_t time = 0;
  std::string_view event;  // one of kHistoryEvents
  int32_t step = -1;
  uint32_t attempt = 0;
  std::string detail;
};

struct Instance {
  std::string id;
  std::shared_ptr<const SagaDefinition> def;  // null if its version is not registered
  std::string def_name;
  uint32_t version = 0;
  std::shared_ptr<const std::string> data;
  SagaState state = SagaState::kRunning;
  bool backward = false;
  uint32_t step = 0;
  SagaCommandKind kind = SagaCommandKind::kAction;
  uint32_t attempt = 0;
  bool in_progress = false;  // a command for (step, kind) was issued and is not settled
  bool awaiting = false;     // ... and its reply is awaited (otherwise: waiting to retry)
  int64_t timer_due = 0;     // step timeout (awaiting) or retry (not awaiting); 0 = none
  int64_t deadline_due = 0;  // 0 = none
  int64_t step_started = 0;  // first attempt of (step, kind)
  bool stuck = false;
  TraceText trace;  // the saga's traceparent (the start's); empty = none (older logs)
  std::string error;
  std::vector<StepProgress> steps;
  std::vector<HistoryItem> history;
  uint64_t history_dropped = 0;
  int64_t started = 0;
  int64_t updated = 0;
  int64_t finished = 0;
  uint64_t serial = 0;
  bool has_step_timer = false;
  bool has_deadline_timer = false;
  int64_t step_timer_due = 0;  // as keyed in the timer set
  SagaTimerKind step_timer_kind = SagaTimerKind::kStepTimeout;
  int64_t deadline_timer_due = 0;
};

namespace {

constexpr std::string_view kHistoryEvents[] = {
    "started",     "attempt",        "retry",       "step-done", "step-compensated",
    "step-fenced", "pivot-applied",  "step-failed", "abort",     "finished",
    "timer",       "reply-rejected", "unknown"};

std::string_view InternEvent(std::string_view e) {
  for (std::string_view k : kHistoryEvents) {
    if (k == e) return k;
  }
  return "unknown";
}

bool ValidId(std::string_view id) {
  if (id.empty() || id.size() > SagaLimits::kMaxIdBytes) return false;
  for (char c : id) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '-' || c == '_' || c == '.' || c == ':';
    if (!ok) return false;
  }
  return true;
}

std::string DefLabel(std::string_view name, uint32_t version) {
  return std::string(name) + " v" + std::to_string(version);
}

}  // namespace

std::string_view ReplyRejectionName(ReplyRejection reason) {
  switch (reason) {
    case ReplyRejection::kStale:
      return "stale";
    case ReplyRejection::kUnknownSaga:
      return "unknown_saga";
    case ReplyRejection::kBadToken:
      return "bad_token";
    case ReplyRejection::kMalformed:
      return "malformed";
  }
  return "unknown";
}

SagaMachine::SagaMachine(Random& random, MachineOptions options)
    : random_(random), options_(options) {}

SagaMachine::~SagaMachine() = default;

Instance* SagaMachine::Find(std::string_view id) const {
  auto it = instances_.find(id);
  return it == instances_.end() ? nullptr : it->second.get();
}

// ---------------------------------------------------------------------------------------
// Definitions

Status SagaMachine::AddDefinition(const SagaDefinition& def, int64_t now, MachineOutput* out) {
  CONVERGE_RETURN_IF_ERROR(def.Validate());
  auto key = std::make_pair(def.name, def.version);
  auto it = defs_.find(key);
  if (it != defs_.end()) {
    if (*it->second == def) return Status::Ok();
    return AlreadyExistsError("saga definition " + DefLabel(def.name, def.version) +
                              " is already registered with other content (register a new "
                              "version instead)");
  }
  auto shared = std::make_shared<const SagaDefinition>(def);
  defs_.emplace(key, shared);
  const std::string json = def.ToJson();
  RecordView r;
  r.type = RecordType::kDefinition;
  r.time_micros = now;
  r.a = json;
  AppendRecord(r, &out->wal);
  ++out->records;
  // Instances that were waiting for this version (replayed before it was known) resume.
  for (auto& [id, inst] : instances_) {
    if (inst->def != nullptr || inst->def_name != def.name || inst->version != def.version) {
      continue;
    }
    inst->def = shared;
    if (inst->steps.size() < def.steps.size()) inst->steps.resize(def.steps.size());
    inst->stuck = false;
    if (IsFinal(inst->state)) continue;
    if (inst->in_progress && inst->awaiting) {
      AddCommand(*inst, out);
    } else if (!inst->in_progress) {
      Decide(*inst, now, out);
    }
  }
  return Status::Ok();
}

std::shared_ptr<const SagaDefinition> SagaMachine::FindDefinition(std::string_view name,
                                                                  uint32_t version) const {
  if (version != 0) {
    auto it = defs_.find(std::make_pair(std::string(name), version));
    return it == defs_.end() ? nullptr : it->second;
  }
  auto it = defs_.upper_bound(std::make_pair(std::string(name), UINT32_MAX));
  if (it == defs_.begin()) return nullptr;
  --it;
  return it->first.first == name ? it->second : nullptr;
}

std::vector<SagaDefinition> SagaMachine::Definitions() const {
  std::vector<SagaDefinition> out;
  for (auto it = defs_.rbegin(); it != defs_.rend(); ++it) out.push_back(*it->second);
  // Names ascending, versions descending.
  std::stable_sort(out.begin(), out.end(), [](const SagaDefinition& a, const SagaDefinition& b) {
    return a.name < b.name;
  });
  return out;
}

// ---------------------------------------------------------------------------------------
// Inputs

Result<std::string> SagaMachine::Start(const SagaStartRequest& request, int64_t now,
                                       MachineOutput* out) {
  if (!ValidId(request.id)) {
    return InvalidArgumentError("saga id must have 1.." + std::to_string(SagaLimits::kMaxIdBytes) +
                                " characters of [A-Za-z0-9._:-]");
  }
  if (request.data.size() > options_.max_data_bytes) {
    return InvalidArgumentError("saga data has " + std::to_string(request.data.size()) +
                                " bytes, more than max_data_bytes (" +
                                std::to_string(options_.max_data_bytes) + ")");
  }
  if (Instance* existing = Find(request.id)) {
    if (existing->def_name == request.definition &&
        (request.version == 0 || request.version == existing->version)) {
      return request.id;
    }
    return AlreadyExistsError("saga '" + request.id + "' exists with definition " +
                              DefLabel(existing->def_name, existing->version));
  }
  std::shared_ptr<const SagaDefinition> def = FindDefinition(request.definition, request.version);
  if (def == nullptr) {
    return NotFoundError("no saga definition '" + request.definition + "'" +
                         (request.version ? " version " + std::to_string(request.version) : ""));
  }
  if (in_flight_ >= options_.max_in_flight) {
    return ResourceExhaustedError("max_in_flight (" + std::to_string(options_.max_in_flight) +
                                  ") sagas are running");
  }
  RecordView r;
  r.type = RecordType::kStarted;
  r.time_micros = now;
  r.saga_id = request.id;
  r.a = def->name;
  r.version = def->version;
  r.due_micros = def->deadline_ms > 0 ? now + def->deadline_ms * 1000 : 0;
  r.b = request.data;
  const std::string trace = StartTrace(request.traceparent, reply_key_, request.id, random_);
  r.trace = trace;
  Emit(r, out);
  ++stats_.started;
  Decide(*Find(request.id), now, out);
  return request.id;
}

bool SagaMachine::OnReply(const SagaReply& reply, int64_t now, MachineOutput* out) {
  ++stats_.replies;
  Instance* inst = Find(reply.saga_id);
  auto reject = [&](ReplyRejection reason, std::string detail) {
    RejectReply(reply.saga_id, reply.step, reply.kind, reply.attempt, reason, detail, now, out);
    return false;
  };
  if (inst == nullptr) return reject(ReplyRejection::kUnknownSaga, "no such saga");
  if (IsFinal(inst->state)) {
    return reject(ReplyRejection::kStale,
                  "late: the saga is " + std::string(SagaStateName(inst->state)));
  }
  if (inst->def == nullptr || !inst->in_progress || reply.step != inst->step ||
      reply.kind != inst->kind || reply.attempt == 0 || reply.attempt > inst->attempt) {
    std::string detail = "late or unexpected " + std::string(SagaCommandKindName(reply.kind)) +
                         " reply for step " + std::to_string(reply.step) + " attempt " +
                         std::to_string(reply.attempt);
    if (inst->in_progress) {
      detail += " (awaited: " + std::string(SagaCommandKindName(inst->kind)) + " of step " +
                std::to_string(inst->step) + ", attempts 1.." + std::to_string(inst->attempt) + ")";
    } else {
      detail += " (nothing awaited)";
    }
    return reject(ReplyRejection::kStale, detail);
  }
  const size_t pivot = inst->def->PivotIndex();
  const bool forever = inst->kind != SagaCommandKind::kAction || inst->step > pivot;
  if (reply.outcome == SagaReply::Outcome::kOk) {
    RecordView r;
    r.type = RecordType::kStepDone;
    r.time_micros = now;
    r.saga_id = inst->id;
    r.step = inst->step;
    r.kind = inst->kind;
    r.flag = reply.applied ? 1 : 0;
    Emit(r, out, inst);
    Decide(*inst, now, out);
    return true;
  }
  if (reply.outcome == SagaReply::Outcome::kFailed && !forever) {
    const std::string error = reply.status.ok() ? std::string("refused") : reply.status.ToString();
    RecordView r;
    r.type = RecordType::kStepFailed;
    r.time_micros = now;
    r.saga_id = inst->id;
    r.step = inst->step;
    r.flag = 1;  // definitive: the participant remembers the refusal
    r.a = error;
    Emit(r, out, inst);
    Decide(*inst, now, out);
    return true;
  }
  // A transient failure (or any failure of a step that is retried without a bound) counts for
  // the attempt being awaited only.
  if (reply.attempt != inst->attempt || !inst->awaiting) {
    return reject(
        ReplyRejection::kStale,
        "late failure reply for attempt " + std::to_string(reply.attempt) +
            (inst->awaiting ? " (attempt " + std::to_string(inst->attempt) + " is awaited)"
                            : " (waiting to retry)"));
  }
  Status status = reply.status.ok() ? UnavailableError("participant asked to retry") : reply.status;
  AttemptFailed(*inst, status, now, out);
  return true;
}

bool SagaMachine::ReplyAuthentic(const SagaReply& reply, std::string* why) const {
  if (reply_key_.empty()) return true;  // a read-only replay (tools): nothing to check
  if (reply.token.empty()) {
    *why = "reply without sagatoken (copy it from the command)";
    return false;
  }
  const std::string expected =
      ReplyToken(reply_key_, CommandEventId(reply.saga_id, reply.step, reply.kind, reply.attempt));
  if (!ReplyTokenMatches(expected, reply.token)) {
    *why = "sagatoken does not match the command of step " + std::to_string(reply.step) + " " +
           std::string(SagaCommandKindName(reply.kind)) + " attempt " +
           std::to_string(reply.attempt) + ": not from the participant the command went to";
    return false;
  }
  return true;
}

void SagaMachine::RejectReply(std::string_view saga_id, std::optional<uint32_t> step,
                              SagaCommandKind kind, uint32_t attempt, ReplyRejection reason,
                              std::string_view detail, int64_t now, MachineOutput* out) {
  ++stats_.rejected[static_cast<size_t>(reason)];
  if (reason == ReplyRejection::kStale || reason == ReplyRejection::kUnknownSaga) {
    ++stats_.replies_ignored;
  }
  Instance* inst = Find(saga_id);
  if (inst == nullptr) return;
  const std::string text = std::string(ReplyRejectionName(reason)) + ": " + std::string(detail);
  const int32_t hstep = step ? static_cast<int32_t>(*step) : -1;
  // A burst of identical rejections (a participant sending the same reply again and again)
  // is one history entry: it must not push the saga's real history out.
  if (!inst->history.empty()) {
    const HistoryItem& last = inst->history.back();
    if (last.event == "reply-rejected" && last.step == hstep && last.attempt == attempt &&
        last.detail == text) {
      return;
    }
  }
  RecordView r;
  r.type = RecordType::kReplyRejected;
  r.time_micros = now;
  r.saga_id = inst->id;
  r.step = step ? *step + 1 : 0;  // 0: unknown
  r.kind = kind;
  r.attempt = attempt;
  r.a = text;
  Emit(r, out, inst);
}

void SagaMachine::EnsureReplyKey(int64_t now, MachineOutput* out) {
  if (!reply_key_.empty()) return;
  std::string key(32, '\0');
  random_.FillSecret(std::span<uint8_t>(reinterpret_cast<uint8_t*>(key.data()), key.size()));
  RecordView r;
  r.type = RecordType::kReplyKey;
  r.time_micros = now;
  r.a = key;
  AppendRecord(r, &out->wal);
  ++out->records;
  reply_key_ = std::move(key);
}

size_t SagaMachine::Tick(int64_t now, MachineOutput* out) {
  size_t fired = 0;
  while (!timers_.empty() && timers_.begin()->due <= now) {
    const TimerKey key = *timers_.begin();
    Instance& inst = *key.inst;
    ++fired;
    switch (key.kind) {
      case SagaTimerKind::kStepTimeout: {
        ++stats_.timeouts;
        // The wait this attempt had (it grows for commands retried without a bound), not the
        // step's timeout_ms: the history must say how long the participant was given.
        const int64_t waited_ms =
            AttemptTimeoutMicros(inst, inst.step, inst.kind, inst.attempt) / 1000;
        AttemptFailed(inst,
                      DeadlineExceededError("no reply to attempt " + std::to_string(inst.attempt) +
                                            " within " + std::to_string(waited_ms) + " ms"),
                      now, out);
        break;
      }
      case SagaTimerKind::kRetry:
        SendAttempt(inst, inst.step, inst.kind, inst.attempt + 1, now, out);
        break;
      case SagaTimerKind::kDeadline: {
        if (PivotDone(inst) || inst.backward) {
          RecordView r;
          r.type = RecordType::kTimer;
          r.time_micros = now;
          r.saga_id = inst.id;
          r.flag = static_cast<uint8_t>(SagaTimerKind::kDeadline);
          r.due_micros = 0;
          Emit(r, out, &inst);
        } else {
          RecordView r;
          r.type = RecordType::kAbort;
          r.time_micros = now;
          r.saga_id = inst.id;
          const std::string reason =
              "deadline of " + std::to_string(inst.def->deadline_ms) + " ms exceeded";
          r.a = reason;
          Emit(r, out, &inst);
          ++stats_.failed;
          Decide(inst, now, out);
        }
        break;
      }
    }
    // Every branch replaces or removes the timer that fired.
    CONVERGE_CHECK(timers_.empty() ||
                   !(timers_.begin()->serial == key.serial && timers_.begin()->kind == key.kind &&
                     timers_.begin()->due == key.due));
  }
  return fired;
}

Status SagaMachine::Cancel(const std::string& id, std::string_view reason, int64_t now,
                           MachineOutput* out) {
  Instance* inst = Find(id);
  if (inst == nullptr) return NotFoundError("no saga '" + id + "'");
  if (inst->state == SagaState::kCompensated || inst->backward) return Status::Ok();
  if (inst->state == SagaState::kCompleted) {
    return FailedPreconditionError("saga '" + id + "' has completed");
  }
  if (inst->def == nullptr) {
    return FailedPreconditionError("saga '" + id + "': definition " +
                                   DefLabel(inst->def_name, inst->version) + " is not registered");
  }
  if (PivotDone(*inst)) {
    return FailedPreconditionError("saga '" + id +
                                   "' is past its pivot step: it can only complete");
  }
  RecordView r;
  r.type = RecordType::kAbort;
  r.time_micros = now;
  r.saga_id = inst->id;
  const std::string text =
      reason.empty() ? std::string("cancelled") : "cancelled: " + std::string(reason);
  r.a = text;
  Emit(r, out, inst);
  Decide(*inst, now, out);
  return Status::Ok();
}

Status SagaMachine::RescheduleTimer(const std::string& id, SagaTimerKind kind, int64_t due,
                                    int64_t now, MachineOutput* out) {
  Instance* inst = Find(id);
  if (inst == nullptr || IsFinal(inst->state)) {
    return NotFoundError("no saga '" + id + "' in flight");
  }
  bool ok = false;
  switch (kind) {
    case SagaTimerKind::kStepTimeout:
      ok = inst->in_progress && inst->awaiting;
      break;
    case SagaTimerKind::kRetry:
      ok = inst->in_progress && !inst->awaiting;
      break;
    case SagaTimerKind::kDeadline:
      ok = inst->def != nullptr && !inst->backward && !PivotDone(*inst);
      break;
  }
  if (!ok) {
    return NotFoundError("saga '" + id + "' has no " + std::string(SagaTimerKindName(kind)) +
                         " timer");
  }
  RecordView r;
  r.type = RecordType::kTimer;
  r.time_micros = now;
  r.saga_id = inst->id;
  r.flag = static_cast<uint8_t>(kind);
  r.due_micros = std::max<int64_t>(due, 1);
  Emit(r, out, inst);
  return Status::Ok();
}

Status SagaMachine::CancelTimer(const std::string& id, SagaTimerKind kind, int64_t now,
                                MachineOutput* out) {
  Instance* inst = Find(id);
  if (inst == nullptr || IsFinal(inst->state)) {
    return NotFoundError("no saga '" + id + "' in flight");
  }
  bool ok = false;
  switch (kind) {
    case SagaTimerKind::kStepTimeout:
      ok = inst->in_progress && inst->awaiting && inst->timer_due != 0;
      break;
    case SagaTimerKind::kRetry:
      ok = inst->in_progress && !inst->awaiting && inst->timer_due != 0;
      break;
    case SagaTimerKind::kDeadline:
      ok = inst->deadline_due != 0;
      break;
  }
  if (!ok) {
    return NotFoundError("saga '" + id + "' has no " + std::string(SagaTimerKindName(kind)) +
                         " timer");
  }
  RecordView r;
  r.type = RecordType::kTimer;
  r.time_micros = now;
  r.saga_id = inst->id;
  r.flag = static_cast<uint8_t>(kind);
  r.due_micros = 0;
  Emit(r, out, inst);
  return Status::Ok();
}

// ---------------------------------------------------------------------------------------
// Decisions

bool SagaMachine::PivotDone(const Instance& inst) const {
  if (inst.def == nullptr) return false;
  const size_t p = inst.def->PivotIndex();
  return p < inst.steps.size() && inst.steps[p].state == SagaStepState::kDone;
}

void SagaMachine::Decide(Instance& inst, int64_t now, MachineOutput* out) {
  if (IsFinal(inst.state) || inst.def == nullptr || inst.in_progress) return;
  const size_t n = inst.def->steps.size();
  const size_t p = inst.def->PivotIndex();
  if (!inst.backward) {
    size_t i = inst.step;
    while (i < n && inst.steps[i].state == SagaStepState::kDone) ++i;
    if (i == n) {
      Finish(inst, now, out);
      return;
    }
    SendAttempt(inst, static_cast<uint32_t>(i), SagaCommandKind::kAction, 1, now, out);
    return;
  }
  int64_t j = std::min<int64_t>(inst.step, std::min<int64_t>(p, n - 1));
  for (; j >= 0; --j) {
    const SagaStepState st = inst.steps[j].state;
    if (st == SagaStepState::kActive || st == SagaStepState::kDone ||
        st == SagaStepState::kCompensating) {
      break;
    }
  }
  if (j < 0) {
    Finish(inst, now, out);
    return;
  }
  const bool is_pivot = static_cast<size_t>(j) == p;
  // Going back never starts once the pivot succeeded (Cancel and the deadline check it).
  CONVERGE_CHECK(!is_pivot || inst.steps[j].state != SagaStepState::kDone);
  SendAttempt(inst, static_cast<uint32_t>(j),
              is_pivot ? SagaCommandKind::kCancel : SagaCommandKind::kCompensate, 1, now, out);
}

void SagaMachine::SendAttempt(Instance& inst, uint32_t step, SagaCommandKind kind, uint32_t attempt,
                              int64_t now, MachineOutput* out) {
  RecordView r;
  r.type = RecordType::kAttempt;
  r.time_micros = now;
  r.saga_id = inst.id;
  r.step = step;
  r.kind = kind;
  r.attempt = attempt;
  r.due_micros = now + AttemptTimeoutMicros(inst, step, kind, attempt);
  Emit(r, out, &inst);
  AddCommand(inst, out);
}

int64_t SagaMachine::AttemptTimeoutMicros(const Instance& inst, uint32_t step, SagaCommandKind kind,
                                          uint32_t attempt) const {
  const int64_t base = inst.def->steps[step].timeout_ms;
  const bool forever = kind != SagaCommandKind::kAction || step > inst.def->PivotIndex();
  if (!forever) return base * 1000;  // bounded by the step's max_attempts and deadline_ms
  // Retried without a bound: a participant that does not answer (it is down, or its topic is
  // not consumed) gets a new command at a falling rate. When it comes back it answers the
  // outstanding command, which is accepted at once, so waiting longer costs nothing then.
  const int64_t cap = std::max(base, options_.max_attempt_timeout_ms);
  int64_t t = base;
  for (uint32_t i = 1; i < attempt && t < cap; ++i) t *= 2;
  return std::min(t, cap) * 1000;
}

void SagaMachine::AddCommand(const Instance& inst, MachineOutput* out) const {
  OutCommand c;
  c.saga_id = inst.id;
  c.def = inst.def;
  c.data = inst.data;
  c.step = inst.step;
  c.kind = inst.kind;
  c.attempt = inst.attempt;
  c.retriable = inst.kind == SagaCommandKind::kAction && inst.step > inst.def->PivotIndex();
  const std::string command_id = CommandEventId(inst.id, inst.step, inst.kind, inst.attempt);
  if (!reply_key_.empty()) c.token = ReplyToken(reply_key_, command_id);
  if (!inst.trace.empty()) ChildTraceparentInto(inst.trace.view(), command_id, &c.traceparent.text);
  c.traceparent.set = !inst.trace.empty();
  out->commands.push_back(std::move(c));
}

void SagaMachine::ReportStep(const Instance& inst, uint32_t step, SagaCommandKind kind, bool ok,
                             int64_t now, MachineOutput* out) const {
  if (!options_.report_steps) return;
  SagaStepOutcome o;
  o.definition = inst.def_name;
  if (inst.def != nullptr && step < inst.def->steps.size()) o.step = inst.def->steps[step].name;
  o.kind = kind;
  o.ok = ok;
  o.duration_micros = std::max<int64_t>(0, now - inst.step_started);
  out->steps.push_back(std::move(o));
}

int64_t SagaMachine::BackoffMicros(const SagaStepDefinition& step, uint32_t failed_attempt) {
  const RetryPolicy& p = step.retry;
  double cap =
      static_cast<double>(p.base_delay_ms) *
      std::pow(p.multiplier, static_cast<double>(failed_attempt > 0 ? failed_attempt - 1 : 0));
  if (!(cap < static_cast<double>(p.max_delay_ms))) cap = static_cast<double>(p.max_delay_ms);
  const auto cap_ms = static_cast<int64_t>(cap);
  return random_.UniformRange(0, cap_ms) * 1000;
}

void SagaMachine::AttemptFailed(Instance& inst, const Status& status, int64_t now,
                                MachineOutput* out) {
  const SagaStepDefinition& sd = inst.def->steps[inst.step];
  const bool forever = inst.kind != SagaCommandKind::kAction || inst.step > inst.def->PivotIndex();
  const int64_t delay = BackoffMicros(sd, inst.attempt);
  const bool exhausted = inst.attempt >= sd.retry.max_attempts ||
                         now + delay >= inst.step_started + sd.retry.deadline_ms * 1000;
  const std::string error = status.ToString();
  if (!forever && (exhausted || !sd.retry.IsRetryable(status))) {
    // The outcome is not known (an earlier attempt may still apply): the step is compensated
    // (or, for the pivot, fenced) like an applied one.
    RecordView r;
    r.type = RecordType::kStepFailed;
    r.time_micros = now;
    r.saga_id = inst.id;
    r.step = inst.step;
    r.flag = 0;
    r.a = error;
    Emit(r, out, &inst);
    Decide(inst, now, out);
    return;
  }
  RecordView r;
  r.type = RecordType::kBackoff;
  r.time_micros = now;
  r.saga_id = inst.id;
  r.step = inst.step;
  r.kind = inst.kind;
  r.attempt = inst.attempt;
  r.due_micros = now + delay;
  r.flag = forever && exhausted ? 1 : 0;
  r.a = error;
  Emit(r, out, &inst);
}

void SagaMachine::Finish(Instance& inst, int64_t now, MachineOutput* out) {
  RecordView r;
  r.type = RecordType::kFinished;
  r.time_micros = now;
  r.saga_id = inst.id;
  r.flag = static_cast<uint8_t>(inst.backward ? SagaState::kCompensated : SagaState::kCompleted);
  Emit(r, out, &inst);  // may erase `inst` (retention)
}

// ---------------------------------------------------------------------------------------
// Applying records

void SagaMachine::Emit(const RecordView& r, MachineOutput* out, Instance* known) {
  Status s = Apply(r, out, known);
  CONVERGE_CHECK_MSG(s.ok(), s.ToString());
}

void SagaMachine::AddHistory(Instance& inst, int64_t time, std::string_view event, int32_t step,
                             uint32_t attempt, std::string_view detail) {
  if (options_.history_max_entries == 0) {
    ++inst.history_dropped;
    return;
  }
  if (inst.history.size() >= options_.history_max_entries) {
    inst.history.erase(inst.history.begin());
    ++inst.history_dropped;
  }
  HistoryItem h;
  h.time = time;
  h.event = event;
  h.step = step;
  h.attempt = attempt;
  h.detail.assign(detail.data(), detail.size());
  inst.history.push_back(std::move(h));
}

void SagaMachine::ClearTimers(Instance& inst) {
  if (inst.has_step_timer) {
    timers_.erase(TimerKey{inst.step_timer_due, inst.serial, inst.step_timer_kind, &inst});
    inst.has_step_timer = false;
  }
  if (inst.has_deadline_timer) {
    timers_.erase(TimerKey{inst.deadline_timer_due, inst.serial, SagaTimerKind::kDeadline, &inst});
    inst.has_deadline_timer = false;
  }
}

void SagaMachine::UpdateTimers(Instance& inst) {
  const bool final = IsFinal(inst.state);
  const bool want_step = !final && inst.def != nullptr && inst.in_progress && inst.timer_due != 0;
  const SagaTimerKind step_kind =
      inst.awaiting ? SagaTimerKind::kStepTimeout : SagaTimerKind::kRetry;
  if (inst.has_step_timer &&
      (!want_step || inst.step_timer_due != inst.timer_due || inst.step_timer_kind != step_kind)) {
    timers_.erase(TimerKey{inst.step_timer_due, inst.serial, inst.step_timer_kind, &inst});
    inst.has_step_timer = false;
  }
  if (want_step && !inst.has_step_timer) {
    timers_.insert(TimerKey{inst.timer_due, inst.serial, step_kind, &inst});
    inst.has_step_timer = true;
    inst.step_timer_due = inst.timer_due;
    inst.step_timer_kind = step_kind;
  }
  const bool want_deadline = !final && inst.def != nullptr && inst.deadline_due != 0;
  if (inst.has_deadline_timer && (!want_deadline || inst.deadline_timer_due != inst.deadline_due)) {
    timers_.erase(TimerKey{inst.deadline_timer_due, inst.serial, SagaTimerKind::kDeadline, &inst});
    inst.has_deadline_timer = false;
  }
  if (want_deadline && !inst.has_deadline_timer) {
    timers_.insert(TimerKey{inst.deadline_due, inst.serial, SagaTimerKind::kDeadline, &inst});
    inst.has_deadline_timer = true;
    inst.deadline_timer_due = inst.deadline_due;
  }
}

Status SagaMachine::Apply(const RecordView& r, MachineOutput* out, Instance* known) {
  if (r.type == RecordType::kDefinition) {
    if (out != nullptr) return InternalError("definition records are written by AddDefinition");
    Result<SagaDefinition> def = ParseSagaDefinition(r.a);
    if (!def.ok()) return DataLossError("saga log: bad definition: " + def.status().ToString());
    auto key = std::make_pair(def->name, def->version);
    if (defs_.find(key) == defs_.end()) {
      defs_.emplace(key, std::make_shared<const SagaDefinition>(std::move(def).value()));
    }
    return Status::Ok();
  }
  if (r.type == RecordType::kBaseBegin || r.type == RecordType::kBaseEnd) return Status::Ok();
  if (r.type == RecordType::kReplyKey) {
    if (out != nullptr) return InternalError("the reply key is written by EnsureReplyKey");
    if (r.a.empty()) return DataLossError("saga log: empty reply key");
    reply_key_.assign(r.a.data(), r.a.size());
    return Status::Ok();
  }
  if (r.type == RecordType::kReplyRejected) {
    // History only: it changes nothing else (not even the time of the last change, which
    // idle_for_ms looks at), and may concern a finished saga.
    Instance* target = known != nullptr ? known : Find(r.saga_id);
    if (target == nullptr) return Status::Ok();  // pruned since: nothing to show it in
    if (out != nullptr) {
      AppendRecord(r, &out->wal);
      ++out->records;
    }
    AddHistory(*target, r.time_micros, "reply-rejected",
               r.step == 0 ? -1 : static_cast<int32_t>(r.step - 1), r.attempt, r.a);
    return Status::Ok();
  }
  if (r.type == RecordType::kCheckpoint) {
    if (out != nullptr) return InternalError("checkpoints are written by Snapshot");
    return ApplyCheckpoint(r.a);
  }
  if (r.type == RecordType::kStarted) {
    const std::string id(r.saga_id);
    if (Find(id) != nullptr) return DataLossError("saga log: saga '" + id + "' started twice");
    auto inst = std::make_unique<Instance>();
    inst->id = id;
    inst->def_name.assign(r.a.data(), r.a.size());
    inst->version = r.version;
    inst->def = FindDefinition(r.a, r.version);
    if (inst->def != nullptr) {
      inst->steps.resize(inst->def->steps.size());
    } else {
      inst->stuck = true;
    }
    inst->data = std::make_shared<const std::string>(r.b);
    inst->trace.Set(r.trace);
    inst->deadline_due = r.due_micros;
    inst->started = r.time_micros;
    inst->updated = r.time_micros;
    inst->serial = next_serial_++;
    Instance* raw = inst.get();
    instances_.emplace(id, std::move(inst));
    ++in_flight_;
    if (out != nullptr) {
      AppendRecord(r, &out->wal);
      ++out->records;
    }
    AddHistory(*raw, r.time_micros, "started", -1, 0, DefLabel(r.a, r.version));
    UpdateTimers(*raw);
    return Status::Ok();
  }
  Instance* inst_ptr = known != nullptr ? known : Find(r.saga_id);
  if (inst_ptr == nullptr) {
    return DataLossError("saga log: record for unknown saga '" + std::string(r.saga_id) + "'");
  }
  Instance& inst = *inst_ptr;
  if (IsFinal(inst.state)) {
    return DataLossError("saga log: record for finished saga '" + inst.id + "'");
  }
  if (out != nullptr) {
    AppendRecord(r, &out->wal);
    ++out->records;
  }
  inst.updated = r.time_micros;
  const bool step_record = r.type == RecordType::kAttempt || r.type == RecordType::kBackoff ||
                           r.type == RecordType::kStepDone || r.type == RecordType::kStepFailed;
  if (step_record && r.step >= inst.steps.size()) {
    if (r.step >= SagaLimits::kMaxSteps) return DataLossError("saga log: step out of range");
    inst.steps.resize(r.step + 1);
  }
  const auto step_i = static_cast<int32_t>(r.step);
  switch (r.type) {
    case RecordType::kAttempt: {
      if (inst.step != r.step || inst.kind != r.kind || r.attempt == 1) {
        inst.step_started = r.time_micros;
      }
      inst.step = r.step;
      inst.kind = r.kind;
      inst.attempt = r.attempt;
      inst.in_progress = true;
      inst.awaiting = true;
      inst.timer_due = r.due_micros;
      StepProgress& sp = inst.steps[r.step];
      ++sp.attempts;
      sp.state = r.kind == SagaCommandKind::kAction ? SagaStepState::kActive
                                                    : SagaStepState::kCompensating;
      AddHistory(inst, r.time_micros, "attempt", step_i, r.attempt, SagaCommandKindName(r.kind));
      break;
    }
    case RecordType::kBackoff:
      inst.step = r.step;
      inst.kind = r.kind;
      inst.attempt = r.attempt;
      inst.in_progress = true;
      inst.awaiting = false;
      inst.timer_due = r.due_micros;
      inst.stuck = r.flag != 0;
      inst.error.assign(r.a.data(), r.a.size());
      AddHistory(inst, r.time_micros, "retry", step_i, r.attempt, r.a);
      break;
    case RecordType::kStepDone: {
      if (out != nullptr) ReportStep(inst, r.step, r.kind, true, r.time_micros, out);
      inst.in_progress = false;
      inst.awaiting = false;
      inst.timer_due = 0;
      inst.stuck = false;
      StepProgress& sp = inst.steps[r.step];
      const bool applied = r.flag != 0;
      if (r.kind == SagaCommandKind::kAction) {
        sp.state = SagaStepState::kDone;
        if (inst.def != nullptr && r.step == inst.def->PivotIndex()) inst.deadline_due = 0;
        AddHistory(inst, r.time_micros, "step-done", step_i, 0, "");
      } else if (r.kind == SagaCommandKind::kCancel && applied) {
        // The fence found the pivot applied: the saga goes forward after all.
        sp.state = SagaStepState::kDone;
        inst.backward = false;
        inst.state = SagaState::kRunning;
        inst.deadline_due = 0;
        inst.error.clear();
        AddHistory(inst, r.time_micros, "pivot-applied", step_i, 0, "");
      } else {
        sp.state = SagaStepState::kCompensated;
        AddHistory(inst, r.time_micros, applied ? "step-compensated" : "step-fenced", step_i, 0,
                   "");
      }
      break;
    }
    case RecordType::kStepFailed:
      if (out != nullptr) {
        if (!inst.backward) ++stats_.failed;
        ReportStep(inst, r.step, SagaCommandKind::kAction, false, r.time_micros, out);
      }
      inst.steps[r.step].state = r.flag ? SagaStepState::kFailed : SagaStepState::kActive;
      inst.step = r.step;
      inst.in_progress = false;
      inst.awaiting = false;
      inst.timer_due = 0;
      inst.deadline_due = 0;
      inst.backward = true;
      inst.state = SagaState::kCompensating;
      inst.error.assign(r.a.data(), r.a.size());
      AddHistory(inst, r.time_micros, "step-failed", step_i, 0, r.a);
      break;
    case RecordType::kAbort:
      inst.in_progress = false;
      inst.awaiting = false;
      inst.timer_due = 0;
      inst.deadline_due = 0;
      inst.backward = true;
      inst.state = SagaState::kCompensating;
      inst.error.assign(r.a.data(), r.a.size());
      AddHistory(inst, r.time_micros, "abort", -1, 0, r.a);
      break;
    case RecordType::kTimer: {
      if (r.flag > static_cast<uint8_t>(SagaTimerKind::kDeadline)) {
        return DataLossError("saga log: bad timer kind");
      }
      const auto kind = static_cast<SagaTimerKind>(r.flag);
      if (kind == SagaTimerKind::kDeadline) {
        inst.deadline_due = r.due_micros;
      } else {
        inst.timer_due = r.due_micros;
      }
      AddHistory(inst, r.time_micros, "timer", -1, 0,
                 std::string(SagaTimerKindName(kind)) +
                     (r.due_micros ? " due " + std::to_string(r.due_micros) : " cancelled"));
      break;
    }
    case RecordType::kFinished: {
      if (r.flag != static_cast<uint8_t>(SagaState::kCompleted) &&
          r.flag != static_cast<uint8_t>(SagaState::kCompensated)) {
        return DataLossError("saga log: bad final state");
      }
      inst.state = static_cast<SagaState>(r.flag);
      inst.in_progress = false;
      inst.awaiting = false;
      inst.timer_due = 0;
      inst.deadline_due = 0;
      inst.stuck = false;
      inst.finished = r.time_micros;
      if (inst.state == SagaState::kCompleted && inst.def != nullptr) {
        inst.step = static_cast<uint32_t>(inst.def->steps.size());
      }
      AddHistory(inst, r.time_micros, "finished", -1, 0, SagaStateName(inst.state));
      ClearTimers(inst);
      --in_flight_;
      finished_fifo_.push_back(&inst);
      if (out != nullptr) {
        if (inst.state == SagaState::kCompleted) {
          ++stats_.completed;
        } else {
          ++stats_.compensated;
        }
        out->finished.push_back(Summary(inst));
      }
      PruneFinished(r.time_micros);
      return Status::Ok();
    }
    default:
      return DataLossError("saga log: unexpected record type");
  }
  UpdateTimers(inst);
  return Status::Ok();
}

void SagaMachine::PruneFinished(int64_t now) {
  const int64_t cutoff = now - options_.finished_retain_ms * 1000;
  while (finished_head_ < finished_fifo_.size()) {
    Instance* oldest = finished_fifo_[finished_head_];
    const size_t count = finished_fifo_.size() - finished_head_;
    if (count <= options_.finished_retain_max && oldest->finished >= cutoff) break;
    ++finished_head_;
    auto it = instances_.find(oldest->id);
    if (it != instances_.end()) instances_.erase(it);
  }
  if (finished_head_ > 1024 && finished_head_ * 2 > finished_fifo_.size()) {
    finished_fifo_.erase(finished_fifo_.begin(),
                         finished_fifo_.begin() + static_cast<ptrdiff_t>(finished_head_));
    finished_head_ = 0;
  }
}

// ---------------------------------------------------------------------------------------
// Recovery and snapshots

Status SagaMachine::Replay(const RecordView& record) { return Apply(record, nullptr); }

void SagaMachine::Resume(int64_t now, MachineOutput* out) {
  std::vector<Instance*> live;
  for (auto& [id, inst] : instances_) {
    if (!IsFinal(inst->state)) live.push_back(inst.get());
  }
  std::sort(live.begin(), live.end(),
            [](const Instance* a, const Instance* b) { return a->serial < b->serial; });
  for (Instance* inst : live) {
    if (inst->def == nullptr) {
      inst->stuck = true;
      continue;
    }
    if (inst->in_progress && inst->awaiting) {
      AddCommand(*inst, out);
    } else if (!inst->in_progress) {
      Decide(*inst, now, out);
    }
  }
}

void SagaMachine::EncodeCheckpoint(const Instance& inst, std::string* out) const {
  PutString(out, inst.id);
  PutString(out, inst.def_name);
  PutVarint(out, inst.version);
  PutString(out, inst.data ? *inst.data : std::string());
  out->push_back(static_cast<char>(inst.state));
  out->push_back(static_cast<char>(inst.backward));
  PutVarint(out, inst.step);
  out->push_back(static_cast<char>(inst.kind));
  PutVarint(out, inst.attempt);
  out->push_back(static_cast<char>(inst.in_progress));
  out->push_back(static_cast<char>(inst.awaiting));
  PutVarint(out, static_cast<uint64_t>(inst.timer_due));
  PutVarint(out, static_cast<uint64_t>(inst.deadline_due));
  PutVarint(out, static_cast<uint64_t>(inst.step_started));
  out->push_back(static_cast<char>(inst.stuck));
  PutString(out, inst.error);
  PutVarint(out, static_cast<uint64_t>(inst.started));
  PutVarint(out, static_cast<uint64_t>(inst.updated));
  PutVarint(out, static_cast<uint64_t>(inst.finished));
  PutVarint(out, inst.steps.size());
  for (const StepProgress& s : inst.steps) {
    out->push_back(static_cast<char>(s.state));
    PutVarint(out, s.attempts);
  }
  PutVarint(out, inst.history_dropped);
  PutVarint(out, inst.history.size());
  for (const HistoryItem& h : inst.history) {
    PutVarint(out, static_cast<uint64_t>(h.time));
    PutString(out, h.event);
    PutVarint(out, static_cast<uint64_t>(h.step + 1));
    PutVarint(out, h.attempt);
    PutString(out, h.detail);
  }
  // Optional and last: checkpoints written before it have none.
  if (!inst.trace.empty()) PutString(out, inst.trace.view());
}

Status SagaMachine::ApplyCheckpoint(std::string_view blob) {
  ByteReader in(blob);
  auto inst = std::make_unique<Instance>();
  std::string_view id, name, data, error;
  uint64_t version = 0, step = 0, attempt = 0, timer_due = 0, deadline_due = 0, step_started = 0,
           started = 0, updated = 0, finished = 0, n_steps = 0, dropped = 0, n_hist = 0;
  uint8_t state = 0, backward = 0, kind = 0, in_progress = 0, awaiting = 0, stuck = 0;
  bool ok = in.String(&id) && in.String(&name) && in.Varint(&version) && in.String(&data) &&
            in.U8(&state) && in.U8(&backward) && in.Varint(&step) && in.U8(&kind) &&
            in.Varint(&attempt) && in.U8(&in_progress) && in.U8(&awaiting) &&
            in.Varint(&timer_due) && in.Varint(&deadline_due) && in.Varint(&step_started) &&
            in.U8(&stuck) && in.String(&error) && in.Varint(&started) && in.Varint(&updated) &&
            in.Varint(&finished) && in.Varint(&n_steps);
  if (!ok || state > static_cast<uint8_t>(SagaState::kCompensated) ||
      kind > static_cast<uint8_t>(SagaCommandKind::kCancel) || n_steps > SagaLimits::kMaxSteps ||
      version > UINT32_MAX || step > SagaLimits::kMaxSteps || attempt > UINT32_MAX) {
    return DataLossError("saga log: malformed checkpoint");
  }
  inst->id.assign(id.data(), id.size());
  inst->def_name.assign(name.data(), name.size());
  inst->version = static_cast<uint32_t>(version);
  inst->data = std::make_shared<const std::string>(data);
  inst->state = static_cast<SagaState>(state);
  inst->backward = backward != 0;
  inst->step = static_cast<uint32_t>(step);
  inst->kind = static_cast<SagaCommandKind>(kind);
  inst->attempt = static_cast<uint32_t>(attempt);
  inst->in_progress = in_progress != 0;
  inst->awaiting = awaiting != 0;
  inst->timer_due = static_cast<int64_t>(timer_due);
  inst->deadline_due = static_cast<int64_t>(deadline_due);
  inst->step_started = static_cast<int64_t>(step_started);
  inst->stuck = stuck != 0;
  inst->error.assign(error.data(), error.size());
  inst->started = static_cast<int64_t>(started);
  inst->updated = static_cast<int64_t>(updated);
  inst->finished = static_cast<int64_t>(finished);
  inst->steps.resize(n_steps);
  for (StepProgress& s : inst->steps) {
    uint8_t st = 0;
    uint64_t attempts = 0;
    if (!in.U8(&st) || !in.Varint(&attempts) ||
        st > static_cast<uint8_t>(SagaStepState::kCompensated) || attempts > UINT32_MAX) {
      return DataLossError("saga log: malformed checkpoint steps");
    }
    s.state = static_cast<SagaStepState>(st);
    s.attempts = static_cast<uint32_t>(attempts);
  }
  if (!in.Varint(&dropped) || !in.Varint(&n_hist) || n_hist > 1'000'000) {
    return DataLossError("saga log: malformed checkpoint history");
  }
  inst->history_dropped = dropped;
  for (uint64_t i = 0; i < n_hist; ++i) {
    HistoryItem h;
    uint64_t time = 0, hstep = 0, hattempt = 0;
    std::string_view event, detail;
    if (!in.Varint(&time) || !in.String(&event) || !in.Varint(&hstep) || !in.Varint(&hattempt) ||
        !in.String(&detail)) {
      return DataLossError("saga log: malformed checkpoint history");
    }
    h.time = static_cast<int64_t>(time);
    h.event = InternEvent(event);
    h.step = static_cast<int32_t>(hstep) - 1;
    h.attempt = static_cast<uint32_t>(hattempt);
    h.detail.assign(detail.data(), detail.size());
    inst->history.push_back(std::move(h));
  }
  if (!in.done()) {
    std::string_view trace;
    if (!in.String(&trace)) return DataLossError("saga log: malformed checkpoint (trace)");
    inst->trace.Set(trace);
  }
  if (!in.done()) return DataLossError("saga log: malformed checkpoint (trailing bytes)");
  inst->def = FindDefinition(inst->def_name, inst->version);
  if (inst->def != nullptr && inst->steps.size() < inst->def->steps.size()) {
    inst->steps.resize(inst->def->steps.size());
  }
  if (inst->def == nullptr && !IsFinal(inst->state)) inst->stuck = true;
  inst->serial = next_serial_++;
  if (Instance* old = Find(inst->id)) {
    ClearTimers(*old);
    if (IsFinal(old->state)) {
      std::erase(finished_fifo_, old);
    } else {
      --in_flight_;
    }
    instances_.erase(inst->id);
  }
  Instance* raw = inst.get();
  instances_.emplace(raw->id, std::move(inst));
  if (IsFinal(raw->state)) {
    finished_fifo_.push_back(raw);
  } else {
    ++in_flight_;
    UpdateTimers(*raw);
  }
  return Status::Ok();
}

void SagaMachine::Snapshot(int64_t now, std::string* out) const {
  RecordView r;
  r.type = RecordType::kBaseBegin;
  r.time_micros = now;
  AppendRecord(r, out);
  if (!reply_key_.empty()) {
    RecordView k;
    k.type = RecordType::kReplyKey;
    k.time_micros = now;
    k.a = reply_key_;
    AppendRecord(k, out);
  }
  for (const auto& [key, def] : defs_) {
    const std::string json = def->ToJson();
    RecordView d;
    d.type = RecordType::kDefinition;
    d.time_micros = now;
    d.a = json;
    AppendRecord(d, out);
  }
  std::string blob;
  auto checkpoint = [&](const Instance& inst) {
    blob.clear();
    EncodeCheckpoint(inst, &blob);
    RecordView c;
    c.type = RecordType::kCheckpoint;
    c.time_micros = now;
    c.saga_id = inst.id;
    c.a = blob;
    AppendRecord(c, out);
  };
  for (size_t i = finished_head_; i < finished_fifo_.size(); ++i) checkpoint(*finished_fifo_[i]);
  std::vector<const Instance*> live;
  for (const auto& [id, inst] : instances_) {
    if (!IsFinal(inst->state)) live.push_back(inst.get());
  }
  std::sort(live.begin(), live.end(),
            [](const Instance* a, const Instance* b) { return a->serial < b->serial; });
  for (const Instance* inst : live) checkpoint(*inst);
  RecordView e;
  e.type = RecordType::kBaseEnd;
  e.time_micros = now;
  AppendRecord(e, out);
}

// ---------------------------------------------------------------------------------------
// Queries

std::optional<int64_t> SagaMachine::next_due() const {
  if (timers_.empty()) return std::nullopt;
  return timers_.begin()->due;
}

SagaSummary SagaMachine::Summary(const Instance& inst) const {
  SagaSummary s;
  s.id = inst.id;
  s.definition = inst.def_name;
  s.version = inst.version;
  s.state = inst.state;
  s.step = inst.step;
  s.stuck = inst.stuck;
  s.started_micros = inst.started;
  s.updated_micros = inst.updated;
  return s;
}

Result<SagaInfo> SagaMachine::Describe(const std::string& id) const {
  const Instance* inst = Find(id);
  if (inst == nullptr) return NotFoundError("no saga '" + id + "'");
  SagaInfo info;
  info.summary = Summary(*inst);
  info.data = inst->data ? *inst->data : std::string();
  info.error = inst->error;
  for (size_t i = 0; i < inst->steps.size(); ++i) {
    SagaStepInfo s;
    if (inst->def != nullptr && i < inst->def->steps.size()) s.name = inst->def->steps[i].name;
    s.state = inst->steps[i].state;
    s.attempts = inst->steps[i].attempts;
    info.steps.push_back(std::move(s));
  }
  if (inst->has_step_timer) {
    info.timers.push_back(
        SagaTimerInfo{inst->id, inst->step_timer_kind, inst->step, inst->step_timer_due});
  }
  if (inst->has_deadline_timer) {
    info.timers.push_back(
        SagaTimerInfo{inst->id, SagaTimerKind::kDeadline, inst->step, inst->deadline_timer_due});
  }
  for (const HistoryItem& h : inst->history) {
    info.history.push_back(
        SagaHistoryEntry{h.time, std::string(h.event), h.step, h.attempt, h.detail});
  }
  info.history_dropped = inst->history_dropped;
  info.traceparent = std::string(inst->trace.view());
  return info;
}

std::vector<SagaSummary> SagaMachine::List(const SagaListFilter& filter, int64_t now) const {
  std::vector<const Instance*> match;
  for (const auto& [id, inst] : instances_) {
    if (filter.state && inst->state != *filter.state) continue;
    if (!filter.definition.empty() && inst->def_name != filter.definition) continue;
    if (filter.stuck_only && !inst->stuck) continue;
    if (filter.idle_for_ms > 0 &&
        (IsFinal(inst->state) || inst->updated > now - filter.idle_for_ms * 1000)) {
      continue;
    }
    match.push_back(inst.get());
  }
  const size_t n = std::min(match.size(), filter.limit);
  auto newer = [](const Instance* a, const Instance* b) { return a->serial > b->serial; };
  std::partial_sort(match.begin(), match.begin() + static_cast<ptrdiff_t>(n), match.end(), newer);
  std::vector<SagaSummary> out;
  out.reserve(n);
  for (size_t i = 0; i < n; ++i) out.push_back(Summary(*match[i]));
  return out;
}

std::vector<SagaTimerInfo> SagaMachine::Timers(size_t limit) const {
  std::vector<SagaTimerInfo> out;
  for (const TimerKey& k : timers_) {
    if (out.size() >= limit) break;
    out.push_back(SagaTimerInfo{k.inst->id, k.kind, k.inst->step, k.due});
  }
  return out;
}

}  // namespace converge::saga_internal
