// On-disk formats of the store (docs/formats/store.md): WAL records and snapshots.
//
// WAL file "wal-<first seq, 20 digits>.log": a record-log file (core/record_log.h): created
// empty, the file header comes with the first batch (record_log::AppendFrames), then one frame
// per record
//   fixed32 masked crc32c(length bytes + payload) | fixed32 length | payload
// (WAL files of releases before the header have the same frames with an unmasked CRC and no
// header: record_log::Legacy::kStoreV0.)
// payload: u8 type | varint seq | type-specific fields (see format.cc).
// Snapshot file "snapshot-<seq, 20 digits>": magic, seq, feed cursor, the collections with
// their documents, then fixed32 crc32c of everything before it.
// Thread-safety: pure functions.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "converge/store.h"
#include "store/state.h"

namespace converge::store_internal {

enum class RecordType : uint8_t { kTxn = 1, kPutCollection = 2, kDropCollection = 3 };

// One change of a transaction (also what the change feed publishes).
enum class OpKind : uint8_t { kPut = 1, kDelete = 2, kExpire = 3 };
struct WalOp {
  OpKind kind = OpKind::kPut;
  std::string collection;
  std::string key;
  std::shared_ptr<const std::string> value;  // kPut
  int64_t expires_at_ms = 0;                 // kPut; 0 = never
};

struct WalRecord {
  RecordType type = RecordType::kTxn;
  uint64_t seq = 0;
  int64_t wall_ms = 0;      // kTxn: commit time
  std::vector<WalOp> ops;   // kTxn
  std::string collection;   // kPutCollection, kDropCollection
  CollectionConfig config;  // kPutCollection
};

// Appends one framed kTxn record.
void AppendTxnRecord(uint64_t seq, int64_t wall_ms, const std::vector<WalOp>& ops,
                     std::string* out);
void AppendPutCollectionRecord(uint64_t seq, const std::string& name,
                               const CollectionConfig& config, std::string* out);
void AppendDropCollectionRecord(uint64_t seq, const std::string& name, std::string* out);

// Decodes one WAL record's payload (the frame already checked). False if malformed.
bool DecodeWalPayload(std::string_view payload, WalRecord* record);

void EncodeConfig(const CollectionConfig& config, std::string* out);
bool DecodeConfig(Reader* reader, CollectionConfig* config);

// File names.
std::string WalFileName(uint64_t first_seq);
std::string SnapshotFileName(uint64_t seq);
// Parses names made above; false for other names.
bool ParseWalFileName(std::string_view name, uint64_t* first_seq);
bool ParseSnapshotFileName(std::string_view name, uint64_t* seq);

inline constexpr std::string_view kSnapshotMagic = "CVSTSNP1";

struct SnapshotHeader {
  uint64_t seq = 0;
  uint64_t feed_cursor = 0;
};

// Streams a snapshot into `file` in chunks of about `chunk_bytes`, then Syncs it.
Status WriteSnapshot(WritableFile* file, const SnapshotHeader& header, const Collections& state,
                     size_t chunk_bytes = 1u << 20);
// Decodes a whole snapshot file. DataLoss (naming `name`) if it is damaged.
Status ReadSnapshot(std::string_view bytes, std::string_view name, SnapshotHeader* header,
                    Collections* state);

}  // namespace converge::store_internal
