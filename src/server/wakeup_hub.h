// Lets coroutines wait, without polling, until something they watch changes (records became
// ready for a consumer group), a deadline passes, or the server shuts down.
//
// Contract: a waiter reads Generation(key) before looking at the state it waits on, then calls
// Wait(key, seen, deadline); a Notify(key) that happens after the read wakes it, so no change
// is missed. Notify is quick and never blocks (safe inside storage callbacks).
//
// A key may have named waiters (`sub`: a consumer group's member): Notify(key, sub) wakes only
// the waiters of (key, sub), so a change that concerns one member does not wake every member
// waiting on the group; Notify(key) wakes every waiter of the key, named or not. The same
// contract holds with Generation(key, sub) and Wait(key, sub, ...): a Notify(key, sub) or a
// Notify(key) after the read wakes the waiter. A waiter may rarely return early (its entry
// was dropped while it was between the read and the wait); it then looks again.
// Thread-safety: every function is thread-safe. Wait resumes on the caller's executor.
#pragma once

#include <algorithm>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

namespace converge::server {

class WakeupHub {
 public:
  using TimePoint = std::chrono::steady_clock::time_point;

  uint64_t Generation(const std::string& key);
  void Notify(const std::string& key);
  // Returns when Generation(key) != seen, at `deadline`, or at Shutdown.
  boost::asio::awaitable<void> Wait(const std::string& key, uint64_t seen, TimePoint deadline);

  // The same for the waiters of (key, sub). Generation(key, sub) makes an entry for `sub`;
  // entries without waiters are dropped when a key has more than about twice as many entries
  // as waiting subs (and at least kMinSweep), so their number stays bounded.
  uint64_t Generation(const std::string& key, const std::string& sub);
  void Notify(const std::string& key, const std::string& sub);
  boost::asio::awaitable<void> Wait(const std::string& key, const std::string& sub, uint64_t seen,
                                    TimePoint deadline);

  // Wakes every waiter; later Waits return at once.
  void Shutdown();
  bool shut_down() const;

  // How many (key, sub) entries exist (for tests of the bound).
  size_t SubEntries() const;

 private:
  using Timers = std::vector<std::shared_ptr<boost::asio::steady_timer>>;
  struct Sub {
    uint64_t generation = 0;
    Timers waiters;
  };
  struct Slot {
    uint64_t generation = 0;  // of the last Notify(key)
    Timers waiters;           // unnamed waiters
    std::unordered_map<std::string, Sub> subs;
    // The generation a sub without an entry has: at least that of every entry dropped.
    uint64_t floor = 0;
    size_t sweep_at = kMinSweep;  // drop idle entries when subs grows past this
  };
  static constexpr size_t kMinSweep = 1024;
  static void Wake(Timers timers);
  // The entry of (slot, sub), made if missing (mu_ held).
  static Sub& SubOf(Slot& slot, const std::string& sub);
  // The generation a named waiter compares (mu_ held).
  static uint64_t GenerationOf(const Slot& slot, const Sub& sub) {
    return std::max(slot.generation, sub.generation);
  }

  mutable std::mutex mu_;
  bool shutdown_ = false;
  // Every notification takes the next value, so a generation never repeats for a key or sub.
  uint64_t counter_ = 0;
  std::unordered_map<std::string, Slot> slots_;
};

}  // namespace converge::server
