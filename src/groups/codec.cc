#include "groups/codec.h"

#include <algorithm>
#include <cstring>

#include "core/coding.h"
#include "core/record_log.h"

namespace converge::internal::groups {

namespace {

constexpr uint8_t kDeadLetterMagic = 0xD1;

void EncodeRanges(Encoder& e, const Ranges& ranges) {
  e.Varint(ranges.size());
  uint64_t prev = 0;
  for (const auto& [b, end] : ranges) {
    e.Varint(b - prev);  // ranges are sorted and disjoint: deltas are small and non-negative
    e.Varint(end - b);
    prev = end;
  }
}

bool DecodeRanges(Decoder& d, Ranges* ranges) {
  uint64_t n = 0;
  if (!d.Varint(&n) || n > d.remaining()) return false;  // each range takes >= 2 bytes
  ranges->clear();
  ranges->reserve(n);
  uint64_t prev = 0;
  for (uint64_t i = 0; i < n; ++i) {
    uint64_t gap = 0, len = 0;
    if (!d.Varint(&gap) || !d.Varint(&len) || len == 0) return false;
    if (gap > UINT64_MAX - prev || len > UINT64_MAX - prev - gap) return false;
    if (i > 0 && gap == 0) return false;  // not merged: malformed
    const uint64_t b = prev + gap;
    ranges->emplace_back(b, b + len);
    prev = b + len;
  }
  return true;
}

bool Expect(Decoder& d, RecordType type) {
  uint8_t b = 0;
  return d.Byte(&b) && b == static_cast<uint8_t>(type);
}

void EncodeOptions(Encoder& e, const GroupOptions& o) {
  // A count-prefixed list so later versions can append fields.
  e.Varint(13);
  e.Signed(o.lease_ms);
  e.Varint(o.max_deliveries);
  e.Signed(o.session_timeout_ms);
  e.Varint(o.max_in_flight_per_partition);
  e.Varint(o.max_in_flight_per_member);
  e.Varint(o.max_pending_per_partition);
  e.Varint(o.max_members);
  e.Signed(o.max_nack_delay_ms);
  e.Varint(o.max_reason_bytes);
  e.Signed(o.dead_letter_retry_ms);
  e.Varint(static_cast<uint64_t>(o.start));
  e.Varint(o.start_offset);
  e.Signed(o.start_time_micros);
}

bool DecodeOptions(Decoder& d, GroupOptions* o) {
  uint64_t n = 0;
  if (!d.Varint(&n) || n < 13) return false;
  uint64_t start = 0;
  bool ok = d.Signed(&o->lease_ms) && d.Varint32(&o->max_deliveries) &&
            d.Signed(&o->session_timeout_ms) && d.Varint32(&o->max_in_flight_per_partition) &&
            d.Varint32(&o->max_in_flight_per_member) && d.Varint32(&o->max_pending_per_partition) &&
            d.Varint32(&o->max_members) && d.Signed(&o->max_nack_delay_ms) &&
            d.Varint32(&o->max_reason_bytes) && d.Signed(&o->dead_letter_retry_ms) &&
            d.Varint(&start) && d.Varint(&o->start_offset) && d.Signed(&o->start_time_micros);
  if (!ok || start > static_cast<uint64_t>(StartPosition::kTime)) return false;
  o->start = static_cast<StartPosition>(start);
  for (uint64_t i = 13; i < n; ++i) {  // fields of a later version: skip
    uint64_t ignored = 0;
    if (!d.Varint(&ignored)) return false;
  }
  return true;
}

}  // namespace

void Encoder::Varint(uint64_t v) { PutVarint64(out_, v); }
void Encoder::Fixed32(uint32_t v) { PutFixed32(out_, v); }
void Encoder::Bytes(std::string_view s) { PutLengthPrefixed(out_, s); }

bool Decoder::Byte(uint8_t* v) {
  if (in_.empty()) return false;
  *v = static_cast<uint8_t>(in_[0]);
  in_.remove_prefix(1);
  return true;
}

bool Decoder::Varint(uint64_t* v) { return GetVarint64(&in_, v); }
bool Decoder::Varint32(uint32_t* v) { return GetVarint32(&in_, v); }

bool Decoder::Signed(int64_t* v) {
  uint64_t x = 0;
  if (!Varint(&x)) return false;
  *v = ZigZagDecode(x);
  return true;
}

bool Decoder::Fixed32(uint32_t* v) { return GetFixed32(&in_, v); }
bool Decoder::Bytes(std::string_view* s) { return GetLengthPrefixed(&in_, s); }

bool Decoder::String(std::string* s) {
  std::string_view v;
  if (!Bytes(&v)) return false;
  s->assign(v);
  return true;
}

void AppendFrame(std::string* out, std::string_view payload) {
  record_log::AppendFrame(out, payload);
}

std::vector<std::string_view> ReadFrames(std::string_view data, size_t* valid_bytes) {
  std::vector<std::string_view> frames;
  record_log::Reader reader = record_log::Reader::ForFrames(data);
  std::string_view payload;
  while (reader.Next(&payload)) frames.push_back(payload);
  *valid_bytes = reader.valid_bytes();
  return frames;
}

void EncodeHeader(const HeaderRecord& r, std::string* out) {
  std::string p;
  Encoder e(&p);
  e.Byte(static_cast<uint8_t>(RecordType::kHeader));
  e.Varint(r.generation);
  e.Varint(r.next_group_id);
  AppendFrame(out, p);
}

void EncodeGroup(const GroupRecord& r, std::string* out) {
  std::string p;
  Encoder e(&p);
  e.Byte(static_cast<uint8_t>(RecordType::kGroup));
  e.Varint(r.group_id);
  e.Bytes(r.topic);
  e.Bytes(r.group);
  EncodeOptions(e, r.options);
  e.Bytes(r.options.dead_letter_topic);
  e.Bytes(r.dead_letter_topic);
  e.Varint(r.committed.size());
  for (uint64_t c : r.committed) e.Varint(c);
  AppendFrame(out, p);
}

void EncodePartition(const PartitionRecord& r, std::string* out) {
  std::string p;
  Encoder e(&p);
  e.Byte(static_cast<uint8_t>(RecordType::kPartition));
  e.Varint(r.group_id);
  e.Varint(r.partition);
  e.Varint(r.committed);
  // Ranges are encoded relative to committed.
  Ranges rel;
  rel.reserve(r.done.size());
  for (const auto& [b, end] : r.done) rel.emplace_back(b - r.committed, end - r.committed);
  EncodeRanges(e, rel);
  AppendFrame(out, p);
}

void EncodeReplayed(uint64_t group_id, const Ranges& ranges, std::string* out) {
  std::string p;
  Encoder e(&p);
  e.Byte(static_cast<uint8_t>(RecordType::kReplayed));
  e.Varint(group_id);
  EncodeRanges(e, ranges);
  AppendFrame(out, p);
}

void EncodeDelete(uint64_t group_id, std::string* out) {
  std::string p;
  Encoder e(&p);
  e.Byte(static_cast<uint8_t>(RecordType::kDelete));
  e.Varint(group_id);
  AppendFrame(out, p);
}

bool DecodeType(std::string_view payload, RecordType* type) {
  if (payload.empty()) return false;
  const uint8_t b = static_cast<uint8_t>(payload[0]);
  if (b < 1 || b > 5) return false;
  *type = static_cast<RecordType>(b);
  return true;
}

bool DecodeHeader(std::string_view payload, HeaderRecord* r) {
  Decoder d(payload);
  return Expect(d, RecordType::kHeader) && d.Varint(&r->generation) && d.Varint(&r->next_group_id);
}

bool DecodeGroup(std::string_view payload, GroupRecord* r) {
  Decoder d(payload);
  uint64_t n = 0;
  if (!Expect(d, RecordType::kGroup) || !d.Varint(&r->group_id) || !d.String(&r->topic) ||
      !d.String(&r->group) || !DecodeOptions(d, &r->options) ||
      !d.String(&r->options.dead_letter_topic) || !d.String(&r->dead_letter_topic) ||
      !d.Varint(&n) || n > d.remaining()) {
    return false;
  }
  r->committed.resize(n);
  for (uint64_t& c : r->committed) {
    if (!d.Varint(&c)) return false;
  }
  return true;
}

bool DecodePartition(std::string_view payload, PartitionRecord* r) {
  Decoder d(payload);
  Ranges rel;
  if (!Expect(d, RecordType::kPartition) || !d.Varint(&r->group_id) || !d.Varint32(&r->partition) ||
      !d.Varint(&r->committed) || !DecodeRanges(d, &rel)) {
    return false;
  }
  r->done.clear();
  r->done.reserve(rel.size());
  for (const auto& [b, end] : rel) {
    if (end > UINT64_MAX - r->committed) return false;
    r->done.emplace_back(b + r->committed, end + r->committed);
  }
  return true;
}

bool DecodeReplayed(std::string_view payload, uint64_t* group_id, Ranges* ranges) {
  Decoder d(payload);
  return Expect(d, RecordType::kReplayed) && d.Varint(group_id) && DecodeRanges(d, ranges);
}

bool DecodeDelete(std::string_view payload, uint64_t* group_id) {
  Decoder d(payload);
  return Expect(d, RecordType::kDelete) && d.Varint(group_id);
}

void EncodeDeadLetter(const DeadLetterFields& f, std::string* out) {
  out->reserve(out->size() + 64 + f.topic.size() + f.reason.size() + f.last_error.size() +
               f.id.size() + f.key.size() + f.value.size());
  Encoder e(out);
  e.Byte(kDeadLetterMagic);
  e.Byte(1);  // version
  e.Bytes(f.topic);
  e.Varint(f.partition);
  e.Varint(f.offset);
  e.Varint(f.delivery_count);
  e.Bytes(f.reason);
  e.Bytes(f.last_error);
  e.Signed(f.dead_lettered_at_micros);
  e.Byte(f.permanent ? 1 : 0);
  e.Bytes(f.id);
  e.Bytes(f.key);
  e.Signed(f.timestamp_micros);
  e.Bytes(f.value);
}

bool DecodeDeadLetter(std::string_view data, DeadLetterFields* f) {
  Decoder d(data);
  uint8_t magic = 0, version = 0, permanent = 0;
  if (!d.Byte(&magic) || magic != kDeadLetterMagic || !d.Byte(&version) || version != 1) {
    return false;
  }
  if (!d.Bytes(&f->topic) || !d.Varint32(&f->partition) || !d.Varint(&f->offset) ||
      !d.Varint32(&f->delivery_count) || !d.Bytes(&f->reason) || !d.Bytes(&f->last_error) ||
      !d.Signed(&f->dead_lettered_at_micros) || !d.Byte(&permanent) || permanent > 1 ||
      !d.Bytes(&f->id) || !d.Bytes(&f->key) || !d.Signed(&f->timestamp_micros) ||
      !d.Bytes(&f->value)) {
    return false;
  }
  f->permanent = permanent == 1;
  return d.empty();
}

void AddRange(Ranges* ranges, uint64_t begin, uint64_t end) {
  if (begin >= end) return;
  auto it = std::lower_bound(
      ranges->begin(), ranges->end(), begin,
      [](const std::pair<uint64_t, uint64_t>& r, uint64_t b) { return r.second < b; });
  // `it` is the first range that ends at or after `begin`: merge every range touching
  // [begin, end).
  auto last = it;
  while (last != ranges->end() && last->first <= end) {
    begin = std::min(begin, last->first);
    end = std::max(end, last->second);
    ++last;
  }
  it = ranges->erase(it, last);
  ranges->insert(it, {begin, end});
}

bool InRanges(const Ranges& ranges, uint64_t offset) {
  auto it = std::upper_bound(
      ranges.begin(), ranges.end(), offset,
      [](uint64_t o, const std::pair<uint64_t, uint64_t>& r) { return o < r.first; });
  if (it == ranges.begin()) return false;
  --it;
  return offset < it->second;
}

}  // namespace converge::internal::groups
