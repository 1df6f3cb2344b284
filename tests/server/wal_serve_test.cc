// The WAL outbox inside `converge serve` (relays: mode wal), black box: events a service emits
// with pg_logical_emit_message reach the server's log; the server killed with SIGKILL while
// they stream and started again holds every committed event exactly once, in commit order;
// the slot lag is a metric. A real PostgreSQL 15 with wal_level=logical.
#include <gtest/gtest.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>

#include <chrono>
#include <set>
#include <string>
#include <thread>

#include "converge/log.h"
#include "converge/relay.h"
#include "converge/sql.h"
#include "serve_process.h"
#include "support/postgres_server.h"
#include "support/run_command.h"
#include "support/temp_dir.h"
#include "test_util.h"

extern char** environ;

namespace converge {
namespace {

using testing::ServeProcess;

std::string Emit(int n) {
  return "SELECT pg_logical_emit_message(true, 'converge:payments', json_build_object("
         "'specversion','1.0','id','pay-" +
         std::to_string(n) +
         "','source','/payments','type','payment.made','partitionkey','acct-1','data',"
         "json_build_object('n'," +
         std::to_string(n) + "))::text)";
}

TEST(WalServeTest, SigkillWhileStreamingThenRestartHasEveryEventOnceInOrder) {
  testing::PostgresServerOptions po;
  po.settings = {"wal_level=logical", "max_replication_slots=4", "max_wal_senders=4"};
  auto pg = testing::PostgresServer::Start(po);
  ASSERT_TRUE(pg.ok()) << pg.status().ToString();
  ASSERT_OK((*pg)->CreateDatabase("payments"));
  const std::string conninfo = (*pg)->ConnInfo("payments");
  ASSERT_OK(CreateWalSlot(conninfo, "payments_outbox", "converge_outbox"));
  const std::string config =
      "relays:\n"
      "  sink:\n"
      "    partitions: 1\n"
      "  sources:\n"
      "    - name: payments\n"
      "      database: '" +
      conninfo +
      "'\n"
      "      mode: wal\n"
      "      wal_slot: payments_outbox\n"
      "      batch_max_events: 20\n"
      "      poll_interval_ms: 20\n";
  // The data directory outlives each server process.
  auto scratch = testing::TempDir::Create("wal_serve-");
  ASSERT_TRUE(scratch.ok());
  const std::string data_dir = scratch->path() + "/data";
  auto server = std::make_unique<ServeProcess>(config, data_dir);
  ASSERT_OK(server->Start());

  // A writer emits 600 events, one per transaction; the server is killed midway.
  sql::PostgresOptions o;
  o.conninfo = conninfo;
  auto db = sql::Database::ConnectPostgres(o);
  ASSERT_TRUE(db.ok()) << db.status().ToString();
  constexpr int kEvents = 600;
  for (int i = 0; i < kEvents / 2; ++i) ASSERT_OK((*db)->Execute(Emit(i)).status());
  // Wait until the relay is streaming (some events published), then kill it mid-stream.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  for (;;) {
    testing::HttpResult m = testing::HttpCall(server->port(), "GET", "/metrics");
    if (m.body.find("converge_relay_published_total{source=\"payments\"} 0\n") ==
            std::string::npos &&
        m.body.find("converge_relay_published_total{source=\"payments\"}") != std::string::npos) {
      EXPECT_NE(m.body.find("converge_relay_wal_lag_bytes{source=\"payments\"}"),
                std::string::npos);
      EXPECT_NE(m.body.find("converge_relay_wal_lag_seconds{source=\"payments\"}"),
                std::string::npos);
      break;
    }
    ASSERT_LT(std::chrono::steady_clock::now(), deadline) << server->Log();
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  for (int i = kEvents / 2; i < kEvents; ++i) ASSERT_OK((*db)->Execute(Emit(i)).status());
  server->Kill();
  // A rolled-back transaction's message never arrives.
  Status rolled_back = (*db)->Transact([](sql::Transaction& tx) -> Status {
    CONVERGE_RETURN_IF_ERROR(tx.Execute(Emit(999999)).status());
    return AbortedError("roll back");
  });
  ASSERT_EQ(rolled_back.code(), StatusCode::kAborted);
  server.reset();
  server = std::make_unique<ServeProcess>(config, data_dir);
  ASSERT_OK(server->Start());
  // Until the slot confirmed everything emitted.
  const std::string end = *(*pg)->Query("payments", "SELECT pg_current_wal_lsn()::text");
  for (;;) {
    auto done =
        (*pg)->Query("payments", "SELECT confirmed_flush_lsn >= '" + end +
                                     "'::pg_lsn FROM pg_replication_slots WHERE slot_name = "
                                     "'payments_outbox'");
    if (done.ok() && *done == "t") break;
    ASSERT_LT(std::chrono::steady_clock::now(), deadline + std::chrono::seconds(60))
        << server->Log();
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ASSERT_EQ(*server->Signal(SIGTERM), 0);
  server->Kill();
  // The server's log, read directly: every event once, in emit (= commit) order.
  LogOptions lo;
  lo.dir = data_dir + "/log";
  auto log = Log::Open(Env::Default(), lo);
  ASSERT_TRUE(log.ok()) << log.status().ToString();
  auto batch = (*log)->Read("payments", 0, 0, 100'000, 64u << 20);
  ASSERT_TRUE(batch.ok()) << batch.status().ToString();
  std::vector<int> got;
  for (const StoredRecord& r : batch->records) {
    auto e = DecodeBinary(r.value);
    ASSERT_TRUE(e.ok());
    const std::string& d = e->data();
    got.push_back(std::stoi(d.substr(d.find(':') + 1)));
  }
  ASSERT_EQ(got.size(), static_cast<size_t>(kEvents));
  for (int i = 0; i < kEvents; ++i) EXPECT_EQ(got[i], i);
}

// `converge relay --create-slots` / `--drop-slots` make and remove the slots of a config's wal
// sources; a relay of a dropped slot fails with the documented error.
TEST(WalServeTest, RelayCommandCreatesAndDropsSlots) {
  testing::PostgresServerOptions po;
  po.settings = {"wal_level=logical", "max_replication_slots=4", "max_wal_senders=4"};
  auto pg = testing::PostgresServer::Start(po);
  ASSERT_TRUE(pg.ok()) << pg.status().ToString();
  auto scratch = testing::TempDir::Create("wal_relay_cli-");
  ASSERT_TRUE(scratch.ok());
  const std::string config_path = scratch->path() + "/relays.yaml";
  {
    std::FILE* f = std::fopen(config_path.c_str(), "w");
    ASSERT_NE(f, nullptr);
    const std::string yaml = "relays:\n  sources:\n    - name: pay\n      database: '" +
                             (*pg)->ConnInfo() + "'\n      mode: wal\n      wal_slot: pay_slot\n";
    std::fputs(yaml.c_str(), f);
    std::fclose(f);
  }
  const char* binary_env = std::getenv("CONVERGE_BINARY");
  ASSERT_NE(binary_env, nullptr) << "run the test through ctest";
  const std::string binary = binary_env;
  const std::string relay = binary + " relay --config " + config_path;
  auto slot_count = [&] {
    auto n = (*pg)->Query("postgres",
                          "SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'pay_slot' "
                          "AND plugin = 'pgoutput'");
    return n.ok() ? *n : n.status().ToString();
  };
  testing::CommandOutput created = testing::RunCommand(relay + " --create-slots 2>&1");
  EXPECT_EQ(created.exit_code, 0) << created.out;
  EXPECT_NE(created.out.find("slot pay_slot created"), std::string::npos) << created.out;
  EXPECT_EQ(slot_count(), "1");
  testing::CommandOutput again = testing::RunCommand(relay + " --create-slots 2>&1");
  EXPECT_EQ(again.exit_code, 0) << again.out;  // exists: fine
  EXPECT_NE(again.out.find("exists"), std::string::npos) << again.out;
  testing::CommandOutput dropped = testing::RunCommand(relay + " --drop-slots 2>&1");
  EXPECT_EQ(dropped.exit_code, 0) << dropped.out;
  EXPECT_EQ(slot_count(), "0");
  // A relay of the dropped slot: the clear error, exit 1.
  testing::CommandOutput run =
      testing::RunCommand(relay + " --log-dir " + scratch->path() + "/log --drain 2>&1");
  EXPECT_EQ(run.exit_code, 1) << run.out;
  EXPECT_NE(run.out.find("does not exist"), std::string::npos) << run.out;
}

// Table capture's initial snapshot interrupted by SIGKILL (the process that creates the slot and
// publishes the snapshot dies mid-snapshot): the slot is left without its snapshot record, a
// relay refuses it with the documented error, and dropping and creating it again recovers.
TEST(WalServeTest, CaptureSnapshotKilledMidwayIsRefusedThenRedone) {
  testing::PostgresServerOptions po;
  po.settings = {"wal_level=logical", "max_replication_slots=4", "max_wal_senders=4"};
  auto pg = testing::PostgresServer::Start(po);
  ASSERT_TRUE(pg.ok()) << pg.status().ToString();
  ASSERT_OK((*pg)->CreateDatabase("shop"));
  constexpr int kRows = 300'000;  // a snapshot that takes a while to publish
  ASSERT_TRUE((*pg)
                  ->Query("shop",
                          "CREATE TABLE items (id int PRIMARY KEY, note text); INSERT INTO items "
                          "SELECT i, 'n' || i FROM generate_series(1, " +
                              std::to_string(kRows) +
                              ") AS i; CREATE PUBLICATION shop_capture FOR TABLE items")
                  .ok());
  auto scratch = testing::TempDir::Create("wal_snapshot_kill-");
  ASSERT_TRUE(scratch.ok());
  const std::string config_path = scratch->path() + "/relays.yaml";
  {
    std::FILE* f = std::fopen(config_path.c_str(), "w");
    ASSERT_NE(f, nullptr);
    const std::string yaml = "relays:\n  sources:\n    - name: shop\n      database: '" +
                             (*pg)->ConnInfo("shop") +
                             "'\n      mode: wal\n      wal_slot: shop_slot\n"
                             "      wal_publication: shop_capture\n"
                             "      wal_capture_tables: true\n";
    std::fputs(yaml.c_str(), f);
    std::fclose(f);
  }
  const char* binary_env = std::getenv("CONVERGE_BINARY");
  ASSERT_NE(binary_env, nullptr) << "run the test through ctest";
  const std::string binary = binary_env;
  const std::string log_dir = scratch->path() + "/log";
  std::vector<std::string> args = {binary,           "relay",     "--config", config_path,
                                   "--create-slots", "--log-dir", log_dir};
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  pid_t pid = -1;
  ASSERT_EQ(posix_spawn(&pid, argv[0], nullptr, nullptr, argv.data(), environ), 0);
  // The snapshot is being read once its connection is there (the slot is persistent by then:
  // killed earlier, while still ephemeral, the slot vanishes with its session); the record
  // comes only when every row is in the log.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  for (;;) {
    auto n = (*pg)->Query("shop",
                          "SELECT count(*) FROM pg_stat_activity WHERE application_name = "
                          "'converge-snapshot'");
    if (n.ok() && *n == "1") break;
    ASSERT_LT(std::chrono::steady_clock::now(), deadline);
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  ASSERT_EQ(kill(pid, SIGKILL), 0);
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFSIGNALED(status));
  auto table = (*pg)->Query("shop", "SELECT to_regclass('converge_cdc_snapshot') IS NULL");
  ASSERT_TRUE(table.ok()) << table.status().ToString();
  if (*table == "f") {
    auto rows = (*pg)->Query("shop", "SELECT count(*) FROM converge_cdc_snapshot");
    ASSERT_TRUE(rows.ok());
    ASSERT_EQ(*rows, "0") << "the snapshot finished before the kill: make the table larger";
  }

  const std::string relay = binary + " relay --config " + config_path;
  testing::CommandOutput refused =
      testing::RunCommand(relay + " --log-dir " + log_dir + " --drain 2>&1");
  EXPECT_EQ(refused.exit_code, 1) << refused.out;
  EXPECT_NE(refused.out.find("never completed"), std::string::npos) << refused.out;

  testing::CommandOutput dropped = testing::RunCommand(relay + " --drop-slots 2>&1");
  ASSERT_EQ(dropped.exit_code, 0) << dropped.out;
  testing::CommandOutput created =
      testing::RunCommand(relay + " --create-slots --log-dir " + log_dir + " 2>&1");
  ASSERT_EQ(created.exit_code, 0) << created.out;
  testing::CommandOutput drained =
      testing::RunCommand(relay + " --log-dir " + log_dir + " --drain 2>&1");
  EXPECT_EQ(drained.exit_code, 0) << drained.out;
  // Every row is in the topic (rows of the interrupted snapshot too, with its lower version).
  LogOptions lo;
  lo.dir = log_dir;
  auto log = Log::Open(Env::Default(), lo);
  ASSERT_TRUE(log.ok()) << log.status().ToString();
  auto info = (*log)->DescribeTopic("public.items");
  ASSERT_TRUE(info.ok()) << info.status().ToString();
  uint64_t records = 0;
  for (const PartitionInfo& p : info->partitions) records += p.end_offset - p.start_offset;
  EXPECT_GE(records, static_cast<uint64_t>(kRows));
}

}  // namespace
}  // namespace converge
