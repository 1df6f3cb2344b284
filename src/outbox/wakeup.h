// Wake-ups without sleeping: a Waker is an eventfd a worker thread blocks on (optionally
// together with another descriptor, e.g. a PostgreSQL socket for LISTEN/NOTIFY), and a
// process-wide registry lets writers of an SQLite outbox wake the relays of the same file
// after their commit.
//
// Thread-safety: Signal and Notify may be called from any thread; Wait from one thread.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "converge/env.h"

namespace converge::outbox_internal {

class Waker {
 public:
  Waker();
  ~Waker();
  Waker(const Waker&) = delete;
  Waker& operator=(const Waker&) = delete;

  // Makes the next (or current) Wait return. Signals before a Wait are not lost.
  void Signal();

  enum class WakeReason : uint8_t { kSignaled, kFdReady };
  // Blocks until Signal() or until `extra_fd` (if >= 0) is readable. Consumes the signal.
  WakeReason Wait(int extra_fd = -1);

 private:
  int fd_;
};

// Schedules `waker->Signal()` on the Env's executor after `delay_ns`; a timer that fires after
// the Waker is gone does nothing. Returns the timer id (Cancel it when no longer needed).
TimerId SignalAfter(Env& env, const std::shared_ptr<Waker>& waker, int64_t delay_ns);

// Relays register their Waker under the file name SQLite reports for the database they serve
// (sqlite3_db_filename: an absolute path);
// outbox writers Notify that path after each commit.
class WakeupRegistry {
 public:
  static WakeupRegistry& Global();

  // Registration handle; unregisters when destroyed.
  class Subscription {
   public:
    Subscription(WakeupRegistry* registry, std::string key, uint64_t id)
        : registry_(registry), key_(std::move(key)), id_(id) {}
    ~Subscription();
    Subscription(const Subscription&) = delete;
    Subscription& operator=(const Subscription&) = delete;

   private:
    WakeupRegistry* registry_;
    std::string key_;
    uint64_t id_;
  };

  std::unique_ptr<Subscription> Subscribe(const std::string& key, std::shared_ptr<Waker> waker);
  void Notify(const std::string& key);

 private:
  friend class Subscription;
  void Unsubscribe(const std::string& key, uint64_t id);

  std::mutex mu_;
  uint64_t next_id_ = 1;
  std::unordered_map<std::string, std::vector<std::pair<uint64_t, std::weak_ptr<Waker>>>> map_;
};

}  // namespace converge::outbox_internal
