#include "groups/partition_window.h"

#include <algorithm>
#include <functional>

#include "converge/status.h"

namespace converge::internal::groups {

namespace {
uint64_t HashKey(std::string_view key) { return std::hash<std::string_view>{}(key); }
}  // namespace

PartitionWindow::PartitionWindow(uint64_t committed, WindowLimits limits)
    : limits_(limits), committed_(committed), read_offset_(committed) {}

void PartitionWindow::SetSkipRanges(std::vector<std::pair<uint64_t, uint64_t>> ranges) {
  skip_ = std::move(ranges);
  skip_pos_ = 0;
}

bool PartitionWindow::Skipped(uint64_t offset) {
  while (skip_pos_ < skip_.size() && skip_[skip_pos_].second <= offset) ++skip_pos_;
  if (skip_pos_ == skip_.size()) {
    if (!skip_.empty()) {
      skip_.clear();
      skip_pos_ = 0;
    }
    return false;
  }
  return skip_[skip_pos_].first <= offset;
}

bool PartitionWindow::IsKeyHead(const WindowEntry& e) const {
  if (!e.has_key) return true;
  auto it = keys_.find(e.key_hash);
  return it != keys_.end() && it->second.head == e.offset;
}

void PartitionWindow::PushReadyIfHead(WindowEntry* e) {
  if (!IsKeyHead(*e)) return;
  ready_.push_back(e->offset);
  std::push_heap(ready_.begin(), ready_.end(), std::greater<>());
}

bool PartitionWindow::AddRecords(const ReadBatch& batch) {
  bool any_ready = false;
  for (const StoredRecord& r : batch.records) {
    if (r.offset < read_offset_) continue;  // never re-add (defensive: the Log reads forward)
    read_offset_ = r.offset + 1;
    if (Skipped(r.offset)) continue;
    WindowEntry& e = entries_.emplace_back();
    e.offset = r.offset;
    e.record = r;
    e.storage = batch.storage;
    e.record_bytes = static_cast<uint32_t>(r.id.size() + r.key.size() + r.value.size());
    e.next_same_key = kNone;
    if (!r.key.empty()) {
      e.has_key = true;
      e.key_hash = HashKey(r.key);
      auto [it, inserted] = keys_.try_emplace(e.key_hash, KeyChain{e.offset, e.offset});
      if (!inserted) {
        WindowEntry* tail = Find(it->second.tail);
        CONVERGE_CHECK(tail != nullptr);
        tail->next_same_key = e.offset;
        it->second.tail = e.offset;
        continue;  // behind an earlier record of its key
      }
    }
    ready_.push_back(e.offset);
    std::push_heap(ready_.begin(), ready_.end(), std::greater<>());
    any_ready = true;
  }
  read_offset_ = std::max(read_offset_, batch.next_offset);
  AdvanceCommitted();
  return any_ready;
}

WindowEntry* PartitionWindow::Find(uint64_t offset) {
  if (entries_.empty() || offset < entries_.front().offset || offset >= read_offset_) {
    return nullptr;
  }
  const size_t guess = offset - entries_.front().offset;
  if (guess < entries_.size() && entries_[guess].offset == offset) return &entries_[guess];
  // Gaps (retention, skipped offsets) make the window sparse: binary search.
  auto it = std::lower_bound(entries_.begin(), entries_.end(), offset,
                             [](const WindowEntry& e, uint64_t o) { return e.offset < o; });
  if (it == entries_.end() || it->offset != offset) return nullptr;
  return &*it;
}

WindowEntry* PartitionWindow::PeekReady() {
  while (!ready_.empty()) {
    WindowEntry* e = Find(ready_.front());
    if (e != nullptr && e->state == EntryState::kReady && IsKeyHead(*e)) return e;
    std::pop_heap(ready_.begin(), ready_.end(), std::greater<>());
    ready_.pop_back();
  }
  return nullptr;
}

void PartitionWindow::Lease(WindowEntry* e, uint32_t member, uint64_t lease_id,
                            int64_t deadline_ns) {
  CONVERGE_CHECK(!ready_.empty() && ready_.front() == e->offset);
  std::pop_heap(ready_.begin(), ready_.end(), std::greater<>());
  ready_.pop_back();
  e->state = EntryState::kLeased;
  e->member = member;
  e->lease_id = lease_id;
  ++e->attempt;
  ++in_flight_;
  SetTimer(e, deadline_ns);
}

void PartitionWindow::ExtendLease(WindowEntry* e, int64_t deadline_ns) {
  CONVERGE_CHECK(e->state == EntryState::kLeased);
  SetTimer(e, deadline_ns);
}

void PartitionWindow::SetTimer(WindowEntry* e, int64_t deadline_ns) {
  e->deadline_ns = deadline_ns;
  e->timer_token = next_token_++;
  timers_.push_back(Timer{deadline_ns, e->offset, e->timer_token});
  std::push_heap(timers_.begin(), timers_.end(), TimerLater());
}

void PartitionWindow::MarkDone(WindowEntry* e) {
  e->state = EntryState::kDone;
  e->member = kNoMember;
  e->storage.reset();
  e->record = StoredRecord{e->offset, 0, {}, {}, {}};
  ++done_;
  if (!last_errors_.empty()) last_errors_.erase(e->offset);
}

bool PartitionWindow::Unchain(WindowEntry* e) {
  if (!e->has_key) return false;
  auto it = keys_.find(e->key_hash);
  CONVERGE_CHECK(it != keys_.end() && it->second.head == e->offset);
  if (e->next_same_key == kNone) {
    keys_.erase(it);
    return false;
  }
  it->second.head = e->next_same_key;
  WindowEntry* next = Find(e->next_same_key);
  CONVERGE_CHECK(next != nullptr);
  if (next->state != EntryState::kReady) return false;
  ready_.push_back(next->offset);
  std::push_heap(ready_.begin(), ready_.end(), std::greater<>());
  return true;
}

void PartitionWindow::AdvanceCommitted() {
  while (!entries_.empty() && entries_.front().state == EntryState::kDone) {
    entries_.pop_front();
    --done_;
  }
  committed_ = entries_.empty() ? read_offset_ : entries_.front().offset;
}

bool PartitionWindow::Ack(WindowEntry* e) {
  switch (e->state) {
    case EntryState::kLeased:
      --in_flight_;
      break;
    case EntryState::kDelayed:
      --delayed_;
      break;
    case EntryState::kDeadLetterPending:
      --dead_letter_pending_;
      break;
    case EntryState::kReady:
      // Only an entry that was delivered (and is therefore still the head of its key) may be
      // acked late; the caller checked the lease id.
      CONVERGE_CHECK(e->attempt > 0 && IsKeyHead(*e));
      break;
    case EntryState::kDone:
      return false;
  }
  MarkDone(e);
  const bool ready = Unchain(e);
  AdvanceCommitted();
  return ready;
}

bool PartitionWindow::EndLease(WindowEntry* e, bool failed, bool permanent, int64_t now_ns,
                               int64_t delay_ns) {
  CONVERGE_CHECK(e->state == EntryState::kLeased);
  --in_flight_;
  e->member = kNoMember;
  if (!failed) {
    --e->attempt;  // a released lease was not a failed delivery
  } else if (permanent || e->attempt >= limits_.max_deliveries) {
    e->state = EntryState::kDeadLetterPending;
    e->permanent = permanent;
    ++dead_letter_pending_;
    SetTimer(e, now_ns);
    return false;
  }
  if (delay_ns > 0) {
    e->state = EntryState::kDelayed;
    ++delayed_;
    SetTimer(e, now_ns + delay_ns);
    return false;
  }
  e->state = EntryState::kReady;
  e->timer_token = 0;
  PushReadyIfHead(e);
  return true;
}

bool PartitionWindow::DeadLettered(WindowEntry* e) {
  CONVERGE_CHECK(e->state == EntryState::kDeadLetterPending);
  --dead_letter_pending_;
  MarkDone(e);
  const bool ready = Unchain(e);
  AdvanceCommitted();
  return ready;
}

void PartitionWindow::DeadLetterFailed(WindowEntry* e, int64_t retry_at_ns) {
  CONVERGE_CHECK(e->state == EntryState::kDeadLetterPending);
  SetTimer(e, retry_at_ns);
}

bool PartitionWindow::ProcessDue(int64_t now_ns, std::vector<ExpiredLease>* expired,
                                 std::vector<WindowEntry*>* dead_letters) {
  bool any_ready = false;
  while (!timers_.empty() && timers_.front().deadline_ns <= now_ns) {
    const Timer t = timers_.front();
    std::pop_heap(timers_.begin(), timers_.end(), TimerLater());
    timers_.pop_back();
    WindowEntry* e = Find(t.offset);
    if (e == nullptr || e->timer_token != t.token) continue;
    switch (e->state) {
      case EntryState::kLeased: {
        expired->push_back(ExpiredLease{e->member, e->offset});
        if (last_errors_.find(e->offset) == last_errors_.end()) {
          last_errors_[e->offset] = "lease expired";
        }
        if (EndLease(e, /*failed=*/true, /*permanent=*/false, now_ns, 0)) any_ready = true;
        if (e->state == EntryState::kDeadLetterPending) {
          // Its timer (now) is in the heap too; collect it once, here.
          e->timer_token = 0;
          dead_letters->push_back(e);
        }
        break;
      }
      case EntryState::kDelayed:
        --delayed_;
        e->state = EntryState::kReady;
        e->timer_token = 0;
        if (IsKeyHead(*e)) {
          PushReadyIfHead(e);
          any_ready = true;
        }
        break;
      case EntryState::kDeadLetterPending:
        e->timer_token = 0;
        dead_letters->push_back(e);
        break;
      default:
        break;
    }
  }
  return any_ready;
}

int64_t PartitionWindow::NextDeadline() {
  while (!timers_.empty()) {
    const Timer& t = timers_.front();
    WindowEntry* e = Find(t.offset);
    if (e != nullptr && e->timer_token == t.token &&
        (e->state == EntryState::kLeased || e->state == EntryState::kDelayed ||
         e->state == EntryState::kDeadLetterPending)) {
      return t.deadline_ns;
    }
    std::pop_heap(timers_.begin(), timers_.end(), TimerLater());
    timers_.pop_back();
  }
  return INT64_MAX;
}

uint32_t PartitionWindow::ReleaseMember(uint32_t member) {
  uint32_t n = 0;
  for (WindowEntry& e : entries_) {
    if (e.state == EntryState::kLeased && e.member == member) {
      EndLease(&e, /*failed=*/false, /*permanent=*/false, 0, 0);
      ++n;
    }
  }
  return n;
}

uint32_t PartitionWindow::ExpireMember(uint32_t member, int64_t now_ns, std::string_view why) {
  uint32_t n = 0;
  for (WindowEntry& e : entries_) {
    if (e.state == EntryState::kLeased && e.member == member) {
      if (last_errors_.find(e.offset) == last_errors_.end()) {
        last_errors_[e.offset] = std::string(why);
      }
      // A dead-letter candidate gets a timer due now: the next ProcessDue collects it.
      EndLease(&e, /*failed=*/true, /*permanent=*/false, now_ns, 0);
      ++n;
    }
  }
  return n;
}

void PartitionWindow::Reset(uint64_t offset) {
  entries_.clear();
  keys_.clear();
  ready_.clear();
  timers_.clear();
  last_errors_.clear();
  skip_.clear();
  skip_pos_ = 0;
  committed_ = read_offset_ = offset;
  in_flight_ = delayed_ = dead_letter_pending_ = done_ = 0;
}

std::vector<std::pair<uint64_t, uint64_t>> PartitionWindow::DoneRanges() const {
  std::vector<std::pair<uint64_t, uint64_t>> out;
  if (done_ > 0 || (!entries_.empty() && entries_.size() < read_offset_ - committed_)) {
    uint64_t prev = committed_;
    for (const WindowEntry& e : entries_) {
      if (e.state == EntryState::kDone) continue;
      if (e.offset > prev) out.emplace_back(prev, e.offset);
      prev = e.offset + 1;
    }
    if (read_offset_ > prev) out.emplace_back(prev, read_offset_);
  }
  for (size_t i = skip_pos_; i < skip_.size(); ++i) {
    const uint64_t begin = std::max(skip_[i].first, read_offset_);
    if (begin >= skip_[i].second) continue;
    if (!out.empty() && out.back().second == begin) {
      out.back().second = skip_[i].second;
    } else {
      out.emplace_back(begin, skip_[i].second);
    }
  }
  return out;
}

std::string_view PartitionWindow::LastError(uint64_t offset) const {
  auto it = last_errors_.find(offset);
  return it == last_errors_.end() ? std::string_view() : std::string_view(it->second);
}

void PartitionWindow::SetLastError(uint64_t offset, std::string_view error) {
  last_errors_[offset] = std::string(error);
}

}  // namespace converge::internal::groups
