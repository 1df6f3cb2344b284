// Test-only Logs for the consumer-group tests.
//
// MemoryLog: a small thread-safe in-memory implementation of the Log interface (no
// durability), used by
// the early tests before the real Log existed and kept for tests that want a Log whose
// contents survive a simulated crash of the group state alone.
//
// FaultyLog: wraps any Log and fails Append/AppendToPartition to chosen topics, to prove that a
// failed dead-letter append never drops a record.
#pragma once

#include <algorithm>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "converge/env.h"
#include "converge/log.h"

namespace converge::groups_testing {

class MemoryLog : public Log {
 public:
  explicit MemoryLog(Env& env) : env_(env) {}

  Status CreateTopic(const std::string& topic, const TopicOptions& options) override {
    std::lock_guard<std::mutex> lock(mu_);
    if (topic.empty() || (topic[0] == '_' && !options.internal)) {
      return InvalidArgumentError("bad topic name " + topic);
    }
    if (topics_.count(topic)) return AlreadyExistsError("topic exists: " + topic);
    Topic& t = topics_[topic];
    t.options = options;
    t.partitions.resize(options.partitions);
    return Status::Ok();
  }
  Status DeleteTopic(const std::string& topic) override {
    std::lock_guard<std::mutex> lock(mu_);
    return topics_.erase(topic) ? Status::Ok() : NotFoundError("no topic " + topic);
  }
  std::vector<std::string> ListTopics() override {
    std::lock_guard<std::mutex> lock(mu_);
    std::vector<std::string> out;
    for (auto& [name, t] : topics_) out.push_back(name);
    return out;
  }
  Result<TopicInfo> DescribeTopic(const std::string& topic) override {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = topics_.find(topic);
    if (it == topics_.end()) return NotFoundError("no topic " + topic);
    TopicInfo info;
    info.name = topic;
    info.options = it->second.options;
    for (uint32_t p = 0; p < it->second.partitions.size(); ++p) {
      const Partition& part = it->second.partitions[p];
      info.partitions.push_back(PartitionInfo{p, part.start, part.start + part.records.size(), 0});
    }
    return info;
  }
  Result<std::vector<AppendResult>> Append(const std::string& topic,
                                           std::span<const RecordView> records) override {
    return DoAppend(topic, std::nullopt, records);
  }
  Result<std::vector<AppendResult>> AppendToPartition(
      const std::string& topic, uint32_t partition, std::span<const RecordView> records) override {
    return DoAppend(topic, partition, records);
  }
  Result<ReadBatch> Read(const std::string& topic, uint32_t partition, uint64_t offset,
                         size_t max_records, size_t max_bytes) override {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = topics_.find(topic);
    if (it == topics_.end()) return NotFoundError("no topic " + topic);
    if (partition >= it->second.partitions.size()) return InvalidArgumentError("bad partition");
    const Partition& part = it->second.partitions[partition];
    auto owned = std::make_shared<std::vector<Stored>>();
    ReadBatch batch;
    uint64_t o = std::max(offset, part.start);
    const uint64_t end = part.start + part.records.size();
    size_t bytes = 0;
    while (o < end && owned->size() < max_records) {
      const Stored& s = part.records[o - part.start];
      const size_t n = s.id.size() + s.key.size() + s.value.size();
      if (!owned->empty() && bytes + n > max_bytes) break;
      bytes += n;
      owned->push_back(s);
      ++o;
    }
    for (size_t i = 0; i < owned->size(); ++i) {
      const Stored& s = (*owned)[i];
      batch.records.push_back(StoredRecord{s.offset, s.timestamp, s.id, s.key, s.value});
    }
    batch.next_offset = std::max(o, std::min(offset, end));
    if (offset < part.start) batch.next_offset = std::max(batch.next_offset, part.start);
    batch.storage = owned;
    return batch;
  }
  Result<uint64_t> OffsetForTime(const std::string& topic, uint32_t partition,
                                 int64_t timestamp_micros) override {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = topics_.find(topic);
    if (it == topics_.end()) return NotFoundError("no topic " + topic);
    const Partition& part = it->second.partitions.at(partition);
    for (const Stored& s : part.records) {
      if (s.timestamp >= timestamp_micros) return s.offset;
    }
    return part.start + part.records.size();
  }
  Result<std::unique_ptr<Watch>> WatchAppends(const std::string& topic,
                                              AppendCallback fn) override {
    std::lock_guard<std::mutex> lock(mu_);
    if (!topics_.count(topic)) return NotFoundError("no topic " + topic);
    const uint64_t id = next_watch_++;
    watches_[id] = {topic, std::move(fn)};
    return std::unique_ptr<Watch>(new WatchImpl(this, id));
  }
  Status EnforceRetention() override { return Status::Ok(); }
  Status Sync() override { return Status::Ok(); }

  // Test helper: drops records below `offset` (retention).
  void TrimTo(const std::string& topic, uint32_t partition, uint64_t offset) {
    std::lock_guard<std::mutex> lock(mu_);
    Partition& part = topics_.at(topic).partitions.at(partition);
    while (part.start < offset && !part.records.empty()) {
      part.records.erase(part.records.begin());
      ++part.start;
    }
  }

 private:
  struct Stored {
    uint64_t offset;
    int64_t timestamp;
    std::string id, key, value;
  };
  struct Partition {
    uint64_t start = 0;
    std::vector<Stored> records;
  };
  struct Topic {
    TopicOptions options;
    std::vector<Partition> partitions;
    std::map<std::string, AppendResult> ids;
    uint32_t round_robin = 0;
  };
  class WatchImpl : public Watch {
   public:
    WatchImpl(MemoryLog* log, uint64_t id) : log_(log), id_(id) {}
    ~WatchImpl() override {
      std::lock_guard<std::mutex> lock(log_->mu_);
      log_->watches_.erase(id_);
    }

   private:
    MemoryLog* log_;
    uint64_t id_;
  };

  Result<std::vector<AppendResult>> DoAppend(const std::string& topic,
                                             std::optional<uint32_t> partition,
                                             std::span<const RecordView> records) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = topics_.find(topic);
    if (it == topics_.end()) return NotFoundError("no topic " + topic);
    Topic& t = it->second;
    if (partition && *partition >= t.partitions.size()) return InvalidArgumentError("partition");
    for (size_t i = 0; i < records.size(); ++i) {
      const RecordView& r = records[i];
      if (r.id.size() + r.key.size() + r.value.size() > t.options.max_record_bytes) {
        return InvalidArgumentError("record " + std::to_string(i) + " too large");
      }
    }
    std::vector<AppendResult> out;
    for (const RecordView& r : records) {
      if (!r.id.empty()) {
        auto dup = t.ids.find(std::string(r.id));
        if (dup != t.ids.end()) {
          AppendResult d = dup->second;
          d.duplicate = true;
          out.push_back(d);
          continue;
        }
      }
      uint32_t p =
          partition ? *partition
          : r.key.empty()
              ? t.round_robin++ % static_cast<uint32_t>(t.partitions.size())
              : static_cast<uint32_t>(std::hash<std::string_view>{}(r.key) % t.partitions.size());
      Partition& part = t.partitions[p];
      const uint64_t offset = part.start + part.records.size();
      const int64_t ts =
          r.timestamp_micros != 0 ? r.timestamp_micros : env_.clock().NowWallMicros();
      part.records.push_back(
          Stored{offset, ts, std::string(r.id), std::string(r.key), std::string(r.value)});
      AppendResult res{p, offset, false};
      if (!r.id.empty()) t.ids[std::string(r.id)] = res;
      out.push_back(res);
    }
    for (auto& [id, w] : watches_) {
      if (w.first != topic) continue;
      for (const AppendResult& r : out) {
        const Partition& part = t.partitions[r.partition];
        w.second(r.partition, part.start + part.records.size());
      }
    }
    return out;
  }

  Env& env_;
  std::mutex mu_;  // one lock for everything; watchers run under it (they must not call back)
  std::map<std::string, Topic> topics_;
  std::map<uint64_t, std::pair<std::string, AppendCallback>> watches_;
  uint64_t next_watch_ = 1;
};

// Forwards to `inner`, failing appends to topics in `fail_topics` with Unavailable.
class FaultyLog : public Log {
 public:
  explicit FaultyLog(Log& inner) : inner_(inner) {}
  void FailAppends(const std::string& topic, bool fail) {
    std::lock_guard<std::mutex> lock(mu_);
    if (fail) {
      fail_.insert(topic);
    } else {
      fail_.erase(topic);
    }
  }
  uint64_t failed_appends() const { return failed_; }

  Status CreateTopic(const std::string& t, const TopicOptions& o) override {
    return inner_.CreateTopic(t, o);
  }
  Status DeleteTopic(const std::string& t) override { return inner_.DeleteTopic(t); }
  std::vector<std::string> ListTopics() override { return inner_.ListTopics(); }
  Result<TopicInfo> DescribeTopic(const std::string& t) override { return inner_.DescribeTopic(t); }
  Result<std::vector<AppendResult>> Append(const std::string& t,
                                           std::span<const RecordView> r) override {
    if (Failing(t)) return UnavailableError("injected append failure on " + t);
    return inner_.Append(t, r);
  }
  Result<std::vector<AppendResult>> AppendToPartition(const std::string& t, uint32_t p,
                                                      std::span<const RecordView> r) override {
    if (Failing(t)) return UnavailableError("injected append failure on " + t);
    return inner_.AppendToPartition(t, p, r);
  }
  Result<ReadBatch> Read(const std::string& t, uint32_t p, uint64_t o, size_t n,
                         size_t b) override {
    return inner_.Read(t, p, o, n, b);
  }
  Result<uint64_t> OffsetForTime(const std::string& t, uint32_t p, int64_t ts) override {
    return inner_.OffsetForTime(t, p, ts);
  }
  Result<std::unique_ptr<Watch>> WatchAppends(const std::string& t, AppendCallback fn) override {
    return inner_.WatchAppends(t, std::move(fn));
  }
  Status EnforceRetention() override { return inner_.EnforceRetention(); }
  Status Sync() override { return inner_.Sync(); }

 private:
  bool Failing(const std::string& t) {
    std::lock_guard<std::mutex> lock(mu_);
    if (!fail_.count(t)) return false;
    ++failed_;
    return true;
  }
  Log& inner_;
  std::mutex mu_;
  std::set<std::string> fail_;
  uint64_t failed_ = 0;
};

}  // namespace converge::groups_testing
