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

std::unique_ptr<LogSystem> MakeSystem(const std::string& name) {
  if (name == "converge") return MakeConvergeSystem();
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
  const bool want_publish = Contains(o.workloads, "publish");
  const bool want_consume = Contains(o.workloads, "consume_ack");
  const bool want_latency = Contains(o.workloads, "latency");

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
               " events of %u B, latency at %u/s for %u s; "
               "scratch %s; load average %.2f\n",
               o.workload.events, o.workload.event_bytes, o.workload.rate_per_s,
               o.workload.latency_seconds, run_dir->path().c_str(), load[0]);

  std::vector<Measurement> rows;
  int failures = 0;
  auto emit = [&](std::vector<Measurement>& fresh, bool keep) {
    for (Measurement& m : fresh) {
      if (!keep) continue;
      if (o.json) {
        std::printf("%s\n", ToJsonLine(m).c_str());
        std::fflush(stdout);
      }
      rows.push_back(std::move(m));
    }
    fresh.clear();
  };

  for (const std::string& name : o.systems) {
    std::unique_ptr<LogSystem> system = MakeSystem(name);
    if (system == nullptr) {
      // Only converge can be missing: the binary was built before the log landed.
      std::fprintf(stderr, "converge bench log: %s: not built into this binary yet%s\n",
                   name.c_str(), o.systems_explicit ? "" : " (skipped)");
      if (o.systems_explicit) ++failures;
      continue;
    }
    Result<testing::TempDir> dir = testing::TempDir::Create(name + "-", run_dir->path());
    if (!dir.ok()) {
      std::fprintf(stderr, "converge bench log: %s\n", dir.status().ToString().c_str());
      return 1;
    }
    LogWorkload w = o.workload;
    w.dir = dir->path();
    std::vector<Measurement> fresh;
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
      emit(fresh, want_publish);
    }
    if (status.ok() && want_consume && system->has_consume()) {
      step("consume + ack");
      status = system->ConsumeAck(w, fresh);
      emit(fresh, true);
    }
    if (status.ok() && want_latency && system->has_latency()) {
      step("latency");
      status = system->Latency(w, fresh);
      emit(fresh, true);
    }
    Status stopped = system->Stop();
    if (status.ok()) status = stopped;
    if (!status.ok()) {
      std::fprintf(stderr, "converge bench log: %s failed: %s\n", name.c_str(),
                   status.ToString().c_str());
      ++failures;
    }
    system.reset();
    Status removed = dir->Remove();
    if (!removed.ok()) std::fprintf(stderr, "converge bench log: %s\n", removed.ToString().c_str());
  }

  const std::string comparison = LogComparison(rows);
  if (o.json) {
    std::fputs(comparison.c_str(), stderr);
  } else {
    std::printf("\n%s%s", FormatTable(rows).c_str(), comparison.c_str());
  }
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
