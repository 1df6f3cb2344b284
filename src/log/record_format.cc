#include "log/record_format.h"

#include <cstring>

#include "core/crc32c.h"

namespace converge::internal {
namespace {

// The targets we build for are little-endian; memcpy keeps loads and stores alignment-safe.
template <typename T>
inline void Put(uint8_t* p, T v) {
  std::memcpy(p, &v, sizeof(T));
}
template <typename T>
inline T Get(const uint8_t* p) {
  T v;
  std::memcpy(&v, p, sizeof(T));
  return v;
}

}  // namespace

void EncodeRecord(uint8_t* dst, uint64_t offset, int64_t timestamp_micros, int64_t append_micros,
                  std::string_view id, std::string_view key, std::string_view value) {
  uint8_t* body = dst + kRecordHeaderBytes;
  if (!id.empty()) std::memcpy(body, id.data(), id.size());
  if (!key.empty()) std::memcpy(body + id.size(), key.data(), key.size());
  if (!value.empty()) std::memcpy(body + id.size() + key.size(), value.data(), value.size());
  const size_t body_len = id.size() + key.size() + value.size();

  std::memcpy(dst, kRecordMagic, 4);
  Put<uint64_t>(dst + 8, offset);
  Put<int64_t>(dst + 16, timestamp_micros);
  Put<int64_t>(dst + 24, append_micros);
  Put<uint32_t>(dst + 32, static_cast<uint32_t>(value.size()));
  Put<uint16_t>(dst + 36, static_cast<uint16_t>(id.size()));
  Put<uint16_t>(dst + 38, static_cast<uint16_t>(key.size()));
  Put<uint32_t>(dst + 40, Crc32c(body, body_len));
  Put<uint32_t>(dst + 44, 0);
  Put<uint32_t>(dst + 4, Crc32c(dst + 8, kRecordHeaderBytes - 8));
}

bool DecodeHeader(const uint8_t* p, RecordHeader* header) {
  if (std::memcmp(p, kRecordMagic, 4) != 0) return false;
  if (Get<uint32_t>(p + 4) != Crc32c(p + 8, kRecordHeaderBytes - 8)) return false;
  if (Get<uint32_t>(p + 44) != 0) return false;
  header->offset = Get<uint64_t>(p + 8);
  header->timestamp_micros = Get<int64_t>(p + 16);
  header->append_micros = Get<int64_t>(p + 24);
  header->value_len = Get<uint32_t>(p + 32);
  header->id_len = Get<uint16_t>(p + 36);
  header->key_len = Get<uint16_t>(p + 38);
  header->body_crc = Get<uint32_t>(p + 40);
  return true;
}

bool BodyValid(const RecordHeader& header, const uint8_t* body) {
  return Crc32c(body, header.body_bytes()) == header.body_crc;
}

}  // namespace converge::internal
