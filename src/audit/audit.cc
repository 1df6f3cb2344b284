#include "audit/audit.h"

#include <algorithm>
#include <charconv>
#include <limits>
#include <utility>

#include "core/coding.h"
#include "core/record_log.h"

#include <xxhash.h>

namespace converge::audit {

namespace rl = ::converge::internal::record_log;
using ::converge::internal::GetLengthPrefixed;
using ::converge::internal::GetVarint64;
using ::converge::internal::PutLengthPrefixed;
using ::converge::internal::PutVarint64;

void StampEvent(Event* event, std::string_view producer, uint64_t seq) {
  event->SetExtension(std::string(kProducerAttribute), std::string(producer));
  event->SetExtension(std::string(kSeqAttribute), std::to_string(seq));
}

DecodeOptions StampDecodeOptions() {
  DecodeOptions options;
  options.max_event_bytes = std::numeric_limits<size_t>::max();
  options.max_data_depth = std::numeric_limits<uint32_t>::max();
  options.defer_json_data_check = true;
  return options;
}

std::optional<Stamp> ReadStamp(std::string_view record_value) {
  Result<Event> event = DecodeBinary(record_value, StampDecodeOptions());
  if (!event.ok()) return std::nullopt;
  const Extension* producer = event->FindExtension(kProducerAttribute);
  const Extension* seq = event->FindExtension(kSeqAttribute);
  if (producer == nullptr || seq == nullptr) return std::nullopt;
  Stamp stamp;
  stamp.producer = producer->value;
  const std::string& v = seq->value;
  auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), stamp.seq);
  if (ec != std::errc() || end != v.data() + v.size()) return std::nullopt;
  return stamp;
}

uint64_t IdKey(std::string_view record_id) {
  return kIdKeyBit | (XXH3_64bits(record_id.data(), record_id.size()) & ~kIdKeyBit);
}

Result<std::string> LoadOrCreateProducerId(Env& env, const std::string& dir) {
  CONVERGE_RETURN_IF_ERROR(env.fs().CreateDirs(dir));
  const std::string path = dir + "/producer";
  if (env.fs().FileExists(path)) {
    CONVERGE_ASSIGN_OR_RETURN(std::string id, env.fs().ReadFileToString(path));
    if (id.size() == 32 && id.find_first_not_of("0123456789abcdef") == std::string::npos) {
      return id;
    }
    return DataLossError("audit producer id in '" + path + "' is damaged");
  }
  static constexpr char kHex[] = "0123456789abcdef";
  std::string id;
  for (int i = 0; i < 2; ++i) {
    uint64_t r = env.random().Next64();
    for (int j = 0; j < 16; ++j, r >>= 4) id += kHex[r & 15];
  }
  CONVERGE_RETURN_IF_ERROR(env.fs().WriteFileAtomically(path, id));
  return id;
}

Result<uint64_t> NextEpoch(Env& env, const std::string& dir) {
  CONVERGE_RETURN_IF_ERROR(env.fs().CreateDirs(dir));
  const std::string path = dir + "/epoch";
  uint64_t epoch = 0;
  if (env.fs().FileExists(path)) {
    CONVERGE_ASSIGN_OR_RETURN(std::string text, env.fs().ReadFileToString(path));
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), epoch);
    if (ec != std::errc() || end != text.data() + text.size()) {
      return DataLossError("audit epoch in '" + path + "' is damaged");
    }
  }
  ++epoch;
  if (epoch >= (uint64_t{1} << 23)) return FailedPreconditionError("audit epochs exhausted");
  CONVERGE_RETURN_IF_ERROR(env.fs().WriteFileAtomically(path, std::to_string(epoch)));
  return epoch;
}

uint64_t Stamper::Take(const std::string& topic, uint64_t n) {
  std::lock_guard lock(mu_);
  auto it = next_.find(topic);
  if (it == next_.end()) it = next_.emplace(topic, (epoch_ << 40) + 1).first;
  const uint64_t first = it->second;
  it->second += n;
  return first;
}

// ---- AckJournal ----

namespace {

// One journal record: topic | varint partition | varint offset | varint seq.
void EncodeAck(std::string* out, std::string_view topic, uint32_t partition, uint64_t offset,
               uint64_t seq) {
  PutLengthPrefixed(out, topic);
  PutVarint64(out, partition);
  PutVarint64(out, offset);
  PutVarint64(out, seq);
}

bool DecodeAck(std::string_view in, Ack* ack) {
  std::string_view topic;
  uint64_t partition = 0;
  if (!GetLengthPrefixed(&in, &topic) || !GetVarint64(&in, &partition) ||
      !GetVarint64(&in, &ack->offset) || !GetVarint64(&in, &ack->seq) || !in.empty() ||
      partition > UINT32_MAX) {
    return false;
  }
  ack->topic = std::string(topic);
  ack->partition = static_cast<uint32_t>(partition);
  return true;
}

}  // namespace

AckJournal::AckJournal(Env& env, std::string path, uint64_t max_tracked)
    : env_(env), path_(std::move(path)), max_tracked_(max_tracked) {}

AckJournal::~AckJournal() {
  if (writer_) (void)writer_->Close();
}

Result<std::unique_ptr<AckJournal>> AckJournal::Open(Env& env, const std::string& dir,
                                                     uint64_t max_tracked) {
  CONVERGE_RETURN_IF_ERROR(env.fs().CreateDirs(dir));
  std::unique_ptr<AckJournal> j(new AckJournal(env, dir + "/acks", max_tracked));
  if (env.fs().FileExists(j->path_)) {
    CONVERGE_ASSIGN_OR_RETURN(std::string data, env.fs().ReadFileToString(j->path_));
    rl::Reader reader = rl::Reader::ForFile(data, rl::Legacy::kNone);
    std::string_view payload;
    // A torn or damaged tail (a crash while writing) loses only those acks: they are then not
    // checked, which can hide a loss but never raise a false one.
    while (reader.Next(&payload)) {
      Ack ack;
      if (!DecodeAck(payload, &ack)) break;
      if (j->Insert(ack.topic, ack.partition, ack.offset, ack.seq)) ++j->count_;
    }
  }
  // A file written under a larger bound, or holding acks dropped since its last rewrite: the
  // oldest go (what was verified is not known after a restart).
  while (j->count_ > j->max_tracked_) j->EvictOne({}, 0);
  // Start from a clean file holding exactly what was read (cuts a torn tail, compacts).
  std::lock_guard lock(j->mu_);
  CONVERGE_RETURN_IF_ERROR(j->Rewrite());
  return j;
}

Status AckJournal::Rewrite() {
  if (writer_) {
    (void)writer_->Close();
    writer_.reset();
  }
  std::string data;
  for (const auto& [topic, partitions] : acks_) {
    for (const auto& [partition, offsets] : partitions) {
      for (const auto& [offset, seq] : offsets) {
        std::string payload;
        EncodeAck(&payload, topic, partition, offset, seq);
        if (data.empty()) rl::AppendFileHeader(&data);
        rl::AppendFrame(&data, payload);
      }
    }
  }
  CONVERGE_RETURN_IF_ERROR(env_.fs().WriteFileAtomically(path_, data));
  in_file_ = count_;
  CONVERGE_ASSIGN_OR_RETURN(writer_, rl::Writer::Reopen(env_.fs(), path_));
  return Status::Ok();
}

bool AckJournal::Insert(const std::string& topic, uint32_t partition, uint64_t offset,
                        uint64_t seq) {
  Offsets& offsets = acks_[topic][partition];
  auto [from, to] = offsets.equal_range(offset);
  for (auto it = from; it != to; ++it) {
    if (it->second == seq) return false;
  }
  offsets.emplace(offset, seq);
  // An ack below the verified prefix (a backend that reuses offsets) was not verified.
  if (auto t = verified_below_.find(topic); t != verified_below_.end()) {
    if (auto v = t->second.find(partition); v != t->second.end() && offset < v->second) {
      v->second = offset;
    }
  }
  return true;
}

void AckJournal::EvictOne(const std::string& topic, uint32_t partition) {
  // Drops the oldest ack of `p` in `t`, removing emptied maps.
  auto drop = [this](Tracked::iterator t, std::map<uint32_t, Offsets>::iterator p) {
    p->second.erase(p->second.begin());
    if (p->second.empty()) t->second.erase(p);
    if (t->second.empty()) acks_.erase(t);
    --count_;
  };
  // First an ack a run verified, dropping it costs no check that has not been made: the oldest
  // of the partition holding the most (the window is shared fairly between partitions, each
  // keeping its newest).
  Tracked::iterator best_t = acks_.end();
  std::map<uint32_t, Offsets>::iterator best_p;
  for (auto t = acks_.begin(); t != acks_.end(); ++t) {
    auto vt = verified_below_.find(t->first);
    if (vt == verified_below_.end()) continue;
    for (auto p = t->second.begin(); p != t->second.end(); ++p) {
      auto v = vt->second.find(p->first);
      if (v == vt->second.end() || p->second.begin()->first >= v->second) continue;
      if (best_t == acks_.end() || p->second.size() > best_p->second.size()) {
        best_t = t;
        best_p = p;
      }
    }
  }
  if (best_t != acks_.end()) {
    drop(best_t, best_p);
    ++retired_;
    return;
  }
  // Else the oldest unchecked ack of the new ack's partition (not the new ack itself), else
  // of the partition holding the most.
  ++untracked_;
  if (auto t = acks_.find(topic); t != acks_.end()) {
    if (auto p = t->second.find(partition); p != t->second.end() && p->second.size() > 1) {
      drop(t, p);
      return;
    }
  }
  for (auto t = acks_.begin(); t != acks_.end(); ++t) {
    for (auto p = t->second.begin(); p != t->second.end(); ++p) {
      if (best_t == acks_.end() || p->second.size() > best_p->second.size()) {
        best_t = t;
        best_p = p;
      }
    }
  }
  if (best_t != acks_.end()) drop(best_t, best_p);
}

void AckJournal::MarkVerified(const std::string& topic, uint32_t partition, uint64_t below,
                              const Offsets& checked) {
  std::lock_guard lock(mu_);
  auto t = acks_.find(topic);
  if (t == acks_.end()) return;
  auto p = t->second.find(partition);
  if (p == t->second.end()) return;
  for (const auto& [offset, seq] : p->second) {
    if (offset >= below) break;
    auto [from, to] = checked.equal_range(offset);
    bool was_checked = false;
    for (auto it = from; it != to && !was_checked; ++it) was_checked = it->second == seq;
    if (!was_checked) {
      below = offset;
      break;
    }
  }
  verified_below_[topic][partition] = below;
}

uint64_t AckJournal::retired() const {
  std::lock_guard lock(mu_);
  return retired_;
}

Status AckJournal::Record(const std::vector<Ack>& acks) {
  std::string frames;
  std::lock_guard lock(mu_);
  for (const Ack& a : acks) {
    if (!Insert(a.topic, a.partition, a.offset, a.seq)) continue;
    ++count_;
    // A sliding window: the new ack is always tracked, an old one makes room.
    while (count_ > max_tracked_) EvictOne(a.topic, a.partition);
    std::string payload;
    EncodeAck(&payload, a.topic, a.partition, a.offset, a.seq);
    rl::AppendFrame(&frames, payload);
    ++in_file_;
  }
  if (frames.empty()) return Status::Ok();
  if (!writer_) return InternalError("audit journal is not open");
  CONVERGE_RETURN_IF_ERROR(writer_->AddFrames(frames));
  // Dropped acks stay in the file until it is rewritten: at the latest once it holds twice
  // what is tracked.
  if (count_ * 2 <= in_file_) return Rewrite();
  return Status::Ok();
}

Status AckJournal::Sync() {
  std::lock_guard lock(mu_);
  if (!writer_) return InternalError("audit journal is not open");
  return writer_->Sync();
}

Status AckJournal::Forget(const std::string& topic, std::optional<uint32_t> partition,
                          std::optional<uint64_t> below) {
  std::lock_guard lock(mu_);
  auto t = acks_.find(topic);
  if (t == acks_.end()) return Status::Ok();
  uint64_t dropped = 0;
  if (!partition) {
    for (const auto& [p, offsets] : t->second) dropped += offsets.size();
    acks_.erase(t);
    verified_below_.erase(topic);
  } else {
    auto p = t->second.find(*partition);
    if (p == t->second.end()) return Status::Ok();
    auto end = below ? p->second.lower_bound(*below) : p->second.end();
    dropped = static_cast<uint64_t>(std::distance(p->second.begin(), end));
    p->second.erase(p->second.begin(), end);
    if (p->second.empty()) t->second.erase(p);
    if (t->second.empty()) acks_.erase(t);
  }
  count_ -= dropped;
  if (dropped > 0 && count_ * 2 <= in_file_) return Rewrite();
  return Status::Ok();
}

AckJournal::Tracked AckJournal::Snapshot() const {
  std::lock_guard lock(mu_);
  return acks_;
}
uint64_t AckJournal::tracked() const {
  std::lock_guard lock(mu_);
  return count_;
}
uint64_t AckJournal::untracked() const {
  std::lock_guard lock(mu_);
  return untracked_;
}

// ---- Auditor ----

std::string_view FindingKindName(FindingKind k) {
  switch (k) {
    case FindingKind::kMissing:
      return "missing";
    case FindingKind::kDuplicate:
      return "duplicate";
    case FindingKind::kOutOfOrder:
      return "out_of_order";
  }
  return "unknown";
}

void Auditor::Add(AuditReport* report, Finding f) {
  PartitionCounts& c = report->counts[{f.topic, f.partition}];
  switch (f.kind) {
    case FindingKind::kMissing:
      ++c.missing;
      break;
    case FindingKind::kDuplicate:
      ++c.duplicates;
      break;
    case FindingKind::kOutOfOrder:
      ++c.out_of_order;
      break;
  }
  ++report->findings_total;
  if (report->findings.size() < options_.max_findings) report->findings.push_back(std::move(f));
}

AuditReport Auditor::Run() {
  AuditReport report;
  report.runs = ++runs_;
  // The acks written so far become durable: a machine crash after this run cannot make the
  // next run forget what this one checked.
  if (Status s = journal_.Sync(); !s.ok())
    report.errors.push_back("journal: " + std::string(s.message()));
  for (const auto& [topic, partitions] : journal_.Snapshot()) {
    Result<TopicInfo> info = log_.DescribeTopic(topic);
    if (!info.ok()) {
      if (info.status().code() == StatusCode::kNotFound) {
        // Deleted through the API: its events are gone on purpose, not lost.
        (void)journal_.Forget(topic, std::nullopt, std::nullopt);
      } else {
        report.errors.push_back(topic + ": " + std::string(info.status().message()));
      }
      continue;
    }
    for (const auto& [partition, acked] : partitions) {
      if (partition >= info->partitions.size()) {
        report.errors.push_back(topic + " partition " + std::to_string(partition) +
                                ": the topic has fewer partitions");
        continue;
      }
      // Retention removed what lies below the start: expired, not lost.
      const uint64_t start = info->partitions[partition].start_offset;
      auto first_kept = acked.lower_bound(start);
      const uint64_t expired = static_cast<uint64_t>(std::distance(acked.begin(), first_kept));
      if (expired > 0) {
        report.expired += expired;
        (void)journal_.Forget(topic, partition, start);
      }
      if (first_kept == acked.end()) continue;
      AckJournal::Offsets kept(first_kept, acked.end());
      CheckPartition(topic, partition, info->partitions[partition].end_offset, kept, &report);
    }
  }
  report.untracked = journal_.untracked();
  report.run_wall_micros = env_.clock().NowWallMicros();
  return report;
}

void Auditor::CheckPartition(const std::string& topic, uint32_t partition, uint64_t end,
                             const AckJournal::Offsets& acked, AuditReport* report) {
  // Where each of this producer's sequence numbers was read; for the acks keyed by a record id
  // (records that are not CloudEvents: IdKey), where a record with that id was read.
  std::map<uint64_t, std::vector<uint64_t>> found;
  std::set<uint64_t> id_keys;
  for (const auto& [acked_offset, seq] : acked) {
    if (IsIdKey(seq)) id_keys.insert(seq);
  }
  uint64_t offset = acked.begin()->first;
  // Reads [offset, limit) into `found`; false when the partition could not be read (said in
  // `errors`: no findings then).
  auto read_to = [&](uint64_t limit) {
    while (offset < limit) {
      Result<ReadBatch> batch = log_.Read(topic, partition, offset, options_.read_batch_records,
                                          options_.read_batch_bytes);
      if (!batch.ok()) {
        // A damaged range is unreadable: its acknowledged events count as missing below.
        std::optional<uint64_t> resume = DataLossResumeOffset(batch.status());
        if (resume && *resume > offset) {
          offset = *resume;
          continue;
        }
        report->errors.push_back(topic + " partition " + std::to_string(partition) + ": " +
                                 std::string(batch.status().message()));
        return false;  // no findings from a partition that could not be read
      }
      for (const StoredRecord& r : batch->records) {
        ++report->records_read;
        std::optional<Stamp> stamp = ReadStamp(r.value);
        if (stamp && stamp->producer == options_.producer) found[stamp->seq].push_back(r.offset);
        if (!id_keys.empty() && !r.id.empty()) {
          const uint64_t key = IdKey(r.id);
          if (id_keys.contains(key)) found[key].push_back(r.offset);
        }
      }
      if (batch->next_offset > offset) {
        offset = batch->next_offset;  // an empty batch may still move past a skipped range
        continue;
      }
      if (offset >= limit) break;
      // No progress below the end: the backend cannot serve this offset and a reader starting
      // here would wait forever. Said in `errors`, and the audit steps over it to check the rest
      // (the acknowledged event there comes out missing).
      report->errors.push_back(topic + " partition " + std::to_string(partition) +
                               ": reads make no progress at offset " + std::to_string(offset) +
                               " (end " + std::to_string(limit) + "); the audit skipped it");
      ++offset;
    }
    return true;
  };
  if (!read_to(end)) return;
  // The journal's acks were all recorded before this run described the partition, and the log
  // had acknowledged each at its offset: an end at or before one of them is a stale view (a
  // JetStream stream leader elected a moment ago can answer before it applied what its
  // predecessor acknowledged) or a log that lost its tail. The partition is described once more and
  // what it holds past the first end is read too: a stale view does not make acks missing, a lost
  // tail still does (the end stays before them).
  if (acked.rbegin()->first >= end) {
    Result<TopicInfo> again = log_.DescribeTopic(topic);
    if (again.ok() && partition < again->partitions.size() &&
        again->partitions[partition].end_offset > end) {
      if (!read_to(again->partitions[partition].end_offset)) return;
    }
  }
  std::set<uint64_t> acked_seqs;
  // Below the first ack with a finding, every ack was read where it was acknowledged.
  // (Checked at the next ack, or after the loop: the body below leaves by `continue`.)
  uint64_t clean_below = acked.rbegin()->first + 1;
  bool clean = true;
  uint64_t previous_offset = 0;
  const uint64_t findings_before = report->findings_total;
  for (const auto& [acked_offset, seq] : acked) {
    if (clean && report->findings_total != findings_before) {
      clean = false;
      clean_below = previous_offset;
    }
    previous_offset = acked_offset;
    ++report->checked;
    acked_seqs.insert(seq);
    Finding f{FindingKind::kMissing, topic, partition, seq, acked_offset, acked_offset};
    auto it = found.find(seq);
    if (it == found.end()) {
      Add(report, f);
      continue;
    }
    const std::vector<uint64_t>& at = it->second;
    const bool in_place = std::find(at.begin(), at.end(), acked_offset) != at.end();
    if (!in_place) {
      f.kind = FindingKind::kOutOfOrder;
      f.found_offset = at.front();
      Add(report, f);
    }
    // Every copy but one is a duplicate: the one at the acknowledged offset when there is
    // one, else the first read.
    bool original_seen = false;
    for (uint64_t o : at) {
      if (!original_seen && (!in_place || o == acked_offset)) {
        original_seen = true;
        continue;
      }
      Add(report, {FindingKind::kDuplicate, topic, partition, seq, acked_offset, o});
    }
  }
  if (clean && report->findings_total != findings_before) clean_below = previous_offset;
  journal_.MarkVerified(topic, partition, clean_below, acked);
  // Copies of events whose ack this journal does not hold (lost with a crash, or past the bound).
  for (const auto& [seq, at] : found) {
    if (acked_seqs.contains(seq) || at.size() < 2) continue;
    for (size_t i = 1; i < at.size(); ++i) {
      Add(report, {FindingKind::kDuplicate, topic, partition, seq, at.front(), at[i]});
    }
  }
}

// ---- AuditService ----

AuditService::AuditService(Env& env, Log& log, AckJournal& journal, AuditorOptions options,
                           int64_t interval_ms)
    : env_(env),
      auditor_(env, log, journal, std::move(options)),
      journal_(journal),
      interval_ms_(interval_ms) {}

AuditService::~AuditService() { Stop(); }

void AuditService::Start() {
  std::lock_guard lock(mu_);
  if (!stopped_) return;
  stopped_ = false;
  armed_ = true;
  timer_ = env_.executor().Schedule(interval_ms_ * 1'000'000, [this] { Tick(); });
}

void AuditService::Stop() {
  std::unique_lock lock(mu_);
  if (stopped_) return;
  stopped_ = true;
  if (armed_ && env_.executor().Cancel(timer_)) armed_ = false;
  // A timer that fired already is running Tick (or about to): it must be done with `this`
  // before this returns, since the owner destroys the service (and the log) next.
  idle_.wait(lock, [this] { return !armed_ && !ticking_; });
}

void AuditService::Tick() {
  {
    std::lock_guard lock(mu_);
    armed_ = false;
    if (stopped_) {
      idle_.notify_all();
      return;
    }
    ticking_ = true;
  }
  (void)RunNow();
  std::lock_guard lock(mu_);
  ticking_ = false;
  if (!stopped_) {
    armed_ = true;
    timer_ = env_.executor().Schedule(interval_ms_ * 1'000'000, [this] { Tick(); });
  }
  idle_.notify_all();
}

AuditReport AuditService::RunNow() {
  std::lock_guard run(run_mu_);
  AuditReport report = auditor_.Run();
  std::lock_guard lock(mu_);
  checked_total_ += report.checked;
  // Each distinct finding counts once in the totals, however many runs see it again. The set
  // is bounded by the findings a run lists.
  for (const Finding& f : report.findings) {
    if (seen_.size() >= 1'000'000) break;
    if (!seen_.emplace(f.kind, f.topic, f.partition, f.seq).second) continue;
    PartitionCounts& c = totals_[{f.topic, f.partition}];
    (f.kind == FindingKind::kMissing     ? c.missing
     : f.kind == FindingKind::kDuplicate ? c.duplicates
                                         : c.out_of_order)++;
  }
  last_ = report;
  return report;
}

AuditReport AuditService::last() const {
  std::lock_guard lock(mu_);
  return last_;
}
std::map<std::pair<std::string, uint32_t>, PartitionCounts> AuditService::totals() const {
  std::lock_guard lock(mu_);
  return totals_;
}
uint64_t AuditService::checked_total() const {
  std::lock_guard lock(mu_);
  return checked_total_;
}

}  // namespace converge::audit
