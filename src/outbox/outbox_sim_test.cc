// The transactional-messaging pipeline under the simulator: a service commits (or rolls back)
// outbox rows, the relay publishes them to the log, a consumer group delivers them and the inbox
// consumer applies each one's effect in its own transaction. The relay, the inbox consumer, the
// log and the consumer groups all run on one SimEnv (relay and consumer with
// steps_on_env_executor): virtual time, seeded order, and crashes injected at every step:
// - the relay (one, or two on the same outbox: one active, one standing by to take over)
//   crashes after claiming rows (before publishing), after each published chunk, after the
//   whole batch was published (before the rows are deleted) and after deleting them;
// - the inbox consumer crashes after its handlers ran (before the commit: no effect), after the
//   commit (effect applied, not acked) and after the ack;
// - the machine of the log and the groups crashes at a random filesystem operation and loses
//   everything it had not synced (optionally with torn writes);
// - the service's machine loses power: the relays die and the relay's last deletes, not yet
//   synced (it runs with synchronous=normal), are undone, so those rows are published again.
// After the faults stop, the pipeline must drain, and then: every committed row was published
// at least once and applied exactly once, in commit order per partition key; nothing from a
// rolled-back transaction was published or applied; the outbox is empty.
//
// The SQL databases (the service's outbox, the consumer's inbox and effects) are real SQLite
// files, not files on the simulated filesystem: SQLite does its I/O through its own VFS, not
// through the Env. A crash of the relay or of the consumer is a process crash (the component is
// dropped without cleanup; its uncommitted transaction rolls back, committed ones stay), which
// is exactly what SQLite guarantees across a process crash, and across power loss with
// synchronous=full (the service's writers and the inbox consumer). The relay's own connection
// defaults to synchronous=normal, whose last commits a power loss may undo: that is modelled
// explicitly (PowerLoss puts back the rows the relay deleted since its last durable point). The
// databases run with synchronous=off here only for speed.
//
// Seeds: CONVERGE_SIM_SEEDS (how many per test) and CONVERGE_SIM_SEED (replay one), as in the
// other simulation tests; a failure prints its seed.
#include <stdlib.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "converge/consumer_group.h"
#include "converge/event.h"
#include "converge/inbox.h"
#include "converge/log.h"
#include "converge/outbox.h"
#include "converge/relay.h"
#include "converge/sim_env.h"
#include "converge/sql.h"
#include "gtest/gtest.h"

namespace converge {
namespace {

// A fresh directory for the SQLite files, removed with its contents: in memory (/dev/shm) when
// there is one, since the SQLite files' syncs (journal mode switches, file creation) would
// otherwise dominate the test's time; else under $TMPDIR.
class ScratchDir {
 public:
  ScratchDir() {
    const char* tmp = getenv("TMPDIR");
    std::string base = tmp != nullptr && *tmp ? tmp : "/tmp";
    if (access("/dev/shm", W_OK) == 0) base = "/dev/shm";
    std::string templ = base + "/outbox-sim-XXXXXX";
    std::vector<char> buf(templ.begin(), templ.end());
    buf.push_back('\0');
    CONVERGE_CHECK(mkdtemp(buf.data()) != nullptr);
    path_ = buf.data();
  }
  ~ScratchDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// An event for `key` carrying the service's running number `n` as its data.
Event MakeEvent(const std::string& key, int64_t n) {
  Event e;
  e.set_source("/tests/orders");
  e.set_type("order.updated");
  e.set_partitionkey(key);
  Status s = e.SetJsonData("{\"n\":" + std::to_string(n) + "}");
  CONVERGE_CHECK(s.ok());
  return e;
}

int64_t EventNumber(const Event& e) {
  const std::string& d = e.data();
  size_t p = d.find(':');
  return p == std::string::npos ? -1 : std::stoll(d.substr(p + 1));
}

constexpr char kTopic[] = "orders";
constexpr int64_t kMs = 1'000'000;

uint64_t EnvNumber(const char* name, uint64_t fallback) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == '\0') return fallback;
  return std::strtoull(v, nullptr, 10);
}

// What the seeds exercised, printed at the end so that a silent loss of coverage shows.
struct Coverage {
  std::map<std::string, uint64_t> crashes;  // by fault point ("machine" for the filesystem)
  uint64_t committed = 0, rolled_back = 0, duplicates_skipped = 0, republished = 0;
  uint64_t restored_rows = 0;  // deleted rows a power loss put back
};

struct Params {
  bool component_crashes = true;
  bool machine_crashes = false;
  bool torn_writes = false;
};

class World {
 public:
  World(uint64_t seed, const Params& params, const std::string& dir, Coverage* coverage)
      : env_(seed),
        rng_(seed * 0x9E3779B97F4A7C15ull + 17),
        params_(params),
        outbox_path_(dir + "/outbox-" + std::to_string(seed) + ".db"),
        inbox_path_(dir + "/inbox-" + std::to_string(seed) + ".db"),
        outbox_(env_),
        coverage_(coverage) {
    keys_ = Pick(1, 6);
    transactions_ = Pick(5, 30);
    partitions_ = static_cast<uint32_t>(Pick(1, 3));
    batch_max_events_ = static_cast<uint32_t>(Pick(1, 8));
    chunk_max_events_ = static_cast<uint32_t>(Pick(1, 4));
    fetch_max_events_ = static_cast<uint32_t>(Pick(1, 12));
    poll_interval_ms_ = Pick(20, 300);
    const double levels[] = {0.0, 0.05, 0.2};
    relay_crash_p_ = params.component_crashes ? levels[Pick(0, 2)] : 0.0;
    // One relay, or two on the same outbox (one active, one standing by to take over).
    relays_.resize(static_cast<size_t>(Pick(1, 2)));
    relay_incarnation_.assign(relays_.size(), 0);
    inbox_crash_p_ = params.component_crashes ? levels[Pick(0, 2)] : 0.0;
    env_.sim_fs().SetTornWrites(params.torn_writes);
  }

  ~World() {
    consumer_.reset();
    for (auto& relay : relays_) relay.reset();
    sink_.reset();
    groups_.reset();
    log_.reset();
    writer_.reset();
    inbox_db_.reset();
    for (const std::string& base : {outbox_path_, inbox_path_}) {
      for (const char* suffix : {"", "-wal", "-shm", ".relay-lock"}) {
        std::error_code ec;
        std::filesystem::remove(base + suffix, ec);
      }
    }
  }

  // Runs the seed; returns "" or what went wrong.
  std::string Run() {
    std::string failure = Setup();
    if (!failure.empty()) return failure;
    // The service's transactions, at random instants of the first few virtual seconds.
    int64_t at = 0;
    for (int i = 0; i < transactions_; ++i) {
      at += Pick(0, 200) * kMs;
      env_.executor().Schedule(at, [this] { WriteTransaction(); });
    }
    const int64_t faults_end = at + 500 * kMs;
    if (params_.machine_crashes) {
      ArmMachineCrash();
      DurablePoint();
      for (int i = 0; i < 2; ++i) {
        env_.executor().Schedule(Pick(0, at / kMs + 500) * kMs, [this] { PowerLoss(); });
      }
    }
    // Run with faults, watching for the machine crash.
    while (env_.now_nanos() < faults_end && failure_.empty()) {
      env_.RunFor(10 * kMs);
      if (env_.sim_fs().crashed()) failure_ = CrashMachine();
    }
    // Faults stop; the pipeline must drain.
    faults_on_ = false;
    env_.sim_fs().CrashAfterOps(0);
    if (env_.sim_fs().crashed() && failure_.empty()) failure_ = CrashMachine();
    const int64_t drain_deadline = env_.now_nanos() + 600'000 * kMs;
    while (failure_.empty() && env_.now_nanos() < drain_deadline) {
      env_.RunFor(200 * kMs);
      if (Drained()) break;
    }
    if (!failure_.empty()) return failure_;
    return Check();
  }

  uint64_t trace_hash() const { return env_.TraceHash(); }

 private:
  int64_t Pick(int64_t lo, int64_t hi) {
    return std::uniform_int_distribution<int64_t>(lo, hi)(rng_);
  }
  bool Chance(double p) { return p > 0 && std::uniform_real_distribution<double>(0, 1)(rng_) < p; }

  std::string Setup() {
    sql::SqliteOptions so;
    so.path = outbox_path_;
    so.synchronous = "off";
    auto writer = sql::Database::OpenSqlite(so);
    if (!writer.ok()) return "open outbox: " + writer.status().ToString();
    writer_ = std::move(writer).value();
    Status s = Outbox::CreateSchema(*writer_);
    if (!s.ok()) return "outbox schema: " + s.ToString();
    // The outbox as it was at the last point the relay's deletes were durable (see PowerLoss).
    s = writer_->ExecuteScript(
        "CREATE TABLE durable_outbox AS SELECT * FROM converge_outbox WHERE 0");
    if (!s.ok()) return "durable outbox: " + s.ToString();
    so.path = inbox_path_;
    auto inbox = sql::Database::OpenSqlite(so);
    if (!inbox.ok()) return "open inbox: " + inbox.status().ToString();
    inbox_db_ = std::move(inbox).value();
    // No unique constraint: an event applied twice shows as two rows.
    s = inbox_db_->ExecuteScript(
        "CREATE TABLE applied (seq INTEGER PRIMARY KEY AUTOINCREMENT, event_id TEXT NOT NULL, "
        "key TEXT NOT NULL, n INTEGER NOT NULL)");
    if (!s.ok()) return "effects schema: " + s.ToString();
    return OpenMachine();
  }

  // The log server's side (log, groups, sink) and the two processes on top of it.
  std::string OpenMachine() {
    LogOptions lo;
    lo.dir = "/data/log";
    auto log = Log::Open(env_, lo);
    if (!log.ok()) return "open log: " + log.status().ToString();
    log_ = std::move(log).value();
    ConsumerGroupsOptions go;
    go.dir = "/data/groups";
    go.tick_interval_ms = 50;
    auto groups = ConsumerGroups::Open(env_, *log_, go);
    if (!groups.ok()) return "open groups: " + groups.status().ToString();
    groups_ = std::move(groups).value();
    LogSinkOptions sink_options;
    sink_options.topic_options.partitions = partitions_;
    sink_options.topic_options.durability = Durability::kFsync;
    auto sink = NewLogSink(*log_, sink_options);
    if (!sink.ok()) return "sink: " + sink.status().ToString();
    sink_ = std::move(sink).value();
    std::string failure;
    for (size_t i = 0; i < relays_.size() && failure.empty(); ++i) failure = StartRelay(i);
    if (failure.empty()) failure = StartConsumer();
    return failure;
  }

  std::string StartRelay(size_t i) {
    std::unique_ptr<Relay>& slot = relays_[i];
    slot.reset();
    RelayOptions ro;
    ro.name = "sim-relay";
    ro.batch_max_events = batch_max_events_;
    ro.publish_chunk_max_events = chunk_max_events_;
    ro.poll_interval_ms = poll_interval_ms_;
    ro.batch_linger_us = Pick(0, 1) * 2'000;
    ro.batch_linger_min_rows = 2;
    ro.retry_base_delay_ms = 5;
    ro.retry_max_delay_ms = 200;
    ro.standby_retry_ms = 50;
    ro.sqlite_synchronous = "off";
    ro.sqlite_lock_path = "/relay.lock";  // on the simulated filesystem
    ro.steps_on_env_executor = true;
    ro.fault_point = [this, i](std::string_view point) {
      return Fault(point, relay_crash_p_, static_cast<int>(i));
    };
    sql::DatabaseTarget target{sql::Engine::kSqlite, outbox_path_};
    auto relay = Relay::Create(env_, target, *sink_, ro);
    if (!relay.ok()) return "relay: " + relay.status().ToString();
    slot = std::move(relay).value();
    Status s = slot->Start();
    return s.ok() ? "" : "relay start: " + s.ToString();
  }

  std::string StartConsumer() {
    consumer_.reset();
    InboxConsumerOptions co;
    co.topic = kTopic;
    co.group = "billing";
    co.fetch_max_events = fetch_max_events_;
    co.group_options.lease_ms = 300;
    co.group_options.session_timeout_ms = 5'000;
    co.group_options.max_deliveries = 10'000;  // crashes redeliver; never dead-letter here
    co.idle_poll_ms = 200;
    co.db_retry_base_delay_ms = 5;
    co.db_retry_max_delay_ms = 200;
    co.sqlite_synchronous = "off";
    co.steps_on_env_executor = true;
    co.fault_point = [this](std::string_view point) {
      return Fault(point, inbox_crash_p_, kConsumer);
    };
    sql::DatabaseTarget target{sql::Engine::kSqlite, inbox_path_};
    auto consumer = InboxConsumer::Create(
        env_, *groups_, target,
        [](sql::Transaction& tx, const InboxMessage& m) -> Status {
          const Event& e = m.event;
          sql::Value p[] = {sql::Value::Text(e.id()),
                            sql::Value::Text(e.partitionkey().value_or("")),
                            sql::Value::Int(EventNumber(e))};
          return tx.Execute("INSERT INTO applied (event_id, key, n) VALUES ($1, $2, $3)", p)
              .status();
        },
        co);
    if (!consumer.ok()) return "consumer: " + consumer.status().ToString();
    consumer_ = std::move(consumer).value();
    Status s = consumer_->Start();
    return s.ok() ? "" : "consumer start: " + s.ToString();
  }

  // A fault point of the relay or the consumer: with probability p the process crashes there.
  // It is restarted a little later (from a separate event: the dead object is still on the
  // stack of its own step now).
  // `who`: a relay's index or kConsumer.
  static constexpr int kConsumer = -1;
  uint64_t& Incarnation(int who) {
    return who == kConsumer ? consumer_incarnation_ : relay_incarnation_[static_cast<size_t>(who)];
  }
  Status Fault(std::string_view point, double p, int who) {
    if (!faults_on_ || !Chance(p)) return Status::Ok();
    ++coverage_->crashes[std::string(point)];
    const uint64_t incarnation = ++Incarnation(who);
    env_.executor().Schedule(Pick(0, 100) * kMs, [this, who, incarnation] {
      if (!failure_.empty()) return;
      // A machine crash in between already restarted it.
      if (incarnation != Incarnation(who)) return;
      std::string f = who == kConsumer ? StartConsumer() : StartRelay(static_cast<size_t>(who));
      if (!f.empty()) failure_ = f;
    });
    return InternalError("simulated crash at " + std::string(point));
  }

  // The relay's SQLite connection runs with synchronous=normal (RelayOptions): its deletes
  // become durable at the next WAL sync, and a power loss of the service's machine may undo
  // the last ones (the writers commit with synchronous=full: their rows stay). Modelled here:
  // every few virtual milliseconds the relay's deletes so far become durable (a copy of the
  // table); a power loss kills the relays and puts back every row deleted since.
  void DurablePoint() {
    if (!faults_on_) return;
    Status s = writer_->ExecuteScript(
        "DELETE FROM durable_outbox; INSERT INTO durable_outbox SELECT * FROM converge_outbox");
    if (!s.ok()) failure_ = "durable point: " + s.ToString();
    env_.executor().Schedule(Pick(5, 200) * kMs, [this] { DurablePoint(); });
  }

  void PowerLoss() {
    if (!faults_on_ || !failure_.empty()) return;
    ++coverage_->crashes["service power loss"];
    for (size_t i = 0; i < relays_.size(); ++i) {
      ++relay_incarnation_[i];
      relays_[i].reset();
    }
    Result<int64_t> restored =
        writer_->Execute("INSERT OR IGNORE INTO converge_outbox SELECT * FROM durable_outbox");
    if (!restored.ok()) {
      failure_ = "power loss: " + restored.status().ToString();
      return;
    }
    coverage_->restored_rows += static_cast<uint64_t>(*restored);
    for (size_t i = 0; i < relays_.size() && failure_.empty(); ++i) failure_ = StartRelay(i);
  }

  void ArmMachineCrash() {
    env_.executor().Schedule(Pick(0, 300) * kMs, [this] {
      if (faults_on_ && machine_crashes_ < 3) {
        env_.sim_fs().CrashAfterOps(static_cast<uint64_t>(Pick(1, 60)));
      }
    });
  }

  // The log server's machine crashed (its filesystem hit the crash point): everything on it is
  // dropped without flushing, the filesystem keeps only what was synced, and it all restarts.
  // The relay and the consumer restart with it (they publish to and consume from this log).
  std::string CrashMachine() {
    ++machine_crashes_;
    ++coverage_->crashes["machine"];
    for (uint64_t& n : relay_incarnation_) ++n;
    ++consumer_incarnation_;
    consumer_.reset();
    for (auto& relay : relays_) relay.reset();
    sink_.reset();
    groups_.reset();
    log_.reset();
    env_.sim_fs().Crash();
    std::string failure = OpenMachine();
    if (failure.empty() && params_.machine_crashes) ArmMachineCrash();
    return failure;
  }

  // One service transaction: 1..4 events on random keys, committed or rolled back.
  void WriteTransaction() {
    const int64_t count = Pick(1, 4);
    const bool roll_back = Chance(0.2);
    std::vector<Event> events;
    std::vector<std::pair<std::string, int64_t>> keyed;
    for (int64_t i = 0; i < count; ++i) {
      std::string key = "k" + std::to_string(Pick(0, keys_ - 1));
      const int64_t n = next_n_++;
      events.push_back(MakeEvent(key, n));
      keyed.emplace_back(key, n);
    }
    Status s = writer_->Transact([&](sql::Transaction& tx) -> Status {
      CONVERGE_RETURN_IF_ERROR(outbox_.Write(tx, kTopic, std::span<Event>(events)));
      if (roll_back) return AbortedError("the service rolls back");
      return Status::Ok();
    });
    if (s.ok() == roll_back) {
      failure_ = "service transaction: " + s.ToString();
      return;
    }
    for (size_t i = 0; i < events.size(); ++i) {
      const std::string identity = EventIdentity(events[i]);
      if (roll_back) {
        rolled_back_ids_.insert(events[i].id());
        rolled_back_identities_.insert(identity);
        ++coverage_->rolled_back;
      } else {
        committed_[keyed[i].first].push_back(keyed[i].second);
        committed_ids_[events[i].id()] = keyed[i];
        committed_identities_.insert(identity);
        ++coverage_->committed;
      }
    }
  }

  int64_t Count(sql::Database& db, const std::string& sql) {
    int64_t n = -1;
    Status s = db.Query(sql, {}, [&](const sql::Row& row) -> Status {
                   n = *row.Int(0);
                   return Status::Ok();
                 }).status();
    return s.ok() ? n : -1;
  }

  bool Drained() {
    return Count(*writer_, "SELECT count(*) FROM converge_outbox") == 0 &&
           Count(*inbox_db_, "SELECT count(*) FROM applied") >=
               static_cast<int64_t>(committed_ids_.size());
  }

  std::string Check() {
    std::string out;
    auto fail = [&](const std::string& what) {
      if (out.size() < 2000) out += what + "; ";
    };
    const int64_t left = Count(*writer_, "SELECT count(*) FROM converge_outbox");
    if (left != 0) fail("outbox rows left after draining: " + std::to_string(left));
    // Published: every committed event at least once, nothing rolled back.
    std::map<std::string, int> published;
    for (uint32_t p = 0; p < partitions_; ++p) {
      uint64_t next = 0;
      for (;;) {
        auto batch = log_->Read(kTopic, p, next, 256, 1 << 20);
        if (!batch.ok()) {
          if (batch.status().code() != StatusCode::kNotFound) {
            fail("log read: " + batch.status().ToString());
          }
          break;
        }
        if (batch->records.empty()) break;
        for (const StoredRecord& r : batch->records) ++published[std::string(r.id)];
        next = batch->next_offset;
      }
    }
    for (const std::string& id : committed_identities_) {
      if (!published.count(id)) fail("committed event never published: " + id);
    }
    for (const auto& [id, n] : published) {
      if (rolled_back_identities_.count(id)) fail("rolled-back event published: " + id);
      if (!committed_identities_.count(id)) fail("unknown event published: " + id);
      if (n > 1) coverage_->republished += static_cast<uint64_t>(n - 1);
    }
    // Applied: exactly once, in commit order per key, nothing else.
    std::map<std::string, int> times;
    std::map<std::string, std::vector<int64_t>> order;
    Status s = inbox_db_
                   ->Query("SELECT event_id, key, n FROM applied ORDER BY seq", {},
                           [&](const sql::Row& row) -> Status {
                             std::string id(row.Bytes(0));
                             ++times[id];
                             order[std::string(row.Bytes(1))].push_back(*row.Int(2));
                             return Status::Ok();
                           })
                   .status();
    if (!s.ok()) fail("reading effects: " + s.ToString());
    for (const auto& [id, n] : times) {
      if (rolled_back_ids_.count(id)) fail("rolled-back event applied: " + id);
      if (!committed_ids_.count(id)) fail("unknown event applied: " + id);
      if (n != 1) fail("event applied " + std::to_string(n) + " times: " + id);
    }
    for (const auto& [id, key_n] : committed_ids_) {
      if (!times.count(id)) fail("committed event never applied: " + id);
    }
    for (const auto& [key, ns] : committed_) {
      if (order[key] != ns) fail("key " + key + " applied out of commit order");
    }
    if (consumer_ != nullptr) coverage_->duplicates_skipped += consumer_->stats().duplicates;
    return out;
  }

  sim::SimEnv env_;
  std::mt19937_64 rng_;  // the test's own choices (the components draw from env_.random())
  Params params_;
  std::string outbox_path_, inbox_path_;
  Outbox outbox_;
  Coverage* coverage_;

  int keys_ = 1, transactions_ = 1;
  uint32_t partitions_ = 1, batch_max_events_ = 1, chunk_max_events_ = 1, fetch_max_events_ = 1;
  int64_t poll_interval_ms_ = 100;
  double relay_crash_p_ = 0, inbox_crash_p_ = 0;
  bool faults_on_ = true;
  int machine_crashes_ = 0;
  std::vector<uint64_t> relay_incarnation_;
  uint64_t consumer_incarnation_ = 0;
  std::string failure_;

  std::unique_ptr<sql::Database> writer_;    // the service's connection
  std::unique_ptr<sql::Database> inbox_db_;  // for checking the consumer's effects
  std::unique_ptr<Log> log_;
  std::unique_ptr<ConsumerGroups> groups_;
  std::unique_ptr<RelaySink> sink_;
  std::vector<std::unique_ptr<Relay>> relays_;
  std::unique_ptr<InboxConsumer> consumer_;

  int64_t next_n_ = 0;
  std::map<std::string, std::vector<int64_t>> committed_;  // key -> n in commit order
  std::map<std::string, std::pair<std::string, int64_t>> committed_ids_;  // id -> (key, n)
  std::set<std::string> committed_identities_, rolled_back_ids_, rolled_back_identities_;
};

void RunSeeds(const Params& params, uint64_t default_seeds, uint64_t first_seed) {
  const uint64_t only = EnvNumber("CONVERGE_SIM_SEED", 0);
  const uint64_t seeds = only != 0 ? 1 : EnvNumber("CONVERGE_SIM_SEEDS", default_seeds);
  ScratchDir dir;
  Coverage coverage;
  for (uint64_t i = 0; i < seeds; ++i) {
    const uint64_t seed = only != 0 ? only : first_seed + i;
    World world(seed, params, dir.path(), &coverage);
    const std::string failure = world.Run();
    ASSERT_EQ(failure, "") << "seed " << seed << " (replay: CONVERGE_SIM_SEED=" << seed << ")";
  }
  std::string crashes;
  for (const auto& [point, n] : coverage.crashes) {
    crashes += " " + point + "=" + std::to_string(n);
  }
  std::printf(
      "  %llu seeds: %llu committed, %llu rolled back, %llu duplicates in the log, "
      "%llu redeliveries skipped by the inbox, %llu deleted rows put back; crashes:%s\n",
      static_cast<unsigned long long>(seeds), static_cast<unsigned long long>(coverage.committed),
      static_cast<unsigned long long>(coverage.rolled_back),
      static_cast<unsigned long long>(coverage.republished),
      static_cast<unsigned long long>(coverage.duplicates_skipped),
      static_cast<unsigned long long>(coverage.restored_rows), crashes.c_str());
  if (only == 0 && seeds >= 100) {
    // Every fault point fired somewhere (a renamed point would otherwise go untested).
    std::vector<std::string> points;
    if (params.component_crashes) {
      points = {"relay.claimed", "relay.chunk_published", "relay.published", "relay.removed",
                "inbox.handled", "inbox.committed",       "inbox.acked"};
    }
    if (params.machine_crashes) {
      points.push_back("machine");
      points.push_back("service power loss");
    }
    for (const std::string& p : points) EXPECT_GT(coverage.crashes[p], 0u) << "no crash at " << p;
    EXPECT_GT(coverage.rolled_back, 0u);
    if (params.machine_crashes) {
      EXPECT_GT(coverage.restored_rows, 0u);
    }
  }
}

TEST(OutboxSimTest, ProcessCrashesAtEveryStepOfRelayAndInbox) {
  Params p;
  RunSeeds(p, 1000, 1);
}

TEST(OutboxSimTest, MachineCrashesOfTheLogLoseOnlyUnsyncedData) {
  Params p;
  p.machine_crashes = true;
  RunSeeds(p, 500, 100'001);
}

TEST(OutboxSimTest, MachineCrashesWithTornWrites) {
  Params p;
  p.machine_crashes = true;
  p.torn_writes = true;
  RunSeeds(p, 500, 200'001);
}

// The relay on the simulator's executor: an idle relay claims once per poll interval of
// virtual time (no real sleeps, no busy loop), and a writer's commit wakes it at the same
// virtual instant.
TEST(OutboxSimTest, TheRelayWaitsInVirtualTimeAndAWriterCommitWakesItAtOnce) {
  ScratchDir dir;
  sim::SimEnv env(5);
  LogOptions lo;
  lo.dir = "/data/log";
  auto log = Log::Open(env, lo);
  ASSERT_TRUE(log.ok()) << log.status().ToString();
  auto sink = NewLogSink(**log, LogSinkOptions{});
  ASSERT_TRUE(sink.ok()) << sink.status().ToString();
  const std::string path = dir.path() + "/outbox.db";
  sql::SqliteOptions so;
  so.path = path;
  so.synchronous = "off";
  auto writer = sql::Database::OpenSqlite(so);
  ASSERT_TRUE(writer.ok()) << writer.status().ToString();
  ASSERT_TRUE(Outbox::CreateSchema(**writer).ok());
  RelayOptions ro;
  ro.poll_interval_ms = 100;
  ro.rebalance_interval_ms = 3'600'000;
  ro.sqlite_lock_path = "/relay.lock";
  ro.steps_on_env_executor = true;
  auto relay = Relay::Create(env, sql::DatabaseTarget{sql::Engine::kSqlite, path}, **sink, ro);
  ASSERT_TRUE(relay.ok()) << relay.status().ToString();
  ASSERT_TRUE((*relay)->Start().ok());
  env.RunFor(1'000 * kMs);
  const uint64_t polls = (*relay)->stats().polls;
  EXPECT_GE(polls, 9u);
  EXPECT_LE(polls, 11u);
  EXPECT_LT(env.pending_events(), 10u);  // one timer and the log's own, not a queue of steps

  Outbox outbox(env);
  Event event = MakeEvent("k", 1);
  ASSERT_TRUE(
      (*writer)
          ->Transact([&](sql::Transaction& tx) { return outbox.Write(tx, "orders", event); })
          .ok());
  const int64_t committed_at = env.now_nanos();
  env.RunFor(0);  // only what is due at this instant
  EXPECT_EQ((*relay)->stats().published, 1u);
  EXPECT_GE((*relay)->stats().wakeups, 1u);
  EXPECT_EQ(env.now_nanos(), committed_at);
  (*relay)->Stop();
}

TEST(OutboxSimTest, SameSeedSameRun) {
  ScratchDir dir;
  Coverage coverage;
  Params p;
  p.machine_crashes = true;
  uint64_t hashes[2];
  for (uint64_t& h : hashes) {
    World world(42, p, dir.path(), &coverage);
    ASSERT_EQ(world.Run(), "");
    h = world.trace_hash();
  }
  EXPECT_EQ(hashes[0], hashes[1]);
}

}  // namespace
}  // namespace converge
