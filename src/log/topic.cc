#include "log/topic.h"

#include <algorithm>
#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <optional>
#include <utility>

#include "core/crc32c.h"
#include "log/record_format.h"
#include "log/topic_meta.h"

namespace converge::internal {
namespace {

constexpr size_t kReadChunkMinBytes = 64u << 10;
constexpr size_t kReadChunkMaxBytes = 8u << 20;
constexpr size_t kScanChunkBytes = 1u << 20;

std::string PartitionDirName(uint32_t partition) {
  char buf[16];
  std::snprintf(buf, sizeof(buf), "%04" PRIu32, partition);
  return buf;
}

std::string SegmentFileName(uint64_t base_offset) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%020" PRIu64 ".log", base_offset);
  return buf;
}

// "00000000000000001234.log" -> 1234.
bool ParseSegmentFileName(const std::string& name, uint64_t* base_offset) {
  if (name.size() != 24 || name.compare(20, 4, ".log") != 0) return false;
  uint64_t v = 0;
  for (size_t i = 0; i < 20; ++i) {
    const char c = name[i];
    if (c < '0' || c > '9') return false;
    const uint64_t digit = static_cast<uint64_t>(c - '0');
    if (v > (UINT64_MAX - digit) / 10) return false;
    v = v * 10 + digit;
  }
  *base_offset = v;
  return true;
}

std::string JoinPath(const std::string& a, const std::string& b) { return a + "/" + b; }

std::string ParentDir(const std::string& path) {
  const size_t slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

std::string ToString(uint64_t v) { return std::to_string(v); }

// "<start> <crc32c of the decimal start, 8 hex digits>\n": a damaged file must not be taken for
// a start offset (recovery deletes segments below it).
std::string StartFileContent(uint64_t start) {
  const std::string digits = std::to_string(start);
  char crc[16];
  std::snprintf(crc, sizeof(crc), "%08" PRIx32, Crc32c(digits.data(), digits.size()));
  return digits + " " + crc + "\n";
}

Status WriteStartFile(FileSystem& fs, const std::string& partition_dir, uint64_t start) {
  return fs.WriteFileAtomically(JoinPath(partition_dir, kStartFileName), StartFileContent(start));
}

// The retained start recorded in a partition directory; nullopt if there is no readable one
// (a partition written before the file existed, or a damaged file).
std::optional<uint64_t> ReadStartFile(FileSystem& fs, const std::string& partition_dir) {
  Result<std::string> text = fs.ReadFileToString(JoinPath(partition_dir, kStartFileName));
  if (!text.ok()) return std::nullopt;
  uint64_t v = 0;
  size_t i = 0;
  for (; i < text->size() && (*text)[i] >= '0' && (*text)[i] <= '9'; ++i) {
    const uint64_t digit = static_cast<uint64_t>((*text)[i] - '0');
    if (v > (UINT64_MAX - digit) / 10) return std::nullopt;
    v = v * 10 + digit;
  }
  if (i == 0 || *text != StartFileContent(v)) return std::nullopt;
  return v;
}

}  // namespace

Status RemoveTree(FileSystem& fs, const std::string& path) {
  if (fs.DeleteFile(path).ok()) return Status::Ok();
  Result<std::vector<std::string>> entries = fs.ListDir(path);
  if (!entries.ok()) {
    if (entries.status().code() == StatusCode::kNotFound) return Status::Ok();
    return entries.status();
  }
  for (const std::string& entry : *entries) {
    CONVERGE_RETURN_IF_ERROR(RemoveTree(fs, JoinPath(path, entry)));
  }
  return fs.DeleteDir(path);
}

// ---------------------------------------------------------------------------------------
// WriteBudget

Status WriteBudget::Acquire(uint64_t bytes) {
  if (bytes > max_bytes_) {
    return ResourceExhaustedError("append of " + ToString(bytes) +
                                  " bytes exceeds write_buffer_max_bytes (" + ToString(max_bytes_) +
                                  ")");
  }
  std::unique_lock<std::mutex> lock(mu_);
  if (used_ + bytes > max_bytes_) {
    // Waiting is measured on the Env's clock; the condition variable only paces the checks.
    const int64_t deadline = env_.clock().NowMonotonicNanos() + max_wait_ms_ * 1'000'000;
    while (used_ + bytes > max_bytes_) {
      const int64_t now = env_.clock().NowMonotonicNanos();
      if (now >= deadline) {
        return ResourceExhaustedError("write buffer full (" + ToString(used_) + " of " +
                                      ToString(max_bytes_) + " bytes queued) for " +
                                      ToString(static_cast<uint64_t>(max_wait_ms_)) + " ms");
      }
      cv_.wait_for(lock, std::chrono::nanoseconds(std::min<int64_t>(deadline - now, 10'000'000)));
    }
  }
  used_ += bytes;
  return Status::Ok();
}

void WriteBudget::Release(uint64_t bytes) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    used_ -= bytes;
  }
  cv_.notify_all();
}

// ---------------------------------------------------------------------------------------
// Internal types

// A run of one partition's records in the group buffer that goes to one segment file.
struct Topic::Piece {
  std::shared_ptr<Segment> segment;
  bool new_segment = false;
  size_t start = 0;
  size_t end = 0;
  uint64_t next_offset = 0;
  int64_t max_timestamp = INT64_MIN;
  int64_t max_append_micros = INT64_MIN;
  std::vector<IndexEntry> index;
};

struct Topic::Partition {
  uint32_t id = 0;
  std::string dir;

  // Published state, read by readers.
  std::mutex mu;
  std::vector<std::shared_ptr<Segment>> segments;  // by base offset; never empty
  uint64_t end_offset = 0;
  uint64_t size_bytes = 0;

  // Leader-only state. After pass 2 of a commit it already describes the state after the group.
  std::unique_ptr<WritableFile> file;  // the active segment
  std::shared_ptr<Segment> active;
  uint64_t next_offset = 0;
  uint64_t write_pos = 0;  // bytes in the active segment
  int64_t seg_max_timestamp = INT64_MIN;
  uint64_t last_index_pos = 0;
  bool dirty = false;  // bytes written and not synced

  // The leader-only state above as it was before the current group (for RollbackGroup).
  uint64_t saved_next_offset = 0;
  uint64_t saved_write_pos = 0;
  int64_t saved_seg_max_timestamp = INT64_MIN;
  uint64_t saved_last_index_pos = 0;
  std::shared_ptr<Segment> saved_active;

  // Scratch of the current group.
  bool touched = false;
  uint64_t group_bytes = 0;
  size_t cursor = 0;
  std::vector<Piece> pieces;
  size_t pieces_used = 0;
};

struct Topic::Writer {
  // kRetire: seal active segments whose records all passed age retention (a quiet partition
  // would otherwise keep them: retention deletes whole sealed segments only).
  enum class Kind : uint8_t { kAppend, kSync, kClose, kRetire };
  Kind kind = Kind::kAppend;
  std::span<const RecordView> records;
  std::vector<AppendResult>* results = nullptr;
  std::vector<Hash128> id_hashes;
  uint64_t bytes = 0;
  Status status;
  bool done = false;
  // Set for a synchronous writer at the head of the queue when the leader hands it the lead.
  bool lead = false;
  std::condition_variable cv;
  // Asynchronous writers (AppendAsync) live on the heap, own their results and are called
  // back instead of woken; they hold `bytes` of the write budget until then.
  bool async = false;
  std::vector<AppendResult> own_results;
  Log::AppendDone on_done;
  WriteBudget* budget = nullptr;
};

struct Topic::DedupCandidate {
  Hash128 hash;
  uint64_t offset = 0;
  int64_t append_micros = 0;
  uint32_t partition = 0;
};

struct Topic::WatchRegistry {
  std::mutex mu;
  uint64_t next_id = 1;
  std::vector<std::pair<uint64_t, Log::AppendCallback>> fns;
};

class Topic::WatchHandle : public Log::Watch {
 public:
  WatchHandle(std::weak_ptr<WatchRegistry> registry, uint64_t id)
      : registry_(std::move(registry)), id_(id) {}
  ~WatchHandle() override {
    if (std::shared_ptr<WatchRegistry> r = registry_.lock()) {
      // Taking the lock also waits for a callback that is running right now.
      std::lock_guard<std::mutex> lock(r->mu);
      std::erase_if(r->fns, [this](const auto& entry) { return entry.first == id_; });
    }
  }

 private:
  std::weak_ptr<WatchRegistry> registry_;
  uint64_t id_;
};

// ---------------------------------------------------------------------------------------
// Construction and recovery

Topic::Topic(Env& env, std::string dir, std::string name, TopicOptions options,
             std::shared_ptr<WriteBudget> budget)
    : env_(env),
      dir_(std::move(dir)),
      name_(std::move(name)),
      options_(options),
      budget_(std::move(budget)),
      group_max_bytes_(std::clamp<uint64_t>(budget_->max_bytes() / 2, 64u << 10, 16u << 20)),
      watches_(std::make_shared<WatchRegistry>()),
      dedup_(options.dedup_window_ms > 0 ? options.dedup_max_ids : 0,
             options.dedup_window_ms * 1000) {
  partitions_.reserve(options_.partitions);
  for (uint32_t p = 0; p < options_.partitions; ++p) {
    auto part = std::make_unique<Partition>();
    part->id = p;
    part->dir = JoinPath(dir_, PartitionDirName(p));
    partitions_.push_back(std::move(part));
  }
}

Topic::~Topic() {
  std::lock_guard<std::mutex> lock(mu_);
  if (timer_pending_) env_.executor().Cancel(timer_id_);
}

Result<std::shared_ptr<Topic>> Topic::Create(Env& env, const std::string& dir,
                                             const std::string& name, const TopicOptions& options,
                                             std::shared_ptr<WriteBudget> budget) {
  FileSystem& fs = env.fs();
  std::shared_ptr<Topic> topic(new Topic(env, dir, name, options, std::move(budget)));
  CONVERGE_RETURN_IF_ERROR(fs.CreateDirs(dir));
  CONVERGE_RETURN_IF_ERROR(fs.SyncDir(ParentDir(dir)));
  for (auto& part : topic->partitions_) CONVERGE_RETURN_IF_ERROR(fs.CreateDirs(part->dir));
  CONVERGE_RETURN_IF_ERROR(fs.SyncDir(dir));
  for (auto& part : topic->partitions_) {
    auto seg = std::make_shared<Segment>();
    seg->base_offset = 0;
    seg->path = JoinPath(part->dir, SegmentFileName(0));
    CONVERGE_ASSIGN_OR_RETURN(part->file, fs.NewWritableFile(seg->path, OpenMode::kTruncate));
    // Also syncs the directory (the segment's entry with it).
    CONVERGE_RETURN_IF_ERROR(WriteStartFile(fs, part->dir, 0));
    part->segments.push_back(seg);
    part->active = seg;
  }
  // The topic exists once topic.json does; a crash before leaves a directory Open removes.
  CONVERGE_RETURN_IF_ERROR(
      fs.WriteFileAtomically(JoinPath(dir, "topic.json"), EncodeTopicMeta(name, options)));
  return topic;
}

Result<std::shared_ptr<Topic>> Topic::Recover(
    Env& env, const std::string& dir, const std::string& name, const TopicOptions& options,
    std::shared_ptr<WriteBudget> budget, const std::function<void(const std::string&)>& report) {
  std::shared_ptr<Topic> topic(new Topic(env, dir, name, options, std::move(budget)));
  const int64_t now = env.clock().NowWallMicros();
  const int64_t cutoff = now - options.dedup_window_ms * 1000;
  std::vector<DedupCandidate> candidates;
  for (uint32_t p = 0; p < options.partitions; ++p) {
    CONVERGE_RETURN_IF_ERROR(topic->RecoverPartition(p, cutoff, &candidates, report));
  }
  // Replay the remembered ids oldest first so the newest win the bounded memory.
  std::stable_sort(candidates.begin(), candidates.end(),
                   [](const DedupCandidate& a, const DedupCandidate& b) {
                     return a.append_micros < b.append_micros;
                   });
  const size_t keep =
      static_cast<size_t>(std::min<uint64_t>(candidates.size(), options.dedup_max_ids));
  for (size_t i = candidates.size() - keep; i < candidates.size(); ++i) {
    const DedupCandidate& c = candidates[i];
    topic->dedup_.FindOrInsert(c.hash, c.partition, c.offset, c.append_micros);
  }
  CONVERGE_RETURN_IF_ERROR(topic->EnforceRetention());
  return topic;
}

Status Topic::RecoverPartition(uint32_t index, int64_t dedup_cutoff_micros,
                               std::vector<DedupCandidate>* candidates,
                               const std::function<void(const std::string&)>& report) {
  FileSystem& fs = env_.fs();
  Partition& part = *partitions_[index];
  CONVERGE_RETURN_IF_ERROR(fs.CreateDirs(part.dir));
  CONVERGE_ASSIGN_OR_RETURN(std::vector<std::string> names, fs.ListDir(part.dir));
  std::vector<uint64_t> bases;
  for (const std::string& n : names) {
    uint64_t base = 0;
    if (ParseSegmentFileName(n, &base)) bases.push_back(base);
  }
  std::sort(bases.begin(), bases.end());
  std::optional<uint64_t> start = ReadStartFile(fs, part.dir);
  auto tell = [&](const std::string& what) {
    if (report) report("topic '" + name_ + "' partition " + ToString(index) + ": " + what);
  };
  if (!start.has_value() && fs.FileExists(JoinPath(part.dir, kStartFileName))) {
    tell("its START file is damaged: missing segments below the oldest one go unnoticed");
  }
  if (start.has_value() && !bases.empty() && bases.back() < *start) {
    // Retention never records a start beyond the newest segment: the file lies.
    tell("its START file says " + ToString(*start) + ", beyond every segment: ignored");
    start.reset();
  }
  if (start.has_value() &&
      std::find(bases.begin(), bases.end(), *start) == bases.end() && !bases.empty() &&
      bases.front() < *start) {
    // Segments below the start but none at it: not what retention leaves. Keep everything.
    tell("its START file says " + ToString(*start) + " but no segment starts there: ignored");
    start.reset();
  }
  if (start.has_value()) {
    // Segments below the recorded start were being deleted by retention when the process
    // stopped: finish the job.
    bool deleted = false;
    while (!bases.empty() && bases.front() < *start) {
      Status d = fs.DeleteFile(JoinPath(part.dir, SegmentFileName(bases.front())));
      if (!d.ok() && d.code() != StatusCode::kNotFound) return d;
      bases.erase(bases.begin());
      deleted = true;
    }
    if (deleted) CONVERGE_RETURN_IF_ERROR(fs.SyncDir(part.dir));
  }
  if (bases.empty()) {
    // A partition directory without segments (damage): start it again at its retained start
    // (offset 0 if unknown). What it held is lost; consumer groups notice their committed
    // offsets beyond the new end.
    const uint64_t base = start.value_or(0);
    tell("no segment files: starting again, empty, at offset " + ToString(base));
    const std::string path = JoinPath(part.dir, SegmentFileName(base));
    CONVERGE_ASSIGN_OR_RETURN(std::unique_ptr<WritableFile> f,
                              fs.NewWritableFile(path, OpenMode::kTruncate));
    CONVERGE_RETURN_IF_ERROR(f->Close());
    CONVERGE_RETURN_IF_ERROR(fs.SyncDir(part.dir));
    bases.push_back(base);
  }
  if (!start.has_value() && !fs.FileExists(JoinPath(part.dir, kStartFileName))) {
    // Written before the file existed: from now on the oldest segment is the recorded start.
    CONVERGE_RETURN_IF_ERROR(WriteStartFile(fs, part.dir, bases.front()));
  }
  if (start.has_value() && bases.front() > *start) {
    // Records between the retained start and the oldest segment are gone, and retention did
    // not delete them: keep them in the offsets as a damaged range instead of pretending the
    // partition starts later.
    auto gap = std::make_shared<Segment>();
    gap->base_offset = *start;
    gap->end_offset = bases.front();
    gap->path = JoinPath(part.dir, SegmentFileName(*start));
    gap->missing = true;
    part.segments.push_back(std::move(gap));
    tell("records [" + ToString(*start) + ", " + ToString(bases.front()) +
         ") are missing: their segment files are gone and retention did not delete them");
  }

  const uint64_t max_candidates = std::max<uint64_t>(options_.dedup_max_ids, 1);
  auto trim_candidates = [&] {
    // Keep the newest max ids: enough for the table, bounded while scanning.
    auto mid = candidates->end() - static_cast<ptrdiff_t>(max_candidates);
    std::nth_element(candidates->begin(), mid, candidates->end(),
                     [](const DedupCandidate& a, const DedupCandidate& b) {
                       return a.append_micros < b.append_micros;
                     });
    candidates->erase(candidates->begin(), mid);
  };
  const bool dedup_on = options_.dedup_window_ms > 0 && options_.dedup_max_ids > 0;
  ScanVisitor visit = [&](const RecordHeader& h, const uint8_t* body) {
    if (!dedup_on || h.id_len == 0 || h.append_micros < dedup_cutoff_micros) return;
    candidates->push_back(
        DedupCandidate{IdHash128(std::string_view(reinterpret_cast<const char*>(body), h.id_len)),
                       h.offset, h.append_micros, index});
    if (candidates->size() >= 2 * max_candidates) trim_candidates();
  };

  for (size_t i = 0; i < bases.size(); ++i) {
    const bool last = i + 1 == bases.size();
    auto seg = std::make_shared<Segment>();
    seg->base_offset = bases[i];
    seg->path = JoinPath(part.dir, SegmentFileName(bases[i]));
    CONVERGE_ASSIGN_OR_RETURN(std::unique_ptr<RandomAccessFile> file,
                              fs.NewRandomAccessFile(seg->path));
    CONVERGE_ASSIGN_OR_RETURN(uint64_t size, file->Size());
    CONVERGE_ASSIGN_OR_RETURN(ScanResult scan, ScanSegment(*file, size, bases[i], visit));
    seg->size_bytes = scan.valid_bytes;
    seg->end_offset = last ? scan.next_offset : bases[i + 1];
    seg->max_timestamp = scan.max_timestamp;
    seg->max_append_micros = scan.max_append_micros;
    seg->index = std::move(scan.index);
    if (scan.damaged) {
      tell("segment " + seg->path + " holds damaged records (reads report them as DATA_LOSS)");
    }
    if (!last && size > scan.valid_bytes) {
      tell("segment " + seg->path + " is unreadable after byte " + ToString(scan.valid_bytes) +
           ": records [" + ToString(scan.next_offset) + ", " + ToString(seg->end_offset) +
           ") are lost");
    }
    if (last) {
      if (size > scan.valid_bytes) {
        tell("cut " + ToString(size - scan.valid_bytes) + " bytes that are not a valid record " +
             "from the end of " + seg->path + "; the partition now ends at offset " +
             ToString(scan.next_offset) + " (a torn write is never acknowledged under fsync; " +
             "consumer groups that read past it are moved back)");
        // A torn tail: bytes of records that never completed. They were never acknowledged
        // (an acknowledged record was synced, and a sync covers every byte before it).
        CONVERGE_RETURN_IF_ERROR(fs.Truncate(seg->path, scan.valid_bytes));
      }
      CONVERGE_ASSIGN_OR_RETURN(part.file, fs.NewWritableFile(seg->path, OpenMode::kAppend));
      if (part.file->Size() != scan.valid_bytes) {
        return InternalError("segment " + seg->path + " has " + ToString(part.file->Size()) +
                             " bytes after truncation to " + ToString(scan.valid_bytes));
      }
      if (size > scan.valid_bytes) CONVERGE_RETURN_IF_ERROR(part.file->Sync());
      part.active = seg;
      part.next_offset = scan.next_offset;
      part.write_pos = scan.valid_bytes;
      part.seg_max_timestamp = scan.max_timestamp;
      part.last_index_pos = seg->index.empty() ? 0 : seg->index.back().position;
      part.end_offset = scan.next_offset;
    }
    part.size_bytes += seg->size_bytes;
    part.segments.push_back(std::move(seg));
  }
  if (part.segments.front()->missing) {
    // Age retention may drop the gap together with the segment after it, not before.
    part.segments.front()->max_append_micros = part.segments[1]->max_append_micros;
  }
  return Status::Ok();
}

// ---------------------------------------------------------------------------------------
// Write path

Status Topic::PrepareWriter(Writer& w, std::span<const RecordView> records, int64_t partition) {
  const uint32_t n_partitions = options_.partitions;
  if (partition >= static_cast<int64_t>(n_partitions)) {
    return InvalidArgumentError("topic '" + name_ + "' has no partition " +
                                ToString(static_cast<uint64_t>(partition)));
  }
  std::vector<AppendResult>& results = *w.results;
  w.kind = Writer::Kind::kAppend;
  w.records = records;
  // Records without a key stick to one partition per Append call, rotating between calls:
  // one batch touches one file instead of all of them.
  int64_t keyless_partition = -1;
  uint64_t bytes = 0;
  for (size_t i = 0; i < records.size(); ++i) {
    const RecordView& r = records[i];
    if (r.id.size() > kMaxIdBytes || r.key.size() > kMaxKeyBytes) {
      return InvalidArgumentError("record " + ToString(i) + ": id and key may have at most " +
                                  ToString(kMaxIdBytes) + " bytes each");
    }
    const uint64_t body = r.id.size() + r.key.size() + r.value.size();
    if (body > options_.max_record_bytes) {
      return InvalidArgumentError("record " + ToString(i) + ": " + ToString(body) +
                                  " bytes of id, key and value exceed max_record_bytes (" +
                                  ToString(options_.max_record_bytes) + ") of topic '" + name_ +
                                  "'");
    }
    if (r.timestamp_micros < 0) {
      return InvalidArgumentError("record " + ToString(i) + ": negative timestamp");
    }
    uint32_t p;
    if (partition >= 0) {
      p = static_cast<uint32_t>(partition);
    } else if (!r.key.empty()) {
      p = Log::PartitionForKey(r.key, n_partitions);
    } else {
      if (keyless_partition < 0) {
        keyless_partition = static_cast<int64_t>(round_robin_.fetch_add(1) % n_partitions);
      }
      p = static_cast<uint32_t>(keyless_partition);
    }
    results[i].partition = p;
    if (!r.id.empty()) {
      if (w.id_hashes.empty()) w.id_hashes.resize(records.size());
      w.id_hashes[i] = IdHash128(r.id);
    }
    bytes += EncodedRecordBytes(r.id.size(), r.key.size(), r.value.size());
  }
  w.bytes = bytes;
  return Status::Ok();
}

Result<std::vector<AppendResult>> Topic::Append(std::span<const RecordView> records,
                                                int64_t partition) {
  std::vector<AppendResult> results(records.size());
  Writer w;
  w.results = &results;
  CONVERGE_RETURN_IF_ERROR(PrepareWriter(w, records, partition));
  if (records.empty()) return results;
  CONVERGE_RETURN_IF_ERROR(budget_->Acquire(w.bytes));
  Status s;
  {
    std::unique_lock<std::mutex> lock(mu_);
    s = RunWriter(w, lock);
  }
  budget_->Release(w.bytes);
  if (!s.ok()) return s;
  return results;
}

void Topic::AppendAsync(std::span<const RecordView> records, int64_t partition,
                        Log::AppendDone done) {
  auto w = std::make_unique<Writer>();
  w->own_results.resize(records.size());
  w->results = &w->own_results;
  Status s = PrepareWriter(*w, records, partition);
  if (s.ok() && records.empty()) {
    done(std::move(w->own_results));
    return;
  }
  if (s.ok()) s = budget_->Acquire(w->bytes);
  if (!s.ok()) {
    done(std::move(s));
    return;
  }
  w->async = true;
  w->budget = budget_.get();
  w->on_done = std::move(done);
  std::unique_lock<std::mutex> lock(mu_);
  if (closed_) {
    w->status = ClosedStatus();
    lock.unlock();
    std::vector<Writer*> one{w.release()};
    FinishAsync(one);
    return;
  }
  writers_.push_back(w.release());
  if (leading_) return;  // the leader takes it with its next group
  leading_ = true;
  if (background_) {
    lock.unlock();
    background_([self = shared_from_this()] {
      std::unique_lock<std::mutex> l(self->mu_);
      self->Lead(l, nullptr);
    });
    return;
  }
  Lead(lock, nullptr);
}

void Topic::FinishAsync(std::vector<Writer*>& writers) {
  for (Writer* w : writers) {
    std::unique_ptr<Writer> owned(w);
    owned->budget->Release(owned->bytes);
    Log::AppendDone done = std::move(owned->on_done);
    if (owned->status.ok()) {
      done(std::move(owned->own_results));
    } else {
      done(std::move(owned->status));
    }
  }
  writers.clear();
}

Status Topic::Sync() {
  Writer w;
  w.kind = Writer::Kind::kSync;
  std::unique_lock<std::mutex> lock(mu_);
  return RunWriter(w, lock);
}

Status Topic::WriteHealth(bool* sticky) {
  std::lock_guard<std::mutex> lock(mu_);
  *sticky = !failed_.ok();
  return failed_.ok() ? last_write_error_ : failed_;
}

void Topic::ClearWriteError() {
  std::lock_guard<std::mutex> lock(mu_);
  last_write_error_ = Status::Ok();
}

Status Topic::ClosedStatus() const {
  if (deleted_) return NotFoundError("topic '" + name_ + "' was deleted");
  return FailedPreconditionError("topic '" + name_ + "' is closed");
}

Status Topic::Close(bool deleting) {
  Writer w;
  w.kind = Writer::Kind::kClose;
  std::unique_lock<std::mutex> lock(mu_);
  deleted_ = deleted_ || deleting;
  if (closed_) return Status::Ok();
  return RunWriter(w, lock);
}

Status Topic::RunWriter(Writer& w, std::unique_lock<std::mutex>& lock) {
  if (closed_) return ClosedStatus();
  writers_.push_back(&w);
  if (!leading_) {
    leading_ = true;
    w.lead = true;
  }
  while (!w.done && !w.lead) w.cv.wait(lock);
  if (w.done) return w.status;
  Lead(lock, &w);
  CONVERGE_CHECK(w.done);
  return w.status;
}

void Topic::Lead(std::unique_lock<std::mutex>& lock, Writer* self) {
  std::vector<Writer*> finished;
  while (true) {
    CONVERGE_CHECK(leading_ && !writers_.empty());
    Writer* head = writers_.front();
    head->lead = false;
    // The leader commits every batch queued so far, up to the group bound.
    Status s;
    if (closed_) {
      s = ClosedStatus();
    } else if (!failed_.ok()) {
      s = failed_;
    }
    group_.clear();
    uint64_t group_bytes = 0;
    bool force_sync = false;
    bool close = false;
    for (Writer* x : writers_) {
      if (!group_.empty() && x->kind == Writer::Kind::kAppend &&
          group_bytes + x->bytes > group_max_bytes_) {
        break;
      }
      group_.push_back(x);
      group_bytes += x->bytes;
      if (x->kind != Writer::Kind::kAppend) force_sync = true;
      if (x->kind == Writer::Kind::kClose) {
        close = true;
        break;
      }
    }
    if (s.ok()) {
      lock.unlock();
      s = Commit(group_, force_sync);
      if (close) {
        Status c = CloseFilesLeader();
        if (s.ok()) s = c;
      }
      lock.lock();
      if (close) {
        closed_ = true;
        if (timer_pending_) {
          env_.executor().Cancel(timer_id_);
          timer_pending_ = false;
        }
      } else {
        if (!s.ok() && needs_reopen_) failed_ = s;
        last_write_error_ = s;
        if (failed_.ok() && options_.durability == Durability::kInterval && !timer_pending_) {
          // Also after a failed sync: the timer tries again.
          bool unsynced = false;
          for (const auto& part : partitions_) unsynced = unsynced || part->dirty;
          if (unsynced) ScheduleSyncTimerLocked();
        }
      }
    }
    for (Writer* x : group_) {
      CONVERGE_CHECK(!writers_.empty() && writers_.front() == x);
      writers_.pop_front();
      x->status = s;
      if (x->async) {
        finished.push_back(x);
      } else {
        x->done = true;
        if (x != self) x->cv.notify_one();
      }
    }
    // Who leads next: nobody (empty queue), the synchronous writer at the head, or (the head
    // being asynchronous) a new background task — one per group, so a busy topic shares the
    // background threads with other work and its next sync starts while this thread calls
    // back — or, without background, this thread.
    bool again = false;
    if (writers_.empty()) {
      leading_ = false;
    } else if (Writer* next = writers_.front(); !next->async) {
      next->lead = true;
      next->cv.notify_one();
    } else if (background_) {
      lock.unlock();
      background_([t = shared_from_this()] {
        std::unique_lock<std::mutex> l(t->mu_);
        t->Lead(l, nullptr);
      });
      lock.lock();
    } else {
      again = true;
    }
    if (!finished.empty()) {
      lock.unlock();
      FinishAsync(finished);
      lock.lock();
    }
    if (!again) return;
  }
}

uint8_t* Topic::GroupBuffer(size_t bytes) {
  if (bytes > group_buf_capacity_ || group_buf_capacity_ > 4 * std::max<size_t>(bytes, 1 << 20)) {
    const size_t cap = std::max<size_t>(bytes, 64u << 10);
    group_buf_.reset(new uint8_t[cap]);
    group_buf_capacity_ = cap;
  }
  return group_buf_.get();
}

Status Topic::Commit(std::span<Writer* const> group, bool force_sync) {
  const int64_t now = env_.clock().NowWallMicros();
  touched_.clear();
  rolled_.clear();
  group_ids_.clear();

  // Pass 1: duplicates, offsets and the bytes each partition receives.
  constexpr size_t kPrefetchDistance = 8;  // hides the dedup table's cache misses
  for (Writer* w : group) {
    if (w->kind != Writer::Kind::kAppend) continue;
    const bool has_ids = !w->id_hashes.empty();
    if (has_ids) {
      for (size_t i = 0; i < std::min(kPrefetchDistance, w->records.size()); ++i) {
        dedup_.Prefetch(w->id_hashes[i]);
      }
    }
    for (size_t i = 0; i < w->records.size(); ++i) {
      const RecordView& r = w->records[i];
      AppendResult& res = (*w->results)[i];
      Partition& part = *partitions_[res.partition];
      if (has_ids && i + kPrefetchDistance < w->records.size()) {
        dedup_.Prefetch(w->id_hashes[i + kPrefetchDistance]);
      }
      if (!r.id.empty()) {
        const DedupTable::Entry* e =
            dedup_.FindOrInsert(w->id_hashes[i], res.partition, part.next_offset, now);
        if (e != nullptr) {
          res.partition = e->partition;
          res.offset = e->offset;
          res.duplicate = true;
          continue;
        }
        if (dedup_.enabled()) {
          group_ids_.push_back(RememberedId{w->id_hashes[i], res.partition, part.next_offset});
        }
      }
      if (!part.touched) {
        part.touched = true;
        part.group_bytes = 0;
        part.pieces_used = 0;
        part.saved_next_offset = part.next_offset;
        part.saved_write_pos = part.write_pos;
        part.saved_seg_max_timestamp = part.seg_max_timestamp;
        part.saved_last_index_pos = part.last_index_pos;
        part.saved_active = part.active;
        touched_.push_back(res.partition);
      }
      res.offset = part.next_offset++;
      part.group_bytes += EncodedRecordBytes(r.id.size(), r.key.size(), r.value.size());
    }
  }

  // Pass 2: encode into one buffer, one region per partition, split where segments roll.
  size_t total = 0;
  for (uint32_t p : touched_) {
    Partition& part = *partitions_[p];
    part.cursor = total;
    total += part.group_bytes;
  }
  uint8_t* buf = GroupBuffer(total);
  for (Writer* w : group) {
    if (w->kind != Writer::Kind::kAppend) continue;
    for (size_t i = 0; i < w->records.size(); ++i) {
      const AppendResult& res = (*w->results)[i];
      if (res.duplicate) continue;
      const RecordView& r = w->records[i];
      Partition& part = *partitions_[res.partition];
      const size_t size = EncodedRecordBytes(r.id.size(), r.key.size(), r.value.size());
      const bool roll = part.write_pos > 0 && part.write_pos + size > options_.segment_max_bytes;
      if (roll || part.pieces_used == 0) {
        if (part.pieces.size() == part.pieces_used) part.pieces.emplace_back();
        Piece& piece = part.pieces[part.pieces_used++];
        piece.new_segment = roll;
        if (roll) {
          auto seg = std::make_shared<Segment>();
          seg->base_offset = res.offset;
          seg->path = JoinPath(part.dir, SegmentFileName(res.offset));
          seg->end_offset = res.offset;
          part.active = seg;
          part.write_pos = 0;
          part.seg_max_timestamp = INT64_MIN;
          part.last_index_pos = 0;
        }
        piece.segment = part.active;
        piece.start = part.cursor;
        piece.end = part.cursor;
        piece.max_timestamp = INT64_MIN;
        piece.max_append_micros = INT64_MIN;
        piece.index.clear();
      }
      Piece& piece = part.pieces[part.pieces_used - 1];
      const int64_t ts = r.timestamp_micros != 0 ? r.timestamp_micros : now;
      if (part.write_pos == 0 || part.write_pos - part.last_index_pos >= kIndexIntervalBytes) {
        piece.index.push_back(
            IndexEntry{static_cast<uint32_t>(res.offset - piece.segment->base_offset),
                       static_cast<uint32_t>(part.write_pos), part.seg_max_timestamp});
        part.last_index_pos = part.write_pos;
      }
      EncodeRecord(buf + part.cursor, res.offset, ts, now, r.id, r.key, r.value);
      part.cursor += size;
      part.write_pos += size;
      part.seg_max_timestamp = std::max(part.seg_max_timestamp, ts);
      piece.end = part.cursor;
      piece.next_offset = res.offset + 1;
      piece.max_timestamp = std::max(piece.max_timestamp, ts);
      piece.max_append_micros = now;
    }
  }

  // Write: one Append per segment file touched, then sync as the policy says. Nothing is
  // published before every partition's bytes are written (and synced under kFsync): a group
  // that fails anywhere is rolled back in every partition, so a batch spanning partitions is
  // appended whole or not at all.
  auto write_and_sync = [&]() -> Status {
    for (uint32_t p : touched_) {
      Partition& part = *partitions_[p];
      for (size_t k = 0; k < part.pieces_used; ++k) {
        Piece& piece = part.pieces[k];
        if (piece.new_segment) {
          CONVERGE_RETURN_IF_ERROR(Roll(part, *piece.segment));
          if (rolled_.empty() || rolled_.back() != p) rolled_.push_back(p);
        }
        CONVERGE_RETURN_IF_ERROR(
            part.file
                ->Append(std::span<const uint8_t>(buf + piece.start, piece.end - piece.start))
                .WithContext("append to " + piece.segment->path));
        part.dirty = true;
      }
    }
    bool sync_all = force_sync;
    if (options_.durability == Durability::kInterval &&
        env_.clock().NowMonotonicNanos() - last_sync_mono_ns_ >=
            options_.sync_interval_ms * 1'000'000) {
      sync_all = true;
    }
    if (sync_all) {
      CONVERGE_RETURN_IF_ERROR(SyncDirty(false));
    } else if (options_.durability == Durability::kFsync) {
      CONVERGE_RETURN_IF_ERROR(SyncDirty(true));
    }
    return Status::Ok();
  };
  if (Status written = write_and_sync(); !written.ok()) {
    Status undone = RollbackGroup();
    if (!undone.ok()) {
      needs_reopen_ = true;
      return written.WithMessage(std::string(written.message()) +
                                 "; undoing the partial append failed too (" +
                                 undone.ToString() + "): reopen the log");
    }
    return written;
  }

  Publish();
  NotifyWatches();
  for (Writer* w : group) {
    if (w->kind == Writer::Kind::kRetire) {
      CONVERGE_RETURN_IF_ERROR(SealExpiredActiveSegments(now));
      break;
    }
  }
  for (uint32_t p : rolled_) {
    std::lock_guard<std::mutex> lock(retention_mu_);
    // The records are durable already; a failed deletion is retried at the next roll.
    EnforceRetentionFor(*partitions_[p]).IgnoreError();
  }
  return Status::Ok();
}

int64_t Topic::AgeCutoffMicros(int64_t now_micros) const {
  // Records younger than the dedup window are kept whatever the age limit, so the ids a
  // restart rebuilds the dedup memory from cover the whole window.
  const int64_t keep_ms = std::max(options_.retention_max_age_ms, options_.dedup_window_ms);
  return now_micros - keep_ms * 1000;
}

Status Topic::SealExpiredActiveSegments(int64_t now_micros) {
  if (options_.retention_max_age_ms <= 0) return Status::Ok();
  const int64_t cutoff = AgeCutoffMicros(now_micros);
  for (auto& part_ptr : partitions_) {
    Partition& part = *part_ptr;
    if (part.write_pos == 0 || part.active->max_append_micros >= cutoff) continue;
    // Every record of the active segment is expired: start an empty one at the end offset,
    // so that retention can delete the old one.
    auto seg = std::make_shared<Segment>();
    seg->base_offset = part.next_offset;
    seg->end_offset = part.next_offset;
    seg->path = JoinPath(part.dir, SegmentFileName(part.next_offset));
    if (Status rolled = Roll(part, *seg); !rolled.ok()) {
      // Keep appending to the old active segment; the new one must not exist (recovery would
      // end the old segment at its base).
      if (Status undone = ReopenActive(part, seg->path); !undone.ok()) needs_reopen_ = true;
      return rolled;
    }
    {
      std::lock_guard<std::mutex> lock(part.mu);
      part.segments.push_back(seg);
    }
    part.active = seg;
    part.write_pos = 0;
    part.seg_max_timestamp = INT64_MIN;
    part.last_index_pos = 0;
    if (std::find(rolled_.begin(), rolled_.end(), part.id) == rolled_.end()) {
      rolled_.push_back(part.id);
    }
  }
  return Status::Ok();
}

Status Topic::ReopenActive(Partition& part, const std::string& stray) {
  FileSystem& fs = env_.fs();
  if (part.file != nullptr) {
    part.file->Close().IgnoreError();  // its state is what we are about to repair
    part.file.reset();
  }
  // On any error go on repairing what can be: the caller then refuses appends until the log
  // is reopened, and the reopened log should find the files as they were before the group.
  Status first;
  if (!stray.empty()) {
    Status d = fs.DeleteFile(stray);
    if (!d.ok() && d.code() != StatusCode::kNotFound) first = d;
    // Durably gone before anything more is appended to the older segment: recovery would
    // otherwise end that segment at the stray one's base.
    Status synced = fs.SyncDir(part.dir);
    if (first.ok()) first = synced;
  }
  // Truncate also makes the kept bytes durable.
  CONVERGE_RETURN_IF_ERROR(fs.Truncate(part.active->path, part.write_pos));
  CONVERGE_ASSIGN_OR_RETURN(part.file, fs.NewWritableFile(part.active->path, OpenMode::kAppend));
  if (part.file->Size() != part.write_pos) {
    return InternalError("segment " + part.active->path + " has " + ToString(part.file->Size()) +
                         " bytes after truncation to " + ToString(part.write_pos));
  }
  part.dirty = false;
  return first;
}

Status Topic::RollbackGroup() {
  for (const RememberedId& id : group_ids_) dedup_.Forget(id.hash, id.partition, id.offset);
  group_ids_.clear();
  Status first;
  for (uint32_t p : touched_) {
    Partition& part = *partitions_[p];
    // Segments this group created (the first one is the oldest: the others follow it).
    std::string stray;
    std::vector<std::string> more;
    for (size_t k = 0; k < part.pieces_used; ++k) {
      Piece& piece = part.pieces[k];
      if (piece.new_segment) {
        if (stray.empty()) {
          stray = piece.segment->path;
        } else {
          more.push_back(piece.segment->path);
        }
      }
      piece.segment.reset();
    }
    for (const std::string& path : more) {
      Status d = env_.fs().DeleteFile(path);
      if (first.ok() && !d.ok() && d.code() != StatusCode::kNotFound) first = d;
    }
    part.next_offset = part.saved_next_offset;
    part.write_pos = part.saved_write_pos;
    part.seg_max_timestamp = part.saved_seg_max_timestamp;
    part.last_index_pos = part.saved_last_index_pos;
    part.active = std::move(part.saved_active);
    part.touched = false;
    Status s = ReopenActive(part, stray);
    if (first.ok() && !s.ok()) first = s;
  }
  touched_.clear();
  rolled_.clear();
  return first;
}

Status Topic::Roll(Partition& part, const Segment& segment) {
  FileSystem& fs = env_.fs();
  // The sealed segment is complete on disk before its successor exists, so recovery never
  // sees a newer segment after a hole in an older one.
  CONVERGE_RETURN_IF_ERROR(part.file->Sync().WithContext("sync before roll"));
  CONVERGE_RETURN_IF_ERROR(part.file->Close());
  part.dirty = false;
  part.file.reset();
  CONVERGE_ASSIGN_OR_RETURN(part.file, fs.NewWritableFile(segment.path, OpenMode::kTruncate));
  return fs.SyncDir(part.dir);
}

Status Topic::SyncDirty(bool only_touched) {
  auto sync = [](Partition& part) -> Status {
    CONVERGE_RETURN_IF_ERROR(part.file->Sync().WithContext("sync " + part.active->path));
    part.dirty = false;
    return Status::Ok();
  };
  std::vector<Partition*> dirty;
  auto consider = [&dirty](Partition& part) {
    if (part.dirty && part.file != nullptr) dirty.push_back(&part);
  };
  if (only_touched) {
    for (uint32_t p : touched_) consider(*partitions_[p]);
  } else {
    for (auto& part : partitions_) consider(*part);
  }
  Status first;
  if (dirty.size() > 1 && background_) {
    // The files of a group are synced in parallel (a group touching 4 partitions would
    // otherwise wait for 4 syncs one after another): helpers on the background executor and
    // this thread claim files one at a time; this thread then waits only for files a helper
    // is syncing right now, so a busy executor (or a simulated one that runs nothing
    // meanwhile) costs time, never progress.
    struct FanOut {
      std::vector<Partition*> parts;
      std::vector<Status> results;
      std::atomic<size_t> next{0};
      std::mutex mu;
      std::condition_variable cv;
      size_t finished = 0;
    };
    auto fan = std::make_shared<FanOut>();
    fan->parts = dirty;
    fan->results.resize(dirty.size());
    auto work = [sync](FanOut& f) {
      for (size_t i; (i = f.next.fetch_add(1)) < f.parts.size();) {
        Status s = sync(*f.parts[i]);
        std::lock_guard<std::mutex> lock(f.mu);
        f.results[i] = std::move(s);
        if (++f.finished == f.parts.size()) f.cv.notify_all();
      }
    };
    for (size_t k = 1; k < dirty.size(); ++k) {
      background_([fan, work] { work(*fan); });
    }
    work(*fan);
    std::unique_lock<std::mutex> lock(fan->mu);
    fan->cv.wait(lock, [&] { return fan->finished == fan->parts.size(); });
    for (Status& s : fan->results) {
      if (first.ok() && !s.ok()) first = std::move(s);
    }
  } else {
    for (Partition* part : dirty) {
      first = sync(*part);
      if (!first.ok()) break;
    }
  }
  CONVERGE_RETURN_IF_ERROR(first);
  last_sync_mono_ns_ = env_.clock().NowMonotonicNanos();
  return Status::Ok();
}

void Topic::Publish() {
  for (uint32_t p : touched_) {
    Partition& part = *partitions_[p];
    {
      std::lock_guard<std::mutex> lock(part.mu);
      for (size_t k = 0; k < part.pieces_used; ++k) {
        Piece& piece = part.pieces[k];
        Segment& seg = *piece.segment;
        if (piece.new_segment) {
          part.segments.back()->end_offset = seg.base_offset;
          part.segments.push_back(piece.segment);
        }
        seg.size_bytes += piece.end - piece.start;
        seg.index.insert(seg.index.end(), piece.index.begin(), piece.index.end());
        seg.end_offset = piece.next_offset;
        seg.max_timestamp = std::max(seg.max_timestamp, piece.max_timestamp);
        seg.max_append_micros = std::max(seg.max_append_micros, piece.max_append_micros);
      }
      part.end_offset = part.next_offset;
      part.size_bytes += part.group_bytes;
    }
    for (size_t k = 0; k < part.pieces_used; ++k) part.pieces[k].segment.reset();
    part.touched = false;
  }
}

void Topic::NotifyWatches() {
  std::lock_guard<std::mutex> lock(watches_->mu);
  if (watches_->fns.empty()) return;
  for (uint32_t p : touched_) {
    const uint64_t end = partitions_[p]->next_offset;
    for (auto& entry : watches_->fns) entry.second(p, end);
  }
}

Status Topic::CloseFilesLeader() {
  Status first;
  for (auto& part : partitions_) {
    if (part->file == nullptr) continue;
    Status s = part->file->Close();
    if (first.ok() && !s.ok()) first = s;
    part->file.reset();
  }
  return first;
}

void Topic::ScheduleSyncTimerLocked() {
  timer_pending_ = true;
  std::weak_ptr<Topic> weak = weak_from_this();
  timer_id_ = env_.executor().Schedule(options_.sync_interval_ms * 1'000'000, [weak] {
    if (std::shared_ptr<Topic> topic = weak.lock()) topic->OnSyncTimer();
  });
}

void Topic::OnSyncTimer() {
  std::unique_lock<std::mutex> lock(mu_);
  timer_pending_ = false;
  if (closed_ || !failed_.ok()) return;
  if (leading_ || !writers_.empty()) {
    // A leader is at work; it syncs if the interval has passed. Look again later in case it
    // was the last one for a while.
    ScheduleSyncTimerLocked();
    return;
  }
  Writer w;
  w.kind = Writer::Kind::kSync;
  RunWriter(w, lock).IgnoreError();  // a failure is sticky and reported to the next Append
}

// ---------------------------------------------------------------------------------------
// Read path

Status Topic::DataLoss(uint32_t partition, uint64_t from, uint64_t to, std::string_view why) const {
  return DataLossError("topic '" + name_ + "' partition " + ToString(partition) + ": records [" +
                       ToString(from) + ", " + ToString(to) + ") are damaged (" + std::string(why) +
                       "); resume at offset " + ToString(to));
}

Result<std::shared_ptr<RandomAccessFile>> Topic::ReaderFor(Partition& part, Segment& seg) {
  std::lock_guard<std::mutex> lock(part.mu);
  if (seg.reader == nullptr) {
    CONVERGE_ASSIGN_OR_RETURN(std::unique_ptr<RandomAccessFile> f,
                              env_.fs().NewRandomAccessFile(seg.path));
    // Bound open files: a partition caches a reader for its active segment and for the one
    // older segment read last. Reads in progress keep their own reference.
    const Segment* active = part.segments.back().get();
    if (&seg != active) {
      for (const auto& other : part.segments) {
        if (other.get() != active) other->reader.reset();
      }
    }
    seg.reader = std::move(f);
  }
  return seg.reader;
}

namespace {

struct ReadPlan {
  std::shared_ptr<Segment> segment;
  uint64_t size = 0;      // readable bytes of the segment
  uint64_t seg_end = 0;   // first offset past the segment
  uint64_t position = 0;  // where to start parsing
  uint64_t expected = 0;  // offset of the record at `position`
};

// The last index entry at or before `offset` (records before it are skipped by the caller).
void PlanFromIndex(const Segment& seg, uint64_t offset, ReadPlan* plan) {
  const uint64_t rel = offset - seg.base_offset;
  auto it = std::upper_bound(seg.index.begin(), seg.index.end(), rel,
                             [](uint64_t r, const IndexEntry& e) { return r < e.rel_offset; });
  if (it == seg.index.begin()) {
    plan->position = 0;
    plan->expected = seg.base_offset;
  } else {
    --it;
    plan->position = it->position;
    plan->expected = seg.base_offset + it->rel_offset;
  }
}

}  // namespace

Result<ReadBatch> Topic::Read(uint32_t partition, uint64_t offset, size_t max_records,
                              size_t max_bytes) {
  if (partition >= partitions_.size()) {
    return InvalidArgumentError("topic '" + name_ + "' has no partition " + ToString(partition));
  }
  Partition& part = *partitions_[partition];
  for (int attempt = 0;; ++attempt) {
    ReadPlan plan;
    {
      std::lock_guard<std::mutex> lock(part.mu);
      offset = std::max(offset, part.segments.front()->base_offset);
      if (offset >= part.end_offset || max_records == 0) {
        ReadBatch empty;
        empty.next_offset = std::min(offset, part.end_offset);
        return empty;
      }
      auto it = std::upper_bound(
          part.segments.begin(), part.segments.end(), offset,
          [](uint64_t o, const std::shared_ptr<Segment>& s) { return o < s->base_offset; });
      plan.segment = *(it - 1);
      plan.size = plan.segment->size_bytes;
      plan.seg_end = plan.segment->end_offset;
      if (plan.segment->missing) {
        return DataLoss(partition, offset, plan.seg_end,
                        "missing: segment files below offset " + ToString(plan.seg_end) +
                            " are gone, and retention did not delete them");
      }
      PlanFromIndex(*plan.segment, offset, &plan);
    }
    // Size the first read for what the caller wants: max_bytes, or max_records records of the
    // segment's average size, whichever is smaller (the read grows for a larger record).
    const uint64_t records_in_segment = plan.seg_end - plan.segment->base_offset;
    const uint64_t avg_record = records_in_segment > 0 ? plan.size / records_in_segment + 1 : 256;
    const uint64_t by_records =
        max_records > UINT64_MAX / (2 * avg_record) ? UINT64_MAX : max_records * 2 * avg_record;
    const size_t chunk_bytes = static_cast<size_t>(std::clamp<uint64_t>(
        std::min<uint64_t>(std::min<uint64_t>(max_bytes, by_records), kReadChunkMaxBytes) +
            kIndexIntervalBytes,
        kReadChunkMinBytes, kReadChunkMaxBytes));
    Result<std::shared_ptr<RandomAccessFile>> file = ReaderFor(part, *plan.segment);
    Result<ReadBatch> batch =
        file.ok() ? ReadSegment(partition, **file, plan.size, plan.seg_end, plan.position,
                                plan.expected, offset, max_records, max_bytes, chunk_bytes)
                  : Result<ReadBatch>(file.status());
    if (!batch.ok() && batch.status().code() != StatusCode::kDataLoss && attempt < 2) {
      // Retention may have deleted the segment under us; then read from the new start.
      std::lock_guard<std::mutex> lock(part.mu);
      if (std::find(part.segments.begin(), part.segments.end(), plan.segment) ==
          part.segments.end()) {
        continue;
      }
    }
    return batch;
  }
}

Result<ReadBatch> Topic::ReadSegment(uint32_t partition, const RandomAccessFile& file,
                                     uint64_t size, uint64_t seg_end, uint64_t pos,
                                     uint64_t expected, uint64_t offset, size_t max_records,
                                     size_t max_bytes, size_t chunk_target) {
  ReadBatch batch;
  std::shared_ptr<uint8_t> buf;
  size_t batch_bytes = 0;
  size_t need = 0;  // size of a record that did not fit the previous chunk
  while (true) {
    if (pos >= size) {
      // The readable bytes ended before the segment's offsets did: a truncated segment.
      if (!batch.records.empty() || expected >= seg_end) break;
      return DataLoss(partition, expected, seg_end, "missing: segment file is truncated");
    }
    const size_t chunk =
        static_cast<size_t>(std::min<uint64_t>(size - pos, std::max(need, chunk_target)));
    buf.reset(new uint8_t[chunk], std::default_delete<uint8_t[]>());
    CONVERGE_ASSIGN_OR_RETURN(size_t n, file.Read(pos, chunk, buf.get()));
    if (n < chunk) size = pos + n;  // the file is shorter than it was: treat as truncated
    const uint8_t* data = buf.get();
    need = 0;
    size_t q = 0;
    const char* damage = nullptr;
    bool full = false;
    while (q + kRecordHeaderBytes <= n) {
      RecordHeader h;
      if (!DecodeHeader(data + q, &h)) {
        damage = "checksum mismatch in a record header";
        break;
      }
      if (h.offset >= seg_end) {
        size = pos + q;  // the segment's offsets end here
        break;
      }
      if (h.offset < expected) {
        damage = "record out of order";
        break;
      }
      if (h.offset > expected) {
        // Valid records with offsets [expected, h.offset) are missing.
        if (!batch.records.empty()) {
          full = true;
          break;
        }
        if (offset < h.offset) {
          return DataLoss(partition, expected, h.offset, "missing from the segment");
        }
        expected = h.offset;
      }
      const size_t rec = h.record_bytes();
      if (q + rec > n) {
        need = rec;
        break;
      }
      if (!BodyValid(h, data + q + kRecordHeaderBytes)) {
        damage = "checksum mismatch in a record body";
        break;
      }
      if (h.offset >= offset) {
        const char* body = reinterpret_cast<const char*>(data + q + kRecordHeaderBytes);
        StoredRecord& out = batch.records.emplace_back();
        out.offset = h.offset;
        out.timestamp_micros = h.timestamp_micros;
        out.id = std::string_view(body, h.id_len);
        out.key = std::string_view(body + h.id_len, h.key_len);
        out.value = std::string_view(body + h.id_len + h.key_len, h.value_len);
        batch_bytes += rec;
      }
      q += rec;
      expected = h.offset + 1;
      if (batch.records.size() >= max_records || (batch_bytes >= max_bytes && batch_bytes > 0)) {
        full = true;
        break;
      }
    }
    if (full || (!batch.records.empty() && damage == nullptr)) break;
    if (damage != nullptr) {
      if (!batch.records.empty()) break;  // return the good records; the next read reports
      SegmentCursor cursor(file, size, kScanChunkBytes);
      CONVERGE_ASSIGN_OR_RETURN(std::optional<FoundRecord> found,
                                FindNextValidRecord(cursor, pos + q + 1, expected));
      uint64_t resume = seg_end;
      if (found.has_value() && found->header.offset < seg_end) resume = found->header.offset;
      if (found.has_value() && resume < seg_end && offset >= resume) {
        // The damage lies before the requested offset; carry on after it.
        pos = found->position;
        expected = resume;
        continue;
      }
      return DataLoss(partition, expected, resume, damage);
    }
    if (pos + n >= size && (need > 0 || q < n)) {
      // A partial record at the end of the readable bytes.
      size = pos + q;
      need = 0;
    }
    pos += q;
  }
  batch.next_offset = expected;
  batch.storage = std::move(buf);
  return batch;
}

Result<uint64_t> Topic::OffsetForTime(uint32_t partition, int64_t timestamp_micros) {
  if (partition >= partitions_.size()) {
    return InvalidArgumentError("topic '" + name_ + "' has no partition " + ToString(partition));
  }
  Partition& part = *partitions_[partition];
  uint64_t min_base = 0;
  while (true) {
    ReadPlan plan;
    {
      std::lock_guard<std::mutex> lock(part.mu);
      for (const auto& seg : part.segments) {
        if (seg->base_offset >= min_base && seg->max_timestamp >= timestamp_micros &&
            seg->size_bytes > 0) {
          plan.segment = seg;
          break;
        }
      }
      if (plan.segment == nullptr) return part.end_offset;
      const Segment& seg = *plan.segment;
      plan.size = seg.size_bytes;
      plan.seg_end = seg.end_offset;
      // The last entry whose preceding records are all older than the time.
      auto it = std::partition_point(seg.index.begin(), seg.index.end(), [&](const IndexEntry& e) {
        return e.prefix_max_ts < timestamp_micros;
      });
      if (it == seg.index.begin()) {
        plan.position = 0;
        plan.expected = seg.base_offset;
      } else {
        --it;
        plan.position = it->position;
        plan.expected = seg.base_offset + it->rel_offset;
      }
    }
    CONVERGE_ASSIGN_OR_RETURN(std::shared_ptr<RandomAccessFile> file,
                              ReaderFor(part, *plan.segment));
    SegmentCursor cursor(*file, plan.size, kScanChunkBytes);
    uint64_t pos = plan.position;
    while (pos < plan.size) {
      CONVERGE_ASSIGN_OR_RETURN(ProbedRecord probed, ProbeRecord(cursor, pos));
      if (probed.state == RecordState::kValid && probed.header.offset >= plan.expected) {
        if (probed.header.offset >= plan.seg_end) break;
        if (probed.header.timestamp_micros >= timestamp_micros) return probed.header.offset;
        pos += probed.header.record_bytes();
        plan.expected = probed.header.offset + 1;
        continue;
      }
      // Skip damage: a damaged record cannot be an answer.
      CONVERGE_ASSIGN_OR_RETURN(std::optional<FoundRecord> found,
                                FindNextValidRecord(cursor, pos + 1, plan.expected));
      if (!found.has_value()) break;
      pos = found->position;
    }
    min_base = plan.segment->base_offset + 1;
  }
}

// ---------------------------------------------------------------------------------------
// Metadata, watches, retention, deletion

TopicInfo Topic::Describe() {
  TopicInfo info;
  info.name = name_;
  info.options = options_;
  for (auto& part : partitions_) {
    std::lock_guard<std::mutex> lock(part->mu);
    PartitionInfo pi;
    pi.partition = part->id;
    pi.start_offset = part->segments.front()->base_offset;
    pi.end_offset = part->end_offset;
    pi.size_bytes = part->size_bytes;
    info.partitions.push_back(pi);
  }
  return info;
}

std::unique_ptr<Log::Watch> Topic::Watch(Log::AppendCallback fn) {
  std::lock_guard<std::mutex> lock(watches_->mu);
  const uint64_t id = watches_->next_id++;
  watches_->fns.emplace_back(id, std::move(fn));
  return std::make_unique<WatchHandle>(watches_, id);
}

Status Topic::EnforceRetention() {
  if (options_.retention_max_age_ms > 0) {
    // Through the writer queue: sealing the active segment is the commit leader's business.
    Writer w;
    w.kind = Writer::Kind::kRetire;
    std::unique_lock<std::mutex> writers(mu_);
    CONVERGE_RETURN_IF_ERROR(RunWriter(w, writers));
  }
  std::lock_guard<std::mutex> lock(retention_mu_);
  Status first;
  for (auto& part : partitions_) {
    Status s = EnforceRetentionFor(*part);
    if (first.ok() && !s.ok()) first = s;
  }
  return first;
}

Status Topic::EnforceRetentionFor(Partition& part) {
  if (options_.retention_max_bytes == 0 && options_.retention_max_age_ms == 0) {
    return Status::Ok();
  }
  const int64_t now = env_.clock().NowWallMicros();
  std::vector<std::shared_ptr<Segment>> doomed;
  uint64_t new_start = 0;
  {
    std::lock_guard<std::mutex> lock(part.mu);
    // Whole segments only, oldest first, never the active one.
    uint64_t size = part.size_bytes;
    for (size_t i = 0; i + 1 < part.segments.size(); ++i) {
      const Segment& oldest = *part.segments[i];
      const bool by_size = options_.retention_max_bytes > 0 && size > options_.retention_max_bytes;
      const bool by_age =
          options_.retention_max_age_ms > 0 && oldest.max_append_micros < AgeCutoffMicros(now);
      if (!by_size && !by_age) break;
      size -= oldest.size_bytes;
      doomed.push_back(part.segments[i]);
      new_start = part.segments[i + 1]->base_offset;
    }
  }
  if (doomed.empty()) return Status::Ok();
  // The new start is durable before any segment goes (retention_mu_ keeps other runs out), so
  // a segment missing above it is damage, never retention.
  CONVERGE_RETURN_IF_ERROR(WriteStartFile(env_.fs(), part.dir, new_start));
  {
    std::lock_guard<std::mutex> lock(part.mu);
    for (size_t i = 0; i < doomed.size(); ++i) {
      CONVERGE_CHECK(part.segments.front() == doomed[i]);
      part.size_bytes -= doomed[i]->size_bytes;
      part.segments.erase(part.segments.begin());
    }
  }
  Status first;
  for (const auto& seg : doomed) {
    Status s = env_.fs().DeleteFile(seg->path);
    if (first.ok() && !s.ok() && s.code() != StatusCode::kNotFound) first = s;
  }
  Status s = env_.fs().SyncDir(part.dir);
  if (first.ok()) first = s;
  return first;
}

Status Topic::DeleteFiles() { return DeleteTopicDir(env_.fs(), dir_); }

Status DeleteTopicDir(FileSystem& fs, const std::string& dir) {
  const std::string meta = JoinPath(dir, "topic.json");
  const std::string marker = JoinPath(dir, kDeletingMarker);
  if (fs.FileExists(meta)) {
    CONVERGE_RETURN_IF_ERROR(fs.RenameFile(meta, marker));
  } else if (!fs.FileExists(marker)) {
    CONVERGE_ASSIGN_OR_RETURN(std::unique_ptr<WritableFile> f,
                              fs.NewWritableFile(marker, OpenMode::kTruncate));
    CONVERGE_RETURN_IF_ERROR(f->Close());
  }
  CONVERGE_RETURN_IF_ERROR(fs.SyncDir(dir));
  CONVERGE_RETURN_IF_ERROR(RemoveTree(fs, dir));
  return fs.SyncDir(ParentDir(dir));
}

Result<uint64_t> SegmentBytes(FileSystem& fs, const std::string& path) {
  Result<std::vector<std::string>> entries = fs.ListDir(path);
  if (!entries.ok()) {
    uint64_t base = 0;
    const size_t slash = path.rfind('/');
    if (!ParseSegmentFileName(path.substr(slash + 1), &base)) return uint64_t{0};
    Result<uint64_t> size = fs.GetFileSize(path);
    if (size.ok()) return size;
    if (size.status().code() == StatusCode::kNotFound) return uint64_t{0};
    return size.status();
  }
  uint64_t total = 0;
  for (const std::string& entry : *entries) {
    CONVERGE_ASSIGN_OR_RETURN(uint64_t bytes, SegmentBytes(fs, JoinPath(path, entry)));
    total += bytes;
  }
  return total;
}

}  // namespace converge::internal
