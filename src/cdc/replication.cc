#include "cdc/replication.h"

#include <libpq-fe.h>

#include <algorithm>

namespace converge::cdc {
namespace {

PGconn* Conn(void* p) { return static_cast<PGconn*>(p); }

std::string Trimmed(std::string text) {
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();
  return text;
}

// The Status of a failed command, by SQLSTATE where it matters to a replication consumer.
Status CommandError(PGconn* conn, const PGresult* res, std::string_view what) {
  const char* state = res != nullptr ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : nullptr;
  std::string text = Trimmed(res != nullptr ? PQresultErrorMessage(res) : "");
  if (text.empty()) text = Trimmed(PQerrorMessage(conn));
  std::string message = std::string(what) + ": " + text;
  if (PQstatus(conn) == CONNECTION_BAD || state == nullptr) return UnavailableError(message);
  const std::string code(state);
  message += " (SQLSTATE " + code + ")";
  if (code == "42704") return NotFoundError(message);            // undefined_object: no slot/pub
  if (code == "42710") return AlreadyExistsError(message);       // duplicate_object
  if (code == "55006") return FailedPreconditionError(message);  // object_in_use
  if (code == "55000") return FailedPreconditionError(message);  // e.g. slot invalidated
  if (code.rfind("28", 0) == 0 || code == "42501") return PermissionDeniedError(message);
  if (code.rfind("08", 0) == 0 || code.rfind("57P", 0) == 0) return UnavailableError(message);
  if (code.rfind("42", 0) == 0 || code.rfind("22", 0) == 0) return InvalidArgumentError(message);
  return InternalError(message);
}

}  // namespace

Status CheckSlotName(std::string_view name, std::string_view what) {
  bool ok = !name.empty() && name.size() <= 63;
  for (char c : name) ok = ok && ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_');
  if (!ok) {
    return InvalidArgumentError(std::string(what) + " '" + std::string(name) +
                                "' must be 1..63 characters of [a-z0-9_]");
  }
  return Status::Ok();
}

Result<std::unique_ptr<ReplicationConnection>> ReplicationConnection::Connect(
    const std::string& conninfo, const std::string& app_name, int64_t connect_timeout_ms) {
  // The conninfo goes in whole as an expanded dbname; the keys after it override it.
  const std::string timeout_s =
      std::to_string(std::max<int64_t>(2, (connect_timeout_ms + 999) / 1000));
  const char* keys[] = {"dbname", "replication", "connect_timeout", "application_name", nullptr};
  const char* values[] = {conninfo.c_str(), "database", timeout_s.c_str(), app_name.c_str(),
                          nullptr};
  PGconn* conn = PQconnectdbParams(keys, values, /*expand_dbname=*/1);
  if (conn == nullptr) return UnavailableError("replication connection: out of memory");
  if (PQstatus(conn) != CONNECTION_OK) {
    std::string text = Trimmed(PQerrorMessage(conn));
    PQfinish(conn);
    return UnavailableError("replication connection: " + text);
  }
  return std::unique_ptr<ReplicationConnection>(new ReplicationConnection(conn));
}

ReplicationConnection::~ReplicationConnection() { PQfinish(Conn(conn_)); }

int ReplicationConnection::socket() const { return PQsocket(Conn(conn_)); }

Result<std::vector<std::vector<std::string>>> ReplicationConnection::Exec(
    const std::string& command) {
  PGresult* res = PQexec(Conn(conn_), command.c_str());
  const ExecStatusType st = res != nullptr ? PQresultStatus(res) : PGRES_FATAL_ERROR;
  if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK) {
    Status s = CommandError(Conn(conn_), res, command.substr(0, command.find(' ')));
    PQclear(res);
    return s;
  }
  std::vector<std::vector<std::string>> rows;
  for (int r = 0; r < PQntuples(res); ++r) {
    std::vector<std::string> row;
    for (int c = 0; c < PQnfields(res); ++c) {
      row.emplace_back(PQgetvalue(res, r, c), static_cast<size_t>(PQgetlength(res, r, c)));
    }
    rows.push_back(std::move(row));
  }
  PQclear(res);
  return rows;
}

Result<ReplicationConnection::SlotInfo> ReplicationConnection::GetSlot(const std::string& slot) {
  CONVERGE_RETURN_IF_ERROR(CheckSlotName(slot, "slot"));
  CONVERGE_ASSIGN_OR_RETURN(
      auto rows,
      Exec("SELECT plugin, coalesce(wal_status, ''), coalesce(confirmed_flush_lsn::text, ''),"
           " (active AND active_pid IS DISTINCT FROM pg_backend_pid())::text"
           " FROM pg_replication_slots WHERE slot_name = '" +
           slot + "'"));
  SlotInfo info;
  if (rows.empty()) return info;
  info.exists = true;
  info.plugin = rows[0][0];
  info.wal_status = rows[0][1];
  if (!rows[0][2].empty()) {
    CONVERGE_ASSIGN_OR_RETURN(info.confirmed_flush, ParseLsn(rows[0][2]));
  }
  info.active_elsewhere = rows[0][3] == "true";
  return info;
}

Result<ReplicationConnection::CreatedSlot> ReplicationConnection::CreateSlot(
    const std::string& slot, bool export_snapshot) {
  CONVERGE_RETURN_IF_ERROR(CheckSlotName(slot, "slot"));
  CONVERGE_ASSIGN_OR_RETURN(auto rows,
                            Exec("CREATE_REPLICATION_SLOT " + slot + " LOGICAL pgoutput " +
                                 (export_snapshot ? "EXPORT_SNAPSHOT" : "NOEXPORT_SNAPSHOT")));
  CreatedSlot out;
  if (rows.empty() || rows[0].size() < 3) {
    return InternalError("CREATE_REPLICATION_SLOT: unexpected answer");
  }
  CONVERGE_ASSIGN_OR_RETURN(out.consistent_point, ParseLsn(rows[0][1]));
  out.snapshot_name = rows[0][2];
  return out;
}

Status ReplicationConnection::DropSlot(const std::string& slot) {
  CONVERGE_RETURN_IF_ERROR(CheckSlotName(slot, "slot"));
  return Exec("DROP_REPLICATION_SLOT " + slot).status();
}

Status ReplicationConnection::StartReplication(const std::string& slot,
                                               const std::string& publication, Lsn start) {
  CONVERGE_RETURN_IF_ERROR(CheckSlotName(slot, "slot"));
  CONVERGE_RETURN_IF_ERROR(CheckSlotName(publication, "publication"));
  const std::string command = "START_REPLICATION SLOT " + slot + " LOGICAL " + FormatLsn(start) +
                              " (proto_version '1', publication_names '" + publication +
                              "', messages 'true')";
  PGresult* res = PQexec(Conn(conn_), command.c_str());
  const ExecStatusType st = res != nullptr ? PQresultStatus(res) : PGRES_FATAL_ERROR;
  if (st != PGRES_COPY_BOTH) {
    Status s = CommandError(Conn(conn_), res, "START_REPLICATION");
    PQclear(res);
    return s;
  }
  PQclear(res);
  if (PQsetnonblocking(Conn(conn_), 1) != 0) {
    return UnavailableError("replication connection: cannot switch to non-blocking mode");
  }
  return Status::Ok();
}

Result<bool> ReplicationConnection::ReadAvailable(std::string* out) {
  PGconn* conn = Conn(conn_);
  char* buf = nullptr;
  int n = PQgetCopyData(conn, &buf, /*async=*/1);
  if (n == 0) {
    if (PQconsumeInput(conn) == 0) {
      return UnavailableError("replication stream: " + Trimmed(PQerrorMessage(conn)));
    }
    n = PQgetCopyData(conn, &buf, 1);
  }
  if (n > 0) {
    out->assign(buf, static_cast<size_t>(n));
    PQfreemem(buf);
    return true;
  }
  if (n == 0) return false;
  if (n == -1) {
    // The stream ended: the server's error (e.g. the slot was dropped or invalidated) follows.
    Status s = UnavailableError("replication stream ended");
    while (PGresult* res = PQgetResult(conn)) {
      if (PQresultStatus(res) == PGRES_FATAL_ERROR) s = CommandError(conn, res, "replication");
      PQclear(res);
    }
    return s;
  }
  return UnavailableError("replication stream: " + Trimmed(PQerrorMessage(conn)));
}

Status ReplicationConnection::SendCopyData(std::string_view data) {
  PGconn* conn = Conn(conn_);
  if (PQputCopyData(conn, data.data(), static_cast<int>(data.size())) != 1) {
    return UnavailableError("replication stream: " + Trimmed(PQerrorMessage(conn)));
  }
  // Non-blocking: flush until sent (a status update is tiny; the socket takes it at once).
  for (int i = 0; i < 1000; ++i) {
    const int r = PQflush(conn);
    if (r == 0) return Status::Ok();
    if (r < 0) return UnavailableError("replication stream: " + Trimmed(PQerrorMessage(conn)));
  }
  return UnavailableError("replication stream: status update not sent (socket full)");
}

}  // namespace converge::cdc
