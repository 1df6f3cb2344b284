#include "core/record_log.h"

#include "core/coding.h"

namespace converge::internal::record_log {
namespace {

constexpr char kHeader[kFileHeaderBytes] = {'C',    'V',    'R',   'L', static_cast<char>(kVersion),
                                            '\xff', '\xff', '\xff'};
// The legacy formats' bounds on one payload, as their readers had them.
constexpr uint32_t kGroupsV0MaxPayload = 256u << 20;
constexpr uint32_t kSagaV0MaxPayload = 16u << 20;
constexpr uint32_t kStoreV0MaxPayload = 1u << 30;

bool AllZero(std::string_view s) {
  for (char c : s) {
    if (c != 0) return false;
  }
  return true;
}

uint32_t FrameCrc(const char* length_and_payload, size_t payload_len) {
  return MaskCrc(Crc32c(length_and_payload, 4 + payload_len));
}

}  // namespace

std::string_view StopName(Stop s) {
  switch (s) {
    case Stop::kNone:
      return "reading";
    case Stop::kEnd:
      return "end";
    case Stop::kTorn:
      return "torn";
    case Stop::kCorrupt:
      return "corrupt";
  }
  return "?";
}

void AppendFileHeader(std::string* out) { out->append(kHeader, kFileHeaderBytes); }

bool HasFileHeader(std::string_view prefix) {
  return prefix.size() >= kFileHeaderBytes &&
         prefix.substr(0, kFileHeaderBytes) == std::string_view(kHeader, kFileHeaderBytes);
}

size_t BeginFrame(std::string* out) {
  const size_t start = out->size();
  out->append(kFrameHeaderBytes, '\0');
  return start;
}

void FinishFrame(std::string* out, size_t start) {
  const size_t len = out->size() - start - kFrameHeaderBytes;
  char* hdr = out->data() + start;
  EncodeFixed32(hdr + 4, static_cast<uint32_t>(len));
  EncodeFixed32(hdr, FrameCrc(hdr + 4, len));
}

void AppendFrame(std::string* out, std::string_view payload) {
  const size_t start = BeginFrame(out);
  out->append(payload.data(), payload.size());
  FinishFrame(out, start);
}

void AppendLegacyFrame(Legacy format, std::string* out, std::string_view payload) {
  const auto len = static_cast<uint32_t>(payload.size());
  switch (format) {
    case Legacy::kNone:
      AppendFrame(out, payload);
      return;
    case Legacy::kGroupsV0:
      PutFixed32(out, len);
      PutFixed32(out, MaskCrc(Crc32c(payload)));
      break;
    case Legacy::kSagaV0:
      PutFixed32(out, len);
      PutFixed32(out, Crc32c(payload));
      break;
    case Legacy::kStoreV0: {
      char l[4];
      EncodeFixed32(l, len);
      PutFixed32(out, Crc32cExtend(Crc32c(l, 4), payload.data(), payload.size()));
      out->append(l, 4);
      break;
    }
  }
  out->append(payload.data(), payload.size());
}

Reader Reader::ForFile(std::string_view data, Legacy legacy) {
  const std::string_view header(kHeader, kFileHeaderBytes);
  if (HasFileHeader(data)) return Reader(data, Legacy::kNone, kFileHeaderBytes);
  if (data.size() < kFileHeaderBytes && header.substr(0, data.size()) == data) {
    // Empty, or a header a crash cut short (read as an incomplete frame: a torn tail at 0).
    return Reader(data, Legacy::kNone, 0);
  }
  return Reader(data, legacy, 0);
}

Reader Reader::ForFrames(std::string_view data) { return Reader(data, Legacy::kNone, 0); }

Reader::Frame Reader::ParseFrame(size_t at, std::string_view* payload, size_t* size) const {
  const std::string_view rest = data_.substr(at);
  if (rest.size() < kFrameHeaderBytes) return AllZero(rest) ? Frame::kZeros : Frame::kIncomplete;
  const char* p = rest.data();
  const uint32_t w0 = DecodeFixed32(p);
  const uint32_t w1 = DecodeFixed32(p + 4);
  const size_t room = rest.size() - kFrameHeaderBytes;
  uint32_t len = 0;
  bool crc_ok = false;
  switch (format_) {
    case Legacy::kNone:
    case Legacy::kStoreV0: {
      // crc | length; an all-zero header is zero fill (a preallocated or zero-extended tail).
      if (w0 == 0 && w1 == 0) return AllZero(rest) ? Frame::kZeros : Frame::kBad;
      len = w1;
      const uint32_t max = format_ == Legacy::kNone ? kMaxPayloadBytes : kStoreV0MaxPayload;
      if (len > max) return Frame::kBad;
      if (len > room) return Frame::kIncomplete;
      crc_ok = format_ == Legacy::kNone ? FrameCrc(p + 4, len) == w0
                                        : Crc32c(p + 4, 4 + size_t{len}) == w0;
      break;
    }
    case Legacy::kGroupsV0:
    case Legacy::kSagaV0: {
      // length | crc of the payload.
      len = w0;
      if (format_ == Legacy::kSagaV0 && (len == 0 || len > kSagaV0MaxPayload)) return Frame::kBad;
      if (format_ == Legacy::kGroupsV0 && len > kGroupsV0MaxPayload) return Frame::kBad;
      if (len > room) return Frame::kIncomplete;
      const uint32_t crc = Crc32c(p + kFrameHeaderBytes, len);
      crc_ok = (format_ == Legacy::kGroupsV0 ? MaskCrc(crc) : crc) == w1;
      break;
    }
  }
  if (!crc_ok) return Frame::kBad;
  *payload = rest.substr(kFrameHeaderBytes, len);
  *size = kFrameHeaderBytes + len;
  return Frame::kValid;
}

bool Reader::ValidFrameAt(size_t offset) const {
  if (offset >= data_.size()) return false;
  std::string_view payload;
  size_t size = 0;
  return ParseFrame(offset, &payload, &size) == Frame::kValid;
}

bool Reader::Next(std::string_view* payload) {
  if (stop_ != Stop::kNone) return false;
  if (pos_ == data_.size()) {
    stop_ = Stop::kEnd;
    return false;
  }
  size_t size = 0;
  switch (ParseFrame(pos_, payload, &size)) {
    case Frame::kValid:
      last_ = pos_;
      pos_ += size;
      return true;
    case Frame::kIncomplete:
    case Frame::kZeros:
      stop_ = Stop::kTorn;
      return false;
    case Frame::kBad: {
      // A whole frame that fails its check: damage if a valid frame follows at its declared
      // end (records after it were written whole), else what a torn final write leaves.
      const uint32_t len = DecodeFixed32(data_.data() + pos_ + (legacy_length_first() ? 0 : 4));
      const size_t next = pos_ + kFrameHeaderBytes + len;
      stop_ =
          next > pos_ && next < data_.size() && ValidFrameAt(next) ? Stop::kCorrupt : Stop::kTorn;
      return false;
    }
  }
  return false;
}

Status AppendFrames(WritableFile& file, std::string_view frames) {
  if (frames.empty()) return Status::Ok();
  if (file.Size() > 0) return file.Append(frames);
  std::string first;
  first.reserve(kFileHeaderBytes + frames.size());
  AppendFileHeader(&first);
  first.append(frames.data(), frames.size());
  return file.Append(first);
}

Result<std::unique_ptr<Writer>> Writer::Create(FileSystem& fs, const std::string& path,
                                               OpenMode mode) {
  CONVERGE_ASSIGN_OR_RETURN(std::unique_ptr<WritableFile> f, fs.NewWritableFile(path, mode));
  return std::unique_ptr<Writer>(new Writer(std::move(f)));
}

Result<std::unique_ptr<Writer>> Writer::Reopen(FileSystem& fs, const std::string& path) {
  CONVERGE_ASSIGN_OR_RETURN(std::unique_ptr<WritableFile> f,
                            fs.NewWritableFile(path, OpenMode::kAppend));
  return std::unique_ptr<Writer>(new Writer(std::move(f)));
}

Status Writer::AddRecord(std::string_view payload) {
  std::string frame;
  frame.reserve(kFrameHeaderBytes + payload.size());
  AppendFrame(&frame, payload);
  return AppendFrames(*file_, frame);
}

Status Writer::AddFrames(std::string_view frames) { return AppendFrames(*file_, frames); }
Status Writer::Sync() { return file_->Sync(); }
Status Writer::Close() { return file_->Close(); }

}  // namespace converge::internal::record_log
