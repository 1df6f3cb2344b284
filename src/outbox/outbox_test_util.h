// Test helpers for the outbox module: temp directories, a fault injector, and a pipeline
// service DB -> relay -> log -> consumer group -> inbox consumer whose effects are counted.
#pragma once

#include <stdlib.h>

#include <atomic>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "converge/consumer_group.h"
#include "converge/env.h"
#include "converge/event.h"
#include "converge/inbox.h"
#include "converge/log.h"
#include "converge/outbox.h"
#include "converge/relay.h"
#include "converge/sql.h"
#include "gtest/gtest.h"

namespace converge::outbox_test {

#define ASSERT_OK(expr)                                     \
  do {                                                      \
    ::converge::Status s_ = (expr);                         \
    ASSERT_TRUE(s_.ok()) << #expr << ": " << s_.ToString(); \
  } while (0)
#define EXPECT_OK(expr)                                     \
  do {                                                      \
    ::converge::Status s_ = (expr);                         \
    EXPECT_TRUE(s_.ok()) << #expr << ": " << s_.ToString(); \
  } while (0)

// "prefix" + number, spelled so that GCC 12's -Wrestrict false positive on
// `"literal" + std::to_string(n)` stays quiet.
inline std::string Numbered(std::string_view prefix, int64_t n) {
  std::string out(prefix);
  out += std::to_string(n);
  return out;
}

// A fresh directory under $TMPDIR, removed with its contents.
class ScratchDir {
 public:
  ScratchDir() {
    const char* base = getenv("TMPDIR");
    std::string templ = std::string(base != nullptr && *base ? base : "/tmp") + "/outbox-XXXXXX";
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
  std::string Sub(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

// Arms named points: the `hit`-th time `point` is reached (1-based), the hook fails.
class FaultInjector {
 public:
  void Arm(const std::string& point, int hit) {
    std::lock_guard<std::mutex> lock(mu_);
    armed_[point] = hit;
    hits_[point] = 0;
  }
  void Disarm() {
    std::lock_guard<std::mutex> lock(mu_);
    armed_.clear();
  }
  FaultPoint Hook() {
    return [this](std::string_view point) -> Status {
      std::lock_guard<std::mutex> lock(mu_);
      std::string p(point);
      auto it = armed_.find(p);
      if (it == armed_.end()) return Status::Ok();
      if (++hits_[p] == it->second) {
        ++fired_;
        armed_.erase(it);
        return InternalError("injected crash at " + p);
      }
      return Status::Ok();
    };
  }
  int fired() const { return fired_; }

 private:
  std::mutex mu_;
  std::map<std::string, int> armed_;
  std::map<std::string, int> hits_;
  std::atomic<int> fired_{0};
};

// An event for key `key` carrying its per-key sequence number `n` as JSON data.
inline Event MakeEvent(const std::string& key, int64_t n, const std::string& traceparent = "") {
  Event e;
  e.set_source("/tests/orders");
  e.set_type("order.updated");
  if (!key.empty()) e.set_partitionkey(key);
  if (!traceparent.empty()) e.set_traceparent(traceparent);
  std::string json = Numbered("{\"n\":", n);
  json += "}";
  Status s = e.SetJsonData(json);
  CONVERGE_CHECK(s.ok());
  return e;
}

// Reads the "n" field of MakeEvent's data.
inline int64_t EventNumber(const Event& e) {
  const std::string& d = e.data();
  size_t p = d.find(':');
  return p == std::string::npos ? -1 : std::stoll(d.substr(p + 1));
}

// The consumer-side business effect: one row per event id with an application count, and a
// per-key high-water mark to check order. Both updated in the inbox transaction.
inline Status CreateEffectTables(sql::Database& db) {
  return db.ExecuteScript(
      "CREATE TABLE IF NOT EXISTS effects (event_id TEXT PRIMARY KEY, key TEXT NOT NULL, "
      "n BIGINT NOT NULL, applied BIGINT NOT NULL, traceparent TEXT);"
      "CREATE TABLE IF NOT EXISTS key_progress (key TEXT PRIMARY KEY, last BIGINT NOT NULL, "
      "violations BIGINT NOT NULL DEFAULT 0);");
}

inline Status ApplyEffect(sql::Transaction& tx, const InboxMessage& m) {
  const Event& e = m.event;
  std::string key(e.partitionkey().value_or(""));
  int64_t n = EventNumber(e);
  sql::Value p[] = {sql::Value::Text(e.id()), sql::Value::Text(key), sql::Value::Int(n),
                    sql::Value::TextOrNull(m.traceparent)};
  CONVERGE_RETURN_IF_ERROR(
      tx.Execute("INSERT INTO effects (event_id, key, n, applied, traceparent) "
                 "VALUES ($1, $2, CAST($3 AS BIGINT), 1, $4) "
                 "ON CONFLICT (event_id) DO UPDATE SET applied = effects.applied + 1",
                 p)
          .status());
  if (key.empty()) return Status::Ok();
  // Order per key: each event's n must be exactly one above the last applied for its key.
  sql::Value q[] = {sql::Value::Text(key), sql::Value::Int(n)};
  return tx
      .Execute(
          "INSERT INTO key_progress (key, last, violations) VALUES ($1, CAST($2 AS BIGINT), "
          "CASE WHEN CAST($2 AS BIGINT) = 0 THEN 0 ELSE 1 END) "
          "ON CONFLICT (key) DO UPDATE SET violations = key_progress.violations + "
          "CASE WHEN key_progress.last + 1 = CAST($2 AS BIGINT) THEN 0 ELSE 1 END, last = CAST($2 "
          "AS BIGINT)",
          q)
      .status();
}

struct EffectSummary {
  int64_t rows = 0;         // distinct events applied
  int64_t applied_sum = 0;  // total applications
  int64_t max_applied = 0;
  int64_t violations = 0;  // order violations
};

inline EffectSummary SummarizeEffects(sql::Database& db) {
  EffectSummary s;
  Status st = db.Query(
                    "SELECT count(*), coalesce(sum(applied), 0), coalesce(max(applied), 0) "
                    "FROM effects",
                    {},
                    [&](const sql::Row& row) -> Status {
                      s.rows = *row.Int(0);
                      s.applied_sum = *row.Int(1);
                      s.max_applied = *row.Int(2);
                      return Status::Ok();
                    })
                  .status();
  CONVERGE_CHECK_MSG(st.ok(), st.ToString());
  st = db.Query("SELECT coalesce(sum(violations), 0) FROM key_progress", {},
                [&](const sql::Row& row) -> Status {
                  s.violations = *row.Int(0);
                  return Status::Ok();
                })
           .status();
  CONVERGE_CHECK_MSG(st.ok(), st.ToString());
  return s;
}

inline int64_t CountRows(sql::Database& db, const std::string& table) {
  int64_t n = -1;
  Status st = db.Query("SELECT count(*) FROM " + table, {}, [&](const sql::Row& row) -> Status {
                  n = *row.Int(0);
                  return Status::Ok();
                }).status();
  CONVERGE_CHECK_MSG(st.ok(), st.ToString());
  return n;
}

// The service's business table (WriteEvents inserts one row per transaction).
inline Status CreateBusinessTable(sql::Database& db) {
  return db.ExecuteScript("CREATE TABLE IF NOT EXISTS orders (note TEXT)");
}

// Writes `count` events spread over `keys` keys (key i%keys), `per_tx` per transaction, with
// per-key numbers continuing from `next` (updated). Returns the written events' ids.
inline Status WriteEvents(sql::Database& db, Outbox& outbox, const std::string& topic, int count,
                          int keys, int per_tx, std::map<std::string, int64_t>* next,
                          std::vector<std::string>* ids = nullptr,
                          const std::string& traceparent = "") {
  int written = 0;
  while (written < count) {
    int n = std::min(per_tx, count - written);
    std::vector<Event> events;
    events.reserve(static_cast<size_t>(n));
    for (int i = 0; i < n; ++i) {
      std::string key = Numbered("k", (written + i) % keys);
      events.push_back(MakeEvent(key, (*next)[key]++, traceparent));
    }
    Status s = db.Transact([&](sql::Transaction& tx) -> Status {
      sql::Value p[] = {sql::Value::Text("business change")};
      CONVERGE_RETURN_IF_ERROR(tx.Execute("INSERT INTO orders (note) VALUES ($1)", p).status());
      return outbox.Write(tx, topic, std::span<Event>(events));
    });
    if (!s.ok()) {
      for (int i = 0; i < n; ++i) {
        std::string key = Numbered("k", (written + i) % keys);
        --(*next)[key];
      }
      return s;
    }
    if (ids != nullptr) {
      for (const Event& e : events) ids->push_back(e.id());
    }
    written += n;
  }
  return Status::Ok();
}

}  // namespace converge::outbox_test

#include "groups/testing/faulty_log.h"

namespace converge::outbox_test {

// service DB -> relay -> log (behind a FaultyLog) -> consumer groups -> inbox consumer DB.
// SQLite files in a scratch directory by default; PostgreSQL when targets are given.
class Pipeline {
 public:
  Pipeline() : env(Env::Default()) {
    service_target = {sql::Engine::kSqlite, dir.Sub("service.db")};
    consumer_target = {sql::Engine::kSqlite, dir.Sub("consumer.db")};
  }
  Pipeline(sql::DatabaseTarget service, sql::DatabaseTarget consumer) : env(Env::Default()) {
    service_target = std::move(service);
    consumer_target = std::move(consumer);
  }
  ~Pipeline() { CloseLog(); }

  Status Open(uint32_t partitions = 4) {
    partitions_ = partitions;
    CONVERGE_ASSIGN_OR_RETURN(service, sql::OpenDatabase(service_target, sqlite_synchronous));
    CONVERGE_ASSIGN_OR_RETURN(consumer, sql::OpenDatabase(consumer_target, sqlite_synchronous));
    CONVERGE_RETURN_IF_ERROR(Outbox::CreateSchema(*service));
    CONVERGE_RETURN_IF_ERROR(CreateBusinessTable(*service));
    CONVERGE_RETURN_IF_ERROR(Inbox::CreateSchema(*consumer));
    CONVERGE_RETURN_IF_ERROR(CreateEffectTables(*consumer));
    return OpenLog();
  }

  // Opens (or reopens after CloseLog: a restart) the log, consumer groups and sink.
  Status OpenLog() {
    LogOptions lo;
    lo.dir = dir.Sub("log");
    CONVERGE_ASSIGN_OR_RETURN(log, Log::Open(env, lo));
    faulty = std::make_unique<groups_testing::FaultyLog>(*log);
    LogSinkOptions so;
    so.topic_options.partitions = partitions_;
    so.topic_options.durability = topic_durability;
    CONVERGE_ASSIGN_OR_RETURN(sink, NewLogSink(*faulty, so));
    TopicOptions to;
    to.partitions = partitions_;
    to.durability = topic_durability;
    Status s = faulty->CreateTopic(topic, to);
    if (!s.ok() && s.code() != StatusCode::kAlreadyExists) return s;
    ConsumerGroupsOptions go;
    go.dir = dir.Sub("groups");
    go.commit_mode = groups_commit_mode;
    CONVERGE_ASSIGN_OR_RETURN(groups, ConsumerGroups::Open(env, *faulty, go));
    return Status::Ok();
  }
  void CloseLog() {
    groups.reset();
    sink.reset();
    faulty.reset();
    log.reset();
  }

  RelayOptions DefaultRelayOptions() {
    RelayOptions o;
    o.retry_base_delay_ms = 1;
    o.retry_max_delay_ms = 20;
    o.poll_interval_ms = 200;
    o.sqlite_synchronous = sqlite_synchronous;
    return o;
  }
  Result<std::unique_ptr<Relay>> NewRelay(RelayOptions o) {
    return Relay::Create(env, service_target, *sink, std::move(o));
  }
  Result<std::unique_ptr<Relay>> NewRelay() { return NewRelay(DefaultRelayOptions()); }

  InboxConsumerOptions DefaultConsumerOptions() {
    InboxConsumerOptions o;
    o.topic = topic;
    o.group = "billing";
    o.member = Numbered("m", member_seq_++);
    o.group_options.lease_ms = 60'000;
    o.retry_base_delay_ms = 1;
    o.retry_max_delay_ms = 10;
    o.db_retry_base_delay_ms = 1;
    o.db_retry_max_delay_ms = 20;
    o.sqlite_synchronous = sqlite_synchronous;
    return o;
  }
  Result<std::unique_ptr<InboxConsumer>> NewConsumer(InboxConsumerOptions o,
                                                     InboxHandler handler = ApplyEffect) {
    return InboxConsumer::Create(env, *groups, consumer_target, std::move(handler), std::move(o));
  }
  Result<std::unique_ptr<InboxConsumer>> NewConsumer() {
    return NewConsumer(DefaultConsumerOptions());
  }

  Status Write(int count, int keys, int per_tx, const std::string& traceparent = "") {
    return WriteEvents(*service, outbox, topic, count, keys, per_tx, &next, &ids, traceparent);
  }

  // RunOnce until it reports nothing twice in a row; returns the total settled.
  static Result<size_t> DrainConsumer(InboxConsumer& c, size_t max_rounds = 100'000) {
    size_t total = 0;
    int idle = 0;
    for (size_t i = 0; i < max_rounds && idle < 2; ++i) {
      CONVERGE_ASSIGN_OR_RETURN(size_t n, c.RunOnce());
      total += n;
      idle = n == 0 ? idle + 1 : 0;
    }
    return total;
  }

  // Events recorded in the log topic (all partitions), duplicates dropped by the log excluded.
  Result<uint64_t> LogEventCount() {
    CONVERGE_ASSIGN_OR_RETURN(TopicInfo info, log->DescribeTopic(topic));
    uint64_t n = 0;
    for (const PartitionInfo& p : info.partitions) n += p.end_offset - p.start_offset;
    return n;
  }

  // In-process crashes lose nothing that was written, synced or not, so the unit tests skip
  // fsync; the process-kill and PostgreSQL tests keep full durability.
  std::string sqlite_synchronous = "normal";
  Durability topic_durability = Durability::kNone;
  CommitMode groups_commit_mode = CommitMode::kPeriodic;

  ScratchDir dir;
  Env& env;
  std::string topic = "orders";
  sql::DatabaseTarget service_target;
  sql::DatabaseTarget consumer_target;
  std::unique_ptr<sql::Database> service;
  std::unique_ptr<sql::Database> consumer;
  Outbox outbox{Env::Default()};
  std::unique_ptr<Log> log;
  std::unique_ptr<groups_testing::FaultyLog> faulty;
  std::unique_ptr<RelaySink> sink;
  std::unique_ptr<ConsumerGroups> groups;
  std::map<std::string, int64_t> next;
  std::vector<std::string> ids;

 private:
  uint32_t partitions_ = 4;
  int member_seq_ = 0;
};

}  // namespace converge::outbox_test

#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <thread>

extern char** environ;

namespace converge::outbox_test {

// Starts `argv` as a child process; returns its pid (or -1).
inline pid_t Spawn(const std::vector<std::string>& args) {
  std::vector<std::string> copy = args;
  std::vector<char*> argv;
  for (std::string& a : copy) argv.push_back(a.data());
  argv.push_back(nullptr);
  pid_t pid = -1;
  if (posix_spawn(&pid, argv[0], nullptr, nullptr, argv.data(), environ) != 0) return -1;
  return pid;
}

// Waits for the child; returns its exit code, or 128 + signal.
inline int WaitExit(pid_t pid) {
  int status = 0;
  while (waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) return -1;
  }
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return -1;
}

// Polls for a condition an external process brings about (a file appearing, rows arriving),
// up to `timeout_ms`. Returns whether it held.
template <typename Pred>
bool Eventually(Pred pred, int64_t timeout_ms) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  while (!pred()) {
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  return true;
}

inline bool FileExists(const std::string& path) { return access(path.c_str(), F_OK) == 0; }

// The relay killed with SIGKILL in the middle of a batch (after some chunks reached the log,
// before its rows were deleted), then a new relay process: every event reaches the consumer
// exactly once. `p` must be opened; its log is closed while the helper processes run.
inline void KillRelayMidBatchAndVerify(Pipeline& p, const std::string& source, int events) {
  ASSERT_OK(p.Write(events, 7, 25));
  p.CloseLog();
  const std::string marker = p.dir.Sub("paused");
  pid_t pid = Spawn({OUTBOX_RELAY_HELPER, "--source", source, "--log-dir", p.dir.Sub("log"),
                     "--batch", "100", "--chunk", "30", "--pause-at", "relay.chunk_published",
                     "--pause-hit", "5", "--marker", marker});
  ASSERT_GT(pid, 0);
  ASSERT_TRUE(Eventually([&] { return FileExists(marker); }, 60'000)) << "helper never paused";
  ASSERT_EQ(kill(pid, SIGKILL), 0);
  EXPECT_EQ(WaitExit(pid), 128 + SIGKILL);
  const int64_t left = CountRows(*p.service, "converge_outbox");
  EXPECT_GT(left, 0);       // killed before the batch's rows were deleted
  EXPECT_LT(left, events);  // after earlier batches completed
  // A new relay process finishes the job.
  pid = Spawn({OUTBOX_RELAY_HELPER, "--source", source, "--log-dir", p.dir.Sub("log")});
  ASSERT_GT(pid, 0);
  EXPECT_EQ(WaitExit(pid), 0);
  EXPECT_EQ(CountRows(*p.service, "converge_outbox"), 0);
  ASSERT_OK(p.OpenLog());
  EXPECT_EQ(*p.LogEventCount(), static_cast<uint64_t>(events));  // no duplicate in the log
  auto c = p.NewConsumer();
  ASSERT_TRUE(c.ok());
  auto n = Pipeline::DrainConsumer(**c);
  ASSERT_TRUE(n.ok()) << n.status().ToString();
  EffectSummary e = SummarizeEffects(*p.consumer);
  EXPECT_EQ(e.rows, events);
  EXPECT_EQ(e.applied_sum, events);
  EXPECT_EQ(e.violations, 0);
}

}  // namespace converge::outbox_test
