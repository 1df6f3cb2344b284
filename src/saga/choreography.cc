#include "converge/choreography.h"

#include <algorithm>
#include <mutex>
#include <set>

namespace converge {

void SetCorrelationId(Event& event, std::string correlation_id) {
  event.SetExtension(std::string(kCorrelationIdExtension), std::move(correlation_id));
}

std::optional<std::string_view> CorrelationId(const Event& event) {
  const Extension* e = event.FindExtension(kCorrelationIdExtension);
  if (e == nullptr) return std::nullopt;
  return std::string_view(e->value);
}

Event Follow(const Event& cause, std::string id, std::string source, std::string type) {
  Event e;
  e.set_id(std::move(id));
  e.set_source(std::move(source));
  e.set_type(std::move(type));
  std::optional<std::string_view> corr = CorrelationId(cause);
  SetCorrelationId(e, std::string(corr ? *corr : std::string_view(cause.id())));
  e.SetExtension(std::string(kCausationIdExtension), cause.id());
  return e;
}

Status ChoreographyDefinition::Validate() const {
  if (name.empty()) return InvalidArgumentError("choreography: name is required");
  if (start.empty()) return InvalidArgumentError("choreography '" + name + "': start is required");
  if (steps.empty() || steps.size() > 100) {
    return InvalidArgumentError("choreography '" + name + "' must have 1..100 steps");
  }
  if (stuck_after_ms < 0) {
    return InvalidArgumentError("choreography '" + name + "': stuck_after_ms must be >= 0");
  }
  std::set<std::string> types = {start};
  for (const ChoreographyStep& s : steps) {
    if (s.name.empty() || s.done.empty()) {
      return InvalidArgumentError("choreography '" + name +
                                  "': every step needs a name and a "
                                  "done event type");
    }
    for (const std::string* t : {&s.done, &s.failed, &s.compensated}) {
      if (t->empty()) continue;
      if (!types.insert(*t).second) {
        return InvalidArgumentError("choreography '" + name + "': event type '" + *t +
                                    "' is used twice");
      }
    }
  }
  return Status::Ok();
}

std::string_view ChoreographyStateName(ChoreographyState s) {
  switch (s) {
    case ChoreographyState::kRunning:
      return "running";
    case ChoreographyState::kCompensating:
      return "compensating";
    case ChoreographyState::kCompleted:
      return "completed";
    case ChoreographyState::kCompensated:
      return "compensated";
  }
  return "unknown";
}

struct ChoreographyTracker::Saga {
  std::string id;
  size_t def = 0;
  uint64_t serial = 0;
  int64_t started = 0;
  int64_t updated = 0;
  std::vector<ChoreographyStepView> steps;
  std::vector<ChoreographyEventSeen> history;
  std::set<std::string> event_ids;  // for duplicates; bounded like the history
  ChoreographyState state = ChoreographyState::kRunning;
};

ChoreographyTracker::ChoreographyTracker(Clock& clock, ChoreographyOptions options)
    : clock_(clock), options_(options) {}

Status ChoreographyTracker::AddDefinition(const ChoreographyDefinition& d) {
  CONVERGE_RETURN_IF_ERROR(d.Validate());
  for (const ChoreographyDefinition& other : defs_) {
    if (other.name == d.name) {
      return AlreadyExistsError("choreography '" + d.name + "' is already defined");
    }
  }
  std::vector<std::pair<std::string, std::tuple<size_t, int, int>>> add;
  const size_t index = defs_.size();
  add.push_back({d.start, {index, -1, 0}});
  for (size_t i = 0; i < d.steps.size(); ++i) {
    const ChoreographyStep& s = d.steps[i];
    add.push_back({s.done, {index, static_cast<int>(i), 0}});
    if (!s.failed.empty()) add.push_back({s.failed, {index, static_cast<int>(i), 1}});
    if (!s.compensated.empty()) add.push_back({s.compensated, {index, static_cast<int>(i), 2}});
  }
  for (const auto& [type, where] : add) {
    if (by_type_.count(type)) {
      return AlreadyExistsError("event type '" + type + "' belongs to another choreography");
    }
  }
  for (auto& [type, where] : add) by_type_.emplace(type, where);
  defs_.push_back(d);
  return Status::Ok();
}

bool ChoreographyTracker::Observe(const Event& event) {
  auto it = by_type_.find(event.type());
  if (it == by_type_.end()) return false;
  const auto [def_index, step, kind] = it->second;
  std::optional<std::string_view> corr = CorrelationId(event);
  std::string id;
  if (corr) {
    id.assign(*corr);
  } else if (step < 0) {
    id = event.id();  // the start event begins the saga under its own id
  } else {
    return false;
  }
  const int64_t now = clock_.NowWallMicros();
  auto sit = sagas_.find(id);
  if (sit == sagas_.end()) {
    size_t running = sagas_.size() - finished_.size();
    if (running >= options_.max_in_flight) return false;
    auto s = std::make_shared<Saga>();
    s->id = id;
    s->def = def_index;
    s->serial = next_serial_++;
    s->started = now;
    for (const ChoreographyStep& st : defs_[def_index].steps) {
      ChoreographyStepView v;
      v.name = st.name;
      s->steps.push_back(v);
    }
    sit = sagas_.emplace(id, std::move(s)).first;
  }
  Saga& s = *sit->second;
  if (s.def != def_index) return false;  // the id belongs to another choreography
  if (!s.event_ids.insert(event.id()).second) return true;  // a duplicate
  const bool was_final =
      s.state == ChoreographyState::kCompleted || s.state == ChoreographyState::kCompensated;
  s.updated = now;
  if (step >= 0) {
    ChoreographyStepView& v = s.steps[static_cast<size_t>(step)];
    if (kind == 0) v.done = true;
    if (kind == 1) v.failed = true;
    if (kind == 2) {
      v.compensated = true;
      v.done = true;  // a compensation implies the step had been done
    }
  }
  s.history.push_back(ChoreographyEventSeen{now, event.id(), event.type(), event.source()});
  if (s.history.size() > options_.history_max_entries) {
    s.event_ids.erase(s.history.front().id);
    s.history.erase(s.history.begin());
  }
  // The state from the facts.
  const ChoreographyDefinition& d = defs_[def_index];
  bool any_failed = false, all_done = true, all_undone = true;
  for (size_t i = 0; i < s.steps.size(); ++i) {
    const ChoreographyStepView& v = s.steps[i];
    any_failed = any_failed || v.failed;
    all_done = all_done && v.done;
    if (v.done && !d.steps[i].compensated.empty() && !v.compensated) all_undone = false;
  }
  if (any_failed) {
    s.state = all_undone ? ChoreographyState::kCompensated : ChoreographyState::kCompensating;
  } else {
    s.state = all_done ? ChoreographyState::kCompleted : ChoreographyState::kRunning;
  }
  const bool is_final =
      s.state == ChoreographyState::kCompleted || s.state == ChoreographyState::kCompensated;
  if (is_final && !was_final) {
    finished_.push_back(s.id);
    while (finished_.size() > options_.finished_retain_max) {
      auto old = sagas_.find(finished_.front());
      // Only drop it if it is still finished (a late failure may have reopened it).
      if (old != sagas_.end() && (old->second->state == ChoreographyState::kCompleted ||
                                  old->second->state == ChoreographyState::kCompensated)) {
        sagas_.erase(old);
      }
      finished_.erase(finished_.begin());
    }
  } else if (!is_final && was_final) {
    // A late event reopened it (e.g. a failure after all steps were reported done).
    std::erase(finished_, s.id);
  }
  return true;
}

ChoreographyView ChoreographyTracker::ViewOf(const Saga& s) const {
  ChoreographyView v;
  v.correlation_id = s.id;
  v.definition = defs_[s.def].name;
  v.state = s.state;
  v.started_micros = s.started;
  v.updated_micros = s.updated;
  v.steps = s.steps;
  v.history = s.history;
  const bool final =
      s.state == ChoreographyState::kCompleted || s.state == ChoreographyState::kCompensated;
  v.stuck = !final && defs_[s.def].stuck_after_ms > 0 &&
            clock_.NowWallMicros() - s.updated > defs_[s.def].stuck_after_ms * 1000;
  return v;
}

Result<ChoreographyView> ChoreographyTracker::Describe(const std::string& correlation_id) const {
  auto it = sagas_.find(correlation_id);
  if (it == sagas_.end()) return NotFoundError("no choreographed saga '" + correlation_id + "'");
  return ViewOf(*it->second);
}

std::vector<ChoreographyView> ChoreographyTracker::List(std::optional<ChoreographyState> state,
                                                        bool stuck_only, size_t limit) const {
  std::vector<const Saga*> all;
  for (const auto& [id, s] : sagas_) all.push_back(s.get());
  std::sort(all.begin(), all.end(),
            [](const Saga* a, const Saga* b) { return a->serial > b->serial; });
  std::vector<ChoreographyView> out;
  for (const Saga* s : all) {
    if (out.size() >= limit) break;
    if (state && s->state != *state) continue;
    ChoreographyView v = ViewOf(*s);
    if (stuck_only && !v.stuck) continue;
    out.push_back(std::move(v));
  }
  return out;
}

size_t ChoreographyTracker::in_flight() const { return sagas_.size() - finished_.size(); }

// ---------------------------------------------------------------------------------------

namespace {

class MonitorImpl : public ChoreographyMonitor {
 public:
  struct Token {
    std::mutex mu;
    MonitorImpl* impl = nullptr;
  };

  MonitorImpl(Env& env, Log& log, ChoreographyMonitorOptions options)
      : env_(env),
        log_(log),
        options_(std::move(options)),
        executor_(options_.executor ? *options_.executor : env.executor()),
        tracker_(env.clock(), options_.tracker),
        token_(std::make_shared<Token>()) {
    token_->impl = this;
  }
  ~MonitorImpl() override {
    Close();
    std::lock_guard<std::mutex> g(token_->mu);
    token_->impl = nullptr;
  }

  Status Init(const std::vector<ChoreographyDefinition>& defs) {
    for (const ChoreographyDefinition& d : defs)
      CONVERGE_RETURN_IF_ERROR(tracker_.AddDefinition(d));
    if (options_.read_max_records == 0) {
      return InvalidArgumentError("choreography monitor: read_max_records must be > 0");
    }
    for (const std::string& t : options_.topics) {
      CONVERGE_ASSIGN_OR_RETURN(TopicInfo info, log_.DescribeTopic(t));
      std::vector<uint64_t> offsets;
      for (const PartitionInfo& p : info.partitions) offsets.push_back(p.start_offset);
      offsets_.emplace_back(t, std::move(offsets));
      CONVERGE_ASSIGN_OR_RETURN(auto w,
                                log_.WatchAppends(t, [this](uint32_t, uint64_t) { Wake(); }));
      watches_.push_back(std::move(w));
    }
    Wake();
    return Status::Ok();
  }

  Result<size_t> RunOnce() override {
    std::lock_guard<std::mutex> lock(mu_);
    if (closed_) return FailedPreconditionError("choreography monitor is closed");
    size_t n = 0;
    for (auto& [topic, offsets] : offsets_) {
      for (uint32_t p = 0; p < offsets.size(); ++p) {
        for (;;) {
          Result<ReadBatch> batch = log_.Read(topic, p, offsets[p], options_.read_max_records,
                                              size_t{options_.read_max_records} * 1024);
          if (!batch.ok()) {
            if (auto resume = DataLossResumeOffset(batch.status())) {
              offsets[p] = *resume;
              continue;
            }
            break;
          }
          if (batch->records.empty()) break;
          for (const StoredRecord& r : batch->records) {
            Result<Event> e = DecodeBinary(r.value);
            if (e.ok() && tracker_.Observe(*e)) ++n;
          }
          offsets[p] = batch->next_offset;
        }
      }
    }
    return n;
  }

  Result<ChoreographyView> Describe(const std::string& id) override {
    std::lock_guard<std::mutex> lock(mu_);
    return tracker_.Describe(id);
  }
  std::vector<ChoreographyView> List(std::optional<ChoreographyState> state, bool stuck_only,
                                     size_t limit) override {
    std::lock_guard<std::mutex> lock(mu_);
    return tracker_.List(state, stuck_only, limit);
  }
  void Close() override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (closed_) return;
      closed_ = true;
    }
    watches_.clear();
  }

 private:
  void Wake() {
    {
      std::lock_guard<std::mutex> lock(wake_mu_);
      if (posted_) return;
      posted_ = true;
    }
    std::weak_ptr<Token> weak = token_;
    executor_.Post([weak] {
      if (auto t = weak.lock()) {
        std::lock_guard<std::mutex> g(t->mu);
        if (t->impl == nullptr) return;
        {
          std::lock_guard<std::mutex> lock(t->impl->wake_mu_);
          t->impl->posted_ = false;
        }
        t->impl->RunOnce().status().IgnoreError();
      }
    });
  }

  Env& env_;
  Log& log_;
  ChoreographyMonitorOptions options_;
  Executor& executor_;
  std::mutex mu_;
  bool closed_ = false;
  ChoreographyTracker tracker_;
  std::vector<std::pair<std::string, std::vector<uint64_t>>> offsets_;
  std::vector<std::unique_ptr<Log::Watch>> watches_;
  std::mutex wake_mu_;
  bool posted_ = false;
  std::shared_ptr<Token> token_;
};

}  // namespace

Result<std::unique_ptr<ChoreographyMonitor>> ChoreographyMonitor::Start(
    Env& env, Log& log, std::vector<ChoreographyDefinition> definitions,
    ChoreographyMonitorOptions options) {
  auto impl = std::make_unique<MonitorImpl>(env, log, std::move(options));
  CONVERGE_RETURN_IF_ERROR(impl->Init(definitions));
  return std::unique_ptr<ChoreographyMonitor>(std::move(impl));
}

}  // namespace converge
