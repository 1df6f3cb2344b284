// The decisions of a logical replication consumer, without the socket: fed the CopyData
// payloads of a `pgoutput` stream in order, it assembles committed transactions, hands out the
// ones that carry logical messages with a prefix, and says which WAL position may be confirmed
// to the slot and when to send a status update.
//
// The rule it enforces: the confirmed (flush) position never passes a transaction whose
// messages the caller has not declared durable (Durable). Transactions without matching
// messages, and keepalives between transactions, move the position on once everything before
// them is durable, so an idle or unrelated workload does not pin WAL on the server.
//
// Time comes from the Clock it is given (status interval, lag). Thread-safety: none.
#pragma once

#include <cstdint>
#include <deque>
#include <map>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "cdc/pgoutput.h"
#include "converge/env.h"
#include "converge/status.h"

namespace converge::cdc {

// A logical message, or (table capture) the net change of one row in a transaction, or a
// TRUNCATE of a table (every row of it written before, in this transaction or earlier, is gone;
// the table's changes after it in the transaction follow it).
struct WalMessage {
  enum class Kind : uint8_t { kMessage, kUpsert, kDelete, kTruncate };
  Kind kind = Kind::kMessage;
  Lsn lsn = 0;  // messages: the message's LSN
  bool transactional = true;
  std::string prefix;
  std::string content;
  // Row changes: the table ("<schema>.<table>"), the key (cdc/rows.h), the new row as JSON
  // (upserts), and why the change cannot be captured (then key and row may be empty).
  std::string table;
  std::string key;
  std::string row_json;
  std::string error;
};

// A committed transaction with at least one matching message (or, for a non-transactional
// message, that message alone).
struct WalTransaction {
  Lsn commit_lsn = 0;  // the commit record's LSN: the version of the transaction's changes
  Lsn end_lsn = 0;     // confirm this once the messages are durable
  int64_t commit_time_unix_micros = 0;
  uint32_t xid = 0;
  std::vector<WalMessage> messages;
  size_t bytes = 0;  // sum of the contents
};

struct WalReaderOptions {
  // Messages whose prefix starts with this are kept; others are skipped.
  std::string prefix = "converge:";
  // A status update at least this often (the server disconnects a silent consumer after
  // wal_sender_timeout, 60 s by default).
  int64_t status_interval_ms = 10'000;
  // Table capture: hand out the INSERT/UPDATE/DELETE of the publication's tables too, one net
  // change per row and transaction (the last one wins: intermediate states of a transaction
  // were never visible), as upserts and deletes; a key change is a delete of the old key and
  // an upsert of the new one. A TRUNCATE of a table replaces the table's earlier changes in
  // the transaction with one kTruncate.
  bool capture_changes = false;
};

class WalReader {
 public:
  WalReader(Clock& clock, WalReaderOptions options);

  // Starts over after a reconnect: the server resends from its confirmed position (at most
  // `confirmed`), so everything received and not yet durable is forgotten.
  void Reset(Lsn confirmed);

  // One CopyData payload of the stream. DataLoss for malformed bytes; FailedPrecondition for a
  // message out of protocol order (a Commit without Begin, a Begin inside a transaction). After
  // an error the reader must be Reset (the caller reconnects).
  Status OnCopyData(std::string_view copy_data);

  size_t ready_transactions() const { return ready_.size(); }
  size_t ready_messages() const { return ready_messages_; }
  bool in_transaction() const { return in_tx_; }

  // Moves whole ready transactions, in commit order, into `out` (appended) until at least
  // `max_messages` messages or `max_bytes` content bytes were moved. Returns how many.
  size_t TakeReady(size_t max_messages, size_t max_bytes, std::vector<WalTransaction>* out);

  // Every transaction taken so far with end_lsn <= `end_lsn` is durable at the destination.
  void Durable(Lsn end_lsn);

  // The position that may be confirmed now (never decreasing).
  Lsn flush_position() const;
  // True if a status update should go out now: the flush position moved, the server asked
  // for a reply, or the interval passed.
  bool StatusDue() const;
  // The status update to send now (and records that it was sent).
  std::string TakeStatus();
  Lsn last_sent_flush() const { return sent_flush_; }

  // Lag: WAL bytes between the server's end of WAL and the confirmed position; and
  // milliseconds since the commit of the oldest matching transaction not yet durable (0 if
  // none).
  int64_t lag_bytes() const;
  int64_t lag_ms() const;

 private:
  struct Pending {
    Lsn end_lsn;
    int64_t commit_time_unix_micros;
  };
  // Adds a row change to the open transaction, replacing an earlier change of the same row.
  void AddChange(WalMessage change);
  Status OnChange(const PgOutputMessage& m);
  Status OnTruncate(const PgOutputMessage& m);
  bool Matches(std::string_view prefix) const {
    return prefix.substr(0, options_.prefix.size()) == options_.prefix;
  }

  Clock& clock_;
  WalReaderOptions options_;

  bool in_tx_ = false;
  WalTransaction open_;
  std::map<uint32_t, Relation> relations_;             // by relation id, this session
  std::unordered_map<std::string, size_t> open_rows_;  // table + key -> index in open_
  size_t dropped_ = 0;                                 // superseded entries in open_
  std::deque<WalTransaction> ready_;
  size_t ready_messages_ = 0;
  std::deque<Pending> in_flight_;  // taken, not yet durable
  Lsn durable_ = 0;                // highest end_lsn declared durable
  Lsn seen_ = 0;                   // everything up to here was received (between transactions)
  Lsn server_end_ = 0;
  Lsn sent_flush_ = 0;
  int64_t sent_at_ns_ = 0;
  bool reply_requested_ = false;
  bool ever_sent_ = false;
};

}  // namespace converge::cdc
