// `converge bench replica`: applying change events from a log topic into a SQL table.
//
//   apply      a topic prefilled with --changes change events (upserts and deletes over --keys
//              keys) is applied by the replica applier into a SQLite table (converge-sqlite) and
//              a PostgreSQL table (converge-postgres), batched and version-gated with the
//              position in the same transaction; beside them the consumer teams write today
//              (hand-written-postgres): fetch from a consumer group, one upsert per event in
//              its own transaction, ack the fetched batch. converge-remote-sqlite: a
//              collection of another converge serve node (started here, --remote-changes writes
//              through its API) pulled over the sidecar channel into SQLite.
//   multi-writer  two converge serve nodes write the same --mw-keys keys of a multi-writer
//              collection (policy lww) while cut off from each other (each started alone),
//              then run together: the merge rate is the states both nodes merged from the other
//              over the time until both are done (converge-multi-writer); its p50/p99 are the
//              staleness of single writes afterwards (a write acknowledged on one node to its
//              merged value read on the other, each node pulling every 10 ms).
//   staleness  a producer appends change events at --rate per second for --seconds; the
//              applier follows; per change, the time from its source commit (before its
//              append) to the commit of the target transaction that applied it.
// Every server is started by the benchmark (PostgreSQL: fsync and synchronous_commit on).
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "bench/bench.h"
#include "bench/report.h"
#include "bench/sidecar_process.h"
#include "bench/timing.h"
#include "converge/client.h"
#include "converge/consumer_group.h"
#include "converge/env.h"
#include "converge/event.h"
#include "converge/log.h"
#include "converge/replica.h"
#include "converge/sql.h"
#include "core/command_line.h"
#include "server/remote_source.h"
#include "support/postgres_server.h"
#include "support/server_process.h"

namespace converge::bench {
namespace {

constexpr char kSystems[] =
    "converge-sqlite,converge-postgres,hand-written-postgres,converge-remote-sqlite,"
    "converge-multi-writer";

struct Options {
  bool help = false;
  bool json = false;
  uint64_t changes = 200'000;
  uint64_t hand_written_changes = 5000;
  uint64_t remote_changes = 50'000;
  uint64_t mw_keys = 2000;
  uint64_t mw_samples = 200;
  uint64_t keys = 10'000;
  uint64_t batch = 10000;
  uint64_t rate = 10'000;
  uint64_t seconds = 5;
  std::vector<std::string> systems;
  bool staleness = true;
  std::string dir;
};

std::vector<std::string> Split(const std::string& s) {
  std::vector<std::string> out;
  size_t start = 0;
  while (start <= s.size()) {
    const size_t comma = s.find(',', start);
    const std::string part =
        s.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
    if (!part.empty()) out.push_back(part);
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  return out;
}

// The record of change `i`: key i % keys, version i + 1, every tenth a delete.
std::string ChangeRecord(uint64_t i, uint64_t keys, int64_t commit_micros) {
  replica::Change c;
  c.key = "customer-" + std::to_string(i % keys);
  c.version = i + 1;
  c.kind = i % 10 == 9 ? replica::ChangeKind::kDelete : replica::ChangeKind::kUpsert;
  if (c.kind == replica::ChangeKind::kUpsert) {
    c.document = "{\"id\":" + std::to_string(i % keys) + ",\"name\":\"customer " +
                 std::to_string(i % keys) +
                 "\",\"tier\":\"gold\",\"balance\":" + std::to_string(i) + "}";
  }
  c.commit_time_micros = commit_micros;
  Result<Event> e = replica::MakeChangeEvent(c, "/bench/customers");
  CONVERGE_CHECK(e.ok());
  std::string out;
  CONVERGE_CHECK(EncodeBinary(*e, &out).ok());
  return out;
}

Status Prefill(Log& log, const std::string& topic, uint64_t n, uint64_t keys) {
  TopicOptions t;
  t.durability = Durability::kNone;
  CONVERGE_RETURN_IF_ERROR(log.CreateTopic(topic, t));
  const int64_t now = Env::Default().clock().NowWallMicros();
  for (uint64_t i = 0; i < n;) {
    std::vector<std::string> values;
    std::vector<std::string> keys_of;
    for (uint64_t j = 0; j < 1000 && i < n; ++j, ++i) {
      values.push_back(ChangeRecord(i, keys, now));
      keys_of.push_back("customer-" + std::to_string(i % keys));
    }
    std::vector<RecordView> views;
    for (size_t j = 0; j < values.size(); ++j) views.push_back({"", keys_of[j], values[j], 0});
    CONVERGE_RETURN_IF_ERROR(log.Append(topic, views).status());
  }
  return log.Sync();
}

struct Bench {
  Options o;
  std::string dir;
  std::unique_ptr<testing::PostgresServer> pg;
  int databases = 0;

  Result<std::unique_ptr<sql::Database>> NewDatabase(bool postgres, std::string* where,
                                                     const std::string& synchronous = "full") {
    if (!postgres) {
      sql::SqliteOptions so;
      so.path = dir + "/target-" + std::to_string(++databases) + ".db";
      so.synchronous = synchronous;
      *where = so.path;
      return sql::Database::OpenSqlite(so);
    }
    if (pg == nullptr) {
      std::fprintf(stderr, "  starting PostgreSQL...\n");
      testing::PostgresServerOptions po;
      po.base_dir = dir;
      CONVERGE_ASSIGN_OR_RETURN(pg, testing::PostgresServer::Start(po));
    }
    const std::string name = "target" + std::to_string(++databases);
    CONVERGE_RETURN_IF_ERROR(pg->CreateDatabase(name));
    sql::PostgresOptions po;
    po.conninfo = pg->ConnInfo(name);
    *where = po.conninfo;
    return sql::Database::ConnectPostgres(po);
  }

  // The replica of the "customers" topic into the table "customers" of `db`, as every row uses.
  struct Replica {
    std::unique_ptr<replica::Target> target;
    std::unique_ptr<replica::Source> source;
    std::unique_ptr<replica::Applier> applier;
  };
  Result<Replica> OpenReplica(Log& log, sql::Database& db) {
    Replica r;
    CONVERGE_ASSIGN_OR_RETURN(r.target,
                              replica::NewSqlTarget(db, {"bench", "customers", "customers"}));
    r.source = replica::NewLogSource(log, "customers");
    replica::ApplierOptions ao;
    ao.name = "bench";
    ao.max_batch = o.batch;
    ao.tombstone_retention_ms = 0;
    CONVERGE_ASSIGN_OR_RETURN(r.applier,
                              replica::Applier::Open(Env::Default(), *r.source, *r.target, ao));
    return r;
  }

  // converge-remote-sqlite: the changes of a collection of another `converge serve` node (a
  // sidecar started here, its store filled through the API), pulled over the sidecar channel
  // (GET /v1/collections/{c}/changes, docs/formats/replica.md "Remote sources") by the remote
  // source and applied into SQLite as above.
  Result<Measurement> RemoteApply() {
    const std::string name = "converge-remote-sqlite";
    const std::string config_path = dir + "/remote-node.yaml";
    if (FILE* f = std::fopen(config_path.c_str(), "w")) {
      std::fputs("store: {enabled: true}\n", f);
      std::fclose(f);
    } else {
      return InternalError("cannot write " + config_path);
    }
    std::fprintf(stderr, "  %s: starting the source node, writing %llu changes...\n", name.c_str(),
                 static_cast<unsigned long long>(o.remote_changes));
    CONVERGE_ASSIGN_OR_RETURN(
        std::unique_ptr<testing::ServerProcess> node,
        StartSidecar(config_path, dir + "/remote-node", dir + "/remote-node.log"));
    client::Options co;
    co.port = node->port();
    client::Client http(co);
    auto call = [&http](const std::string& method, const std::string& target,
                        std::string body) -> Status {
      client::HttpRequest req;
      req.method = method;
      req.target = target;
      req.body = std::move(body);
      req.headers.push_back({"Content-Type", "application/json"});
      CONVERGE_ASSIGN_OR_RETURN(client::HttpResponse res, http.Send(req));
      if (res.status / 100 != 2) {
        return InternalError(method + " " + target + ": HTTP " + std::to_string(res.status) + ": " +
                             res.body.substr(0, 200));
      }
      return Status::Ok();
    };
    CONVERGE_RETURN_IF_ERROR(call("PUT", "/v1/collections/customers", R"({"owner":"bench"})"));
    // Transactions of 500 puts of distinct keys (the store's bound is 1000 ops).
    const uint64_t per_tx = std::min<uint64_t>(500, o.keys);
    for (uint64_t i = 0; i < o.remote_changes; i += per_tx) {
      std::string body = "{\"ops\":[";
      for (uint64_t j = i; j < std::min(o.remote_changes, i + per_tx); ++j) {
        if (j > i) body += ",";
        body += "{\"op\":\"put\",\"collection\":\"customers\",\"key\":\"k" +
                std::to_string(j % o.keys) + "\",\"value\":{\"n\":" + std::to_string(j) +
                ",\"name\":\"customer\"}}";
      }
      body += "]}";
      CONVERGE_RETURN_IF_ERROR(call("POST", "/v1/collections/_transaction", std::move(body)));
    }
    std::string where;
    CONVERGE_ASSIGN_OR_RETURN(std::unique_ptr<sql::Database> db, NewDatabase(false, &where));
    CONVERGE_ASSIGN_OR_RETURN(std::unique_ptr<replica::Target> target,
                              replica::NewSqlTarget(*db, {"bench", "customers", "store-changes"}));
    server::RemoteSourceOptions ro;
    ro.url = "http://127.0.0.1:" + std::to_string(node->port());
    ro.collection = "customers";
    ro.wait_ms = 0;  // caught up = done
    CONVERGE_ASSIGN_OR_RETURN(std::unique_ptr<replica::Source> source,
                              server::NewRemoteSource(Env::Default(), ro));
    replica::ApplierOptions ao;
    ao.name = "bench";
    ao.collection = "customers";
    ao.max_batch = o.batch;
    ao.tombstone_retention_ms = 0;
    CONVERGE_ASSIGN_OR_RETURN(std::unique_ptr<replica::Applier> applier,
                              replica::Applier::Open(Env::Default(), *source, *target, ao));
    std::fprintf(stderr, "  %s: pulling and applying...\n", name.c_str());
    LatencyRecorder batches(1'000'000);
    const int64_t t0 = NowNanos();
    uint64_t commitseq = 0;
    while (true) {
      const int64_t s = NowNanos();
      CONVERGE_ASSIGN_OR_RETURN(size_t n, applier->Step());
      if (n == 0) {
        // The feed follows the store's commits closely, not at once.
        const replica::ReplicaStats st = applier->Stats();
        if (st.applied + st.superseded >= o.remote_changes) break;
        if (NowNanos() - t0 > 300'000'000'000LL) {
          return InternalError(name + ": applied " + std::to_string(st.applied) + " of " +
                               std::to_string(o.remote_changes) + " in 300 s");
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
        continue;
      }
      batches.Record(NowNanos() - s);
    }
    const double secs = static_cast<double>(NowNanos() - t0) / 1e9;
    const replica::ReplicaStats st = applier->Stats();
    commitseq = st.positions.empty() ? 0 : st.positions[0].commitseq;
    Measurement m = ApplyRow(name, "synchronous=full", o.remote_changes, secs, batches);
    char note[256];
    std::snprintf(note, sizeof(note),
                  "pulled over HTTP from another node's store; latency per batch of up to %llu "
                  "(one request and one transaction with the position); up to commitseq %llu",
                  static_cast<unsigned long long>(o.batch),
                  static_cast<unsigned long long>(commitseq));
    m.note = note;
    return m;
  }

  // converge-multi-writer: see the file comment.
  Result<Measurement> MultiWriterMerge() {
    const std::string name = "converge-multi-writer";
    char buf[4096];
    const ssize_t len = ::readlink("/proc/self/exe", buf, sizeof(buf) - 1);
    if (len <= 0) return InternalError("cannot find this executable (/proc/self/exe)");
    std::string exe(buf, static_cast<size_t>(len));
    exe = exe.substr(0, exe.rfind('/') + 1) + "converge";
    if (const char* other = std::getenv("CONVERGE_BENCH_SERVE_BINARY");
        other != nullptr && *other) {
      exe = other;
    }
    uint16_t port[2];
    for (int i = 0; i < 2; ++i) {
      CONVERGE_ASSIGN_OR_RETURN(port[i], testing::FreeLoopbackPort());
    }
    if (port[0] == port[1]) return UnavailableError("the same free port twice; run again");
    std::string config[2];
    for (int i = 0; i < 2; ++i) {
      config[i] = dir + "/mw-node" + std::to_string(i + 1) + ".yaml";
      FILE* f = std::fopen(config[i].c_str(), "w");
      if (f == nullptr) return InternalError("cannot write " + config[i]);
      std::fprintf(f,
                   "store: {enabled: true}\n"
                   "multi_writer:\n"
                   "  - collection: carts\n"
                   "    node_id: %d\n"
                   "    policy: lww\n"
                   "    poll_interval_ms: 10\n"
                   "    peers: [{node_id: %d, url: 'http://127.0.0.1:%u'}]\n",
                   i + 1, 2 - i, static_cast<unsigned>(port[1 - i]));
      std::fclose(f);
    }
    auto start = [&](int i) -> Result<std::unique_ptr<testing::ServerProcess>> {
      testing::ServerSpec spec;
      spec.name = "converge serve";
      spec.argv = {exe,        "serve",   "--listen",   "127.0.0.1:" + std::to_string(port[i]),
                   "--config", config[i], "--data-dir", dir + "/mw-node" + std::to_string(i + 1)};
      spec.port = port[i];
      spec.log_path = dir + "/mw-node" + std::to_string(i + 1) + ".log";
      return testing::ServerProcess::Start(spec);
    };
    auto send = [](client::Client& http, const std::string& method, const std::string& target,
                   std::string body) -> Result<client::HttpResponse> {
      client::HttpRequest req;
      req.method = method;
      req.target = target;
      req.body = std::move(body);
      if (!req.body.empty()) req.headers.push_back({"Content-Type", "application/json"});
      CONVERGE_ASSIGN_OR_RETURN(client::HttpResponse res, http.Send(req));
      if (res.status / 100 != 2 && res.status != 404) {
        return InternalError(method + " " + target + ": HTTP " + std::to_string(res.status) + ": " +
                             res.body.substr(0, 200));
      }
      return res;
    };
    auto client_for = [&](int i) {
      client::Options co;
      co.port = port[i];
      return std::make_unique<client::Client>(co);
    };
    // Cut off from each other: each node alone writes every key.
    for (int i = 0; i < 2; ++i) {
      std::fprintf(stderr, "  %s: node %d alone writes %llu keys...\n", name.c_str(), i + 1,
                   static_cast<unsigned long long>(o.mw_keys));
      CONVERGE_ASSIGN_OR_RETURN(std::unique_ptr<testing::ServerProcess> node, start(i));
      auto http = client_for(i);
      for (uint64_t k = 0; k < o.mw_keys; ++k) {
        CONVERGE_RETURN_IF_ERROR(
            send(*http, "PUT", "/v1/multi-writer/carts/docs/k" + std::to_string(k),
                 "{\"node\":" + std::to_string(i + 1) + ",\"k\":" + std::to_string(k) + "}")
                .status());
      }
      CONVERGE_RETURN_IF_ERROR(node->Stop());
    }
    std::fprintf(stderr, "  %s: both nodes up, merging...\n", name.c_str());
    std::unique_ptr<testing::ServerProcess> nodes[2];
    std::unique_ptr<client::Client> http[2];
    const int64_t t0 = NowNanos();
    for (int i = 0; i < 2; ++i) {
      CONVERGE_ASSIGN_OR_RETURN(nodes[i], start(i));
      http[i] = client_for(i);
    }
    auto merged = [&](int i) -> Result<double> {
      CONVERGE_ASSIGN_OR_RETURN(client::HttpResponse r, send(*http[i], "GET", "/metrics", ""));
      const std::string series = "converge_multi_writer_merged_total{collection=\"carts\"} ";
      const size_t at = r.body.find("\n" + series);
      return at == std::string::npos ? 0.0 : std::stod(r.body.substr(at + 1 + series.size()));
    };
    while (true) {
      CONVERGE_ASSIGN_OR_RETURN(double m0, merged(0));
      CONVERGE_ASSIGN_OR_RETURN(double m1, merged(1));
      if (m0 >= static_cast<double>(o.mw_keys) && m1 >= static_cast<double>(o.mw_keys)) break;
      if (NowNanos() - t0 > 300'000'000'000LL) return InternalError(name + ": not merged in 300 s");
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    const double secs = static_cast<double>(NowNanos() - t0) / 1e9;
    // Staleness of single writes: acknowledged on node 1, then read on node 2 until merged.
    LatencyRecorder stale(o.mw_samples + 1);
    for (uint64_t n = 0; n < o.mw_samples; ++n) {
      const std::string doc = "{\"n\":" + std::to_string(n) + "}";
      CONVERGE_RETURN_IF_ERROR(
          send(*http[0], "PUT", "/v1/multi-writer/carts/docs/probe", doc).status());
      const int64_t s = NowNanos();
      while (true) {
        CONVERGE_ASSIGN_OR_RETURN(client::HttpResponse r,
                                  send(*http[1], "GET", "/v1/collections/carts/docs/probe", ""));
        if (r.status == 200 && r.body == doc) break;
        if (NowNanos() - s > 10'000'000'000LL) return InternalError(name + ": probe not merged");
      }
      stale.Record(NowNanos() - s);
    }
    Measurement m;
    m.workload = "merge";
    m.system = name;
    m.durability = "fsync";
    m.rate_name = "changes_per_s";
    m.events = 2 * o.mw_keys;
    m.seconds = secs;
    m.events_per_s = static_cast<double>(m.events) / secs;
    auto p = stale.Compute();
    m.p50_us = p.p50_us;
    m.p99_us = p.p99_us;
    m.p999_us = p.p999_us;
    char note[320];
    std::snprintf(note, sizeof(note),
                  "policy lww; %llu keys written on both nodes while apart, merged both ways "
                  "(time includes starting the two nodes); p50/p99: a write on node 1 to its "
                  "value read on node 2 (%llu samples, pulls every 10 ms)",
                  static_cast<unsigned long long>(o.mw_keys),
                  static_cast<unsigned long long>(o.mw_samples));
    m.note = note;
    return m;
  }

  // An "apply" row: `events` changes applied in `secs`, latency per batch.
  static Measurement ApplyRow(const std::string& system, const std::string& durability,
                              uint64_t events, double secs, LatencyRecorder& batches) {
    Measurement m;
    m.workload = "apply";
    m.system = system;
    m.durability = durability;
    m.rate_name = "changes_per_s";
    m.events = events;
    m.seconds = secs;
    m.events_per_s = static_cast<double>(events) / secs;
    auto p = batches.Compute();
    m.p50_us = p.p50_us;
    m.p99_us = p.p99_us;
    m.p999_us = p.p999_us;
    return m;
  }

  Result<Measurement> Apply(bool postgres) {
    const std::string name = postgres ? "converge-postgres" : "converge-sqlite";
    std::fprintf(stderr, "  %s: prefilling %llu changes...\n", name.c_str(),
                 static_cast<unsigned long long>(o.changes));
    LogOptions lo;
    lo.dir = dir + "/log-" + name;
    CONVERGE_ASSIGN_OR_RETURN(std::unique_ptr<Log> log, Log::Open(Env::Default(), lo));
    CONVERGE_RETURN_IF_ERROR(Prefill(*log, "customers", o.changes, o.keys));
    std::string where;
    CONVERGE_ASSIGN_OR_RETURN(std::unique_ptr<sql::Database> db, NewDatabase(postgres, &where));
    CONVERGE_ASSIGN_OR_RETURN(Replica copy, OpenReplica(*log, *db));
    replica::Applier* applier = copy.applier.get();
    std::fprintf(stderr, "  %s: applying...\n", name.c_str());
    LatencyRecorder batches(1'000'000);
    const int64_t t0 = NowNanos();
    while (true) {
      const int64_t s = NowNanos();
      CONVERGE_ASSIGN_OR_RETURN(size_t n, applier->Step());
      if (n == 0) break;
      batches.Record(NowNanos() - s);
    }
    const double secs = static_cast<double>(NowNanos() - t0) / 1e9;
    const replica::ReplicaStats st = applier->Stats();
    if (st.positions[0].next_offset != o.changes) {
      return InternalError(name + ": applied up to " + std::to_string(st.positions[0].next_offset) +
                           " of " + std::to_string(o.changes));
    }
    Measurement m = ApplyRow(name, postgres ? "synchronous_commit=on" : "synchronous=full",
                             o.changes, secs, batches);
    char note[256];
    std::snprintf(note, sizeof(note),
                  "latency per batch of %llu (one transaction with the position); %llu keys, "
                  "%llu applied, %llu superseded in their batch",
                  static_cast<unsigned long long>(o.batch), static_cast<unsigned long long>(o.keys),
                  static_cast<unsigned long long>(st.applied),
                  static_cast<unsigned long long>(st.superseded));
    m.note = note;
    return m;
  }

  // The consumer a team writes by hand: a consumer group, one upsert transaction per event.
  Result<Measurement> HandWritten() {
    const std::string name = "hand-written-postgres";
    const uint64_t n = o.hand_written_changes;
    std::fprintf(stderr, "  %s: prefilling %llu changes...\n", name.c_str(),
                 static_cast<unsigned long long>(n));
    LogOptions lo;
    lo.dir = dir + "/log-" + name;
    CONVERGE_ASSIGN_OR_RETURN(std::unique_ptr<Log> log, Log::Open(Env::Default(), lo));
    CONVERGE_RETURN_IF_ERROR(Prefill(*log, "customers", n, o.keys));
    ConsumerGroupsOptions go;
    go.dir = dir + "/groups-" + name;
    CONVERGE_ASSIGN_OR_RETURN(std::unique_ptr<ConsumerGroups> groups,
                              ConsumerGroups::Open(Env::Default(), *log, go));
    CONVERGE_RETURN_IF_ERROR(groups->CreateGroup("customers", "copy", GroupOptions{}));
    CONVERGE_RETURN_IF_ERROR(groups->Join("customers", "copy", "m1").status());
    std::string where;
    CONVERGE_ASSIGN_OR_RETURN(std::unique_ptr<sql::Database> db, NewDatabase(true, &where));
    CONVERGE_RETURN_IF_ERROR(db->ExecuteScript(
        "CREATE TABLE customers (key TEXT PRIMARY KEY, version BIGINT NOT NULL, document TEXT, "
        "deleted BOOLEAN NOT NULL)"));
    std::fprintf(stderr, "  %s: applying...\n", name.c_str());
    LatencyRecorder each(n + 1);
    uint64_t done = 0;
    const int64_t t0 = NowNanos();
    while (done < n) {
      CONVERGE_ASSIGN_OR_RETURN(FetchResult f,
                                groups->Fetch("customers", "copy", "m1", 100, 1 << 20));
      if (f.deliveries.empty()) continue;
      std::vector<LeaseRef> leases;
      for (const Delivery& d : f.deliveries) {
        const int64_t s = NowNanos();
        CONVERGE_ASSIGN_OR_RETURN(replica::Change c,
                                  replica::ParseChangeRecord(d.value, d.timestamp_micros));
        const bool del = c.kind == replica::ChangeKind::kDelete;
        const sql::Value p[] = {sql::Value::Text(c.key),
                                sql::Value::Int(static_cast<int64_t>(c.version)),
                                del ? sql::Value::Null() : sql::Value::Text(c.document),
                                sql::Value::Text(del ? "t" : "f")};
        CONVERGE_RETURN_IF_ERROR(db->Transact([&](sql::Transaction& tx) {
          return tx
              .Execute(
                  "INSERT INTO customers (key, version, document, deleted) VALUES "
                  "($1, $2, $3, $4) ON CONFLICT (key) DO UPDATE SET version = "
                  "excluded.version, document = excluded.document, deleted = "
                  "excluded.deleted",
                  p)
              .status();
        }));
        each.Record(NowNanos() - s);
        leases.push_back(d.lease());
      }
      CONVERGE_RETURN_IF_ERROR(groups->AckBatch("customers", "copy", "m1", leases).status());
      done += leases.size();
    }
    const double secs = static_cast<double>(NowNanos() - t0) / 1e9;
    Measurement m;
    m.workload = "apply";
    m.system = name;
    m.durability = "synchronous_commit=on";
    m.rate_name = "changes_per_s";
    m.events = n;
    m.seconds = secs;
    m.events_per_s = static_cast<double>(n) / secs;
    auto p = each.Compute();
    m.p50_us = p.p50_us;
    m.p99_us = p.p99_us;
    m.p999_us = p.p999_us;
    m.note =
        "consumer group fetch of 100, one upsert transaction per event, one ack per fetch "
        "(latency per event)";
    return m;
  }

  // A producer at o.rate changes/s and the applier following it.
  // `synchronous`: SQLite's setting ("full": fsync per commit; "normal": WAL synced at
  // checkpoints, survives a process crash but not a power loss).
  Result<Measurement> Staleness(bool postgres, const std::string& synchronous = "full") {
    const std::string name = postgres ? "converge-postgres" : "converge-sqlite";
    std::fprintf(stderr, "  %s: staleness at %llu changes/s for %llu s...\n", name.c_str(),
                 static_cast<unsigned long long>(o.rate),
                 static_cast<unsigned long long>(o.seconds));
    LogOptions lo;
    lo.dir = dir + "/log-staleness-" + name + "-" + synchronous;
    CONVERGE_ASSIGN_OR_RETURN(std::unique_ptr<Log> log, Log::Open(Env::Default(), lo));
    TopicOptions t;
    t.durability = Durability::kInterval;
    t.sync_interval_ms = 10;
    CONVERGE_RETURN_IF_ERROR(log->CreateTopic("customers", t));
    std::string where;
    CONVERGE_ASSIGN_OR_RETURN(std::unique_ptr<sql::Database> db,
                              NewDatabase(postgres, &where, synchronous));
    CONVERGE_ASSIGN_OR_RETURN(Replica copy, OpenReplica(*log, *db));
    replica::Applier* applier = copy.applier.get();
    const uint64_t total = o.rate * o.seconds;
    // commit_ns[offset]: when the producer committed change `offset` (just before its append).
    std::vector<std::atomic<int64_t>> commit_ns(total);
    std::atomic<uint64_t> appended{0};
    std::mutex mu;
    std::condition_variable cv;
    bool wake = false;
    CONVERGE_ASSIGN_OR_RETURN(std::unique_ptr<Log::Watch> watch,
                              log->WatchAppends("customers", [&](uint32_t, uint64_t) {
                                std::lock_guard<std::mutex> g(mu);
                                wake = true;
                                cv.notify_one();
                              }));
    Status producer_status;
    std::thread producer([&] {
      ReduceTimerSlack();
      Pacer pacer(o.rate, NowNanos());
      uint64_t i = 0;
      const int64_t commit_micros = Env::Default().clock().NowWallMicros();
      while (i < total) {
        SleepUntilNanos(pacer.DueNanos(i));
        const uint64_t due = pacer.DueCount(NowNanos(), total);
        std::vector<std::string> values;
        std::vector<std::string> keys;
        const int64_t now = NowNanos();
        for (uint64_t j = i; j < std::max(due, i + 1); ++j) {
          commit_ns[j].store(now, std::memory_order_relaxed);
          values.push_back(ChangeRecord(j, o.keys, commit_micros));
          keys.push_back("customer-" + std::to_string(j % o.keys));
        }
        std::vector<RecordView> views;
        for (size_t j = 0; j < values.size(); ++j) views.push_back({"", keys[j], values[j], 0});
        Status s = log->Append("customers", views).status();
        if (!s.ok()) {
          producer_status = s;
          return;
        }
        i += views.size();
        appended.store(i, std::memory_order_release);
      }
    });
    LatencyRecorder lat(total + 1);
    uint64_t applied_upto = 0;
    Status status;
    while (applied_upto < total) {
      Result<size_t> n = applier->Step();
      if (!n.ok()) {
        status = n.status();
        break;
      }
      const int64_t now = NowNanos();
      const uint64_t next = applier->Stats().positions[0].next_offset;
      for (uint64_t k = applied_upto; k < next; ++k) {
        lat.Record(now - commit_ns[k].load(std::memory_order_relaxed));
      }
      applied_upto = next;
      if (*n == 0) {
        std::unique_lock<std::mutex> g(mu);
        cv.wait_for(g, std::chrono::milliseconds(5), [&] { return wake; });
        wake = false;
      }
      if (!producer_status.ok()) break;
    }
    producer.join();
    watch.reset();
    CONVERGE_RETURN_IF_ERROR(status);
    CONVERGE_RETURN_IF_ERROR(producer_status);
    Measurement m;
    m.workload = "staleness";
    m.system = name;
    m.durability = postgres ? "synchronous_commit=on" : "synchronous=" + synchronous;
    m.rate_name = "changes_per_s";
    m.events = total;
    m.seconds = static_cast<double>(o.seconds);
    m.events_per_s = static_cast<double>(o.rate);
    auto p = lat.Compute();
    m.p50_us = p.p50_us;
    m.p99_us = p.p99_us;
    m.p999_us = p.p999_us;
    m.note =
        "source commit (before its append) to target commit, per change; source topic "
        "durability interval-10ms; applier woken by the log's append watch";
    return m;
  }
};

void PrintHelp(FILE* out) {
  std::fprintf(out,
               "converge bench replica [--json] [--changes N] [--hand-written-changes N] "
               "[--remote-changes N] [--mw-keys N] [--mw-samples N] [--keys N] [--batch N]\n"
               "                        [--rate N] [--seconds N] [--no-staleness] "
               "[--systems LIST] [--dir DIR]\n"
               "Applies change events from a log topic into SQL tables: the replica applier "
               "into SQLite and\nPostgreSQL, beside a hand-written consumer (one upsert "
               "transaction per event), and from another node's store collection over HTTP\n"
               "(converge-remote-sqlite, --remote-changes); the merge rate of a multi-writer "
               "collection\nbetween two nodes (converge-multi-writer, --mw-keys); then staleness "
               "at --rate changes/s.\n"
               "  systems: %s\n",
               kSystems);
}

int RunReplica(int argc, char** argv) {
  Options o;
  o.systems = Split(kSystems);
  std::string systems;
  bool no_staleness = false;
  CLI::App app("Replica apply throughput and staleness.", "converge bench replica");
  cli::Configure(app);
  app.add_flag("--json", o.json);
  app.add_option("--changes", o.changes)->check(cli::Integer(1, 100'000'000));
  app.add_option("--hand-written-changes", o.hand_written_changes)
      ->check(cli::Integer(1, 100'000'000));
  app.add_option("--keys", o.keys)->check(cli::Integer(1, 100'000'000));
  app.add_option("--remote-changes", o.remote_changes)->check(cli::Integer(1, 100'000'000));
  app.add_option("--mw-keys", o.mw_keys)->check(cli::Integer(1, 10'000'000));
  app.add_option("--mw-samples", o.mw_samples)->check(cli::Integer(1, 1'000'000));
  app.add_option("--batch", o.batch)->check(cli::Integer(1, 100'000));
  app.add_option("--rate", o.rate)->check(cli::Integer(1, 1'000'000));
  app.add_option("--seconds", o.seconds)->check(cli::Integer(1, 3600));
  app.add_flag("--no-staleness", no_staleness);
  CLI::Option* systems_option = app.add_option("--systems", systems);
  app.add_option("--dir", o.dir);
  Status parsed = cli::Parse(app, argc, argv, &o.help);
  if (!parsed.ok()) {
    std::fprintf(stderr, "converge bench replica: %s\n(see converge bench replica --help)\n",
                 std::string(parsed.message()).c_str());
    return 2;
  }
  if (o.help) {
    PrintHelp(stdout);
    return 0;
  }
  o.staleness = !no_staleness;
  if (systems_option->count() > 0) o.systems = Split(systems);
  for (const std::string& s : o.systems) {
    if (s != "converge-sqlite" && s != "converge-postgres" && s != "hand-written-postgres" &&
        s != "converge-remote-sqlite" && s != "converge-multi-writer") {
      std::fprintf(stderr, "converge bench replica: unknown system '%s' (%s)\n", s.c_str(),
                   kSystems);
      return 2;
    }
  }
  Result<testing::TempDir> run_dir = testing::TempDir::Create("converge-bench-", o.dir);
  if (!run_dir.ok()) {
    std::fprintf(stderr, "converge bench replica: %s\n", run_dir.status().ToString().c_str());
    return 1;
  }
  ::chmod(run_dir->path().c_str(), 0755);  // PostgreSQL runs as its own user under root
  double load[1] = {0};
  ::getloadavg(load, 1);
  std::fprintf(stderr,
               "converge bench replica: %llu changes over %llu keys, batch %llu; scratch %s; "
               "load average %.2f\n",
               static_cast<unsigned long long>(o.changes), static_cast<unsigned long long>(o.keys),
               static_cast<unsigned long long>(o.batch), run_dir->path().c_str(), load[0]);
  Bench bench;
  bench.o = o;
  bench.dir = run_dir->path();
  std::vector<Measurement> rows;
  int failures = 0;
  auto add = [&](Result<Measurement> m, const std::string& what) {
    if (!m.ok()) {
      std::fprintf(stderr, "converge bench replica: %s: %s\n", what.c_str(),
                   m.status().ToString().c_str());
      ++failures;
      return;
    }
    if (o.json) {
      std::printf("%s\n", ToJsonLine(*m).c_str());
      std::fflush(stdout);
    }
    rows.push_back(std::move(m).value());
  };
  for (const std::string& s : o.systems) {
    if (s == "converge-sqlite") add(bench.Apply(false), s);
    if (s == "converge-postgres") add(bench.Apply(true), s);
    if (s == "hand-written-postgres") add(bench.HandWritten(), s);
    if (s == "converge-remote-sqlite") add(bench.RemoteApply(), s);
    if (s == "converge-multi-writer") add(bench.MultiWriterMerge(), s);
  }
  if (o.staleness) {
    for (const std::string& s : o.systems) {
      if (s == "converge-sqlite") {
        add(bench.Staleness(false), s + " staleness");
        add(bench.Staleness(false, "normal"), s + " staleness (synchronous=normal)");
      }
      if (s == "converge-postgres") add(bench.Staleness(true), s + " staleness");
    }
  }
  double conv_pg = 0, hand = 0;
  for (const Measurement& m : rows) {
    if (m.workload != "apply") continue;
    if (m.system == "converge-postgres") conv_pg = m.events_per_s;
    if (m.system == "hand-written-postgres") hand = m.events_per_s;
  }
  std::string comparison;
  if (conv_pg > 0 && hand > 0) {
    char line[160];
    std::snprintf(line, sizeof(line), "converge-postgres applies %.1fx the hand-written consumer\n",
                  conv_pg / hand);
    comparison = line;
  }
  if (o.json) {
    std::fputs(comparison.c_str(), stderr);
  } else {
    std::printf("\n%s%s", FormatTable(rows).c_str(), comparison.c_str());
  }
  return failures == 0 ? 0 : 1;
}

BenchmarkRegistration registration(
    {"replica", "replica apply into SQLite/PostgreSQL vs a hand-written consumer; staleness",
     RunReplica});

}  // namespace
}  // namespace converge::bench
