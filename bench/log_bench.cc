// `converge bench log`: runs the selected systems one after another (each in its own scratch
// directory, servers stopped and files removed before the next) and prints the results.
#include "bench/log_bench.h"

#include <fcntl.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "bench/bench.h"
#include "bench/log_options.h"
#include "support/server_process.h"

namespace converge::bench {
namespace {

bool Contains(const std::vector<std::string>& list, const std::string& item) {
  for (const std::string& s : list) {
    if (s == item) return true;
  }
  return false;
}

std::unique_ptr<LogSystem> MakeSystem(const std::string& name, const std::string& via) {
  if (name == "converge") {
    return via == "server" ? MakeConvergeServerSystem() : MakeConvergeSystem();
  }
  if (name == "jetstream") return MakeJetStreamSystem();
  if (name == "redis-always") return MakeRedisSystem("always");
  if (name == "redis-everysec") return MakeRedisSystem("everysec");
  if (name == "raw") return MakeRawDiskSystem();
  return nullptr;
}

// Flushes the filesystem holding `dir` (syncfs), untimed, between workloads.
void QuiesceDisk(const std::string& dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return;
  ::syncfs(fd);
  ::close(fd);
}

bool OnTmpfs(const std::string& path) {
  struct statfs fs;
  return ::statfs(path.c_str(), &fs) == 0 && fs.f_type == 0x01021994;  // TMPFS_MAGIC
}

// ---------------------------------------------------------------------------------------
// The run

// Runs every selected workload of one system in its own scratch directory under `run_dir`.
// Appends the rows to `rows` (and prints them at once in JSON mode when `stream_json`).
// Returns false if the system failed.
bool RunSystem(const std::string& name, const LogOptions& o, const std::string& run_dir,
               bool stream_json, std::vector<Measurement>& rows) {
  const bool want_publish = Contains(o.workloads, "publish");
  const bool want_consume = Contains(o.workloads, "consume_ack");
  const bool want_latency = Contains(o.workloads, "latency");
  std::unique_ptr<LogSystem> system = MakeSystem(name, o.via);
  if (system == nullptr) {
    // A factory may return nullptr for a system this binary was built without.
    std::fprintf(stderr, "converge bench log: %s: not built into this binary yet%s\n", name.c_str(),
                 o.systems_explicit ? "" : " (skipped)");
    return !o.systems_explicit;
  }
  Result<testing::TempDir> dir = testing::TempDir::Create(name + "-", run_dir);
  if (!dir.ok()) {
    std::fprintf(stderr, "converge bench log: %s\n", dir.status().ToString().c_str());
    return false;
  }
  LogWorkload w = o.workload;
  w.dir = dir->path();
  std::vector<Measurement> fresh;
  auto emit = [&](bool keep) {
    for (Measurement& m : fresh) {
      if (!keep) continue;
      if (stream_json) {
        std::printf("%s\n", ToJsonLine(m).c_str());
        std::fflush(stdout);
      }
      rows.push_back(std::move(m));
    }
    fresh.clear();
  };
  // Each workload starts from a quiet disk: data an earlier phase left unsynced would
  // otherwise be written back during the next measurement.
  auto step = [&](const char* what) {
    QuiesceDisk(w.dir);
    std::fprintf(stderr, "  %-15s %s...\n", name.c_str(), what);
  };
  step("start");
  Status status = system->Start(w);
  if (status.ok() && (want_publish || want_consume)) {
    step("publish");
    status = system->Publish(w, fresh);
    emit(want_publish);
  }
  if (status.ok() && want_consume && system->has_consume()) {
    step("consume + ack");
    status = system->ConsumeAck(w, fresh);
    emit(true);
  }
  const bool want_single_publish = Contains(o.workloads, "single_publish");
  const bool want_single_consume = Contains(o.workloads, "fetch10_ack");
  if (!w.clients.empty() && (want_single_publish || want_single_consume) &&
      !system->has_many_clients()) {
    std::fprintf(stderr, "  %-15s has no many-clients workloads (skipped)\n", name.c_str());
  }
  for (uint32_t clients : w.clients) {
    if (!status.ok() || !(want_single_publish || want_single_consume)) break;
    if (!system->has_many_clients()) break;
    step(("clients " + std::to_string(clients)).c_str());
    status = system->ManyClients(w, clients, want_single_publish, want_single_consume, fresh);
    emit(true);
  }
  if (status.ok() && want_latency && system->has_latency()) {
    step("latency");
    status = system->Latency(w, fresh);
    emit(true);
  }
  Status stopped = system->Stop();
  if (status.ok()) status = stopped;
  if (!status.ok()) {
    std::fprintf(stderr, "converge bench log: %s failed: %s\n", name.c_str(),
                 status.ToString().c_str());
  }
  system.reset();
  Status removed = dir->Remove();
  if (!removed.ok()) std::fprintf(stderr, "converge bench log: %s\n", removed.ToString().c_str());
  return status.ok();
}

int RunLog(int argc, char** argv) {
  Result<LogOptions> parsed = ParseLogOptions(argc, argv);
  if (!parsed.ok()) {
    std::fprintf(stderr, "converge bench log: %s\n(see converge bench log --help)\n",
                 std::string(parsed.status().message()).c_str());
    return 2;
  }
  LogOptions o = std::move(parsed).value();
  if (o.help) {
    PrintLogHelp(stdout);
    return 0;
  }
  Result<testing::TempDir> run_dir = testing::TempDir::Create("converge-bench-", o.dir);
  if (!run_dir.ok()) {
    std::fprintf(stderr, "converge bench log: %s\n", run_dir.status().ToString().c_str());
    return 1;
  }
  if (OnTmpfs(run_dir->path())) {
    std::fprintf(stderr,
                 "converge bench log: warning: %s is on tmpfs; fsync figures are "
                 "meaningless there (use --dir on a real disk)\n",
                 run_dir->path().c_str());
  }
  double load[1] = {0};
  ::getloadavg(load, 1);
  std::fprintf(stderr,
               "converge bench log: %" PRIu64
               " events of %u B, latency at %u/s for %u s, %u round(s); scratch %s; "
               "load average %.2f\n",
               o.workload.events, o.workload.event_bytes, o.workload.rate_per_s,
               o.workload.latency_seconds, o.rounds, run_dir->path().c_str(), load[0]);

  std::vector<Measurement> rows;
  int failures = 0;
  const bool stream_json = o.json && o.rounds == 1;
  for (uint32_t round = 0; round < o.rounds; ++round) {
    if (o.rounds > 1) std::fprintf(stderr, "round %u of %u\n", round + 1, o.rounds);
    // Later rounds rotate the order so no system always runs first or last.
    for (size_t k = 0; k < o.systems.size(); ++k) {
      const std::string& name = o.systems[(k + round) % o.systems.size()];
      if (!RunSystem(name, o, run_dir->path(), stream_json, rows)) ++failures;
    }
  }
  if (o.rounds > 1) {
    rows = MedianOfRounds(rows);
    if (o.json) {
      for (const Measurement& m : rows) std::printf("%s\n", ToJsonLine(m).c_str());
    }
  }

  const std::string comparison = LogComparison(rows, o.via == "server");
  if (o.json) {
    std::fputs(comparison.c_str(), stderr);
  } else {
    std::printf("\n%s%s", FormatTable(rows).c_str(), comparison.c_str());
  }
  ::getloadavg(load, 1);
  std::fprintf(stderr, "load average at the end %.2f\n", load[0]);
  Status removed = run_dir->Remove();
  if (!removed.ok()) std::fprintf(stderr, "converge bench log: %s\n", removed.ToString().c_str());
  return failures == 0 ? 0 : 1;
}

BenchmarkRegistration registration({"log",
                                    "event log: converge vs NATS JetStream, Redis Streams, raw "
                                    "disk (publish, consume + ack, latency)",
                                    RunLog});

}  // namespace
}  // namespace converge::bench
