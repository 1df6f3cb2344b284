// `converge bench saga`: three-step sagas per second through the orchestrator, with the saga log
// synced per batch (group commit) on the embedded default, commands and replies as events on the
// event log, and three in-process participants; p50/p99/p999 latency from start to completion.
// With --workloads twopc (and PostgreSQL installed): two-phase commits per second across two
// PostgreSQL databases, next to the machine's fsync rate (bench/twopc_bench.cc).
#include "bench/saga_bench.h"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "bench/bench.h"
#include "bench/log_options.h"
#include "bench/report.h"
#include "bench/timing.h"
#include "converge/env.h"
#include "converge/log.h"
#include "converge/saga.h"
#include "core/command_line.h"
#include "env/asio_executor.h"
#include "support/server_process.h"

namespace converge::bench {
namespace {

void PrintHelp(std::FILE* out) {
  std::fputs(
      "Usage: converge bench saga [options]\n"
      "\n"
      "Workloads:\n"
      "  saga    three-step sagas (three participants in this process) started and run to\n"
      "          completion through the orchestrator: saga log synced once per batch (group\n"
      "          commit), commands and replies as CloudEvents on the event log. Rows per\n"
      "          durability of the command/reply topics (the saga log is always synced).\n"
      "  twopc   two-phase commits across two PostgreSQL databases (PREPARE TRANSACTION /\n"
      "          COMMIT PREPARED, decision log synced), and the machine's fsync rate.\n"
      "\n"
      "Options:\n"
      "  --sagas N            sagas to run (default 200000)\n"
      "  --window N           sagas in flight at once (default 2000)\n"
      "  --topics LIST        durability of the command/reply topics: fsync,none (default both)\n"
      "  --txns N             two-phase commits (default 20000)\n"
      "  --clients N          concurrent two-phase commits (default 16)\n"
      "  --workloads LIST     saga,twopc (default saga,twopc)\n"
      "  --json               one JSON object per line on stdout (progress on stderr):\n"
      "                       "
      "{\"workload\",\"system\",\"durability\",\"events_per_s\",\n"
      "                        \"sagas_per_s\"|\"txns_per_s\"|\"fsyncs_per_s\" (the same rate),\n"
      "                        \"p50_us\",\"p99_us\",\"p999_us\",\"events\",\"seconds\",\"note\"}\n"
      "  --dir DIR            scratch directory base (default $TMPDIR or /tmp); a real disk\n"
      "  --help               this text\n",
      out);
}

Result<SagaBenchOptions> Parse(int argc, char** argv) {
  SagaBenchOptions o;
  std::string topics, workloads;
  CLI::App app("Sagas through the orchestrator; two-phase commits.", "converge bench saga");
  cli::Configure(app);
  app.add_flag("--json", o.json);
  for (auto [flag, target] : {std::pair{"--sagas", &o.sagas}, std::pair{"--window", &o.window},
                              std::pair{"--txns", &o.txns}, std::pair{"--clients", &o.clients}}) {
    app.add_option(flag, *target)->check(cli::Integer(1, 100'000'000));
  }
  CLI::Option* topics_option = app.add_option("--topics", topics);
  CLI::Option* workloads_option = app.add_option("--workloads", workloads);
  app.add_option("--dir", o.dir);
  CONVERGE_RETURN_IF_ERROR(cli::Parse(app, argc, argv, &o.help));
  if (o.help) return o;
  if (topics_option->count() > 0) o.topics = SplitList(topics);
  if (workloads_option->count() > 0) o.workloads = SplitList(workloads);
  for (const std::string& t : o.topics) {
    if (t != "fsync" && t != "none" && t != "interval") {
      return InvalidArgumentError("--topics: fsync, interval or none, not '" + t + "'");
    }
  }
  for (const std::string& w : o.workloads) {
    if (w != "saga" && w != "twopc") {
      return InvalidArgumentError("--workloads: saga or twopc, not '" + w + "'");
    }
  }
  return o;
}

// One saga run: a fresh log and orchestrator in `dir`.
Result<Measurement> RunSagas(const SagaBenchOptions& o, const std::string& dir, Durability topics) {
  Env& env = Env::Default();
  converge::LogOptions lo;  // not bench::LogOptions (log_options.h, for SplitList)
  lo.dir = dir + "/log";
  CONVERGE_ASSIGN_OR_RETURN(std::unique_ptr<Log> log, Log::Open(env, lo));
  TopicOptions topic_options;
  topic_options.durability = topics;
  topic_options.dedup_window_ms = 0;  // saga messages carry no log-level ids

  std::unique_ptr<SagaLedger> ledger = NewMemorySagaLedger(env.clock(), 3'600'000, 100'000'000);
  SagaParticipantCore core(*ledger);
  for (const char* t : {"a.do", "b.do", "c.do", "a.undo", "b.undo"}) {
    core.Handle(t, [](const SagaCommand&, std::string*) { return Status::Ok(); });
  }
  // The orchestrator gets a thread of its own; the participants share the Env's.
  internal::AsioExecutor orchestrator_thread;
  internal::AsioExecutor participant_thread;
  std::vector<std::unique_ptr<SagaParticipant>> participants;
  for (const char* topic : {"bench.a", "bench.b", "bench.c"}) {
    SagaParticipantOptions po;
    po.topic = topic;
    po.topic_options = topic_options;
    po.executor = &participant_thread;
    CONVERGE_ASSIGN_OR_RETURN(auto p, SagaParticipant::Start(env, *log, core, po));
    participants.push_back(std::move(p));
  }

  const uint64_t total = o.sagas;
  std::vector<int64_t> started_ns(total, 0);
  LatencyRecorder latency(total);
  std::mutex mu;
  std::condition_variable cv;
  uint64_t finished = 0;
  uint64_t compensated = 0;
  std::atomic<uint64_t> next{0};
  std::atomic<uint64_t> start_errors{0};
  SagaOrchestrator* orch_ptr = nullptr;

  auto start_one = [&](uint64_t i) {
    SagaStartRequest req;
    req.definition = "bench3";
    char id[32];
    std::snprintf(id, sizeof(id), "b%llu", static_cast<unsigned long long>(i));
    req.id = id;
    started_ns[i] = NowNanos();
    orch_ptr->StartAsync(req, [&](Result<std::string> r) {
      if (!r.ok()) start_errors.fetch_add(1);
    });
  };

  SagaOrchestratorOptions oo;
  oo.dir = dir + "/saga";
  oo.reply_topic = "bench.replies";
  oo.topic_options = topic_options;
  oo.executor = &orchestrator_thread;
  oo.finished_retain_max = 10'000;
  oo.history_max_entries = 16;
  oo.max_queued_inputs = static_cast<uint32_t>(std::max<uint64_t>(o.window * 2, 100'000));
  oo.on_finished = [&](const SagaSummary& s) {
    const uint64_t i = std::strtoull(s.id.c_str() + 1, nullptr, 10);
    if (i < total) latency.Record(NowNanos() - started_ns[i]);
    const uint64_t n = next.fetch_add(1);
    if (n < total) start_one(n);  // StartAsync never blocks: safe from the callback
    std::lock_guard<std::mutex> g(mu);
    ++finished;
    if (s.state != SagaState::kCompleted) ++compensated;
    if (finished == total) cv.notify_all();
  };
  CONVERGE_ASSIGN_OR_RETURN(std::unique_ptr<SagaOrchestrator> orch,
                            SagaOrchestrator::Open(env, *log, oo));
  orch_ptr = orch.get();
  CONVERGE_RETURN_IF_ERROR(orch->RegisterDefinition(SagaDefinitionBuilder("bench3", 1)
                                                        .Step("a", "bench.a", "a.do", "a.undo")
                                                        .Timeout(30'000)
                                                        .Step("b", "bench.b", "b.do", "b.undo")
                                                        .Timeout(30'000)
                                                        .Step("c", "bench.c", "c.do")
                                                        .Timeout(30'000)
                                                        .Build()
                                                        .value()));

  const int64_t t0 = NowNanos();
  const uint64_t initial = std::min(o.window, total);
  next.store(initial);
  for (uint64_t i = 0; i < initial; ++i) start_one(i);
  {
    std::unique_lock<std::mutex> lock(mu);
    bool done = false;
    for (int sec = 0; sec < 600 && !done; ++sec) {
      done = cv.wait_for(lock, std::chrono::seconds(1),
                         [&] { return finished + start_errors.load() >= total; });
    }
    if (!done) return DeadlineExceededError("sagas did not finish within 600 s");
  }
  const int64_t t1 = NowNanos();
  SagaOrchestratorStats stats = orch->stats();
  orch->Close();
  for (auto& p : participants) p->Close();
  if (start_errors.load() > 0) {
    return InternalError(std::to_string(start_errors.load()) + " sagas failed to start");
  }

  Measurement m;
  m.workload = "saga3";
  m.system = "converge";
  m.durability = std::string("saga-log fsync, topics ") + std::string(DurabilityName(topics));
  m.rate_name = "sagas_per_s";
  m.seconds = static_cast<double>(t1 - t0) / 1e9;
  m.events = total;
  m.events_per_s = static_cast<double>(total) / m.seconds;
  LatencyRecorder::Percentiles p = latency.Compute();
  m.p50_us = p.p50_us;
  m.p99_us = p.p99_us;
  m.p999_us = p.p999_us;
  char note[256];
  std::snprintf(
      note, sizeof(note),
      "window %llu; %llu batches, %llu syncs (%.1f sagas/sync); %llu compensated; "
      "%llu timeouts, %llu send errors",
      static_cast<unsigned long long>(o.window), static_cast<unsigned long long>(stats.batches),
      static_cast<unsigned long long>(stats.syncs),
      stats.syncs ? static_cast<double>(total) / static_cast<double>(stats.syncs) : 0.0,
      static_cast<unsigned long long>(compensated), static_cast<unsigned long long>(stats.timeouts),
      static_cast<unsigned long long>(stats.send_errors));
  m.note = note;
  return m;
}

int RunSagaBench(int argc, char** argv) {
  Result<SagaBenchOptions> parsed = Parse(argc, argv);
  if (!parsed.ok()) {
    std::fprintf(stderr, "converge bench saga: %s\n(see converge bench saga --help)\n",
                 std::string(parsed.status().message()).c_str());
    return 2;
  }
  const SagaBenchOptions o = std::move(parsed).value();
  if (o.help) {
    PrintHelp(stdout);
    return 0;
  }
  std::vector<Measurement> rows;
  bool ok = true;
  auto emit = [&](Measurement m) {
    if (o.json) {
      std::printf("%s\n", ToJsonLine(m).c_str());
      std::fflush(stdout);
    }
    rows.push_back(std::move(m));
  };
  auto wants = [&](const char* w) {
    for (const std::string& x : o.workloads) {
      if (x == w) return true;
    }
    return false;
  };
  if (wants("saga")) {
    for (const std::string& t : o.topics) {
      Result<testing::TempDir> dir = testing::TempDir::Create("converge-saga-", o.dir);
      if (!dir.ok()) {
        std::fprintf(stderr, "converge bench saga: %s\n", dir.status().ToString().c_str());
        return 1;
      }
      std::fprintf(stderr, "  saga3 (topics %s)...\n", t.c_str());
      Result<Measurement> m = RunSagas(o, dir->path(), ParseDurability(t).value());
      if (!m.ok()) {
        std::fprintf(stderr, "converge bench saga: %s\n", m.status().ToString().c_str());
        ok = false;
        continue;
      }
      emit(std::move(m).value());
    }
  }
  if (wants("twopc")) {
    std::vector<Measurement> tp;
    Status s = RunTwoPhaseBench(o, &tp);
    if (!s.ok()) {
      std::fprintf(stderr, "converge bench saga: twopc: %s\n", s.ToString().c_str());
      ok = false;
    }
    for (Measurement& m : tp) emit(std::move(m));
  }
  if (!o.json) {
    // One table per unit, in order of appearance.
    std::vector<std::string> units;
    for (const Measurement& m : rows) {
      if (std::find(units.begin(), units.end(), m.rate_name) == units.end()) {
        units.push_back(m.rate_name);
      }
    }
    std::vector<Measurement> sagas;
    for (size_t u = 0; u < units.size(); ++u) {
      std::vector<Measurement> group;
      for (const Measurement& m : rows) {
        if (m.rate_name == units[u]) group.push_back(m);
      }
      if (units[u] == "sagas_per_s") sagas = group;
      std::printf("%s%s", u ? "\n" : "", FormatTable(group).c_str());
    }
    for (const Measurement& m : sagas) {
      std::printf(
          "%s (%s): %.0f sagas/s, %s the 20,000 sagas/s target; Dapr workflows ~100/s, "
          "Temporal self-hosted ~200/s (published)\n",
          m.system.c_str(), m.durability.c_str(), m.events_per_s,
          m.events_per_s >= 20'000 ? "PASS" : "MISS");
    }
  }
  return ok ? 0 : 1;
}

BenchmarkRegistration registration(
    {"saga", "sagas/s and p99 through the orchestrator; two-phase commits/s on PostgreSQL",
     RunSagaBench});

}  // namespace
}  // namespace converge::bench
