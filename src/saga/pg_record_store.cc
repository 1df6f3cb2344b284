// The saga log in a PostgreSQL table (saga/saga_log.h: NewPostgresRecordStore).
#include <endian.h>
#include <libpq-fe.h>

#include <cstring>

#include "saga/records.h"
#include "saga/saga_log.h"

namespace converge::saga_internal {
namespace {

class Res {
 public:
  explicit Res(PGresult* r) : r_(r) {}
  ~Res() { PQclear(r_); }
  Res(const Res&) = delete;
  Res& operator=(const Res&) = delete;
  PGresult* get() const { return r_; }
  bool ok() const {
    const ExecStatusType s = PQresultStatus(r_);
    return s == PGRES_COMMAND_OK || s == PGRES_TUPLES_OK;
  }

 private:
  PGresult* r_;
};

bool ValidTable(std::string_view t) {
  if (t.empty() || t.size() > 60) return false;
  for (char c : t) {
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_')) return false;
  }
  return true;
}

class PostgresRecordStore : public RecordStore {
 public:
  explicit PostgresRecordStore(PostgresRecordStoreOptions options) : options_(std::move(options)) {}
  ~PostgresRecordStore() override {
    if (conn_ != nullptr) {
      Sync().IgnoreError();
      if (locked_) {
        // Released before the session ends, so a successor can take it at once (the server
        // may notice the closed connection only a moment later).
        const char* key[1] = {options_.table.c_str()};
        PQclear(PQexecParams(conn_, "SELECT pg_advisory_unlock(hashtext($1))", 1, nullptr, key,
                             nullptr, nullptr, 0));
      }
      PQfinish(conn_);
    }
  }

  Status Open(const ReplayFn& replay) {
    conn_ = PQconnectdb(options_.conninfo.c_str());
    if (PQstatus(conn_) != CONNECTION_OK) {
      return UnavailableError(std::string("saga log: connect to PostgreSQL: ") +
                              PQerrorMessage(conn_));
    }
    PQsetNoticeProcessor(
        conn_, [](void*, const char*) {}, nullptr);
    const char* key[1] = {options_.table.c_str()};
    Res lock(PQexecParams(conn_, "SELECT pg_try_advisory_lock(hashtext($1))", 1, nullptr, key,
                          nullptr, nullptr, 0));
    if (!lock.ok()) return Failure("advisory lock");
    if (std::strcmp(PQgetvalue(lock.get(), 0, 0), "t") != 0) {
      return FailedPreconditionError("saga log: table '" + options_.table +
                                     "' is used by another orchestrator");
    }
    locked_ = true;
    CONVERGE_RETURN_IF_ERROR(Exec("CREATE TABLE IF NOT EXISTS " + options_.table +
                                  " (seq BIGSERIAL PRIMARY KEY, payload BYTEA NOT NULL)"));
    // Replay, a bounded number of rows at a time, in binary.
    int64_t last = 0;
    bool first_row = true;
    for (;;) {
      const std::string after = std::to_string(last);
      const char* values[1] = {after.c_str()};
      Res rows(PQexecParams(
          conn_,
          ("SELECT seq, payload FROM " + options_.table + " WHERE seq > $1 ORDER BY seq LIMIT 256")
              .c_str(),
          1, nullptr, values, nullptr, nullptr, 1));
      if (!rows.ok()) return Failure("read");
      const int n = PQntuples(rows.get());
      if (n == 0) break;
      for (int i = 0; i < n; ++i) {
        uint64_t be = 0;
        std::memcpy(&be, PQgetvalue(rows.get(), i, 0), sizeof(be));
        last = static_cast<int64_t>(be64toh(be));
        std::string_view data(PQgetvalue(rows.get(), i, 1),
                              static_cast<size_t>(PQgetlength(rows.get(), i, 1)));
        total_bytes_ += data.size();
        // A row is a record-log file of its own: the header, then the batch's frames (rows of
        // releases before the header hold the frames of then).
        internal::record_log::Reader reader =
            internal::record_log::Reader::ForFile(data, internal::record_log::Legacy::kSagaV0);
        std::string_view payload;
        bool first_record = true;
        while (reader.Next(&payload)) {
          if (first_row && first_record && !payload.empty() &&
              static_cast<uint8_t>(payload[0]) == kBaseBeginType) {
            base_bytes_ = data.size();
          }
          first_record = false;
          Status s = replay(payload);
          if (s.code() == StatusCode::kDataLoss) break;
          CONVERGE_RETURN_IF_ERROR(s);
        }
        first_row = false;
      }
    }
    return Status::Ok();
  }

  Status Append(std::string_view framed) override {
    if (failed_) return UnavailableError("saga log: the PostgreSQL session was lost");
    pending_.append(framed.data(), framed.size());
    return Status::Ok();
  }

  Status Sync() override {
    if (pending_.empty()) return Status::Ok();
    CONVERGE_ASSIGN_OR_RETURN(uint64_t row_bytes, InsertRow(pending_));
    total_bytes_ += row_bytes;
    pending_.clear();
    return Status::Ok();
  }

  Status Rebase(std::string_view base) override {
    CONVERGE_RETURN_IF_ERROR(Sync());
    CONVERGE_RETURN_IF_ERROR(Exec("BEGIN"));
    Status s = Exec("DELETE FROM " + options_.table);
    uint64_t row_bytes = 0;
    if (s.ok()) {
      Result<uint64_t> inserted = InsertRow(base);
      s = inserted.status();
      if (inserted.ok()) row_bytes = *inserted;
    }
    if (s.ok()) s = Exec("COMMIT");
    if (!s.ok()) {
      Exec("ROLLBACK").IgnoreError();
      return s;
    }
    total_bytes_ = row_bytes;
    base_bytes_ = row_bytes;
    return Status::Ok();
  }

  uint64_t total_bytes() const override { return total_bytes_; }
  uint64_t bytes_since_base() const override { return total_bytes_ - base_bytes_; }

 private:
  Status Failure(const std::string& what) {
    const std::string msg = "saga log: " + what + ": " + PQerrorMessage(conn_);
    if (PQstatus(conn_) != CONNECTION_OK) {
      // The advisory lock is gone with the session: stop writing for good.
      failed_ = true;
      return UnavailableError(msg);
    }
    return InternalError(msg);
  }

  Status Exec(const std::string& sql) {
    Res r(PQexec(conn_, sql.c_str()));
    if (!r.ok()) return Failure(sql);
    return Status::Ok();
  }

  // Inserts one row: the record-log file header, then `frames`. Returns the row's size.
  Result<uint64_t> InsertRow(std::string_view frames) {
    if (failed_) return UnavailableError("saga log: the PostgreSQL session was lost");
    std::string bytes;
    bytes.reserve(internal::record_log::kFileHeaderBytes + frames.size());
    internal::record_log::AppendFileHeader(&bytes);
    bytes.append(frames.data(), frames.size());
    const char* values[1] = {bytes.data()};
    const int lengths[1] = {static_cast<int>(bytes.size())};
    const int formats[1] = {1};
    Res r(PQexecParams(conn_, ("INSERT INTO " + options_.table + " (payload) VALUES ($1)").c_str(),
                       1, nullptr, values, lengths, formats, 0));
    if (!r.ok()) return Failure("insert");
    return uint64_t{bytes.size()};
  }

  PostgresRecordStoreOptions options_;
  PGconn* conn_ = nullptr;
  std::string pending_;
  uint64_t total_bytes_ = 0;
  uint64_t base_bytes_ = 0;
  bool failed_ = false;
  bool locked_ = false;
};

}  // namespace

Result<std::unique_ptr<RecordStore>> NewPostgresRecordStore(
    const PostgresRecordStoreOptions& options, const RecordStore::ReplayFn& replay) {
  if (!ValidTable(options.table)) {
    return InvalidArgumentError("saga log: postgres_table must be 1..60 of [a-z0-9_]");
  }
  if (options.conninfo.empty()) return InvalidArgumentError("saga log: conninfo is required");
  auto store = std::make_unique<PostgresRecordStore>(options);
  CONVERGE_RETURN_IF_ERROR(store->Open(replay));
  return std::unique_ptr<RecordStore>(std::move(store));
}

}  // namespace converge::saga_internal
