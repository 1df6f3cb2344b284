// converge in-process (`--via inproc`): the log as a library in this process, on
// Env::Default(), topic durability fsync (an OK Append means fdatasync'ed; concurrent
// appenders share one sync).
//   publish      Log::Append batches from kPublishThreads threads (group commit across them).
//   consume_ack  a consumer group (ConsumerGroups: Fetch + AckBatch), once with acks committed
//                by fdatasync before AckBatch returns (kSync) and once with acks committed
//                every 100 ms (kPeriodic, like JetStream's unsynced ack state).
//   latency      a publisher Appending the due events at a fixed rate; a consumer thread woken
//                by WatchReady that Fetches and AckBatches (kPeriodic).
#include <atomic>
#include <condition_variable>
#include <mutex>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "bench/log_bench.h"
#include "converge/consumer_group.h"
#include "converge/env.h"
#include "converge/log.h"

namespace converge::bench {
namespace {

constexpr int kPublishThreads = 2;
constexpr uint64_t kPublishBatch = 4096;
constexpr uint32_t kFetchBatch = 4096;
constexpr size_t kReadMaxBytes = 4u << 20;
constexpr uint64_t kLatencyMaxBatch = 4096;
constexpr int64_t kDrainTimeoutMs = 60'000;
constexpr int64_t kWaitSliceMs = 100;
constexpr int kMaxEmptyFetches = 1000;
constexpr const char* kPublishTopic = "bench";
constexpr const char* kLatencyTopic = "lat";

// Wakes a waiting consumer from a callback that must not block for long.
class Doorbell {
 public:
  void Ring() {
    rung_.store(true, std::memory_order_release);
    { std::lock_guard<std::mutex> lock(mu_); }
    cv_.notify_one();
  }
  // Waits until rung (or the slice passes), then clears it.
  void Wait(int64_t slice_ms) {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait_for(lock, std::chrono::milliseconds(slice_ms),
                 [&] { return rung_.load(std::memory_order_acquire); });
    rung_.store(false, std::memory_order_release);
  }

 private:
  std::atomic<bool> rung_{false};
  std::mutex mu_;
  std::condition_variable cv_;
};

// Payload buffers and record views over them, filled once and restamped per batch.
struct RecordBuffers {
  RecordBuffers(uint64_t count, uint32_t size) : size(size), payloads(count * size), views(count) {
    for (uint64_t i = 0; i < count; ++i) {
      FillPayload(&payloads[i * size], size);
      views[i].value = std::string_view(&payloads[i * size], size);
    }
  }
  char* payload(uint64_t i) { return &payloads[i * size]; }
  std::span<const RecordView> first(uint64_t n) const {
    return std::span<const RecordView>(views.data(), n);
  }
  uint32_t size;
  std::vector<char> payloads;
  std::vector<RecordView> views;
};

Measurement Throughput(const std::string& workload, const std::string& durability, uint64_t events,
                       int64_t start, int64_t end, std::string note) {
  Measurement m;
  m.workload = workload;
  m.system = "converge";
  m.durability = durability;
  m.events = events;
  m.seconds = static_cast<double>(end - start) / 1e9;
  m.events_per_s = static_cast<double>(events) / m.seconds;
  m.note = std::move(note);
  return m;
}

class ConvergeSystem : public LogSystem {
 public:
  ~ConvergeSystem() override { Stop().IgnoreError(); }

  std::string name() const override { return "converge"; }
  std::string durability() const override { return durability_label_; }

  Status Start(const LogWorkload& w) override {
    dir_ = w.dir;
    CONVERGE_ASSIGN_OR_RETURN(Durability durability, ParseDurability(w.converge_durability));
    LogOptions options;
    options.dir = w.dir + "/log";
    CONVERGE_ASSIGN_OR_RETURN(log_, Log::Open(Env::Default(), options));
    TopicOptions topic;
    topic.partitions = 1;
    topic.durability = durability;
    durability_label_ = durability == Durability::kInterval
                            ? "interval-" + std::to_string(topic.sync_interval_ms) + "ms"
                            : std::string(DurabilityName(durability));
    CONVERGE_RETURN_IF_ERROR(log_->CreateTopic(kPublishTopic, topic));
    return log_->CreateTopic(kLatencyTopic, topic);
  }

  Status Publish(const LogWorkload& w, std::vector<Measurement>& out) override {
    std::atomic<uint64_t> next{0};
    std::vector<Status> statuses(kPublishThreads);
    auto appender = [&](int t) {
      RecordBuffers buffers(kPublishBatch, w.event_bytes);
      while (true) {
        const uint64_t first = next.fetch_add(kPublishBatch);
        if (first >= w.events) return;
        const uint64_t n = std::min(kPublishBatch, w.events - first);
        for (uint64_t i = 0; i < n; ++i) StampPayload(buffers.payload(i), first + i, 0);
        Result<std::vector<AppendResult>> r = log_->Append(kPublishTopic, buffers.first(n));
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
    const uint64_t stored = info.partitions.empty() ? 0 : info.partitions[0].end_offset;
    if (stored != w.events) {
      return InternalError("converge: topic holds " + std::to_string(stored) +
                           " records, expected " + std::to_string(w.events));
    }
    out.push_back(Throughput("publish", durability(), w.events, start, end,
                             "Log::Append, " + std::to_string(kPublishBatch) + " per call from " +
                                 std::to_string(kPublishThreads) + " threads, 1 partition"));
    return Status::Ok();
  }

  Status ConsumeAck(const LogWorkload& w, std::vector<Measurement>& out) override {
    CONVERGE_RETURN_IF_ERROR(ConsumeWithGroup(w, CommitMode::kSync, out));
    return ConsumeWithGroup(w, CommitMode::kPeriodic, out);
  }

  Status Latency(const LogWorkload& w, std::vector<Measurement>& out) override {
    const uint64_t total = LatencyTotalEvents(w);
    DeliveryTracker tracker(total, LatencyWarmupEvents(w));
    Doorbell doorbell;
    std::atomic<bool> stop{false};
    Status consumer_status;
    std::thread consumer;
    std::string note;

    CONVERGE_ASSIGN_OR_RETURN(std::unique_ptr<ConsumerGroups> groups,
                              OpenGroups("groups-latency", CommitMode::kPeriodic));
    CONVERGE_RETURN_IF_ERROR(groups->CreateGroup(kLatencyTopic, "lat", BenchGroupOptions()));
    CONVERGE_RETURN_IF_ERROR(groups->Join(kLatencyTopic, "lat", "m1").status());
    CONVERGE_ASSIGN_OR_RETURN(std::unique_ptr<ConsumerGroups::ReadyWatch> watch,
                              groups->WatchReady(kLatencyTopic, "lat", [&] { doorbell.Ring(); }));
    consumer = std::thread([&] {
      std::vector<LeaseRef> leases;
      while (!stop.load() && tracker.delivered() < total) {
        Result<FetchResult> fetched =
            groups->Fetch(kLatencyTopic, "lat", "m1", kFetchBatch, kReadMaxBytes);
        const int64_t now = NowNanos();
        if (!fetched.ok()) {
          consumer_status = fetched.status();
          return;
        }
        if (fetched->deliveries.empty()) {
          doorbell.Wait(kWaitSliceMs);
          continue;
        }
        leases.clear();
        for (const Delivery& d : fetched->deliveries) {
          tracker.Deliver(d.value.data(), d.value.size(), now);
          leases.push_back(d.lease());
        }
        Result<AckBatchResult> acked = groups->AckBatch(kLatencyTopic, "lat", "m1", leases);
        if (!acked.ok()) {
          consumer_status = acked.status();
          return;
        }
      }
    });
    note =
        "Log::Append of the due events; consumer group WatchReady + Fetch + AckBatch "
        "(periodic ack commit)";

    RecordBuffers buffers(kLatencyMaxBatch, w.event_bytes);
    PacedRunStats stats;
    Status status = RunPacedPublisher(
        total, w.rate_per_s, kLatencyMaxBatch,
        [&](uint64_t first, uint64_t count, const Pacer& pacer) -> Status {
          for (uint64_t i = 0; i < count; ++i) {
            StampPayload(buffers.payload(i), first + i, pacer.DueNanos(first + i));
          }
          return log_->Append(kLatencyTopic, buffers.first(count)).status();
        },
        &stats);
    const bool all = status.ok() && tracker.WaitAll(kDrainTimeoutMs);
    stop.store(true);
    doorbell.Ring();
    consumer.join();
    watch.reset();
    CONVERGE_RETURN_IF_ERROR(status);
    CONVERGE_RETURN_IF_ERROR(consumer_status);
    if (!all) {
      return DeadlineExceededError("converge latency: delivered " +
                                   std::to_string(tracker.delivered()) + " of " +
                                   std::to_string(total));
    }
    out.push_back(LatencyMeasurement(name(), durability(), tracker, stats, note));
    return Status::Ok();
  }

  Status Stop() override {
    if (log_ == nullptr) return Status::Ok();
    Status s = log_->Sync();
    log_.reset();
    return s;
  }

 private:
  static GroupOptions BenchGroupOptions() {
    GroupOptions g;
    g.start = StartPosition::kEarliest;
    g.max_in_flight_per_partition = 4 * kFetchBatch;
    g.max_in_flight_per_member = 4 * kFetchBatch;
    g.max_pending_per_partition = 16 * kFetchBatch;
    return g;
  }

  Result<std::unique_ptr<ConsumerGroups>> OpenGroups(const std::string& subdir, CommitMode mode) {
    ConsumerGroupsOptions options;
    options.dir = dir_ + "/" + subdir;
    options.commit_mode = mode;
    options.read_max_records = kFetchBatch;
    options.read_max_bytes = kReadMaxBytes;
    return ConsumerGroups::Open(Env::Default(), *log_, options);
  }

  Status ConsumeWithGroup(const LogWorkload& w, CommitMode mode, std::vector<Measurement>& out) {
    const bool sync = mode == CommitMode::kSync;
    const std::string group = sync ? "sync" : "periodic";
    CONVERGE_ASSIGN_OR_RETURN(std::unique_ptr<ConsumerGroups> groups,
                              OpenGroups("groups-" + group, mode));
    CONVERGE_RETURN_IF_ERROR(groups->CreateGroup(kPublishTopic, group, BenchGroupOptions()));
    CONVERGE_RETURN_IF_ERROR(groups->Join(kPublishTopic, group, "m1").status());
    std::vector<LeaseRef> leases;
    leases.reserve(kFetchBatch);
    uint64_t received = 0;
    uint64_t bad = 0;
    int empty = 0;
    const int64_t start = NowNanos();
    while (received < w.events) {
      CONVERGE_ASSIGN_OR_RETURN(FetchResult fetched, groups->Fetch(kPublishTopic, group, "m1",
                                                                   kFetchBatch, kReadMaxBytes));
      if (fetched.deliveries.empty()) {
        if (++empty > kMaxEmptyFetches) {
          return InternalError("converge: group fetch found nothing after " +
                               std::to_string(received) + " records");
        }
        continue;
      }
      leases.clear();
      for (const Delivery& d : fetched.deliveries) {
        if (d.value.size() != w.event_bytes) ++bad;
        leases.push_back(d.lease());
      }
      CONVERGE_ASSIGN_OR_RETURN(AckBatchResult acked,
                                groups->AckBatch(kPublishTopic, group, "m1", leases));
      if (!acked.lost.empty()) {
        return InternalError("converge: " + std::to_string(acked.lost.size()) + " leases lost");
      }
      received += fetched.deliveries.size();
    }
    CONVERGE_RETURN_IF_ERROR(groups->Flush());
    CONVERGE_ASSIGN_OR_RETURN(GroupDescription described,
                              groups->DescribeGroup(kPublishTopic, group));
    const int64_t end = NowNanos();
    if (bad > 0)
      return InternalError("converge: " + std::to_string(bad) + " records of wrong size");
    if (described.partitions.empty() || described.partitions[0].committed != w.events) {
      return InternalError("converge: group committed offset short of " + std::to_string(w.events));
    }
    out.push_back(Throughput(
        "consume_ack", sync ? "fsync" : "interval-100ms", w.events, start, end,
        "consumer group Fetch " + std::to_string(kFetchBatch) + " + AckBatch, " +
            (sync ? "acks fdatasync'ed before AckBatch returns" : "acks committed every 100 ms")));
    return Status::Ok();
  }

  std::string dir_;
  std::string durability_label_ = "fsync";
  std::unique_ptr<Log> log_;
};

}  // namespace

std::unique_ptr<LogSystem> MakeConvergeSystem() { return std::make_unique<ConvergeSystem>(); }

}  // namespace converge::bench
