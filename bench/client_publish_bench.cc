// `converge bench client-publish`: the C++ client's publish path against a running
// `converge serve` (--port; without it, one this benchmark starts itself), with N concurrent
// publishers (threads, one client and one kept-alive connection each) for a fixed time. It is the
// C++ side of the clients' comparison (clients/typescript/bench/publish_bench.mjs starts the
// server, runs this, then the same workload with the TypeScript client against the same server, and
// prints the ratios).
//   --mode structured  one event per request, application/cloudevents+json
//   --mode binary      one event per request, CloudEvents binary mode (ce-* headers)
//   --mode batch       --batch events per request, application/cloudevents-batch+json
//   --mode native      --batch events per request, converge's binary event batch
// Each event: source /bench/cpp, a fresh id, type bench.publish, JSON data {"n":i,"p":"..."}
// of about 100 bytes. Prints events/s and request latency percentiles (report.h).
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "bench/bench.h"
#include "bench/report.h"
#include "bench/sidecar_process.h"
#include "bench/timing.h"
#include "converge/client.h"
#include "converge/event.h"
#include "core/command_line.h"

namespace converge::bench {
namespace {

constexpr size_t kMaxSamplesPerPublisher = 200'000;

int Run(int argc, char** argv) {
  CLI::App app("The C++ client's publish path against a running converge serve.",
               "converge bench client-publish");
  cli::Configure(app);
  bool json = false;
  uint64_t port = 0, publishers = 32, batch = 100;
  double seconds = 5;
  std::string mode = "structured", topic = "bench-clients", host = "127.0.0.1";
  app.add_flag("--json", json);
  app.add_option("--host", host, "server host (default 127.0.0.1)");
  app.add_option("--port", port, "port of a running server (default: start one)")
      ->check(cli::Integer(1, 65535));
  app.add_option("--publishers", publishers, "concurrent publishers (default 32)")
      ->check(cli::Integer(1, 1024));
  app.add_option("--seconds", seconds, "duration (default 5)");
  app.add_option("--mode", mode, "structured | binary | batch | native (default structured)")
      ->check(CLI::IsMember({"structured", "binary", "batch", "native"}));
  app.add_option("--batch", batch, "events per request in batch modes (default 100)")
      ->check(cli::Integer(1, 10'000));
  app.add_option("--topic", topic, "an existing topic (default bench-clients)");
  if (int rc = cli::ParseOrExit(app, argc, argv); rc >= 0) return rc;
  if (!(seconds > 0 && seconds <= 3600)) {
    std::fprintf(stderr, "converge bench client-publish: --seconds must be in (0, 3600]\n");
    return 2;
  }
  // Without --port: a server of our own in a temporary directory, with the topic.
  namespace fs = std::filesystem;
  std::unique_ptr<testing::ServerProcess> own_server;
  std::string own_dir;
  if (port == 0) {
    own_dir =
        (fs::temp_directory_path() / ("converge-client-publish-" + std::to_string(::getpid())))
            .string();
    std::error_code ec;
    fs::create_directories(own_dir, ec);
    std::ofstream(own_dir + "/serve.yaml") << "limits:\n  max_inflight_requests: 4096\n";
    auto started = StartSidecar(own_dir + "/serve.yaml", own_dir + "/data", own_dir + "/serve.log");
    if (!started.ok()) {
      std::fprintf(stderr, "converge bench client-publish: %s\n",
                   started.status().ToString().c_str());
      return 1;
    }
    own_server = std::move(started).value();
    port = own_server->port();
    client::Options o;
    o.host = host;
    o.port = static_cast<uint16_t>(port);
    client::TopicSpec spec;
    spec.name = topic;
    spec.partitions = 1;
    spec.durability = Durability::kFsync;
    Status s = client::Client(o).CreateTopic(spec).status();
    if (!s.ok()) {
      std::fprintf(stderr, "converge bench client-publish: %s\n", s.ToString().c_str());
      return 1;
    }
  }
  struct Cleanup {
    std::unique_ptr<testing::ServerProcess>* server;
    std::string dir;
    ~Cleanup() {
      server->reset();
      std::error_code ec;
      if (!dir.empty()) std::filesystem::remove_all(dir, ec);
    }
  } cleanup{&own_server, own_dir};
  const client::PublishMode publish_mode = mode == "structured" ? client::PublishMode::kStructured
                                           : mode == "binary"   ? client::PublishMode::kBinary
                                           : mode == "batch"    ? client::PublishMode::kBatch
                                                                : client::PublishMode::kNative;
  const size_t per_request = mode == "structured" || mode == "binary" ? 1 : batch;
  const std::string padding(80, 'x');

  struct Result {
    uint64_t events = 0;
    std::string error;
    std::vector<int64_t> latency;
  };
  std::vector<Result> results(publishers);
  std::atomic<bool> stop{false};
  const auto t0 = std::chrono::steady_clock::now();
  const auto deadline = t0 + std::chrono::duration<double>(seconds);
  auto publisher = [&](size_t index) {
    client::Options o;
    o.host = host;
    o.port = static_cast<uint16_t>(port);
    o.timeout_ms = 30'000;
    client::Client c(o);
    Result& r = results[index];
    r.latency.reserve(4096);
    std::vector<Event> events(per_request);
    uint64_t seq = 0;
    while (!stop.load(std::memory_order_relaxed)) {
      for (Event& e : events) {
        e = Event();
        e.set_id("cpp-" + std::to_string(index) + "-" + std::to_string(seq));
        e.set_source("/bench/cpp");
        e.set_type("bench.publish");
        (void)e.SetJsonData("{\"n\":" + std::to_string(seq) + ",\"p\":\"" + padding + "\"}");
        ++seq;
      }
      const auto start = std::chrono::steady_clock::now();
      Status s = per_request == 1 ? c.PublishOne(topic, events[0], publish_mode).status()
                                  : c.Publish(topic, events, publish_mode).status();
      const auto end = std::chrono::steady_clock::now();
      if (!s.ok()) {
        r.error = s.ToString();
        stop = true;
        return;
      }
      r.events += per_request;
      if (r.latency.size() < kMaxSamplesPerPublisher) {
        r.latency.push_back(
            std::chrono::duration_cast<std::chrono::nanoseconds>(end - start).count());
      }
      if (end >= deadline) stop = true;
    }
  };
  std::vector<std::thread> threads;
  for (size_t i = 0; i < publishers; ++i) threads.emplace_back(publisher, i);
  for (std::thread& t : threads) t.join();
  const double elapsed =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  uint64_t events = 0;
  LatencyRecorder merged(kMaxSamplesPerPublisher * publishers);
  for (const Result& r : results) {
    if (!r.error.empty()) {
      std::fprintf(stderr, "converge bench client-publish: %s\n", r.error.c_str());
      return 1;
    }
    events += r.events;
    for (int64_t ns : r.latency) merged.Record(ns);
  }
  const LatencyRecorder::Percentiles p = merged.Compute();
  Measurement m;
  m.workload = "publish_" + mode;
  m.system = "cpp-client";
  m.durability = "fsync";
  m.events = events;
  m.seconds = elapsed;
  m.events_per_s = static_cast<double>(events) / elapsed;
  m.p50_us = p.p50_us;
  m.p99_us = p.p99_us;
  m.p999_us = p.p999_us;
  m.note = std::to_string(publishers) + " publishers, " + std::to_string(per_request) +
           " events/request; latency per request";
  if (json) {
    std::printf("%s\n", ToJsonLine(m).c_str());
  } else {
    std::printf("%s", FormatTable({m}).c_str());
  }
  return 0;
}

const BenchmarkRegistration kRegistration{
    Benchmark{"client-publish",
              "the C++ client's publish path against a running converge serve (--port), N "
              "concurrent publishers",
              Run}};

}  // namespace
}  // namespace converge::bench
