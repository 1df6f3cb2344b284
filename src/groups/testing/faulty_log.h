// FaultyLog (test-only): wraps any Log and fails Append/AppendToPartition to chosen topics, to
// prove that a failed dead-letter append never drops a record.
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
