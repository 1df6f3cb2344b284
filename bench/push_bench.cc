// `converge bench push`: push delivery (docs/push.md) side by side with pull (fetch + ack), in
// one run against one `converge serve` (fsync durability, synced acks) on loopback.
//
// For each key count (1 and 64 by default) the same backlog of --events events is published to
// two topics of 8 partitions each, then drained:
//   push  a subscription (binary mode, max_concurrency 64) POSTs every event to an HTTP endpoint
//         in this process that answers 204 at once. Throughput: events / (last arrival - the
//         subscription's creation). Latency: per key, the time between consecutive arrivals
//         (one event's ack, the next fetch and the next request: the per-key cycle, since a
//         key's next event is sent only after the previous one's ack).
//   pull  one consumer fetches up to 64 events and acks them in one request, in a loop.
//         Throughput: events / drain time. Latency: fetch start to ack reply, per event.
// With one key both can have only one event in flight (per-key order); with 64 keys both may
// have 64.
#include <atomic>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "bench/bench.h"
#include "bench/report.h"
#include "bench/sidecar_process.h"
#include "bench/timing.h"
#include "converge/client.h"
#include "converge/event.h"
#include "support/temp_dir.h"

namespace converge::bench {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
using tcp = asio::ip::tcp;
using Clock = std::chrono::steady_clock;

int64_t NowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch())
      .count();
}

// The endpoint: a thread per connection, 204 for every request; records (subject, arrival).
class Endpoint {
 public:
  Endpoint() {
    tcp::endpoint ep(asio::ip::make_address("127.0.0.1"), 0);
    acceptor_.open(ep.protocol());
    acceptor_.bind(ep);
    acceptor_.listen();
    port_ = acceptor_.local_endpoint().port();
    accept_ = std::thread([this] {
      while (!stopping_) {
        auto socket = std::make_shared<tcp::socket>(io_);
        boost::system::error_code ec;
        acceptor_.accept(*socket, ec);
        if (ec || stopping_) return;
        std::lock_guard lock(mu_);
        sockets_.push_back(socket);
        threads_.emplace_back([this, socket] { Serve(*socket); });
      }
    });
  }
  ~Endpoint() {
    stopping_ = true;
    boost::system::error_code ec;
    {
      tcp::socket wake(io_);
      wake.connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), port_), ec);
    }
    accept_.join();
    {
      std::lock_guard lock(mu_);
      for (auto& s : sockets_) s->shutdown(tcp::socket::shutdown_both, ec);
    }
    for (std::thread& t : threads_) t.join();
  }
  uint16_t port() const { return port_; }
  size_t count() const { return count_.load(); }
  std::vector<std::pair<std::string, int64_t>> TakeArrivals() {
    std::lock_guard lock(mu_);
    count_ = 0;
    return std::exchange(arrivals_, {});
  }

 private:
  void Serve(tcp::socket& socket) {
    beast::flat_buffer buffer;
    boost::system::error_code ec;
    while (!stopping_) {
      bhttp::request<bhttp::string_body> req;
      bhttp::read(socket, buffer, req, ec);
      if (ec) return;
      {
        std::lock_guard lock(mu_);
        arrivals_.emplace_back(std::string(req["ce-subject"]), NowNs());
        count_.fetch_add(1);
      }
      bhttp::response<bhttp::empty_body> res{bhttp::status::no_content, 11};
      res.keep_alive(true);
      bhttp::write(socket, res, ec);
      if (ec) return;
    }
  }

  asio::io_context io_;
  tcp::acceptor acceptor_{io_};
  uint16_t port_ = 0;
  std::atomic<bool> stopping_{false};
  std::thread accept_;
  std::mutex mu_;
  std::vector<std::shared_ptr<tcp::socket>> sockets_;
  std::vector<std::thread> threads_;
  std::vector<std::pair<std::string, int64_t>> arrivals_;
  std::atomic<size_t> count_{0};
};

Status PublishBacklog(client::Client& c, const std::string& topic, uint32_t events, uint32_t keys) {
  client::TopicSpec spec;
  spec.name = topic;
  spec.partitions = 8;
  CONVERGE_RETURN_IF_ERROR(c.CreateTopic(spec).status());
  std::vector<Event> batch;
  for (uint32_t i = 0; i < events; ++i) {
    const std::string key = "k" + std::to_string(i % keys);
    Event e;
    e.set_source("/bench-push");
    e.set_id(topic + "-" + std::to_string(i));
    e.set_type("bench.push");
    e.set_subject(key + "/" + std::to_string(i));
    e.set_partitionkey(key);
    CONVERGE_RETURN_IF_ERROR(e.SetJsonData("{\"n\":" + std::to_string(i) + "}"));
    batch.push_back(std::move(e));
    if (batch.size() == 500 || i + 1 == events) {
      CONVERGE_RETURN_IF_ERROR(c.Publish(topic, batch).status());
      batch.clear();
    }
  }
  return Status::Ok();
}

Measurement Row(const std::string& workload, uint32_t keys, uint64_t events, double seconds,
                LatencyRecorder& latency, const std::string& note) {
  Measurement m;
  m.workload = workload;
  m.system = "converge";
  m.durability = "fsync";
  m.events = events;
  m.seconds = seconds;
  m.events_per_s = seconds > 0 ? static_cast<double>(events) / seconds : 0;
  const LatencyRecorder::Percentiles p = latency.Compute();
  m.p50_us = p.p50_us;
  m.p99_us = p.p99_us;
  m.p999_us = p.p999_us;
  m.note = std::to_string(keys) + (keys == 1 ? " key; " : " keys; ") + note;
  return m;
}

Result<Measurement> RunPush(client::Client& c, Endpoint& endpoint, uint32_t events, uint32_t keys,
                            int64_t timeout_s) {
  const std::string topic = "push-" + std::to_string(keys);
  CONVERGE_RETURN_IF_ERROR(PublishBacklog(c, topic, events, keys));
  endpoint.TakeArrivals();
  client::HttpRequest req;
  req.method = "POST";
  req.target = "/v1/subscriptions";
  req.headers.emplace_back("Content-Type", "application/json");
  req.body =
      "{\"name\":\"bench-" + std::to_string(keys) + "\",\"topic\":\"" + topic +
      "\",\"endpoint\":\"http://127.0.0.1:" + std::to_string(endpoint.port()) +
      "/\",\"mode\":\"binary\",\"max_concurrency\":64,\"secret\":\"bench-secret-0123456789\"}";
  const int64_t start = NowNs();
  CONVERGE_ASSIGN_OR_RETURN(client::HttpResponse res, c.Send(req));
  if (res.status != 201) return client::StatusFromHttp(res.status, res.body);
  const int64_t deadline = start + timeout_s * 1'000'000'000;
  while (endpoint.count() < events) {
    if (NowNs() > deadline) return DeadlineExceededError("push: not every event arrived");
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  auto arrivals = endpoint.TakeArrivals();
  LatencyRecorder latency(arrivals.size());
  std::map<std::string, int64_t> last;  // per key
  int64_t end = start;
  for (const auto& [subject, at] : arrivals) {
    const std::string key = subject.substr(0, subject.find('/'));
    auto it = last.find(key);
    if (it != last.end()) latency.Record(at - it->second);
    last[key] = at;
    end = std::max(end, at);
  }
  return Row("push", keys, arrivals.size(), static_cast<double>(end - start) * 1e-9, latency,
             "binary mode, max_concurrency 64, endpoint answers 204; latency = per-key cycle");
}

Result<Measurement> RunPull(client::Client& c, uint32_t events, uint32_t keys) {
  const std::string topic = "pull-" + std::to_string(keys);
  CONVERGE_RETURN_IF_ERROR(PublishBacklog(c, topic, events, keys));
  client::GroupSpec g;
  g.name = "pull";
  CONVERGE_RETURN_IF_ERROR(c.CreateGroup(topic, g).status());
  LatencyRecorder latency(events);
  client::FetchOptions fo;
  fo.max_events = 64;
  fo.wait_ms = 1000;
  fo.consumer = "bench";
  uint64_t done = 0;
  const int64_t start = NowNs();
  while (done < events) {
    const int64_t t0 = NowNs();
    CONVERGE_ASSIGN_OR_RETURN(std::vector<client::Delivery> got, c.Fetch(topic, "pull", fo));
    if (got.empty()) continue;
    std::vector<client::Lease> leases;
    for (const client::Delivery& d : got) leases.push_back(d.lease());
    CONVERGE_RETURN_IF_ERROR(c.Ack(topic, "pull", leases, "bench").status());
    const int64_t t1 = NowNs();
    for (size_t i = 0; i < got.size(); ++i) latency.Record(t1 - t0);
    done += got.size();
  }
  return Row("pull", keys, done, static_cast<double>(NowNs() - start) * 1e-9, latency,
             "one consumer: fetch up to 64, ack them in one request; latency = fetch to ack");
}

void PrintHelp() {
  std::printf(
      "usage: converge bench push [--events N] [--keys A,B] [--json] [--dir DIR]\n"
      "  Push delivery vs pull (fetch + ack) against one converge serve on loopback.\n"
      "  --events N   events per workload (default 20000)\n"
      "  --keys A,B   key counts (default 1,64)\n"
      "  --json       one JSON object per line on stdout\n"
      "  --dir DIR    scratch directory (default $TMPDIR)\n");
}

int RunPushBench(int argc, char** argv) {
  uint32_t events = 20'000;
  std::vector<uint32_t> key_counts = {1, 64};
  bool json = false;
  std::string dir;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> const char* { return i + 1 < argc ? argv[++i] : nullptr; };
    if (a == "--help" || a == "-h") {
      PrintHelp();
      return 0;
    } else if (a == "--json") {
      json = true;
    } else if (a == "--events") {
      const char* v = value();
      events = v != nullptr ? static_cast<uint32_t>(std::strtoul(v, nullptr, 10)) : 0;
      if (events == 0 || events > 10'000'000) {
        std::fprintf(stderr, "converge bench push: --events must be 1..10000000\n");
        return 2;
      }
    } else if (a == "--keys") {
      const char* v = value();
      key_counts.clear();
      for (std::string s = v != nullptr ? v : ""; !s.empty();) {
        const size_t comma = s.find(',');
        const unsigned long k = std::strtoul(s.substr(0, comma).c_str(), nullptr, 10);
        if (k == 0 || k > 10'000) {
          std::fprintf(stderr, "converge bench push: --keys takes numbers 1..10000\n");
          return 2;
        }
        key_counts.push_back(static_cast<uint32_t>(k));
        s = comma == std::string::npos ? "" : s.substr(comma + 1);
      }
      if (key_counts.empty()) {
        std::fprintf(stderr, "converge bench push: --keys needs a list\n");
        return 2;
      }
    } else if (a == "--dir") {
      const char* v = value();
      if (v == nullptr) {
        std::fprintf(stderr, "converge bench push: --dir needs a directory\n");
        return 2;
      }
      dir = v;
    } else {
      std::fprintf(stderr, "converge bench push: unknown argument '%s' (see --help)\n", a.c_str());
      return 2;
    }
  }
  Result<testing::TempDir> run_dir = testing::TempDir::Create("converge-bench-push-", dir);
  if (!run_dir.ok()) {
    std::fprintf(stderr, "converge bench push: %s\n", run_dir.status().ToString().c_str());
    return 1;
  }
  const std::string config = run_dir->path() + "/serve.yaml";
  std::ofstream(config) << "limits:\n  max_connections: 8192\n";
  auto process = StartSidecar(config, run_dir->path() + "/data", run_dir->path() + "/serve.log");
  if (!process.ok()) {
    std::fprintf(stderr, "converge bench push: %s\n", process.status().ToString().c_str());
    return 1;
  }
  double load[1] = {0};
  ::getloadavg(load, 1);
  std::fprintf(stderr, "converge bench push: %u events per workload; load average %.2f\n", events,
               load[0]);
  client::Options co;
  co.port = (*process)->port();
  client::Client c(co);
  Endpoint endpoint;
  std::vector<Measurement> rows;
  int failures = 0;
  for (uint32_t keys : key_counts) {
    for (bool push : {true, false}) {
      Result<Measurement> m =
          push ? RunPush(c, endpoint, events, keys, 600) : RunPull(c, events, keys);
      if (!m.ok()) {
        std::fprintf(stderr, "converge bench push: %s %u keys: %s\n", push ? "push" : "pull", keys,
                     m.status().ToString().c_str());
        ++failures;
        continue;
      }
      if (json) {
        std::printf("%s\n", ToJsonLine(*m).c_str());
        std::fflush(stdout);
      }
      rows.push_back(std::move(*m));
    }
  }
  (*process)->Stop().IgnoreError();
  if (!json) std::printf("\n%s", FormatTable(rows).c_str());
  run_dir->Remove().IgnoreError();
  return failures == 0 ? 0 : 1;
}

BenchmarkRegistration registration(
    {"push", "push delivery to a local endpoint vs pull (fetch + ack), 1 and 64 keys",
     RunPushBench});

}  // namespace
}  // namespace converge::bench
