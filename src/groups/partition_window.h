// PartitionWindow: the in-memory state of one partition of one consumer group.
//
// The window holds the records read from the Log and not yet committed: offsets in
// [committed, read_offset), each in one state (ready, leased, delayed, dead-letter pending,
// done). It enforces per-key order (a record is deliverable only while it is the earliest
// not-done record of its key) and hands out ready records in offset order. It does no I/O and
// reads no clock: the caller passes the time and the records, which makes it a plain state
// machine that tests drive directly.
//
// Not thread-safe: the owning group serializes access.
#pragma once

#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "converge/log.h"

namespace converge::internal::groups {

inline constexpr uint32_t kNoMember = UINT32_MAX;

enum class EntryState : uint8_t {
  kReady,              // waiting to be delivered (possibly behind an earlier record of its key)
  kLeased,             // leased to a member until deadline_ns
  kDelayed,            // nacked with a delay; ready again at deadline_ns
  kDeadLetterPending,  // to be appended to the dead-letter topic at deadline_ns
  kDone,               // acked or dead-lettered
};

struct WindowEntry {
  uint64_t offset = 0;
  int64_t deadline_ns = 0;   // lease expiry / delay end / dead-letter retry time
  uint64_t timer_token = 0;  // matches the deadline heap item that is current
  uint64_t lease_id = 0;     // current or last lease
  uint64_t key_hash = 0;
  uint64_t next_same_key = 0;   // offset of the next not-done record with this key, or kNone
  uint32_t attempt = 0;         // deliveries so far
  uint32_t member = kNoMember;  // lease holder while kLeased
  EntryState state = EntryState::kReady;
  bool has_key = false;
  bool permanent = false;     // dead-lettered by a consumer's permanent nack
  uint32_t record_bytes = 0;  // id + key + value
  StoredRecord record;
  std::shared_ptr<const void> storage;
};

struct WindowLimits {
  uint32_t max_pending = 10'000;
  uint32_t max_deliveries = 5;
};

// A lease that ended by time: the caller updates the member's in-flight count.
struct ExpiredLease {
  uint32_t member = kNoMember;
  uint64_t offset = 0;
};

class PartitionWindow {
 public:
  static constexpr uint64_t kNone = UINT64_MAX;

  PartitionWindow(uint64_t committed, WindowLimits limits);

  uint64_t committed() const { return committed_; }
  uint64_t read_offset() const { return read_offset_; }
  size_t pending() const { return entries_.size(); }
  uint32_t in_flight() const { return in_flight_; }
  uint32_t delayed() const { return delayed_; }
  uint32_t dead_letter_pending() const { return dead_letter_pending_; }
  uint32_t done_above_committed() const { return done_; }
  // True if there is room to read more records from the Log.
  bool CanRead() const { return entries_.size() < limits_.max_pending; }
  // How many records may be read now.
  size_t ReadRoom() const { return limits_.max_pending - entries_.size(); }

  // Offsets already acked before a restart: skipped when read. Sorted, disjoint [begin, end).
  void SetSkipRanges(std::vector<std::pair<uint64_t, uint64_t>> ranges);

  // Adds records read from the Log at read_offset(). `next_offset` is the batch's next_offset.
  // Returns true if any record became ready.
  bool AddRecords(const ReadBatch& batch);

  // The next deliverable record, or nullptr. Does not change its state.
  WindowEntry* PeekReady();
  // Leases the entry PeekReady returned.
  void Lease(WindowEntry* e, uint32_t member, uint64_t lease_id, int64_t deadline_ns);

  // Moves the expiry of a leased entry to `deadline_ns` (the old timer goes stale).
  void ExtendLease(WindowEntry* e, int64_t deadline_ns);

  // Finds a not-yet-committed entry.
  WindowEntry* Find(uint64_t offset);

  // Marks a delivered entry done: leased, or (a late ack whose lease was not superseded)
  // ready again, delayed or dead-letter pending. The caller checks the lease id. Returns true
  // if another record became ready.
  bool Ack(WindowEntry* e);
  // Ends a lease without success. `failed` counts the attempt: a failed end of the last allowed
  // delivery, or `permanent`, moves the entry to kDeadLetterPending due at `now_ns`. Otherwise
  // it becomes ready at once (delay 0) or at now_ns + delay_ns. Returns true if the entry is
  // ready now. `failed=false` (a released lease) gives the attempt back.
  bool EndLease(WindowEntry* e, bool failed, bool permanent, int64_t now_ns, int64_t delay_ns);
  // The dead-letter append for `e` succeeded: done. Returns true if another record became ready.
  bool DeadLettered(WindowEntry* e);
  // The append failed: retry at `retry_at_ns`.
  void DeadLetterFailed(WindowEntry* e, int64_t retry_at_ns);

  // Applies deadlines <= now_ns: expired leases (appended to `expired`; they end as failed
  // attempts), ended delays, and due dead-letter retries (appended to `dead_letters`, still in
  // kDeadLetterPending). Returns true if a record became ready.
  bool ProcessDue(int64_t now_ns, std::vector<ExpiredLease>* expired,
                  std::vector<WindowEntry*>* dead_letters);
  // The earliest pending deadline, or INT64_MAX.
  int64_t NextDeadline();

  // Releases every lease held by `member` (not counted as failed attempts). Returns the number
  // released.
  uint32_t ReleaseMember(uint32_t member);
  // Expires every lease held by `member` now (failed attempts; those at max_deliveries go to
  // kDeadLetterPending). `why` becomes the last error of entries that have none. Returns the
  // number expired.
  uint32_t ExpireMember(uint32_t member, int64_t now_ns,
                        std::string_view why = "member session expired");

  // Drops everything and restarts at `offset`.
  void Reset(uint64_t offset);

  // Done offsets above committed, as sorted disjoint ranges (window gaps included, plus skip
  // ranges not read yet): what must survive a restart besides committed().
  std::vector<std::pair<uint64_t, uint64_t>> DoneRanges() const;

  // Last error of an entry (nack reason), empty if none.
  std::string_view LastError(uint64_t offset) const;
  void SetLastError(uint64_t offset, std::string_view error);

  // Calls fn(entry) for each entry (offset order).
  template <typename Fn>
  void ForEach(Fn&& fn) {
    for (WindowEntry& e : entries_) fn(e);
  }

 private:
  struct Timer {
    int64_t deadline_ns;
    uint64_t offset;
    uint64_t token;
  };
  struct TimerLater {
    bool operator()(const Timer& a, const Timer& b) const { return a.deadline_ns > b.deadline_ns; }
  };
  struct KeyChain {
    uint64_t head;
    uint64_t tail;
  };

  bool IsKeyHead(const WindowEntry& e) const;
  // Removes a done entry (the head of its key) from its chain; returns the new head if it is
  // ready (and pushes it on the ready heap).
  bool Unchain(WindowEntry* e);
  void PushReadyIfHead(WindowEntry* e);
  void SetTimer(WindowEntry* e, int64_t deadline_ns);
  void MarkDone(WindowEntry* e);
  void AdvanceCommitted();
  bool Skipped(uint64_t offset);

  WindowLimits limits_;
  uint64_t committed_;
  uint64_t read_offset_;
  std::deque<WindowEntry> entries_;  // sorted by offset, offsets in [committed_, read_offset_)
  std::unordered_map<uint64_t, KeyChain> keys_;
  std::vector<uint64_t> ready_;  // min-heap of offsets (may hold stale items)
  std::vector<Timer> timers_;    // min-heap by deadline (may hold stale items)
  std::unordered_map<uint64_t, std::string> last_errors_;
  std::vector<std::pair<uint64_t, uint64_t>> skip_;  // sorted, disjoint
  size_t skip_pos_ = 0;
  uint64_t next_token_ = 1;
  uint32_t in_flight_ = 0;
  uint32_t delayed_ = 0;
  uint32_t dead_letter_pending_ = 0;
  uint32_t done_ = 0;
};

}  // namespace converge::internal::groups
