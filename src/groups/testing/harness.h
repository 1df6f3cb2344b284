// Test harness for consumer groups: a SimEnv, the real Log on its simulated filesystem, a
// FaultyLog wrapper in front of it, and ConsumerGroups on top; with helpers to produce and to
// crash or restart the whole machine.
#pragma once

#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "converge/consumer_group.h"
#include "converge/log.h"
#include "converge/sim_env.h"
#include "groups/testing/faulty_log.h"

namespace converge::groups_testing {

constexpr int64_t kMsNs = 1'000'000;

inline ConsumerGroupsOptions DefaultGroupsOptions() {
  ConsumerGroupsOptions o;
  o.dir = "/data/groups";
  o.commit_mode = CommitMode::kSync;
  o.tick_interval_ms = 100;
  return o;
}

class Harness {
 public:
  explicit Harness(uint64_t seed) : env(seed) {}
  ~Harness() {
    groups.reset();
    faulty.reset();
    log.reset();
  }

  // The real Log, on the simulated filesystem (reopened, i.e. recovered, after a crash).
  Status OpenLog() {
    if (log == nullptr) {
      LogOptions o;
      o.dir = "/data/log";
      auto opened = Log::Open(env, o);
      if (!opened.ok()) return opened.status();
      log = std::move(opened).value();
    }
    faulty = std::make_unique<FaultyLog>(*log);
    return Status::Ok();
  }
  Status OpenGroups(const ConsumerGroupsOptions& options = DefaultGroupsOptions()) {
    groups.reset();
    if (faulty == nullptr) CONVERGE_RETURN_IF_ERROR(OpenLog());
    auto g = ConsumerGroups::Open(env, *faulty, options);
    if (!g.ok()) return g.status();
    groups = std::move(g).value();
    return Status::Ok();
  }
  Status Open(const ConsumerGroupsOptions& options = DefaultGroupsOptions()) {
    CONVERGE_RETURN_IF_ERROR(OpenLog());
    return OpenGroups(options);
  }

  // A machine crash: nothing more reaches the disk (not even the destructors' flushes), then
  // the filesystem reverts to what was durable. Reopen with Open().
  void Crash() {
    env.sim_fs().CrashAfterOps(1);
    groups.reset();
    faulty.reset();
    log.reset();
    env.sim_fs().Crash();
  }
  // A clean restart: destructors flush.
  void Restart() {
    groups.reset();
    faulty.reset();
    log.reset();
  }

  Status CreateTopic(const std::string& topic, uint32_t partitions) {
    TopicOptions o;
    o.partitions = partitions;
    return log->CreateTopic(topic, o);
  }
  AppendResult Produce(const std::string& topic, const std::string& key, const std::string& value) {
    RecordView r{"", key, value, 0};
    auto res = log->Append(topic, std::span<const RecordView>(&r, 1));
    EXPECT_TRUE(res.ok()) << res.status().ToString();
    return res.ok() ? (*res)[0] : AppendResult{};
  }
  AppendResult ProduceTo(const std::string& topic, uint32_t partition, const std::string& key,
                         const std::string& value) {
    RecordView r{"", key, value, 0};
    auto res = log->AppendToPartition(topic, partition, std::span<const RecordView>(&r, 1));
    EXPECT_TRUE(res.ok()) << res.status().ToString();
    return res.ok() ? (*res)[0] : AppendResult{};
  }

  sim::SimEnv env;
  std::unique_ptr<Log> log;
  std::unique_ptr<FaultyLog> faulty;
  std::unique_ptr<ConsumerGroups> groups;
};

}  // namespace converge::groups_testing
