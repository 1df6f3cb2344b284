// The framed record log: one on-disk framing, one writer and one reader with torn-tail
// recovery, shared by every append-only file of converge (the consumer-group state, the saga
// and 2PC decision logs, the store WAL). docs/formats/record_log.md is the reference.
//
// Version 1 file:
//   header   8 bytes: 'C' 'V' 'R' 'L', u8 version (1), 0xFF 0xFF 0xFF
//   frames   fixed32 masked_crc32c(length bytes + payload) | fixed32 length | payload
// The CRC covers the length, so a damaged length is caught as damage rather than read as a
// place to skip to; it is masked (core/crc32c.h), so a zero-filled tail is never a valid frame.
// The header's last three bytes make its second 32-bit word 0xFFFFFF01, which no frame of the
// earlier, header-less formats can start with (their length limits are far below it): a file
// without the header is read in the legacy format its owner names (see Legacy), so data
// directories written before the header existed still open. New files are created empty and get
// the header with their first write (AppendFrames), so creating one needs no disk space.
//
// Reading stops at the first frame that is not whole and valid and says why (Stop):
//   kTorn     what a crash can leave at the end of a file: an incomplete frame, a zero-filled
//             rest, or a bad frame that is not followed by a valid one;
//   kCorrupt  a whole frame that fails its checksum (or length bound) with a valid frame right
//             after it: records written whole after it would be lost. Owners refuse or report
//             this, never hide it. (Only the frame at the bad one's declared end is tried, not
//             every later offset: a payload may itself hold bytes that look like a frame.)
// valid_bytes() is then the length of the good prefix, where a torn file is cut.
//
// Thread-safety: Reader and Writer are single-threaded objects; the free functions are pure.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "converge/env.h"
#include "converge/status.h"

namespace converge::internal::record_log {

inline constexpr uint8_t kVersion = 1;
inline constexpr size_t kFileHeaderBytes = 8;
inline constexpr size_t kFrameHeaderBytes = 8;
// Bound on one payload (the store WAL's transactions are the large ones).
inline constexpr uint32_t kMaxPayloadBytes = 1u << 30;

// The header-less formats files were written in before version 1, one per owner. A file
// without the version-1 header is read in the one its owner names.
enum class Legacy : uint8_t {
  kNone,      // no legacy files: a file without the header is damaged from byte 0
  kGroupsV0,  // groups state: fixed32 length | fixed32 masked crc32c(payload) | payload
  kSagaV0,    // saga/2PC logs: fixed32 length (1..16 MiB) | fixed32 crc32c(payload) | payload
  kStoreV0,   // store WAL: fixed32 crc32c(length bytes + payload) | fixed32 length | payload
};

enum class Stop : uint8_t { kNone, kEnd, kTorn, kCorrupt };
std::string_view StopName(Stop s);

// Appends the version-1 file header.
void AppendFileHeader(std::string* out);
// True if `prefix` (the first bytes of a file) starts with the version-1 header.
bool HasFileHeader(std::string_view prefix);
// Appends one version-1 frame around `payload`.
void AppendFrame(std::string* out, std::string_view payload);
// For payloads encoded in place: BeginFrame reserves the frame header and returns where it
// starts; the caller appends the payload; FinishFrame fills in length and CRC.
size_t BeginFrame(std::string* out);
void FinishFrame(std::string* out, size_t start);

// Frames of the legacy formats, exactly as the code before version 1 wrote them. Tests use
// them to build old files; nothing writes them any more.
void AppendLegacyFrame(Legacy format, std::string* out, std::string_view payload);

class Reader {
 public:
  // A whole file, from byte 0: version 1 if it starts with the header (or is a prefix of it:
  // a header torn by a crash), else `legacy`.
  static Reader ForFile(std::string_view data, Legacy legacy);
  // Version-1 frames without a file header (a batch built with AppendFrame).
  static Reader ForFrames(std::string_view data);

  // The next record's payload (a view into the data). False at the end or at the first bad
  // frame; stop() then says which.
  bool Next(std::string_view* payload);

  // Bytes of the header and of every frame returned so far.
  size_t valid_bytes() const { return pos_; }
  // Where the frame of the payload last returned by Next starts.
  size_t last_record_offset() const { return last_; }
  Stop stop() const { return stop_; }
  // True once Next stopped before the end of the data (torn or corrupt).
  bool damaged() const { return stop_ == Stop::kTorn || stop_ == Stop::kCorrupt; }
  // 0 for a legacy file, else kVersion.
  uint8_t version() const { return format_ == Legacy::kNone ? kVersion : 0; }
  bool legacy() const { return format_ != Legacy::kNone; }
  // True if a valid frame of this file's format starts at `offset`. Owners use it to tell a
  // record that does not decode at the tail (torn) from one with records after it (damage).
  bool ValidFrameAt(size_t offset) const;

 private:
  Reader(std::string_view data, Legacy format, size_t start)
      : data_(data), format_(format), pos_(start), last_(start) {}
  // Parses the frame at `at`: its payload and size, or a reason it is not a valid frame.
  enum class Frame : uint8_t { kValid, kIncomplete, kZeros, kBad };
  Frame ParseFrame(size_t at, std::string_view* payload, size_t* size) const;
  bool legacy_length_first() const {
    return format_ == Legacy::kGroupsV0 || format_ == Legacy::kSagaV0;
  }

  std::string_view data_;
  Legacy format_;
  size_t pos_;
  size_t last_;
  Stop stop_ = Stop::kNone;
};

// Appends `frames` (built with AppendFrame/BeginFrame) to a version-1 file. An empty file gets
// the file header in the same write: a new file is created empty, so creating one needs no disk
// space, and cutting a failed first write back to size 0 takes the header with it.
Status AppendFrames(WritableFile& file, std::string_view frames);

// Appends framed records to one file and syncs it.
class Writer {
 public:
  // Creates `path` (kTruncate or kCreateNew), empty: the header comes with the first record.
  static Result<std::unique_ptr<Writer>> Create(FileSystem& fs, const std::string& path,
                                                OpenMode mode);
  // Opens a version-1 file that a Reader read whole (or that was cut back to its valid bytes)
  // to append to it.
  static Result<std::unique_ptr<Writer>> Reopen(FileSystem& fs, const std::string& path);

  // Frames `payload` and appends it.
  Status AddRecord(std::string_view payload);
  // Appends frames built with AppendFrame/BeginFrame (one write for a whole batch).
  Status AddFrames(std::string_view frames);
  Status Sync();
  Status Close();
  // Bytes in the file, header included, synced or not.
  uint64_t size() const { return file_->Size(); }

 private:
  explicit Writer(std::unique_ptr<WritableFile> file) : file_(std::move(file)) {}
  std::unique_ptr<WritableFile> file_;
};

}  // namespace converge::internal::record_log
