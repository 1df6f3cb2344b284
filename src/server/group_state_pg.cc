#include "server/group_state_pg.h"

#include "core/record_log.h"
#include "groups/codec.h"
#include "lease/lease.h"
#include "sql/identifier.h"

namespace converge::server {

namespace record_log = ::converge::internal::record_log;

namespace {

class PgGroupState final : public ::converge::internal::groups::StateStore {
 public:
  PgGroupState(std::unique_ptr<sql::Database> db, PgGroupStateOptions options, uint64_t generation,
               int64_t next_seq)
      : db_(std::move(db)),
        options_(std::move(options)),
        generation_(generation),
        next_seq_(next_seq) {}

  Status Append(std::string_view framed) override {
    if (broken_) {
      return FailedPreconditionError("consumer-group journal needs compaction after an error");
    }
    const int64_t seq = next_seq_;
    Status s = db_->Transact([&](sql::Transaction& txn) -> Status {
      CONVERGE_RETURN_IF_ERROR(
          lease::CheckFence(txn, options_.lease_table, options_.lease_name, options_.token));
      const sql::Value params[] = {sql::Value::Text(options_.scope),
                                   sql::Value::Int(static_cast<int64_t>(generation_)),
                                   sql::Value::Int(seq), sql::Value::Blob(framed)};
      return txn
          .Execute("INSERT INTO " + options_.table +
                       " (scope, generation, seq, data) VALUES ($1, $2::bigint, $3::bigint, $4)",
                   params)
          .status();
    });
    if (!s.ok()) {
      // A lost COMMIT leaves the outcome unknown: the next flush compacts from memory.
      broken_ = true;
      return Classify("consumer-group journal write", s);
    }
    next_seq_ = seq + 1;
    journal_bytes_ += framed.size();
    return Status::Ok();
  }

  Status Compact(std::string_view snapshot, uint64_t next_group_id) override {
    broken_ = true;
    const uint64_t generation = generation_ + 1;
    std::string data;
    data.reserve(snapshot.size() + 40);
    ::converge::internal::groups::EncodeHeader(
        ::converge::internal::groups::HeaderRecord{generation, next_group_id}, &data);
    data.append(snapshot);
    Status s = db_->Transact([&](sql::Transaction& txn) -> Status {
      CONVERGE_RETURN_IF_ERROR(
          lease::CheckFence(txn, options_.lease_table, options_.lease_name, options_.token));
      const sql::Value scope[] = {sql::Value::Text(options_.scope)};
      CONVERGE_RETURN_IF_ERROR(
          txn.Execute("DELETE FROM " + options_.table + " WHERE scope = $1 AND generation >= 0",
                      scope)
              .status());
      const sql::Value params[] = {sql::Value::Text(options_.scope),
                                   sql::Value::Int(static_cast<int64_t>(generation)),
                                   sql::Value::Blob(data)};
      return txn
          .Execute("INSERT INTO " + options_.table +
                       " (scope, generation, seq, data) VALUES ($1, $2::bigint, 0, $3)",
                   params)
          .status();
    });
    if (!s.ok()) return Classify("consumer-group snapshot write", s);
    generation_ = generation;
    next_seq_ = 1;
    journal_bytes_ = 0;
    broken_ = false;
    return Status::Ok();
  }

  bool broken() const override { return broken_; }
  const std::string& damage() const override { return damage_; }
  uint64_t journal_bytes() const override { return journal_bytes_; }
  uint64_t generation() const override { return generation_; }

 private:
  // A fenced write is final for this owner (it no longer holds the group): FailedPrecondition,
  // which the routes answer 409/503-free; database trouble is Unavailable (retry).
  Status Classify(std::string_view what, const Status& s) const {
    std::string message =
        std::string(what) + " for '" + options_.scope + "' failed: " + std::string(s.message());
    if (s.code() == StatusCode::kFailedPrecondition) {
      return UnavailableError(message + " (this sidecar no longer owns the group; retry)");
    }
    if (s.code() == StatusCode::kInvalidArgument || s.code() == StatusCode::kInternal ||
        s.code() == StatusCode::kDataLoss) {
      return InternalError(message);
    }
    return UnavailableError(message + "; retry later");
  }

  std::unique_ptr<sql::Database> db_;
  const PgGroupStateOptions options_;
  uint64_t generation_;
  int64_t next_seq_;
  uint64_t journal_bytes_ = 0;
  bool broken_ = true;  // until the first Compact (the owner compacts right after Open)
  std::string damage_;
};

}  // namespace

Status CreatePgGroupStateTable(sql::Database& db, const std::string& table) {
  if (!sql::IsPlainTableName(table)) {
    return InvalidArgumentError("group state table '" + table + "': want [a-z0-9_]{1,60}");
  }
  Status created = db.ExecuteScript("CREATE TABLE IF NOT EXISTS " + table +
                                    " (scope text NOT NULL, generation bigint NOT NULL, seq "
                                    "bigint NOT NULL, data bytea NOT NULL, PRIMARY KEY (scope, "
                                    "generation, seq))");
  // Two sidecars starting at once may both create it (a unique violation of the catalog for
  // the loser, whose table exists all the same).
  if (!created.ok() && created.code() != StatusCode::kAlreadyExists) {
    return created.WithContext("group state table");
  }
  return Status::Ok();
}

Result<std::unique_ptr<::converge::internal::groups::StateStore>> OpenPgGroupState(
    std::unique_ptr<sql::Database> db, const PgGroupStateOptions& options,
    std::string* recovered_bytes, std::vector<std::string_view>* records) {
  if (!sql::IsPlainTableName(options.table) || !sql::IsPlainTableName(options.lease_table)) {
    return InvalidArgumentError("group state: bad table name");
  }
  recovered_bytes->clear();
  records->clear();
  struct Row {
    int64_t generation, seq;
    size_t at, size;
  };
  std::vector<Row> rows;
  const sql::Value scope[] = {sql::Value::Text(options.scope)};
  // Only the newest generation counts (Compact replaces the rows in one transaction, so there
  // is one; older ones would be leftovers and are ignored).
  CONVERGE_RETURN_IF_ERROR(
      db->Query("SELECT generation, seq, data FROM " + options.table +
                    " WHERE scope = $1 AND generation = (SELECT max(generation) FROM " +
                    options.table + " WHERE scope = $1 AND generation >= 0) ORDER BY seq",
                scope,
                [&](const sql::Row& row) -> Status {
                  Row r;
                  CONVERGE_ASSIGN_OR_RETURN(r.generation, row.Int(0));
                  CONVERGE_ASSIGN_OR_RETURN(r.seq, row.Int(1));
                  std::string_view data = row.Bytes(2);
                  r.at = recovered_bytes->size();
                  r.size = data.size();
                  recovered_bytes->append(data);
                  rows.push_back(r);
                  return Status::Ok();
                })
          .status());
  uint64_t generation = 0;
  int64_t next_seq = 1;
  if (!rows.empty()) {
    if (rows.front().seq != 0) {
      return DataLossError("consumer-group state '" + options.scope +
                           "': journal rows without their snapshot; refusing to guess the "
                           "committed offsets");
    }
    generation = static_cast<uint64_t>(rows.front().generation);
    const std::string_view all(*recovered_bytes);
    for (size_t i = 0; i < rows.size(); ++i) {
      if (rows[i].seq != static_cast<int64_t>(i)) {
        return DataLossError("consumer-group state '" + options.scope + "': journal row " +
                             std::to_string(i) + " is missing");
      }
      record_log::Reader reader =
          record_log::Reader::ForFrames(all.substr(rows[i].at, rows[i].size));
      std::string_view payload;
      while (reader.Next(&payload)) records->push_back(payload);
      if (reader.stop() != record_log::Stop::kEnd) {
        return DataLossError("consumer-group state '" + options.scope + "': row " +
                             std::to_string(rows[i].seq) + " of generation " +
                             std::to_string(generation) + " does not parse");
      }
    }
    next_seq = static_cast<int64_t>(rows.size());
  }
  return std::unique_ptr<::converge::internal::groups::StateStore>(
      new PgGroupState(std::move(db), options, generation, next_seq));
}

}  // namespace converge::server
