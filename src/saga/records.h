// The saga log's records: what the orchestrator's state machine writes and replays.
//
// The log is event-sourced: the state machine changes an instance only by applying records, so
// replaying the records after a crash rebuilds exactly the state that was durable. Framing: the
// shared record log's (core/record_log.h, docs/formats/record_log.md); segments of earlier
// releases, without its header, are read as record_log::Legacy::kSagaV0.
// payload: u8 type, varint time_micros, then the fields of the type (strings are varint length +
// bytes). docs/formats/saga.md describes every type.
//
// Thread-safety: pure functions.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "converge/saga.h"
#include "converge/status.h"
#include "core/record_log.h"

namespace converge::saga_internal {

enum class RecordType : uint8_t {
  kDefinition = 1,      // a: canonical definition JSON
  kStarted = 2,         // a: definition name, version, due: deadline (0 none), b: data,
                        // [trace: traceparent, only when set]
  kAttempt = 3,         // step, kind, attempt, due: step timeout (0 none)
  kBackoff = 4,         // step, kind, attempt (the failed one), due: retry, flag: stuck, a: error
  kStepDone = 5,        // step, kind, flag: applied
  kStepFailed = 6,      // step, flag: definitive, a: error
  kAbort = 7,           // a: reason
  kFinished = 8,        // flag: final SagaState
  kTimer = 9,           // flag: SagaTimerKind, due (0 = cancelled)
  kCheckpoint = 10,     // a: the instance's whole state (see machine.cc)
  kBaseBegin = 11,      // first record of a compacted segment: earlier segments are superseded
  kBaseEnd = 12,        // the compacted snapshot is complete
  kReplyKey = 13,       // a: the key of the reply tokens (written once; in every snapshot)
  kReplyRejected = 14,  // step, kind, attempt, a: why a reply was not used (history only)
};

// One record; the views point into whatever it was built from or decoded out of.
struct RecordView {
  RecordType type = RecordType::kStarted;
  int64_t time_micros = 0;
  std::string_view saga_id;
  std::string_view a;
  std::string_view b;
  std::string_view trace;  // kStarted: the saga's traceparent (empty: none, or an older log)
  uint32_t version = 0;
  uint32_t step = 0;
  SagaCommandKind kind = SagaCommandKind::kAction;
  uint32_t attempt = 0;
  int64_t due_micros = 0;
  uint8_t flag = 0;
};

static_assert(static_cast<uint8_t>(RecordType::kBaseBegin) == 11 &&
                  static_cast<uint8_t>(RecordType::kBaseEnd) == 12,
              "the compaction markers of saga/saga_log.h");

inline constexpr size_t kFrameHeaderBytes = internal::record_log::kFrameHeaderBytes;

// Appends the framed record to *out.
void AppendRecord(const RecordView& r, std::string* out);
// Appends a frame around an already encoded payload.
void AppendFrame(std::string_view payload, std::string* out);

// Decodes one payload (the frame already checked). DataLoss if malformed.
Result<RecordView> DecodePayload(std::string_view payload);

// Splits framed records (a batch, without a file header). Next() returns false at the end of
// the data or at the first damaged or incomplete frame; valid_bytes() is then the length of the
// good prefix and damaged() says why it stopped early.
class FrameReader {
 public:
  explicit FrameReader(std::string_view data)
      : reader_(internal::record_log::Reader::ForFrames(data)) {}
  bool Next(std::string_view* payload);
  size_t valid_bytes() const { return reader_.valid_bytes(); }
  bool damaged() const { return reader_.damaged(); }

 private:
  internal::record_log::Reader reader_;
};

// Varint/string helpers shared with the checkpoint codec.
void PutVarint(std::string* out, uint64_t v);
void PutString(std::string* out, std::string_view s);
class ByteReader {
 public:
  explicit ByteReader(std::string_view data) : data_(data) {}
  bool Varint(uint64_t* v);
  bool U8(uint8_t* v);
  bool String(std::string_view* s);
  bool done() const { return pos_ == data_.size(); }

 private:
  std::string_view data_;
  size_t pos_ = 0;
};

}  // namespace converge::saga_internal
