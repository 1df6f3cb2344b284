// A libpq connection in logical replication mode (replication=database): slot commands,
// simple SQL, and the COPY BOTH stream of START_REPLICATION, read without blocking.
//
// Errors: Unavailable for a lost or refused connection; NotFound for a missing slot or
// publication; FailedPrecondition for an invalidated slot ("can no longer get changes") or a
// slot in use by another consumer (message says which); the server's message is kept.
//
// Thread-safety: none; one thread drives a connection.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "cdc/pgoutput.h"
#include "converge/status.h"

namespace converge::cdc {

// Slot and publication names converge accepts: 1..63 of [a-z0-9_] (PostgreSQL's rule for slot
// names; publications are held to it so they need no quoting). InvalidArgument otherwise.
Status CheckSlotName(std::string_view name, std::string_view what);

// A replication slot's state: exists, wal_status ('reserved', 'extended', 'unreserved',
// 'lost'), confirmed_flush_lsn, whether another process streams from it.
struct SlotInfo {
  bool exists = false;
  std::string plugin;
  std::string wal_status;
  Lsn confirmed_flush = 0;
  bool active_elsewhere = false;
};

// What a logical replication consumer (the WAL outbox's source) does with a connection: the
// seam where the simulator puts a server of its own (outbox_wal_sim_test), with the real
// decoder and confirm rules (cdc::WalReader) above it. Errors as ReplicationConnection's.
class ReplicationStream {
 public:
  virtual ~ReplicationStream() = default;
  // Runs one command (simple query protocol); rows as text, NULL as "". Not while streaming.
  virtual Result<std::vector<std::vector<std::string>>> Exec(const std::string& command) = 0;
  virtual Result<SlotInfo> GetSlot(const std::string& slot) = 0;
  // START_REPLICATION SLOT <slot> LOGICAL <start> (0: from the slot's confirmed position).
  virtual Status StartReplication(const std::string& slot, const std::string& publication,
                                  Lsn start) = 0;
  // Streaming: the next CopyData payload available without blocking (true), or none now
  // (false); Unavailable when the stream ended.
  virtual Result<bool> ReadAvailable(std::string* out) = 0;
  // Streaming: sends a standby status update and flushes it.
  virtual Status SendCopyData(std::string_view data) = 0;
  // A descriptor readable when the stream has data, or -1 (then the consumer polls).
  virtual int socket() const = 0;
};

class ReplicationConnection final : public ReplicationStream {
 public:
  // `conninfo`: a libpq conninfo string or URI; replication=database is added.
  static Result<std::unique_ptr<ReplicationConnection>> Connect(const std::string& conninfo,
                                                                const std::string& app_name,
                                                                int64_t connect_timeout_ms);
  ~ReplicationConnection();
  ReplicationConnection(const ReplicationConnection&) = delete;
  ReplicationConnection& operator=(const ReplicationConnection&) = delete;

  // Runs one command (simple query protocol); rows as text, NULL as "". Not while streaming.
  Result<std::vector<std::vector<std::string>>> Exec(const std::string& command) override;

  using SlotInfo = cdc::SlotInfo;
  Result<SlotInfo> GetSlot(const std::string& slot) override;

  // CREATE_REPLICATION_SLOT <slot> LOGICAL pgoutput; with export_snapshot the snapshot name is
  // returned (valid until the next command on this connection). AlreadyExists if present.
  struct CreatedSlot {
    Lsn consistent_point = 0;
    std::string snapshot_name;
  };
  Result<CreatedSlot> CreateSlot(const std::string& slot, bool export_snapshot);
  // DROP_REPLICATION_SLOT <slot>. NotFound if missing, FailedPrecondition if in use.
  Status DropSlot(const std::string& slot);

  // START_REPLICATION SLOT <slot> LOGICAL <start> with pgoutput options (proto_version '1',
  // publication_names, messages 'true'). After it the connection streams.
  Status StartReplication(const std::string& slot, const std::string& publication,
                          Lsn start) override;

  // Streaming: the next CopyData payload if one is buffered or arrives without blocking
  // (true, `*out` set), false if none is available now. Unavailable (with the server's error)
  // when the stream ended.
  Result<bool> ReadAvailable(std::string* out) override;
  // Streaming: sends a standby status update and flushes it.
  Status SendCopyData(std::string_view data) override;

  int socket() const override;

 private:
  explicit ReplicationConnection(void* conn) : conn_(conn) {}
  void* conn_;  // PGconn*
};

}  // namespace converge::cdc
