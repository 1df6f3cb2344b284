#include "groups/group.h"

#include <algorithm>

namespace converge::internal::groups {

Group::Group(uint64_t id_in, std::string topic_in, std::string name_in, GroupOptions options_in,
             std::string dead_letter_topic_in, const std::vector<uint64_t>& committed,
             uint64_t first_lease_id)
    : id(id_in),
      topic(std::move(topic_in)),
      name(std::move(name_in)),
      options(std::move(options_in)),
      dead_letter_topic(std::move(dead_letter_topic_in)),
      next_lease_id(first_lease_id == 0 ? 1 : first_lease_id) {
  const WindowLimits limits{options.max_pending_per_partition, options.max_deliveries};
  partitions.reserve(committed.size());
  for (uint64_t c : committed) partitions.push_back(std::make_unique<PartitionState>(c, limits));
}

Member* Group::FindMember(const std::string& member_id) {
  auto it = by_id.find(member_id);
  return it == by_id.end() ? nullptr : &members[it->second];
}

uint32_t Group::SlotOf(const std::string& member_id) const {
  auto it = by_id.find(member_id);
  return it == by_id.end() ? kNoMember : it->second;
}

uint32_t Group::AddMember(const std::string& member_id, int64_t now_ns) {
  uint32_t slot;
  if (!free_slots.empty()) {
    slot = free_slots.back();
    free_slots.pop_back();
  } else {
    slot = static_cast<uint32_t>(members.size());
    members.emplace_back();
  }
  Member& m = members[slot];
  m = Member{};
  m.id = member_id;
  m.last_seen_ns = now_ns;
  m.live = true;
  by_id.emplace(member_id, slot);
  const int64_t timeout_ns = options.session_timeout_ms * 1'000'000;
  next_session_check_ns = std::min(next_session_check_ns, now_ns + timeout_ns);
  Rebalance();
  return slot;
}

bool Group::RemoveMember(uint32_t slot, bool expire, int64_t now_ns, std::string_view why) {
  Member& m = members[slot];
  bool ready = false;
  std::vector<uint32_t> touched;  // partitions where the member's leases ended
  for (uint32_t p = 0; p < partitions.size(); ++p) {
    PartitionWindow& w = partitions[p]->window;
    if (expire) {
      if (w.ExpireMember(slot, now_ns, why) > 0) touched.push_back(p);
    } else if (w.ReleaseMember(slot) > 0) {
      ready = true;
      touched.push_back(p);
    }
  }
  by_id.erase(m.id);
  m = Member{};
  free_slots.push_back(slot);
  Rebalance();
  // After the rebalance: the partitions' new owners may fetch what was released.
  for (uint32_t p : touched) WakeOwner(p);
  return ready || expire;
}

bool Group::ExpireSessions(int64_t now_ns) {
  if (now_ns < next_session_check_ns) return false;
  const int64_t timeout_ns = options.session_timeout_ms * 1'000'000;
  std::vector<uint32_t> expired;
  int64_t next = INT64_MAX;
  for (const auto& [member_id, slot] : by_id) {
    const Member& m = members[slot];
    if (now_ns - m.last_seen_ns >= timeout_ns) {
      expired.push_back(slot);
    } else {
      next = std::min(next, m.last_seen_ns + timeout_ns);
    }
  }
  next_session_check_ns = next;
  bool ready = false;
  for (uint32_t slot : expired) ready |= RemoveMember(slot, /*expire=*/true, now_ns);
  return ready;
}

void Group::Rebalance() {
  ++generation;
  std::vector<uint32_t> order;
  std::vector<std::vector<uint32_t>> before;  // by position in `order`
  order.reserve(by_id.size());
  before.reserve(by_id.size());
  for (const auto& [member_id, slot] : by_id) {
    order.push_back(slot);
    before.push_back(std::move(members[slot].partitions));
    members[slot].partitions.clear();
  }
  std::vector<std::string> owners(partitions.size());
  for (uint32_t p = 0; p < partitions.size(); ++p) {
    if (order.empty()) {
      partitions[p]->owner = kNoMember;
      continue;
    }
    const uint32_t slot = order[p % order.size()];
    partitions[p]->owner = slot;
    members[slot].partitions.push_back(p);
    owners[p] = members[slot].id;
  }
  for (size_t i = 0; i < order.size(); ++i) {
    Member& m = members[order[i]];
    m.next_partition = 0;
    // Only members given partitions they did not have may find something new: with more
    // members than partitions, a join or leave changes the assignment of a few members, and
    // the others (owning nothing) are not woken for it.
    if (!m.partitions.empty() && m.partitions != before[i]) WakeSlot(order[i]);
  }
  std::lock_guard<std::mutex> lock(watch_mu);
  owner_ids.swap(owners);
}

void Group::WakeOwner(uint32_t p) {
  if (p < partitions.size() && partitions[p]->owner != kNoMember) WakeSlot(partitions[p]->owner);
}

void Group::WakeSlot(uint32_t slot) {
  // Bounded: past this many distinct wake-ups owed at once, waking everyone is as cheap.
  constexpr size_t kMaxMemberWakes = 256;
  if (wakes.all || watcher_count.load(std::memory_order_relaxed) == 0) return;
  if (slot >= members.size() || !members[slot].live) return;
  if (wakes.members.size() >= kMaxMemberWakes) {
    wakes.all = true;
    wakes.members.clear();
    return;
  }
  wakes.members.push_back(members[slot].id);
}

Assignment Group::AssignmentOf(uint32_t slot) const {
  Assignment a;
  a.generation = generation;
  a.partitions = members[slot].partitions;
  return a;
}

void Group::LeaseEnded(uint32_t slot) {
  if (slot < members.size() && members[slot].live && members[slot].in_flight > 0) {
    --members[slot].in_flight;
  }
}

void AddDone(std::vector<uint64_t> offsets, uint64_t* committed, Ranges* done) {
  std::sort(offsets.begin(), offsets.end());
  Ranges merged;
  merged.reserve(done->size() + offsets.size());
  auto add = [&](uint64_t begin, uint64_t end) {
    if (end <= *committed) return;
    begin = std::max(begin, *committed);
    if (!merged.empty() && begin <= merged.back().second) {
      merged.back().second = std::max(merged.back().second, end);
    } else {
      merged.emplace_back(begin, end);
    }
  };
  size_t i = 0;
  for (const auto& [begin, end] : *done) {
    for (; i < offsets.size() && offsets[i] < begin; ++i) add(offsets[i], offsets[i] + 1);
    add(begin, end);
  }
  for (; i < offsets.size(); ++i) add(offsets[i], offsets[i] + 1);
  // A done range that starts at the committed offset is more committed.
  size_t first = 0;
  while (first < merged.size() && merged[first].first <= *committed) {
    *committed = std::max(*committed, merged[first].second);
    ++first;
  }
  done->assign(merged.begin() + static_cast<ptrdiff_t>(first), merged.end());
}

void Group::Serialize(bool full, std::string* out) {
  if (deleted) {
    if (!full) EncodeDelete(id, out);
    return;
  }
  if (full || record_dirty) {
    GroupRecord r;
    r.group_id = id;
    r.topic = topic;
    r.group = name;
    r.options = options;
    r.dead_letter_topic = dead_letter_topic;
    r.committed.reserve(partitions.size());
    for (const auto& ps : partitions) r.committed.push_back(ps->window.committed());
    EncodeGroup(r, out);
  }
  for (uint32_t p = 0; p < partitions.size(); ++p) {
    PartitionState& ps = *partitions[p];
    if (full || ps.dirty) {
      PartitionRecord r;
      r.group_id = id;
      r.partition = p;
      r.committed = ps.window.committed();
      r.done = ps.window.DoneRanges();
      if (!ps.ack_intents.empty()) AddDone(ps.ack_intents, &r.committed, &r.done);
      EncodePartition(r, out);
    }
    ps.dirty = false;
  }
  if ((full || replayed_dirty) && !replayed.empty()) EncodeReplayed(id, replayed, out);
  record_dirty = false;
  replayed_dirty = false;
}

void Group::Notify() {
  if (watcher_count.load(std::memory_order_relaxed) == 0) return;
  std::lock_guard<std::mutex> lock(watch_mu);
  for (auto& [watch_id, fn] : watchers) fn();
  for (auto& [watch_id, fn] : member_watchers) fn(std::string_view());
}

void Group::Notify(Wakes w, bool any) {
  if (watcher_count.load(std::memory_order_relaxed) == 0) return;
  if (!any && !w.all && w.members.empty()) return;  // nobody to tell: no lock
  if (!w.all) {
    std::sort(w.members.begin(), w.members.end());
    w.members.erase(std::unique(w.members.begin(), w.members.end()), w.members.end());
  }
  std::lock_guard<std::mutex> lock(watch_mu);
  if (any) {
    for (auto& [watch_id, fn] : watchers) fn();
  }
  for (auto& [watch_id, fn] : member_watchers) {
    if (w.all) {
      fn(std::string_view());
      continue;
    }
    for (const std::string& member : w.members) fn(member);
  }
}

}  // namespace converge::internal::groups
