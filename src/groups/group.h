// Group: one consumer group's in-memory state (partitions, members, replay marks) and the
// pieces of logic that need no I/O: membership, session expiry, rebalancing, lease release,
// and serializing the durable part for the state journal.
//
// Thread-safety: every field except the watcher list is guarded by `mu`; callers hold it for
// every function here. The watcher list has its own leaf mutex so notifications can run after
// `mu` is released.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "converge/consumer_group.h"
#include "groups/codec.h"
#include "groups/partition_window.h"

namespace converge::internal::groups {

struct Member {
  std::string id;
  int64_t last_seen_ns = 0;
  uint32_t in_flight = 0;
  std::vector<uint32_t> partitions;
  size_t next_partition = 0;  // where the next Fetch starts, for fairness
  bool live = false;
};

struct PartitionState {
  PartitionState(uint64_t committed, WindowLimits limits) : window(committed, limits) {}
  PartitionWindow window;
  uint32_t owner = kNoMember;
  bool dirty = false;
  // Average stored bytes per record seen by reads (for sizing the next read's byte budget).
  uint64_t avg_record_bytes = 256;
  std::string last_error;
  uint64_t damaged_skipped = 0;  // see PartitionDescription
  uint64_t lost_beyond_end = 0;
  StatusCode read_error_code = StatusCode::kOk;  // of the read named in last_error
  uint64_t stopped_at = UINT64_MAX;  // where on_damage: stop last reported damage
  // Offsets whose completion is being written to the journal and not yet applied (journal-
  // first: kSync acks, and the commit of a dead letter appended by a kSync Nack; memory changes
  // only after the journal write succeeded, a refused one changes nothing). Serialize counts
  // them as done, so any record of this partition written meanwhile carries them too. A Seek
  // drops those of its partitions.
  std::vector<uint64_t> ack_intents;
};

// Whom a change concerns, gathered under the group's `mu` and told to the watchers once it is
// released (Group::Notify(Wakes, bool)).
struct Wakes {
  bool all = false;                  // any member's Fetch may find something new
  std::vector<std::string> members;  // these members' Fetch may (ids, maybe repeated)
};

// Adds `offsets` to the durable state (committed, done ranges above it): the state a journal
// record must carry once those offsets are acked.
void AddDone(std::vector<uint64_t> offsets, uint64_t* committed, Ranges* done);

class Group : public std::enable_shared_from_this<Group> {
 public:
  Group(uint64_t id, std::string topic, std::string name, GroupOptions options,
        std::string dead_letter_topic, const std::vector<uint64_t>& committed,
        uint64_t first_lease_id);

  std::mutex mu;
  const uint64_t id;
  const std::string topic;
  const std::string name;
  const GroupOptions options;
  const std::string dead_letter_topic;
  std::vector<std::unique_ptr<PartitionState>> partitions;
  std::vector<Member> members;  // by slot
  std::vector<uint32_t> free_slots;
  std::map<std::string, uint32_t> by_id;  // live members, sorted: the rebalance order
  uint64_t generation = 0;
  int64_t next_session_check_ns = INT64_MAX;
  uint64_t next_lease_id;
  Ranges replayed;  // dead-letter offsets marked replayed
  bool deleted = false;
  // Journal bookkeeping.
  bool record_dirty = false;  // the group record itself must be written (created)
  bool replayed_dirty = false;
  bool listed_dirty = false;  // queued on the owner's dirty list

  // Wake-ups owed by changes made under `mu` and not yet handed out (TakeWakes).
  Wakes wakes;

  // Watchers (leaf lock): run on every notification, or (member watchers) told which member a
  // notification concerns, "" for any.
  std::mutex watch_mu;
  std::vector<std::pair<uint64_t, std::function<void()>>> watchers;
  std::vector<std::pair<uint64_t, std::function<void(std::string_view)>>> member_watchers;
  std::atomic<size_t> watcher_count{0};  // of both lists
  uint64_t next_watch_id = 1;
  // The member id owning each partition ("" for none), kept by Rebalance for the topic's append
  // watch, which runs outside `mu`. (watch_mu)
  std::vector<std::string> owner_ids;

  // ---- membership (mu held) ----
  // The live member with this id, or nullptr.
  Member* FindMember(const std::string& member_id);
  uint32_t SlotOf(const std::string& member_id) const;
  // Adds a member; the caller checked max_members. Rebalances.
  uint32_t AddMember(const std::string& member_id, int64_t now_ns);
  // Removes a member. `expire`: its leases end as failed attempts (session expiry, Abandon;
  // `why` is the last error they get); otherwise they are released (Leave). Rebalances.
  // Returns true if records became ready.
  bool RemoveMember(uint32_t slot, bool expire, int64_t now_ns,
                    std::string_view why = "member session expired");
  // Removes members whose session ran out. Returns true if records became ready.
  bool ExpireSessions(int64_t now_ns);
  // Reassigns the partitions over the live members (sorted by id, round robin). Members whose
  // partitions changed and who own some now are owed a wake-up.
  void Rebalance();
  Assignment AssignmentOf(uint32_t slot) const;
  // A lease of `slot` ended: its in-flight count goes down.
  void LeaseEnded(uint32_t slot);

  // ---- wake-ups (mu held) ----
  // The owner of partition `p` (if any) may find something new.
  void WakeOwner(uint32_t p);
  // The live member in `slot` may find something new.
  void WakeSlot(uint32_t slot);
  // The wake-ups owed so far; clears them.
  Wakes TakeWakes() { return std::exchange(wakes, Wakes{}); }

  // ---- serialization (mu held) ----
  // Appends the records that capture this group's changes since the last call and clears the
  // dirty flags. `full`: everything (for a snapshot).
  void Serialize(bool full, std::string* out);

  // Runs the watchers; member watchers are told "" (any member). (mu NOT held)
  void Notify();
  // Tells member watchers the members in `w` ("" once if w.all), and runs the other watchers
  // if `any` (the notification they had before member watchers existed). (mu NOT held)
  void Notify(Wakes w, bool any);
};

}  // namespace converge::internal::groups
