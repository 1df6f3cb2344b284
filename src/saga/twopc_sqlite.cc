// The SQLite participant of two-phase commit (see converge/twopc.h for the design): the branch's
// write transaction stays open from prepare to decision, the work is journaled in
// "<path>-2pc", and converge_2pc_done makes a re-execution after a crash happen at most once.
#include <functional>
#include <mutex>
#include <optional>

#include "converge/sql.h"
#include "converge/twopc.h"
#include "saga/records.h"

namespace converge {
namespace {

using saga_internal::ByteReader;
using saga_internal::PutString;
using saga_internal::PutVarint;

std::string EncodeWork(std::span<const SqlStatement> work) {
  std::string out;
  PutVarint(&out, work.size());
  for (const SqlStatement& s : work) {
    PutString(&out, s.sql);
    PutVarint(&out, s.params.size());
    for (const auto& p : s.params) {
      out.push_back(p ? 1 : 0);
      if (p) PutString(&out, *p);
    }
  }
  return out;
}

// A statement the database refused (constraint, bad SQL, wrong parameters) is a no vote:
// Aborted. Busy (Unavailable) and the rest keep their code.
Status Refused(Status s) {
  switch (s.code()) {
    case StatusCode::kAlreadyExists:
    case StatusCode::kFailedPrecondition:
    case StatusCode::kInvalidArgument:
      return AbortedError(s.message());
    default:
      return s;
  }
}

std::vector<sql::Value> Values(const std::vector<std::optional<std::string>>& params) {
  std::vector<sql::Value> out;
  out.reserve(params.size());
  for (const auto& p : params) out.push_back(p ? sql::Value::Text(*p) : sql::Value::Null());
  return out;
}

Result<std::vector<SqlStatement>> DecodeWork(std::string_view bytes) {
  ByteReader in(bytes);
  uint64_t n = 0;
  if (!in.Varint(&n) || n > 100'000) return DataLossError("2pc journal: malformed work");
  std::vector<SqlStatement> work;
  for (uint64_t i = 0; i < n; ++i) {
    SqlStatement s;
    std::string_view sql;
    uint64_t np = 0;
    if (!in.String(&sql) || !in.Varint(&np) || np > 32766) {
      return DataLossError("2pc journal: malformed work");
    }
    s.sql.assign(sql);
    for (uint64_t k = 0; k < np; ++k) {
      uint8_t present = 0;
      if (!in.U8(&present)) return DataLossError("2pc journal: malformed work");
      if (present) {
        std::string_view v;
        if (!in.String(&v)) return DataLossError("2pc journal: malformed work");
        s.params.emplace_back(std::string(v));
      } else {
        s.params.emplace_back(std::nullopt);
      }
    }
    work.push_back(std::move(s));
  }
  if (!in.done()) return DataLossError("2pc journal: malformed work");
  return work;
}

class SqliteParticipant : public TxParticipant {
 public:
  SqliteParticipant(Env& env, SqliteParticipantOptions options)
      : env_(env), options_(std::move(options)) {}

  ~SqliteParticipant() override {
    // An open prepared transaction is rolled back by SQLite as the connection closes, exactly
    // as in a crash; its journal entry keeps the vote.
  }

  Status Init() {
    CONVERGE_ASSIGN_OR_RETURN(db_, OpenDb(options_.path));
    CONVERGE_ASSIGN_OR_RETURN(journal_, OpenDb(options_.path + "-2pc"));
    CONVERGE_RETURN_IF_ERROR(Exec(*db_,
                                  "CREATE TABLE IF NOT EXISTS converge_2pc_done(gid TEXT PRIMARY "
                                  "KEY, done_at INTEGER NOT NULL)"));
    return Exec(*journal_,
                "CREATE TABLE IF NOT EXISTS prepared(gid TEXT PRIMARY KEY, work BLOB NOT NULL, "
                "prepared_at INTEGER NOT NULL)");
  }

  const std::string& name() const override { return options_.name; }

  Status Prepare(const std::string& gid, std::span<const SqlStatement> work,
                 int64_t timeout_ms) override {
    std::lock_guard<std::mutex> lock(mu_);
    if (!held_.empty()) {
      // One writer at a time: another branch holds the database until its decision.
      return UnavailableError(options_.name + ": busy with prepared transaction '" + held_ + "'");
    }
    CONVERGE_RETURN_IF_ERROR(Exec(*db_, "BEGIN IMMEDIATE"));
    Status s = RunWork(gid, work);
    if (s.ok()) {
      s = Run(*journal_, "INSERT INTO prepared(gid, work, prepared_at) VALUES(?1, ?2, ?3)",
              {gid, EncodeWork(work), std::to_string(env_.clock().NowWallMicros())});
      if (s.code() == StatusCode::kAborted) {
        s = AbortedError(options_.name + ": gid '" + gid + "' was prepared before");
      }
    }
    if (!s.ok()) {
      Exec(*db_, "ROLLBACK").IgnoreError();
      return s;
    }
    held_ = gid;
    return Status::Ok();
  }

  Status CommitPrepared(const std::string& gid) override {
    std::lock_guard<std::mutex> lock(mu_);
    if (held_ == gid) {
      CONVERGE_RETURN_IF_ERROR(Exec(*db_, "COMMIT"));
      held_.clear();
      ForgetJournal(gid);
      MaybeCleanDone();
      return Status::Ok();
    }
    std::optional<std::string> recorded;
    CONVERGE_RETURN_IF_ERROR(Run(*journal_, "SELECT work FROM prepared WHERE gid = ?1", {gid},
                                 [&](const sql::Row& row) { recorded.emplace(row.Bytes(0)); }));
    if (!recorded) return Status::Ok();  // resolved already
    bool done = false;
    CONVERGE_RETURN_IF_ERROR(Run(*db_, "SELECT 1 FROM converge_2pc_done WHERE gid = ?1", {gid},
                                 [&](const sql::Row&) { done = true; }));
    if (!done) {
      // The participant restarted after voting: re-execute the recorded work.
      if (!held_.empty()) {
        return UnavailableError(options_.name + ": busy with prepared transaction '" + held_ + "'");
      }
      CONVERGE_ASSIGN_OR_RETURN(std::vector<SqlStatement> work, DecodeWork(*recorded));
      CONVERGE_RETURN_IF_ERROR(Exec(*db_, "BEGIN IMMEDIATE"));
      Status s = RunWork(gid, work);
      if (s.ok()) s = Exec(*db_, "COMMIT");
      if (!s.ok()) {
        Exec(*db_, "ROLLBACK").IgnoreError();
        if (s.code() == StatusCode::kUnavailable) return s;
        return DataLossError(options_.name + ": re-executing prepared transaction '" + gid +
                             "' after a restart failed (" + s.ToString() + "); it stays in doubt");
      }
    }
    ForgetJournal(gid);
    return Status::Ok();
  }

  Status RollbackPrepared(const std::string& gid) override {
    std::lock_guard<std::mutex> lock(mu_);
    if (held_ == gid) {
      CONVERGE_RETURN_IF_ERROR(Exec(*db_, "ROLLBACK"));
      held_.clear();
    }
    return Run(*journal_, "DELETE FROM prepared WHERE gid = ?1", {gid});
  }

  Result<std::vector<std::string>> ListPrepared(const std::string& prefix) override {
    std::lock_guard<std::mutex> lock(mu_);
    std::vector<std::string> out;
    CONVERGE_RETURN_IF_ERROR(
        Run(*journal_,
            "SELECT gid FROM prepared WHERE substr(gid, 1, length(?1)) = ?1 ORDER BY prepared_at",
            {prefix}, [&](const sql::Row& row) { out.emplace_back(row.Bytes(0)); }));
    return out;
  }

 private:
  // The database and the journal: WAL, synchronous=FULL (a vote and a commit survive a power
  // loss), waiting up to busy_timeout_ms for another connection's lock.
  Result<std::unique_ptr<sql::Database>> OpenDb(const std::string& path) const {
    sql::SqliteOptions o;
    o.path = path;
    o.busy_timeout_ms = options_.busy_timeout_ms;
    o.synchronous = "full";
    o.wal = true;
    return sql::Database::OpenSqlite(o);
  }

  static Status Exec(sql::Database& db, const char* sql) { return Refused(db.ExecuteScript(sql)); }

  // One statement with text/NULL parameters; `on_row` (optional) sees each result row.
  static Status Run(sql::Database& db, const std::string& sql,
                    const std::vector<std::optional<std::string>>& params,
                    const std::function<void(const sql::Row&)>& on_row = nullptr) {
    const std::vector<sql::Value> values = Values(params);
    Result<int64_t> r = on_row ? db.Query(sql, values,
                                          [&](const sql::Row& row) {
                                            on_row(row);
                                            return Status::Ok();
                                          })
                               : db.Execute(sql, values);
    return Refused(r.status());
  }

  // Inside an open transaction: the work, then the gid in converge_2pc_done.
  Status RunWork(const std::string& gid, std::span<const SqlStatement> work) {
    for (size_t i = 0; i < work.size(); ++i) {
      Status s = Run(*db_, work[i].sql, work[i].params);
      if (!s.ok()) return s.WithContext(options_.name + ": statement " + std::to_string(i));
    }
    Status s = Run(*db_, "INSERT INTO converge_2pc_done(gid, done_at) VALUES(?1, ?2)",
                   {gid, std::to_string(env_.clock().NowWallMicros())});
    if (s.code() == StatusCode::kAborted) {
      return AbortedError(options_.name + ": gid '" + gid + "' was committed before");
    }
    return s;
  }

  void ForgetJournal(const std::string& gid) {
    // A leftover entry is harmless: the next commit finds the gid done and removes it.
    Run(*journal_, "DELETE FROM prepared WHERE gid = ?1", {gid}).IgnoreError();
  }

  void MaybeCleanDone() {
    if (++commits_ % 1000 != 0) return;
    const int64_t cutoff = env_.clock().NowWallMicros() - options_.done_retention_ms * 1000;
    Run(*db_,
        "DELETE FROM converge_2pc_done WHERE rowid IN (SELECT rowid FROM converge_2pc_done "
        "WHERE done_at < ?1 LIMIT 1000)",
        {std::to_string(cutoff)})
        .IgnoreError();
  }

  Env& env_;
  SqliteParticipantOptions options_;
  std::mutex mu_;
  std::unique_ptr<sql::Database> db_;
  std::unique_ptr<sql::Database> journal_;
  std::string held_;  // gid whose transaction is open on db_
  uint64_t commits_ = 0;
};

}  // namespace

Result<std::unique_ptr<TxParticipant>> NewSqliteParticipant(Env& env,
                                                            SqliteParticipantOptions options) {
  if (options.name.empty() || options.name.size() > 64 || options.path.empty()) {
    return InvalidArgumentError("sqlite participant: name (1..64) and path are required");
  }
  auto p = std::make_unique<SqliteParticipant>(env, std::move(options));
  CONVERGE_RETURN_IF_ERROR(p->Init());
  return std::unique_ptr<TxParticipant>(std::move(p));
}

}  // namespace converge
