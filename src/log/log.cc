// Log::Open and LogImpl: the directory of topics, its lock, and dispatch to Topic.
#include "converge/log.h"

#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "log/hash.h"
#include "log/topic.h"
#include "log/topic_meta.h"

namespace converge {

std::string_view DurabilityName(Durability d) {
  switch (d) {
    case Durability::kFsync:
      return "fsync";
    case Durability::kInterval:
      return "interval";
    case Durability::kNone:
      return "none";
  }
  return "unknown";
}

Result<Durability> ParseDurability(std::string_view name) {
  if (name == "fsync") return Durability::kFsync;
  if (name == "interval") return Durability::kInterval;
  if (name == "none") return Durability::kNone;
  return InvalidArgumentError("durability must be fsync, interval or none, not '" +
                              std::string(name) + "'");
}

uint32_t Log::PartitionForKey(std::string_view key, uint32_t partitions) {
  if (partitions <= 1) return 0;
  return static_cast<uint32_t>(internal::Fnv1a64(key) % partitions);
}

std::optional<uint64_t> DataLossResumeOffset(const Status& status) {
  if (status.code() != StatusCode::kDataLoss) return std::nullopt;
  constexpr std::string_view kMarker = "resume at offset ";
  const std::string_view msg = status.message();
  const size_t at = msg.rfind(kMarker);
  if (at == std::string_view::npos) return std::nullopt;
  uint64_t v = 0;
  size_t i = at + kMarker.size();
  if (i >= msg.size()) return std::nullopt;
  for (; i < msg.size() && msg[i] >= '0' && msg[i] <= '9'; ++i) {
    const uint64_t digit = static_cast<uint64_t>(msg[i] - '0');
    if (v > (UINT64_MAX - digit) / 10) return std::nullopt;
    v = v * 10 + digit;
  }
  return v;
}

namespace {

using internal::Topic;

class LogImpl final : public Log {
 public:
  LogImpl(Env& env, LogOptions options, std::unique_ptr<FileLock> lock)
      : env_(env),
        options_(std::move(options)),
        topics_dir_(options_.dir + "/topics"),
        lock_(std::move(lock)),
        budget_(std::make_shared<internal::WriteBudget>(env, options_.write_buffer_max_bytes,
                                                        options_.write_buffer_wait_ms)) {}

  ~LogImpl() override {
    {
      // No retention run after this point (one in progress is waited for).
      std::lock_guard<std::mutex> timer_lock(timer_->mu);
      timer_->log = nullptr;
      if (timer_->armed) env_.executor().Cancel(timer_->id);
    }
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& [name, topic] : topics_) topic->Close().IgnoreError();  // syncs what it can
  }

  Status Init() {
    FileSystem& fs = env_.fs();
    CONVERGE_ASSIGN_OR_RETURN(std::vector<std::string> names, fs.ListDir(topics_dir_));
    bool removed = false;
    for (const std::string& name : names) {
      const std::string dir = TopicDir(name);
      const std::string meta_path = dir + "/topic.json";
      if (!fs.FileExists(meta_path)) {
        // Only what an unfinished CreateTopic (empty directories and segments) or DeleteTopic
        // (its marker) leaves is removed. Anything else holds records whose options are
        // unknown: it is kept as it is and the topic quarantined (listed, every call DATA_LOSS
        // until it is deleted or its topic.json restored) rather than deleted on a guess.
        CONVERGE_ASSIGN_OR_RETURN(uint64_t bytes, internal::SegmentBytes(fs, dir));
        if (bytes == 0 || fs.FileExists(dir + "/" + internal::kDeletingMarker)) {
          Report("removed " + dir + ", the rest of an unfinished " +
                 (bytes == 0 ? "topic creation" : "topic deletion"));
          CONVERGE_RETURN_IF_ERROR(internal::RemoveTree(fs, dir));
          removed = true;
          continue;
        }
        broken_[name] = DataLossError(
            "topic '" + name + "' is quarantined: its directory " + dir + " holds " +
            std::to_string(bytes) +
            " bytes of records but no topic.json; restore topic.json (then restart) or delete "
            "the topic");
        Report(broken_[name].ToString());
        continue;
      }
      Result<std::string> json = fs.ReadFileToString(meta_path);
      if (!json.ok()) return json.status();
      std::string meta_name;
      TopicOptions topic_options;
      Status decoded = internal::DecodeTopicMeta(*json, &meta_name, &topic_options);
      if (decoded.ok() && meta_name != name) {
        decoded = DataLossError("topic.json names topic '" + meta_name + "'");
      }
      if (decoded.ok()) decoded = internal::ValidateTopicName(name, topic_options.internal);
      if (!decoded.ok()) {
        broken_[name] = DataLossError(
            "topic '" + name + "' has unreadable metadata: " + std::string(decoded.message()));
        Report(broken_[name].ToString());
        continue;
      }
      CONVERGE_ASSIGN_OR_RETURN(std::shared_ptr<Topic> topic,
                                Topic::Recover(env_, dir, name, topic_options, budget_,
                                               options_.report_recovery));
      topic->set_background(options_.background);
      topics_[name] = std::move(topic);
    }
    if (removed) CONVERGE_RETURN_IF_ERROR(fs.SyncDir(topics_dir_));
    timer_->log = this;
    MaybeArmRetentionTimer();
    return Status::Ok();
  }

  Status CreateTopic(const std::string& topic, const TopicOptions& options) override {
    CONVERGE_RETURN_IF_ERROR(internal::ValidateTopicName(topic, options.internal));
    CONVERGE_RETURN_IF_ERROR(internal::ValidateTopicOptions(options));
    std::lock_guard<std::mutex> admin(admin_mu_);
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (topics_.count(topic) > 0 || broken_.count(topic) > 0) {
        return AlreadyExistsError("topic '" + topic + "' already exists");
      }
    }
    FileSystem& fs = env_.fs();
    const std::string dir = TopicDir(topic);
    CONVERGE_RETURN_IF_ERROR(internal::RemoveTree(fs, dir));  // debris of a failed create
    Result<std::shared_ptr<Topic>> created = Topic::Create(env_, dir, topic, options, budget_);
    if (!created.ok()) {
      internal::RemoveTree(fs, dir).IgnoreError();
      return created.status();
    }
    (*created)->set_background(options_.background);
    {
      std::lock_guard<std::mutex> lock(mu_);
      topics_[topic] = std::move(created).value();
    }
    MaybeArmRetentionTimer();
    return Status::Ok();
  }

  Status DeleteTopic(const std::string& topic) override {
    std::lock_guard<std::mutex> admin(admin_mu_);
    std::shared_ptr<Topic> doomed;
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = topics_.find(topic);
      if (it == topics_.end()) {
        if (broken_.erase(topic) == 0) return NotFoundError("topic '" + topic + "' does not exist");
      } else {
        doomed = std::move(it->second);
        topics_.erase(it);
      }
    }
    FileSystem& fs = env_.fs();
    if (doomed == nullptr) return internal::DeleteTopicDir(fs, TopicDir(topic));
    doomed->Close(/*deleting=*/true).IgnoreError();  // the files go away anyway
    return doomed->DeleteFiles();
  }

  std::vector<std::string> ListTopics() override {
    std::lock_guard<std::mutex> lock(mu_);
    std::vector<std::string> out;
    for (const auto& [name, topic] : topics_) out.push_back(name);
    for (const auto& [name, status] : broken_) out.push_back(name);
    std::sort(out.begin(), out.end());
    return out;
  }

  Result<TopicInfo> DescribeTopic(const std::string& topic) override {
    CONVERGE_ASSIGN_OR_RETURN(std::shared_ptr<Topic> t, Find(topic));
    return t->Describe();
  }

  Result<std::vector<AppendResult>> Append(const std::string& topic,
                                           std::span<const RecordView> records) override {
    CONVERGE_ASSIGN_OR_RETURN(std::shared_ptr<Topic> t, Find(topic));
    return t->Append(records, -1);
  }

  void AppendAsync(const std::string& topic, std::span<const RecordView> records,
                   AppendDone done) override {
    Result<std::shared_ptr<Topic>> t = Find(topic);
    if (!t.ok()) {
      done(t.status());
      return;
    }
    (*t)->AppendAsync(records, -1, std::move(done));
  }

  Result<std::vector<AppendResult>> AppendToPartition(
      const std::string& topic, uint32_t partition, std::span<const RecordView> records) override {
    CONVERGE_ASSIGN_OR_RETURN(std::shared_ptr<Topic> t, Find(topic));
    return t->Append(records, static_cast<int64_t>(partition));
  }

  Result<ReadBatch> Read(const std::string& topic, uint32_t partition, uint64_t offset,
                         size_t max_records, size_t max_bytes) override {
    CONVERGE_ASSIGN_OR_RETURN(std::shared_ptr<Topic> t, Find(topic));
    return t->Read(partition, offset, max_records, max_bytes);
  }

  Result<uint64_t> OffsetForTime(const std::string& topic, uint32_t partition,
                                 int64_t timestamp_micros) override {
    CONVERGE_ASSIGN_OR_RETURN(std::shared_ptr<Topic> t, Find(topic));
    return t->OffsetForTime(partition, timestamp_micros);
  }

  Result<std::unique_ptr<Watch>> WatchAppends(const std::string& topic,
                                              AppendCallback fn) override {
    if (!fn) return InvalidArgumentError("WatchAppends needs a callback");
    CONVERGE_ASSIGN_OR_RETURN(std::shared_ptr<Topic> t, Find(topic));
    return t->Watch(std::move(fn));
  }

  Status EnforceRetention() override {
    Status first;
    for (const auto& t : Snapshot()) {
      Status s = t->EnforceRetention();
      if (first.ok() && !s.ok()) first = s;
    }
    return first;
  }

  Status WriteHealth() override {
    Status failure;
    for (const auto& t : Snapshot()) {
      bool sticky = false;
      Status s = t->WriteHealth(&sticky);
      if (sticky) {
        return FailedPreconditionError("topic '" + t->name() +
                                       "' refuses appends until the log is reopened: " +
                                       s.ToString());
      }
      if (failure.ok() && !s.ok()) failure = s;
    }
    if (failure.ok()) return failure;
    if (Status probe = ProbeWrite(); !probe.ok()) {
      return failure.WithMessage("appends fail: " + std::string(failure.message()) +
                                 "; a test write fails too: " + probe.ToString());
    }
    for (const auto& t : Snapshot()) t->ClearWriteError();
    return Status::Ok();
  }

  Status Sync() override {
    Status first;
    for (const auto& t : Snapshot()) {
      Status s = t->Sync();
      if (first.ok() && !s.ok()) first = s;
    }
    return first;
  }

 private:
  // The periodic age-retention run. Shared with the scheduled callback, which does nothing
  // once `log` is null (set by the destructor under `mu`).
  struct RetentionTimer {
    std::mutex mu;
    LogImpl* log = nullptr;
    bool armed = false;
    TimerId id = 0;
  };

  bool AnyTopicWithAgeRetention() {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& [name, topic] : topics_) {
      if (topic->options().retention_max_age_ms > 0) return true;
    }
    return false;
  }

  void MaybeArmRetentionTimer() {
    if (options_.retention_check_interval_ms <= 0 || !AnyTopicWithAgeRetention()) return;
    std::lock_guard<std::mutex> lock(timer_->mu);
    if (!timer_->armed && timer_->log != nullptr) ArmRetentionTimerLocked();
  }

  void ArmRetentionTimerLocked() {
    timer_->armed = true;
    std::weak_ptr<RetentionTimer> weak = timer_;
    timer_->id = env_.executor().Schedule(options_.retention_check_interval_ms * 1'000'000, [weak] {
      std::shared_ptr<RetentionTimer> t = weak.lock();
      if (!t) return;
      std::lock_guard<std::mutex> lock(t->mu);
      t->armed = false;
      if (t->log == nullptr) return;
      // A failure (a file that could not be deleted) is retried at the next run.
      t->log->EnforceRetention().IgnoreError();
      if (t->log->AnyTopicWithAgeRetention()) t->log->ArmRetentionTimerLocked();
    });
  }

  std::string TopicDir(const std::string& name) const { return topics_dir_ + "/" + name; }

  void Report(const std::string& message) const {
    if (options_.report_recovery) options_.report_recovery(message);
  }

  // Writes, syncs and deletes a small file: whether the disk takes writes again.
  Status ProbeWrite() {
    FileSystem& fs = env_.fs();
    const std::string path = options_.dir + "/write-probe";
    Status s;
    {
      Result<std::unique_ptr<WritableFile>> f = fs.NewWritableFile(path, OpenMode::kTruncate);
      if (!f.ok()) return f.status();
      const std::string block(64 << 10, '\0');
      s = (*f)->Append(block);
      if (s.ok()) s = (*f)->Sync();
      Status c = (*f)->Close();
      if (s.ok()) s = c;
    }
    Status d = fs.DeleteFile(path);
    if (s.ok() && !d.ok()) s = d;
    return s;
  }

  Result<std::shared_ptr<Topic>> Find(const std::string& topic) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = topics_.find(topic);
    if (it != topics_.end()) return it->second;
    auto broken = broken_.find(topic);
    if (broken != broken_.end()) return broken->second;
    return NotFoundError("topic '" + topic + "' does not exist");
  }

  std::vector<std::shared_ptr<Topic>> Snapshot() {
    std::lock_guard<std::mutex> lock(mu_);
    std::vector<std::shared_ptr<Topic>> out;
    for (const auto& [name, topic] : topics_) out.push_back(topic);
    return out;
  }

  Env& env_;
  const LogOptions options_;
  const std::string topics_dir_;
  std::unique_ptr<FileLock> lock_;
  std::shared_ptr<internal::WriteBudget> budget_;
  std::mutex admin_mu_;  // serializes CreateTopic and DeleteTopic
  std::shared_ptr<RetentionTimer> timer_ = std::make_shared<RetentionTimer>();
  std::mutex mu_;        // guards the maps
  std::map<std::string, std::shared_ptr<Topic>> topics_;
  std::map<std::string, Status> broken_;
};

}  // namespace

Result<std::unique_ptr<Log>> Log::Open(Env& env, const LogOptions& options) {
  if (options.dir.empty()) return InvalidArgumentError("LogOptions.dir is empty");
  if (options.write_buffer_max_bytes == 0) {
    return InvalidArgumentError("LogOptions.write_buffer_max_bytes must be > 0");
  }
  if (options.write_buffer_wait_ms < 0) {
    return InvalidArgumentError("LogOptions.write_buffer_wait_ms must be >= 0");
  }
  FileSystem& fs = env.fs();
  CONVERGE_RETURN_IF_ERROR(fs.CreateDirs(options.dir + "/topics"));
  CONVERGE_ASSIGN_OR_RETURN(std::unique_ptr<FileLock> lock, fs.LockFile(options.dir + "/LOCK"));
  auto log = std::make_unique<LogImpl>(env, options, std::move(lock));
  CONVERGE_RETURN_IF_ERROR(log->Init());
  return std::unique_ptr<Log>(std::move(log));
}

}  // namespace converge
