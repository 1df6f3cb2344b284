// A test-only in-memory Log for the store's tests: topics of partitions held in vectors,
// idempotent publish by id (remembered forever), appends that can be made to fail, and a copy
// of every record for assertions. Not durable: it models a log that survives the store's
// crashes. Thread-safe (one mutex).
#pragma once

#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "converge/log.h"

namespace converge::store_testing {

class MemoryLog : public Log {
 public:
  struct Record {
    std::string id, key, value;
    int64_t timestamp_micros = 0;
  };

  Status CreateTopic(const std::string& topic, const TopicOptions& options) override {
    std::lock_guard<std::mutex> g(mu_);
    if (topic.empty()) return InvalidArgumentError("empty topic");
    if (topics_.count(topic)) return AlreadyExistsError("topic exists: " + topic);
    Topic& t = topics_[topic];
    t.options = options;
    t.partitions.resize(options.partitions);
    return Status::Ok();
  }
  Status DeleteTopic(const std::string& topic) override {
    std::lock_guard<std::mutex> g(mu_);
    return topics_.erase(topic) ? Status::Ok() : NotFoundError("no topic " + topic);
  }
  std::vector<std::string> ListTopics() override {
    std::lock_guard<std::mutex> g(mu_);
    std::vector<std::string> out;
    for (const auto& [name, t] : topics_) out.push_back(name);
    return out;
  }
  Result<TopicInfo> DescribeTopic(const std::string& topic) override {
    std::lock_guard<std::mutex> g(mu_);
    auto it = topics_.find(topic);
    if (it == topics_.end()) return NotFoundError("no topic " + topic);
    TopicInfo info;
    info.name = topic;
    info.options = it->second.options;
    for (uint32_t p = 0; p < it->second.partitions.size(); ++p) {
      PartitionInfo pi;
      pi.partition = p;
      pi.start_offset = it->second.start_offset;
      pi.end_offset = it->second.partitions[p].size();
      info.partitions.push_back(pi);
    }
    return info;
  }
  Result<std::vector<AppendResult>> Append(const std::string& topic,
                                           std::span<const RecordView> records) override {
    return AppendToPartition(topic, 0, records);
  }
  Result<std::vector<AppendResult>> AppendToPartition(
      const std::string& topic, uint32_t partition, std::span<const RecordView> records) override {
    std::lock_guard<std::mutex> g(mu_);
    if (fail_appends_) return UnavailableError("injected append failure");
    auto it = topics_.find(topic);
    if (it == topics_.end()) return NotFoundError("no topic " + topic);
    Topic& t = it->second;
    if (partition >= t.partitions.size()) return InvalidArgumentError("bad partition");
    for (size_t i = 0; i < records.size(); ++i) {
      const RecordView& r = records[i];
      if (r.id.size() + r.key.size() + r.value.size() > t.options.max_record_bytes) {
        return InvalidArgumentError("record " + std::to_string(i) + " too large");
      }
    }
    std::vector<AppendResult> out;
    for (const RecordView& r : records) {
      AppendResult res;
      res.partition = partition;
      if (!r.id.empty()) {
        auto d = t.ids.find(std::string(r.id));
        if (d != t.ids.end()) {
          res.offset = d->second;
          res.duplicate = true;
          ++duplicates_;
          out.push_back(res);
          continue;
        }
      }
      auto& part = t.partitions[partition];
      res.offset = part.size();
      part.push_back(
          Record{std::string(r.id), std::string(r.key), std::string(r.value), r.timestamp_micros});
      if (!r.id.empty()) t.ids.emplace(std::string(r.id), res.offset);
      out.push_back(res);
    }
    return out;
  }
  Result<ReadBatch> Read(const std::string& topic, uint32_t partition, uint64_t offset,
                         size_t max_records, size_t max_bytes) override {
    std::lock_guard<std::mutex> g(mu_);
    auto it = topics_.find(topic);
    if (it == topics_.end()) return NotFoundError("no topic " + topic);
    const auto& part = it->second.partitions.at(partition);
    auto owned = std::make_shared<std::vector<Record>>();
    ReadBatch batch;
    uint64_t o = std::max(offset, it->second.start_offset);
    size_t bytes = 0;
    for (; o < part.size() && owned->size() < max_records; ++o) {
      if (!owned->empty() && bytes >= max_bytes) break;
      owned->push_back(part[o]);
      bytes += part[o].value.size();
    }
    batch.next_offset = o;
    const uint64_t first = o - owned->size();
    for (size_t i = 0; i < owned->size(); ++i) {
      const Record& r = (*owned)[i];
      batch.records.push_back(StoredRecord{first + i, r.timestamp_micros, r.id, r.key, r.value});
    }
    batch.storage = owned;
    return batch;
  }
  Result<uint64_t> OffsetForTime(const std::string&, uint32_t, int64_t) override {
    return InternalError("not implemented");
  }
  Result<std::unique_ptr<Watch>> WatchAppends(const std::string&, AppendCallback) override {
    return InternalError("not implemented");
  }
  Status EnforceRetention() override { return Status::Ok(); }
  Status Sync() override { return Status::Ok(); }

  // Test controls.
  void SetFailAppends(bool fail) {
    std::lock_guard<std::mutex> g(mu_);
    fail_appends_ = fail;
  }
  std::vector<Record> Records(const std::string& topic, uint32_t partition = 0) {
    std::lock_guard<std::mutex> g(mu_);
    return topics_.at(topic).partitions.at(partition);
  }
  // Drops every record (as retention would), keeping offsets and remembered ids.
  void TrimAll(const std::string& topic) {
    std::lock_guard<std::mutex> g(mu_);
    Topic& t = topics_.at(topic);
    t.start_offset = t.partitions.at(0).size();
  }
  uint64_t duplicates() {
    std::lock_guard<std::mutex> g(mu_);
    return duplicates_;
  }

 private:
  struct Topic {
    TopicOptions options;
    std::vector<std::vector<Record>> partitions;
    std::map<std::string, uint64_t> ids;
    uint64_t start_offset = 0;
  };
  std::mutex mu_;
  std::map<std::string, Topic> topics_;
  bool fail_appends_ = false;
  uint64_t duplicates_ = 0;
};

}  // namespace converge::store_testing
