// The orchestrator's durable saga log: framed records (saga/records.h) in segment files
// "saga-<20-digit sequence>.log" under one directory, through the Env's FileSystem.
//
// - Append writes a batch of records (many sagas at once) to the active segment; Sync makes
//   everything appended durable with one fdatasync: the caller group-commits a whole batch.
// - A segment is rolled (a new file, directory synced) at a batch boundary once it exceeds
//   segment_max_bytes.
// - Rebase writes a snapshot of the whole retained state (kBaseBegin ... kBaseEnd) as a new
//   segment, makes it durable, then deletes every older segment: compaction. A crash before the
//   snapshot is complete leaves a segment without kBaseEnd, which Open deletes.
// - Open replays from the newest complete base segment (or the first segment) onward. A damaged
//   or torn tail of the last segment is cut (it was never acknowledged: acknowledged bytes were
//   synced); damage inside an older segment skips the rest of that segment and is counted.
//
// Thread-safety: none; the orchestrator serializes calls.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "converge/env.h"
#include "converge/status.h"
#include "saga/records.h"

namespace converge::saga_internal {

struct SagaLogOptions {
  std::string dir;
  uint64_t segment_max_bytes = 64ull << 20;
};

struct SagaLogRecovery {
  uint64_t records = 0;
  uint64_t segments = 0;
  uint64_t damaged_segments = 0;  // segments whose damaged tail was cut or skipped
  uint64_t truncated_bytes = 0;
};

class SagaLogFile {
 public:
  using ReplayFn = std::function<Status(const RecordView&)>;
  // Locks and recovers `options.dir`, calling `replay` for each record in order (a non-OK
  // status from `replay` stops Open with it). FailedPrecondition if another process holds it.
  static Result<std::unique_ptr<SagaLogFile>> Open(Env& env, const SagaLogOptions& options,
                                                   const ReplayFn& replay,
                                                   SagaLogRecovery* recovery);
  ~SagaLogFile();

  Status Append(std::string_view framed_records);
  Status Sync();
  Status Rebase(std::string_view base);

  uint64_t total_bytes() const { return total_bytes_; }
  uint64_t bytes_since_base() const { return total_bytes_ - base_bytes_; }

 private:
  SagaLogFile(Env& env, SagaLogOptions options) : env_(env), options_(std::move(options)) {}
  Status OpenNewSegment(uint64_t seq);
  std::string SegmentPath(uint64_t seq) const;

  Env& env_;
  SagaLogOptions options_;
  std::unique_ptr<FileLock> lock_;
  std::unique_ptr<WritableFile> active_;
  uint64_t active_seq_ = 0;
  std::vector<uint64_t> segments_;  // live segment sequence numbers, ascending
  uint64_t total_bytes_ = 0;
  uint64_t base_bytes_ = 0;  // size of the base snapshot the log starts with
  bool dirty_ = false;
};

}  // namespace converge::saga_internal
