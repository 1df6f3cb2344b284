// converge through the HTTP sidecar (`--via server`): `converge serve` started from this very
// binary on 127.0.0.1 (a free port, data in the scratch directory), driven over loopback with
// the C++ client (include/converge/client.h), topic durability fsync.
//   publish      batches of kPublishBatch events in converge's binary event batch
//                (application/vnd.converge.event-batch: CloudEvents in the binary record
//                format, what the C++ client uses for volume) on kPublishConnections kept-alive
//                connections; a 200 means the batch is fdatasync'ed (concurrent requests share
//                one sync).
//   consume_ack  fetch kFetchBatch leased events (binary delivery batch) + ack them (acks
//                synced before the reply).
//   latency      a paced publisher (one batch request per due set of events) and a consumer on
//                a Server-Sent Events stream with server-side acks (auto_ack), on a server
//                whose acks are committed every 100 ms (groups.sync_acks: false) like the
//                in-process adapter's latency consumer.
// Event payloads are the events' binary data, so the bench's stamped bytes come back unchanged.
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include <boost/json.hpp>

#include "bench/log_bench.h"
#include "bench/sidecar_process.h"
#include "converge/client.h"
#include "converge/event.h"
#include "support/http_load.h"
#include "support/nats_server.h"

namespace converge::bench {
namespace {

constexpr int kPublishConnections = 4;
constexpr uint64_t kPublishBatch = 2000;
constexpr uint32_t kFetchBatch = 5000;
constexpr uint64_t kLatencyMaxBatch = 2000;
constexpr int64_t kDrainTimeoutMs = 60'000;
constexpr int kMaxEmptyFetches = 100;
constexpr const char* kPublishTopic = "bench";
constexpr const char* kJsonPublishTopic = "bench-json";
constexpr const char* kLatencyTopic = "lat";
// --schema: the same JSON events into a plain topic and into one validated against kSchema.
constexpr const char* kJsonDataTopic = "bench-jsondata";
constexpr const char* kSchemaTopic = "bench-schema";
constexpr const char* kSchemaType = "bench.order.created";
// What an order event's schema looks like: a closed object with required fields, bounds, an
// enum, a pattern and an array of closed item objects.
constexpr const char* kSchema = R"({"schema":{
  "type":"object","additionalProperties":false,
  "required":["order_id","customer","currency","items","total"],
  "properties":{
    "order_id":{"type":"string","minLength":1,"maxLength":64},
    "customer":{"type":"string","pattern":"^c-[0-9]+$"},
    "currency":{"enum":["EUR","USD","GBP"]},
    "items":{"type":"array","minItems":1,"items":{
      "type":"object","additionalProperties":false,"required":["sku","qty","price"],
      "properties":{"sku":{"type":"string","maxLength":32},
                    "qty":{"type":"integer","minimum":1},
                    "price":{"type":"number","minimum":0}}}},
    "total":{"type":"number","minimum":0},
    "note":{"type":"string","maxLength":100000}}}})";

// An order as JSON, of about `size` bytes (items added, then a note to pad), valid against
// kSchema.
std::string OrderJson(uint32_t size) {
  std::string items;
  int n = 0;
  auto doc = [&](const std::string& note) {
    return R"({"order_id":"o-0000000001","customer":"c-1042","currency":"EUR","items":[)" +
           items + R"(],"total":)" + std::to_string(n * 19) + ".5" +
           (note.empty() ? "" : R"(,"note":")" + note + "\"") + "}";
  };
  do {
    if (n) items += ',';
    items += R"({"sku":"SKU-)" + std::to_string(1000 + n) + R"(","qty":)" +
             std::to_string(1 + n % 3) + R"(,"price":9.75})";
    ++n;
  } while (doc("").size() + 48 < size);
  std::string out = doc("");
  if (out.size() + 10 < size) out = doc(std::string(size - out.size() - 10, 'x'));
  return out;
}


// Events carrying the bench payloads; restamped per batch.
class EventBatch {
 public:
  EventBatch(uint64_t count, uint32_t size) : payload_(size, '\0'), events_(count) {
    FillPayload(payload_.data(), size);
    for (Event& e : events_) {
      e.set_source("/bench");
      e.set_type("bench.event");
    }
  }
  std::span<const Event> Stamp(uint64_t first_seq, uint64_t n, const Pacer* pacer) {
    for (uint64_t i = 0; i < n; ++i) {
      StampPayload(payload_.data(), first_seq + i, pacer ? pacer->DueNanos(first_seq + i) : 0);
      events_[i].set_id(std::to_string(first_seq + i));
      events_[i].SetBinaryData(payload_);
    }
    return std::span<const Event>(events_.data(), n);
  }

 private:
  std::string payload_;
  std::vector<Event> events_;
};

// Events of type kSchemaType with the same JSON order as data (ids unique per event).
class JsonEventBatch {
 public:
  JsonEventBatch(uint64_t count, uint32_t size) : events_(count) {
    const std::string data = OrderJson(size);
    for (Event& e : events_) {
      e.set_source("/bench");
      e.set_type(kSchemaType);
      e.SetJsonData(data).IgnoreError();  // OrderJson is valid JSON
    }
  }
  std::span<const Event> Stamp(uint64_t first_seq, uint64_t n, const Pacer*) {
    for (uint64_t i = 0; i < n; ++i) events_[i].set_id(std::to_string(first_seq + i));
    return std::span<const Event>(events_.data(), n);
  }

 private:
  std::vector<Event> events_;
};

Measurement Throughput(const std::string& workload, uint64_t events, int64_t start, int64_t end,
                       std::string note) {
  Measurement m;
  m.workload = workload;
  m.system = "converge";
  m.durability = "fsync";
  m.events = events;
  m.seconds = static_cast<double>(end - start) / 1e9;
  m.events_per_s = static_cast<double>(events) / m.seconds;
  m.note = std::move(note);
  return m;
}

class ConvergeServerSystem : public LogSystem {
 public:
  ~ConvergeServerSystem() override { Stop().IgnoreError(); }

  // On JetStream the acks are JetStream's (nats-server 2.9 syncs every 2 minutes), whatever
  // the topic's durability says (docs/formats/jetstream.md).
  std::string durability() const override { return jetstream_ ? "interval-2m" : "fsync"; }
  std::string name() const override { return "converge"; }
  // A throughput row with this system's durability (on JetStream: JetStream's acks).
  Measurement Row(const std::string& workload, uint64_t events, int64_t start, int64_t end,
                  std::string note) const {
    Measurement m = Throughput(workload, events, start, end, std::move(note));
    m.durability = durability();
    return m;
  }

  Status Start(const LogWorkload& w) override {
    jetstream_ = w.converge_backend == "jetstream";
    replicas_ = w.jetstream_replicas;
    if (jetstream_) {
      testing::NatsClusterOptions o;
      o.base_dir = w.dir;
      o.nodes = replicas_ > 1 ? 3 : 1;  // as the jetstream peer's
      CONVERGE_ASSIGN_OR_RETURN(nats_, testing::NatsCluster::Start(o));
    }
    CONVERGE_RETURN_IF_ERROR(StartServer(w, /*sync_acks=*/true));
    // More sidecars on the same log (the same stream prefix), each with its own data dir.
    for (uint32_t i = 1; jetstream_ && i < w.sidecars; ++i) {
      const std::string name = "serve-" + std::to_string(i);
      const std::string config = w.dir + "/" + name + ".yaml";
      std::ofstream(config) << SidecarConfig(/*sync_acks=*/true, "serve");
      CONVERGE_ASSIGN_OR_RETURN(
          std::unique_ptr<testing::ServerProcess> p,
          StartSidecar(config, w.dir + "/" + name + "-data", w.dir + "/" + name + ".log"));
      extra_.push_back(std::move(p));
    }
    return Status::Ok();
  }

  std::string SidecarConfig(bool sync_acks, const std::string& stream_prefix) const {
    std::string c =
        "limits:\n"
        "  max_fetch_events: 20000\n"
        "  max_inflight_requests: 4096\n"
        "groups:\n"
        "  sync_acks: ";
    c += sync_acks ? "true\n" : "false\n";
    if (nats_ != nullptr) {
      c += "log:\n  backend: jetstream\n  jetstream:\n    servers: [";
      for (int i = 0; i < nats_->size(); ++i) {
        if (i > 0) c += ", ";
        c += nats_->Url(i);
      }
      c += "]\n    replicas: " + std::to_string(replicas_) +
           "\n    stream_prefix: " + stream_prefix + "\n";
    }
    return c;
  }

  // Starts `converge serve` on a fresh data directory. The latency workload runs on its own
  // server with periodically committed acks, as the in-process adapter does (its acks are
  // not what is measured; synced ones would compete with the publishes for the disk).
  Status StartServer(const LogWorkload& w, bool sync_acks) {
    const std::string name = sync_acks ? "serve" : "serve-latency";
    const std::string config = w.dir + "/" + name + ".yaml";
    std::ofstream(config) << SidecarConfig(sync_acks, name);
    CONVERGE_ASSIGN_OR_RETURN(process_, StartSidecar(config, w.dir + "/" + name + "-data",
                                                     w.dir + "/" + name + ".log"));
    client::Client c(Options());
    std::vector<const char*> topics = {kPublishTopic, kJsonPublishTopic, kLatencyTopic};
    if (w.schema && sync_acks) {
      topics.push_back(kJsonDataTopic);
      topics.push_back(kSchemaTopic);
    }
    for (const char* topic : topics) {
      client::TopicSpec spec;
      spec.name = topic;
      spec.partitions = 1;
      spec.durability = Durability::kFsync;
      CONVERGE_RETURN_IF_ERROR(c.CreateTopic(spec).status());
    }
    if (w.schema && sync_acks) {
      // Register the schema and validate every publish to kSchemaTopic against it.
      client::HttpRequest reg;
      reg.method = "POST";
      reg.target = std::string("/v1/schemas/") + kSchemaType + "/versions";
      reg.headers = {{"Content-Type", "application/json"}};
      reg.body = kSchema;
      CONVERGE_ASSIGN_OR_RETURN(client::HttpResponse r, c.Send(reg));
      if (r.status != 201) return InternalError("converge server: registering: " + r.body);
      client::HttpRequest bind;
      bind.method = "PUT";
      bind.target = std::string("/v1/topics/") + kSchemaTopic + "/schema";
      bind.headers = {{"Content-Type", "application/json"}};
      bind.body = std::string(R"({"type":")") + kSchemaType + "\"}";
      CONVERGE_ASSIGN_OR_RETURN(r, c.Send(bind));
      if (r.status != 200) return InternalError("converge server: binding: " + r.body);
    }
    return Status::Ok();
  }

  // Two rows: "converge" publishes converge's binary event batches (what the C++ client
  // uses for volume; the row the targets are checked on) and "converge-json" the same events
  // as CloudEvents JSON batches (application/cloudevents-batch+json, what any language can
  // send without a converge library), into a topic of its own.
  Status Publish(const LogWorkload& w, std::vector<Measurement>& out) override {
    CONVERGE_ASSIGN_OR_RETURN(
        Measurement native,
        PublishWith(w, kPublishTopic, client::PublishMode::kNative,
                    "HTTP sidecar: binary event batches of " + std::to_string(kPublishBatch) +
                        " on " + std::to_string(kPublishConnections) +
                        " connections, 1 partition"));
    out.push_back(std::move(native));
    CONVERGE_ASSIGN_OR_RETURN(
        Measurement json,
        PublishWith(w, kJsonPublishTopic, client::PublishMode::kBatch,
                    "HTTP sidecar: CloudEvents JSON batches (base64 data) of " +
                        std::to_string(kPublishBatch) + " on " +
                        std::to_string(kPublishConnections) + " connections, 1 partition"));
    json.system = "converge-json";
    out.push_back(std::move(json));
    if (w.schema) {
      // The same JSON order events, binary event batches, without and with validation.
      const std::string shape =
          "JSON orders of " + std::to_string(OrderJson(w.event_bytes).size()) +
          " B in binary event batches of " + std::to_string(kPublishBatch) + " on " +
          std::to_string(kPublishConnections) + " connections";
      CONVERGE_ASSIGN_OR_RETURN(
          Measurement plain,
          (PublishWith<JsonEventBatch>(w, kJsonDataTopic, client::PublishMode::kNative,
                                       "HTTP sidecar: " + shape + ", no schema")));
      plain.system = "converge-jsondata";
      CONVERGE_ASSIGN_OR_RETURN(
          Measurement checked,
          (PublishWith<JsonEventBatch>(w, kSchemaTopic, client::PublishMode::kNative,
                                       "HTTP sidecar: " + shape +
                                           ", validated against a registered JSON Schema")));
      checked.system = "converge-schema";
      char ratio[64];
      std::snprintf(ratio, sizeof(ratio), " (%.0f%% of converge-jsondata)",
                    100.0 * checked.events_per_s / plain.events_per_s);
      checked.note += ratio;
      out.push_back(std::move(plain));
      out.push_back(std::move(checked));
    }
    return Status::Ok();
  }

  template <typename Batch = EventBatch>
  Result<Measurement> PublishWith(const LogWorkload& w, const char* topic,
                                  client::PublishMode mode, std::string note) {
    std::atomic<uint64_t> next{0};
    std::vector<Status> statuses(kPublishConnections);
    auto publisher = [&](int t) {
      client::Client c(Options());
      Batch batch(kPublishBatch, w.event_bytes);
      while (true) {
        const uint64_t first = next.fetch_add(kPublishBatch);
        if (first >= w.events) return;
        const uint64_t n = std::min(kPublishBatch, w.events - first);
        Result<std::vector<client::Published>> r =
            c.Publish(topic, batch.Stamp(first, n, nullptr), mode);
        if (!r.ok()) {
          statuses[t] = r.status();
          return;
        }
      }
    };
    const int64_t start = NowNanos();
    std::vector<std::thread> threads;
    for (int t = 0; t < kPublishConnections; ++t) threads.emplace_back(publisher, t);
    for (std::thread& t : threads) t.join();
    const int64_t end = NowNanos();
    for (const Status& s : statuses) CONVERGE_RETURN_IF_ERROR(s);
    client::Client c(Options());
    CONVERGE_ASSIGN_OR_RETURN(client::TopicDescription t, c.DescribeTopic(topic));
    const uint64_t stored = t.offsets.empty() ? 0 : t.offsets[0].end_offset;
    if (stored != w.events) {
      return InternalError("converge server: topic " + std::string(topic) + " holds " +
                           std::to_string(stored) + " events, expected " +
                           std::to_string(w.events));
    }
    return Row("publish", w.events, start, end, std::move(note));
  }

  Status ConsumeAck(const LogWorkload& w, std::vector<Measurement>& out) override {
    client::Client c(Options());
    client::GroupSpec group;
    group.name = "bench";
    group.max_in_flight = kFetchBatch;
    CONVERGE_RETURN_IF_ERROR(c.CreateGroup(kPublishTopic, group).status());
    client::FetchOptions fetch;
    fetch.max_events = kFetchBatch;
    fetch.wait_ms = 100;
    std::vector<client::Lease> leases;
    uint64_t received = 0, bad = 0;
    int empty = 0;
    const int64_t start = NowNanos();
    while (received < w.events) {
      CONVERGE_ASSIGN_OR_RETURN(std::vector<client::Delivery> got,
                                c.Fetch(kPublishTopic, "bench", fetch));
      if (got.empty()) {
        if (++empty > kMaxEmptyFetches) {
          return InternalError("converge server: fetch found nothing after " +
                               std::to_string(received) + " events");
        }
        continue;
      }
      leases.clear();
      for (const client::Delivery& d : got) {
        if (!d.event || d.event->data().size() != w.event_bytes) ++bad;
        leases.push_back(d.lease());
      }
      CONVERGE_ASSIGN_OR_RETURN(client::AckResult acked, c.Ack(kPublishTopic, "bench", leases));
      if (!acked.lost.empty()) {
        return InternalError("converge server: " + std::to_string(acked.lost.size()) +
                             " leases lost");
      }
      received += got.size();
    }
    const int64_t end = NowNanos();
    if (bad > 0) {
      return InternalError("converge server: " + std::to_string(bad) + " events of wrong size");
    }
    out.push_back(Row("consume_ack", w.events, start, end,
                             "HTTP sidecar: fetch " + std::to_string(kFetchBatch) +
                                 " + ack (acks fdatasync'ed before the reply)"));
    return Status::Ok();
  }

  Status Latency(const LogWorkload& w, std::vector<Measurement>& out) override {
    CONVERGE_RETURN_IF_ERROR(Stop());
    CONVERGE_RETURN_IF_ERROR(StartServer(w, /*sync_acks=*/false));
    const uint64_t total = LatencyTotalEvents(w);
    DeliveryTracker tracker(total, LatencyWarmupEvents(w));
    std::atomic<bool> stop{false};
    Status consumer_status;
    client::Client control(Options());
    client::SubscribeOptions sub_options;
    sub_options.max_events = kFetchBatch;
    sub_options.auto_ack = true;
    CONVERGE_ASSIGN_OR_RETURN(std::unique_ptr<client::Subscription> sub,
                              control.Subscribe(kLatencyTopic, "lat", sub_options));
    std::thread consumer([&] {
      while (!stop.load() && tracker.delivered() < total) {
        Result<std::optional<client::Delivery>> d = sub->Next(100);
        const int64_t now = NowNanos();
        if (!d.ok()) {
          consumer_status = d.status();
          return;
        }
        if (!d->has_value() || !(*d)->event) continue;
        const std::string& data = (*d)->event->data();
        tracker.Deliver(data.data(), data.size(), now);
      }
    });
    client::Client publisher(Options());
    EventBatch batch(kLatencyMaxBatch, w.event_bytes);
    PacedRunStats stats;
    Status status = RunPacedPublisher(
        total, w.rate_per_s, kLatencyMaxBatch,
        [&](uint64_t first, uint64_t count, const Pacer& pacer) -> Status {
          return publisher
              .Publish(kLatencyTopic, batch.Stamp(first, count, &pacer),
                       client::PublishMode::kNative)
              .status();
        },
        &stats);
    const bool all = status.ok() && tracker.WaitAll(kDrainTimeoutMs);
    stop.store(true);
    consumer.join();
    sub.reset();
    CONVERGE_RETURN_IF_ERROR(status);
    CONVERGE_RETURN_IF_ERROR(consumer_status);
    if (!all) {
      return DeadlineExceededError("converge server latency: delivered " +
                                   std::to_string(tracker.delivered()) + " of " +
                                   std::to_string(total));
    }
    out.push_back(LatencyMeasurement(name(), durability(), tracker, stats,
                                     "HTTP sidecar: binary batch publish of the due events; SSE "
                                     "stream consumer (server-side acks, "
                                     "committed every 100 ms)"));
    return Status::Ok();
  }

  // single_publish: `w.events` requests, one structured CloudEvent (JSON) each with a unique
  // id, from `clients` keep-alive connections driven by one thread, into a topic of 4
  // partitions (fsync); every 200 comes after the event's group commit is synced. The topic's
  // offsets must then hold exactly the acknowledged events. fetch10_ack: `clients` consumers of
  // one group each fetching up to 10 (JSON) and acking them, until every event is acked.
  bool has_many_clients() const override { return true; }
  Status ManyClients(const LogWorkload& w, uint32_t clients, bool publish, bool consume,
                     std::vector<Measurement>& out) override {
    namespace bhttp = boost::beast::http;
    const std::string topic = "many-" + std::to_string(clients);
    {
      client::Client c(Options());
      client::TopicSpec spec;
      spec.name = topic;
      spec.partitions = 4;
      spec.durability = Durability::kFsync;
      CONVERGE_RETURN_IF_ERROR(c.CreateTopic(spec).status());
    }
    const std::string data(w.event_bytes > 40 ? w.event_bytes - 40 : 1, 'x');
    testing::HttpLoadOptions load;
    load.port = process_->port();
    if (!extra_.empty()) {
      // Connections spread over every sidecar; all append to the one JetStream log.
      load.ports.push_back(process_->port());
      for (const auto& p : extra_) load.ports.push_back(p->port());
    }
    load.connections = clients;
    load.requests = w.events;
    const std::string target = "/v1/topics/" + topic + "/events";
    load.make_request = [&](size_t, uint64_t seq) {
      bhttp::request<bhttp::string_body> req{bhttp::verb::post, target, 11};
      req.set(bhttp::field::host, "127.0.0.1");
      req.set(bhttp::field::content_type, "application/cloudevents+json");
      std::string body = R"({"specversion":"1.0","source":"/bench","type":"bench.event","id":")";
      body += topic;
      body += '-';
      body += std::to_string(seq);
      body += R"(","data":{"p":")";
      body += data;
      body += "\"}}";
      req.body() = std::move(body);
      return req;
    };
    load.on_reply = [](uint64_t, const bhttp::response<bhttp::string_body>& reply) {
      return reply.result_int() == 200;
    };
    if (publish) {
      testing::HttpLoadResult r = testing::RunHttpLoad(load);
      client::Client c(Options());
      CONVERGE_ASSIGN_OR_RETURN(client::TopicDescription t, c.DescribeTopic(topic));
      uint64_t stored = 0;
      for (const auto& p : t.offsets) stored += p.end_offset;
      std::string note =
          "HTTP sidecar: one structured CloudEvent per request, " + std::to_string(clients) +
          " keep-alive connections (1 client thread), 4 partitions; " +
          (jetstream_ ? std::to_string(extra_.size() + 1) + " sidecar(s) on one JetStream log, R" +
                            std::to_string(replicas_) + "; "
                      : std::string()) +
          std::to_string(stored) + " stored for " + std::to_string(r.ok) + " acknowledged";
      if (!r.first_error.empty()) note += "; first error: " + r.first_error;
      out.push_back(ManyClientsMeasurement("single_publish", name(), durability(), clients, r.ok,
                                           r.errors, r.elapsed_ns, r.latencies_ns, note));
      if (stored != r.ok) {
        return DataLossError("converge server: " + topic + " holds " + std::to_string(stored) +
                             " events for " + std::to_string(r.ok) + " acknowledged publishes");
      }
      published_ = r.ok;
    }
    if (consume && !publish) {
      // fetch10_ack alone: the same events, published unmeasured in batches first (so a
      // consumer-side run, or a profile of one, is not mostly the publish workload).
      CONVERGE_ASSIGN_OR_RETURN(published_, Prefill(topic, w.events, data));
    }
    if (consume) {
      CONVERGE_ASSIGN_OR_RETURN(Measurement m, ConsumeMany(topic, clients, published_));
      out.push_back(std::move(m));
    }
    return Status::Ok();
  }

  // Publishes `events` structured-mode-equivalent events (JSON data {"p": data}, unique ids)
  // into `topic` in batches; returns how many the topic then holds (all of them, or an error).
  Result<uint64_t> Prefill(const std::string& topic, uint64_t events, const std::string& data) {
    client::Client c(Options());
    std::vector<Event> batch(std::min<uint64_t>(kPublishBatch, events));
    for (Event& e : batch) {
      e.set_source("/bench");
      e.set_type("bench.event");
      CONVERGE_RETURN_IF_ERROR(e.SetJsonData(R"({"p":")" + data + "\"}"));
    }
    for (uint64_t first = 0; first < events; first += batch.size()) {
      const uint64_t n = std::min<uint64_t>(batch.size(), events - first);
      for (uint64_t i = 0; i < n; ++i) batch[i].set_id(topic + "-" + std::to_string(first + i));
      CONVERGE_RETURN_IF_ERROR(c.Publish(topic, std::span<const Event>(batch.data(), n)).status());
    }
    CONVERGE_ASSIGN_OR_RETURN(client::TopicDescription t, c.DescribeTopic(topic));
    uint64_t stored = 0;
    for (const auto& p : t.offsets) stored += p.end_offset;
    if (stored != events) {
      return DataLossError("converge server: " + topic + " holds " + std::to_string(stored) +
                           " events after publishing " + std::to_string(events));
    }
    return stored;
  }

  Result<Measurement> ConsumeMany(const std::string& topic, uint32_t clients, uint64_t total) {
    namespace asio = boost::asio;
    namespace bhttp = boost::beast::http;
    namespace json = boost::json;
    testing::RaiseOpenFilesLimit();
    asio::io_context ioc(1);
    const asio::ip::tcp::endpoint endpoint(asio::ip::make_address("127.0.0.1"), process_->port());
    std::atomic<uint64_t> acked{0};
    std::atomic<uint64_t> errors{0};
    std::string first_error;
    std::vector<int64_t> latencies;
    uint64_t empty_fetches = 0;  // long polls that ended with nothing
    int64_t end = 0;
    const std::string base = "/v1/topics/" + topic + "/groups/many/";
    auto consumer = [&](uint32_t index) -> asio::awaitable<void> {
      // A group takes at most 1000 members (GroupOptions::max_members, not settable over
      // HTTP): past that, connections share member names (each still its own client).
      const std::string name = "c" + std::to_string(index % 1000);
      asio::ip::tcp::socket socket(co_await asio::this_coro::executor);
      boost::beast::flat_buffer buffer;
      auto fail = [&](const std::string& why) {
        if (errors.fetch_add(1) == 0) first_error = why;
      };
      try {
        co_await socket.async_connect(endpoint, asio::use_awaitable);
        socket.set_option(asio::ip::tcp::no_delay(true));
        while (acked.load() < total) {
          const int64_t start = NowNanos();
          bhttp::request<bhttp::string_body> fetch{bhttp::verb::post, base + "fetch", 11};
          fetch.set(bhttp::field::host, "127.0.0.1");
          fetch.set(bhttp::field::content_type, "application/json");
          fetch.body() = R"({"max_events":10,"wait_ms":200,"consumer":")" + name + "\"}";
          fetch.prepare_payload();
          co_await bhttp::async_write(socket, fetch, asio::use_awaitable);
          bhttp::response<bhttp::string_body> got;
          co_await bhttp::async_read(socket, buffer, got, asio::use_awaitable);
          if (got.result_int() != 200) {
            fail("fetch " + std::to_string(got.result_int()) + ": " + got.body());
            co_return;
          }
          json::value doc = json::parse(got.body());
          json::array acks;
          for (const json::value& d : doc.at("deliveries").as_array()) {
            json::object lease;
            lease["partition"] = d.at("partition");
            lease["offset"] = d.at("offset");
            lease["lease_id"] = d.at("lease_id");
            acks.push_back(std::move(lease));
          }
          if (acks.empty()) {
            ++empty_fetches;
            continue;
          }
          const size_t n = acks.size();
          json::object body;
          body["acks"] = std::move(acks);
          body["consumer"] = name;
          bhttp::request<bhttp::string_body> ack{bhttp::verb::post, base + "ack", 11};
          ack.set(bhttp::field::host, "127.0.0.1");
          ack.set(bhttp::field::content_type, "application/json");
          ack.body() = json::serialize(body);
          ack.prepare_payload();
          co_await bhttp::async_write(socket, ack, asio::use_awaitable);
          bhttp::response<bhttp::string_body> done;
          co_await bhttp::async_read(socket, buffer, done, asio::use_awaitable);
          if (done.result_int() != 200) {
            fail("ack " + std::to_string(done.result_int()) + ": " + done.body());
            co_return;
          }
          const int64_t now = NowNanos();
          latencies.push_back(now - start);
          if (acked.fetch_add(n) + n >= total && end == 0) end = now;
        }
      } catch (const std::exception& e) {
        fail(std::string("consumer: ") + e.what());
      }
    };
    const int64_t start = NowNanos();
    for (uint32_t i = 0; i < clients; ++i) {
      asio::co_spawn(ioc, consumer(i), asio::detached);
    }
    ioc.run();
    if (end == 0) end = NowNanos();
    std::string note = "HTTP sidecar: " + std::to_string(clients) +
                       " consumers (connections) of one group of at most 1000 members, each "
                       "fetching up to 10 (JSON) and acking them (acks synced before the "
                       "reply); latency of fetch + ack; " +
                       std::to_string(latencies.size()) + " fetches with events, " +
                       std::to_string(empty_fetches) + " without";
    if (!first_error.empty()) note += "; first error: " + first_error;
    Measurement m = ManyClientsMeasurement("fetch10_ack", name(), durability(), clients,
                                           acked.load(), errors.load(), end - start, latencies,
                                           std::move(note));
    if (acked.load() < total) {
      return DataLossError("converge server: consumers acked " + std::to_string(acked.load()) +
                           " of " + std::to_string(total) + " events");
    }
    return m;
  }

  Status Stop() override {
    Status s = Status::Ok();
    for (auto& p : extra_) {
      Status e = p->Stop();
      if (s.ok()) s = e;
    }
    extra_.clear();
    if (process_) {
      s = process_->Stop();  // SIGTERM: drain, sync, exit
      process_.reset();
    }
    nats_.reset();  // after the sidecar: it drains its publishes into JetStream first
    return s;
  }

 private:
  bool jetstream_ = false;
  uint32_t replicas_ = 1;
  std::unique_ptr<testing::NatsCluster> nats_;
  std::vector<std::unique_ptr<testing::ServerProcess>> extra_;  // --sidecars beyond the first

  client::Options Options() const {
    client::Options o;
    o.host = "127.0.0.1";
    o.port = process_->port();
    o.timeout_ms = 60'000;
    return o;
  }

  std::unique_ptr<testing::ServerProcess> process_;
  uint64_t published_ = 0;  // by the last single_publish
};

}  // namespace

std::unique_ptr<LogSystem> MakeConvergeServerSystem() {
  return std::make_unique<ConvergeServerSystem>();
}

}  // namespace converge::bench
