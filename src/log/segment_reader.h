// Reading and validating records in a segment file: a chunked cursor, the check of one record,
// resynchronisation past damage, and the full scan used by recovery.
//
// Nothing here trusts the bytes: every record's header and body checksums are verified, and a
// record whose offset is not the expected one is treated as damage. Thread-safety: a
// SegmentCursor is used by one thread; the functions are otherwise pure over the file.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <vector>

#include "converge/env.h"
#include "converge/status.h"
#include "log/record_format.h"

namespace converge::internal {

// Sparse index entry: the record at `position` has offset base + rel_offset. prefix_max_ts is
// the largest timestamp of the records before it in the same segment (INT64_MIN if none), so
// a binary search finds where records at or after a time can start.
struct IndexEntry {
  uint32_t rel_offset = 0;
  uint32_t position = 0;
  int64_t prefix_max_ts = 0;
};

// One index entry at least every this many bytes of a segment.
inline constexpr uint64_t kIndexIntervalBytes = 4096;

// A window over the first `limit` bytes of a file, refilled in chunks.
class SegmentCursor {
 public:
  SegmentCursor(const RandomAccessFile& file, uint64_t limit, size_t chunk_bytes)
      : file_(file), limit_(limit), chunk_bytes_(chunk_bytes) {}

  // Buffers [pos, pos + n) (and usually more). Returns a pointer to the byte at pos; `*avail`
  // is how many bytes from pos are buffered, fewer than n only at the limit or the file's end.
  Result<const uint8_t*> Fetch(uint64_t pos, size_t n, size_t* avail);
  uint64_t limit() const { return limit_; }

 private:
  const RandomAccessFile& file_;
  uint64_t limit_;
  size_t chunk_bytes_;
  std::vector<uint8_t> buf_;
  uint64_t buf_pos_ = 0;
  size_t buf_len_ = 0;
};

enum class RecordState : uint8_t {
  kValid,
  kTruncated,  // the record (or its header) runs past the readable end
  kBadHeader,  // wrong magic, header checksum or flags
  kBadBody,    // header fine, body checksum wrong
};

struct ProbedRecord {
  RecordState state = RecordState::kTruncated;
  RecordHeader header;
  const uint8_t* bytes = nullptr;  // the whole record when kValid; valid until the next Fetch
};

// Examines the record starting at `pos`.
Result<ProbedRecord> ProbeRecord(SegmentCursor& cursor, uint64_t pos);

struct FoundRecord {
  uint64_t position = 0;
  RecordHeader header;
};

// The first position >= `from` holding a fully valid record whose offset is >= min_offset,
// or nullopt if there is none before the cursor's limit.
Result<std::optional<FoundRecord>> FindNextValidRecord(SegmentCursor& cursor, uint64_t from,
                                                       uint64_t min_offset);

struct ScanResult {
  uint64_t valid_bytes = 0;  // end of the last valid record (the truncation point of a tail)
  uint64_t next_offset = 0;  // one past the last valid record; the base offset if none
  uint64_t records = 0;
  int64_t max_timestamp = INT64_MIN;
  int64_t max_append_micros = INT64_MIN;
  bool damaged = false;    // damage found before valid records (reported by Read)
  bool torn_tail = false;  // bytes after valid_bytes that are not a valid record
  std::vector<IndexEntry> index;
};

// Called for every valid record the scan meets, in file order. `body` holds id, key, value.
using ScanVisitor = std::function<void(const RecordHeader& header, const uint8_t* body)>;

// Reads a whole segment (`size` bytes, base offset `base_offset`), verifying every record and
// rebuilding its index. Damage followed by valid records is skipped (damaged=true); damage with
// no valid record after it ends the scan (torn_tail=true, valid_bytes marks where it starts).
// Fails only on an I/O error.
Result<ScanResult> ScanSegment(const RandomAccessFile& file, uint64_t size, uint64_t base_offset,
                               const ScanVisitor& visit);

}  // namespace converge::internal
