// Binary encodings of the consumer-group module: the framing of the state files (snapshot and
// journal), the records they hold, and the dead-letter envelope stored in dead-letter topics.
//
// Frames are those of the shared record log (core/record_log.h): the state files are record-log
// files, read with the groups' header-less format of before as their legacy format. A reader
// stops at the first frame that is short or fails its checksum (a torn tail).
//
// Integers are LEB128 varints (signed ones zigzag-encoded), strings are a varint length then
// the bytes (core/coding.h; Encoder and Decoder are this module's names for those). Every decoder
// checks bounds and returns false on malformed input; none asserts.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "converge/consumer_group.h"
#include "core/coding.h"

namespace converge::internal::groups {

class Encoder {
 public:
  explicit Encoder(std::string* out) : out_(out) {}
  void Byte(uint8_t v) { out_->push_back(static_cast<char>(v)); }
  void Varint(uint64_t v);
  void Signed(int64_t v) { Varint(ZigZagEncode(v)); }
  void Fixed32(uint32_t v);
  void Bytes(std::string_view s);

 private:
  std::string* out_;
};

class Decoder {
 public:
  explicit Decoder(std::string_view in) : in_(in) {}
  bool Byte(uint8_t* v);
  bool Varint(uint64_t* v);
  bool Varint32(uint32_t* v);
  bool Signed(int64_t* v);
  bool Fixed32(uint32_t* v);
  bool Bytes(std::string_view* s);
  bool String(std::string* s);
  bool empty() const { return in_.empty(); }
  size_t remaining() const { return in_.size(); }

 private:
  std::string_view in_;
};

// Appends one record-log frame holding `payload` to `out`.
void AppendFrame(std::string* out, std::string_view payload);
// Splits `data` (frames without a file header) into frame payloads. Stops at the first bad frame;
// `*valid_bytes` says how many bytes were good. Returns the payloads (views into `data`).
std::vector<std::string_view> ReadFrames(std::string_view data, size_t* valid_bytes);

// ---- state records ----
enum class RecordType : uint8_t {
  kHeader = 1,     // snapshot header: generation, next group id, next lease id
  kGroup = 2,      // a group: id, topic, name, options, dead-letter topic, initial positions
  kPartition = 3,  // a partition's committed offset and done ranges above it
  kReplayed = 4,   // a group's replayed dead-letter ranges (the full set)
  kDelete = 5,     // a group was deleted
};

using Ranges = std::vector<std::pair<uint64_t, uint64_t>>;

struct PartitionRecord {
  uint64_t group_id = 0;
  uint32_t partition = 0;
  uint64_t committed = 0;
  Ranges done;  // sorted, disjoint, all >= committed
};

struct GroupRecord {
  uint64_t group_id = 0;
  std::string topic;
  std::string group;
  GroupOptions options;
  std::string dead_letter_topic;
  std::vector<uint64_t> committed;  // per partition, at creation
};

struct HeaderRecord {
  uint64_t generation = 0;
  uint64_t next_group_id = 1;
};

void EncodeHeader(const HeaderRecord& r, std::string* out);
void EncodeGroup(const GroupRecord& r, std::string* out);
void EncodePartition(const PartitionRecord& r, std::string* out);
void EncodeReplayed(uint64_t group_id, const Ranges& ranges, std::string* out);
void EncodeDelete(uint64_t group_id, std::string* out);

// Each appends one frame to `out`. Decoders take a frame payload (type byte first).
bool DecodeType(std::string_view payload, RecordType* type);
bool DecodeHeader(std::string_view payload, HeaderRecord* r);
bool DecodeGroup(std::string_view payload, GroupRecord* r);
bool DecodePartition(std::string_view payload, PartitionRecord* r);
bool DecodeReplayed(std::string_view payload, uint64_t* group_id, Ranges* ranges);
bool DecodeDelete(std::string_view payload, uint64_t* group_id);

// ---- dead-letter envelope (the value of a dead-letter record) ----
struct DeadLetterFields {
  std::string_view topic;
  uint32_t partition = 0;
  uint64_t offset = 0;
  uint32_t delivery_count = 0;
  std::string_view reason;
  std::string_view last_error;
  int64_t dead_lettered_at_micros = 0;
  bool permanent = false;
  std::string_view id;
  std::string_view key;
  std::string_view value;
  int64_t timestamp_micros = 0;
};
void EncodeDeadLetter(const DeadLetterFields& f, std::string* out);
bool DecodeDeadLetter(std::string_view data, DeadLetterFields* f);

// Ranges helpers: adds [begin, end) to sorted disjoint `ranges`, merging neighbours.
void AddRange(Ranges* ranges, uint64_t begin, uint64_t end);
bool InRanges(const Ranges& ranges, uint64_t offset);

}  // namespace converge::internal::groups
