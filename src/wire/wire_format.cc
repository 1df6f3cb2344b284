#include "wire/wire_format.h"

#include <cctype>
#include <type_traits>

namespace converge::internal::wire {

namespace {

template <typename T>
void PutFixed(std::string* out, T v) {
  using U = std::make_unsigned_t<T>;
  U u = static_cast<U>(v);
  char bytes[sizeof(T)];
  for (size_t i = 0; i < sizeof(T); ++i) bytes[i] = static_cast<char>((u >> (8 * i)) & 0xff);
  out->append(bytes, sizeof(T));
}

template <typename T>
bool GetFixed(std::string_view in, size_t* pos, T* v) {
  if (*pos > in.size() || in.size() - *pos < sizeof(T)) return false;
  using U = std::make_unsigned_t<T>;
  U u = 0;
  for (size_t i = 0; i < sizeof(T); ++i) {
    u |= static_cast<U>(static_cast<unsigned char>(in[*pos + i])) << (8 * i);
  }
  *pos += sizeof(T);
  *v = static_cast<T>(u);
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

void AppendVarint(std::string* out, uint64_t v) {
  char buf[10];
  size_t n = 0;
  while (v >= 0x80) {
    buf[n++] = static_cast<char>((v & 0x7f) | 0x80);
    v >>= 7;
  }
  buf[n++] = static_cast<char>(v);
  out->append(buf, n);
}

bool ReadVarint(std::string_view in, size_t* pos, uint64_t* v) {
  uint64_t result = 0;
  for (int shift = 0, i = 0; i < 10; ++i, shift += 7) {
    if (*pos >= in.size()) return false;
    const auto byte = static_cast<unsigned char>(in[(*pos)++]);
    if (i == 9 && byte > 1) return false;  // would overflow 64 bits
    result |= static_cast<uint64_t>(byte & 0x7f) << shift;
    if ((byte & 0x80) == 0) {
      *v = result;
      return true;
    }
  }
  return false;
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
