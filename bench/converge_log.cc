// converge in-process (`--via inproc`): the log as a library in this process, on
// Env::Default(), topic durability fsync (an OK Append means fdatasync'ed; concurrent
// appenders share one sync).
//   publish      Append batches from kPublishThreads threads (group commit across them).
//   consume_ack  TODO(bench): through consumer groups (include/converge/consumer_group.h) once
//                they land; until then a "consume" row of plain Log::Read, which is not the
//                target's consume + ack and is not checked against it.
//   latency      a publisher Appending the due events at a fixed rate; a consumer thread woken
//                by WatchAppends that Reads from its next offset.
#include <atomic>
#include <condition_variable>
#include <mutex>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "bench/log_bench.h"
#include "converge/env.h"
#include "converge/log.h"

namespace converge::bench {
namespace {

constexpr int kPublishThreads = 2;
constexpr uint64_t kPublishBatch = 4096;
constexpr size_t kReadMaxRecords = 4096;
constexpr size_t kReadMaxBytes = 4u << 20;
constexpr uint64_t kLatencyMaxBatch = 4096;
constexpr int64_t kDrainTimeoutMs = 60'000;
constexpr const char* kPublishTopic = "bench";
constexpr const char* kLatencyTopic = "lat";

class ConvergeSystem : public LogSystem {
 public:
  ~ConvergeSystem() override { Stop().IgnoreError(); }

  std::string name() const override { return "converge"; }
  std::string durability() const override { return "fsync"; }

  Status Start(const LogWorkload& w) override {
    LogOptions options;
    options.dir = w.dir + "/log";
    CONVERGE_ASSIGN_OR_RETURN(log_, Log::Open(Env::Default(), options));
    TopicOptions topic;
    topic.partitions = 1;
    topic.durability = Durability::kFsync;
    CONVERGE_RETURN_IF_ERROR(log_->CreateTopic(kPublishTopic, topic));
    return log_->CreateTopic(kLatencyTopic, topic);
  }

  Status Publish(const LogWorkload& w, std::vector<Measurement>& out) override {
    std::atomic<uint64_t> next{0};
    std::vector<Status> statuses(kPublishThreads);
    auto appender = [&](int t) {
      std::vector<char> payloads(kPublishBatch * w.event_bytes);
      std::vector<RecordView> views(kPublishBatch);
      for (uint64_t i = 0; i < kPublishBatch; ++i) {
        FillPayload(&payloads[i * w.event_bytes], w.event_bytes);
        views[i].value = std::string_view(&payloads[i * w.event_bytes], w.event_bytes);
      }
      while (true) {
        const uint64_t first = next.fetch_add(kPublishBatch);
        if (first >= w.events) return;
        const uint64_t n = std::min(kPublishBatch, w.events - first);
        for (uint64_t i = 0; i < n; ++i) StampPayload(&payloads[i * w.event_bytes], first + i, 0);
        Result<std::vector<AppendResult>> r =
            log_->Append(kPublishTopic, std::span<const RecordView>(views.data(), n));
        if (!r.ok()) {
          statuses[t] = r.status();
          return;
        }
      }
    };
    const int64_t start = NowNanos();
    std::vector<std::thread> threads;
    for (int t = 0; t < kPublishThreads; ++t) threads.emplace_back(appender, t);
    for (std::thread& t : threads) t.join();
    const int64_t end = NowNanos();
    for (const Status& s : statuses) CONVERGE_RETURN_IF_ERROR(s);
    CONVERGE_ASSIGN_OR_RETURN(TopicInfo info, log_->DescribeTopic(kPublishTopic));
    if (info.partitions.empty() || info.partitions[0].end_offset != w.events) {
      return InternalError(
          "converge: topic holds " +
          std::to_string(info.partitions.empty() ? 0 : info.partitions[0].end_offset) +
          " records, expected " + std::to_string(w.events));
    }
    Measurement m;
    m.workload = "publish";
    m.system = name();
    m.durability = durability();
    m.events = w.events;
    m.seconds = static_cast<double>(end - start) / 1e9;
    m.events_per_s = static_cast<double>(w.events) / m.seconds;
    m.note = "Log::Append, " + std::to_string(kPublishBatch) + " per call from " +
             std::to_string(kPublishThreads) + " threads, 1 partition";
    out.push_back(m);
    return Status::Ok();
  }

  Status ConsumeAck(const LogWorkload& w, std::vector<Measurement>& out) override {
    // TODO(bench): consumer groups (fetch + ack) once include/converge/consumer_group.h lands.
    uint64_t offset = 0;
    uint64_t bad = 0;
    const int64_t start = NowNanos();
    while (offset < w.events) {
      CONVERGE_ASSIGN_OR_RETURN(
          ReadBatch batch, log_->Read(kPublishTopic, 0, offset, kReadMaxRecords, kReadMaxBytes));
      if (batch.records.empty()) {
        return InternalError("converge: read ended at offset " + std::to_string(offset));
      }
      for (const StoredRecord& r : batch.records) {
        if (r.value.size() != w.event_bytes) ++bad;
      }
      offset = batch.next_offset;
    }
    const int64_t end = NowNanos();
    if (bad > 0)
      return InternalError("converge: " + std::to_string(bad) + " records of wrong size");
    Measurement m;
    m.workload = "consume";
    m.system = name();
    m.durability = durability();
    m.events = w.events;
    m.seconds = static_cast<double>(end - start) / 1e9;
    m.events_per_s = static_cast<double>(w.events) / m.seconds;
    m.note = "Log::Read only, no ack (consumer groups not built yet)";
    out.push_back(m);
    return Status::Ok();
  }

  Status Latency(const LogWorkload& w, std::vector<Measurement>& out) override {
    const uint64_t total = LatencyTotalEvents(w);
    DeliveryTracker tracker(total, LatencyWarmupEvents(w));

    // WatchAppends runs on the appending thread: it only publishes the new end and wakes the
    // consumer.
    std::atomic<uint64_t> end_offset{0};
    std::mutex mu;
    std::condition_variable cv;
    CONVERGE_ASSIGN_OR_RETURN(std::unique_ptr<Log::Watch> watch,
                              log_->WatchAppends(kLatencyTopic, [&](uint32_t, uint64_t end) {
                                uint64_t seen = end_offset.load(std::memory_order_relaxed);
                                while (end > seen && !end_offset.compare_exchange_weak(seen, end)) {
                                }
                                { std::lock_guard<std::mutex> lock(mu); }
                                cv.notify_one();
                              }));
    std::atomic<bool> stop{false};
    Status consumer_status;
    std::thread consumer([&] {
      uint64_t next = 0;
      while (!stop.load() && next < total) {
        {
          std::unique_lock<std::mutex> lock(mu);
          cv.wait_for(lock, std::chrono::milliseconds(100),
                      [&] { return stop.load() || end_offset.load() > next; });
        }
        if (end_offset.load() <= next) continue;
        Result<ReadBatch> batch =
            log_->Read(kLatencyTopic, 0, next, kReadMaxRecords, kReadMaxBytes);
        const int64_t now = NowNanos();
        if (!batch.ok()) {
          consumer_status = batch.status();
          return;
        }
        for (const StoredRecord& r : batch->records) {
          tracker.Deliver(r.value.data(), r.value.size(), now);
        }
        next = batch->next_offset;
      }
    });

    std::vector<char> payloads(kLatencyMaxBatch * w.event_bytes);
    std::vector<RecordView> views(kLatencyMaxBatch);
    for (uint64_t i = 0; i < kLatencyMaxBatch; ++i) {
      FillPayload(&payloads[i * w.event_bytes], w.event_bytes);
      views[i].value = std::string_view(&payloads[i * w.event_bytes], w.event_bytes);
    }
    PacedRunStats stats;
    Status status = RunPacedPublisher(
        total, w.rate_per_s, kLatencyMaxBatch,
        [&](uint64_t first, uint64_t count, const Pacer& pacer) -> Status {
          for (uint64_t i = 0; i < count; ++i) {
            StampPayload(&payloads[i * w.event_bytes], first + i, pacer.DueNanos(first + i));
          }
          return log_->Append(kLatencyTopic, std::span<const RecordView>(views.data(), count))
              .status();
        },
        &stats);
    const bool all = status.ok() && tracker.WaitAll(kDrainTimeoutMs);
    stop.store(true);
    cv.notify_one();
    consumer.join();
    watch.reset();
    CONVERGE_RETURN_IF_ERROR(status);
    CONVERGE_RETURN_IF_ERROR(consumer_status);
    if (!all) {
      return DeadlineExceededError("converge latency: delivered " +
                                   std::to_string(tracker.delivered()) + " of " +
                                   std::to_string(total));
    }
    out.push_back(LatencyMeasurement(name(), durability(), tracker, stats,
                                     "Log::Append of the due events; WatchAppends + Log::Read"));
    return Status::Ok();
  }

  Status Stop() override {
    if (log_ == nullptr) return Status::Ok();
    Status s = log_->Sync();
    log_.reset();
    return s;
  }

 private:
  std::unique_ptr<Log> log_;
};

}  // namespace

std::unique_ptr<LogSystem> MakeConvergeSystem() { return std::make_unique<ConvergeSystem>(); }

}  // namespace converge::bench
