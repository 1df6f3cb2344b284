// Two-phase commit across two real PostgreSQL servers (started by the test, as the postgres
// user when running as root): commits, aborts, a timeout before the decision, a coordinator
// crash before and after the decision, a participant (server) crash between prepare and commit.
#include <gtest/gtest.h>

#include <filesystem>

#include "converge/twopc.h"
#include "support/postgres_server.h"

namespace converge {
namespace {

class TwoPhasePgTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    for (int i = 0; i < 2; ++i) {
      testing::PostgresServerOptions options;
      options.settings = {"max_prepared_transactions=64"};
      Result<std::unique_ptr<testing::PostgresServer>> pg =
          testing::PostgresServer::Start(options);
      // Integration suites fail, never skip, when their server is missing (postgres_server.h).
      if (!pg.ok()) {
        start_error_ = pg.status().ToString();
        return;
      }
      servers_[i] = std::move(pg).value();
      ASSERT_TRUE(servers_[i]->CreateDatabase("bank").ok());
      ASSERT_TRUE(servers_[i]
                      ->Query("bank", "CREATE TABLE accounts(id TEXT PRIMARY KEY, balance INT)")
                      .ok());
    }
  }
  static void TearDownTestSuite() {
    servers_[0].reset();
    servers_[1].reset();
  }

  void SetUp() override {
    ASSERT_TRUE(start_error_.empty()) << "PostgreSQL did not start: " << start_error_;
    Result<testing::TempDir> dir = testing::TempDir::Create("converge-2pc-");
    ASSERT_TRUE(dir.ok());
    dir_ = std::make_unique<testing::TempDir>(std::move(dir).value());
    for (int i = 0; i < 2; ++i) {
      PostgresParticipantOptions o;
      o.name = i == 0 ? "east" : "west";
      o.conninfo = servers_[i]->ConnInfo("bank");
      o.max_connections = 4;
      parts_[i] = NewPostgresParticipant(o).value();
    }
  }

  void TearDown() override {
    coord_.reset();
    for (auto& s : servers_) {
      if (s != nullptr) s->Query("bank", "DELETE FROM accounts").status().IgnoreError();
    }
  }

  void Open(TwoPhaseFaultPoint fault = nullptr, int64_t prepare_timeout_ms = 10'000) {
    coord_.reset();
    TwoPhaseOptions o;
    o.dir = dir_->path() + "/coordinator";
    o.prepare_timeout_ms = prepare_timeout_ms;
    o.fault_point = std::move(fault);
    Result<std::unique_ptr<TwoPhaseCoordinator>> c =
        TwoPhaseCoordinator::Open(Env::Default(), o, {parts_[0].get(), parts_[1].get()});
    ASSERT_TRUE(c.ok()) << c.status().ToString();
    coord_ = std::move(c).value();
  }

  // A postgres:// URI of server `i`'s database "bank".
  static std::string Uri(int i, const std::string& query = "") {
    return "postgresql://postgres@127.0.0.1:" + std::to_string(servers_[i]->port()) + "/bank" +
           query;
  }

  std::vector<TwoPhaseBranch> Transfer(const std::string& id, const std::string& west_id) {
    TwoPhaseBranch a;
    a.participant = parts_[0].get();
    a.work = {{"INSERT INTO accounts(id, balance) VALUES($1, -5)", {id}}};
    TwoPhaseBranch b;
    b.participant = parts_[1].get();
    b.work = {{"INSERT INTO accounts(id, balance) VALUES($1, 5)", {west_id}}};
    return {a, b};
  }

  std::string Rows(int server, const std::string& id) {
    return servers_[server]
        ->Query("bank", "SELECT count(*) FROM accounts WHERE id = '" + id + "'")
        .value_or("?");
  }
  std::string Prepared(int server) {
    return servers_[server]
        ->Query("bank", "SELECT count(*) FROM pg_prepared_xacts WHERE database = 'bank'")
        .value_or("?");
  }

  static inline std::unique_ptr<testing::PostgresServer> servers_[2];
  static inline std::string start_error_;
  std::unique_ptr<testing::TempDir> dir_;
  std::unique_ptr<TxParticipant> parts_[2];
  std::unique_ptr<TwoPhaseCoordinator> coord_;
};

TEST_F(TwoPhasePgTest, CommitsInBothDatabases) {
  Open();
  auto br = Transfer("t1", "t1");
  Result<TwoPhaseResult> r = coord_->Execute(br);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->outcome, TxOutcome::kCommitted);
  EXPECT_TRUE(r->completed);
  EXPECT_EQ(Rows(0, "t1"), "1");
  EXPECT_EQ(Rows(1, "t1"), "1");
  EXPECT_EQ(Prepared(0), "0");
  EXPECT_EQ(Prepared(1), "0");
}

TEST_F(TwoPhasePgTest, AFailingBranchAbortsBoth) {
  Open();
  ASSERT_TRUE(servers_[1]->Query("bank", "INSERT INTO accounts VALUES('taken', 0)").ok());
  auto br = Transfer("t2", "taken");  // west violates its primary key
  Result<TwoPhaseResult> r = coord_->Execute(br);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->outcome, TxOutcome::kAborted);
  EXPECT_NE(r->reason.find("west"), std::string::npos) << r->reason;
  EXPECT_EQ(Rows(0, "t2"), "0");
  EXPECT_EQ(Prepared(0), "0");
  EXPECT_EQ(Prepared(1), "0");
}

TEST_F(TwoPhasePgTest, ATimeoutBeforeTheDecisionAborts) {
  Open(nullptr, 500);
  auto br = Transfer("t3", "t3");
  br[1].work.insert(br[1].work.begin(), SqlStatement{"SELECT pg_sleep(3)", {}});
  Result<TwoPhaseResult> r = coord_->Execute(br);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->outcome, TxOutcome::kAborted);
  EXPECT_EQ(Rows(0, "t3"), "0");
  EXPECT_EQ(Rows(1, "t3"), "0");
  EXPECT_EQ(Prepared(0), "0");
}

// The coordinator crashes between prepare and commit, after its decision is logged: both
// databases hold a prepared transaction; the restarted coordinator commits both.
TEST_F(TwoPhasePgTest, CoordinatorCrashAfterTheDecisionCommitsBoth) {
  Open([](std::string_view p) { return p == "decided" ? InternalError("crash") : Status::Ok(); });
  auto br = Transfer("t4", "t4");
  ASSERT_FALSE(coord_->Execute(br).ok());
  EXPECT_EQ(Prepared(0), "1");
  EXPECT_EQ(Prepared(1), "1");
  EXPECT_EQ(Rows(0, "t4"), "0");  // not visible before the commit
  Open();                         // recovery
  EXPECT_EQ(Rows(0, "t4"), "1");
  EXPECT_EQ(Rows(1, "t4"), "1");
  EXPECT_EQ(Prepared(0), "0");
  EXPECT_EQ(Prepared(1), "0");
}

TEST_F(TwoPhasePgTest, CoordinatorCrashAfterOneCommitCommitsTheOther) {
  Open([](std::string_view p) {
    return p == "committed-one" ? InternalError("crash") : Status::Ok();
  });
  auto br = Transfer("t5", "t5");
  ASSERT_FALSE(coord_->Execute(br).ok());
  EXPECT_EQ(Rows(0, "t5"), "1");
  EXPECT_EQ(Prepared(1), "1");
  Open();
  EXPECT_EQ(Rows(1, "t5"), "1");
  EXPECT_EQ(Prepared(1), "0");
}

TEST_F(TwoPhasePgTest, CoordinatorCrashBeforeTheDecisionRollsBackBoth) {
  Open([](std::string_view p) { return p == "prepared" ? InternalError("crash") : Status::Ok(); });
  auto br = Transfer("t6", "t6");
  ASSERT_FALSE(coord_->Execute(br).ok());
  EXPECT_EQ(Prepared(0), "1");
  Open();
  EXPECT_EQ(Rows(0, "t6"), "0");
  EXPECT_EQ(Rows(1, "t6"), "0");
  EXPECT_EQ(Prepared(0), "0");
  EXPECT_EQ(Prepared(1), "0");
}

// A participant's server is killed (SIGKILL) between prepare and commit, together with the
// coordinator: the prepared transaction survives the server's crash recovery, and the
// restarted coordinator commits it once the server is back.
TEST_F(TwoPhasePgTest, ParticipantCrashBetweenPrepareAndCommit) {
  Open([](std::string_view p) { return p == "decided" ? InternalError("crash") : Status::Ok(); });
  auto br = Transfer("t7", "t7");
  ASSERT_FALSE(coord_->Execute(br).ok());
  coord_.reset();
  ASSERT_TRUE(servers_[1]->Kill().ok());
  // The coordinator restarts while west is down: east is committed, west stays in doubt.
  Open();
  EXPECT_EQ(Rows(0, "t7"), "1");
  EXPECT_EQ(coord_->stats().in_doubt, 1u);
  ASSERT_TRUE(servers_[1]->Restart().ok()) << servers_[1]->LogTail();
  // The prepared transaction survived the crash: it is still prepared, or the coordinator's
  // own retry already committed it once the server was back (a commit of it needs it to exist).
  EXPECT_TRUE(Prepared(1) == "1" || Rows(1, "t7") == "1");
  Result<TwoPhaseRecovery> rec = coord_->Recover();
  ASSERT_TRUE(rec.ok());
  EXPECT_EQ(Rows(1, "t7"), "1");
  EXPECT_EQ(Prepared(1), "0");
  EXPECT_EQ(coord_->stats().in_doubt, 0u);
}

TEST_F(TwoPhasePgTest, PostgresAndSqliteTogether) {
  SqliteParticipantOptions so;
  so.name = "local";
  so.path = dir_->path() + "/local.db";
  std::unique_ptr<TxParticipant> local = NewSqliteParticipant(Env::Default(), so).value();
  TwoPhaseOptions o;
  o.dir = dir_->path() + "/mixed";
  auto coord = TwoPhaseCoordinator::Open(Env::Default(), o, {parts_[0].get(), local.get()}).value();
  TwoPhaseBranch a;
  a.participant = parts_[0].get();
  a.work = {{"INSERT INTO accounts(id, balance) VALUES($1, 1)", {"mixed"}}};
  TwoPhaseBranch b;
  b.participant = local.get();
  b.work = {{"CREATE TABLE IF NOT EXISTS ledger(id TEXT PRIMARY KEY)", {}},
            {"INSERT INTO ledger(id) VALUES(?1)", {"mixed"}}};
  std::vector<TwoPhaseBranch> br = {a, b};
  Result<TwoPhaseResult> r = coord->Execute(br);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->outcome, TxOutcome::kCommitted);
  EXPECT_EQ(Rows(0, "mixed"), "1");
}

// Participants configured with postgres:// URIs (with and without their own parameters) and a
// connect timeout: the conninfo is used as given, never extended by string concatenation.
TEST_F(TwoPhasePgTest, ParticipantsWithUriConninfosCommit) {
  for (int i = 0; i < 2; ++i) {
    PostgresParticipantOptions o;
    o.name = i == 0 ? "east" : "west";
    o.conninfo = i == 0 ? Uri(0) : Uri(1, "?application_name=converge-2pc&connect_timeout=7");
    o.connect_timeout_ms = 3'000;
    o.statement_timeout_ms = 5'000;
    o.max_connections = 2;
    parts_[i] = NewPostgresParticipant(o).value();
  }
  Open();
  const auto branches = Transfer("uri-1", "uri-2");
  Result<TwoPhaseResult> r = coord_->Execute(branches);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->outcome, TxOutcome::kCommitted) << r->reason;
  EXPECT_EQ(Rows(0, "uri-1"), "1");
  EXPECT_EQ(Rows(1, "uri-2"), "1");
}

}  // namespace
}  // namespace converge
