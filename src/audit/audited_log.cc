#include "audit/audited_log.h"

#include <cstdio>
#include <limits>
#include <memory>
#include <mutex>
#include <optional>
#include <utility>

namespace converge::audit {

AuditedLog::Stamped AuditedLog::StampBatch(const std::string& topic,
                                           std::span<const RecordView> records) {
  Stamped s;
  s.values.resize(records.size());
  s.views.assign(records.begin(), records.end());
  s.seqs.assign(records.size(), 0);
  // Any CloudEvent is stamped, whatever its size: the log's max_record_bytes decides (and a
  // refusal caused by the stamps is retried unstamped).
  const DecodeOptions options = StampDecodeOptions();
  std::vector<Event> events(records.size());
  std::vector<bool> is_event(records.size(), false);
  for (size_t i = 0; i < records.size(); ++i) {
    Result<Event> e = DecodeBinary(records[i].value, options);
    if (!e.ok()) {
      // Not a CloudEvent (a dead letter, a relay's dead-letter row): nothing to stamp it
      // with, so its ack is keyed by its record id (IdKey). Without an id it is not audited.
      if (!records[i].id.empty()) {
        s.seqs[i] = IdKey(records[i].id);
        ++s.tracked;
      }
      continue;
    }
    events[i] = std::move(*e);
    is_event[i] = true;
    ++s.count;
  }
  s.tracked += s.count;
  if (s.count == 0) return s;
  // Consecutive numbers for this batch: an append that fails, or records dropped as
  // duplicates, leave gaps, which are never findings.
  uint64_t seq = stamper_.Take(topic, s.count);
  for (size_t i = 0; i < records.size(); ++i) {
    if (!is_event[i]) continue;
    StampEvent(&events[i], stamper_.producer(), seq);
    if (!EncodeBinary(events[i], &s.values[i]).ok()) {
      // Cannot happen for an event that decoded (a String extension always encodes); if it
      // did, the record goes unstamped and unchecked, and its number is a gap.
      s.values[i].clear();
      ++seq;
      --s.tracked;
      continue;
    }
    s.seqs[i] = seq++;
    s.views[i].value = s.values[i];
  }
  return s;
}

void AuditedLog::RecordAcks(const std::string& topic, const Stamped& stamped,
                            const std::vector<AppendResult>& appended) {
  std::vector<Ack> acks;
  acks.reserve(appended.size());
  for (size_t i = 0; i < appended.size() && i < stamped.seqs.size(); ++i) {
    // A duplicate was not appended: the record there carries the first append's stamp, which
    // was recorded when that append was acknowledged.
    if (stamped.seqs[i] == 0 || appended[i].duplicate) continue;
    acks.push_back({topic, appended[i].partition, appended[i].offset, stamped.seqs[i]});
  }
  if (acks.empty()) return;
  // A failed journal write costs only the check of these events (a false negative); the
  // append itself succeeded and is answered as such.
  if (Status s = journal_.Record(acks); !s.ok()) {
    std::fprintf(stderr, "converge serve: audit journal: %s\n", s.ToString().c_str());
  }
}

namespace {

// Whole-batch validation: InvalidArgument means nothing was appended, so appending the
// records as they came is safe (and is what the log would have taken without the audit).
bool RefusedAsInvalid(const Result<std::vector<AppendResult>>& r) {
  return !r.ok() && r.status().code() == StatusCode::kInvalidArgument;
}

}  // namespace

Result<std::vector<AppendResult>> AuditedLog::Append(const std::string& topic,
                                                     std::span<const RecordView> records) {
  Stamped stamped = StampBatch(topic, records);
  if (stamped.tracked == 0) return inner_->Append(topic, records);
  Result<std::vector<AppendResult>> r = inner_->Append(topic, stamped.views);
  if (RefusedAsInvalid(r)) return inner_->Append(topic, records);
  if (r.ok()) RecordAcks(topic, stamped, *r);
  return r;
}

Result<std::vector<AppendResult>> AuditedLog::AppendToPartition(
    const std::string& topic, uint32_t partition, std::span<const RecordView> records) {
  Stamped stamped = StampBatch(topic, records);
  if (stamped.tracked == 0) return inner_->AppendToPartition(topic, partition, records);
  Result<std::vector<AppendResult>> r = inner_->AppendToPartition(topic, partition, stamped.views);
  if (RefusedAsInvalid(r)) return inner_->AppendToPartition(topic, partition, records);
  if (r.ok()) RecordAcks(topic, stamped, *r);
  return r;
}

void AuditedLog::AppendAsync(const std::string& topic, std::span<const RecordView> records,
                             AppendDone done) {
  auto stamped = std::make_shared<Stamped>(StampBatch(topic, records));
  if (stamped->tracked == 0) {
    inner_->AppendAsync(topic, records, std::move(done));
    return;
  }
  // A refused batch is answered on this thread before the inner AppendAsync returns: an
  // InvalidArgument seen then is retried unstamped here, after it returned (`done` may not
  // call back into the log). One seen later is passed on as it is.
  struct Call {
    std::mutex mu;
    bool returned = false;
    bool refused = false;
  };
  auto call = std::make_shared<Call>();
  auto shared_done = std::make_shared<AppendDone>(std::move(done));
  inner_->AppendAsync(
      topic, stamped->views,
      [this, topic, stamped, call, shared_done](Result<std::vector<AppendResult>> r) {
        if (RefusedAsInvalid(r)) {
          std::lock_guard lock(call->mu);
          if (!call->returned) {
            call->refused = true;
            return;
          }
        }
        if (r.ok()) RecordAcks(topic, *stamped, *r);
        (*shared_done)(std::move(r));
      });
  bool refused = false;
  {
    std::lock_guard lock(call->mu);
    call->returned = true;
    refused = call->refused;
  }
  if (refused) inner_->AppendAsync(topic, records, std::move(*shared_done));
}

}  // namespace converge::audit
