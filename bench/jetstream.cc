// NATS JetStream (Debian's nats-server 2.9, started here on loopback) through nats.c.
//   publish      js_PublishAsync with a bounded window of pending acks, then
//                js_PublishAsyncComplete; file storage, 1 replica. nats-server 2.9 does not
//                fsync per message (it syncs its files every 2 minutes): durability
//                "interval-2m".
//   consume_ack  a durable pull consumer (AckExplicit): natsSubscription_Fetch in batches and
//                natsMsg_Ack per message (the standard fire-and-forget ack of nats.c); timed
//                until the consumer's ack floor, read back from the server, reaches the end.
//   latency      js_PublishAsync at a fixed rate; a push consumer with a callback, manual
//                natsMsg_Ack.
#include <nats/nats.h>

#include <atomic>
#include <string>
#include <vector>

#include "bench/log_bench.h"
#include "bench/many_clients.h"
#include "bench/nats_util.h"
#include "support/nats_server.h"
#include "support/server_process.h"

namespace converge::bench {
namespace {

constexpr int64_t kMaxPendingPublishes = 4096;
constexpr int kFetchBatch = 1000;
constexpr int64_t kMaxAckPending = 100'000;
constexpr int64_t kRequestTimeoutMs = 10'000;
constexpr int64_t kDrainTimeoutMs = 60'000;

constexpr const char* kPublishStream = "BENCH_PUB";
constexpr const char* kPublishSubject = "bench.pub";
constexpr const char* kLatencyStream = "BENCH_LAT";
constexpr const char* kLatencySubject = "bench.lat";

Status NatsError(const std::string& what, natsStatus s,
                 jsErrCode jerr = static_cast<jsErrCode>(0)) {
  return bench::NatsError("jetstream", what, s, jerr);
}

class JetStreamSystem : public LogSystem {
 public:
  ~JetStreamSystem() override { Stop().IgnoreError(); }

  std::string name() const override { return "jetstream"; }
  std::string durability() const override { return "interval-2m"; }

  Status Start(const LogWorkload& w) override {
    replicas_ = w.jetstream_replicas;
    if (replicas_ > 1) {
      // Replicated streams: a three-node cluster (the sidecar's backend gets the same).
      testing::NatsClusterOptions co;
      co.nodes = 3;
      co.base_dir = w.dir;
      CONVERGE_ASSIGN_OR_RETURN(cluster_, testing::NatsCluster::Start(co));
    } else {
      testing::NatsServerOptions options;
      options.base_dir = w.dir;
      CONVERGE_ASSIGN_OR_RETURN(server_, testing::StartNatsServer(options));
    }
    CONVERGE_RETURN_IF_ERROR(Connect(/*send_asap=*/false, &nc_, &js_));
    CONVERGE_RETURN_IF_ERROR(AddStream(kPublishStream, kPublishSubject));
    return AddStream(kLatencyStream, kLatencySubject);
  }

  Status Publish(const LogWorkload& w, std::vector<Measurement>& out) override {
    std::vector<char> payload(w.event_bytes);
    FillPayload(payload.data(), payload.size());
    publish_errors_.store(0);
    const int64_t start = NowNanos();
    for (uint64_t seq = 0; seq < w.events; ++seq) {
      StampPayload(payload.data(), seq, 0);
      natsStatus s = js_PublishAsync(js_, kPublishSubject, payload.data(),
                                     static_cast<int>(payload.size()), nullptr);
      if (s != NATS_OK) return NatsError("js_PublishAsync", s);
    }
    CONVERGE_RETURN_IF_ERROR(CompletePublishes(js_));
    const int64_t end = NowNanos();
    CONVERGE_RETURN_IF_ERROR(CheckStreamCount(kPublishStream, w.events));

    Measurement m;
    m.workload = "publish";
    m.system = name();
    m.durability = durability();
    m.events = w.events;
    m.seconds = static_cast<double>(end - start) / 1e9;
    m.events_per_s = static_cast<double>(w.events) / m.seconds;
    m.note = "js_PublishAsync, max " + std::to_string(kMaxPendingPublishes) +
             " pending, file storage R" + std::to_string(replicas_);
    out.push_back(m);
    return Status::Ok();
  }

  // single_publish: `w.events` synchronous publishes (PUB with a reply inbox, waiting for the
  // stream's ack) from `clients` connections into a stream of their own; the stream must then
  // hold the acknowledged messages. No fetch10_ack.
  bool has_many_clients() const override { return true; }
  Status ManyClients(const LogWorkload& w, uint32_t clients, bool publish, bool consume,
                     std::vector<Measurement>& out) override {
    if (!publish) return Status::Ok();
    const std::string stream = "MANY_" + std::to_string(clients);
    const std::string subject = "many." + std::to_string(clients);
    CONVERGE_RETURN_IF_ERROR(AddStream(stream.c_str(), subject.c_str()));
    std::string payload(w.event_bytes, '\0');
    FillPayload(payload.data(), payload.size());
    ManyClientsResult r = RunNatsRequestPublishers(Port(), clients, w.events, subject, payload);
    std::string note = "synchronous publish (request, wait for the stream's ack) from " +
                       std::to_string(clients) + " connections (1 client thread), file storage R" +
                       std::to_string(replicas_);
    if (!r.first_error.empty()) note += "; first error: " + r.first_error;
    out.push_back(ManyClientsMeasurement("single_publish", name(), durability(), clients, r.ok,
                                         r.errors, r.elapsed_ns, r.latencies_ns, note));
    return CheckStreamCount(stream.c_str(), r.ok);
  }

  Status ConsumeAck(const LogWorkload& w, std::vector<Measurement>& out) override {
    jsSubOptions so;
    jsSubOptions_Init(&so);
    so.Stream = kPublishStream;
    so.Config.AckPolicy = js_AckExplicit;
    so.Config.DeliverPolicy = js_DeliverAll;
    so.Config.MaxAckPending = kMaxAckPending;
    natsSubscription* sub = nullptr;
    jsErrCode jerr = static_cast<jsErrCode>(0);
    natsStatus s = js_PullSubscribe(&sub, js_, kPublishSubject, "bench-pull", nullptr, &so, &jerr);
    if (s != NATS_OK) return NatsError("js_PullSubscribe", s, jerr);

    Status status;
    uint64_t received = 0;
    uint64_t bad = 0;
    const int64_t start = NowNanos();
    while (received < w.events && status.ok()) {
      natsMsgList list{nullptr, 0};
      const int want = static_cast<int>(std::min<uint64_t>(kFetchBatch, w.events - received));
      s = natsSubscription_Fetch(&list, sub, want, kRequestTimeoutMs, &jerr);
      if (s != NATS_OK) {
        status = NatsError("natsSubscription_Fetch after " + std::to_string(received), s, jerr);
        break;
      }
      for (int i = 0; i < list.Count; ++i) {
        natsMsg* msg = list.Msgs[i];
        if (natsMsg_GetDataLength(msg) != static_cast<int>(w.event_bytes)) ++bad;
        s = natsMsg_Ack(msg, nullptr);
        if (s != NATS_OK && status.ok()) status = NatsError("natsMsg_Ack", s);
      }
      received += static_cast<uint64_t>(list.Count);
      natsMsgList_Destroy(&list);
    }
    if (status.ok()) status = WaitAckFloor(sub, w.events);
    const int64_t end = NowNanos();
    natsSubscription_Destroy(sub);
    CONVERGE_RETURN_IF_ERROR(status);
    if (bad > 0)
      return InternalError("jetstream: " + std::to_string(bad) + " messages of wrong size");

    Measurement m;
    m.workload = "consume_ack";
    m.system = name();
    m.durability = durability();
    m.events = w.events;
    m.seconds = static_cast<double>(end - start) / 1e9;
    m.events_per_s = static_cast<double>(w.events) / m.seconds;
    m.note = "pull consumer, Fetch " + std::to_string(kFetchBatch) + " + natsMsg_Ack each";
    out.push_back(m);
    return Status::Ok();
  }

  Status Latency(const LogWorkload& w, std::vector<Measurement>& out) override {
    // A publisher connection and a consumer connection, as two services would have, both
    // writing at once (SendAsap) rather than through nats.c's buffering flusher.
    natsConnection* pub_nc = nullptr;
    jsCtx* pub_js = nullptr;
    natsConnection* sub_nc = nullptr;
    jsCtx* sub_js = nullptr;
    natsSubscription* sub = nullptr;
    auto cleanup = [&] {
      if (sub != nullptr) {
        natsSubscription_Unsubscribe(sub);
        natsSubscription_Destroy(sub);
      }
      if (pub_js != nullptr) jsCtx_Destroy(pub_js);
      if (sub_js != nullptr) jsCtx_Destroy(sub_js);
      if (pub_nc != nullptr) natsConnection_Destroy(pub_nc);
      if (sub_nc != nullptr) natsConnection_Destroy(sub_nc);
    };
    Status status = Connect(/*send_asap=*/true, &pub_nc, &pub_js);
    if (status.ok()) status = Connect(/*send_asap=*/true, &sub_nc, &sub_js);
    if (!status.ok()) {
      cleanup();
      return status;
    }

    const uint64_t total = LatencyTotalEvents(w);
    DeliveryTracker tracker(total, LatencyWarmupEvents(w));
    jsSubOptions so;
    jsSubOptions_Init(&so);
    so.Stream = kLatencyStream;
    so.ManualAck = true;
    so.Config.AckPolicy = js_AckExplicit;
    so.Config.DeliverPolicy = js_DeliverAll;
    so.Config.MaxAckPending = kMaxAckPending;
    jsErrCode jerr = static_cast<jsErrCode>(0);
    natsStatus s = js_Subscribe(&sub, sub_js, kLatencySubject, &JetStreamSystem::OnLatencyMessage,
                                &tracker, nullptr, &so, &jerr);
    if (s != NATS_OK) {
      cleanup();
      return NatsError("js_Subscribe", s, jerr);
    }

    std::vector<char> payload(w.event_bytes);
    FillPayload(payload.data(), payload.size());
    PacedRunStats stats;
    status = RunPacedPublisher(
        total, w.rate_per_s, kMaxPendingPublishes,
        [&](uint64_t first, uint64_t count, const Pacer& pacer) -> Status {
          for (uint64_t i = first; i < first + count; ++i) {
            StampPayload(payload.data(), i, pacer.DueNanos(i));
            natsStatus ps = js_PublishAsync(pub_js, kLatencySubject, payload.data(),
                                            static_cast<int>(payload.size()), nullptr);
            if (ps != NATS_OK) return NatsError("js_PublishAsync", ps);
          }
          return Status::Ok();
        },
        &stats);
    if (status.ok()) status = CompletePublishes(pub_js);
    const bool all = status.ok() && tracker.WaitAll(kDrainTimeoutMs);
    cleanup();
    CONVERGE_RETURN_IF_ERROR(status);
    if (!all) {
      return DeadlineExceededError("jetstream latency: delivered " +
                                   std::to_string(tracker.delivered()) + " of " +
                                   std::to_string(total));
    }
    out.push_back(LatencyMeasurement(
        name(), durability(), tracker, stats,
        "js_PublishAsync; push consumer callback + natsMsg_Ack; SendAsap connections"));
    return Status::Ok();
  }

  Status Stop() override {
    if (js_ != nullptr) {
      jsCtx_Destroy(js_);
      js_ = nullptr;
    }
    if (nc_ != nullptr) {
      natsConnection_Destroy(nc_);
      nc_ = nullptr;
    }
    cluster_.reset();
    if (server_ != nullptr) {
      Status s = server_->Shutdown();
      server_.reset();
      return s;
    }
    return Status::Ok();
  }

 private:
  // A connection and its JetStream context. send_asap=false lets nats.c batch writes in its
  // flusher thread (best for throughput); true writes each publish at once (best latency).
  Status Connect(bool send_asap, natsConnection** nc, jsCtx** js) {
    CONVERGE_RETURN_IF_ERROR(NatsConnect("jetstream", {Url(), kRequestTimeoutMs, send_asap}, nc));

    jsOptions jo;
    jsOptions_Init(&jo);
    jo.Wait = kRequestTimeoutMs;
    jo.PublishAsync.MaxPending = kMaxPendingPublishes;
    jo.PublishAsync.StallWait = kRequestTimeoutMs;
    jo.PublishAsync.ErrHandler = &JetStreamSystem::OnPublishError;
    jo.PublishAsync.ErrHandlerClosure = this;
    natsStatus s = natsConnection_JetStream(js, *nc, &jo);
    if (s != NATS_OK) return NatsError("JetStream context", s);
    return Status::Ok();
  }

  static void OnPublishError(jsCtx*, jsPubAckErr*, void* closure) {
    static_cast<JetStreamSystem*>(closure)->publish_errors_.fetch_add(1);
  }

  static void OnLatencyMessage(natsConnection*, natsSubscription*, natsMsg* msg, void* closure) {
    const int64_t now = NowNanos();
    auto* tracker = static_cast<DeliveryTracker*>(closure);
    tracker->Deliver(natsMsg_GetData(msg), static_cast<size_t>(natsMsg_GetDataLength(msg)), now);
    natsMsg_Ack(msg, nullptr);
    natsMsg_Destroy(msg);
  }

  Status AddStream(const char* stream, const char* subject) {
    return AddFileStream("jetstream", js_, stream, subject, replicas_);
  }

  uint16_t Port() const {
    if (cluster_ != nullptr) {
      const std::string url = cluster_->Url(0);
      return static_cast<uint16_t>(std::stoi(url.substr(url.rfind(':') + 1)));
    }
    return server_->port();
  }
  std::string Url() const { return cluster_ != nullptr ? cluster_->Url(0) : server_->Url("nats"); }

  Status CompletePublishes(jsCtx* js) {
    jsPubOptions po;
    jsPubOptions_Init(&po);
    po.MaxWait = kDrainTimeoutMs;
    natsStatus s = js_PublishAsyncComplete(js, &po);
    if (s != NATS_OK) return NatsError("js_PublishAsyncComplete", s);
    if (uint64_t errors = publish_errors_.load(); errors > 0) {
      return InternalError("jetstream: " + std::to_string(errors) +
                           " asynchronous publishes failed");
    }
    return Status::Ok();
  }

  Status CheckStreamCount(const char* stream, uint64_t expected) {
    jsStreamInfo* info = nullptr;
    jsErrCode jerr = static_cast<jsErrCode>(0);
    natsStatus s = js_GetStreamInfo(&info, js_, stream, nullptr, &jerr);
    if (s != NATS_OK) return NatsError("js_GetStreamInfo", s, jerr);
    const uint64_t msgs = info->State.Msgs;
    jsStreamInfo_Destroy(info);
    if (msgs != expected) {
      return InternalError("jetstream: stream holds " + std::to_string(msgs) +
                           " messages, expected " + std::to_string(expected));
    }
    return Status::Ok();
  }

  // Waits until the server has processed every ack (natsMsg_Ack does not wait for a reply).
  Status WaitAckFloor(natsSubscription* sub, uint64_t events) {
    natsStatus s = natsConnection_FlushTimeout(nc_, kRequestTimeoutMs);
    if (s != NATS_OK) return NatsError("flush acks", s);
    const int64_t deadline = NowNanos() + kDrainTimeoutMs * 1'000'000;
    while (true) {
      jsConsumerInfo* ci = nullptr;
      jsErrCode jerr = static_cast<jsErrCode>(0);
      s = natsSubscription_GetConsumerInfo(&ci, sub, nullptr, &jerr);
      if (s != NATS_OK) return NatsError("consumer info", s, jerr);
      const uint64_t floor = ci->AckFloor.Stream;
      const int64_t pending = ci->NumAckPending;
      jsConsumerInfo_Destroy(ci);
      if (floor >= events && pending == 0) return Status::Ok();
      if (NowNanos() > deadline) {
        return DeadlineExceededError("jetstream: ack floor " + std::to_string(floor) + " of " +
                                     std::to_string(events));
      }
      SleepUntilNanos(NowNanos() + 1'000'000);
    }
  }

  std::unique_ptr<testing::ManagedServer> server_;
  std::unique_ptr<testing::NatsCluster> cluster_;  // with replicas > 1
  uint32_t replicas_ = 1;
  natsConnection* nc_ = nullptr;
  jsCtx* js_ = nullptr;
  std::atomic<uint64_t> publish_errors_{0};
};

}  // namespace

std::unique_ptr<LogSystem> MakeJetStreamSystem() { return std::make_unique<JetStreamSystem>(); }

}  // namespace converge::bench
