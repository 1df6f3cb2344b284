#include "log/segment_reader.h"

#include <algorithm>
#include <cstring>
#include <string>

namespace converge::internal {

Result<const uint8_t*> SegmentCursor::Fetch(uint64_t pos, size_t n, size_t* avail) {
  if (pos >= buf_pos_ && pos + n <= buf_pos_ + buf_len_) {
    *avail = static_cast<size_t>(buf_pos_ + buf_len_ - pos);
    return buf_.data() + (pos - buf_pos_);
  }
  if (pos >= limit_) {
    *avail = 0;
    return buf_.data();
  }
  const uint64_t want64 = std::min<uint64_t>(std::max<uint64_t>(n, chunk_bytes_), limit_ - pos);
  const size_t want = static_cast<size_t>(want64);
  if (buf_.size() < want) buf_.resize(want);
  CONVERGE_ASSIGN_OR_RETURN(size_t got, file_.Read(pos, want, buf_.data()));
  buf_pos_ = pos;
  buf_len_ = got;
  *avail = got;
  return buf_.data();
}

Result<ProbedRecord> ProbeRecord(SegmentCursor& cursor, uint64_t pos) {
  ProbedRecord out;
  size_t avail = 0;
  CONVERGE_ASSIGN_OR_RETURN(const uint8_t* p, cursor.Fetch(pos, kRecordHeaderBytes, &avail));
  if (avail < kRecordHeaderBytes) {
    out.state = RecordState::kTruncated;
    return out;
  }
  if (!DecodeHeader(p, &out.header)) {
    out.state = RecordState::kBadHeader;
    return out;
  }
  const size_t total = out.header.record_bytes();
  if (pos + total > cursor.limit()) {
    out.state = RecordState::kTruncated;
    return out;
  }
  CONVERGE_ASSIGN_OR_RETURN(p, cursor.Fetch(pos, total, &avail));
  if (avail < total) {
    out.state = RecordState::kTruncated;
    return out;
  }
  if (!BodyValid(out.header, p + kRecordHeaderBytes)) {
    out.state = RecordState::kBadBody;
    return out;
  }
  out.state = RecordState::kValid;
  out.bytes = p;
  return out;
}

Result<std::optional<FoundRecord>> FindNextValidRecord(SegmentCursor& cursor, uint64_t from,
                                                       uint64_t min_offset) {
  constexpr size_t kWindow = 1 << 20;
  uint64_t pos = from;
  while (true) {
    size_t avail = 0;
    CONVERGE_ASSIGN_OR_RETURN(const uint8_t* p, cursor.Fetch(pos, kWindow, &avail));
    if (avail < kRecordHeaderBytes) return std::optional<FoundRecord>();
    // Candidate starts are the positions whose whole header is inside the window.
    const size_t candidates = avail - kRecordHeaderBytes + 1;
    const void* hit =
        memmem(p, candidates + sizeof(kRecordMagic) - 1, kRecordMagic, sizeof(kRecordMagic));
    if (hit == nullptr) {
      pos += candidates;
      continue;
    }
    const uint64_t candidate = pos + static_cast<size_t>(static_cast<const uint8_t*>(hit) - p);
    CONVERGE_ASSIGN_OR_RETURN(ProbedRecord probed, ProbeRecord(cursor, candidate));
    if (probed.state == RecordState::kValid && probed.header.offset >= min_offset) {
      return std::optional<FoundRecord>(FoundRecord{candidate, probed.header});
    }
    pos = candidate + 1;
  }
}

Result<ScanResult> ScanSegment(const RandomAccessFile& file, uint64_t size, uint64_t base_offset,
                               const ScanVisitor& visit) {
  ScanResult out;
  out.next_offset = base_offset;
  SegmentCursor cursor(file, size, 1 << 20);
  uint64_t pos = 0;
  uint64_t expected = base_offset;
  uint64_t last_index_pos = 0;
  int64_t seg_max_ts = INT64_MIN;
  while (pos < size) {
    CONVERGE_ASSIGN_OR_RETURN(ProbedRecord probed, ProbeRecord(cursor, pos));
    const bool usable = probed.state == RecordState::kValid && probed.header.offset >= expected &&
                        probed.header.offset - base_offset <= UINT32_MAX && pos <= UINT32_MAX;
    if (!usable) {
      CONVERGE_ASSIGN_OR_RETURN(std::optional<FoundRecord> next,
                                FindNextValidRecord(cursor, pos + 1, expected));
      if (!next.has_value() || next->header.offset - base_offset > UINT32_MAX) {
        out.torn_tail = true;
        break;
      }
      out.damaged = true;
      pos = next->position;
      continue;
    }
    const RecordHeader& h = probed.header;
    if (h.offset != expected) out.damaged = true;  // records missing in between
    if (out.index.empty() || pos - last_index_pos >= kIndexIntervalBytes) {
      out.index.push_back(IndexEntry{static_cast<uint32_t>(h.offset - base_offset),
                                     static_cast<uint32_t>(pos), seg_max_ts});
      last_index_pos = pos;
    }
    if (visit) visit(h, probed.bytes + kRecordHeaderBytes);
    seg_max_ts = std::max(seg_max_ts, h.timestamp_micros);
    out.max_append_micros = std::max(out.max_append_micros, h.append_micros);
    ++out.records;
    pos += h.record_bytes();
    expected = h.offset + 1;
    out.valid_bytes = pos;
    out.next_offset = expected;
  }
  out.max_timestamp = seg_max_ts;
  return out;
}

}  // namespace converge::internal
