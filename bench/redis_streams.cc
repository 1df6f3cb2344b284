// Redis Streams (Debian's redis-server 7.0, started here on loopback with an append-only
// file) through hiredis. Two systems: appendfsync always ("fsync": Redis syncs the AOF before
// it replies, sharing one fsync among the commands of one event-loop pass) and appendfsync
// everysec ("interval-1s").
//   publish      XADD, pipelined in batches with two batches in flight.
//   consume_ack  a consumer group: XREADGROUP COUNT n, and XACK of those ids pipelined with
//                the next XREADGROUP; timed until XPENDING reports nothing pending.
//   latency      a publisher connection sending the due XADDs at a fixed rate (pipelined when
//                it fell behind), a consumer connection in another thread on
//                XREADGROUP BLOCK + XACK.
#include <hiredis/hiredis.h>
#include <sys/time.h>

#include <atomic>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "bench/log_bench.h"
#include "bench/many_clients.h"
#include "support/server_process.h"

namespace converge::bench {
namespace {

constexpr uint64_t kPublishBatch = 1000;
constexpr uint64_t kReadBatch = 1000;
constexpr int kBlockMs = 100;
constexpr int64_t kDrainTimeoutMs = 60'000;
constexpr const char* kPublishStream = "bench";
constexpr const char* kLatencyStream = "lat";
constexpr const char* kGroup = "g";

struct ReplyDeleter {
  void operator()(redisReply* r) const { freeReplyObject(r); }
};
using Reply = std::unique_ptr<redisReply, ReplyDeleter>;

struct ContextDeleter {
  void operator()(redisContext* c) const { redisFree(c); }
};

// Appends one RESP command to `out`.
class RespWriter {
 public:
  explicit RespWriter(std::string& out) : out_(out) {}
  void Command(std::initializer_list<std::string_view> args) {
    Header(args.size());
    for (std::string_view a : args) Bulk(a);
  }
  void Header(size_t argc) {
    out_ += '*';
    out_ += std::to_string(argc);
    out_ += "\r\n";
  }
  void Bulk(std::string_view s) {
    out_ += '$';
    out_ += std::to_string(s.size());
    out_ += "\r\n";
    out_.append(s.data(), s.size());
    out_ += "\r\n";
  }

 private:
  std::string& out_;
};

class RedisClient {
 public:
  Status Connect(uint16_t port) {
    timeval tv{10, 0};
    ctx_.reset(redisConnectWithTimeout("127.0.0.1", port, tv));
    if (ctx_ == nullptr) return UnavailableError("redis: cannot allocate a context");
    if (ctx_->err != 0) return UnavailableError(std::string("redis: connect: ") + ctx_->errstr);
    // Replies under appendfsync always wait for an fsync; allow for a slow disk.
    timeval rw{60, 0};
    if (redisSetTimeout(ctx_.get(), rw) != REDIS_OK) return Error("set timeout");
    return Status::Ok();
  }

  // Queues raw RESP bytes; they are written by the next GetReply.
  Status Append(const std::string& resp) {
    if (redisAppendFormattedCommand(ctx_.get(), resp.data(), resp.size()) != REDIS_OK) {
      return Error("append");
    }
    return Status::Ok();
  }

  // The next reply; an error reply is returned as a Status.
  Result<Reply> GetReply() {
    void* raw = nullptr;
    if (redisGetReply(ctx_.get(), &raw) != REDIS_OK) return Error("read reply");
    Reply reply(static_cast<redisReply*>(raw));
    if (reply->type == REDIS_REPLY_ERROR) {
      return InternalError("redis: " + std::string(reply->str, reply->len));
    }
    return reply;
  }

  Result<Reply> Command(std::initializer_list<std::string_view> args) {
    std::string resp;
    RespWriter(resp).Command(args);
    CONVERGE_RETURN_IF_ERROR(Append(resp));
    return GetReply();
  }

 private:
  Status Error(const std::string& what) {
    return UnavailableError("redis: " + what + ": " + (ctx_ ? ctx_->errstr : "no context"));
  }
  std::unique_ptr<redisContext, ContextDeleter> ctx_;
};

void AppendXadd(std::string& out, const char* stream, const char* payload, size_t size) {
  RespWriter w(out);
  w.Header(5);
  w.Bulk("XADD");
  w.Bulk(stream);
  w.Bulk("*");
  w.Bulk("d");
  w.Bulk(std::string_view(payload, size));
}

void AppendXreadgroup(std::string& out, const char* stream, uint64_t count, int block_ms) {
  RespWriter w(out);
  const std::string n = std::to_string(count);
  if (block_ms >= 0) {
    const std::string b = std::to_string(block_ms);
    w.Command(
        {"XREADGROUP", "GROUP", kGroup, "c1", "COUNT", n, "BLOCK", b, "STREAMS", stream, ">"});
  } else {
    w.Command({"XREADGROUP", "GROUP", kGroup, "c1", "COUNT", n, "STREAMS", stream, ">"});
  }
}

void AppendXack(std::string& out, const char* stream, const std::vector<std::string>& ids) {
  RespWriter w(out);
  w.Header(3 + ids.size());
  w.Bulk("XACK");
  w.Bulk(stream);
  w.Bulk(kGroup);
  for (const std::string& id : ids) w.Bulk(id);
}

// Calls fn(id, value) for each entry of an XREADGROUP reply (nil = none). InvalidArgument
// for a reply of an unexpected shape.
template <typename Fn>
Status ForEachEntry(const redisReply* reply, Fn&& fn) {
  if (reply->type == REDIS_REPLY_NIL) return Status::Ok();
  if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 1) {
    return InternalError("redis: unexpected XREADGROUP reply");
  }
  const redisReply* stream = reply->element[0];
  if (stream->type != REDIS_REPLY_ARRAY || stream->elements != 2) {
    return InternalError("redis: unexpected XREADGROUP stream reply");
  }
  const redisReply* entries = stream->element[1];
  for (size_t i = 0; i < entries->elements; ++i) {
    const redisReply* e = entries->element[i];
    if (e->type != REDIS_REPLY_ARRAY || e->elements != 2 || e->element[1]->elements != 2) {
      return InternalError("redis: unexpected stream entry");
    }
    const redisReply* value = e->element[1]->element[1];
    fn(std::string_view(e->element[0]->str, e->element[0]->len),
       std::string_view(value->str, value->len));
  }
  return Status::Ok();
}

class RedisSystem : public LogSystem {
 public:
  explicit RedisSystem(std::string appendfsync) : appendfsync_(std::move(appendfsync)) {}
  ~RedisSystem() override { Stop().IgnoreError(); }

  std::string name() const override { return "redis-" + appendfsync_; }
  std::string durability() const override {
    return appendfsync_ == "always" ? "fsync" : "interval-1s";
  }

  Status Start(const LogWorkload& w) override {
    testing::RedisServerOptions options;
    options.base_dir = w.dir;
    options.appendfsync = appendfsync_;
    CONVERGE_ASSIGN_OR_RETURN(server_, testing::StartRedisServer(options));
    CONVERGE_RETURN_IF_ERROR(client_.Connect(server_->port()));
    // A fresh server accepts connections before it has finished loading: wait for PING.
    const int64_t deadline = NowNanos() + 10'000'000'000;
    while (true) {
      Result<Reply> pong = client_.Command({"PING"});
      if (pong.ok()) break;
      if (NowNanos() > deadline) return pong.status();
      SleepUntilNanos(NowNanos() + 10'000'000);
    }
    CONVERGE_RETURN_IF_ERROR(
        client_.Command({"XGROUP", "CREATE", kPublishStream, kGroup, "0", "MKSTREAM"}).status());
    return client_.Command({"XGROUP", "CREATE", kLatencyStream, kGroup, "$", "MKSTREAM"}).status();
  }

  // single_publish: `w.events` XADDs of one event each (MAXLEN-free, auto id) into a stream
  // of their own from `clients` connections, each waiting for its reply (after the AOF fsync
  // with appendfsync always); the stream's XLEN must then equal the OKs. No fetch10_ack.
  bool has_many_clients() const override { return true; }
  Status ManyClients(const LogWorkload& w, uint32_t clients, bool publish, bool consume,
                     std::vector<Measurement>& out) override {
    if (!publish) return Status::Ok();
    const std::string stream = "many-" + std::to_string(clients);
    std::string payload(w.event_bytes, '\0');
    FillPayload(payload.data(), payload.size());
    ManyClientsResult r = RunRespClients(
        server_->port(), clients, w.events,
        [&](uint64_t) { return RespCommand({"XADD", stream, "*", "d", payload}); });
    CONVERGE_ASSIGN_OR_RETURN(Reply len, client_.Command({"XLEN", stream}));
    const uint64_t stored = len->type == REDIS_REPLY_INTEGER ? len->integer : 0;
    std::string note = "XADD of one event per request from " + std::to_string(clients) +
                       " connections (1 client thread); " + std::to_string(stored) +
                       " stored for " + std::to_string(r.ok) + " acknowledged";
    if (!r.first_error.empty()) note += "; first error: " + r.first_error;
    out.push_back(ManyClientsMeasurement("single_publish", name(), durability(), clients, r.ok,
                                         r.errors, r.elapsed_ns, r.latencies_ns, note));
    if (stored < r.ok) return DataLossError("redis: acknowledged XADDs missing");
    return Status::Ok();
  }

  Status Publish(const LogWorkload& w, std::vector<Measurement>& out) override {
    std::vector<char> payload(w.event_bytes);
    FillPayload(payload.data(), payload.size());
    std::string resp;
    uint64_t sent = 0;
    uint64_t acked = 0;
    const int64_t start = NowNanos();
    auto send_batch = [&]() -> Status {
      resp.clear();
      const uint64_t n = std::min(kPublishBatch, w.events - sent);
      for (uint64_t i = 0; i < n; ++i, ++sent) {
        StampPayload(payload.data(), sent, 0);
        AppendXadd(resp, kPublishStream, payload.data(), payload.size());
      }
      return client_.Append(resp);
    };
    // Two batches in flight: queue the next batch before reading the replies of the previous.
    if (sent < w.events) CONVERGE_RETURN_IF_ERROR(send_batch());
    while (acked < w.events) {
      const uint64_t batch_end = sent;
      if (sent < w.events) CONVERGE_RETURN_IF_ERROR(send_batch());
      for (; acked < batch_end; ++acked) {
        CONVERGE_ASSIGN_OR_RETURN(Reply reply, client_.GetReply());
        if (reply->type != REDIS_REPLY_STRING)
          return InternalError("redis: XADD did not return an id");
      }
    }
    const int64_t end = NowNanos();
    CONVERGE_ASSIGN_OR_RETURN(Reply len, client_.Command({"XLEN", kPublishStream}));
    if (len->type != REDIS_REPLY_INTEGER || static_cast<uint64_t>(len->integer) != w.events) {
      return InternalError("redis: stream length " + std::to_string(len->integer) + ", expected " +
                           std::to_string(w.events));
    }
    Measurement m;
    m.workload = "publish";
    m.system = name();
    m.durability = durability();
    m.events = w.events;
    m.seconds = static_cast<double>(end - start) / 1e9;
    m.events_per_s = static_cast<double>(w.events) / m.seconds;
    m.note = "XADD pipelined, " + std::to_string(kPublishBatch) + " per batch, 2 batches in flight";
    out.push_back(m);
    return Status::Ok();
  }

  Status ConsumeAck(const LogWorkload& w, std::vector<Measurement>& out) override {
    std::string resp;
    std::vector<std::string> ids;
    ids.reserve(kReadBatch);
    uint64_t received = 0;
    uint64_t bad = 0;
    const int64_t start = NowNanos();
    while (received < w.events) {
      resp.clear();
      const bool acking = !ids.empty();
      if (acking) AppendXack(resp, kPublishStream, ids);
      AppendXreadgroup(resp, kPublishStream, kReadBatch, -1);
      CONVERGE_RETURN_IF_ERROR(client_.Append(resp));
      if (acking) {
        CONVERGE_ASSIGN_OR_RETURN(Reply acked, client_.GetReply());
        if (acked->type != REDIS_REPLY_INTEGER ||
            static_cast<size_t>(acked->integer) != ids.size()) {
          return InternalError("redis: XACK acknowledged fewer entries than sent");
        }
      }
      CONVERGE_ASSIGN_OR_RETURN(Reply batch, client_.GetReply());
      ids.clear();
      CONVERGE_RETURN_IF_ERROR(
          ForEachEntry(batch.get(), [&](std::string_view id, std::string_view v) {
            ids.emplace_back(id);
            if (v.size() != w.event_bytes) ++bad;
          }));
      if (ids.empty())
        return InternalError("redis: stream ended after " + std::to_string(received));
      received += ids.size();
    }
    resp.clear();
    AppendXack(resp, kPublishStream, ids);
    CONVERGE_RETURN_IF_ERROR(client_.Append(resp));
    CONVERGE_RETURN_IF_ERROR(client_.GetReply().status());
    CONVERGE_ASSIGN_OR_RETURN(Reply pending, client_.Command({"XPENDING", kPublishStream, kGroup}));
    const int64_t end = NowNanos();
    if (pending->type != REDIS_REPLY_ARRAY || pending->elements < 1 ||
        pending->element[0]->integer != 0) {
      return InternalError("redis: entries still pending after consume");
    }
    if (bad > 0) return InternalError("redis: " + std::to_string(bad) + " entries of wrong size");
    Measurement m;
    m.workload = "consume_ack";
    m.system = name();
    m.durability = durability();
    m.events = w.events;
    m.seconds = static_cast<double>(end - start) / 1e9;
    m.events_per_s = static_cast<double>(w.events) / m.seconds;
    m.note = "XREADGROUP COUNT " + std::to_string(kReadBatch) + " + XACK pipelined";
    out.push_back(m);
    return Status::Ok();
  }

  Status Latency(const LogWorkload& w, std::vector<Measurement>& out) override {
    const uint64_t total = LatencyTotalEvents(w);
    DeliveryTracker tracker(total, LatencyWarmupEvents(w));
    RedisClient consumer;
    CONVERGE_RETURN_IF_ERROR(consumer.Connect(server_->port()));
    std::atomic<bool> stop{false};
    Status consumer_status;
    std::thread consumer_thread([&] { consumer_status = ConsumeLatency(consumer, tracker, stop); });

    std::vector<char> payload(w.event_bytes);
    FillPayload(payload.data(), payload.size());
    std::string resp;
    PacedRunStats stats;
    Status status = RunPacedPublisher(
        total, w.rate_per_s, kPublishBatch,
        [&](uint64_t first, uint64_t count, const Pacer& pacer) -> Status {
          resp.clear();
          for (uint64_t i = first; i < first + count; ++i) {
            StampPayload(payload.data(), i, pacer.DueNanos(i));
            AppendXadd(resp, kLatencyStream, payload.data(), payload.size());
          }
          CONVERGE_RETURN_IF_ERROR(client_.Append(resp));
          for (uint64_t i = 0; i < count; ++i)
            CONVERGE_RETURN_IF_ERROR(client_.GetReply().status());
          return Status::Ok();
        },
        &stats);
    const bool all = status.ok() && tracker.WaitAll(kDrainTimeoutMs);
    stop.store(true);
    consumer_thread.join();
    CONVERGE_RETURN_IF_ERROR(status);
    CONVERGE_RETURN_IF_ERROR(consumer_status);
    if (!all) {
      return DeadlineExceededError(name() + " latency: delivered " +
                                   std::to_string(tracker.delivered()) + " of " +
                                   std::to_string(total));
    }
    out.push_back(LatencyMeasurement(name(), durability(), tracker, stats,
                                     "XADD per due event; XREADGROUP BLOCK + XACK in a thread"));
    return Status::Ok();
  }

  Status Stop() override {
    if (server_ == nullptr) return Status::Ok();
    client_ = RedisClient();
    Status s = server_->Shutdown();
    server_.reset();
    return s;
  }

 private:
  static Status ConsumeLatency(RedisClient& client, DeliveryTracker& tracker,
                               const std::atomic<bool>& stop) {
    std::string resp;
    std::vector<std::string> ids;
    while (!stop.load()) {
      resp.clear();
      const bool acking = !ids.empty();
      if (acking) AppendXack(resp, kLatencyStream, ids);
      AppendXreadgroup(resp, kLatencyStream, kReadBatch, kBlockMs);
      CONVERGE_RETURN_IF_ERROR(client.Append(resp));
      if (acking) CONVERGE_RETURN_IF_ERROR(client.GetReply().status());
      CONVERGE_ASSIGN_OR_RETURN(Reply batch, client.GetReply());
      const int64_t now = NowNanos();
      ids.clear();
      CONVERGE_RETURN_IF_ERROR(
          ForEachEntry(batch.get(), [&](std::string_view id, std::string_view v) {
            ids.emplace_back(id);
            tracker.Deliver(v.data(), v.size(), now);
          }));
    }
    return Status::Ok();
  }

  std::string appendfsync_;
  std::unique_ptr<testing::ManagedServer> server_;
  RedisClient client_;
};

}  // namespace

std::unique_ptr<LogSystem> MakeRedisSystem(const std::string& appendfsync) {
  return std::make_unique<RedisSystem>(appendfsync);
}

}  // namespace converge::bench
