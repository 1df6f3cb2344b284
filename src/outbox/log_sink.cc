// RelaySink on the converge log: one Append per destination topic per batch (the log's
// idempotent publish drops events that an earlier, interrupted relay cycle already appended).
#include <charconv>
#include <mutex>
#include <set>
#include <unordered_map>

#include "converge/relay.h"

namespace converge {
namespace {

// "record N: ..." -> N (the log names the offending record of a refused batch).
std::optional<size_t> RefusedRecordIndex(const Status& s) {
  constexpr std::string_view kPrefix = "record ";
  std::string_view m = s.message();
  if (m.substr(0, kPrefix.size()) != kPrefix) return std::nullopt;
  m.remove_prefix(kPrefix.size());
  size_t index = 0;
  auto [ptr, ec] = std::from_chars(m.data(), m.data() + m.size(), index);
  if (ec != std::errc() || ptr == m.data() || ptr == m.data() + m.size() || *ptr != ':') {
    return std::nullopt;
  }
  return index;
}

class LogSink final : public RelaySink {
 public:
  LogSink(Log& log, LogSinkOptions options) : log_(log), options_(std::move(options)) {}

  Status Publish(std::span<const SinkRecord> records,
                 std::vector<SinkRejection>* rejected) override {
    rejected->clear();
    // Group by destination topic, keeping order within each group (per-key order).
    groups_.clear();
    order_.clear();
    for (size_t i = 0; i < records.size(); ++i) {
      const std::string& target = Target(records[i].topic);
      auto [it, inserted] = groups_.try_emplace(target);
      if (inserted) order_.push_back(&it->first);
      it->second.push_back(i);
    }
    for (const std::string* topic : order_) {
      CONVERGE_RETURN_IF_ERROR(PublishGroup(*topic, records, groups_[*topic], rejected));
    }
    return Status::Ok();
  }

  Status DeadLetter(std::span<const RecordView> dead_letters) override {
    if (dead_letters.empty()) return Status::Ok();
    CONVERGE_RETURN_IF_ERROR(EnsureDeadLetterTopic());
    return log_.Append(options_.dead_letter_topic, dead_letters).status();
  }

 private:
  const std::string& Target(std::string_view topic) {
    auto it = options_.topic_map.find(std::string(topic));
    if (it != options_.topic_map.end()) return it->second;
    scratch_names_.emplace(topic);
    return *scratch_names_.find(std::string(topic));
  }

  Status PublishGroup(const std::string& topic, std::span<const SinkRecord> records,
                      std::vector<size_t> pending, std::vector<SinkRejection>* rejected) {
    bool created = false;
    // Each round either succeeds, or removes one refused record, or creates the topic.
    for (size_t round = 0; round <= records.size() + 1 && !pending.empty(); ++round) {
      views_.clear();
      for (size_t i : pending) views_.push_back(records[i].record);
      Result<std::vector<AppendResult>> r = log_.Append(topic, views_);
      if (r.ok()) return Status::Ok();
      const Status& s = r.status();
      if (s.code() == StatusCode::kNotFound && options_.create_topics && !created) {
        Status c = log_.CreateTopic(topic, options_.topic_options);
        if (!c.ok() && c.code() != StatusCode::kAlreadyExists) {
          if (c.code() != StatusCode::kInvalidArgument) return c;
          return RejectAll(pending, "cannot create topic '" + topic + "': " +
                                        std::string(c.message()), rejected);
        }
        created = true;
        continue;
      }
      if (s.code() == StatusCode::kNotFound) {
        return RejectAll(pending, "unknown topic '" + topic + "'", rejected);
      }
      if (s.code() == StatusCode::kInvalidArgument) {
        std::optional<size_t> bad = RefusedRecordIndex(s);
        if (!bad || *bad >= pending.size()) {
          return RejectAll(pending, "log refused the batch: " + std::string(s.message()),
                           rejected);
        }
        rejected->push_back(SinkRejection{pending[*bad], "log refused the event: " +
                                                             std::string(s.message())});
        pending.erase(pending.begin() + static_cast<std::ptrdiff_t>(*bad));
        continue;
      }
      return s;  // transient (or unknown): the relay retries the whole batch
    }
    return Status::Ok();
  }

  Status RejectAll(const std::vector<size_t>& pending, const std::string& reason,
                   std::vector<SinkRejection>* rejected) {
    for (size_t i : pending) rejected->push_back(SinkRejection{i, reason});
    return Status::Ok();
  }

  Status EnsureDeadLetterTopic() {
    if (dead_letter_ready_) return Status::Ok();
    TopicOptions o;
    o.partitions = 1;
    o.durability = Durability::kFsync;
    o.internal = !options_.dead_letter_topic.empty() && options_.dead_letter_topic[0] == '_';
    Status s = log_.CreateTopic(options_.dead_letter_topic, o);
    if (!s.ok() && s.code() != StatusCode::kAlreadyExists) return s;
    dead_letter_ready_ = true;
    return Status::Ok();
  }

  Log& log_;
  LogSinkOptions options_;
  bool dead_letter_ready_ = false;
  std::unordered_map<std::string, std::vector<size_t>> groups_;
  std::vector<const std::string*> order_;
  std::set<std::string, std::less<>> scratch_names_;  // bounded by the number of topics seen
  std::vector<RecordView> views_;
};

}  // namespace

Result<std::unique_ptr<RelaySink>> NewLogSink(Log& log, LogSinkOptions options) {
  if (options.dead_letter_topic.empty()) {
    return InvalidArgumentError("log sink: dead_letter_topic is empty");
  }
  return std::unique_ptr<RelaySink>(std::make_unique<LogSink>(log, std::move(options)));
}

}  // namespace converge
