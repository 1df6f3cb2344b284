// Wake-ups across threads: a Waker runs its owner's callback (which posts the owner's next step
// to its lane, outbox/lane.h), and a process-wide registry lets writers of an SQLite outbox
// wake the relays of the same file after their commit.
//
// Thread-safety: Signal and Notify may be called from any thread.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

namespace converge::outbox_internal {

class Waker {
 public:
  // `fn` must be safe to call from any thread at any time while the Waker lives (it posts to a
  // LaneSlot, which drops the post when its owner has stopped).
  explicit Waker(std::function<void()> fn) : fn_(std::move(fn)) {}
  Waker(const Waker&) = delete;
  Waker& operator=(const Waker&) = delete;

  void Signal() const { fn_(); }

 private:
  std::function<void()> fn_;
};

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
