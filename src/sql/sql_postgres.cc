// converge/sql.h on PostgreSQL through libpq: one connection, extended-protocol prepared
// statements cached by SQL text, text-format results (bytea decoded on access).
#include "sql/sql_postgres.h"

#include <libpq-fe.h>
#include <poll.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include "converge/sql.h"
#include "sql/sql_internal.h"

namespace converge::sql {
namespace {

constexpr Oid kByteaOid = 17;

bool StartsWith(std::string_view s, std::string_view p) { return s.substr(0, p.size()) == p; }

Status PgErrorFromResult(PGconn* conn, const PGresult* res, std::string_view what) {
  const char* state = res != nullptr ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : nullptr;
  std::string text = res != nullptr ? PQresultErrorMessage(res) : "";
  if (text.empty() && conn != nullptr) text = PQerrorMessage(conn);
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();
  std::string message = std::string(what) + ": " + text;
  if (conn != nullptr && PQstatus(conn) == CONNECTION_BAD) return UnavailableError(message);
  if (state == nullptr) return UnavailableError(message);  // no SQLSTATE: a connection problem
  std::string_view code(state);
  message += " (SQLSTATE " + std::string(code) + ")";
  if (code == "23505") return AlreadyExistsError(message);
  if (StartsWith(code, "23")) return FailedPreconditionError(message);
  if (code == "40001" || code == "40P01") return AbortedError(message);
  if (code == "57014" || code == "55P03") return DeadlineExceededError(message);
  if (StartsWith(code, "08") || code == "57P01" || code == "57P02" || code == "57P03" ||
      code == "25P03") {
    return UnavailableError(message);
  }
  if (code == "53100") return StorageFullError(message);  // disk_full on the server
  if (StartsWith(code, "53")) return ResourceExhaustedError(message);
  if (StartsWith(code, "28")) return PermissionDeniedError(message);
  if (StartsWith(code, "42") || StartsWith(code, "22") || code == "0A000") {
    return InvalidArgumentError(message);
  }
  if (code == "XX001" || code == "XX002") return DataLossError(message);
  return InternalError(message);
}

// Decodes bytea's text form ("\x0102..").
std::string DecodeBytea(std::string_view text) {
  std::string out;
  if (text.size() >= 2 && text[0] == '\\' && text[1] == 'x') {
    out.reserve((text.size() - 2) / 2);
    auto nibble = [](char c) -> int {
      if (c >= '0' && c <= '9') return c - '0';
      if (c >= 'a' && c <= 'f') return c - 'a' + 10;
      if (c >= 'A' && c <= 'F') return c - 'A' + 10;
      return 0;
    };
    for (size_t i = 2; i + 1 < text.size(); i += 2) {
      out.push_back(static_cast<char>((nibble(text[i]) << 4) | nibble(text[i + 1])));
    }
    return out;
  }
  size_t n = 0;
  unsigned char* raw =
      PQunescapeBytea(reinterpret_cast<const unsigned char*>(std::string(text).c_str()), &n);
  if (raw != nullptr) {
    out.assign(reinterpret_cast<const char*>(raw), n);
    PQfreemem(raw);
  }
  return out;
}

class PgRow final : public Row {
 public:
  PgRow(const PGresult* res, int row) : res_(res), row_(row), n_(PQnfields(res)) {
    decoded_.resize(static_cast<size_t>(n_));
  }
  size_t size() const override { return static_cast<size_t>(n_); }
  bool IsNull(size_t column) const override {
    Check(column);
    return PQgetisnull(res_, row_, static_cast<int>(column)) != 0;
  }
  Result<int64_t> Int(size_t column) const override {
    Check(column);
    int c = static_cast<int>(column);
    if (PQgetisnull(res_, row_, c)) return int64_t{0};
    const char* v = PQgetvalue(res_, row_, c);
    char* end = nullptr;
    errno = 0;
    long long x = std::strtoll(v, &end, 10);
    if (errno != 0 || end == v || *end != '\0') {
      return InvalidArgumentError("column " + std::to_string(column) + " is not an integer");
    }
    return static_cast<int64_t>(x);
  }
  std::string_view Bytes(size_t column) const override {
    Check(column);
    int c = static_cast<int>(column);
    if (PQgetisnull(res_, row_, c)) return {};
    std::string_view text(PQgetvalue(res_, row_, c),
                          static_cast<size_t>(PQgetlength(res_, row_, c)));
    if (PQftype(res_, c) != kByteaOid) return text;
    auto& slot = decoded_[column];
    if (!slot.has_value()) slot = DecodeBytea(text);
    return *slot;
  }

 private:
  void Check(size_t column) const { CONVERGE_CHECK(column < static_cast<size_t>(n_)); }
  const PGresult* res_;
  int row_;
  int n_;
  mutable std::vector<std::optional<std::string>> decoded_;
};

struct PreparedName {
  std::string name;
};

class PgDatabase;

class PgTransaction final : public Transaction {
 public:
  explicit PgTransaction(PgDatabase& db) : db_(db) {}
  Engine engine() const override { return Engine::kPostgres; }
  Result<int64_t> Execute(std::string_view sql, std::span<const Value> params) override;
  Result<int64_t> Query(std::string_view sql, std::span<const Value> params,
                        const RowCallback& on_row) override;
  void OnCommit(std::function<void()> fn) override { on_commit_.push_back(std::move(fn)); }
  void* native_handle() override;
  std::vector<std::function<void()>> TakeCallbacks() { return std::move(on_commit_); }
  // A statement sent after COMMIT without waiting for its result (see PgSendAfterCommit).
  void SendAfterCommit(std::string sql) { after_commit_ = std::move(sql); }
  std::string TakeAfterCommit() { return std::move(after_commit_); }

 private:
  PgDatabase& db_;
  std::vector<std::function<void()>> on_commit_;
  std::string after_commit_;
};

struct NoFinalize {
  void operator()(PreparedName&) const {}
};

class PgDatabase final : public Database {
 public:
  explicit PgDatabase(PostgresOptions options)
      : options_(std::move(options)), cache_(options_.statement_cache_max, NoFinalize{}) {}
  ~PgDatabase() override {
    if (conn_ != nullptr) PQfinish(conn_);
  }

  Status Connect() {
    if (conn_ != nullptr) {
      PQfinish(conn_);
      conn_ = nullptr;
    }
    cache_.Clear();
    next_statement_ = 0;
    in_tx_ = false;
    // The conninfo (key=value or URI) is passed whole as an expanded dbname, never
    // concatenated with anything: a URI stays a URI. connect_timeout comes after it, so the
    // option wins over one written in the conninfo. libpq counts whole seconds, at least 2.
    int64_t timeout_s = std::max<int64_t>(2, (options_.connect_timeout_ms + 999) / 1000);
    std::string timeout = std::to_string(timeout_s);
    const char* keys[] = {"dbname", "connect_timeout", nullptr};
    const char* values[] = {options_.conninfo.c_str(), timeout.c_str(), nullptr};
    conn_ = PQconnectdbParams(keys, values, /*expand_dbname=*/1);
    if (conn_ == nullptr) return ResourceExhaustedError("postgres: out of memory");
    if (PQstatus(conn_) != CONNECTION_OK) {
      std::string message = PQerrorMessage(conn_);
      while (!message.empty() && message.back() == '\n') message.pop_back();
      if (message.find("invalid") != std::string::npos &&
          message.find("option") != std::string::npos) {
        return InvalidArgumentError("postgres: " + message);
      }
      if (message.find("password authentication failed") != std::string::npos) {
        return UnauthenticatedError("postgres: " + message);
      }
      return UnavailableError("postgres: cannot connect: " + message);
    }
    // Server notices (and the FATAL a shutting-down server sends) are reported through
    // statuses, not printed on the process's stderr.
    PQsetNoticeProcessor(
        conn_, [](void*, const char*) {}, nullptr);
    std::string setup = "SET client_min_messages = warning;";
    if (options_.statement_timeout_ms > 0) {
      setup += "SET statement_timeout = " + std::to_string(options_.statement_timeout_ms) + ";";
    }
    if (options_.lock_timeout_ms > 0) {
      setup += "SET lock_timeout = " + std::to_string(options_.lock_timeout_ms) + ";";
    }
    return ExecuteScript(setup);
  }

  Engine engine() const override { return Engine::kPostgres; }

  Status Transact(const std::function<Status(Transaction&)>& fn) override {
    // A transaction of its own: starting over on a new session is safe.
    if (!healthy()) in_tx_ = false;
    CONVERGE_RETURN_IF_ERROR(EnsureConnected());
    CONVERGE_RETURN_IF_ERROR(Simple("BEGIN"));
    PgTransaction tx(*this);
    Status s = fn(tx);
    if (s.ok()) s = Simple("COMMIT");
    if (!s.ok()) {
      if (conn_ != nullptr && PQstatus(conn_) == CONNECTION_OK &&
          PQtransactionStatus(conn_) != PQTRANS_IDLE) {
        Simple("ROLLBACK").IgnoreError();
      }
      // This call already reported a lost connection; its transaction is over either way.
      in_tx_ = false;
      return s;
    }
    for (auto& cb : tx.TakeCallbacks()) cb();
    std::string after = tx.TakeAfterCommit();
    if (!after.empty() && PQsendQuery(conn_, after.c_str()) == 1) pending_async_ = true;
    return Status::Ok();
  }

  Result<int64_t> Execute(std::string_view sql, std::span<const Value> params) override {
    CONVERGE_RETURN_IF_ERROR(EnsureConnected());
    return Run(sql, params, nullptr);
  }
  Result<int64_t> Query(std::string_view sql, std::span<const Value> params,
                        const RowCallback& on_row) override {
    CONVERGE_RETURN_IF_ERROR(EnsureConnected());
    return Run(sql, params, &on_row);
  }

  Status ExecuteScript(std::string_view script) override {
    CONVERGE_RETURN_IF_ERROR(EnsureConnected());
    return Simple(std::string(script).c_str());
  }

  bool healthy() const override { return conn_ != nullptr && PQstatus(conn_) == CONNECTION_OK; }
  Status Reconnect() override {
    DrainAsync();
    in_tx_ = false;
    ProbeIdle();
    if (healthy()) return Status::Ok();
    return Connect();
  }

  // A server that went away leaves an idle connection looking fine until it is used. Reading
  // what the socket holds, without blocking, notices it: a stopping server sends its FATAL
  // message and then closes, so a read may return that message and only the next one the end
  // of the stream; read while the socket is readable (a few rounds at most).
  void ProbeIdle() {
    for (int round = 0; round < 4; ++round) {
      if (conn_ == nullptr || PQstatus(conn_) != CONNECTION_OK ||
          PQtransactionStatus(conn_) != PQTRANS_IDLE) {
        return;
      }
      pollfd pfd{PQsocket(conn_), POLLIN, 0};
      if (pfd.fd < 0 || ::poll(&pfd, 1, 0) <= 0) return;
      if (PQconsumeInput(conn_) == 0) return;  // the connection is now CONNECTION_BAD
    }
  }
  void* native_handle() override { return conn_; }
  const std::string& target() const override { return options_.conninfo; }

  // Consumes the results of a statement sent without waiting (their errors do not matter).
  void DrainAsync() {
    if (!pending_async_) return;
    pending_async_ = false;
    if (conn_ == nullptr) return;
    while (PGresult* r = PQgetResult(conn_)) PQclear(r);
  }

  Status EnsureConnected() {
    DrainAsync();
    ProbeIdle();
    if (healthy()) return Status::Ok();
    if (conn_ != nullptr && in_tx_) {
      // The server rolled the caller's open transaction back with the session. A new session
      // would run the caller's next statements outside that transaction (autocommitted), so
      // every call fails until the caller starts over with Transact or Reconnect.
      return UnavailableError("postgres: the connection was lost inside a transaction (" +
                              ErrorText() + "); it was rolled back: Reconnect to go on");
    }
    if (conn_ != nullptr && !options_.reconnect) {
      return UnavailableError("postgres: the connection was lost (" + ErrorText() + ")");
    }
    return Connect();
  }

  // Records whether the session is inside a transaction, when the server said so.
  void NoteTransactionState() {
    switch (PQtransactionStatus(conn_)) {
      case PQTRANS_INTRANS:
      case PQTRANS_INERROR:
        in_tx_ = true;
        break;
      case PQTRANS_IDLE:
        in_tx_ = false;
        break;
      default:  // unknown (connection lost) or busy: keep what was known
        break;
    }
  }

  std::string ErrorText() const {
    std::string text = conn_ != nullptr ? PQerrorMessage(conn_) : "not connected";
    while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();
    return text;
  }

  // The SQLSTATE of the last failed statement ("" if the last one succeeded or had none).
  const std::string& last_sqlstate() const { return last_sqlstate_; }
  void NoteError(const PGresult* res) {
    const char* state = res != nullptr ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : nullptr;
    last_sqlstate_ = state != nullptr ? state : "";
  }

  // A simple-protocol command (BEGIN/COMMIT/scripts): no parameters, several statements ok.
  Status Simple(const char* sql) {
    if (conn_ == nullptr) return UnavailableError("postgres: not connected");
    DrainAsync();
    last_sqlstate_.clear();
    PGresult* res = PQexec(conn_, sql);
    ExecStatusType st = PQresultStatus(res);
    Status s;
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK && st != PGRES_EMPTY_QUERY) {
      s = PgErrorFromResult(conn_, res, "postgres");
      NoteError(res);
    }
    PQclear(res);
    NoteTransactionState();
    return s;
  }

  Result<int64_t> Run(std::string_view sql, std::span<const Value> params,
                      const RowCallback* on_row) {
    if (conn_ == nullptr) return UnavailableError("postgres: not connected");
    last_sqlstate_.clear();
    PreparedName* prepared = cache_.Find(sql);
    if (prepared == nullptr) {
      std::string name = "cv" + std::to_string(next_statement_++);
      std::string text(sql);
      PGresult* res = PQprepare(conn_, name.c_str(), text.c_str(), 0, nullptr);
      Status s;
      if (PQresultStatus(res) != PGRES_COMMAND_OK) {
        s = PgErrorFromResult(conn_, res, "prepare");
        NoteError(res);
      }
      PQclear(res);
      NoteTransactionState();
      CONVERGE_RETURN_IF_ERROR(s);
      if (cache_.Full()) {
        // Deallocate the victim server-side before the cache forgets its name.
        std::string victim = cache_.OldestValue().name;
        std::string dealloc = "DEALLOCATE " + victim;
        Simple(dealloc.c_str()).IgnoreError();
      }
      prepared = cache_.Insert(std::move(text), PreparedName{std::move(name)});
    }
    // Text format for everything but blobs, which go binary (no escaping).
    const size_t n = params.size();
    values_.assign(n, nullptr);
    lengths_.assign(n, 0);
    formats_.assign(n, 0);
    scratch_.resize(n);
    for (size_t i = 0; i < n; ++i) {
      const Value& v = params[i];
      switch (v.kind()) {
        case Value::Kind::kNull:
          break;
        case Value::Kind::kInt:
          scratch_[i] = std::to_string(v.int_value());
          values_[i] = scratch_[i].c_str();
          break;
        case Value::Kind::kDouble: {
          char buf[64];
          std::snprintf(buf, sizeof(buf), "%.17g", v.double_value());
          scratch_[i] = buf;
          values_[i] = scratch_[i].c_str();
          break;
        }
        case Value::Kind::kText:
          // Text parameters must be NUL-terminated for libpq.
          scratch_[i].assign(v.bytes());
          values_[i] = scratch_[i].c_str();
          break;
        case Value::Kind::kBlob:
          values_[i] = v.bytes().empty() ? "" : v.bytes().data();
          lengths_[i] = static_cast<int>(v.bytes().size());
          formats_[i] = 1;
          break;
      }
    }
    PGresult* res = PQexecPrepared(conn_, prepared->name.c_str(), static_cast<int>(n),
                                   values_.data(), lengths_.data(), formats_.data(), 0);
    ExecStatusType st = PQresultStatus(res);
    NoteTransactionState();
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
      Status s = PgErrorFromResult(conn_, res, "postgres");
      NoteError(res);
      PQclear(res);
      // A prepared statement can vanish (e.g. after a server restart with a reused connection
      // pool); forget the cache so the next call re-prepares.
      if (s.code() == StatusCode::kUnavailable) cache_.Clear();
      return s;
    }
    int64_t count = 0;
    if (on_row != nullptr && st == PGRES_TUPLES_OK) {
      int rows = PQntuples(res);
      Status s;
      for (int r = 0; r < rows && s.ok(); ++r) {
        PgRow row(res, r);
        s = (*on_row)(row);
      }
      count = rows;
      if (!s.ok()) {
        PQclear(res);
        return s;
      }
    } else if (st == PGRES_TUPLES_OK) {
      count = PQntuples(res);
    } else {
      const char* affected = PQcmdTuples(res);
      count = (affected != nullptr && *affected != '\0') ? std::atoll(affected) : 0;
    }
    PQclear(res);
    return count;
  }

  PGconn* raw() { return conn_; }

 private:
  PostgresOptions options_;
  PGconn* conn_ = nullptr;
  internal::StatementCache<PreparedName, NoFinalize> cache_;
  uint64_t next_statement_ = 0;
  bool pending_async_ = false;
  bool in_tx_ = false;  // the session was last seen inside a transaction
  std::string last_sqlstate_;
  std::vector<const char*> values_;
  std::vector<int> lengths_;
  std::vector<int> formats_;
  std::vector<std::string> scratch_;
};

Result<int64_t> PgTransaction::Execute(std::string_view sql, std::span<const Value> params) {
  return db_.Run(sql, params, nullptr);
}
Result<int64_t> PgTransaction::Query(std::string_view sql, std::span<const Value> params,
                                     const RowCallback& on_row) {
  return db_.Run(sql, params, &on_row);
}
void* PgTransaction::native_handle() { return db_.raw(); }

}  // namespace

Result<std::unique_ptr<Database>> Database::ConnectPostgres(const PostgresOptions& options) {
  if (options.conninfo.empty()) return InvalidArgumentError("postgres: empty conninfo");
  if (options.connect_timeout_ms <= 0 || options.statement_timeout_ms < 0 ||
      options.lock_timeout_ms < 0) {
    return InvalidArgumentError("postgres: timeouts must be positive");
  }
  auto db = std::make_unique<PgDatabase>(options);
  CONVERGE_RETURN_IF_ERROR(db->Connect());
  return std::unique_ptr<Database>(std::move(db));
}

namespace internal {

void PgSendAfterCommit(Transaction& tx, std::string sql) {
  if (auto* pg = dynamic_cast<PgTransaction*>(&tx)) pg->SendAfterCommit(std::move(sql));
}

std::string PgLastSqlState(Database& db) {
  if (auto* pg = dynamic_cast<PgDatabase*>(&db)) return pg->last_sqlstate();
  return "";
}

Status PgStatusFromResult(void* conn, const void* result, std::string_view what) {
  return PgErrorFromResult(static_cast<PGconn*>(conn), static_cast<const PGresult*>(result), what);
}

}  // namespace internal
}  // namespace converge::sql
