#include "saga/saga_log.h"

#include <algorithm>
#include <cstdio>

namespace converge::saga_internal {
namespace {

constexpr std::string_view kSuffix = ".log";
constexpr size_t kSeqDigits = 20;

bool ParseSegmentName(std::string_view kPrefix, const std::string& name, uint64_t* seq) {
  if (name.size() != kPrefix.size() + kSeqDigits + kSuffix.size()) return false;
  if (name.compare(0, kPrefix.size(), kPrefix) != 0) return false;
  if (name.compare(kPrefix.size() + kSeqDigits, kSuffix.size(), kSuffix) != 0) return false;
  uint64_t v = 0;
  for (size_t i = kPrefix.size(); i < kPrefix.size() + kSeqDigits; ++i) {
    const char c = name[i];
    if (c < '0' || c > '9') return false;
    const uint64_t d = static_cast<uint64_t>(c - '0');
    if (v > (UINT64_MAX - d) / 10) return false;
    v = v * 10 + d;
  }
  *seq = v;
  return true;
}

namespace record_log = internal::record_log;

// Segments of releases before the record-log header are read in their framing of then.
record_log::Reader SegmentReader(std::string_view data) {
  return record_log::Reader::ForFile(data, record_log::Legacy::kSagaV0);
}

// True if the segment's first record is kBaseBegin (read without loading the whole file).
Result<bool> StartsWithBase(FileSystem& fs, const std::string& path) {
  CONVERGE_ASSIGN_OR_RETURN(std::unique_ptr<RandomAccessFile> f, fs.NewRandomAccessFile(path));
  uint8_t buf[record_log::kFileHeaderBytes + kFrameHeaderBytes + 1];
  CONVERGE_ASSIGN_OR_RETURN(size_t n, f->Read(0, sizeof(buf), buf));
  const std::string_view prefix(reinterpret_cast<const char*>(buf), n);
  // The type byte is the payload's first: after the frame header, and the file header if any.
  const size_t type_at =
      (record_log::HasFileHeader(prefix) ? record_log::kFileHeaderBytes : 0) + kFrameHeaderBytes;
  return n > type_at && buf[type_at] == kBaseBeginType;
}

// Bytes up to and including the kBaseEnd record, or 0 if the snapshot is incomplete.
size_t CompleteBaseBytes(std::string_view data) {
  record_log::Reader reader = SegmentReader(data);
  std::string_view payload;
  while (reader.Next(&payload)) {
    if (!payload.empty() && static_cast<uint8_t>(payload[0]) == kBaseEndType) {
      return reader.valid_bytes();
    }
  }
  return 0;
}

}  // namespace

std::string RecordLog::SegmentPath(uint64_t seq) const {
  char name[64];
  std::snprintf(name, sizeof(name), "%s%020llu.log", options_.file_prefix.c_str(),
                static_cast<unsigned long long>(seq));
  return options_.dir + "/" + name;
}

RecordLog::~RecordLog() {
  if (active_ != nullptr) {
    if (dirty_) active_->Sync().IgnoreError();
    active_->Close().IgnoreError();
  }
}

Result<std::unique_ptr<RecordLog>> RecordLog::Open(Env& env, const RecordLogOptions& options,
                                                   const ReplayFn& replay,
                                                   RecordLogRecovery* recovery) {
  if (options.dir.empty()) return InvalidArgumentError("record log: dir is required");
  if (options.file_prefix.empty() || options.file_prefix.size() > 32) {
    return InvalidArgumentError("record log: file_prefix must have 1..32 characters");
  }
  FileSystem& fs = env.fs();
  std::unique_ptr<RecordLog> log(new RecordLog(env, options));
  CONVERGE_RETURN_IF_ERROR(fs.CreateDirs(options.dir));
  CONVERGE_ASSIGN_OR_RETURN(log->lock_, fs.LockFile(options.dir + "/LOCK"));
  CONVERGE_ASSIGN_OR_RETURN(std::vector<std::string> names, fs.ListDir(options.dir));
  std::vector<uint64_t> seqs;
  for (const std::string& n : names) {
    uint64_t seq = 0;
    if (ParseSegmentName(options.file_prefix, n, &seq)) seqs.push_back(seq);
  }
  std::sort(seqs.begin(), seqs.end());

  // The newest complete base; incomplete ones (a crash while compacting) are deleted.
  size_t start = 0;
  std::string start_data;
  bool have_start_data = false;
  bool deleted = false;
  for (size_t i = seqs.size(); i-- > 0;) {
    const std::string path = log->SegmentPath(seqs[i]);
    CONVERGE_ASSIGN_OR_RETURN(bool base, StartsWithBase(fs, path));
    if (!base) continue;
    CONVERGE_ASSIGN_OR_RETURN(std::string data, fs.ReadFileToString(path));
    const size_t base_bytes = CompleteBaseBytes(data);
    if (base_bytes > 0) {
      start = i;
      start_data = std::move(data);
      have_start_data = true;
      log->base_bytes_ = base_bytes;
      break;
    }
    CONVERGE_RETURN_IF_ERROR(fs.DeleteFile(path));
    deleted = true;
    seqs.erase(seqs.begin() + static_cast<ptrdiff_t>(i));
  }
  for (size_t i = 0; i < start; ++i) {
    CONVERGE_RETURN_IF_ERROR(fs.DeleteFile(log->SegmentPath(seqs[i])));
    deleted = true;
  }
  seqs.erase(seqs.begin(), seqs.begin() + static_cast<ptrdiff_t>(start));
  if (deleted) CONVERGE_RETURN_IF_ERROR(fs.SyncDir(options.dir));

  RecordLogRecovery rec;
  bool last_legacy = false;
  for (size_t i = 0; i < seqs.size(); ++i) {
    const std::string path = log->SegmentPath(seqs[i]);
    std::string data;
    if (i == 0 && have_start_data) {
      data = std::move(start_data);
    } else {
      CONVERGE_ASSIGN_OR_RETURN(data, fs.ReadFileToString(path));
    }
    ++rec.segments;
    record_log::Reader reader = SegmentReader(data);
    std::string_view payload;
    size_t good = reader.valid_bytes();  // the file header, then bytes of frames that decoded
    bool undecodable = false;
    while (reader.Next(&payload)) {
      Status s = replay(payload);
      if (s.code() == StatusCode::kDataLoss) {
        undecodable = true;
        break;
      }
      if (!s.ok()) return s;
      ++rec.records;
      good = reader.valid_bytes();
    }
    const bool last = i + 1 == seqs.size();
    if (last) last_legacy = reader.legacy();
    if (good < data.size()) {
      const bool damaged = reader.damaged() || undecodable;
      if (damaged) ++rec.damaged_segments;
      const std::string range =
          path + ": bytes [" + std::to_string(good) + ", " + std::to_string(data.size()) + ")";
      const std::string why = undecodable ? "a record that does not decode"
                              : reader.stop() == record_log::Stop::kTorn
                                  ? "a torn record"
                                  : "a record that fails its checksum";
      if (last) {
        // The tail of the last segment: a write torn by a crash was never acknowledged (what
        // was acknowledged was synced), so it is cut. Reported all the same: damage to synced
        // records ends up here too.
        rec.truncated_bytes += data.size() - good;
        rec.reports.push_back(range + " cut off (" + why + " at the end of the newest segment)");
        CONVERGE_RETURN_IF_ERROR(fs.Truncate(path, good));
      } else {
        // Acknowledged records are unreadable and later segments go on from them.
        std::string msg = range + " are damaged (" + why + "; " +
                          std::to_string(seqs.size() - i - 1) +
                          " newer segment(s) follow): the records there cannot be replayed. "
                          "Refusing to start: sagas in flight would resume from lost "
                          "decisions. To accept the loss, cut the file to " +
                          std::to_string(good) + " bytes (truncate -s " + std::to_string(good) +
                          " " + path + ") and start again";
        rec.reports.push_back(msg);
        if (recovery != nullptr) *recovery = rec;
        return DataLossError("record log recovery: " + msg);
      }
    }
    log->total_bytes_ += last ? good : data.size();
  }
  log->segments_ = seqs;
  if (seqs.empty()) {
    CONVERGE_RETURN_IF_ERROR(log->OpenNewSegment(1));
  } else if (last_legacy) {
    // Nothing is appended to a segment of the old framing: the next one starts in the current.
    CONVERGE_RETURN_IF_ERROR(log->OpenNewSegment(seqs.back() + 1));
  } else {
    log->active_seq_ = seqs.back();
    CONVERGE_ASSIGN_OR_RETURN(log->active_,
                              record_log::Writer::Reopen(fs, log->SegmentPath(seqs.back())));
  }
  log->MarkDurable();
  if (recovery != nullptr) *recovery = rec;
  return log;
}

Status RecordLog::ReadOnly(Env& env, const RecordLogOptions& options, const ReplayFn& replay) {
  FileSystem& fs = env.fs();
  CONVERGE_ASSIGN_OR_RETURN(std::vector<std::string> names, fs.ListDir(options.dir));
  std::vector<uint64_t> seqs;
  for (const std::string& n : names) {
    uint64_t seq = 0;
    if (ParseSegmentName(options.file_prefix, n, &seq)) seqs.push_back(seq);
  }
  std::sort(seqs.begin(), seqs.end());
  RecordLog paths(env, options);
  size_t start = 0;
  for (size_t i = seqs.size(); i-- > 0;) {
    const std::string path = paths.SegmentPath(seqs[i]);
    Result<bool> base = StartsWithBase(fs, path);
    if (!base.ok() || !*base) continue;
    CONVERGE_ASSIGN_OR_RETURN(std::string data, fs.ReadFileToString(path));
    if (CompleteBaseBytes(data) > 0) {
      start = i;
      break;
    }
  }
  for (size_t i = start; i < seqs.size(); ++i) {
    Result<std::string> data = fs.ReadFileToString(paths.SegmentPath(seqs[i]));
    if (!data.ok()) continue;  // compacted away meanwhile
    record_log::Reader reader = SegmentReader(*data);
    std::string_view payload;
    bool stopped = false;  // on purpose, not at damage
    while (reader.Next(&payload)) {
      Status s = replay(payload);
      if (s.code() == StatusCode::kDataLoss) {
        stopped = true;
        break;
      }
      CONVERGE_RETURN_IF_ERROR(s);
      // A base that is still being written (incomplete) is not the start: skip it whole.
      if (i > start && !payload.empty() && static_cast<uint8_t>(payload[0]) == kBaseBeginType &&
          CompleteBaseBytes(*data) == 0) {
        stopped = true;
        break;
      }
    }
    // The newest segment may end in a record a live writer has not finished; an older one
    // must be whole, so whatever could not be read there is damage, and the view would be
    // missing acknowledged records: say so rather than show less.
    if (!stopped && i + 1 < seqs.size() && reader.valid_bytes() < data->size()) {
      return DataLossError(paths.SegmentPath(seqs[i]) + ": bytes [" +
                           std::to_string(reader.valid_bytes()) + ", " +
                           std::to_string(data->size()) +
                           ") are damaged (an older segment of the log, read-only view)");
    }
  }
  return Status::Ok();
}

Status RecordLog::OpenNewSegment(uint64_t seq) {
  FileSystem& fs = env_.fs();
  CONVERGE_ASSIGN_OR_RETURN(std::unique_ptr<record_log::Writer> f,
                            record_log::Writer::Create(fs, SegmentPath(seq), OpenMode::kCreateNew));
  CONVERGE_RETURN_IF_ERROR(fs.SyncDir(options_.dir));
  if (active_ != nullptr) CONVERGE_RETURN_IF_ERROR(active_->Close());
  active_ = std::move(f);
  active_seq_ = seq;
  segments_.push_back(seq);
  return Status::Ok();
}

Status RecordLog::Append(std::string_view framed_records) {
  if (framed_records.empty()) return Status::Ok();
  if (active_->size() >= options_.segment_max_bytes) {
    if (dirty_) {
      CONVERGE_RETURN_IF_ERROR(active_->Sync());
      dirty_ = false;
    }
    CONVERGE_RETURN_IF_ERROR(OpenNewSegment(active_seq_ + 1));
  }
  const uint64_t before = active_->size();
  CONVERGE_RETURN_IF_ERROR(active_->AddFrames(framed_records));
  total_bytes_ += active_->size() - before;
  dirty_ = true;
  return Status::Ok();
}

Status RecordLog::Sync() {
  if (!dirty_) return Status::Ok();
  CONVERGE_RETURN_IF_ERROR(active_->Sync());
  dirty_ = false;
  MarkDurable();
  return Status::Ok();
}

void RecordLog::MarkDurable() {
  durable_seq_ = active_seq_;
  durable_size_ = active_->size();
  durable_total_ = total_bytes_;
}

Status RecordLog::UndoUnsynced() {
  FileSystem& fs = env_.fs();
  if (active_ != nullptr) {
    active_->Close().IgnoreError();  // its unsynced bytes are about to be cut off
    active_.reset();
  }
  // Segments the failed batch created: by a roll (listed, or not yet listed when its directory
  // sync failed) or by a Rebase that did not complete (always durable_seq_ + 1).
  Status first;
  bool deleted = false;
  auto remove = [&](uint64_t seq) {
    Status d = fs.DeleteFile(SegmentPath(seq));
    if (d.ok()) {
      deleted = true;
    } else if (d.code() != StatusCode::kNotFound && first.ok()) {
      first = d;
    }
  };
  while (!segments_.empty() && segments_.back() > durable_seq_) {
    remove(segments_.back());
    segments_.pop_back();
  }
  remove(durable_seq_ + 1);
  if (deleted) {
    // Durably gone before anything is appended again: Open would otherwise start from a
    // stray segment or end the durable one early.
    Status synced = fs.SyncDir(options_.dir);
    if (first.ok()) first = synced;
  }
  CONVERGE_RETURN_IF_ERROR(first);
  const std::string path = SegmentPath(durable_seq_);
  // Truncate also makes the kept bytes durable.
  CONVERGE_RETURN_IF_ERROR(fs.Truncate(path, durable_size_));
  CONVERGE_ASSIGN_OR_RETURN(active_, record_log::Writer::Reopen(fs, path));
  if (active_->size() != durable_size_) {
    return InternalError("saga log segment " + path + " has " + std::to_string(active_->size()) +
                         " bytes after truncation to " + std::to_string(durable_size_));
  }
  active_seq_ = durable_seq_;
  total_bytes_ = durable_total_;
  dirty_ = false;
  return Status::Ok();
}

Status RecordLog::ReplayDurable(const ReplayFn& replay) {
  // The files hold exactly the durable records here (UndoUnsynced cut the rest): read them the
  // way Open replays them.
  return ReadOnly(env_, options_, replay);
}

Status RecordLog::Rebase(std::string_view base) {
  FileSystem& fs = env_.fs();
  CONVERGE_RETURN_IF_ERROR(Sync());
  const uint64_t seq = active_seq_ + 1;
  CONVERGE_ASSIGN_OR_RETURN(std::unique_ptr<record_log::Writer> f,
                            record_log::Writer::Create(fs, SegmentPath(seq), OpenMode::kCreateNew));
  CONVERGE_RETURN_IF_ERROR(f->AddFrames(base));
  CONVERGE_RETURN_IF_ERROR(f->Sync());
  CONVERGE_RETURN_IF_ERROR(fs.SyncDir(options_.dir));
  // The snapshot is durable: the older segments are superseded. From here on nothing fails
  // the rebase (UndoUnsynced would delete the new base): an older segment that cannot be
  // deleted now is kept in the list and deleted by the next Rebase, and Open deletes every
  // segment before the newest complete base anyway.
  active_->Close().IgnoreError();
  active_ = std::move(f);
  active_seq_ = seq;
  std::vector<uint64_t> kept;
  for (uint64_t old : segments_) {
    Status d = fs.DeleteFile(SegmentPath(old));
    if (!d.ok() && d.code() != StatusCode::kNotFound) kept.push_back(old);
  }
  kept.push_back(seq);
  segments_ = std::move(kept);
  fs.SyncDir(options_.dir).IgnoreError();
  total_bytes_ = active_->size();
  base_bytes_ = active_->size();
  MarkDurable();
  return Status::Ok();
}

}  // namespace converge::saga_internal
