// The raw-disk baseline: what this disk can do for an append-only log with group commit.
// Records get a small header like a real log ([u32 length][u32 crc32c][u64 sequence]), are
// appended with one write() per batch and made durable with one fdatasync() per batch. The
// best batch size is reported as "raw", the physical limit group commit approaches.
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>
#include <vector>

#include "bench/log_bench.h"
#include "core/crc32c.h"

namespace converge::bench {
namespace {

constexpr size_t kRecordHeaderBytes = 16;
constexpr uint64_t kBatchSizes[] = {64, 512, 4096};

Status WriteAll(int fd, const char* p, size_t n, const std::string& path) {
  while (n > 0) {
    ssize_t w = ::write(fd, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      return InternalError("write " + path + ": " + std::strerror(errno));
    }
    p += w;
    n -= static_cast<size_t>(w);
  }
  return Status::Ok();
}

class RawDiskSystem : public LogSystem {
 public:
  std::string name() const override { return "raw"; }
  std::string durability() const override { return "fsync"; }
  Status Start(const LogWorkload& w) override { return Status::Ok(); }

  Status Publish(const LogWorkload& w, std::vector<Measurement>& out) override {
    Measurement best;
    for (uint64_t batch : kBatchSizes) {
      Measurement m;
      CONVERGE_RETURN_IF_ERROR(RunBatchSize(w, batch, &m));
      if (m.events_per_s > best.events_per_s) best = m;
      out.push_back(m);
    }
    best.note = "best of the above (" + best.system + ")";
    best.system = "raw";
    out.push_back(best);
    return Status::Ok();
  }

  bool has_consume() const override { return false; }
  Status ConsumeAck(const LogWorkload&, std::vector<Measurement>&) override { return Status::Ok(); }
  bool has_latency() const override { return false; }
  Status Latency(const LogWorkload&, std::vector<Measurement>&) override { return Status::Ok(); }
  Status Stop() override { return Status::Ok(); }

 private:
  Status RunBatchSize(const LogWorkload& w, uint64_t batch, Measurement* m) {
    const std::string path = w.dir + "/raw-" + std::to_string(batch) + ".log";
    int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0) return InternalError("open " + path + ": " + std::strerror(errno));
    const size_t record_bytes = kRecordHeaderBytes + w.event_bytes;
    std::vector<char> buf(batch * record_bytes);
    std::vector<char> payload(w.event_bytes);
    FillPayload(payload.data(), payload.size());
    Status status;
    const int64_t start = NowNanos();
    for (uint64_t seq = 0; seq < w.events && status.ok();) {
      const uint64_t n = std::min(batch, w.events - seq);
      char* p = buf.data();
      for (uint64_t i = 0; i < n; ++i, ++seq, p += record_bytes) {
        StampPayload(payload.data(), seq, 0);
        const auto len = static_cast<uint32_t>(w.event_bytes);
        std::memcpy(p, &len, 4);
        std::memcpy(p + 8, &seq, 8);
        std::memcpy(p + kRecordHeaderBytes, payload.data(), w.event_bytes);
        const uint32_t crc = internal::Crc32c(p + 8, record_bytes - 8);
        std::memcpy(p + 4, &crc, 4);
      }
      status = WriteAll(fd, buf.data(), n * record_bytes, path);
      if (status.ok() && ::fdatasync(fd) != 0) {
        status = InternalError("fdatasync " + path + ": " + std::strerror(errno));
      }
    }
    const int64_t end = NowNanos();
    ::close(fd);
    ::unlink(path.c_str());
    CONVERGE_RETURN_IF_ERROR(status);
    m->workload = "publish";
    m->system = "raw-b" + std::to_string(batch);
    m->durability = "fsync";
    m->events = w.events;
    m->seconds = static_cast<double>(end - start) / 1e9;
    m->events_per_s = static_cast<double>(w.events) / m->seconds;
    m->note = "write+fdatasync per " + std::to_string(batch) + " records of " +
              std::to_string(record_bytes) + " B";
    return Status::Ok();
  }
};

}  // namespace

std::unique_ptr<LogSystem> MakeRawDiskSystem() { return std::make_unique<RawDiskSystem>(); }

}  // namespace converge::bench
