// `converge bench store`: options, the increment driver and the comparison lines.
#include "bench/store_bench.h"

#include <sys/stat.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <random>
#include <thread>

#include "bench/bench.h"
#include "bench/log_options.h"
#include "bench/timing.h"
#include "core/command_line.h"
#include "support/server_process.h"

namespace converge::bench {
namespace {

constexpr const char* kStoreSystems = "converge,postgres,jetstream-kv,converge-nosync";
constexpr const char* kStoreWorkloads = "hot,spread";
// --backend postgres: the store in PostgreSQL through one and three sidecars, and PostgreSQL
// itself doing the same conditional write.
constexpr const char* kPostgresBackendSystems = "converge-pg,converge-pg-x3,postgres";
constexpr int64_t kWarmupNanos = 1'000'000'000;
constexpr size_t kMaxSamplesPerClient = 1'000'000;

struct StoreOptions {
  StoreWorkload workload;
  std::vector<std::string> systems;
  std::vector<std::string> workloads;
  bool systems_explicit = false;
  bool json = false;
  bool help = false;
  std::string dir;
};

void PrintStoreHelp(std::FILE* out) {
  std::fprintf(
      out,
      "Usage: converge bench store [options]\n"
      "\n"
      "Conditional read-modify-write increments: each client reads a counter with its version\n"
      "and writes it + 1 only if the version is unchanged, re-reading on a conflict. One\n"
      "increment = one successful conditional write. Systems, started by the benchmark on\n"
      "127.0.0.1 in temporary directories:\n"
      "  converge         `converge serve` (the sidecar) over HTTP/1.1 keep-alive: GET, then\n"
      "                   PUT with If-Match; store durability fsync (group commit), every\n"
      "                   write also published to the change feed (event log, fsync)\n"
      "  converge-nosync  the sidecar with store and feed durability none (written to the\n"
      "                   OS, not synced): the like-for-like peer of jetstream-kv\n"
      "  converge-inproc  the same store as a library in this process (no HTTP)\n"
      "  postgres         PostgreSQL 15, SELECT value, version; then UPDATE ... SET value = $2,\n"
      "                   version = version + 1 WHERE key = $1 AND version = $3;\n"
      "                   fsync and synchronous_commit on\n"
      "  converge-pg      `converge serve` with store.backend postgres (the store in a\n"
      "                   PostgreSQL 15 started by the benchmark, synchronous_commit on): GET,\n"
      "                   then PUT with If-Match; the change feed to the sidecar's log\n"
      "  converge-pg-x3   three such sidecars sharing that store, clients spread round-robin\n"
      "  jetstream-kv     nats-server 2.9 JetStream KV (file storage, 1 replica): kvStore_Get,\n"
      "                   then kvStore_Update with the last revision; 2.9 cannot fsync per\n"
      "                   write (it syncs every 2 minutes), a weaker durability than the others\n"
      "\n"
      "Workloads:\n"
      "  hot     every client on the same key (conflicts dominate)\n"
      "  spread  keys chosen uniformly among --keys\n"
      "\n"
      "Options:\n"
      "  --clients N     concurrent clients, one connection each (default 32)\n"
      "  --keys N        keys of the spread workload (default 10000)\n"
      "  --seconds S     measured seconds per workload after 1 s warm-up (default 10)\n"
      "  --systems LIST  comma-separated (default %s)\n"
      "  --workloads L   comma-separated (default %s)\n"
      "  --json          one JSON object per line on stdout, the format of `converge bench log`\n"
      "                  with ops_per_s too: {\"workload\",\"system\",\"durability\",\"events_per_s\",\"ops_per_s\",\n"
      "                  \"p50_us\",\"p99_us\",\"p999_us\",\"events\",\"seconds\",\"note\"}\n"
      "  --dir DIR       where the scratch directory goes (default $TMPDIR or /tmp)\n"
      "  --backend B     embedded (default) or postgres: the store's backend; postgres runs\n"
      "                  converge-pg, converge-pg-x3 and postgres (unless --systems says)\n"
      "  --help          this text\n"
      "\n"
      "After each run the counters are summed: a total different from the increments\n"
      "acknowledged (a lost update) fails the benchmark.\n",
      kStoreSystems, kStoreWorkloads);
}

Result<StoreOptions> ParseStoreOptions(int argc, char** argv) {
  StoreOptions o;
  o.systems = SplitList(kStoreSystems);
  o.workloads = SplitList(kStoreWorkloads);
  std::string systems, workloads;
  CLI::App app("Conditional writes on the shared store and its peers.", "converge bench store");
  cli::Configure(app);
  app.add_flag("--json", o.json);
  app.add_option("--clients", o.workload.clients)->check(cli::Integer(1, 4096));
  app.add_option("--keys", o.workload.keys)->check(cli::Integer(1, 10'000'000));
  app.add_option("--seconds", o.workload.seconds)->check(cli::Integer(1, 3600));
  CLI::Option* systems_option = app.add_option("--systems", systems);
  CLI::Option* workloads_option = app.add_option("--workloads", workloads);
  app.add_option("--dir", o.dir);
  std::string backend = "embedded";
  app.add_option("--backend", backend);
  CONVERGE_RETURN_IF_ERROR(cli::Parse(app, argc, argv, &o.help));
  if (o.help) return o;
  if (backend == "postgres") {
    o.systems = SplitList(kPostgresBackendSystems);
  } else if (backend != "embedded") {
    return InvalidArgumentError("unknown --backend '" + backend + "' (embedded, postgres)");
  }
  if (systems_option->count() > 0) {
    o.systems = SplitList(systems);
    o.systems_explicit = true;
  }
  if (workloads_option->count() > 0) {
    o.workloads = SplitList(workloads);
    for (const std::string& w : o.workloads) {
      if (w != "hot" && w != "spread") {
        return InvalidArgumentError("unknown workload '" + w + "' (hot, spread)");
      }
    }
  }
  if (o.systems.empty() || o.workloads.empty()) {
    return InvalidArgumentError("--systems and --workloads need at least one entry");
  }
  return o;
}

std::unique_ptr<StoreSystem> MakeSystem(const std::string& name) {
  if (name == "converge") return MakeConvergeStoreSystem(/*via_sidecar=*/true);
  if (name == "converge-nosync") {
    return MakeConvergeStoreSystem(/*via_sidecar=*/true, /*synced=*/false);
  }
  if (name == "converge-inproc") return MakeConvergeStoreSystem(/*via_sidecar=*/false);
  if (name == "postgres") return MakePostgresStoreSystem();
  if (name == "converge-pg") return MakeConvergePostgresStoreSystem(1);
  if (name == "converge-pg-x3") return MakeConvergePostgresStoreSystem(3);
  if (name == "jetstream-kv") return MakeJetStreamKvStoreSystem();
  return nullptr;
}

std::vector<std::string> KeyNames(uint32_t n) {
  std::vector<std::string> keys;
  keys.reserve(n + 1);
  keys.push_back("hot");
  for (uint32_t i = 0; i < n; ++i) {
    std::string k = "k";
    k += std::to_string(i);
    keys.push_back(std::move(k));
  }
  return keys;
}

// Per-client results.
struct ClientResult {
  uint64_t increments = 0;  // in the measured window
  uint64_t conflicts = 0;
  uint64_t total_increments = 0;  // warm-up included: what the counters must add up to
  std::vector<int64_t> latency;   // nanoseconds per measured increment
  Status status;
};

std::string Ratio(double a, double b) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.1fx", b > 0 ? a / b : 0.0);
  return buf;
}

// converge (sidecar, else in-process) against each peer, per workload, with the targets.
std::string StoreComparison(const std::vector<Measurement>& rows) {
  std::map<std::string, std::map<std::string, double>> by;  // workload -> system -> ops/s
  for (const Measurement& m : rows) by[m.workload][m.system] = m.events_per_s;
  std::string out;
  for (const auto& [workload, systems] : by) {
    // The targets are for the sidecar under fsync; the other pairs are context.
    struct Pair {
      std::string ours, peer;
      double target;
    };
    for (const Pair& p :
         {Pair{"converge", "postgres", 5.0}, Pair{"converge", "jetstream-kv", 10.0},
          Pair{"converge-pg", "postgres", 0}, Pair{"converge-pg-x3", "postgres", 0},
          Pair{"converge-nosync", "jetstream-kv", 0}, Pair{"converge-inproc", "postgres", 0}}) {
      auto ours = systems.find(p.ours);
      auto it = systems.find(p.peer);
      if (ours == systems.end() || it == systems.end()) continue;
      const std::string& peer = p.peer;
      const double target = p.target;
      const double ratio = it->second > 0 ? ours->second / it->second : 0;
      out += workload + ": " + ours->first + " / " + peer + " = " + Ratio(ours->second, it->second);
      if (workload == "rmw_spread" && target > 0) {
        out += ratio >= target ? " (target >= " : " (MISS: target >= ";
        char t[16];
        std::snprintf(t, sizeof(t), "%.0fx)", target);
        out += t;
      }
      out += "\n";
    }
  }
  return out;
}

bool RunSystem(const std::string& name, const StoreOptions& o, const std::string& run_dir,
               std::vector<Measurement>& rows) {
  std::unique_ptr<StoreSystem> system = MakeSystem(name);
  if (system == nullptr) {
    std::fprintf(stderr, "converge bench store: %s: not available in this binary%s\n", name.c_str(),
                 o.systems_explicit ? "" : " (skipped)");
    return !o.systems_explicit;
  }
  Result<testing::TempDir> dir = testing::TempDir::Create(name + "-", run_dir);
  if (!dir.ok()) {
    std::fprintf(stderr, "converge bench store: %s\n", dir.status().ToString().c_str());
    return false;
  }
  // PostgreSQL runs as the postgres user when this process is root: it must reach its dir.
  ::chmod(dir->path().c_str(), 0755);
  StoreWorkload w = o.workload;
  w.dir = dir->path();
  const std::vector<std::string> keys = KeyNames(w.keys);
  std::fprintf(stderr, "  %-15s start...\n", name.c_str());
  Status status = system->Start(w, keys);
  for (const std::string& workload : o.workloads) {
    if (!status.ok()) break;
    std::fprintf(stderr, "  %-15s %s...\n", name.c_str(), workload.c_str());
    std::vector<Measurement> fresh;
    status = RunIncrements(*system, w, workload, keys, fresh);
    for (Measurement& m : fresh) {
      if (o.json) {
        std::printf("%s\n", ToJsonLine(m).c_str());
        std::fflush(stdout);
      }
      rows.push_back(std::move(m));
    }
  }
  Status stopped = system->Stop();
  if (status.ok()) status = stopped;
  if (!status.ok()) {
    std::fprintf(stderr, "converge bench store: %s failed: %s\n", name.c_str(),
                 status.ToString().c_str());
  }
  system.reset();
  dir->Remove().IgnoreError();
  return status.ok();
}

int RunStore(int argc, char** argv) {
  Result<StoreOptions> parsed = ParseStoreOptions(argc, argv);
  if (!parsed.ok()) {
    std::fprintf(stderr, "converge bench store: %s\n(see converge bench store --help)\n",
                 std::string(parsed.status().message()).c_str());
    return 2;
  }
  const StoreOptions o = std::move(parsed).value();
  if (o.help) {
    PrintStoreHelp(stdout);
    return 0;
  }
  Result<testing::TempDir> run_dir = testing::TempDir::Create("converge-bench-", o.dir);
  if (!run_dir.ok()) {
    std::fprintf(stderr, "converge bench store: %s\n", run_dir.status().ToString().c_str());
    return 1;
  }
  ::chmod(run_dir->path().c_str(), 0755);  // see RunSystem
  double load[1] = {0};
  ::getloadavg(load, 1);
  std::fprintf(stderr,
               "converge bench store: %u clients, %u spread keys, %u s per workload; scratch %s; "
               "load average %.2f\n",
               o.workload.clients, o.workload.keys, o.workload.seconds, run_dir->path().c_str(),
               load[0]);
  std::vector<Measurement> rows;
  int failures = 0;
  for (const std::string& name : o.systems) {
    if (!RunSystem(name, o, run_dir->path(), rows)) ++failures;
  }
  const std::string comparison = StoreComparison(rows);
  if (o.json) {
    std::fputs(comparison.c_str(), stderr);
  } else {
    std::printf("\n%s%s", FormatTable(rows).c_str(), comparison.c_str());
  }
  return failures == 0 ? 0 : 1;
}

BenchmarkRegistration registration(
    {"store", "conditional read-modify-write: store vs PostgreSQL vs JetStream KV", RunStore});

}  // namespace

Status RunIncrements(StoreSystem& system, const StoreWorkload& w, const std::string& workload,
                     const std::vector<std::string>& keys, std::vector<Measurement>& out) {
  const bool hot = workload == "hot";
  // Sessions first (connections are not part of the measurement).
  std::vector<std::unique_ptr<StoreSession>> sessions;
  for (uint32_t c = 0; c < w.clients; ++c) {
    CONVERGE_ASSIGN_OR_RETURN(std::unique_ptr<StoreSession> s, system.NewSession());
    sessions.push_back(std::move(s));
  }
  // Counter totals before the run, to check the increments afterwards.
  auto sum_counters = [&](int64_t* sum) -> Status {
    *sum = 0;
    const size_t n = hot ? 1 : keys.size();
    for (size_t i = 0; i < n; ++i) {
      const std::string& key = hot ? keys[0] : keys[i];
      int64_t v = 0;
      std::string version;
      CONVERGE_RETURN_IF_ERROR(sessions[0]->Read(key, &v, &version));
      *sum += v;
    }
    return Status::Ok();
  };
  int64_t before = 0;
  CONVERGE_RETURN_IF_ERROR(sum_counters(&before));

  std::vector<ClientResult> results(w.clients);
  std::atomic<int64_t> measure_from{0};
  std::atomic<int64_t> measure_until{0};
  std::atomic<bool> stop{false};
  std::vector<std::thread> threads;
  for (uint32_t c = 0; c < w.clients; ++c) {
    threads.emplace_back([&, c] {
      ClientResult& r = results[c];
      r.latency.reserve(1 << 16);
      StoreSession& s = *sessions[c];
      std::mt19937_64 rng(w.seed * 1'000'003 + c);
      std::uniform_int_distribution<size_t> pick(1, keys.size() - 1);
      int64_t value = 0;
      std::string version;
      while (!stop.load(std::memory_order_relaxed)) {
        const std::string& key = hot ? keys[0] : keys[pick(rng)];
        const int64_t start = NowNanos();
        bool done = false;
        while (!done) {
          Status st = s.Read(key, &value, &version);
          if (st.ok()) st = s.Write(key, value + 1, version);
          if (st.ok()) {
            done = true;
            break;
          }
          if (st.code() != StatusCode::kAborted) {
            r.status = st;
            stop.store(true);
            return;
          }
          const int64_t now = NowNanos();
          if (now >= measure_from.load() && now < measure_until.load()) ++r.conflicts;
          if (stop.load(std::memory_order_relaxed)) break;
        }
        if (!done) break;
        const int64_t end = NowNanos();
        ++r.total_increments;
        if (start >= measure_from.load() && end <= measure_until.load()) {
          ++r.increments;
          if (r.latency.size() < kMaxSamplesPerClient) r.latency.push_back(end - start);
        }
      }
    });
  }
  const int64_t t0 = NowNanos();
  measure_from.store(t0 + kWarmupNanos);
  measure_until.store(t0 + kWarmupNanos + static_cast<int64_t>(w.seconds) * 1'000'000'000);
  SleepUntilNanos(measure_until.load());
  stop.store(true);
  for (auto& t : threads) t.join();

  uint64_t increments = 0, conflicts = 0, total = 0;
  for (ClientResult& r : results) {
    if (!r.status.ok()) return r.status;
    increments += r.increments;
    conflicts += r.conflicts;
    total += r.total_increments;
  }
  int64_t after = 0;
  CONVERGE_RETURN_IF_ERROR(sum_counters(&after));
  if (after - before != static_cast<int64_t>(total)) {
    return InternalError(system.name() + ": LOST UPDATE: counters grew by " +
                         std::to_string(after - before) + " but " + std::to_string(total) +
                         " increments were acknowledged");
  }
  Measurement m;
  m.workload = hot ? "rmw_hot" : "rmw_spread";
  m.system = system.name();
  m.durability = system.durability();
  m.rate_name = "ops_per_s";
  m.events = increments;
  m.seconds = static_cast<double>(w.seconds);
  m.events_per_s = static_cast<double>(increments) / m.seconds;
  LatencyRecorder merged(kMaxSamplesPerClient * w.clients);
  for (ClientResult& r : results) {
    for (int64_t ns : r.latency) merged.Record(ns);
  }
  const LatencyRecorder::Percentiles p = merged.Compute();
  m.p50_us = p.p50_us;
  m.p99_us = p.p99_us;
  m.p999_us = p.p999_us;
  char note[256];
  std::snprintf(note, sizeof(note), "%u clients, %s, %" PRIu64 " conflicts (%.1f%%); %s", w.clients,
                hot ? "1 key" : (std::to_string(w.keys) + " keys").c_str(), conflicts,
                increments + conflicts > 0 ? 100.0 * conflicts / (increments + conflicts) : 0.0,
                system.note().c_str());
  m.note = note;
  out.push_back(std::move(m));
  return Status::Ok();
}

}  // namespace converge::bench
