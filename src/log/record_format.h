// The byte layout of one record in a log segment (docs/formats/log.md has the full picture).
//
//   offset size field
//   0      4    magic 'C' 'V' 'L' '1'
//   4      4    header_crc   CRC32C of bytes 8..47
//   8      8    offset       the record's offset in its partition
//   16     8    timestamp_micros   the record's time (caller-given or the log's clock)
//   24     8    append_micros      the log's wall clock when appended (dedup window, retention)
//   32     4    value_len
//   36     2    id_len
//   38     2    key_len
//   40     4    body_crc     CRC32C of the body (id, key, value)
//   44     4    flags        0 in version 1; anything else is treated as corrupt
//   48     ...  id, key, value
// All integers little-endian. Records follow each other without padding.
//
// Thread-safety: pure functions.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace converge::internal {

inline constexpr size_t kRecordHeaderBytes = 48;
inline constexpr uint8_t kRecordMagic[4] = {'C', 'V', 'L', '1'};
inline constexpr size_t kMaxIdBytes = 0xFFFF;
inline constexpr size_t kMaxKeyBytes = 0xFFFF;

struct RecordHeader {
  uint64_t offset = 0;
  int64_t timestamp_micros = 0;
  int64_t append_micros = 0;
  uint32_t value_len = 0;
  uint16_t id_len = 0;
  uint16_t key_len = 0;
  uint32_t body_crc = 0;

  size_t body_bytes() const { return size_t{id_len} + key_len + value_len; }
  size_t record_bytes() const { return kRecordHeaderBytes + body_bytes(); }
};

inline size_t EncodedRecordBytes(size_t id, size_t key, size_t value) {
  return kRecordHeaderBytes + id + key + value;
}

// Writes a full record (header and body) at dst, which has room for EncodedRecordBytes.
void EncodeRecord(uint8_t* dst, uint64_t offset, int64_t timestamp_micros, int64_t append_micros,
                  std::string_view id, std::string_view key, std::string_view value);

// Parses the 48 header bytes at p. False if the magic, header checksum or flags are wrong.
bool DecodeHeader(const uint8_t* p, RecordHeader* header);

// True if the body at p (header.body_bytes() bytes) matches header.body_crc.
bool BodyValid(const RecordHeader& header, const uint8_t* body);

}  // namespace converge::internal
