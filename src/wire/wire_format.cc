#include "wire/wire_format.h"

#include <cctype>
#include <type_traits>

#include "core/coding.h"

namespace converge::internal::wire {

namespace {

// Fixed-width little-endian integers of 1, 4 or 8 bytes (core/coding.h).
template <typename T>
void PutFixed(std::string* out, T v) {
  using U = std::make_unsigned_t<T>;
  const U u = static_cast<U>(v);
  if constexpr (sizeof(T) == 1) {
    out->push_back(static_cast<char>(u));
  } else if constexpr (sizeof(T) == 4) {
    PutFixed32(out, u);
  } else {
    static_assert(sizeof(T) == 8);
    PutFixed64(out, u);
  }
}

template <typename T>
bool GetFixed(std::string_view in, size_t* pos, T* v) {
  if (*pos > in.size() || in.size() - *pos < sizeof(T)) return false;
  const char* p = in.data() + *pos;
  if constexpr (sizeof(T) == 1) {
    *v = static_cast<T>(static_cast<unsigned char>(*p));
  } else if constexpr (sizeof(T) == 4) {
    *v = static_cast<T>(DecodeFixed32(p));
  } else {
    static_assert(sizeof(T) == 8);
    *v = static_cast<T>(DecodeFixed64(p));
  }
  *pos += sizeof(T);
  return true;
}

std::string Index(std::string_view what, size_t i) {
  std::string s(what);
  s += '[';
  s += std::to_string(i);
  s += "]: ";
  return s;
}

}  // namespace

void AppendVarint(std::string* out, uint64_t v) { PutVarint64(out, v); }

bool ReadVarint(std::string_view in, size_t* pos, uint64_t* v) {
  if (*pos > in.size()) return false;
  size_t n = 0;
  if (DecodeVarint64(in.substr(*pos), v, &n) != VarintError::kNone) return false;
  *pos += n;
  return true;
}

void AppendEventRecord(std::string* out, std::string_view record) {
  AppendVarint(out, record.size());
  out->append(record);
}

Status SplitEventBatch(std::string_view body, size_t max_records, size_t max_record_bytes,
                       std::vector<std::string_view>* records) {
  records->clear();
  size_t pos = 0;
  while (pos < body.size()) {
    const size_t i = records->size();
    if (i >= max_records) {
      return ResourceExhaustedError("batch has more than max_batch_events (" +
                                    std::to_string(max_records) + ") events");
    }
    uint64_t n = 0;
    if (!ReadVarint(body, &pos, &n)) {
      return InvalidArgumentError(Index("record", i) + "malformed length prefix");
    }
    if (n > body.size() - pos) {
      return InvalidArgumentError(Index("record", i) + "length " + std::to_string(n) +
                                  " runs past the end of the body");
    }
    if (n > max_record_bytes) {
      return ResourceExhaustedError(Index("event", i) + "event is " + std::to_string(n) +
                                    " bytes, more than max_event_bytes (" +
                                    std::to_string(max_record_bytes) + ")");
    }
    records->push_back(body.substr(pos, n));
    pos += n;
  }
  return Status::Ok();
}

void AppendPublishResult(std::string* out, const PublishResult& r) {
  PutFixed<uint32_t>(out, r.partition);
  PutFixed<uint64_t>(out, r.offset);
  out->push_back(r.duplicate ? 1 : 0);
}

Status ReadPublishResults(std::string_view body, std::vector<PublishResult>* out) {
  out->clear();
  size_t pos = 0;
  while (pos < body.size()) {
    PublishResult r;
    uint8_t dup = 0;
    if (!GetFixed(body, &pos, &r.partition) || !GetFixed(body, &pos, &r.offset) ||
        !GetFixed(body, &pos, &dup) || dup > 1) {
      return DataLossError(Index("result", out->size()) + "truncated or malformed");
    }
    r.duplicate = dup == 1;
    out->push_back(r);
  }
  return Status::Ok();
}

void AppendDelivery(std::string* out, const DeliveryHeader& h, std::string_view record) {
  PutFixed<uint32_t>(out, h.partition);
  PutFixed<uint64_t>(out, h.offset);
  PutFixed<uint64_t>(out, h.lease_id);
  PutFixed<uint32_t>(out, h.attempt);
  PutFixed<int64_t>(out, h.lease_expires_at_ms);
  AppendEventRecord(out, record);
}

Status ReadDelivery(std::string_view in, size_t* pos, DeliveryHeader* h, std::string_view* record) {
  uint64_t n = 0;
  if (!GetFixed(in, pos, &h->partition) || !GetFixed(in, pos, &h->offset) ||
      !GetFixed(in, pos, &h->lease_id) || !GetFixed(in, pos, &h->attempt) ||
      !GetFixed(in, pos, &h->lease_expires_at_ms) || !ReadVarint(in, pos, &n) ||
      n > in.size() - *pos) {
    return DataLossError("malformed delivery at byte " + std::to_string(*pos));
  }
  *record = in.substr(*pos, n);
  *pos += n;
  return Status::Ok();
}

bool Accepts(std::string_view accept, std::string_view media_type) {
  while (!accept.empty()) {
    size_t comma = accept.find(',');
    std::string_view item = accept.substr(0, comma);
    accept = comma == std::string_view::npos ? std::string_view() : accept.substr(comma + 1);
    item = item.substr(0, item.find(';'));
    while (!item.empty() && (item.front() == ' ' || item.front() == '\t')) item.remove_prefix(1);
    while (!item.empty() && (item.back() == ' ' || item.back() == '\t')) item.remove_suffix(1);
    if (item.size() != media_type.size()) continue;
    bool same = true;
    for (size_t i = 0; i < item.size() && same; ++i) {
      same = std::tolower(static_cast<unsigned char>(item[i])) ==
             std::tolower(static_cast<unsigned char>(media_type[i]));
    }
    if (same) return true;
  }
  return false;
}

}  // namespace converge::internal::wire
