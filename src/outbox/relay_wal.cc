// The WAL outbox source (docs/formats/wal-outbox.md): the relay's OutboxSource over a logical
// replication slot. The confirm rules live in cdc::WalReader; this file moves bytes between
// the replication connection and the reader, and turns messages into relay rows.
//
// Mapping onto the relay's cycle (relay_core.h):
//   Acquire  connect, check the slot, START_REPLICATION (standby while another process streams
//            from the slot); after a failed cycle, reconnect, so the server resends everything
//            after the confirmed position (nothing of a failed cycle is kept)
//   Claim    read what the socket has, hand out whole committed transactions
//   Remove   the batch is durable in the log: confirm the slot past it
#include <poll.h>

#include <atomic>
#include <memory>
#include <string>
#include <vector>

#include "cdc/replication.h"
#include "cdc/rows.h"
#include "cdc/snapshot.h"
#include "cdc/wal_reader.h"
#include "converge/outbox.h"
#include "outbox/outbox_row.h"
#include "outbox/relay_source.h"

namespace converge::outbox_internal {
namespace {

using cdc::Lsn;

// Most stream messages read by one Claim, so a flood of unrelated WAL cannot hold the relay's
// step (and its stop) for long.
constexpr size_t kMaxReadsPerClaim = 20'000;

std::string MessageJson(const cdc::WalMessage& m) {
  std::string out = "{\"lsn\":";
  AppendJsonString(cdc::FormatLsn(m.lsn), &out);
  out += ",\"transactional\":";
  out += m.transactional ? "true" : "false";
  out += ",\"prefix\":";
  AppendJsonString(IsValidUtf8(m.prefix) ? m.prefix : Base64Encode(m.prefix), &out);
  if (IsValidUtf8(m.content)) {
    out += ",\"content\":";
    AppendJsonString(m.content, &out);
  } else {
    out += ",\"content_base64\":";
    AppendJsonString(Base64Encode(m.content), &out);
  }
  out += '}';
  return out;
}

// One message -> one relay row (or a malformed one, for the dead letters).
void BuildWalRow(const cdc::WalMessage& m, int64_t commit_time_unix_micros, ClaimedRow* out) {
  out->seq = static_cast<int64_t>(m.lsn);  // stable across re-reads: names its dead letter
  out->topic.assign(std::string_view(m.prefix).substr(outbox_format::kWalPrefix.size()));
  out->key.clear();
  out->id.clear();
  out->value.clear();
  out->timestamp_micros = 0;
  out->malformed = false;
  out->reason.clear();
  out->row_json.clear();
  Status s;
  if (!m.transactional) {
    s = InvalidArgumentError(
        "not transactional: emit with pg_logical_emit_message(true, ...) so that the event "
        "commits or rolls back with its transaction");
  }
  if (s.ok()) s = CheckTopicName(out->topic);
  Event event;
  if (s.ok()) {
    Result<Event> decoded = DecodeJson(m.content);
    if (decoded.ok()) {
      event = std::move(decoded).value();
    } else {
      s = decoded.status();
    }
  }
  if (s.ok() && !event.time()) {
    // The commit time is the event's time unless it brought one: the same on every re-read.
    event.set_time(FormatRfc3339(commit_time_unix_micros * 1000));
  }
  if (s.ok()) s = CheckAttributeLimits(event);
  if (s.ok() && event.traceparent()) s = TraceParent::Parse(*event.traceparent()).status();
  if (s.ok()) s = EncodeBinary(event, &out->value);
  if (s.ok()) {
    if (auto key = event.partitionkey()) out->key.assign(*key);
    AppendEventIdentity(event, &out->id);
    return;
  }
  out->malformed = true;
  out->value.clear();
  out->reason = "wal message " + cdc::FormatLsn(m.lsn) + ": " + std::string(s.message());
  out->row_json = MessageJson(m);
}

// One row change -> a change event (docs/formats/replica.md, "The change-event convention"):
// subject and partition key = the row's key, extensions version and commitseq = `version`
// (the commit LSN: grows along the stream, so along every key and partition), the new row as
// JSON data, id <topic>/<key>/<version> so a re-read change is dropped by the idempotent
// publish. A TRUNCATE is a converge.change.truncate event at the same version, keyed by the
// table, id <topic>/<version>/truncate (no key's id ends in a word). A change that cannot be
// captured is a malformed row (its dead letter says why).
void BuildChangeRow(const cdc::WalMessage& m, Lsn version, int64_t commit_time_unix_micros,
                    const std::string& topic_prefix, const std::string& slot, ClaimedRow* out) {
  const bool truncate = m.kind == cdc::WalMessage::Kind::kTruncate;
  out->seq = static_cast<int64_t>(version);
  out->topic = topic_prefix + m.table;
  out->key = truncate ? m.table : m.key;
  out->id.clear();
  out->value.clear();
  out->timestamp_micros = 0;
  out->malformed = false;
  out->reason.clear();
  out->row_json.clear();
  Status s = m.error.empty() ? CheckTopicName(out->topic) : FailedPreconditionError(m.error);
  Event event;
  if (s.ok() && truncate) {
    event.set_source("/converge/cdc/" + slot);
    event.set_id(out->topic + "/" + std::to_string(version) + "/truncate");
    event.set_type("converge.change.truncate");
    event.set_subject(m.table);
    event.SetExtension("version", std::to_string(version));
    event.SetExtension("commitseq", std::to_string(version));
    event.set_partitionkey(m.table);
    event.set_time(FormatRfc3339(commit_time_unix_micros * 1000));
  } else if (s.ok()) {
    const bool upsert = m.kind == cdc::WalMessage::Kind::kUpsert;
    event.set_source("/converge/cdc/" + slot);
    event.set_id(out->topic + "/" + m.key + "/" + std::to_string(version));
    event.set_type(upsert ? "converge.change.upsert" : "converge.change.delete");
    event.set_subject(m.key);
    event.SetExtension("version", std::to_string(version));
    event.SetExtension("commitseq", std::to_string(version));
    event.set_partitionkey(m.key);
    event.set_time(FormatRfc3339(commit_time_unix_micros * 1000));
    if (upsert) {
      event.set_datacontenttype("application/json");
      s = event.SetJsonData(m.row_json);
    }
  }
  if (s.ok()) s = event.Validate();
  if (s.ok()) s = CheckAttributeLimits(event);
  if (s.ok()) s = EncodeBinary(event, &out->value);
  if (s.ok()) {
    AppendEventIdentity(event, &out->id);
    return;
  }
  out->malformed = true;
  out->value.clear();
  out->reason = "row change of " + m.table + " at " + cdc::FormatLsn(version) + ": " +
                std::string(s.message());
  out->row_json = "{\"table\":";
  AppendJsonString(m.table, &out->row_json);
  out->row_json += ",\"key\":";
  AppendJsonString(m.key, &out->row_json);
  out->row_json += ",\"commit_lsn\":";
  AppendJsonString(cdc::FormatLsn(version), &out->row_json);
  out->row_json += '}';
}

// Table capture needs every kind of change from the publication: one that leaves out deletes
// or truncates would leave rows in the copies that are gone from the table, silently.
Status CheckCapturePublication(cdc::ReplicationStream& conn, const std::string& publication) {
  CONVERGE_ASSIGN_OR_RETURN(
      auto rows, conn.Exec("SELECT pubinsert AND pubupdate AND pubdelete AND pubtruncate FROM "
                           "pg_publication WHERE pubname = '" +
                           publication + "'"));
  if (rows.empty()) {
    return NotFoundError("publication '" + publication +
                         "' does not exist: create it with the tables to capture (CREATE "
                         "PUBLICATION " +
                         publication + " FOR TABLE ...)");
  }
  if (rows[0][0] != "t") {
    return FailedPreconditionError(
        "publication '" + publication +
        "' does not publish every kind of change (its publish option leaves out insert, "
        "update, delete or truncate), so table capture would miss changes: ALTER PUBLICATION " +
        publication + " SET (publish = 'insert, update, delete, truncate')");
  }
  return Status::Ok();
}

class WalSource final : public OutboxSource {
 public:
  WalSource(Env& env, WalConnector connect, SourceOptions options)
      : env_(env),
        connect_(std::move(connect)),
        options_(std::move(options)),
        reader_(env.clock(), ReaderOptions(options_)) {}

  Result<bool> Acquire(bool /*rebalance*/) override {
    // After a failed cycle (a batch claimed and not removed), start over from the slot.
    if (conn_ != nullptr && streaming_ && !awaiting_remove_) return true;
    Reset();
    CONVERGE_ASSIGN_OR_RETURN(conn_, connect_());
    Result<cdc::SlotInfo> info = conn_->GetSlot(options_.wal_slot);
    if (!info.ok()) return Drop(info.status());
    if (!info->exists) {
      return Drop(FailedPreconditionError(
          "relay: replication slot '" + options_.wal_slot +
          "' does not exist. The relay never creates it by itself: if it existed before, it "
          "was dropped, and messages committed after its last confirmed position are lost "
          "(reconcile from the source). Create it with `converge relay --config FILE "
          "--create-slots` or CreateWalSlot"));
    }
    if (info->wal_status == "lost") {
      return Drop(FailedPreconditionError(
          "relay: replication slot '" + options_.wal_slot +
          "' was invalidated (wal_status lost: it fell behind max_slot_wal_keep_size), so WAL "
          "it needed is gone and messages committed after " +
          cdc::FormatLsn(info->confirmed_flush) +
          " may be lost. Drop and re-create it (`converge relay --drop-slot`, "
          "`--create-slots`) and reconcile from the source"));
    }
    if (info->plugin != "pgoutput") {
      return Drop(FailedPreconditionError("relay: replication slot '" + options_.wal_slot +
                                          "' uses plugin '" + info->plugin + "', not pgoutput"));
    }
    if (options_.wal_capture_tables) {
      if (Status pub = CheckCapturePublication(*conn_, options_.wal_publication); !pub.ok()) {
        return Drop(pub.WithContext("relay: replication slot '" + options_.wal_slot + "'"));
      }
      // A capture slot without a finished snapshot would stream changes on top of missing
      // rows: refuse it.
      Result<std::vector<std::vector<std::string>>> done = conn_->Exec(
          "SELECT 1 FROM converge_cdc_snapshot WHERE slot = '" + options_.wal_slot + "'");
      if (!done.ok() || done->empty()) {
        return Drop(FailedPreconditionError(
            "relay: the initial snapshot of replication slot '" + options_.wal_slot +
            "' never completed (no row in converge_cdc_snapshot: interrupted, or the slot was "
            "not created for table capture). Drop the slot and create it again with "
            "`converge relay --config FILE --create-slots --log-dir DIR` or CreateCaptureSlot"));
      }
    }
    if (info->active_elsewhere) {
      Reset();
      return false;  // another relay streams from the slot: stand by
    }
    Status s = conn_->StartReplication(options_.wal_slot, options_.wal_publication, 0);
    if (!s.ok()) {
      Reset();
      // Lost the race to another relay of the same slot.
      if (s.code() == StatusCode::kFailedPrecondition &&
          s.message().find("is active") != std::string_view::npos) {
        return false;
      }
      return s;
    }
    streaming_ = true;
    reader_.Reset(info->confirmed_flush);
    return true;
  }

  Status Claim(size_t max_rows, size_t max_bytes, Batch* out) override {
    out->Clear();
    if (!streaming_) return UnavailableError("relay: not streaming");
    size_t reads = 0;
    if (!stash_.empty()) {
      CONVERGE_RETURN_IF_ERROR(Feed(stash_));
      stash_.clear();
    }
    while (reader_.ready_messages() < max_rows && reads < kMaxReadsPerClaim) {
      Result<bool> got = conn_->ReadAvailable(&buffer_);
      if (!got.ok()) return Drop(got.status());
      if (!*got) break;
      ++reads;
      CONVERGE_RETURN_IF_ERROR(Feed(buffer_));
    }
    txs_.clear();
    reader_.TakeReady(max_rows, max_bytes, &txs_);
    for (const cdc::WalTransaction& tx : txs_) {
      for (const cdc::WalMessage& m : tx.messages) {
        if (m.kind == cdc::WalMessage::Kind::kMessage) {
          BuildWalRow(m, tx.commit_time_unix_micros, &out->Add());
          out->bytes += m.content.size();
        } else {
          BuildChangeRow(m, tx.commit_lsn, tx.commit_time_unix_micros,
                         options_.wal_capture_topic_prefix, options_.wal_slot, &out->Add());
          out->bytes += m.row_json.size();
        }
      }
    }
    out->full = reader_.ready_transactions() > 0 || reads >= kMaxReadsPerClaim;
    if (!txs_.empty()) {
      claimed_end_ = txs_.back().end_lsn;
      awaiting_remove_ = true;
    }
    UpdateLag();
    return SendStatusIfDue();
  }

  Status Remove(const Batch& /*batch*/) override {
    if (!streaming_) return UnavailableError("relay: not streaming");
    reader_.Durable(claimed_end_);
    awaiting_remove_ = false;
    Status s = SendStatusIfDue();
    UpdateLag();
    return s;
  }

  int wait_fd() override { return streaming_ && conn_ != nullptr ? conn_->socket() : -1; }

  // True if the stream has a message: it is kept for the next Claim.
  bool DrainNotifications() override {
    if (!streaming_ || !stash_.empty()) return !stash_.empty();
    Result<bool> got = conn_->ReadAvailable(&stash_);
    if (!got.ok()) {
      // The next Claim reports the broken stream.
      stash_.clear();
      return true;
    }
    if (!*got) stash_.clear();
    return *got;
  }

  void Reset() override {
    conn_.reset();
    streaming_ = false;
    awaiting_remove_ = false;
    stash_.clear();
    oldest_pending_.store(0, std::memory_order_relaxed);
  }

  uint32_t buckets_held() const override { return streaming_ ? 1 : 0; }

  int64_t wal_lag_bytes() const override { return lag_bytes_.load(std::memory_order_relaxed); }
  int64_t wal_oldest_pending_micros() const override {
    return oldest_pending_.load(std::memory_order_relaxed);
  }

 private:
  static cdc::WalReaderOptions ReaderOptions(const SourceOptions& o) {
    cdc::WalReaderOptions r;
    r.prefix = std::string(outbox_format::kWalPrefix);
    r.capture_changes = o.wal_capture_tables;
    return r;
  }

  Status Feed(const std::string& data) {
    Status s = reader_.OnCopyData(data);
    if (!s.ok())
      return Drop(s.WithContext("relay: replication stream of slot '" + options_.wal_slot + "'"));
    return Status::Ok();
  }

  Status SendStatusIfDue() {
    if (!reader_.StatusDue()) return Status::Ok();
    Status s = conn_->SendCopyData(reader_.TakeStatus());
    if (!s.ok()) return Drop(s);
    return Status::Ok();
  }

  void UpdateLag() {
    lag_bytes_.store(reader_.lag_bytes(), std::memory_order_relaxed);
    const int64_t lag_ms = reader_.lag_ms();
    oldest_pending_.store(lag_ms > 0 ? env_.clock().NowWallMicros() - lag_ms * 1000 : 0,
                          std::memory_order_relaxed);
  }

  // Drops the connection after an error that may have broken the session.
  Status Drop(Status s) {
    Reset();
    return s;
  }

  Env& env_;
  WalConnector connect_;
  SourceOptions options_;
  cdc::WalReader reader_;
  std::unique_ptr<cdc::ReplicationStream> conn_;
  bool streaming_ = false;
  bool awaiting_remove_ = false;
  Lsn claimed_end_ = 0;
  std::string buffer_;
  std::string stash_;  // a message read while looking for wake-ups
  std::vector<cdc::WalTransaction> txs_;
  std::atomic<int64_t> lag_bytes_{0};
  std::atomic<int64_t> oldest_pending_{0};
};

}  // namespace

std::unique_ptr<OutboxSource> NewWalSource(Env& env, const std::string& conninfo,
                                           const SourceOptions& options) {
  WalConnector connect = [conninfo, name = options.name,
                          timeout_ms = options.postgres_connect_timeout_ms]()
      -> Result<std::unique_ptr<cdc::ReplicationStream>> {
    CONVERGE_ASSIGN_OR_RETURN(auto conn,
                              cdc::ReplicationConnection::Connect(conninfo, name, timeout_ms));
    return std::unique_ptr<cdc::ReplicationStream>(std::move(conn));
  };
  return std::make_unique<WalSource>(env, std::move(connect), options);
}

std::unique_ptr<OutboxSource> NewWalSourceWith(Env& env, WalConnector connect,
                                               const SourceOptions& options) {
  return std::make_unique<WalSource>(env, std::move(connect), options);
}

}  // namespace converge::outbox_internal

namespace converge {

Status CreateWalSlot(const std::string& conninfo, const std::string& slot,
                     const std::string& publication) {
  CONVERGE_RETURN_IF_ERROR(cdc::CheckSlotName(slot, "slot"));
  CONVERGE_RETURN_IF_ERROR(cdc::CheckSlotName(publication, "publication"));
  CONVERGE_ASSIGN_OR_RETURN(auto conn,
                            cdc::ReplicationConnection::Connect(conninfo, "converge", 10'000));
  CONVERGE_ASSIGN_OR_RETURN(
      auto rows, conn->Exec("SELECT 1 FROM pg_publication WHERE pubname = '" + publication + "'"));
  if (rows.empty()) {
    Status s = conn->Exec("CREATE PUBLICATION " + publication).status();
    // Another process created it meanwhile: fine.
    if (!s.ok() && s.code() != StatusCode::kAlreadyExists) return s;
  }
  return conn->CreateSlot(slot, /*export_snapshot=*/false).status();
}

Status DropWalSlot(const std::string& conninfo, const std::string& slot) {
  CONVERGE_RETURN_IF_ERROR(cdc::CheckSlotName(slot, "slot"));
  CONVERGE_ASSIGN_OR_RETURN(auto conn,
                            cdc::ReplicationConnection::Connect(conninfo, "converge", 10'000));
  CONVERGE_RETURN_IF_ERROR(conn->DropSlot(slot));
  // A capture snapshot record of the slot is void now (a slot of that name created later
  // needs its own snapshot).
  CONVERGE_ASSIGN_OR_RETURN(auto table,
                            conn->Exec("SELECT to_regclass('converge_cdc_snapshot') IS NOT NULL"));
  if (!table.empty() && table[0][0] == "t") {
    CONVERGE_RETURN_IF_ERROR(
        conn->Exec("DELETE FROM converge_cdc_snapshot WHERE slot = '" + slot + "'").status());
  }
  return Status::Ok();
}

Status CreateCaptureSlot(const std::string& conninfo, const std::string& slot,
                         const std::string& publication, const std::string& topic_prefix,
                         RelaySink& sink) {
  using outbox_internal::ClaimedRow;
  CONVERGE_RETURN_IF_ERROR(cdc::CheckSlotName(slot, "slot"));
  CONVERGE_RETURN_IF_ERROR(cdc::CheckSlotName(publication, "publication"));
  CONVERGE_ASSIGN_OR_RETURN(auto conn,
                            cdc::ReplicationConnection::Connect(conninfo, "converge", 10'000));
  CONVERGE_RETURN_IF_ERROR(outbox_internal::CheckCapturePublication(*conn, publication));
  CONVERGE_ASSIGN_OR_RETURN(auto created, conn->CreateSlot(slot, /*export_snapshot=*/true));
  // Rows read in the snapshot are older than every change streamed from the slot, whose
  // commit LSNs are at or after its start point.
  const cdc::Lsn version = created.consistent_point > 1 ? created.consistent_point - 1 : 1;
  const int64_t now_micros = Env::Default().clock().NowWallMicros();
  std::vector<ClaimedRow> rows;
  uint64_t total = 0;
  auto flush = [&]() -> Status {
    if (rows.empty()) return Status::Ok();
    std::vector<SinkRecord> records;
    records.reserve(rows.size());
    for (const ClaimedRow& r : rows) {
      if (r.malformed) return FailedPreconditionError("snapshot: " + r.reason);
      records.push_back(SinkRecord{r.topic, RecordView{r.id, r.key, r.value, 0}});
    }
    std::vector<SinkRejection> rejected;
    CONVERGE_RETURN_IF_ERROR(sink.Publish(records, &rejected));
    if (!rejected.empty()) {
      return FailedPreconditionError("snapshot: the log refused a row: " + rejected[0].reason);
    }
    total += rows.size();
    rows.clear();
    return Status::Ok();
  };
  Status s = cdc::ReadSnapshot(
      conninfo, created.snapshot_name, publication, 10'000,
      [&](const cdc::Relation& rel, const std::vector<cdc::TupleValue>& tuple) -> Status {
        cdc::WalMessage m;
        m.kind = cdc::WalMessage::Kind::kUpsert;
        m.table = cdc::QualifiedName(rel);
        Result<std::string> key = cdc::RowKey(rel, tuple);
        Result<std::string> row = cdc::RowJson(rel, tuple);
        if (!key.ok()) return key.status();
        if (!row.ok()) return row.status();
        m.key = std::move(key).value();
        m.row_json = std::move(row).value();
        outbox_internal::BuildChangeRow(m, version, now_micros, topic_prefix, slot,
                                        &rows.emplace_back());
        return rows.size() >= 1000 ? flush() : Status::Ok();
      });
  if (s.ok()) s = flush();
  if (s.ok()) {
    s = conn->Exec(
                "CREATE TABLE IF NOT EXISTS converge_cdc_snapshot (slot text PRIMARY KEY, "
                "consistent_point text NOT NULL, rows bigint NOT NULL, done_at timestamptz NOT "
                "NULL DEFAULT now())")
            .status();
  }
  if (s.ok()) {
    s = conn->Exec("INSERT INTO converge_cdc_snapshot (slot, consistent_point, rows) VALUES ('" +
                   slot + "', '" + cdc::FormatLsn(created.consistent_point) + "', " +
                   std::to_string(total) +
                   ") ON CONFLICT (slot) DO UPDATE SET consistent_point = "
                   "excluded.consistent_point, rows = excluded.rows, done_at = now()")
            .status();
  }
  if (!s.ok()) {
    // No half-made capture slot stays behind: creating it again starts over.
    Status dropped = conn->DropSlot(slot);
    if (!dropped.ok()) {
      auto again = cdc::ReplicationConnection::Connect(conninfo, "converge", 10'000);
      if (again.ok()) (*again)->DropSlot(slot).IgnoreError();
    }
    return s.WithContext("create capture slot '" + slot + "'");
  }
  return Status::Ok();
}

}  // namespace converge
