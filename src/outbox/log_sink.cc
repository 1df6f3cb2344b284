// RelaySink on the converge log: one Append per destination topic per batch (the log's
// idempotent publish drops events that an earlier, interrupted relay cycle already appended).
// Thread-safe: relays running at once may share one sink (the Log is thread-safe).
#include <atomic>
#include <charconv>

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
    if (records.empty()) return Status::Ok();
    // Group by destination topic, keeping order within each group (per-key order). Scratch
    // space is per call: several relays may share one sink.
    std::vector<std::pair<std::string, std::vector<size_t>>> groups;
    std::string_view last_topic;
    size_t last_group = 0;
    for (size_t i = 0; i < records.size(); ++i) {
      if (groups.empty() || records[i].topic != last_topic) {
        std::string target = Target(records[i].topic);
        last_topic = records[i].topic;
        last_group = groups.size();
        for (size_t g = 0; g < groups.size(); ++g) {
          if (groups[g].first == target) {
            last_group = g;
            break;
          }
        }
        if (last_group == groups.size())
          groups.emplace_back(std::move(target), std::vector<size_t>());
      }
      groups[last_group].second.push_back(i);
    }
    for (auto& [topic, indexes] : groups) {
      CONVERGE_RETURN_IF_ERROR(PublishGroup(topic, records, std::move(indexes), rejected));
    }
    return Status::Ok();
  }

  Status DeadLetter(std::span<const RecordView> dead_letters) override {
    if (dead_letters.empty()) return Status::Ok();
    CONVERGE_RETURN_IF_ERROR(EnsureDeadLetterTopic());
    return log_.Append(options_.dead_letter_topic, dead_letters).status();
  }

 private:
  std::string Target(std::string_view topic) const {
    auto it = options_.topic_map.find(topic);
    if (it != options_.topic_map.end()) return it->second;
    return std::string(topic);
  }

  Status PublishGroup(const std::string& topic, std::span<const SinkRecord> records,
                      std::vector<size_t> pending, std::vector<SinkRejection>* rejected) {
    // Topics converge writes itself take no outbox events: one there would pass for
    // converge's own (a forged change event or dead letter).
    std::string owner;
    if (topic == options_.dead_letter_topic) {
      owner = "the outbox relays (their dead letters)";
    } else if (options_.system_topic_owner) {
      owner = options_.system_topic_owner(topic);
    }
    if (!owner.empty()) {
      return RejectAll(pending, "topic '" + topic + "' is written only by " + owner, rejected);
    }
    bool created = false;
    // Each round either succeeds, or removes one refused record, or creates the topic.
    std::vector<RecordView> views;
    for (size_t round = 0; round <= records.size() + 1 && !pending.empty(); ++round) {
      views.clear();
      for (size_t i : pending) views.push_back(records[i].record);
      Result<std::vector<AppendResult>> r = log_.Append(topic, views);
      if (r.ok()) return Status::Ok();
      const Status& s = r.status();
      if (s.code() == StatusCode::kNotFound && options_.create_topics && !created) {
        Status c = log_.CreateTopic(topic, options_.topic_options);
        if (!c.ok() && c.code() != StatusCode::kAlreadyExists) {
          if (c.code() != StatusCode::kInvalidArgument) return c;
          return RejectAll(pending,
                           "cannot create topic '" + topic + "': " + std::string(c.message()),
                           rejected);
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
          return RejectAll(pending, "log refused the batch: " + std::string(s.message()), rejected);
        }
        rejected->push_back(
            SinkRejection{pending[*bad], "log refused the event: " + std::string(s.message())});
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
    if (dead_letter_ready_.load()) return Status::Ok();
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
  const LogSinkOptions options_;
  std::atomic<bool> dead_letter_ready_{false};
};

}  // namespace

Result<std::unique_ptr<RelaySink>> NewLogSink(Log& log, LogSinkOptions options) {
  if (options.dead_letter_topic.empty()) {
    return InvalidArgumentError("log sink: dead_letter_topic is empty");
  }
  return std::unique_ptr<RelaySink>(std::make_unique<LogSink>(log, std::move(options)));
}

}  // namespace converge
