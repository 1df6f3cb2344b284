// The applier: source batches -> version-gated target transactions that carry the position.
#include <algorithm>
#include <condition_variable>
#include <future>
#include <mutex>
#include <unordered_map>

#include "converge/replica.h"

namespace converge::replica {

// ---------------------------------------------------------------------------------------
// LogSource

namespace {

class LogSource : public Source {
 public:
  LogSource(Log& log, std::string topic) : log_(log), topic_(std::move(topic)) {}

  const std::string& topic() const override { return topic_; }

  Result<uint32_t> Partitions() override {
    CONVERGE_ASSIGN_OR_RETURN(TopicInfo info, log_.DescribeTopic(topic_));
    return static_cast<uint32_t>(info.partitions.size());
  }

  Result<SourceBatch> Read(uint32_t partition, uint64_t from_offset,
                           size_t max_records) override {
    SourceBatch out;
    out.partition = partition;
    out.from_offset = from_offset;
    out.next_offset = from_offset;
    // The end first: a record appended after it is simply read by the next batch.
    CONVERGE_ASSIGN_OR_RETURN(TopicInfo info, log_.DescribeTopic(topic_));
    if (partition >= info.partitions.size()) {
      return NotFoundError("topic '" + topic_ + "' has no partition " +
                           std::to_string(partition));
    }
    out.end_offset = info.partitions[partition].end_offset;
    Result<ReadBatch> batch = log_.Read(topic_, partition, from_offset, max_records + 1, 64u << 20);
    if (!batch.ok()) {
      std::optional<uint64_t> resume = DataLossResumeOffset(batch.status());
      if (!resume.has_value()) return batch.status();
      out.damage = batch.status();
      out.next_offset = *resume;
      return out;
    }
    if (!batch->records.empty() && batch->records[0].offset > from_offset) {
      // Read from below the retained start: the records in between are gone.
      out.damage = DataLossError("topic '" + topic_ + "' partition " + std::to_string(partition) +
                                 ": records [" + std::to_string(from_offset) + ", " +
                                 std::to_string(batch->records[0].offset) +
                                 ") were removed by retention before the replica applied them");
      out.next_offset = batch->records[0].offset;
      out.end_offset = std::max(out.end_offset, out.next_offset);
      return out;
    }
    out.storage = batch->storage;
    const size_t n = std::min(batch->records.size(), max_records);
    out.records.reserve(n);
    for (size_t i = 0; i < n; ++i) {
      const StoredRecord& r = batch->records[i];
      out.records.push_back(SourceRecord{r.offset, r.timestamp_micros, r.value});
    }
    out.next_offset = n > 0 ? out.records.back().offset + 1 : batch->next_offset;
    if (batch->records.size() > n) out.next_timestamp_micros = batch->records[n].timestamp_micros;
    out.end_offset = std::max(out.end_offset, out.next_offset);
    return out;
  }

 private:
  Log& log_;
  const std::string topic_;
};

}  // namespace

std::unique_ptr<Source> NewLogSource(Log& log, std::string topic) {
  return std::make_unique<LogSource>(log, std::move(topic));
}

// ---------------------------------------------------------------------------------------
// Applier

struct Applier::Impl {
  Impl(Env& e, Source& s, Target& t, ApplierOptions o)
      : env(e), source(s), target(t), options(std::move(o)) {}

  struct Waiter {
    ConsistencyToken token;
    std::function<void(Status)> done;
    TimerId timer = 0;
    int64_t deadline_ms = 0;
  };

  Env& env;
  Source& source;
  Target& target;
  const ApplierOptions options;
  uint32_t partitions = 0;
  bool reload = true;
  int64_t last_purge_nanos = 0;

  mutable std::mutex mu;  // guards everything below (read by Stats, Reached, waiters)
  std::vector<Position> positions;   // index = partition
  std::vector<uint64_t> end_offsets;
  std::vector<int64_t> behind_since;  // oldest unapplied record's time; 0 = caught up/unknown
  std::vector<int64_t> last_caught_up;
  ReplicaStats stats;
  uint64_t next_waiter = 1;
  std::unordered_map<uint64_t, std::shared_ptr<Waiter>> waiters;

  void Report(const std::string& message) {
    if (options.report) options.report("replica '" + options.name + "': " + message);
  }

  std::string Where(uint32_t p, uint64_t offset) const {
    return "topic '" + source.topic() + "' partition " + std::to_string(p) + " offset " +
           std::to_string(offset);
  }

  Status LoadFromTarget() {
    CONVERGE_ASSIGN_OR_RETURN(TargetState state, target.Load());
    std::lock_guard<std::mutex> lock(mu);
    for (uint32_t p = 0; p < partitions; ++p) positions[p] = Position{p, 0, 0, 0};
    for (const Position& pos : state.positions) {
      if (pos.partition >= partitions) {
        return FailedPreconditionError(
            "replica '" + options.name + "': the target holds a position for partition " +
            std::to_string(pos.partition) + " but topic '" + source.topic() + "' has " +
            std::to_string(partitions) + " partitions");
      }
      positions[pos.partition] = pos;
      stats.purge_watermark = std::max(stats.purge_watermark, pos.purge_watermark);
    }
    reload = false;
    return Status::Ok();
  }

  bool ReachedLocked(const ConsistencyToken& t) const {
    const Position& pos = positions[t.partition];
    return t.kind == ConsistencyToken::Kind::kOffset ? pos.next_offset > t.value
                                                     : pos.commitseq >= t.value;
  }

  Status CheckToken(const ConsistencyToken& t) const {
    if (t.topic != source.topic()) {
      return InvalidArgumentError("the consistency token is for topic '" + t.topic +
                                  "'; replica '" + options.name + "' reads topic '" +
                                  source.topic() + "'");
    }
    if (t.partition >= partitions) {
      return InvalidArgumentError("the consistency token names partition " +
                                  std::to_string(t.partition) + "; topic '" + source.topic() +
                                  "' has " + std::to_string(partitions));
    }
    return Status::Ok();
  }

  // Completes the waiters whose token is reached (after progress).
  void NotifyWaiters() {
    std::vector<std::pair<std::shared_ptr<Waiter>, TimerId>> ready;
    {
      std::lock_guard<std::mutex> lock(mu);
      for (auto it = waiters.begin(); it != waiters.end();) {
        if (ReachedLocked(it->second->token)) {
          // The timer id is written under the lock (WaitForAsync), so read it here.
          ready.emplace_back(it->second, it->second->timer);
          it = waiters.erase(it);
        } else {
          ++it;
        }
      }
    }
    for (auto& [w, timer] : ready) {
      // A timer not yet set (0) fires later, finds no waiter and does nothing.
      if (timer != 0) env.executor().Cancel(timer);
      w->done(Status::Ok());
    }
  }

  // Handles a record that is not a change or a range the source could not read. Returns
  // false when the applier must stop there.
  bool OnBad(uint32_t p, uint64_t offset, const Status& why, bool damage, Status* stop) {
    {
      std::lock_guard<std::mutex> lock(mu);
      ++(damage ? stats.damaged_ranges : stats.malformed);
    }
    const std::string what = (damage ? "damaged range at " : "malformed change at ") +
                             Where(p, offset) + ": " + std::string(why.message());
    if (options.on_malformed == OnMalformed::kSkip) {
      Report(what + " (skipped: on_malformed=skip)");
      return true;
    }
    Report(what + " (stopped: on_malformed=stop)");
    *stop = FailedPreconditionError("replica '" + options.name + "' stopped at " + what +
                                    "; fix the producer, or set on_malformed=skip to go past it");
    return false;
  }

  Result<size_t> StepPartition(uint32_t p, Status* stop);
};

Applier::Applier(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Applier::~Applier() {
  std::vector<std::pair<std::shared_ptr<Impl::Waiter>, TimerId>> waiters;
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    for (auto& [id, w] : impl_->waiters) waiters.emplace_back(w, w->timer);
    impl_->waiters.clear();
  }
  for (auto& [w, timer] : waiters) {
    if (timer != 0) impl_->env.executor().Cancel(timer);
    w->done(CancelledError("replica '" + impl_->options.name + "' was closed"));
  }
}

Status ValidateApplierOptions(const ApplierOptions& options) {
  if (options.max_batch == 0) return InvalidArgumentError("replica: max_batch must be >= 1");
  if (options.tombstone_retention_ms < 0 || options.purge_interval_ms < 0) {
    return InvalidArgumentError("replica: tombstone_retention_ms and purge_interval_ms must be >= 0");
  }
  return Status::Ok();
}

Result<std::unique_ptr<Applier>> Applier::Open(Env& env, Source& source, Target& target,
                                               ApplierOptions options) {
  CONVERGE_RETURN_IF_ERROR(ValidateApplierOptions(options));
  auto impl = std::make_unique<Impl>(env, source, target, std::move(options));
  CONVERGE_ASSIGN_OR_RETURN(impl->partitions, source.Partitions());
  if (impl->partitions == 0) return FailedPreconditionError("replica: the source has no partitions");
  impl->positions.resize(impl->partitions);
  impl->end_offsets.assign(impl->partitions, 0);
  impl->behind_since.assign(impl->partitions, 0);
  impl->last_caught_up.assign(impl->partitions, env.clock().NowWallMicros());
  CONVERGE_RETURN_IF_ERROR(impl->LoadFromTarget());
  impl->last_purge_nanos = env.clock().NowMonotonicNanos();
  return std::unique_ptr<Applier>(new Applier(std::move(impl)));
}

Result<size_t> Applier::Impl::StepPartition(uint32_t p, Status* stop) {
  Position from;
  {
    std::lock_guard<std::mutex> lock(mu);
    from = positions[p];
  }
  CONVERGE_ASSIGN_OR_RETURN(SourceBatch batch, source.Read(p, from.next_offset, options.max_batch));
  if (batch.partition != p || batch.from_offset != from.next_offset) {
    // A late or early delivery: applying it would repeat or skip changes.
    std::lock_guard<std::mutex> lock(mu);
    ++stats.refused_batches;
    return size_t{0};
  }
  Position to = from;
  std::vector<Change> changes;
  changes.reserve(batch.records.size());
  uint64_t filtered = 0;
  uint64_t truncate_below = 0;
  bool cut = false;
  if (batch.snapshot_version > 0) {
    // A re-bootstrap: a listing, not feed records. All of it or nothing.
    if (!target.applies_snapshots()) {
      *stop = FailedPreconditionError("replica '" + options.name +
                                      "': its target cannot apply a re-bootstrap snapshot");
      Report(std::string(stop->message()));
      return size_t{0};
    }
    for (const SourceRecord& rec : batch.records) {
      Result<Change> change = ParseChangeRecord(rec.value, rec.timestamp_micros);
      if (!change.ok()) {
        return UnavailableError("replica '" + options.name + "': a snapshot document: " +
                                std::string(change.status().message()));
      }
      if (!options.collection.empty() && change->collection != options.collection) continue;
      changes.push_back(std::move(change).value());
    }
    to.next_offset = batch.next_offset;
    to.commitseq = std::max(to.commitseq, batch.passed_commitseq);
  }
  for (const SourceRecord& rec : batch.records) {
    if (batch.snapshot_version > 0) break;
    if (batch.sparse && rec.offset > to.next_offset && rec.offset < batch.next_offset) {
      to.next_offset = rec.offset;  // records the source passed (not this replica's)
    }
    if (rec.offset != to.next_offset) {
      // Records are dense inside a batch; a gap is a broken source, so apply what comes
      // before it and read the rest again.
      Report("batch from " + Where(p, batch.from_offset) + " skips from offset " +
             std::to_string(to.next_offset) + " to " + std::to_string(rec.offset) +
             "; applying up to the gap");
      cut = true;
      break;
    }
    Result<Change> change = ParseChangeRecord(rec.value, rec.timestamp_micros);
    if (!change.ok()) {
      if (!OnBad(p, rec.offset, change.status(), false, stop)) {
        cut = true;
        break;
      }
      to.next_offset = rec.offset + 1;
      continue;
    }
    const uint64_t commitseq_before = to.commitseq;
    to.next_offset = rec.offset + 1;
    to.commitseq = std::max(to.commitseq, change->commitseq);
    if (!options.collection.empty() && change->collection != options.collection) {
      ++filtered;
      continue;
    }
    if (change->kind == ChangeKind::kTruncate) {
      if (!target.applies_truncates()) {
        // Skipping it would leave every truncated row in the copy: stop whatever on_malformed
        // says, after the changes before it.
        to.next_offset = rec.offset;
        to.commitseq = commitseq_before;
        const std::string what = "truncate at " + Where(p, rec.offset) + " (version " +
                                 std::to_string(change->version) + ")";
        Report(what + ": this target cannot apply a truncate (stopped)");
        *stop = FailedPreconditionError(
            "replica '" + options.name + "' stopped at a " + what +
            ": its target cannot remove every row below a version; rebuild the copy from a "
            "new snapshot of the source, or use a SQL table target");
        cut = true;
        break;
      }
      truncate_below = std::max(truncate_below, change->version);
      continue;
    }
    changes.push_back(std::move(change).value());
  }
  if (!cut && batch.sparse && !batch.damage.has_value() && batch.snapshot_version == 0) {
    // The records the source passed: their offsets, and their commit sequence numbers (also
    // when the batch's last record is one it handed out).
    to.next_offset = std::max(to.next_offset, batch.next_offset);
    to.commitseq = std::max(to.commitseq, batch.passed_commitseq);
  }
  if (!cut && batch.damage.has_value() && batch.records.empty()) {
    if (OnBad(p, batch.from_offset, *batch.damage, true, stop)) {
      to.next_offset = std::max(to.next_offset, batch.next_offset);
    }
  }
  // Progress: the records read, or the offsets passed (a damaged range skipped has none), so
  // that 0 means caught up.
  const size_t read = std::max<size_t>(batch.records.size(), to.next_offset - from.next_offset);
  if (to.next_offset != from.next_offset) {
    // Per key, only the highest version of the batch can win: the others are superseded.
    std::unordered_map<std::string_view, size_t> latest;
    latest.reserve(changes.size());
    ApplyBatch apply;
    apply.from_offset = from.next_offset;
    apply.position = to;
    apply.applied_time_micros = env.clock().NowWallMicros();
    apply.truncate_below = truncate_below;
    apply.partitions = partitions;
    apply.snapshot_version = batch.snapshot_version;
    uint64_t superseded = 0;
    uint64_t truncated = 0;  // changes of the batch from before its truncate
    for (size_t i = 0; i < changes.size(); ++i) {
      if (changes[i].version < truncate_below) {
        ++truncated;
        continue;
      }
      auto [it, inserted] = latest.emplace(changes[i].key, apply.changes.size());
      if (inserted) {
        apply.changes.push_back(&changes[i]);
      } else {
        ++superseded;
        if (changes[i].version > apply.changes[it->second]->version) {
          apply.changes[it->second] = &changes[i];
        }
      }
    }
    Result<ApplyOutcome> outcome = target.Apply(apply);
    if (!outcome.ok()) {
      std::lock_guard<std::mutex> lock(mu);
      ++stats.target_errors;
      reload = true;  // it may have committed: the target knows
      return outcome.status();
    }
    std::lock_guard<std::mutex> lock(mu);
    positions[p] = to;
    ++stats.batches;
    stats.applied += outcome->applied;
    stats.stale += outcome->stale + truncated;
    stats.below_watermark += outcome->below_watermark;
    stats.superseded += superseded;
    stats.filtered += filtered;
    if (outcome->below_watermark > 0) {
      // Visible: a source whose versions do not grow with its commit order loses these.
      Report(std::to_string(outcome->below_watermark) + " change(s) at " +
             Where(p, from.next_offset) + ".. refused: unknown key at or below the purge "
             "watermark " + std::to_string(to.purge_watermark));
    }
    for (const Change* c : apply.changes) {
      stats.last_apply_latency_us = apply.applied_time_micros - c->commit_time_micros;
    }
    // The truncate raised the purge watermarks of every partition: pick them up.
    if (truncate_below > 0) reload = true;
  }
  {
    std::lock_guard<std::mutex> lock(mu);
    end_offsets[p] = std::max(batch.end_offset, to.next_offset);
    const int64_t now = env.clock().NowWallMicros();
    if (end_offsets[p] <= to.next_offset) {
      behind_since[p] = 0;
      last_caught_up[p] = now;
    } else if (to.next_offset == batch.next_offset && batch.next_timestamp_micros != 0) {
      behind_since[p] = batch.next_timestamp_micros;
    } else if (to.next_offset == from.next_offset && !batch.records.empty()) {
      behind_since[p] = batch.records[0].timestamp_micros;
    } else {
      behind_since[p] = 0;  // unknown: the lag falls back to the last time it was caught up
    }
  }
  return read;
}

Result<size_t> Applier::Step() {
  Impl& m = *impl_;
  {
    std::lock_guard<std::mutex> lock(m.mu);
    if (!m.stats.stopped.ok()) return m.stats.stopped;
  }
  if (m.reload) CONVERGE_RETURN_IF_ERROR(m.LoadFromTarget());
  size_t read = 0;
  Status first_error;
  for (uint32_t p = 0; p < m.partitions; ++p) {
    Status stop;
    Result<size_t> n = m.StepPartition(p, &stop);
    if (!stop.ok()) {
      std::lock_guard<std::mutex> lock(m.mu);
      m.stats.stopped = stop;
    }
    if (!n.ok()) {
      if (first_error.ok()) first_error = n.status();
      if (m.reload) break;
      continue;
    }
    read += *n;
    if (!stop.ok()) break;
  }
  m.NotifyWaiters();
  if (!first_error.ok()) return first_error;
  {
    std::lock_guard<std::mutex> lock(m.mu);
    if (!m.stats.stopped.ok()) return m.stats.stopped;
  }
  if (m.options.tombstone_retention_ms > 0 &&
      m.env.clock().NowMonotonicNanos() - m.last_purge_nanos >=
          m.options.purge_interval_ms * 1'000'000) {
    CONVERGE_RETURN_IF_ERROR(PurgeTombstones());
  }
  return read;
}

Status Applier::CatchUp() {
  while (true) {
    CONVERGE_ASSIGN_OR_RETURN(size_t n, Step());
    if (n == 0) return Status::Ok();
  }
}

Status Applier::PurgeTombstones() {
  Impl& m = *impl_;
  m.last_purge_nanos = m.env.clock().NowMonotonicNanos();
  if (m.options.tombstone_retention_ms == 0) return Status::Ok();
  const int64_t cutoff = m.env.clock().NowWallMicros() - m.options.tombstone_retention_ms * 1000;
  Result<uint64_t> purged = m.target.PurgeTombstones(cutoff);
  if (!purged.ok()) {
    std::lock_guard<std::mutex> lock(m.mu);
    ++m.stats.target_errors;
    m.reload = true;
    return purged.status();
  }
  {
    std::lock_guard<std::mutex> lock(m.mu);
    m.stats.tombstones_purged += *purged;
  }
  if (*purged > 0) m.reload = true;  // picks up the new watermark (and nothing else changes)
  return Status::Ok();
}

ReplicaStats Applier::Stats() const {
  const Impl& m = *impl_;
  std::lock_guard<std::mutex> lock(m.mu);
  ReplicaStats s = m.stats;
  s.positions = m.positions;
  s.lag_changes = 0;
  s.lag_ms = 0;
  const int64_t now = m.env.clock().NowWallMicros();
  for (uint32_t p = 0; p < m.partitions; ++p) {
    if (m.end_offsets[p] <= m.positions[p].next_offset) continue;
    s.lag_changes += m.end_offsets[p] - m.positions[p].next_offset;
    const int64_t since = m.behind_since[p] != 0 ? m.behind_since[p] : m.last_caught_up[p];
    s.lag_ms = std::max<int64_t>(s.lag_ms, std::max<int64_t>(0, (now - since) / 1000));
  }
  return s;
}

Result<bool> Applier::Reached(std::string_view text) const {
  CONVERGE_ASSIGN_OR_RETURN(ConsistencyToken token, DecodeToken(text));
  CONVERGE_RETURN_IF_ERROR(impl_->CheckToken(token));
  std::lock_guard<std::mutex> lock(impl_->mu);
  return impl_->ReachedLocked(token);
}

void Applier::WaitForAsync(std::string_view text, int64_t deadline_ms,
                           std::function<void(Status)> done) {
  Impl& m = *impl_;
  Result<ConsistencyToken> token = DecodeToken(text);
  if (!token.ok()) return done(token.status());
  if (Status s = m.CheckToken(*token); !s.ok()) return done(s);
  auto w = std::make_shared<Impl::Waiter>();
  w->token = *token;
  w->done = std::move(done);
  w->deadline_ms = deadline_ms;
  uint64_t id = 0;
  {
    std::lock_guard<std::mutex> lock(m.mu);
    if (m.ReachedLocked(*token)) {
      // Outside the lock below.
      id = 0;
    } else {
      id = m.next_waiter++;
      m.waiters.emplace(id, w);
    }
  }
  if (id == 0) return w->done(Status::Ok());
  std::weak_ptr<Impl> weak = impl_;
  const TimerId timer = m.env.executor().Schedule(
      std::max<int64_t>(deadline_ms, 0) * 1'000'000, [weak, id] {
        std::shared_ptr<Impl> impl = weak.lock();
        if (impl == nullptr) return;
        std::shared_ptr<Impl::Waiter> waiter;
        Position pos;
        {
          std::lock_guard<std::mutex> lock(impl->mu);
          auto it = impl->waiters.find(id);
          if (it == impl->waiters.end()) return;
          waiter = it->second;
          impl->waiters.erase(it);
          pos = impl->positions[waiter->token.partition];
        }
        const bool offset = waiter->token.kind == ConsistencyToken::Kind::kOffset;
        waiter->done(DeadlineExceededError(
            "replica '" + impl->options.name + "' has not applied " +
            (offset ? "offset " : "commitseq ") + std::to_string(waiter->token.value) +
            " of topic '" + waiter->token.topic + "' partition " +
            std::to_string(waiter->token.partition) + " within " +
            std::to_string(waiter->deadline_ms) + " ms (it has applied up to offset " +
            std::to_string(pos.next_offset) + ", commitseq " + std::to_string(pos.commitseq) +
            ")"));
      });
  std::lock_guard<std::mutex> lock(m.mu);
  w->timer = timer;
}

Status Applier::WaitFor(std::string_view token, int64_t deadline_ms) {
  auto promise = std::make_shared<std::promise<Status>>();
  std::future<Status> result = promise->get_future();
  WaitForAsync(token, deadline_ms, [promise](Status s) { promise->set_value(std::move(s)); });
  return result.get();
}

Status Applier::CheckStaleness(int64_t max_staleness_ms) const {
  const ReplicaStats s = Stats();
  if (!s.stopped.ok()) {
    return UnavailableError("replica '" + impl_->options.name +
                            "' is stopped: " + std::string(s.stopped.message()));
  }
  if (s.lag_ms > max_staleness_ms) {
    return UnavailableError("replica '" + impl_->options.name + "' is " +
                            std::to_string(s.lag_ms) + " ms stale (" +
                            std::to_string(s.lag_changes) +
                            " changes behind), more than max_staleness_ms=" +
                            std::to_string(max_staleness_ms));
  }
  return Status::Ok();
}

std::string Applier::TokenForOffset(uint32_t partition, uint64_t offset) const {
  return EncodeToken(ConsistencyToken{impl_->source.topic(), partition,
                                      ConsistencyToken::Kind::kOffset, offset});
}

}  // namespace converge::replica
