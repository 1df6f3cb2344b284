// The in-memory target: the same apply rule as the SQL targets, in one atomic step.
#include <algorithm>
#include <iterator>

#include "converge/replica.h"

namespace converge::replica {

Status MemoryTarget::TakeFault(bool* after_commit) {
  const Fault fault = fault_;
  fault_ = Fault::kNone;
  *after_commit = fault == Fault::kFailAfterCommit;
  if (fault == Fault::kFailBeforeCommit) {
    return UnavailableError("memory target: connection lost before COMMIT (injected)");
  }
  return Status::Ok();
}

Result<TargetState> MemoryTarget::Load() { return state_; }

Result<ApplyOutcome> MemoryTarget::Apply(const ApplyBatch& batch) {
  bool after_commit = false;
  CONVERGE_RETURN_IF_ERROR(TakeFault(&after_commit));
  // The position fence: a second applier of the same replica, or a stale one, must not move it.
  uint64_t current = 0, watermark = 0;
  for (const Position& p : state_.positions) {
    if (p.partition == batch.position.partition) {
      current = p.next_offset;
      watermark = p.purge_watermark;
    }
  }
  if (current != batch.from_offset) {
    return AbortedError("memory target: the position of partition " +
                        std::to_string(batch.position.partition) + " is " +
                        std::to_string(current) + ", not " + std::to_string(batch.from_offset) +
                        " (another applier moved it)");
  }
  if (batch.truncate_below > 0) {
    for (auto it = rows_.begin(); it != rows_.end();) {
      it = it->second.version < batch.truncate_below ? rows_.erase(it) : std::next(it);
    }
    const uint64_t mark = batch.truncate_below - 1;
    for (uint32_t part = 0; part < std::max(batch.partitions, batch.position.partition + 1);
         ++part) {
      auto p = std::find_if(state_.positions.begin(), state_.positions.end(),
                            [&](const Position& q) { return q.partition == part; });
      if (p == state_.positions.end()) {
        state_.positions.push_back(Position{part, 0, 0, mark});
      } else {
        p->purge_watermark = std::max(p->purge_watermark, mark);
      }
    }
    watermark = std::max(watermark, mark);
  }
  ApplyOutcome outcome;
  for (const Change* c : batch.changes) {
    auto it = rows_.find(c->key);
    if (it != rows_.end() ? c->version <= it->second.version
                          : c->version <= watermark) {
      ++(it != rows_.end() ? outcome.stale : outcome.below_watermark);
      continue;
    }
    Row& row = rows_[c->key];
    row.source_partition = batch.position.partition;
    row.version = c->version;
    row.deleted = c->kind == ChangeKind::kDelete;
    row.document = row.deleted ? std::string() : c->document;
    row.commit_time_micros = c->commit_time_micros;
    row.applied_time_micros = batch.applied_time_micros;
    ++applies_[{c->key, c->version}];
    ++outcome.applied;
  }
  bool found = false;
  for (Position& p : state_.positions) {
    if (p.partition == batch.position.partition) {
      p = Position{p.partition, batch.position.next_offset, batch.position.commitseq,
                   p.purge_watermark};
      found = true;
    }
  }
  if (!found) {
    state_.positions.push_back(
        Position{batch.position.partition, batch.position.next_offset, batch.position.commitseq, 0});
  }
  if (after_commit) {
    return UnavailableError("memory target: connection lost after COMMIT (injected)");
  }
  return outcome;
}

Result<uint64_t> MemoryTarget::PurgeTombstones(int64_t applied_before_micros) {
  bool after_commit = false;
  CONVERGE_RETURN_IF_ERROR(TakeFault(&after_commit));
  uint64_t purged = 0;
  for (auto it = rows_.begin(); it != rows_.end();) {
    if (it->second.deleted && it->second.applied_time_micros < applied_before_micros) {
      for (Position& p : state_.positions) {
        if (p.partition == it->second.source_partition) {
          p.purge_watermark = std::max(p.purge_watermark, it->second.version);
        }
      }
      it = rows_.erase(it);
      ++purged;
    } else {
      ++it;
    }
  }
  if (after_commit) {
    return UnavailableError("memory target: connection lost after COMMIT (injected)");
  }
  return purged;
}

}  // namespace converge::replica
