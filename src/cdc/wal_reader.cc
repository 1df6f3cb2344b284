#include "cdc/wal_reader.h"

#include <algorithm>

namespace converge::cdc {

WalReader::WalReader(Clock& clock, WalReaderOptions options)
    : clock_(clock), options_(std::move(options)) {}

void WalReader::Reset(Lsn confirmed) {
  in_tx_ = false;
  open_ = WalTransaction{};
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
      open_.xid = m.begin.xid;
      open_.commit_time_unix_micros = m.begin.commit_time_pg + kPgEpochUnixMicros;
      return Status::Ok();
    case 'C': {
      if (!in_tx_) return FailedPreconditionError("pgoutput: Commit outside a transaction");
      in_tx_ = false;
      open_.end_lsn = m.commit.end_lsn;
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
      if (!in_tx_) return FailedPreconditionError("pgoutput: transactional Message outside a "
                                                  "transaction");
      open_.bytes += msg.content.size();
      open_.messages.push_back(std::move(msg));
      return Status::Ok();
    }
    default:
      // Relation, row changes, origin, type, truncate: not outbox messages.
      return Status::Ok();
  }
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
