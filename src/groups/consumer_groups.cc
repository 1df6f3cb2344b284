// ConsumerGroups on the Log: lookup, locking, Log I/O, dead-letter appends and the commit
// journal. The per-partition delivery logic is in partition_window.cc, membership in group.cc.
//
// Locks, in the only order they are taken:
//   journal_mu_ -> mu_ (group map) -> Group::mu -> dirty_mu_ ; Group::watch_mu is a leaf taken
//   with no other lock held except by the Log's watch callback.
// No lock of ours is held while calling a watcher; Group::mu is held during the Log reads and
// dead-letter appends of that group (they block only that group).
#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <map>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "converge/consumer_group.h"
#include "groups/codec.h"
#include "groups/group.h"
#include "groups/partition_window.h"
#include "groups/state_store.h"

namespace converge {

using internal::groups::AddRange;
using internal::groups::DeadLetterFields;
using internal::groups::EntryState;
using internal::groups::ExpiredLease;
using internal::groups::Group;
using internal::groups::GroupRecord;
using internal::groups::HeaderRecord;
using internal::groups::kNoMember;
using internal::groups::Member;
using internal::groups::PartitionRecord;
using internal::groups::PartitionState;
using internal::groups::PartitionWindow;
using internal::groups::Ranges;
using internal::groups::RecordType;
using internal::groups::StateStore;
using internal::groups::Wakes;
using internal::groups::WindowEntry;

std::string DefaultDeadLetterTopic(std::string_view topic, std::string_view group) {
  // The Log's limit for every topic name, internal ones included.
  constexpr size_t kMaxName = 200;
  std::string name = "_dlq.";
  name.append(topic);
  name.push_back('.');
  name.append(group);
  if (name.size() <= kMaxName) return name;
  // Too long: a name that is still unique per pair (the hash) and still readable (a prefix of
  // the topic, the group). "_dlq-" keeps it apart from every unshortened name.
  uint64_t hash = 14695981039346656037ull;  // FNV-1a 64
  auto mix = [&hash](char c) {
    hash ^= static_cast<unsigned char>(c);
    hash *= 1099511628211ull;
  };
  for (char c : topic) mix(c);
  mix('\0');
  for (char c : group) mix(c);
  static constexpr char kHex[] = "0123456789abcdef";
  name = "_dlq-";
  for (int shift = 60; shift >= 0; shift -= 4) name.push_back(kHex[(hash >> shift) & 0xF]);
  name.push_back('.');
  const size_t fixed = name.size() + 1 + group.size();
  if (fixed < kMaxName) name.append(topic.substr(0, kMaxName - fixed));
  name.push_back('.');
  name.append(group);
  name.resize(std::min(name.size(), kMaxName));
  return name;
}

namespace {

constexpr int64_t kNanosPerMilli = 1'000'000;
constexpr int64_t kMaxDurationMs = 24ll * 3600 * 1000;
constexpr size_t kMaxTopicName = 200;
constexpr size_t kDeadLetterAppendChunk = 256;
// Per-record bytes the Log stores besides id, key and value (its header), roughly.
constexpr uint64_t kRecordOverheadBytes = 48;

bool ValidName(std::string_view name, size_t max_len, std::string_view extra) {
  if (name.empty() || name.size() > max_len) return false;
  for (char c : name) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    extra.find(c) != std::string_view::npos;
    if (!ok) return false;
  }
  return true;
}

bool ValidGroupName(std::string_view name) { return ValidName(name, 64, "_-"); }
bool ValidMemberId(std::string_view name) { return ValidName(name, 128, "._:@-"); }

// Cuts `s` to at most `max_bytes` without splitting a UTF-8 sequence.
std::string_view CutUtf8(std::string_view s, size_t max_bytes) {
  if (s.size() <= max_bytes) return s;
  size_t n = max_bytes;
  while (n > 0 && (static_cast<unsigned char>(s[n]) & 0xC0) == 0x80) --n;
  return s.substr(0, n);
}

}  // namespace

Status ValidateGroupOptions(const GroupOptions& o) {
  auto bad = [](std::string_view what) {
    return InvalidArgumentError(std::string("GroupOptions.") + std::string(what));
  };
  if (o.lease_ms < 1 || o.lease_ms > kMaxDurationMs) return bad("lease_ms must be in 1..86400000");
  if (o.max_deliveries < 1 || o.max_deliveries > 10'000) {
    return bad("max_deliveries must be in 1..10000");
  }
  if (o.session_timeout_ms < 1 || o.session_timeout_ms > kMaxDurationMs) {
    return bad("session_timeout_ms must be in 1..86400000");
  }
  if (o.max_in_flight_per_partition < 1 || o.max_in_flight_per_partition > 100'000) {
    return bad("max_in_flight_per_partition must be in 1..100000");
  }
  if (o.max_in_flight_per_member < 1 || o.max_in_flight_per_member > 1'000'000) {
    return bad("max_in_flight_per_member must be in 1..1000000");
  }
  if (o.max_pending_per_partition < o.max_in_flight_per_partition ||
      o.max_pending_per_partition > 1'000'000) {
    return bad("max_pending_per_partition must be in max_in_flight_per_partition..1000000");
  }
  if (o.max_members < 1 || o.max_members > 100'000) return bad("max_members must be in 1..100000");
  if (o.max_nack_delay_ms < 0 || o.max_nack_delay_ms > 30 * kMaxDurationMs) {
    return bad("max_nack_delay_ms must be in 0..2592000000");
  }
  if (o.max_reason_bytes < 16 || o.max_reason_bytes > 65'536) {
    return bad("max_reason_bytes must be in 16..65536");
  }
  if (o.dead_letter_retry_ms < 1 || o.dead_letter_retry_ms > kMaxDurationMs) {
    return bad("dead_letter_retry_ms must be in 1..86400000");
  }
  if (o.start > StartPosition::kTime) return bad("start is not a StartPosition");
  return Status::Ok();
}

Status ValidateConsumerGroupsOptions(const ConsumerGroupsOptions& o) {
  auto bad = [](std::string_view what) {
    return InvalidArgumentError(std::string("ConsumerGroupsOptions.") + std::string(what));
  };
  if (o.dir.empty()) return bad("dir must be set");
  if (o.commit_mode != CommitMode::kSync && o.commit_mode != CommitMode::kPeriodic) {
    return bad("commit_mode is not a CommitMode");
  }
  if (o.commit_interval_ms < 1 || o.commit_interval_ms > 60'000) {
    return bad("commit_interval_ms must be in 1..60000");
  }
  if (o.tick_interval_ms < 0 || o.tick_interval_ms > 60'000) {
    return bad("tick_interval_ms must be in 0..60000");
  }
  if (o.journal_max_bytes < 4096) return bad("journal_max_bytes must be >= 4096");
  if (o.max_groups < 1) return bad("max_groups must be >= 1");
  if (o.fetch_max_records < 1 || o.fetch_max_bytes < 1) return bad("fetch bounds must be >= 1");
  if (o.read_max_records < 1 || o.read_max_bytes < 1) return bad("read bounds must be >= 1");
  if (o.ack_max_leases < 1) return bad("ack_max_leases must be >= 1");
  if (o.replay_max_records < 1 || o.list_max_records < 1) {
    return bad("replay/list bounds must be >= 1");
  }
  if (o.max_replayed_ranges < 1) return bad("max_replayed_ranges must be >= 1");
  return Status::Ok();
}

namespace {

std::string GroupKey(std::string_view topic, std::string_view group) {
  std::string key;
  key.reserve(topic.size() + group.size() + 1);
  key.append(topic);
  key.push_back('\0');
  key.append(group);
  return key;
}

// Recovered state, before it is turned into Groups.
struct RecoveredGroup {
  GroupRecord record;
  std::vector<PartitionRecord> partitions;
  Ranges replayed;
};

class TimerControl {
 public:
  std::mutex mu;
  std::function<void()> tick;  // empty once the owner is gone
  TimerId id = 0;
};

class ConsumerGroupsImpl;

class ReadyWatchImpl : public ConsumerGroups::ReadyWatch {
 public:
  ReadyWatchImpl(std::weak_ptr<Group> group, uint64_t watch_id,
                 std::unique_ptr<Log::Watch> log_watch, std::atomic<uint32_t>* total)
      : group_(std::move(group)),
        watch_id_(watch_id),
        log_watch_(std::move(log_watch)),
        total_(total) {}
  ~ReadyWatchImpl() override {
    log_watch_.reset();
    if (std::shared_ptr<Group> g = group_.lock()) {
      std::lock_guard<std::mutex> lock(g->watch_mu);
      auto mine = [&](const auto& entry) { return entry.first == watch_id_; };
      std::erase_if(g->watchers, mine);
      std::erase_if(g->member_watchers, mine);
      g->watcher_count.store(g->watchers.size() + g->member_watchers.size());
    }
    total_->fetch_sub(1);
  }

 private:
  std::weak_ptr<Group> group_;
  uint64_t watch_id_;
  std::unique_ptr<Log::Watch> log_watch_;
  std::atomic<uint32_t>* total_;
};

class ConsumerGroupsImpl final : public ConsumerGroups {
 public:
  ConsumerGroupsImpl(Env& env, Log& log, ConsumerGroupsOptions options,
                     std::unique_ptr<StateStore> store)
      : env_(env), log_(log), options_(std::move(options)), store_(std::move(store)) {}

  ~ConsumerGroupsImpl() override {
    if (timer_ != nullptr) {
      TimerId id;
      {
        std::lock_guard<std::mutex> lock(timer_->mu);
        timer_->tick = nullptr;
        id = timer_->id;
      }
      env_.executor().Cancel(id);
    }
    {
      std::unique_lock<std::mutex> lock(commits_mu_);
      commits_idle_.wait(lock, [this] { return !committing_ && !periodic_flush_queued_; });
    }
    Flush().IgnoreError();
  }

  Status Recover(std::vector<std::string_view> records);
  void StartTimer();

  Status CreateGroup(const std::string& topic, const std::string& group,
                     const GroupOptions& options) override;
  Status DeleteGroup(const std::string& topic, const std::string& group, bool force) override;
  std::vector<std::string> ListGroups(const std::string& topic) override;
  CONVERGE_CONSUMER_GROUP_OPERATIONS_OVERRIDE
  Status Flush() override { return FlushUpTo(mutation_seq_.load()); }
  Status JournalHealth() override {
    if (!flush_failed_.load()) return Status::Ok();
    Status s = FlushUpTo(mutation_seq_.load());
    if (s.ok()) return s;
    return UnavailableError("the consumer-group journal cannot write: " + s.ToString());
  }

 private:
  int64_t NowNs() { return env_.clock().NowMonotonicNanos(); }

  Result<std::shared_ptr<Group>> Lookup(const std::string& topic, const std::string& group);
  // Queues the group for the next flush; returns the mutation's sequence number. mu held.
  uint64_t MarkDirty(Group& g);
  // Marks the partition dirty if its durable state changed since (committed, done). mu held.
  uint64_t NoteChange(Group& g, PartitionState& ps, uint64_t committed_before,
                      uint32_t done_before);
  // Makes every mutation up to `seq` durable.
  Status FlushUpTo(uint64_t seq);
  Status CompactLocked();  // journal_mu_ held
  // Journal-first mutations (journal_mu_ held, no group lock): makes the journal ready to
  // take a record, compacting it from memory first if it is broken (an earlier write failed)
  // or full. Memory does not hold the caller's mutation yet, so neither does the snapshot.
  Status ReadyJournalLocked();
  // Appends and syncs the framed records of one mutation that is not yet applied in memory
  // (journal_mu_ held, after ReadyJournalLocked). The caller applies the mutation only on OK,
  // still holding journal_mu_, so no flush can write the group's state in between.
  Status AppendAheadLocked(std::string_view framed);
  // For kPeriodic: flushes when the interval has passed since the last flush.
  Status MaybePeriodicFlush(int64_t now_ns);
  // Whether MaybePeriodicFlush would write now.
  bool PeriodicFlushDue(int64_t now_ns);
  // After a commit-changing call: the durability the mode promises.
  Status CommitForCaller(uint64_t seq);
  // Calls `then` with the outcome of making every mutation up to `seq` durable, without
  // waiting: the sync runs on options_.background (one task at a time takes every commit asked
  // for meanwhile), or on this thread when no task is running and there is no background.
  void CommitThen(uint64_t seq, std::function<void(Status)> then);
  // The commit task: syncs what CommitThen queued until nothing is left.
  void RunCommits();
  // Hands `task` to options_.background, or runs it here without one.
  void InBackground(std::function<void()> task);

  // AckBatch in two steps around the commit (kSync: the acks reach memory only in the second).
  struct AckStep {
    std::shared_ptr<Group> group;
    AckBatchResult result;
    uint64_t seq = 0;
    std::vector<size_t> intents;  // indexes into the leases acked journal-first
    Wakes wakes;                  // owed by the acks applied
  };
  Result<AckStep> AckPrepare(const std::string& topic, const std::string& group,
                             const std::string& member, std::span<const LeaseRef> leases);
  Result<AckBatchResult> AckFinish(AckStep step, std::span<const LeaseRef> leases,
                                   const Status& committed);

  // Applies due deadlines of one partition, appending due dead letters. mu held.
  // Returns true if records became ready; dead-letter errors go to the partition's last_error.
  bool ProcessDue(Group& g, uint32_t p, int64_t now_ns, uint64_t* seq);
  // Appends dead letters for `entries` (all kDeadLetterPending) of partition `p`. mu held.
  // `held`: when set, entries whose append succeeded stay kDeadLetterPending (their retry
  // parked) and are added to it instead of being marked done: the caller makes their commit
  // journal-first.
  Status AppendDeadLetters(Group& g, uint32_t p, std::span<WindowEntry* const> entries,
                           int64_t now_ns, bool* ready, std::vector<WindowEntry*>* held = nullptr);
  // Reads more records of partition `p` into its window. Returns false if nothing was read.
  bool ReadMore(Group& g, uint32_t p);
  void Lease(Group& g, uint32_t p, uint32_t slot, WindowEntry* e, int64_t now_ns,
             int64_t wall_offset_us, FetchResult* out);

  Result<uint64_t> StartOffset(const std::string& topic, const PartitionInfo& part,
                               StartPosition start, uint64_t offset, int64_t time_micros);

  Env& env_;
  Log& log_;
  const ConsumerGroupsOptions options_;

  std::mutex journal_mu_;
  std::unique_ptr<StateStore> store_;  // guarded by journal_mu_
  uint64_t durable_seq_ = 0;           // guarded by journal_mu_
  std::atomic<int64_t> last_flush_ns_{0};
  std::atomic<bool> flush_failed_{false};  // the last flush failed: retry even if nothing new

  std::mutex mu_;
  std::map<std::string, std::shared_ptr<Group>> groups_;  // by GroupKey
  std::atomic<uint64_t> next_group_id_{1};

  std::mutex dirty_mu_;
  std::vector<std::shared_ptr<Group>> dirty_;
  std::atomic<uint64_t> mutation_seq_{0};

  std::atomic<uint32_t> ready_watches_{0};
  std::shared_ptr<TimerControl> timer_;

  // A ready watch of `g`, within max_ready_watches: `on_append` watches the topic's appends,
  // and `add(group, id)` registers the watcher under the group's watch lock.
  template <typename Add>
  Result<std::unique_ptr<ReadyWatch>> NewReadyWatch(const std::shared_ptr<Group>& g,
                                                    const std::string& topic,
                                                    Log::AppendCallback on_append, Add add);

  // CommitThen's queue: commits asked for while the commit task runs wait here for its next
  // sync. The destructor waits until no task is running.
  struct CommitWaiter {
    uint64_t seq;
    std::function<void(Status)> then;
  };
  std::mutex commits_mu_;
  std::condition_variable commits_idle_;
  std::vector<CommitWaiter> commits_;  // guarded by commits_mu_
  bool committing_ = false;            // guarded by commits_mu_: a commit task is running
  bool periodic_flush_queued_ = false;  // guarded by commits_mu_
};

// ---------------------------------------------------------------------------------------
// Open and recovery

Status ConsumerGroupsImpl::Recover(std::vector<std::string_view> records) {
  std::map<uint64_t, RecoveredGroup> recovered;
  uint64_t next_group_id = 1;
  for (std::string_view payload : records) {
    RecordType type;
    if (!internal::groups::DecodeType(payload, &type)) {
      return DataLossError("consumer-group state: unknown record type");
    }
    bool ok = true;
    switch (type) {
      case RecordType::kHeader: {
        HeaderRecord h;
        ok = internal::groups::DecodeHeader(payload, &h);
        next_group_id = std::max(next_group_id, h.next_group_id);
        break;
      }
      case RecordType::kGroup: {
        RecoveredGroup g;
        ok = internal::groups::DecodeGroup(payload, &g.record);
        if (ok && g.record.committed.size() > 1024) ok = false;
        if (ok) {
          next_group_id = std::max(next_group_id, g.record.group_id + 1);
          recovered[g.record.group_id] = std::move(g);
        }
        break;
      }
      case RecordType::kPartition: {
        PartitionRecord r;
        ok = internal::groups::DecodePartition(payload, &r);
        auto it = recovered.find(r.group_id);
        if (ok && it != recovered.end() && r.partition < it->second.record.committed.size()) {
          it->second.partitions.push_back(std::move(r));
        }
        break;
      }
      case RecordType::kReplayed: {
        uint64_t id = 0;
        Ranges ranges;
        ok = internal::groups::DecodeReplayed(payload, &id, &ranges);
        auto it = recovered.find(id);
        if (ok && it != recovered.end()) it->second.replayed = std::move(ranges);
        break;
      }
      case RecordType::kDelete: {
        uint64_t id = 0;
        ok = internal::groups::DecodeDelete(payload, &id);
        if (ok) recovered.erase(id);
        break;
      }
    }
    // A frame that passed its checksum but does not decode was written by a newer or broken
    // version: refuse rather than guess.
    if (!ok) return DataLossError("consumer-group state: malformed record");
  }
  next_group_id_ = next_group_id;
  for (auto& [id, rg] : recovered) {
    std::vector<uint64_t> committed = rg.record.committed;
    std::vector<Ranges> done(committed.size());
    for (PartitionRecord& pr : rg.partitions) {  // later records win
      committed[pr.partition] = pr.committed;
      done[pr.partition] = std::move(pr.done);
    }
    // The log may end below what the group consumed: its tail was damaged and cut at
    // recovery, or (interval/none durability) a machine crash lost records that had been read
    // and acked. A committed offset beyond the end would make the group skip the records
    // appended next at those offsets, and report no lag: move it back to the end, and say so.
    std::vector<uint64_t> lost(committed.size(), 0);
    Result<TopicInfo> info = log_.DescribeTopic(rg.record.topic);
    for (size_t p = 0; p < committed.size(); ++p) {
      Ranges& r = done[p];
      // A done range that starts at the committed offset is simply more committed.
      uint64_t c = committed[p];
      while (!r.empty() && r.front().first <= c) {
        c = std::max(c, r.front().second);
        r.erase(r.begin());
      }
      if (info.ok() && p < info->partitions.size()) {
        const uint64_t end = info->partitions[p].end_offset;
        if (c > end) {
          lost[p] = c - end;
          if (options_.report_damage) {
            options_.report_damage(
                "consumer group '" + rg.record.group + "' on topic '" + rg.record.topic +
                "' partition " + std::to_string(p) + ": committed offset " + std::to_string(c) +
                " is beyond the log's end " + std::to_string(end) + "; records [" +
                std::to_string(end) + ", " + std::to_string(c) +
                ") were consumed and then lost from the log; the group continues at " +
                std::to_string(end));
          }
          c = end;
        }
        // Acks above the end name records that are gone; new records will take the offsets.
        while (!r.empty() && r.back().first >= end) r.pop_back();
        if (!r.empty() && r.back().second > end) r.back().second = end;
      }
      committed[p] = c;
    }
    auto g = std::make_shared<Group>(id, rg.record.topic, rg.record.group, rg.record.options,
                                     rg.record.dead_letter_topic, committed,
                                     env_.random().Next64() >> 2);
    for (size_t p = 0; p < committed.size(); ++p) {
      g->partitions[p]->window.SetSkipRanges(std::move(done[p]));
      g->partitions[p]->lost_beyond_end = lost[p];
      if (lost[p] > 0) {
        g->partitions[p]->last_error = "records [" + std::to_string(committed[p]) + ", " +
                                       std::to_string(committed[p] + lost[p]) +
                                       ") were consumed and then lost from the log";
      }
    }
    g->replayed = std::move(rg.replayed);
    groups_[GroupKey(g->topic, g->name)] = std::move(g);
  }
  std::lock_guard<std::mutex> lock(journal_mu_);
  return CompactLocked();
}

void ArmTimer(const std::shared_ptr<TimerControl>& ctl, Executor& executor, int64_t delay_ns) {
  ctl->id = executor.Schedule(delay_ns, [ctl, &executor, delay_ns] {
    std::lock_guard<std::mutex> lock(ctl->mu);
    if (!ctl->tick) return;
    ctl->tick();
    ArmTimer(ctl, executor, delay_ns);
  });
}

void ConsumerGroupsImpl::StartTimer() {
  if (options_.tick_interval_ms == 0) return;
  timer_ = std::make_shared<TimerControl>();
  std::lock_guard<std::mutex> lock(timer_->mu);
  timer_->tick = [this] { Tick().IgnoreError(); };
  ArmTimer(timer_, env_.executor(), options_.tick_interval_ms * kNanosPerMilli);
}

}  // namespace

Result<ExtendLeasesResult> ConsumerGroups::ExtendLeases(const std::string&, const std::string&,
                                                        const std::string&,
                                                        std::span<const LeaseRef>, int64_t) {
  return FailedPreconditionError("this consumer-group backend cannot extend leases");
}

Result<std::unique_ptr<ConsumerGroups>> ConsumerGroups::Open(Env& env, Log& log,
                                                             const ConsumerGroupsOptions& options) {
  CONVERGE_RETURN_IF_ERROR(ValidateConsumerGroupsOptions(options));
  std::string bytes;
  std::vector<std::string_view> records;
  CONVERGE_ASSIGN_OR_RETURN(
      std::unique_ptr<StateStore> store,
      internal::groups::StateStore::Open(env.fs(), options.dir, &bytes, &records));
  return internal::groups::OpenConsumerGroupsOn(env, log, options, std::move(store),
                                                std::move(records));
}

namespace internal::groups {

Result<std::unique_ptr<ConsumerGroups>> OpenConsumerGroupsOn(
    Env& env, Log& log, const ConsumerGroupsOptions& options, std::unique_ptr<StateStore> store,
    std::vector<std::string_view> records) {
  CONVERGE_RETURN_IF_ERROR(ValidateConsumerGroupsOptions(options));
  if (!store->damage().empty() && options.report_damage) options.report_damage(store->damage());
  auto impl = std::make_unique<ConsumerGroupsImpl>(env, log, options, std::move(store));
  CONVERGE_RETURN_IF_ERROR(impl->Recover(std::move(records)));
  impl->StartTimer();
  return std::unique_ptr<ConsumerGroups>(std::move(impl));
}

}  // namespace internal::groups

namespace {

// ---------------------------------------------------------------------------------------
// Durability

uint64_t ConsumerGroupsImpl::MarkDirty(Group& g) {
  if (!g.listed_dirty) {
    g.listed_dirty = true;
    std::lock_guard<std::mutex> lock(dirty_mu_);
    dirty_.push_back(g.shared_from_this());
  }
  // After queuing: a flusher that reads this sequence number also sees the queued group.
  return mutation_seq_.fetch_add(1) + 1;
}

uint64_t ConsumerGroupsImpl::NoteChange(Group& g, PartitionState& ps, uint64_t committed_before,
                                        uint32_t done_before) {
  if (ps.window.committed() == committed_before &&
      ps.window.done_above_committed() == done_before) {
    return 0;
  }
  ps.dirty = true;
  return MarkDirty(g);
}

Status ConsumerGroupsImpl::CompactLocked() {
  std::vector<std::shared_ptr<Group>> all;
  {
    std::lock_guard<std::mutex> lock(dirty_mu_);
    dirty_.clear();  // the snapshot covers them
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    all.reserve(groups_.size());
    for (auto& [key, g] : groups_) all.push_back(g);
  }
  std::string data;
  for (auto& g : all) {
    std::lock_guard<std::mutex> lock(g->mu);
    g->listed_dirty = false;
    g->Serialize(/*full=*/true, &data);
  }
  return store_->Compact(data, next_group_id_.load());
}

Status ConsumerGroupsImpl::FlushUpTo(uint64_t seq) {
  std::lock_guard<std::mutex> lock(journal_mu_);
  if (durable_seq_ >= seq && !store_->broken()) return Status::Ok();
  const uint64_t target = mutation_seq_.load();
  last_flush_ns_.store(NowNs());
  Status s;
  if (store_->broken() || store_->journal_bytes() >= options_.journal_max_bytes) {
    s = CompactLocked();
  } else {
    std::vector<std::shared_ptr<Group>> dirty;
    {
      std::lock_guard<std::mutex> dl(dirty_mu_);
      dirty.swap(dirty_);
    }
    std::string data;
    for (auto& g : dirty) {
      std::lock_guard<std::mutex> gl(g->mu);
      g->listed_dirty = false;
      g->Serialize(/*full=*/false, &data);
    }
    if (!data.empty()) s = store_->Append(data);
  }
  if (s.ok()) {
    durable_seq_ = std::max(durable_seq_, target);
    flush_failed_.store(false);
  } else {
    flush_failed_.store(true);
  }
  return s;
}

Status ConsumerGroupsImpl::ReadyJournalLocked() {
  if (!store_->broken() && store_->journal_bytes() < options_.journal_max_bytes) {
    return Status::Ok();
  }
  const uint64_t target = mutation_seq_.load();
  last_flush_ns_.store(NowNs());
  Status s = CompactLocked();
  if (s.ok()) {
    durable_seq_ = std::max(durable_seq_, target);
    flush_failed_.store(false);
  } else {
    flush_failed_.store(true);
  }
  return s;
}

Status ConsumerGroupsImpl::AppendAheadLocked(std::string_view framed) {
  Status s = store_->Append(framed);
  // The store is broken now: the next flush (or journal-first write) compacts from memory,
  // which never held this mutation.
  if (!s.ok()) flush_failed_.store(true);
  return s;
}

bool ConsumerGroupsImpl::PeriodicFlushDue(int64_t now_ns) {
  if (now_ns - last_flush_ns_.load() < options_.commit_interval_ms * kNanosPerMilli) {
    return false;
  }
  if (flush_failed_.load()) return true;
  std::lock_guard<std::mutex> lock(dirty_mu_);
  return !dirty_.empty();
}

Status ConsumerGroupsImpl::MaybePeriodicFlush(int64_t now_ns) {
  if (!PeriodicFlushDue(now_ns)) return Status::Ok();
  return FlushUpTo(mutation_seq_.load());
}

Status ConsumerGroupsImpl::CommitForCaller(uint64_t seq) {
  if (options_.commit_mode == CommitMode::kSync) {
    return seq == 0 ? Status::Ok() : FlushUpTo(seq);
  }
  return MaybePeriodicFlush(NowNs());
}

void ConsumerGroupsImpl::InBackground(std::function<void()> task) {
  if (options_.background) {
    options_.background(std::move(task));
  } else {
    task();
  }
}

void ConsumerGroupsImpl::CommitThen(uint64_t seq, std::function<void(Status)> then) {
  if (seq == 0) {
    then(Status::Ok());
    return;
  }
  {
    std::lock_guard<std::mutex> lock(commits_mu_);
    commits_.push_back(CommitWaiter{seq, std::move(then)});
    if (committing_) return;  // the running task takes it with its next sync
    committing_ = true;
  }
  InBackground([this] { RunCommits(); });
}

void ConsumerGroupsImpl::RunCommits() {
  for (;;) {
    std::vector<CommitWaiter> batch;
    {
      std::lock_guard<std::mutex> lock(commits_mu_);
      if (commits_.empty()) {
        committing_ = false;
        commits_idle_.notify_all();
        return;
      }
      batch.swap(commits_);
    }
    uint64_t target = 0;
    for (const CommitWaiter& w : batch) target = std::max(target, w.seq);
    // One sync for the whole batch (FlushUpTo writes everything dirty up to now). If it fails,
    // a waiter whose mutations an earlier sync made durable still gets OK.
    const Status synced = FlushUpTo(target);
    uint64_t durable = 0;
    if (!synced.ok()) {
      std::lock_guard<std::mutex> lock(journal_mu_);
      durable = durable_seq_;
    }
    for (CommitWaiter& w : batch) {
      w.then(synced.ok() || w.seq <= durable ? Status::Ok() : synced);
    }
  }
}

// ---------------------------------------------------------------------------------------
// Lookup and group lifecycle

Result<std::shared_ptr<Group>> ConsumerGroupsImpl::Lookup(const std::string& topic,
                                                          const std::string& group) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = groups_.find(GroupKey(topic, group));
  if (it == groups_.end()) {
    return NotFoundError("consumer group '" + group + "' on topic '" + topic + "' not found");
  }
  return it->second;
}

#define CONVERGE_GROUP_LOCK(g)                                                          \
  std::unique_lock<std::mutex> group_lock((g)->mu);                                     \
  if ((g)->deleted) {                                                                   \
    return NotFoundError("consumer group '" + (g)->name + "' on topic '" + (g)->topic + \
                         "' was deleted");                                              \
  }

Result<uint64_t> ConsumerGroupsImpl::StartOffset(const std::string& topic,
                                                 const PartitionInfo& part, StartPosition start,
                                                 uint64_t offset, int64_t time_micros) {
  switch (start) {
    case StartPosition::kEarliest:
      return part.start_offset;
    case StartPosition::kLatest:
      return part.end_offset;
    case StartPosition::kOffset:
      return std::clamp(offset, part.start_offset, part.end_offset);
    case StartPosition::kTime: {
      CONVERGE_ASSIGN_OR_RETURN(uint64_t o, log_.OffsetForTime(topic, part.partition, time_micros));
      return std::clamp(o, part.start_offset, part.end_offset);
    }
  }
  return InvalidArgumentError("unknown start position");
}

std::vector<PartitionInfo> ByPartition(const TopicInfo& info) {
  std::vector<PartitionInfo> out(info.partitions.size());
  for (const PartitionInfo& p : info.partitions) {
    if (p.partition < out.size()) out[p.partition] = p;
  }
  for (uint32_t p = 0; p < out.size(); ++p) out[p].partition = p;
  return out;
}

Status ConsumerGroupsImpl::CreateGroup(const std::string& topic, const std::string& group,
                                       const GroupOptions& options) {
  if (!ValidGroupName(group)) {
    return InvalidArgumentError("group name '" + group +
                                "' must be 1..64 characters of [A-Za-z0-9_-]");
  }
  CONVERGE_RETURN_IF_ERROR(ValidateGroupOptions(options));
  const std::string dlq = options.dead_letter_topic.empty() ? DefaultDeadLetterTopic(topic, group)
                                                            : options.dead_letter_topic;
  if (dlq.size() > kMaxTopicName) {
    // Only a chosen name can be too long: the default one is shortened to fit.
    return InvalidArgumentError("GroupOptions.dead_letter_topic '" + dlq +
                                "' is longer than 200 characters");
  }
  if (dlq == topic) return InvalidArgumentError("the dead-letter topic cannot be the topic itself");
  const std::string key = GroupKey(topic, group);
  // Checked before the dead-letter topic is made, and again under the journal lock (a
  // concurrent create may have won meanwhile). Requires mu_.
  auto may_add = [&]() -> Status {
    if (groups_.count(key) != 0) {
      return AlreadyExistsError("consumer group '" + group + "' on topic '" + topic +
                                "' already exists");
    }
    if (groups_.size() >= options_.max_groups) {
      return ResourceExhaustedError("max_groups (" + std::to_string(options_.max_groups) +
                                    ") reached");
    }
    return Status::Ok();
  };
  {
    std::lock_guard<std::mutex> lock(mu_);
    CONVERGE_RETURN_IF_ERROR(may_add());
  }
  CONVERGE_ASSIGN_OR_RETURN(TopicInfo info, log_.DescribeTopic(topic));
  std::vector<uint64_t> committed;
  for (const PartitionInfo& part : ByPartition(info)) {
    CONVERGE_ASSIGN_OR_RETURN(
        uint64_t c,
        StartOffset(topic, part, options.start, options.start_offset, options.start_time_micros));
    committed.push_back(c);
  }
  TopicOptions dl;
  dl.partitions = 1;
  dl.durability = Durability::kFsync;
  dl.internal = !dlq.empty() && dlq[0] == '_';
  // Room for the envelope around the largest record of the topic (the Log caps it at 64 MiB).
  dl.max_record_bytes = static_cast<uint32_t>(std::min<uint64_t>(
      uint64_t{info.options.max_record_bytes} + 2 * options.max_reason_bytes + 1024, 64u << 20));
  Status s = log_.CreateTopic(dlq, dl);
  if (!s.ok() && s.code() != StatusCode::kAlreadyExists) {
    return s.WithContext("creating dead-letter topic '" + dlq + "'");
  }
  // Journal-first: the group becomes visible only once the journal holds it, so a refused
  // create leaves no group behind (its dead-letter topic, created above, stays and is reused).
  std::lock_guard<std::mutex> journal_lock(journal_mu_);
  CONVERGE_RETURN_IF_ERROR(ReadyJournalLocked());
  std::lock_guard<std::mutex> lock(mu_);
  CONVERGE_RETURN_IF_ERROR(may_add());
  auto g = std::make_shared<Group>(next_group_id_.fetch_add(1), topic, group, options, dlq,
                                   committed, env_.random().Next64() >> 2);
  std::string data;
  {
    std::lock_guard<std::mutex> gl(g->mu);
    g->Serialize(/*full=*/true, &data);
  }
  CONVERGE_RETURN_IF_ERROR(AppendAheadLocked(data));
  groups_[key] = std::move(g);
  return Status::Ok();
}

uint64_t RangesCount(const Ranges& ranges, uint64_t begin, uint64_t end) {
  uint64_t n = 0;
  for (const auto& [b, e] : ranges) {
    const uint64_t lo = std::max(b, begin), hi = std::min(e, end);
    if (lo < hi) n += hi - lo;
  }
  return n;
}

Status ConsumerGroupsImpl::DeleteGroup(const std::string& topic, const std::string& group,
                                       bool force) {
  CONVERGE_ASSIGN_OR_RETURN(std::shared_ptr<Group> g, Lookup(topic, group));
  auto dl_info = log_.DescribeTopic(g->dead_letter_topic);
  if (dl_info.ok() && !dl_info->partitions.empty() && !force) {
    const PartitionInfo p0 = ByPartition(*dl_info)[0];
    uint64_t replayed;
    {
      CONVERGE_GROUP_LOCK(g);
      replayed = RangesCount(g->replayed, p0.start_offset, p0.end_offset);
    }
    const uint64_t unreplayed = p0.end_offset - p0.start_offset - replayed;
    if (unreplayed > 0) {
      return FailedPreconditionError("consumer group '" + group + "' has " +
                                     std::to_string(unreplayed) +
                                     " dead letters not replayed; replay them or delete with "
                                     "force (which also deletes them)");
    }
  }
  {
    // Journal-first: the group is removed from memory only once the journal holds the
    // deletion, so a refused delete leaves the group as it was.
    std::lock_guard<std::mutex> journal_lock(journal_mu_);
    CONVERGE_RETURN_IF_ERROR(ReadyJournalLocked());
    std::lock_guard<std::mutex> lock(mu_);
    auto it = groups_.find(GroupKey(topic, group));
    if (it == groups_.end() || it->second != g) {
      return NotFoundError("consumer group '" + group + "' on topic '" + topic + "' not found");
    }
    std::lock_guard<std::mutex> gl(g->mu);
    std::string data;
    internal::groups::EncodeDelete(g->id, &data);
    CONVERGE_RETURN_IF_ERROR(AppendAheadLocked(data));
    groups_.erase(it);
    g->deleted = true;
  }
  g->Notify();  // waiting subscribers find the group gone
  if (force && g->options.dead_letter_topic.empty()) {
    Status s = log_.DeleteTopic(g->dead_letter_topic);
    if (!s.ok() && s.code() != StatusCode::kNotFound) {
      return s.WithContext("the group is deleted; deleting its dead-letter topic '" +
                           g->dead_letter_topic + "' failed (delete the topic to finish)");
    }
  }
  return Status::Ok();
}

std::vector<std::string> ConsumerGroupsImpl::ListGroups(const std::string& topic) {
  std::vector<std::string> names;
  std::string prefix = topic;
  prefix.push_back('\0');
  std::lock_guard<std::mutex> lock(mu_);
  for (auto it = groups_.lower_bound(prefix);
       it != groups_.end() && it->first.compare(0, prefix.size(), prefix) == 0; ++it) {
    names.push_back(it->second->name);
  }
  return names;
}

// ---------------------------------------------------------------------------------------
// Membership

Result<Assignment> ConsumerGroupsImpl::Join(const std::string& topic, const std::string& group,
                                            const std::string& member) {
  if (!ValidMemberId(member)) {
    return InvalidArgumentError("member id '" + member +
                                "' must be 1..128 characters of [A-Za-z0-9._:@-]");
  }
  CONVERGE_ASSIGN_OR_RETURN(std::shared_ptr<Group> g, Lookup(topic, group));
  Assignment a;
  bool notify;
  Wakes wakes;
  {
    CONVERGE_GROUP_LOCK(g);
    const int64_t now = NowNs();
    const uint64_t generation = g->generation;
    g->ExpireSessions(now);
    uint32_t slot = g->SlotOf(member);
    if (slot != kNoMember) {
      g->members[slot].last_seen_ns = now;
    } else {
      if (g->by_id.size() >= g->options.max_members) {
        return ResourceExhaustedError("group '" + group + "' has max_members (" +
                                      std::to_string(g->options.max_members) + ") members");
      }
      slot = g->AddMember(member, now);
    }
    a = g->AssignmentOf(slot);
    notify = g->generation != generation;
    wakes = g->TakeWakes();
  }
  g->Notify(std::move(wakes), notify);
  return a;
}

Status ConsumerGroupsImpl::Leave(const std::string& topic, const std::string& group,
                                 const std::string& member) {
  CONVERGE_ASSIGN_OR_RETURN(std::shared_ptr<Group> g, Lookup(topic, group));
  Wakes wakes;
  bool left = false;
  {
    CONVERGE_GROUP_LOCK(g);
    const int64_t now = NowNs();
    g->ExpireSessions(now);
    const uint32_t slot = g->SlotOf(member);
    if (slot != kNoMember) {
      g->RemoveMember(slot, /*expire=*/false, now);
      left = true;
    }
    // The members given its partitions, and the owners of partitions where it held leases.
    wakes = g->TakeWakes();
  }
  g->Notify(std::move(wakes), /*any=*/left);
  return Status::Ok();
}

Status ConsumerGroupsImpl::Abandon(const std::string& topic, const std::string& group,
                                   const std::string& member, std::string_view why) {
  CONVERGE_ASSIGN_OR_RETURN(std::shared_ptr<Group> g, Lookup(topic, group));
  uint64_t seq = 0;
  {
    CONVERGE_GROUP_LOCK(g);
    const int64_t now = NowNs();
    g->ExpireSessions(now);
    const uint32_t slot = g->SlotOf(member);
    if (slot == kNoMember) return Status::Ok();
    g->RemoveMember(slot, /*expire=*/true, now, why);
    // Expired leases at their last delivery are due for dead-lettering now: append them here
    // rather than on the next fetch or tick (their errors go to the partition's last_error).
    for (uint32_t p = 0; p < g->partitions.size(); ++p) ProcessDue(*g, p, now, &seq);
    g->TakeWakes();  // every member is told below
  }
  g->Notify();
  // Dead-lettering committed records: made durable like an ack's commit.
  return CommitForCaller(seq);
}

Result<Assignment> ConsumerGroupsImpl::Heartbeat(const std::string& topic, const std::string& group,
                                                 const std::string& member) {
  CONVERGE_ASSIGN_OR_RETURN(std::shared_ptr<Group> g, Lookup(topic, group));
  Assignment a;
  bool notify;
  Wakes wakes;
  {
    CONVERGE_GROUP_LOCK(g);
    const int64_t now = NowNs();
    const uint64_t generation = g->generation;
    g->ExpireSessions(now);
    const uint32_t slot = g->SlotOf(member);
    if (slot == kNoMember) {
      return FailedPreconditionError("'" + member + "' is not a member of group '" + group +
                                     "' (never joined, left or expired): call Join");
    }
    g->members[slot].last_seen_ns = now;
    a = g->AssignmentOf(slot);
    notify = g->generation != generation;
    wakes = g->TakeWakes();
  }
  g->Notify(std::move(wakes), notify);
  return a;
}

// ---------------------------------------------------------------------------------------
// Delivery

Status ConsumerGroupsImpl::AppendDeadLetters(Group& g, uint32_t p,
                                             std::span<WindowEntry* const> entries, int64_t now_ns,
                                             bool* ready, std::vector<WindowEntry*>* held) {
  PartitionState& ps = *g.partitions[p];
  PartitionWindow& w = ps.window;
  const int64_t wall_us = env_.clock().NowWallMicros();
  const std::string max_reason =
      "max deliveries (" + std::to_string(g.options.max_deliveries) + ") exceeded";
  Status first;
  for (size_t begin = 0; begin < entries.size(); begin += kDeadLetterAppendChunk) {
    const size_t end = std::min(entries.size(), begin + kDeadLetterAppendChunk);
    std::vector<std::string> values(end - begin), ids(end - begin), reasons(end - begin);
    std::vector<RecordView> views;
    views.reserve(end - begin);
    for (size_t i = begin; i < end; ++i) {
      const WindowEntry* e = entries[i];
      const std::string_view last_error = w.LastError(e->offset);
      std::string& reason = reasons[i - begin];
      reason = e->permanent ? "rejected: " + std::string(last_error) : max_reason;
      DeadLetterFields f;
      f.topic = g.topic;
      f.partition = p;
      f.offset = e->offset;
      f.delivery_count = e->attempt;
      f.reason = reason;
      f.last_error = last_error;
      f.dead_lettered_at_micros = wall_us;
      f.permanent = e->permanent;
      f.id = e->record.id;
      f.key = e->record.key;
      f.value = e->record.value;
      f.timestamp_micros = e->record.timestamp_micros;
      internal::groups::EncodeDeadLetter(f, &values[i - begin]);
      // Stable for retries of this delivery's dead letter (the Log deduplicates them).
      ids[i - begin] = "dl." + std::to_string(p) + "." + std::to_string(e->offset) + "." +
                       std::to_string(e->lease_id);
      views.push_back(RecordView{ids[i - begin], {}, values[i - begin], 0});
    }
    auto appended = log_.AppendToPartition(g.dead_letter_topic, 0, views);
    if (appended.ok()) {
      for (size_t i = begin; i < end; ++i) {
        if (held == nullptr) {
          *ready |= w.DeadLettered(entries[i]);
        } else {
          // Parked: no retry may mark it done before its commit is written.
          w.DeadLetterFailed(entries[i], INT64_MAX);
          held->push_back(entries[i]);
        }
      }
      continue;
    }
    const int64_t retry_at = now_ns + g.options.dead_letter_retry_ms * kNanosPerMilli;
    for (size_t i = begin; i < end; ++i) w.DeadLetterFailed(entries[i], retry_at);
    ps.last_error =
        "dead-letter append to '" + g.dead_letter_topic +
        "' failed (records stay pending and are retried): " + appended.status().ToString();
    if (first.ok()) first = appended.status();
  }
  return first;
}

bool ConsumerGroupsImpl::ProcessDue(Group& g, uint32_t p, int64_t now_ns, uint64_t* seq) {
  PartitionState& ps = *g.partitions[p];
  PartitionWindow& w = ps.window;
  if (w.NextDeadline() > now_ns) return false;
  const uint64_t committed_before = w.committed();
  const uint32_t done_before = w.done_above_committed();
  std::vector<ExpiredLease> expired;
  std::vector<WindowEntry*> dead_letters;
  bool ready = w.ProcessDue(now_ns, &expired, &dead_letters);
  for (const ExpiredLease& x : expired) {
    g.LeaseEnded(x.member);
    g.WakeSlot(x.member);  // room under max_in_flight_per_member
  }
  if (!dead_letters.empty()) {
    AppendDeadLetters(g, p, dead_letters, now_ns, &ready).IgnoreError();  // in last_error
  }
  // Expired leases also free room under max_in_flight_per_partition, whoever held them.
  if (ready || !expired.empty()) g.WakeOwner(p);
  *seq = std::max(*seq, NoteChange(g, ps, committed_before, done_before));
  return ready;
}

bool ConsumerGroupsImpl::ReadMore(Group& g, uint32_t p) {
  PartitionState& ps = *g.partitions[p];
  PartitionWindow& w = ps.window;
  const uint64_t from = w.read_offset();
  const size_t n = std::min<size_t>(options_.read_max_records, w.ReadRoom());
  // The Log reads about max_bytes from the file whatever max_records is: ask for what `n`
  // records of the usual size need (with headroom), not for the whole byte bound.
  const uint64_t want_bytes = n * ps.avg_record_bytes + n * ps.avg_record_bytes / 4 + 4096;
  auto batch = log_.Read(g.topic, p, from, n, std::min(want_bytes, options_.read_max_bytes));
  if (!batch.ok()) {
    const std::optional<uint64_t> resume = DataLossResumeOffset(batch.status());
    ps.read_error_code = batch.status().code();
    if (resume.has_value() && *resume > from && options_.on_damage == DamagePolicy::kSkip) {
      // The records in [from, resume) are damaged and cannot be delivered: skip them (they
      // count as done) rather than stall the partition, and say so.
      ps.last_error = "skipped damaged records [" + std::to_string(from) + ", " +
                      std::to_string(*resume) + "): " + batch.status().ToString();
      ps.damaged_skipped += *resume - from;
      if (options_.report_damage) {
        options_.report_damage("consumer group '" + g.name + "' on topic '" + g.topic + "': " +
                           ps.last_error);
      }
      ReadBatch skip;
      skip.next_offset = *resume;
      w.AddRecords(skip);
      return true;
    }
    ps.last_error = "read at offset " + std::to_string(from) + ": " + batch.status().ToString();
    if (resume.has_value() && ps.stopped_at != from && options_.report_damage) {
      ps.stopped_at = from;  // reported once per place, not on every fetch
      options_.report_damage("consumer group '" + g.name + "' on topic '" + g.topic +
                             "' stopped (on_damage: stop): " + ps.last_error);
    }
    return false;
  }
  if (batch->records.empty() && batch->next_offset <= from) return false;
  if (!batch->records.empty()) {
    uint64_t bytes = 0;
    for (const StoredRecord& r : batch->records) {
      bytes += r.id.size() + r.key.size() + r.value.size() + kRecordOverheadBytes;
    }
    const uint64_t avg = bytes / batch->records.size();
    ps.avg_record_bytes = (ps.avg_record_bytes * 3 + avg) / 4 + 1;
  }
  w.AddRecords(*batch);
  return true;
}

void ConsumerGroupsImpl::Lease(Group& g, uint32_t p, uint32_t slot, WindowEntry* e, int64_t now_ns,
                               int64_t wall_offset_us, FetchResult* out) {
  uint64_t lease_id = g.next_lease_id++;
  if (lease_id == 0) lease_id = g.next_lease_id++;
  const int64_t deadline = now_ns + g.options.lease_ms * kNanosPerMilli;
  g.partitions[p]->window.Lease(e, slot, lease_id, deadline);
  ++g.members[slot].in_flight;
  Delivery& d = out->deliveries.emplace_back();
  d.partition = p;
  d.offset = e->offset;
  d.attempt = e->attempt;
  d.lease_id = lease_id;
  d.lease_expires_at_micros = deadline / 1000 + wall_offset_us;
  d.timestamp_micros = e->record.timestamp_micros;
  d.id = e->record.id;
  d.key = e->record.key;
  d.value = e->record.value;
  if (out->storage.empty() || out->storage.back() != e->storage) {
    out->storage.push_back(e->storage);
  }
}

Result<FetchResult> ConsumerGroupsImpl::Fetch(const std::string& topic, const std::string& group,
                                              const std::string& member, uint32_t max_records,
                                              uint64_t max_bytes) {
  if (max_records == 0) return InvalidArgumentError("max_records must be >= 1");
  max_records = std::min(max_records, options_.fetch_max_records);
  max_bytes = std::clamp<uint64_t>(max_bytes, 1, options_.fetch_max_bytes);
  CONVERGE_ASSIGN_OR_RETURN(std::shared_ptr<Group> g, Lookup(topic, group));
  FetchResult out;
  bool ready = false;
  Wakes wakes;
  std::string read_error;
  StatusCode read_error_code = StatusCode::kUnavailable;
  {
    CONVERGE_GROUP_LOCK(g);
    const int64_t now = NowNs();
    ready |= g->ExpireSessions(now);
    const uint32_t slot = g->SlotOf(member);
    const size_t n = slot == kNoMember ? 0 : g->members[slot].partitions.size();
    if (n == 0) {
      // Nothing to fetch here, but what the session expiry above changed is told.
      if (slot != kNoMember) g->members[slot].last_seen_ns = now;
      wakes = g->TakeWakes();
      group_lock.unlock();
      g->Notify(std::move(wakes), ready);
      if (slot != kNoMember) return out;
      return FailedPreconditionError("'" + member + "' is not a member of group '" + group +
                                     "' (never joined, left or expired): call Join");
    }
    Member& m = g->members[slot];
    m.last_seen_ns = now;
    const int64_t wall_offset_us = env_.clock().NowWallMicros() - now / 1000;
    const size_t start = m.next_partition % n;
    m.next_partition = (start + 1) % n;
    uint64_t bytes = 0;
    uint64_t seq = 0;
    bool full = false;
    for (size_t i = 0; i < n && !full; ++i) {
      const uint32_t p = m.partitions[(start + i) % n];
      PartitionState& ps = *g->partitions[p];
      PartitionWindow& w = ps.window;
      ready |= ProcessDue(*g, p, now, &seq);
      const uint64_t committed_before = w.committed();
      const uint32_t done_before = w.done_above_committed();
      while (true) {
        if (out.deliveries.size() >= max_records) {
          full = true;
          break;
        }
        if (w.in_flight() >= g->options.max_in_flight_per_partition) break;
        if (m.in_flight >= g->options.max_in_flight_per_member) {
          full = true;
          break;
        }
        WindowEntry* e = w.PeekReady();
        if (e == nullptr) {
          if (!w.CanRead() || !ReadMore(*g, p)) {
            if (!ps.last_error.empty() && ps.last_error.rfind("read at", 0) == 0) {
              read_error = ps.last_error;
              read_error_code = ps.read_error_code;
            }
            break;
          }
          if (ps.last_error.rfind("read at", 0) == 0) ps.last_error.clear();
          continue;
        }
        if (!out.deliveries.empty() && bytes + e->record_bytes > max_bytes) {
          full = true;
          break;
        }
        bytes += e->record_bytes;
        Lease(*g, p, slot, e, now, wall_offset_us, &out);
      }
      seq = std::max(seq, NoteChange(*g, ps, committed_before, done_before));
    }
    wakes = g->TakeWakes();
  }
  // Only the members concerned (expired sessions, leases or delays) are told, not every
  // member waiting on the group.
  g->Notify(std::move(wakes), ready);
  if (out.deliveries.empty() && !read_error.empty()) {
    if (read_error_code == StatusCode::kDataLoss) {
      return DataLossError("fetch from '" + topic + "': " + read_error);
    }
    return UnavailableError("fetch from '" + topic + "': " + read_error);
  }
  return out;
}

Status ConsumerGroupsImpl::Ack(const std::string& topic, const std::string& group,
                               const std::string& member, const LeaseRef& lease) {
  CONVERGE_ASSIGN_OR_RETURN(AckBatchResult r,
                            AckBatch(topic, group, member, std::span<const LeaseRef>(&lease, 1)));
  if (!r.lost.empty()) {
    return FailedPreconditionError("lease " + std::to_string(lease.lease_id) + " on partition " +
                                   std::to_string(lease.partition) + " offset " +
                                   std::to_string(lease.offset) +
                                   " was lost: the record was leased again or the group seeked");
  }
  return Status::Ok();
}

Result<ConsumerGroupsImpl::AckStep> ConsumerGroupsImpl::AckPrepare(
    const std::string& topic, const std::string& group, const std::string& member,
    std::span<const LeaseRef> leases) {
  if (leases.size() > options_.ack_max_leases) {
    return InvalidArgumentError("an ack batch holds at most " +
                                std::to_string(options_.ack_max_leases) + " leases");
  }
  AckStep step;
  CONVERGE_ASSIGN_OR_RETURN(step.group, Lookup(topic, group));
  const std::shared_ptr<Group>& g = step.group;
  AckBatchResult& result = step.result;
  uint64_t& seq = step.seq;
  const bool journal_first = options_.commit_mode == CommitMode::kSync;
  std::vector<size_t>& intents = step.intents;
  {
    CONVERGE_GROUP_LOCK(g);
    for (const LeaseRef& ref : leases) {
      if (ref.partition >= g->partitions.size()) {
        return InvalidArgumentError("partition " + std::to_string(ref.partition) +
                                    " does not exist in topic '" + topic + "'");
      }
    }
    if (Member* m = g->FindMember(member)) m->last_seen_ns = NowNs();
    bool changed = false;
    // An ack of a record that is already done promises the same durability as any other: that
    // record's completion may still be waiting for its commit (or its commit may have failed).
    bool already_done = false;
    for (size_t i = 0; i < leases.size(); ++i) {
      const LeaseRef& ref = leases[i];
      PartitionState& ps = *g->partitions[ref.partition];
      PartitionWindow& w = ps.window;
      WindowEntry* e = w.Find(ref.offset);
      if (e == nullptr) {
        // Below the read position and not pending: committed, or a gap (done). Above: the
        // record is not even read any more (the group seeked back).
        if (ref.offset < w.read_offset()) {
          ++result.acked;
          already_done = true;
        } else {
          result.lost.push_back(i);
        }
        continue;
      }
      if (e->state == EntryState::kDone) {
        ++result.acked;
        already_done = true;
        continue;
      }
      if (e->attempt == 0 || e->lease_id != ref.lease_id) {
        result.lost.push_back(i);
        continue;
      }
      ++result.acked;
      ps.dirty = true;
      changed = true;
      if (journal_first) {
        ps.ack_intents.push_back(ref.offset);
        intents.push_back(i);
        continue;
      }
      if (e->state == EntryState::kLeased) {
        g->LeaseEnded(e->member);
        g->WakeSlot(e->member);
      }
      w.Ack(e);
      g->WakeOwner(ref.partition);
    }
    if (changed) seq = MarkDirty(*g);
    if (already_done) seq = std::max(seq, mutation_seq_.load());
    step.wakes = g->TakeWakes();
  }
  return step;
}

Result<AckBatchResult> ConsumerGroupsImpl::AckFinish(AckStep step,
                                                     std::span<const LeaseRef> leases,
                                                     const Status& committed) {
  const std::shared_ptr<Group>& g = step.group;
  const uint64_t seq = step.seq;
  const std::vector<size_t>& intents = step.intents;
  if (options_.commit_mode != CommitMode::kSync) {
    // In-flight room and keys were freed: for the owners of the partitions and the members
    // that held the leases, not every member waiting on the group.
    if (seq != 0) g->Notify(std::move(step.wakes), /*any=*/true);
    return std::move(step.result);
  }
  // kSync: the acks reach memory only once the journal holds them (a record written meanwhile
  // for the same partition includes the intents), so a refused ack changes nothing.
  if (!intents.empty()) {
    std::unique_lock<std::mutex> group_lock(g->mu);
    // This call's intents leave their partitions' lists in one pass per partition (a list
    // also holds concurrent calls' intents; erasing a batch's one by one was quadratic in the
    // batch size).
    std::unordered_map<uint32_t, std::unordered_map<uint64_t, uint32_t>> mine;
    for (size_t i : intents) ++mine[leases[i].partition][leases[i].offset];
    for (auto& [partition, counts] : mine) {
      std::erase_if(g->partitions[partition]->ack_intents, [&counts](uint64_t offset) {
        auto it = counts.find(offset);
        if (it == counts.end() || it->second == 0) return false;
        --it->second;
        return true;
      });
    }
    for (size_t i : intents) {
      if (!committed.ok() || g->deleted) break;
      const LeaseRef& ref = leases[i];
      PartitionState& ps = *g->partitions[ref.partition];
      WindowEntry* e = ps.window.Find(ref.offset);
      // Gone (a seek) or done meanwhile: nothing left to apply. Otherwise the ack is durable,
      // so the record is done even if its lease ran out while the journal was written.
      if (e == nullptr || e->state == EntryState::kDone || e->attempt == 0) continue;
      if (e->state == EntryState::kLeased) {
        g->LeaseEnded(e->member);
        g->WakeSlot(e->member);
      }
      ps.window.Ack(e);
      g->WakeOwner(ref.partition);
    }
    Wakes owed = g->TakeWakes();
    step.wakes.all |= owed.all;
    step.wakes.members.insert(step.wakes.members.end(),
                              std::make_move_iterator(owed.members.begin()),
                              std::make_move_iterator(owed.members.end()));
  }
  if (!committed.ok()) return committed;
  // In-flight room and keys were freed (see above).
  if (seq != 0) g->Notify(std::move(step.wakes), /*any=*/true);
  return std::move(step.result);
}

Result<AckBatchResult> ConsumerGroupsImpl::AckBatch(const std::string& topic,
                                                    const std::string& group,
                                                    const std::string& member,
                                                    std::span<const LeaseRef> leases) {
  CONVERGE_ASSIGN_OR_RETURN(AckStep step, AckPrepare(topic, group, member, leases));
  // kPeriodic: an OK promises the ack is applied in memory, which it is; a failed flush is
  // retried by the next one (and by the timer) until the journal takes it.
  Status committed = CommitForCaller(step.seq);
  if (options_.commit_mode != CommitMode::kSync) committed = Status::Ok();
  return AckFinish(std::move(step), leases, committed);
}

void ConsumerGroupsImpl::AckBatchAsync(const std::string& topic, const std::string& group,
                                       const std::string& member,
                                       std::span<const LeaseRef> leases, AckBatchDone done) {
  Result<AckStep> step = AckPrepare(topic, group, member, leases);
  if (!step.ok()) {
    done(step.status());
    return;
  }
  if (options_.commit_mode != CommitMode::kSync) {
    // kPeriodic: applied in memory, which is what an OK promises; a due flush runs in the
    // background rather than on this thread.
    bool queue = false;
    if (PeriodicFlushDue(NowNs())) {
      std::lock_guard<std::mutex> lock(commits_mu_);
      queue = !periodic_flush_queued_;
      periodic_flush_queued_ = true;
    }
    if (queue) {
      InBackground([this] {
        MaybePeriodicFlush(NowNs()).IgnoreError();  // retried by the next one and the timer
        std::lock_guard<std::mutex> lock(commits_mu_);
        periodic_flush_queued_ = false;
        commits_idle_.notify_all();
      });
    }
    done(AckFinish(std::move(*step), leases, Status::Ok()));
    return;
  }
  const uint64_t seq = step->seq;
  auto finish = [this, step = std::make_shared<AckStep>(std::move(*step)), leases,
                 done = std::move(done)](Status committed) {
    done(AckFinish(std::move(*step), leases, committed));
  };
  CommitThen(seq, std::move(finish));
}

Result<ExtendLeasesResult> ConsumerGroupsImpl::ExtendLeases(const std::string& topic,
                                                            const std::string& group,
                                                            const std::string& member,
                                                            std::span<const LeaseRef> leases,
                                                            int64_t lease_ms) {
  if (lease_ms < 1 || lease_ms > kMaxDurationMs) {
    return InvalidArgumentError("lease_ms must be in 1.." + std::to_string(kMaxDurationMs));
  }
  if (leases.size() > options_.ack_max_leases) {
    return InvalidArgumentError("a lease extension holds at most " +
                                std::to_string(options_.ack_max_leases) + " leases");
  }
  CONVERGE_ASSIGN_OR_RETURN(std::shared_ptr<Group> g, Lookup(topic, group));
  ExtendLeasesResult result;
  result.lease_expires_at_micros.assign(leases.size(), 0);
  CONVERGE_GROUP_LOCK(g);
  for (const LeaseRef& ref : leases) {
    if (ref.partition >= g->partitions.size()) {
      return InvalidArgumentError("partition " + std::to_string(ref.partition) +
                                  " does not exist in topic '" + topic + "'");
    }
  }
  const int64_t now = NowNs();
  const int64_t wall_offset_us = env_.clock().NowWallMicros() - now / 1000;
  if (Member* m = g->FindMember(member)) m->last_seen_ns = now;
  const int64_t deadline = now + lease_ms * kNanosPerMilli;
  for (size_t i = 0; i < leases.size(); ++i) {
    const LeaseRef& ref = leases[i];
    PartitionWindow& w = g->partitions[ref.partition]->window;
    WindowEntry* e = w.Find(ref.offset);
    // Only the live lease itself: an expiry already due but not yet applied by Tick counts as
    // ended, so an extension never revives a lease whose record may be redelivered any moment.
    if (e == nullptr || e->state != EntryState::kLeased || e->lease_id != ref.lease_id ||
        e->deadline_ns <= now) {
      result.lost.push_back(i);
      continue;
    }
    w.ExtendLease(e, deadline);
    result.lease_expires_at_micros[i] = deadline / 1000 + wall_offset_us;
    ++result.extended;
  }
  return result;
}

Status ConsumerGroupsImpl::Nack(const std::string& topic, const std::string& group,
                                const std::string& member, const LeaseRef& lease,
                                const NackOptions& options) {
  CONVERGE_ASSIGN_OR_RETURN(std::shared_ptr<Group> g, Lookup(topic, group));
  Status result;
  uint64_t seq = 0;
  bool dead_lettered = false;
  const bool journal_first = options_.commit_mode == CommitMode::kSync;
  uint64_t held_offset = UINT64_MAX;  // a dead letter appended, its commit not yet written
  {
    CONVERGE_GROUP_LOCK(g);
    if (options.delay_ms < 0 || options.delay_ms > g->options.max_nack_delay_ms) {
      return InvalidArgumentError("nack delay_ms must be in 0.." +
                                  std::to_string(g->options.max_nack_delay_ms));
    }
    if (lease.partition >= g->partitions.size()) {
      return InvalidArgumentError("partition " + std::to_string(lease.partition) +
                                  " does not exist in topic '" + topic + "'");
    }
    const int64_t now = NowNs();
    if (Member* m = g->FindMember(member)) m->last_seen_ns = now;
    const uint32_t p = lease.partition;
    PartitionState& ps = *g->partitions[p];
    PartitionWindow& w = ps.window;
    WindowEntry* e = w.Find(lease.offset);
    if (e == nullptr || e->state == EntryState::kDone) {
      if (lease.offset < w.read_offset()) {
        return FailedPreconditionError("record " + std::to_string(p) + "/" +
                                       std::to_string(lease.offset) + " is already done");
      }
      return FailedPreconditionError("lease " + std::to_string(lease.lease_id) +
                                     " was lost: the group seeked");
    }
    if (e->attempt == 0 || e->lease_id != lease.lease_id) {
      return FailedPreconditionError("lease " + std::to_string(lease.lease_id) +
                                     " was lost: the record was leased again");
    }
    if (e->state != EntryState::kLeased) {
      return FailedPreconditionError("lease " + std::to_string(lease.lease_id) +
                                     " expired before the nack");
    }
    const std::string_view reason = CutUtf8(options.reason, g->options.max_reason_bytes);
    if (!reason.empty()) w.SetLastError(e->offset, reason);
    const uint64_t committed_before = w.committed();
    const uint32_t done_before = w.done_above_committed();
    g->LeaseEnded(e->member);
    w.EndLease(e, /*failed=*/true, options.permanent, now, options.delay_ms * kNanosPerMilli);
    if (e->state == EntryState::kDeadLetterPending) {
      dead_lettered = true;
      bool ready = false;
      WindowEntry* const one[1] = {e};
      std::vector<WindowEntry*> held;
      result = AppendDeadLetters(*g, p, one, now, &ready, journal_first ? &held : nullptr);
      if (!held.empty()) {
        // kSync: the record is done in memory only once the journal holds its commit; a record
        // of this partition written meanwhile carries it (like an ack intent).
        ps.ack_intents.push_back(lease.offset);
        ps.dirty = true;
        seq = MarkDirty(*g);
        held_offset = lease.offset;
      }
    }
    if (held_offset == UINT64_MAX) seq = NoteChange(*g, ps, committed_before, done_before);
  }
  if (held_offset != UINT64_MAX) {
    const Status committed = FlushUpTo(seq);
    {
      std::unique_lock<std::mutex> group_lock(g->mu);
      PartitionState& ps = *g->partitions[lease.partition];
      auto it = std::find(ps.ack_intents.begin(), ps.ack_intents.end(), held_offset);
      if (it != ps.ack_intents.end()) ps.ack_intents.erase(it);
      WindowEntry* e = g->deleted ? nullptr : ps.window.Find(held_offset);
      // Gone (a seek) or settled meanwhile (a late ack of the same lease): nothing to apply.
      if (e != nullptr && e->state == EntryState::kDeadLetterPending &&
          e->lease_id == lease.lease_id) {
        if (committed.ok()) {
          ps.window.DeadLettered(e);
        } else {
          // Not committed: the record stays pending, and the group retries the append (which
          // the Log deduplicates: same record id) and then the commit.
          const int64_t now = NowNs();
          ps.window.DeadLetterFailed(e, now + g->options.dead_letter_retry_ms * kNanosPerMilli);
          ps.last_error =
              "commit of the dead letter of offset " + std::to_string(held_offset) +
              " failed (the record stays pending and is retried): " + committed.ToString();
        }
      }
    }
    g->Notify();
    return committed.WithContext("dead-letter commit");
  }
  g->Notify();  // a record is ready again, or the next due time moved
  if (!result.ok()) return result.WithContext("dead-letter append");
  if (dead_lettered) return CommitForCaller(seq);
  return Status::Ok();
}

Status ConsumerGroupsImpl::Seek(const std::string& topic, const std::string& group,
                                const SeekTarget& target) {
  CONVERGE_ASSIGN_OR_RETURN(std::shared_ptr<Group> g, Lookup(topic, group));
  const uint32_t count = static_cast<uint32_t>(g->partitions.size());  // fixed at creation
  if (target.partition.has_value() && *target.partition >= count) {
    return InvalidArgumentError("partition " + std::to_string(*target.partition) +
                                " does not exist in topic '" + topic + "'");
  }
  CONVERGE_ASSIGN_OR_RETURN(TopicInfo info, log_.DescribeTopic(topic));
  std::vector<PartitionInfo> parts = ByPartition(info);
  std::vector<std::pair<uint32_t, uint64_t>> targets;
  for (uint32_t p = 0; p < count && p < parts.size(); ++p) {
    if (target.partition.has_value() && *target.partition != p) continue;
    StartPosition start = StartPosition::kOffset;
    switch (target.kind) {
      case SeekTarget::Kind::kEarliest:
        start = StartPosition::kEarliest;
        break;
      case SeekTarget::Kind::kLatest:
        start = StartPosition::kLatest;
        break;
      case SeekTarget::Kind::kOffset:
        start = StartPosition::kOffset;
        break;
      case SeekTarget::Kind::kTime:
        start = StartPosition::kTime;
        break;
    }
    CONVERGE_ASSIGN_OR_RETURN(
        uint64_t o, StartOffset(topic, parts[p], start, target.offset, target.time_micros));
    targets.emplace_back(p, o);
  }
  {
    // Journal-first: the new positions are written before any lease, delay or pending record
    // is dropped, so a refused seek changes nothing.
    std::lock_guard<std::mutex> journal_lock(journal_mu_);
    CONVERGE_RETURN_IF_ERROR(ReadyJournalLocked());
    CONVERGE_GROUP_LOCK(g);
    std::string data;
    for (const auto& [p, offset] : targets) {
      PartitionRecord r;
      r.group_id = g->id;
      r.partition = p;
      r.committed = offset;
      internal::groups::EncodePartition(r, &data);
    }
    CONVERGE_RETURN_IF_ERROR(AppendAheadLocked(data));
    for (const auto& [p, offset] : targets) {
      PartitionState& ps = *g->partitions[p];
      ps.window.ForEach([&](WindowEntry& e) {
        if (e.state == EntryState::kLeased) g->LeaseEnded(e.member);
      });
      ps.window.Reset(offset);
      ps.last_error.clear();
      // Acks still waiting for their journal write were superseded by the seek: a later
      // record of this partition must not carry them above the new position.
      ps.ack_intents.clear();
    }
  }
  g->Notify();
  return Status::Ok();
}

// ---------------------------------------------------------------------------------------
// Inspection

Result<GroupDescription> ConsumerGroupsImpl::DescribeGroup(const std::string& topic,
                                                           const std::string& group) {
  CONVERGE_ASSIGN_OR_RETURN(std::shared_ptr<Group> g, Lookup(topic, group));
  CONVERGE_ASSIGN_OR_RETURN(TopicInfo info, log_.DescribeTopic(topic));
  std::vector<PartitionInfo> parts = ByPartition(info);
  uint64_t dl_start = 0, dl_end = 0;
  if (auto dl = log_.DescribeTopic(g->dead_letter_topic); dl.ok() && !dl->partitions.empty()) {
    const PartitionInfo p0 = ByPartition(*dl)[0];
    dl_start = p0.start_offset;
    dl_end = p0.end_offset;
  }
  GroupDescription d;
  bool ready;
  Wakes wakes;
  {
    CONVERGE_GROUP_LOCK(g);
    const int64_t now = NowNs();
    ready = g->ExpireSessions(now);
    d.topic = g->topic;
    d.group = g->name;
    d.options = g->options;
    d.generation = g->generation;
    d.dead_letter_topic = g->dead_letter_topic;
    for (const auto& [member_id, slot] : g->by_id) {
      const Member& m = g->members[slot];
      d.members.push_back(MemberDescription{m.id, m.partitions, m.in_flight,
                                            (now - m.last_seen_ns) / kNanosPerMilli});
    }
    for (uint32_t p = 0; p < g->partitions.size(); ++p) {
      const PartitionState& ps = *g->partitions[p];
      const PartitionWindow& w = ps.window;
      PartitionDescription pd;
      pd.partition = p;
      pd.committed = w.committed();
      if (p < parts.size()) {
        pd.end_offset = parts[p].end_offset;
        const uint64_t from = std::max(pd.committed, parts[p].start_offset);
        pd.lag = pd.end_offset > from ? pd.end_offset - from : 0;
      }
      pd.in_flight = w.in_flight();
      pd.pending = static_cast<uint32_t>(w.pending());
      pd.delayed = w.delayed();
      pd.acked_above_committed = w.done_above_committed();
      pd.dead_letter_pending = w.dead_letter_pending();
      if (ps.owner != kNoMember) pd.member = g->members[ps.owner].id;
      pd.last_error = ps.last_error;
      pd.damaged_skipped = ps.damaged_skipped;
      pd.lost_beyond_end = ps.lost_beyond_end;
      d.total_lag += pd.lag;
      d.partitions.push_back(std::move(pd));
    }
    d.dead_letters = dl_end - dl_start;
    d.dead_letters_replayed = RangesCount(g->replayed, dl_start, dl_end);
    wakes = g->TakeWakes();
  }
  g->Notify(std::move(wakes), ready);
  return d;
}

Result<DeadLetterPage> ConsumerGroupsImpl::ListDeadLetters(const std::string& topic,
                                                           const std::string& group,
                                                           uint64_t from_offset, uint32_t max) {
  CONVERGE_ASSIGN_OR_RETURN(std::shared_ptr<Group> g, Lookup(topic, group));
  max = std::min(max, options_.list_max_records);
  Ranges replayed;
  {
    CONVERGE_GROUP_LOCK(g);
    replayed = g->replayed;
  }
  DeadLetterPage page;
  uint64_t offset = from_offset;
  while (page.dead_letters.size() < max) {
    CONVERGE_ASSIGN_OR_RETURN(
        ReadBatch batch, log_.Read(g->dead_letter_topic, 0, offset, max - page.dead_letters.size(),
                                   options_.fetch_max_bytes));
    if (batch.records.empty()) {
      offset = std::max(offset, batch.next_offset);
      break;
    }
    for (const StoredRecord& r : batch.records) {
      DeadLetterFields f;
      if (!internal::groups::DecodeDeadLetter(r.value, &f)) {
        return DataLossError("dead letter at offset " + std::to_string(r.offset) + " of '" +
                             g->dead_letter_topic + "' cannot be decoded");
      }
      DeadLetter& dl = page.dead_letters.emplace_back();
      dl.dead_letter_offset = r.offset;
      dl.topic = f.topic;
      dl.partition = f.partition;
      dl.offset = f.offset;
      dl.delivery_count = f.delivery_count;
      dl.reason = f.reason;
      dl.last_error = f.last_error;
      dl.dead_lettered_at_micros = f.dead_lettered_at_micros;
      dl.permanent = f.permanent;
      dl.replayed = internal::groups::InRanges(replayed, r.offset);
      dl.id = f.id;
      dl.key = f.key;
      dl.value = f.value;
      dl.timestamp_micros = f.timestamp_micros;
    }
    offset = batch.next_offset;
  }
  page.next_offset = offset;
  CONVERGE_ASSIGN_OR_RETURN(TopicInfo info, log_.DescribeTopic(g->dead_letter_topic));
  if (!info.partitions.empty()) page.end_offset = ByPartition(info)[0].end_offset;
  return page;
}

Result<ReplayResult> ConsumerGroupsImpl::ReplayDeadLetters(const std::string& topic,
                                                           const std::string& group,
                                                           const ReplayOptions& options) {
  CONVERGE_ASSIGN_OR_RETURN(std::shared_ptr<Group> g, Lookup(topic, group));
  const uint32_t max = std::clamp<uint32_t>(options.max_records, 1, options_.replay_max_records);
  Ranges replayed;
  {
    CONVERGE_GROUP_LOCK(g);
    replayed = g->replayed;
  }
  struct Candidate {
    uint64_t dl_offset;
    DeadLetterFields fields;
  };
  std::vector<Candidate> candidates;
  std::vector<std::shared_ptr<const void>> storage;
  ReplayResult result;
  uint64_t offset = options.from_offset;
  bool done = false;
  // Skipping already-replayed dead letters is work too: bounded per call.
  uint64_t scan_budget = uint64_t{options_.replay_max_records} * 10;
  while (!done && offset < options.to_offset && scan_budget > 0) {
    const size_t want = std::min<uint64_t>(max - candidates.size(), scan_budget);
    CONVERGE_ASSIGN_OR_RETURN(ReadBatch batch, log_.Read(g->dead_letter_topic, 0, offset, want,
                                                         options_.fetch_max_bytes));
    if (batch.records.empty()) {
      offset = std::max(offset, batch.next_offset);
      break;
    }
    storage.push_back(batch.storage);
    for (const StoredRecord& r : batch.records) {
      if (r.offset >= options.to_offset) {
        done = true;
        break;
      }
      offset = r.offset + 1;
      --scan_budget;
      if (!options.include_replayed && internal::groups::InRanges(replayed, r.offset)) {
        ++result.skipped_already_replayed;
        continue;
      }
      Candidate c{r.offset, {}};
      if (!internal::groups::DecodeDeadLetter(r.value, &c.fields)) {
        return DataLossError("dead letter at offset " + std::to_string(r.offset) + " of '" +
                             g->dead_letter_topic + "' cannot be decoded");
      }
      candidates.push_back(c);
      if (candidates.size() >= max) {
        done = true;
        break;
      }
      if (scan_budget == 0) break;
    }
    if (!done && scan_budget > 0) offset = std::max(offset, batch.next_offset);
  }
  result.next_offset = offset;
  if (candidates.empty()) return result;

  // The marks must fit in their bound once added.
  Ranges trial = replayed;
  for (const Candidate& c : candidates) AddRange(&trial, c.dl_offset, c.dl_offset + 1);
  if (trial.size() > options_.max_replayed_ranges) {
    return ResourceExhaustedError("group '" + group + "' would remember more than " +
                                  std::to_string(options_.max_replayed_ranges) +
                                  " replayed ranges; replay contiguous ranges");
  }

  const bool to_origin = options.target_topic.empty();
  const std::string& target = to_origin ? g->topic : options.target_topic;
  std::vector<std::string> ids;
  ids.reserve(candidates.size());
  // A dead letter replayed before is asked for again (include_replayed): under its usual id the
  // Log would take it for a retry and append nothing, so it gets one unique to this call.
  std::string again;
  for (const Candidate& c : candidates) {
    std::string id = "replay." + g->name + "." + std::to_string(c.dl_offset);
    if (internal::groups::InRanges(replayed, c.dl_offset)) {
      if (again.empty()) {
        static constexpr char kHex[] = "0123456789abcdef";
        const uint64_t nonce = env_.random().Next64();
        again.push_back('.');
        for (int shift = 60; shift >= 0; shift -= 4) again.push_back(kHex[(nonce >> shift) & 0xF]);
      }
      id += again;
    }
    ids.push_back(std::move(id));
  }
  size_t appended = 0;
  Status error;
  while (appended < candidates.size()) {
    // Consecutive candidates of one original partition (to the origin) or a chunk (elsewhere).
    size_t end = appended + 1;
    while (
        end < candidates.size() && end - appended < kDeadLetterAppendChunk &&
        (!to_origin || candidates[end].fields.partition == candidates[appended].fields.partition)) {
      ++end;
    }
    std::vector<RecordView> views;
    views.reserve(end - appended);
    for (size_t i = appended; i < end; ++i) {
      views.push_back(RecordView{ids[i], candidates[i].fields.key, candidates[i].fields.value, 0});
    }
    auto r = to_origin
                 ? log_.AppendToPartition(target, candidates[appended].fields.partition, views)
                 : log_.Append(target, views);
    if (!r.ok()) {
      error = r.status().WithContext("replaying dead letters to '" + target + "'");
      break;
    }
    for (const AppendResult& a : *r) ++(a.duplicate ? result.deduplicated : result.replayed);
    appended = end;
  }
  if (appended < candidates.size()) result.next_offset = candidates[appended].dl_offset;
  if (appended > 0) {
    // Journal-first: the marks are applied only once the journal holds them. When it refuses
    // them, the call fails and nothing is marked; the records are in the target already, and a
    // retry finds them there (the Log's idempotent publish) instead of appending them again.
    std::lock_guard<std::mutex> journal_lock(journal_mu_);
    CONVERGE_RETURN_IF_ERROR(ReadyJournalLocked());
    CONVERGE_GROUP_LOCK(g);
    Ranges marked = g->replayed;
    for (size_t i = 0; i < appended; ++i) {
      AddRange(&marked, candidates[i].dl_offset, candidates[i].dl_offset + 1);
    }
    std::string data;
    internal::groups::EncodeReplayed(g->id, marked, &data);
    CONVERGE_RETURN_IF_ERROR(AppendAheadLocked(data).WithContext(
        "marking replayed dead letters (they were appended; a retry deduplicates them)"));
    g->replayed = std::move(marked);
  }
  if (!error.ok()) return error;
  return result;
}

// ---------------------------------------------------------------------------------------
// Waiting and time

template <typename Add>
Result<std::unique_ptr<ConsumerGroups::ReadyWatch>> ConsumerGroupsImpl::NewReadyWatch(
    const std::shared_ptr<Group>& g, const std::string& topic, Log::AppendCallback on_append,
    Add add) {
  if (ready_watches_.fetch_add(1) >= options_.max_ready_watches) {
    ready_watches_.fetch_sub(1);
    return ResourceExhaustedError("max_ready_watches (" +
                                  std::to_string(options_.max_ready_watches) + ") reached");
  }
  auto log_watch = log_.WatchAppends(topic, std::move(on_append));
  if (!log_watch.ok()) {
    ready_watches_.fetch_sub(1);
    return log_watch.status();
  }
  uint64_t watch_id;
  {
    std::lock_guard<std::mutex> lock(g->watch_mu);
    watch_id = g->next_watch_id++;
    add(*g, watch_id);
    g->watcher_count.store(g->watchers.size() + g->member_watchers.size());
  }
  return std::unique_ptr<ReadyWatch>(
      new ReadyWatchImpl(g, watch_id, std::move(log_watch).value(), &ready_watches_));
}

Result<std::unique_ptr<ConsumerGroups::ReadyWatch>> ConsumerGroupsImpl::WatchReady(
    const std::string& topic, const std::string& group, std::function<void()> fn) {
  CONVERGE_ASSIGN_OR_RETURN(std::shared_ptr<Group> g, Lookup(topic, group));
  auto on_append = [fn](uint32_t, uint64_t) { fn(); };
  return NewReadyWatch(g, topic, std::move(on_append), [&fn](Group& locked, uint64_t id) {
    locked.watchers.emplace_back(id, std::move(fn));
  });
}

Result<std::unique_ptr<ConsumerGroups::ReadyWatch>> ConsumerGroupsImpl::WatchReadyByMember(
    const std::string& topic, const std::string& group,
    std::function<void(std::string_view member)> fn) {
  CONVERGE_ASSIGN_OR_RETURN(std::shared_ptr<Group> g, Lookup(topic, group));
  // Records appended to a partition concern its owner only. The owner is read from the
  // group's owner table under the watch lock (a leaf), not under `mu`: an append must not wait
  // for a Fetch that is reading the log.
  std::weak_ptr<Group> weak = g;
  auto on_append = [weak, fn](uint32_t partition, uint64_t) {
    std::shared_ptr<Group> group = weak.lock();
    if (group == nullptr) return;
    std::string owner;
    {
      std::lock_guard<std::mutex> lock(group->watch_mu);
      if (partition < group->owner_ids.size()) owner = group->owner_ids[partition];
    }
    if (!owner.empty()) fn(owner);
  };
  return NewReadyWatch(g, topic, std::move(on_append), [&fn](Group& locked, uint64_t id) {
    locked.member_watchers.emplace_back(id, std::move(fn));
  });
}

Result<std::optional<int64_t>> ConsumerGroupsImpl::NextDueMonotonicNanos(const std::string& topic,
                                                                         const std::string& group) {
  CONVERGE_ASSIGN_OR_RETURN(std::shared_ptr<Group> g, Lookup(topic, group));
  CONVERGE_GROUP_LOCK(g);
  int64_t next = INT64_MAX;
  for (auto& ps : g->partitions) next = std::min(next, ps->window.NextDeadline());
  if (!g->by_id.empty()) next = std::min(next, g->next_session_check_ns);
  if (next == INT64_MAX) return std::optional<int64_t>();
  return std::optional<int64_t>(next);
}

Status ConsumerGroupsImpl::Tick() {
  const int64_t now = NowNs();
  std::vector<std::shared_ptr<Group>> all;
  {
    std::lock_guard<std::mutex> lock(mu_);
    all.reserve(groups_.size());
    for (auto& [key, g] : groups_) all.push_back(g);
  }
  for (auto& g : all) {
    bool ready = false;
    Wakes wakes;
    {
      std::lock_guard<std::mutex> lock(g->mu);
      if (g->deleted) continue;
      ready |= g->ExpireSessions(now);
      uint64_t seq = 0;
      for (uint32_t p = 0; p < g->partitions.size(); ++p) ready |= ProcessDue(*g, p, now, &seq);
      wakes = g->TakeWakes();
    }
    g->Notify(std::move(wakes), ready);
  }
  if (options_.commit_mode == CommitMode::kPeriodic) return MaybePeriodicFlush(now);
  bool needed = flush_failed_.load();
  if (!needed) {
    std::lock_guard<std::mutex> lock(dirty_mu_);
    needed = !dirty_.empty();
  }
  return needed ? FlushUpTo(mutation_seq_.load()) : Status::Ok();
}

#undef CONVERGE_GROUP_LOCK

}  // namespace
}  // namespace converge
