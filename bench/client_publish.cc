// `converge bench client-publish`: the C++ client's publish path at N concurrent publishers
// (one thread and one kept-alive connection each) against `converge serve`, in the request
// shapes the other language clients use, so their publish paths can be compared with it in one
// run (clients/python/bench/publish_bench.py passes --port of the server it started):
//   structured   one event per request, application/cloudevents+json
//   batch        --batch events per request, application/cloudevents-batch+json
//   native       --batch events per request, converge's binary event batch (C++ only)
// Without --port the benchmark starts its own `converge serve` (topic durability fsync).
#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "bench/bench.h"
#include "bench/report.h"
#include "bench/sidecar_process.h"
#include "bench/timing.h"
#include "converge/client.h"
#include "converge/event.h"
#include "support/server_process.h"
#include "support/temp_dir.h"

namespace converge::bench {
namespace {

struct ClientPublishOptions {
  uint16_t port = 0;
  std::string topic = "bench-clients";
  uint32_t publishers = 32;
  uint32_t seconds = 5;
  uint32_t batch = 100;
  std::vector<std::string> modes = {"structured", "batch", "native"};
  bool json = false;
  std::string dir;
  bool help = false;
};

void PrintHelp(FILE* out) {
  std::fputs(
      "converge bench client-publish [options]\n"
      "  --port N          publish to converge serve on 127.0.0.1:N (default: start one)\n"
      "  --topic NAME      topic (created if missing; default bench-clients)\n"
      "  --publishers N    concurrent publishers, one connection each (default 32)\n"
      "  --seconds N       per mode (default 5)\n"
      "  --batch N         events per request of the batch modes (default 100)\n"
      "  --modes LIST      structured,batch,native (default all)\n"
      "  --json            one JSON object per row\n"
      "  --dir DIR         scratch directory of a started server\n",
      out);
}

Result<ClientPublishOptions> Parse(int argc, char** argv) {
  ClientPublishOptions o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> Result<std::string> {
      if (i + 1 >= argc) return InvalidArgumentError(a + " needs a value");
      return std::string(argv[++i]);
    };
    auto number = [&](uint32_t low) -> Result<uint32_t> {
      CONVERGE_ASSIGN_OR_RETURN(std::string v, value());
      char* end = nullptr;
      const unsigned long n = std::strtoul(v.c_str(), &end, 10);
      if (v.empty() || *end != '\0' || n < low || n > 1'000'000) {
        return InvalidArgumentError(a + " must be a number >= " + std::to_string(low));
      }
      return static_cast<uint32_t>(n);
    };
    if (a == "--help" || a == "-h") {
      o.help = true;
    } else if (a == "--json") {
      o.json = true;
    } else if (a == "--port") {
      CONVERGE_ASSIGN_OR_RETURN(uint32_t p, number(1));
      if (p > 65535) return InvalidArgumentError("--port must be 1..65535");
      o.port = static_cast<uint16_t>(p);
    } else if (a == "--topic") {
      CONVERGE_ASSIGN_OR_RETURN(o.topic, value());
    } else if (a == "--publishers") {
      CONVERGE_ASSIGN_OR_RETURN(o.publishers, number(1));
    } else if (a == "--seconds") {
      CONVERGE_ASSIGN_OR_RETURN(o.seconds, number(1));
    } else if (a == "--batch") {
      CONVERGE_ASSIGN_OR_RETURN(o.batch, number(1));
    } else if (a == "--dir") {
      CONVERGE_ASSIGN_OR_RETURN(o.dir, value());
    } else if (a == "--modes") {
      CONVERGE_ASSIGN_OR_RETURN(std::string list, value());
      o.modes.clear();
      size_t at = 0;
      while (at <= list.size()) {
        size_t comma = list.find(',', at);
        if (comma == std::string::npos) comma = list.size();
        std::string m = list.substr(at, comma - at);
        if (m != "structured" && m != "batch" && m != "native") {
          return InvalidArgumentError("unknown mode '" + m + "' (structured, batch, native)");
        }
        o.modes.push_back(m);
        at = comma + 1;
      }
    } else {
      return InvalidArgumentError("unknown option '" + a + "'");
    }
  }
  return o;
}

// One row: `publishers` threads publishing for `seconds` in `mode`.
Status RunMode(const ClientPublishOptions& o, const std::string& mode, Measurement* m) {
  const bool single = mode == "structured";
  const uint32_t per_request = single ? 1 : o.batch;
  const client::PublishMode wire = mode == "structured" ? client::PublishMode::kStructured
                                   : mode == "batch"    ? client::PublishMode::kBatch
                                                        : client::PublishMode::kNative;
  std::atomic<uint64_t> events{0};
  std::atomic<int> failures{0};
  constexpr size_t kMaxSamplesPerPublisher = 200'000;
  std::vector<std::vector<int64_t>> latencies(o.publishers);
  const int64_t start = NowNanos();
  const int64_t deadline = start + static_cast<int64_t>(o.seconds) * 1'000'000'000;
  std::vector<std::thread> threads;
  for (uint32_t t = 0; t < o.publishers; ++t) {
    threads.emplace_back([&, t] {
      client::Options co;
      co.port = o.port;
      client::Client c(co);
      std::vector<Event> batch(per_request);
      uint64_t seq = 0;
      const std::string source = "/bench/cpp/" + mode + "/" + std::to_string(t);
      while (NowNanos() < deadline) {
        for (Event& e : batch) {
          e.set_id(std::to_string(seq++));
          e.set_source(source);
          e.set_type("bench.order");
          Status s = e.SetJsonData(R"({"order":12345,"customer":"c-42","total":99.5})");
          if (!s.ok()) ++failures;
        }
        const int64_t before = NowNanos();
        const bool ok = single ? c.PublishOne(o.topic, batch[0], wire).ok()
                               : c.Publish(o.topic, batch, wire).ok();
        if (!ok) {
          ++failures;
          continue;
        }
        if (latencies[t].size() < kMaxSamplesPerPublisher) {
          latencies[t].push_back(NowNanos() - before);
        }
        events += per_request;
      }
    });
  }
  for (std::thread& th : threads) th.join();
  const double seconds = static_cast<double>(NowNanos() - start) / 1e9;
  if (failures > 0) {
    return InternalError(std::to_string(failures.load()) + " publish requests failed");
  }
  LatencyRecorder merged(kMaxSamplesPerPublisher * o.publishers);
  for (const std::vector<int64_t>& r : latencies) {
    for (int64_t ns : r) merged.Record(ns);
  }
  const LatencyRecorder::Percentiles p = merged.Compute();
  m->workload = "publish_" + mode;
  m->system = "cpp-client";
  m->durability = "fsync";
  m->events = events.load();
  m->seconds = seconds;
  m->events_per_s = static_cast<double>(m->events) / seconds;
  m->p50_us = p.p50_us;
  m->p99_us = p.p99_us;
  m->p999_us = p.p999_us;
  m->note = std::to_string(o.publishers) + " publishers, " + std::to_string(per_request) +
            " event(s) per request; latency per request";
  return Status::Ok();
}

int RunClientPublish(int argc, char** argv) {
  Result<ClientPublishOptions> parsed = Parse(argc, argv);
  if (!parsed.ok()) {
    std::fprintf(stderr, "converge bench client-publish: %s\n",
                 std::string(parsed.status().message()).c_str());
    return 2;
  }
  ClientPublishOptions o = std::move(parsed).value();
  if (o.help) {
    PrintHelp(stdout);
    return 0;
  }
  std::unique_ptr<testing::ServerProcess> server;
  std::optional<testing::TempDir> run_dir;
  if (o.port == 0) {
    Result<testing::TempDir> dir = testing::TempDir::Create("converge-bench-", o.dir);
    if (!dir.ok()) {
      std::fprintf(stderr, "converge bench client-publish: %s\n", dir.status().ToString().c_str());
      return 1;
    }
    run_dir.emplace(std::move(dir).value());
    const std::string config = run_dir->path() + "/converge.yaml";
    std::ofstream(config) << "auto_create_topics: true\n";
    Result<std::unique_ptr<testing::ServerProcess>> s =
        StartSidecar(config, run_dir->path() + "/data", run_dir->path() + "/serve.log");
    if (!s.ok()) {
      std::fprintf(stderr, "converge bench client-publish: %s\n", s.status().ToString().c_str());
      return 1;
    }
    server = std::move(s).value();
    o.port = server->port();
  }
  std::vector<Measurement> rows;
  for (const std::string& mode : o.modes) {
    Measurement m;
    Status s = RunMode(o, mode, &m);
    if (!s.ok()) {
      std::fprintf(stderr, "converge bench client-publish: %s: %s\n", mode.c_str(),
                   s.ToString().c_str());
      return 1;
    }
    if (o.json) std::printf("%s\n", ToJsonLine(m).c_str());
    std::fflush(stdout);
    rows.push_back(std::move(m));
  }
  if (!o.json) std::printf("%s", FormatTable(rows).c_str());
  return 0;
}

BenchmarkRegistration registration(
    {"client-publish", "the C++ client's publish path at N concurrent publishers",
     RunClientPublish});

}  // namespace
}  // namespace converge::bench
