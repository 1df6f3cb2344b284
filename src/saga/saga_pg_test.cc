// The saga log in PostgreSQL (SagaOrchestratorOptions::postgres_conninfo), on a real server
// started by the test: sagas complete, an orchestrator restart resumes the sagas in flight from
// the table, compaction rewrites the table, and a second orchestrator on the table is refused.
#include <gtest/gtest.h>

#include <condition_variable>
#include <mutex>

#include "converge/log.h"
#include "converge/saga.h"
#include "converge/sql.h"
#include "support/postgres_server.h"

namespace converge {
namespace {

class SagaPgTest : public ::testing::Test {
 protected:
  void SetUp() override {
    testing::PostgresServerOptions options;
    options.settings = {"max_prepared_transactions=64"};
    Result<std::unique_ptr<testing::PostgresServer>> pg = testing::PostgresServer::Start(options);
    // Integration suites fail, never skip, when their server is missing (postgres_server.h).
    ASSERT_TRUE(pg.ok()) << pg.status().ToString();
    pg_ = std::move(pg).value();
    dir_ =
        std::make_unique<testing::TempDir>(testing::TempDir::Create("converge-saga-pg-").value());
    LogOptions lo;
    lo.dir = dir_->path() + "/log";
    log_ = Log::Open(Env::Default(), lo).value();
    ledger_ = NewMemorySagaLedger(Env::Default().clock());
    core_ = std::make_unique<SagaParticipantCore>(*ledger_);
    for (const char* t : {"a.do", "a.undo", "b.do"}) {
      core_->Handle(t, [](const SagaCommand&, std::string*) { return Status::Ok(); });
    }
    StartParticipants();
  }

  void TearDown() override {
    orch_.reset();
    participants_.clear();
    log_.reset();
    pg_.reset();
  }

  void StartParticipants() {
    participants_.clear();
    for (const char* topic : {"pa", "pb"}) {
      SagaParticipantOptions po;
      po.topic = topic;
      participants_.push_back(SagaParticipant::Start(Env::Default(), *log_, *core_, po).value());
    }
  }

  Status Open(uint64_t compact_after_bytes = 256ull << 20,
              const std::function<void(SagaOrchestratorOptions&)>& adjust = nullptr) {
    orch_.reset();
    SagaOrchestratorOptions o;
    o.postgres_conninfo = pg_->ConnInfo();
    o.compact_after_bytes = compact_after_bytes;
    if (adjust) adjust(o);
    o.on_finished = [this](const SagaSummary&) {
      std::lock_guard<std::mutex> g(mu_);
      ++finished_;
      cv_.notify_all();
    };
    CONVERGE_ASSIGN_OR_RETURN(orch_, SagaOrchestrator::Open(Env::Default(), *log_, o));
    return orch_->RegisterDefinition(SagaDefinitionBuilder("pg", 1)
                                         .Step("a", "pa", "a.do", "a.undo")
                                         .Step("b", "pb", "b.do")
                                         .Timeout(1000)
                                         .Build()
                                         .value());
  }

  bool WaitFinished(int n) {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, std::chrono::seconds(60), [&] { return finished_ >= n; });
  }

  std::unique_ptr<testing::PostgresServer> pg_;
  std::unique_ptr<testing::TempDir> dir_;
  std::unique_ptr<Log> log_;
  std::unique_ptr<SagaLedger> ledger_;
  std::unique_ptr<SagaParticipantCore> core_;
  std::vector<std::unique_ptr<SagaParticipant>> participants_;
  std::unique_ptr<SagaOrchestrator> orch_;
  std::mutex mu_;
  std::condition_variable cv_;
  int finished_ = 0;
};

TEST_F(SagaPgTest, SagasCompleteAndResumeFromTheTable) {
  ASSERT_TRUE(Open().ok());
  for (int i = 0; i < 20; ++i) {
    SagaStartRequest req;
    req.definition = "pg";
    ASSERT_TRUE(orch_->Start(req).ok());
  }
  ASSERT_TRUE(WaitFinished(20));
  EXPECT_EQ(orch_->stats().completed, 20u);
  EXPECT_NE(pg_->Query("postgres", "SELECT count(*) FROM converge_saga_log").value(), "0");

  // A second orchestrator on the same table is refused.
  SagaOrchestratorOptions other;
  other.postgres_conninfo = pg_->ConnInfo();
  EXPECT_EQ(SagaOrchestrator::Open(Env::Default(), *log_, other).status().code(),
            StatusCode::kFailedPrecondition);

  // Participants stop; a saga starts; the orchestrator restarts and resumes it from the table.
  participants_.clear();
  SagaStartRequest req;
  req.definition = "pg";
  req.id = "resumed";
  ASSERT_TRUE(orch_->Start(req).ok());
  orch_.reset();
  {
    std::lock_guard<std::mutex> g(mu_);
    finished_ = 0;
  }
  ASSERT_TRUE(Open().ok());
  // No participant runs yet, so the recovered saga is still waiting for its first step.
  EXPECT_EQ(orch_->Describe("resumed")->summary.state, SagaState::kRunning);
  StartParticipants();
  ASSERT_TRUE(WaitFinished(1));
  EXPECT_EQ(orch_->Describe("resumed")->summary.state, SagaState::kCompleted);
  EXPECT_EQ(orch_->List(SagaListFilter{}).size(), 21u);
}

TEST_F(SagaPgTest, CompactionRewritesTheTable) {
  ASSERT_TRUE(Open(4096).ok());
  for (int i = 0; i < 40; ++i) {
    SagaStartRequest req;
    req.definition = "pg";
    ASSERT_TRUE(orch_->Start(req).ok());
    ASSERT_TRUE(WaitFinished(i + 1));
  }
  EXPECT_GT(orch_->stats().compactions, 0u);
  orch_.reset();
  ASSERT_TRUE(Open(4096).ok());
  EXPECT_EQ(orch_->List(SagaListFilter{}).size(), 40u);
  EXPECT_EQ(orch_->ListDefinitions().size(), 1u);
}

// The participant's ledger in PostgreSQL: the effect and the entry commit together; a refusal
// rolls the effect back; a duplicate does not run the handler again.
TEST_F(SagaPgTest, SqlLedgerOnPostgres) {
  ASSERT_TRUE(pg_->Query("postgres", "CREATE TABLE holds(saga TEXT PRIMARY KEY)").ok());
  auto ledger = SqlSagaLedger::OpenPostgres(Env::Default(), pg_->ConnInfo(), {}).value();
  SagaParticipantCore core(*ledger);
  bool refuse = false;
  int runs = 0;
  core.Handle("hold", [&](const SagaCommand& c, std::string*) {
    ++runs;
    std::vector<SqlStatement> w = {
        {"INSERT INTO holds(saga) VALUES($1)", {std::string(c.saga_id)}}};
    CONVERGE_RETURN_IF_ERROR(ledger->Execute(w));
    return refuse ? FailedPreconditionError("no") : Status::Ok();
  });
  auto cmd = [](const char* saga) {
    SagaCommand c;
    c.saga_id = saga;
    c.type = "hold";
    c.attempt = 1;
    return c;
  };
  EXPECT_EQ(core.Process(cmd("p1")).outcome, SagaReply::Outcome::kOk);
  EXPECT_EQ(core.Process(cmd("p1")).outcome, SagaReply::Outcome::kOk);
  EXPECT_EQ(runs, 1);
  refuse = true;
  EXPECT_EQ(core.Process(cmd("p2")).outcome, SagaReply::Outcome::kFailed);
  EXPECT_EQ(pg_->Query("postgres", "SELECT count(*) FROM holds").value(), "1");
  EXPECT_EQ(pg_->Query("postgres", "SELECT count(*) FROM converge_saga_ledger").value(), "2");
}

// The saga log configured with a postgres:// URI and a connect timeout (the conninfo is passed
// to the database layer whole).
TEST_F(SagaPgTest, SagaLogOnAUriConninfo) {
  ASSERT_TRUE(Open(256ull << 20, [&](SagaOrchestratorOptions& o) {
                o.postgres_conninfo =
                    "postgresql://postgres@127.0.0.1:" + std::to_string(pg_->port()) +
                    "/postgres?application_name=converge-saga-log";
                o.postgres_connect_timeout_ms = 3'000;
              }).ok());
  SagaStartRequest req;
  req.definition = "pg";
  ASSERT_TRUE(orch_->Start(req).ok());
  ASSERT_TRUE(WaitFinished(1));
  EXPECT_EQ(pg_->Query("postgres",
                       "SELECT count(*) FROM pg_stat_activity WHERE application_name = "
                       "'converge-saga-log'")
                .value(),
            "1");
}

// A write to the saga log that waits on a lock is cancelled by the statement timeout: the
// batch fails (its requests get Unavailable, nothing of it stays) instead of blocking the
// orchestrator; once the lock is gone, sagas run again.
TEST_F(SagaPgTest, AWriteStuckOnALockFailsWithinTheStatementTimeout) {
  ASSERT_TRUE(Open(256ull << 20, [](SagaOrchestratorOptions& o) {
                o.postgres_statement_timeout_ms = 500;
              }).ok());
  sql::PostgresOptions lo;
  lo.conninfo = pg_->ConnInfo();
  std::unique_ptr<sql::Database> locker = sql::Database::ConnectPostgres(lo).value();
  // SHARE mode blocks INSERT and DELETE but not the reads the orchestrator replays with.
  ASSERT_TRUE(locker->ExecuteScript("BEGIN; LOCK TABLE converge_saga_log IN SHARE MODE").ok());
  SagaStartRequest req;
  req.definition = "pg";
  req.id = "blocked";
  Result<std::string> blocked = orch_->Start(req);
  EXPECT_EQ(blocked.status().code(), StatusCode::kUnavailable) << blocked.status().ToString();
  EXPECT_FALSE(orch_->Describe("blocked").ok());
  ASSERT_TRUE(locker->ExecuteScript("ROLLBACK").ok());
  Result<std::string> started = orch_->Start(req);
  ASSERT_TRUE(started.ok()) << started.status().ToString();
  ASSERT_TRUE(WaitFinished(1));
  EXPECT_EQ(orch_->Describe("blocked")->summary.state, SagaState::kCompleted);
}

}  // namespace
}  // namespace converge
