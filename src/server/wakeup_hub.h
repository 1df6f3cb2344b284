// Lets coroutines wait, without polling, until something they watch changes (records became
// ready for a consumer group), a deadline passes, or the server shuts down.
//
// Contract: a waiter reads Generation(key) before looking at the state it waits on, then calls
// Wait(key, seen, deadline); a Notify(key) that happens after the read wakes it, so no change
// is missed. Notify is quick and never blocks (safe inside storage callbacks).
// Thread-safety: every function is thread-safe. Wait resumes on the caller's executor.
#pragma once

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
  // Wakes every waiter; later Waits return at once.
  void Shutdown();
  bool shut_down() const;

 private:
  struct Slot {
    uint64_t generation = 0;
    std::vector<std::shared_ptr<boost::asio::steady_timer>> waiters;
  };
  static void Wake(std::vector<std::shared_ptr<boost::asio::steady_timer>> timers);

  mutable std::mutex mu_;
  bool shutdown_ = false;
  std::unordered_map<std::string, Slot> slots_;
};

}  // namespace converge::server
