#include "cdc/wal_reader.h"

#include <algorithm>
#include <iterator>

#include "cdc/rows.h"

namespace converge::cdc {

WalReader::WalReader(Clock& clock, WalReaderOptions options)
    : clock_(clock), options_(std::move(options)) {}

void WalReader::Reset(Lsn confirmed) {
  in_tx_ = false;
  open_ = WalTransaction{};
  open_rows_.clear();
  dropped_ = 0;
  relations_.clear();  // a new session sends them again
  ready_.clear();
  ready_messages_ = 0;
  in_flight_.clear();
  durable_ = std::max(durable_, confirmed);
  // What was received but not durable will be sent again: it no longer counts as seen.
  seen_ = durable_;
  reply_requested_ = false;
  // The new session has heard nothing from us: tell it where we are soon.
  ever_sent_ = false;
}

Status WalReader::OnCopyData(std::string_view copy_data) {
  CONVERGE_ASSIGN_OR_RETURN(StreamMessage sm, DecodeStreamMessage(copy_data));
  server_end_ = std::max(server_end_, sm.wal_end);
  if (sm.kind == StreamMessage::Kind::kKeepalive) {
    if (sm.reply_requested) reply_requested_ = true;
    // Between transactions, everything up to the server's position has been sent to us.
    if (!in_tx_) seen_ = std::max(seen_, sm.wal_end);
    return Status::Ok();
  }
  CONVERGE_ASSIGN_OR_RETURN(PgOutputMessage m, DecodePgOutput(sm.payload));
  switch (m.tag) {
    case 'B':
      if (in_tx_) return FailedPreconditionError("pgoutput: Begin inside a transaction");
      in_tx_ = true;
      open_ = WalTransaction{};
      open_rows_.clear();
      dropped_ = 0;
      open_.xid = m.begin.xid;
      open_.commit_time_unix_micros = m.begin.commit_time_pg + kPgEpochUnixMicros;
      return Status::Ok();
    case 'C': {
      if (!in_tx_) return FailedPreconditionError("pgoutput: Commit outside a transaction");
      in_tx_ = false;
      open_.end_lsn = m.commit.end_lsn;
      open_.commit_lsn = m.commit.commit_lsn;
      if (dropped_ > 0) {
        // Superseded row changes (kUpsert with an empty table marks them) go.
        std::erase_if(open_.messages, [](const WalMessage& w) {
          return w.kind != WalMessage::Kind::kMessage && w.table.empty();
        });
        dropped_ = 0;
      }
      open_rows_.clear();
      open_.commit_time_unix_micros = m.commit.commit_time_pg + kPgEpochUnixMicros;
      seen_ = std::max(seen_, m.commit.end_lsn);
      if (!open_.messages.empty()) {
        ready_messages_ += open_.messages.size();
        ready_.push_back(std::move(open_));
      }
      open_ = WalTransaction{};
      return Status::Ok();
    }
    case 'M': {
      if (!Matches(m.message.prefix)) return Status::Ok();
      WalMessage msg;
      msg.lsn = m.message.lsn;
      msg.transactional = m.message.transactional;
      msg.prefix.assign(m.message.prefix);
      msg.content.assign(m.message.content);
      if (!m.message.transactional) {
        // Emitted outside any transaction's fate (it survives a rollback): handed over alone,
        // at the position already received, so the caller can refuse it visibly.
        WalTransaction alone;
        alone.end_lsn = seen_;
        alone.commit_time_unix_micros = clock_.NowWallMicros();
        alone.bytes = msg.content.size();
        alone.messages.push_back(std::move(msg));
        ++ready_messages_;
        ready_.push_back(std::move(alone));
        return Status::Ok();
      }
      if (!in_tx_)
        return FailedPreconditionError(
            "pgoutput: transactional Message outside a "
            "transaction");
      open_.bytes += msg.content.size();
      open_.messages.push_back(std::move(msg));
      return Status::Ok();
    }
    case 'R':
      if (options_.capture_changes) relations_[m.relation.id] = m.relation;
      return Status::Ok();
    case 'I':
    case 'U':
    case 'D':
      if (!options_.capture_changes) return Status::Ok();
      if (!in_tx_) return FailedPreconditionError("pgoutput: a row change outside a transaction");
      return OnChange(m);
    case 'T':
      if (!options_.capture_changes) return Status::Ok();
      if (!in_tx_) return FailedPreconditionError("pgoutput: a truncate outside a transaction");
      return OnTruncate(m);
    default:
      // Origin, type: nothing to hand out.
      return Status::Ok();
  }
}

Status WalReader::OnTruncate(const PgOutputMessage& m) {
  for (uint32_t id : m.truncate.relation_ids) {
    auto it = relations_.find(id);
    if (it == relations_.end()) {
      return FailedPreconditionError("pgoutput: a truncate of relation " + std::to_string(id) +
                                     " before its Relation message");
    }
    WalMessage truncate;
    truncate.kind = WalMessage::Kind::kTruncate;
    truncate.table = QualifiedName(it->second);
    // The table's earlier changes in this transaction (rows, and an earlier truncate) are
    // gone with it: superseded, removed at commit.
    for (WalMessage& w : open_.messages) {
      if (w.kind == WalMessage::Kind::kMessage || w.table != truncate.table) continue;
      open_.bytes -= w.row_json.size();
      w.table.clear();
      ++dropped_;
    }
    for (auto row = open_rows_.begin(); row != open_rows_.end();) {
      const std::string& id_key = row->first;
      const bool same = id_key.size() > truncate.table.size() &&
                        id_key.compare(0, truncate.table.size(), truncate.table) == 0 &&
                        id_key[truncate.table.size()] == '\0';
      row = same ? open_rows_.erase(row) : std::next(row);
    }
    open_.messages.push_back(std::move(truncate));
  }
  return Status::Ok();
}

Status WalReader::OnChange(const PgOutputMessage& m) {
  auto it = relations_.find(m.change.relation_id);
  if (it == relations_.end()) {
    return FailedPreconditionError("pgoutput: a change of relation " +
                                   std::to_string(m.change.relation_id) +
                                   " before its Relation message");
  }
  const Relation& rel = it->second;
  WalMessage change;
  change.table = QualifiedName(rel);
  auto fail = [&](const Status& s) {
    change.kind = WalMessage::Kind::kUpsert;
    change.error = std::string(s.message());
    AddChange(std::move(change));
    return Status::Ok();
  };
  std::vector<TupleValue> new_tuple = m.change.new_tuple;
  if (m.change.op == 'U' && m.change.old_kind == 'O') {
    // REPLICA IDENTITY FULL: unchanged TOASTed values come from the old row.
    for (size_t i = 0; i < new_tuple.size() && i < m.change.old_tuple.size(); ++i) {
      if (new_tuple[i].kind == 'u') new_tuple[i] = m.change.old_tuple[i];
    }
  }
  if (m.change.op == 'D') {
    Result<std::string> key = RowKey(rel, m.change.old_tuple);
    if (!key.ok()) return fail(key.status());
    change.kind = WalMessage::Kind::kDelete;
    change.key = std::move(key).value();
    AddChange(std::move(change));
    return Status::Ok();
  }
  Result<std::string> key = RowKey(rel, new_tuple);
  if (!key.ok()) return fail(key.status());
  if (m.change.op == 'U' && m.change.old_kind != 0) {
    Result<std::string> old_key = RowKey(rel, m.change.old_tuple);
    if (!old_key.ok()) return fail(old_key.status());
    if (*old_key != *key) {
      WalMessage gone;
      gone.kind = WalMessage::Kind::kDelete;
      gone.table = change.table;
      gone.key = std::move(old_key).value();
      AddChange(std::move(gone));
    }
  }
  Result<std::string> row = RowJson(rel, new_tuple);
  change.key = std::move(key).value();
  if (!row.ok()) return fail(row.status());
  change.kind = WalMessage::Kind::kUpsert;
  change.row_json = std::move(row).value();
  AddChange(std::move(change));
  return Status::Ok();
}

void WalReader::AddChange(WalMessage change) {
  if (change.error.empty()) {
    std::string id = change.table;
    id.push_back('\0');
    id.append(change.key);
    auto [it, fresh] = open_rows_.try_emplace(std::move(id), open_.messages.size());
    if (!fresh) {
      WalMessage& old = open_.messages[it->second];
      open_.bytes -= old.row_json.size();
      old.table.clear();  // superseded: removed at commit
      ++dropped_;
      it->second = open_.messages.size();
    }
  }
  open_.bytes += change.row_json.size();
  open_.messages.push_back(std::move(change));
}

size_t WalReader::TakeReady(size_t max_messages, size_t max_bytes,
                            std::vector<WalTransaction>* out) {
  size_t taken = 0, messages = 0, bytes = 0;
  while (!ready_.empty() && messages < max_messages && bytes < max_bytes) {
    WalTransaction& tx = ready_.front();
    messages += tx.messages.size();
    bytes += tx.bytes;
    ready_messages_ -= tx.messages.size();
    in_flight_.push_back(Pending{tx.end_lsn, tx.commit_time_unix_micros});
    out->push_back(std::move(tx));
    ready_.pop_front();
    ++taken;
  }
  return taken;
}

void WalReader::Durable(Lsn end_lsn) {
  durable_ = std::max(durable_, end_lsn);
  while (!in_flight_.empty() && in_flight_.front().end_lsn <= durable_) in_flight_.pop_front();
}

Lsn WalReader::flush_position() const {
  Lsn flush = durable_;
  // Nothing of ours is outstanding: everything received may be confirmed. A transaction being
  // received (in_tx_) has not moved seen_ yet.
  if (ready_.empty() && in_flight_.empty()) flush = std::max(flush, seen_);
  return std::max(flush, sent_flush_);
}

bool WalReader::StatusDue() const {
  if (reply_requested_ || !ever_sent_) return true;
  if (flush_position() > sent_flush_) return true;
  return clock_.NowMonotonicNanos() - sent_at_ns_ >= options_.status_interval_ms * 1'000'000;
}

std::string WalReader::TakeStatus() {
  const Lsn flush = flush_position();
  sent_flush_ = flush;
  sent_at_ns_ = clock_.NowMonotonicNanos();
  reply_requested_ = false;
  ever_sent_ = true;
  const int64_t now_pg = clock_.NowWallMicros() - kPgEpochUnixMicros;
  // write = flush = apply: converge has nothing between "received" and "durable" to report.
  return EncodeStandbyStatus(flush, flush, flush, now_pg, false);
}

int64_t WalReader::lag_bytes() const {
  return server_end_ > sent_flush_ ? static_cast<int64_t>(server_end_ - sent_flush_) : 0;
}

int64_t WalReader::lag_ms() const {
  int64_t oldest = 0;
  if (!in_flight_.empty()) {
    oldest = in_flight_.front().commit_time_unix_micros;
  } else if (!ready_.empty()) {
    oldest = ready_.front().commit_time_unix_micros;
  } else {
    return 0;
  }
  return std::max<int64_t>(0, (clock_.NowWallMicros() - oldest) / 1000);
}

}  // namespace converge::cdc
