// A Log that stamps and journals every append made through it (docs/formats/audit.md,
// "Stamps"): the sidecar wraps its log in one, so the events converge publishes itself (the
// store's change feed, saga commands, outbox relays, dead-letter replays) are audited exactly
// like the events published over HTTP, by whatever module appends them. Those modules only
// see a Log.
//
// Every record whose value is a CloudEvent binary record is stamped (producer id, next
// sequence number of its topic) before the append; once the inner log acknowledges the
// append, the (topic, partition, offset, seq) of every record it really appended (not a
// duplicate dropped by idempotent publish) is recorded in the AckJournal. Values that are not
// CloudEvents (dead-letter records, internal bookkeeping) are appended unchanged and not
// audited. A batch that the inner log refuses as invalid only because the stamps made a
// record too large is appended again unstamped (the audit never refuses what the log would
// take). Every other call goes straight to the inner log.
#pragma once

#include <memory>
#include <span>
#include <string>
#include <vector>

#include "audit/audit.h"
#include "converge/log.h"

namespace converge::audit {

class AuditedLog : public Log {
 public:
  // `stamper` and `journal` must outlive this Log.
  AuditedLog(std::unique_ptr<Log> inner, Stamper& stamper, AckJournal& journal)
      : inner_(std::move(inner)), stamper_(stamper), journal_(journal) {}

  Status CreateTopic(const std::string& topic, const TopicOptions& options) override {
    return inner_->CreateTopic(topic, options);
  }
  Status DeleteTopic(const std::string& topic) override { return inner_->DeleteTopic(topic); }
  std::vector<std::string> ListTopics() override { return inner_->ListTopics(); }
  Result<TopicInfo> DescribeTopic(const std::string& topic) override {
    return inner_->DescribeTopic(topic);
  }
  Result<std::vector<AppendResult>> Append(const std::string& topic,
                                           std::span<const RecordView> records) override;
  void AppendAsync(const std::string& topic, std::span<const RecordView> records,
                   AppendDone done) override;
  Result<std::vector<AppendResult>> AppendToPartition(const std::string& topic, uint32_t partition,
                                                      std::span<const RecordView> records) override;
  Result<ReadBatch> Read(const std::string& topic, uint32_t partition, uint64_t offset,
                         size_t max_records, size_t max_bytes) override {
    return inner_->Read(topic, partition, offset, max_records, max_bytes);
  }
  Result<uint64_t> OffsetForTime(const std::string& topic, uint32_t partition,
                                 int64_t timestamp_micros) override {
    return inner_->OffsetForTime(topic, partition, timestamp_micros);
  }
  Result<std::unique_ptr<Watch>> WatchAppends(const std::string& topic,
                                              AppendCallback fn) override {
    return inner_->WatchAppends(topic, std::move(fn));
  }
  Status EnforceRetention() override { return inner_->EnforceRetention(); }
  Status Sync() override { return inner_->Sync(); }
  Status WriteHealth() override { return inner_->WriteHealth(); }

  Log& inner() { return *inner_; }

  // One batch with its stamps: the stamped values (owned), the views to append, and the key
  // each record's ack is journaled under (its stamp's seq; IdKey of its id for a record that
  // is not a CloudEvent; 0: not audited).
  struct Stamped {
    std::vector<std::string> values;
    std::vector<RecordView> views;
    std::vector<uint64_t> seqs;
    size_t count = 0;    // records stamped
    size_t tracked = 0;  // records whose ack is journaled (stamped or keyed by id)
  };

 private:
  Stamped StampBatch(const std::string& topic, std::span<const RecordView> records);
  void RecordAcks(const std::string& topic, const Stamped& stamped,
                  const std::vector<AppendResult>& appended);

  std::unique_ptr<Log> inner_;
  Stamper& stamper_;
  AckJournal& journal_;
};

}  // namespace converge::audit
