// The two-phase-commit workload of `converge bench saga`: N clients each run distributed
// transactions inserting one row into each of two PostgreSQL servers (PREPARE TRANSACTION on
// both, the decision synced to the coordinator's log, COMMIT PREPARED on both). Beside it, the
// same inserts committed directly in one database (no 2PC), and the machine's fsync rate.
#include <fcntl.h>
#include <libpq-fe.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "bench/saga_bench.h"
#include "bench/timing.h"
#include "converge/twopc.h"
#include "support/postgres_server.h"

namespace converge::bench {
namespace {

// Single-threaded 4 KiB write + fdatasync for about a second.
Result<Measurement> MeasureFsync(const std::string& dir) {
  const std::string path = dir + "/fsync-probe";
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return InternalError("open " + path);
  std::string block(4096, 'x');
  LatencyRecorder lat(1'000'000);
  const int64_t t0 = NowNanos();
  uint64_t n = 0;
  while (NowNanos() - t0 < 1'000'000'000) {
    const int64_t s = NowNanos();
    if (::write(fd, block.data(), block.size()) != static_cast<ssize_t>(block.size()) ||
        ::fdatasync(fd) != 0) {
      ::close(fd);
      return InternalError("write/fdatasync failed");
    }
    lat.Record(NowNanos() - s);
    ++n;
  }
  const double secs = static_cast<double>(NowNanos() - t0) / 1e9;
  ::close(fd);
  ::unlink(path.c_str());
  Measurement m;
  m.workload = "fsync";
  m.system = "raw";
  m.durability = "fdatasync";
  m.rate_name = "fsyncs_per_s";
  m.events = n;
  m.seconds = secs;
  m.events_per_s = static_cast<double>(n) / secs;
  auto p = lat.Compute();
  m.p50_us = p.p50_us;
  m.p99_us = p.p99_us;
  m.p999_us = p.p999_us;
  m.note = "one 4 KiB write + fdatasync at a time, one thread";
  return m;
}

}  // namespace

Status RunTwoPhaseBench(const SagaBenchOptions& o, std::vector<Measurement>* rows) {
  CONVERGE_ASSIGN_OR_RETURN(testing::TempDir dir, testing::TempDir::Create("converge-2pc-", o.dir));
  std::fprintf(stderr, "  fsync rate...\n");
  CONVERGE_ASSIGN_OR_RETURN(Measurement fsync, MeasureFsync(dir.path()));

  std::fprintf(stderr, "  starting two PostgreSQL servers...\n");
  testing::PostgresServerOptions po;
  po.base_dir = o.dir;
  po.settings = {"max_prepared_transactions=" + std::to_string(o.clients * 2 + 16),
                 "max_connections=" + std::to_string(o.clients * 3 + 20)};
  std::unique_ptr<testing::PostgresServer> pg[2];
  std::unique_ptr<TxParticipant> parts[2];
  for (int i = 0; i < 2; ++i) {
    CONVERGE_ASSIGN_OR_RETURN(pg[i], testing::PostgresServer::Start(po));
    CONVERGE_RETURN_IF_ERROR(pg[i]->CreateDatabase("bench"));
    CONVERGE_RETURN_IF_ERROR(
        pg[i]->Query("bench", "CREATE TABLE t(id BIGINT PRIMARY KEY, v INT)").status());
    PostgresParticipantOptions pp;
    pp.name = i == 0 ? "db1" : "db2";
    pp.conninfo = pg[i]->ConnInfo("bench");
    pp.max_connections = static_cast<uint32_t>(o.clients);
    CONVERGE_ASSIGN_OR_RETURN(parts[i], NewPostgresParticipant(pp));
  }
  TwoPhaseOptions to;
  to.dir = dir.path() + "/coordinator";
  CONVERGE_ASSIGN_OR_RETURN(
      std::unique_ptr<TwoPhaseCoordinator> coord,
      TwoPhaseCoordinator::Open(Env::Default(), to, {parts[0].get(), parts[1].get()}));

  std::fprintf(stderr, "  two-phase commits (%llu clients)...\n",
               static_cast<unsigned long long>(o.clients));
  std::vector<std::vector<int64_t>> lat(o.clients);
  const uint64_t per_client = std::max<uint64_t>(1, o.txns / o.clients);
  std::atomic<uint64_t> aborted{0};
  auto run = [&](auto op) -> Result<Measurement> {
    for (auto& l : lat) {
      l.clear();
      l.reserve(per_client);
    }
    std::mutex mu;
    Status first_error;
    const int64_t t0 = NowNanos();
    std::vector<std::thread> threads;
    for (uint64_t c = 0; c < o.clients; ++c) {
      threads.emplace_back([&, c] {
        for (uint64_t i = 0; i < per_client; ++i) {
          const int64_t s = NowNanos();
          Status st = op(c * per_client + i, c);
          lat[c].push_back(NowNanos() - s);
          if (!st.ok()) {
            std::lock_guard<std::mutex> g(mu);
            if (first_error.ok()) first_error = st;
          }
        }
      });
    }
    for (auto& t : threads) t.join();
    const int64_t t1 = NowNanos();
    if (!first_error.ok()) return first_error;
    LatencyRecorder all(per_client * o.clients);
    for (auto& l : lat) {
      for (int64_t v : l) all.Record(v);
    }
    Measurement m;
    m.events = per_client * o.clients;
    m.seconds = static_cast<double>(t1 - t0) / 1e9;
    m.events_per_s = static_cast<double>(m.events) / m.seconds;
    auto p = all.Compute();
    m.p50_us = p.p50_us;
    m.p99_us = p.p99_us;
    m.p999_us = p.p999_us;
    return m;
  };

  CONVERGE_ASSIGN_OR_RETURN(Measurement twopc, run([&](uint64_t id, uint64_t) -> Status {
                              TwoPhaseBranch a, b;
                              a.participant = parts[0].get();
                              b.participant = parts[1].get();
                              const std::string key = std::to_string(id);
                              a.work = {{"INSERT INTO t(id, v) VALUES($1, 1)", {key}}};
                              b.work = {{"INSERT INTO t(id, v) VALUES($1, -1)", {key}}};
                              std::vector<TwoPhaseBranch> br = {a, b};
                              CONVERGE_ASSIGN_OR_RETURN(TwoPhaseResult r, coord->Execute(br));
                              if (r.outcome != TxOutcome::kCommitted) {
                                aborted.fetch_add(1);
                                return AbortedError(r.reason);
                              }
                              return Status::Ok();
                            }));
  twopc.workload = "twopc";
  twopc.system = "converge+2x postgresql";
  twopc.durability = "fsync (decision log + both servers)";
  twopc.rate_name = "txns_per_s";
  TwoPhaseStats ts = coord->stats();
  char note[200];
  std::snprintf(note, sizeof(note),
                "%llu clients; 1 insert per database; %llu decision-log syncs (%.1f txns/sync)",
                static_cast<unsigned long long>(o.clients),
                static_cast<unsigned long long>(ts.syncs),
                ts.syncs ? static_cast<double>(twopc.events) / static_cast<double>(ts.syncs) : 0);
  twopc.note = note;

  // The same inserts committed in one database, no 2PC, same concurrency.
  std::fprintf(stderr, "  single-database commits (%llu clients)...\n",
               static_cast<unsigned long long>(o.clients));
  std::vector<PGconn*> conns(o.clients, nullptr);
  for (auto& c : conns) {
    c = PQconnectdb(pg[0]->ConnInfo("bench").c_str());
    if (PQstatus(c) != CONNECTION_OK) return UnavailableError("connect to PostgreSQL");
  }
  const uint64_t offset = 1'000'000'000;
  Result<Measurement> plain = run([&](uint64_t id, uint64_t c) -> Status {
    const std::string key = std::to_string(offset + id);
    const char* values[1] = {key.c_str()};
    PGresult* r = PQexecParams(conns[c], "INSERT INTO t(id, v) VALUES($1, 1)", 1, nullptr, values,
                               nullptr, nullptr, 0);
    const bool ok = PQresultStatus(r) == PGRES_COMMAND_OK;
    PQclear(r);
    return ok ? Status::Ok() : InternalError("insert failed");
  });
  for (PGconn* c : conns) PQfinish(c);
  CONVERGE_RETURN_IF_ERROR(plain.status());
  Measurement single = std::move(plain).value();
  single.workload = "commit";
  single.system = "postgresql";
  single.durability = "fsync (synchronous_commit on)";
  single.rate_name = "txns_per_s";
  std::snprintf(note, sizeof(note), "%llu clients; 1 insert, autocommit, one database (no 2PC)",
                static_cast<unsigned long long>(o.clients));
  single.note = note;

  coord.reset();
  parts[0].reset();
  parts[1].reset();
  rows->push_back(std::move(twopc));
  rows->push_back(std::move(single));
  rows->push_back(std::move(fsync));
  return Status::Ok();
}

}  // namespace converge::bench
