#include "saga/records.h"

#include <cstring>

#include "core/coding.h"
#include "core/record_log.h"

namespace converge::saga_internal {
namespace {

bool HasSaga(RecordType t) {
  return t != RecordType::kDefinition && t != RecordType::kBaseBegin && t != RecordType::kBaseEnd &&
         t != RecordType::kReplyKey;
}

}  // namespace

void PutVarint(std::string* out, uint64_t v) { internal::PutVarint64(out, v); }

void PutString(std::string* out, std::string_view s) { internal::PutLengthPrefixed(out, s); }

bool ByteReader::Varint(uint64_t* v) {
  std::string_view rest = data_.substr(pos_);
  if (!internal::GetVarint64(&rest, v)) return false;
  pos_ = data_.size() - rest.size();
  return true;
}

bool ByteReader::U8(uint8_t* v) {
  if (pos_ >= data_.size()) return false;
  *v = static_cast<uint8_t>(data_[pos_++]);
  return true;
}

bool ByteReader::String(std::string_view* s) {
  std::string_view rest = data_.substr(pos_);
  if (!internal::GetLengthPrefixed(&rest, s)) return false;
  pos_ = data_.size() - rest.size();
  return true;
}

void AppendRecord(const RecordView& r, std::string* out) {
  const size_t frame_at = internal::record_log::BeginFrame(out);
  out->push_back(static_cast<char>(r.type));
  PutVarint(out, static_cast<uint64_t>(r.time_micros));
  if (HasSaga(r.type)) PutString(out, r.saga_id);
  switch (r.type) {
    case RecordType::kDefinition:
      PutString(out, r.a);
      break;
    case RecordType::kStarted:
      PutString(out, r.a);
      PutVarint(out, r.version);
      PutVarint(out, static_cast<uint64_t>(r.due_micros));
      PutString(out, r.b);
      // Optional and last: logs written before it have none.
      if (!r.trace.empty()) PutString(out, r.trace);
      break;
    case RecordType::kAttempt:
      PutVarint(out, r.step);
      out->push_back(static_cast<char>(r.kind));
      PutVarint(out, r.attempt);
      PutVarint(out, static_cast<uint64_t>(r.due_micros));
      break;
    case RecordType::kBackoff:
      PutVarint(out, r.step);
      out->push_back(static_cast<char>(r.kind));
      PutVarint(out, r.attempt);
      PutVarint(out, static_cast<uint64_t>(r.due_micros));
      out->push_back(static_cast<char>(r.flag));
      PutString(out, r.a);
      break;
    case RecordType::kStepDone:
      PutVarint(out, r.step);
      out->push_back(static_cast<char>(r.kind));
      out->push_back(static_cast<char>(r.flag));
      break;
    case RecordType::kStepFailed:
      PutVarint(out, r.step);
      out->push_back(static_cast<char>(r.flag));
      PutString(out, r.a);
      break;
    case RecordType::kAbort:
      PutString(out, r.a);
      break;
    case RecordType::kFinished:
      out->push_back(static_cast<char>(r.flag));
      break;
    case RecordType::kTimer:
      out->push_back(static_cast<char>(r.flag));
      PutVarint(out, static_cast<uint64_t>(r.due_micros));
      break;
    case RecordType::kCheckpoint:
    case RecordType::kReplyKey:
      PutString(out, r.a);
      break;
    case RecordType::kReplyRejected:
      PutVarint(out, r.step);
      out->push_back(static_cast<char>(r.kind));
      PutVarint(out, r.attempt);
      PutString(out, r.a);
      break;
    case RecordType::kBaseBegin:
    case RecordType::kBaseEnd:
      break;
  }
  internal::record_log::FinishFrame(out, frame_at);
}

void AppendFrame(std::string_view payload, std::string* out) {
  internal::record_log::AppendFrame(out, payload);
}

Result<RecordView> DecodePayload(std::string_view payload) {
  ByteReader in(payload);
  RecordView r;
  uint8_t type = 0;
  uint64_t time = 0;
  auto bad = [&](const char* what) {
    return DataLossError(std::string("saga log: malformed record (") + what + ")");
  };
  if (!in.U8(&type) || !in.Varint(&time)) return bad("header");
  if (type < static_cast<uint8_t>(RecordType::kDefinition) ||
      type > static_cast<uint8_t>(RecordType::kReplyRejected)) {
    return bad("unknown type");
  }
  r.type = static_cast<RecordType>(type);
  r.time_micros = static_cast<int64_t>(time);
  if (HasSaga(r.type) && !in.String(&r.saga_id)) return bad("saga id");
  uint64_t v1 = 0, v2 = 0, v3 = 0;
  uint8_t k = 0, f = 0;
  auto kind_ok = [&] { return k <= static_cast<uint8_t>(SagaCommandKind::kCancel); };
  bool ok = true;
  switch (r.type) {
    case RecordType::kDefinition:
    case RecordType::kAbort:
    case RecordType::kCheckpoint:
    case RecordType::kReplyKey:
      ok = in.String(&r.a);
      break;
    case RecordType::kReplyRejected:
      ok = in.Varint(&v1) && in.U8(&k) && kind_ok() && in.Varint(&v2) && in.String(&r.a) &&
           v1 <= UINT32_MAX && v2 <= UINT32_MAX;
      r.step = static_cast<uint32_t>(v1);
      r.kind = static_cast<SagaCommandKind>(k);
      r.attempt = static_cast<uint32_t>(v2);
      break;
    case RecordType::kStarted:
      ok = in.String(&r.a) && in.Varint(&v1) && in.Varint(&v2) && in.String(&r.b) &&
           v1 <= UINT32_MAX && (in.done() || in.String(&r.trace));
      r.version = static_cast<uint32_t>(v1);
      r.due_micros = static_cast<int64_t>(v2);
      break;
    case RecordType::kAttempt:
      ok = in.Varint(&v1) && in.U8(&k) && kind_ok() && in.Varint(&v2) && in.Varint(&v3) &&
           v1 <= UINT32_MAX && v2 <= UINT32_MAX;
      r.step = static_cast<uint32_t>(v1);
      r.kind = static_cast<SagaCommandKind>(k);
      r.attempt = static_cast<uint32_t>(v2);
      r.due_micros = static_cast<int64_t>(v3);
      break;
    case RecordType::kBackoff:
      ok = in.Varint(&v1) && in.U8(&k) && kind_ok() && in.Varint(&v2) && in.Varint(&v3) &&
           in.U8(&f) && in.String(&r.a) && v1 <= UINT32_MAX && v2 <= UINT32_MAX;
      r.step = static_cast<uint32_t>(v1);
      r.kind = static_cast<SagaCommandKind>(k);
      r.attempt = static_cast<uint32_t>(v2);
      r.due_micros = static_cast<int64_t>(v3);
      r.flag = f;
      break;
    case RecordType::kStepDone:
      ok = in.Varint(&v1) && in.U8(&k) && kind_ok() && in.U8(&f) && v1 <= UINT32_MAX;
      r.step = static_cast<uint32_t>(v1);
      r.kind = static_cast<SagaCommandKind>(k);
      r.flag = f;
      break;
    case RecordType::kStepFailed:
      ok = in.Varint(&v1) && in.U8(&f) && in.String(&r.a) && v1 <= UINT32_MAX;
      r.step = static_cast<uint32_t>(v1);
      r.flag = f;
      break;
    case RecordType::kFinished:
      ok = in.U8(&f);
      r.flag = f;
      break;
    case RecordType::kTimer:
      ok = in.U8(&f) && in.Varint(&v1);
      r.flag = f;
      r.due_micros = static_cast<int64_t>(v1);
      break;
    case RecordType::kBaseBegin:
    case RecordType::kBaseEnd:
      break;
  }
  if (!ok) return bad("fields");
  if (!in.done()) return bad("trailing bytes");
  return r;
}

bool FrameReader::Next(std::string_view* payload) { return reader_.Next(payload); }

}  // namespace converge::saga_internal
