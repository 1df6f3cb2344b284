#include "server/wakeup_hub.h"

#include <algorithm>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

namespace converge::server {

namespace asio = boost::asio;

uint64_t WakeupHub::Generation(const std::string& key) {
  std::lock_guard lock(mu_);
  return slots_[key].generation;
}

void WakeupHub::Wake(Timers timers) {
  // Cancel on the timer's own executor (the waiter's strand): timers are not thread-safe.
  for (auto& t : timers) {
    asio::post(t->get_executor(), [t] { t->cancel(); });
  }
}

void WakeupHub::Notify(const std::string& key) {
  Timers timers;
  {
    std::lock_guard lock(mu_);
    Slot& slot = slots_[key];
    slot.generation = ++counter_;
    timers.swap(slot.waiters);
    for (auto& [name, sub] : slot.subs) {
      timers.insert(timers.end(), std::make_move_iterator(sub.waiters.begin()),
                    std::make_move_iterator(sub.waiters.end()));
      sub.waiters.clear();
    }
  }
  Wake(std::move(timers));
}

asio::awaitable<void> WakeupHub::Wait(const std::string& key, uint64_t seen, TimePoint deadline) {
  auto timer = std::make_shared<asio::steady_timer>(co_await asio::this_coro::executor, deadline);
  {
    std::lock_guard lock(mu_);
    Slot& slot = slots_[key];
    if (shutdown_ || slot.generation != seen) co_return;
    slot.waiters.push_back(timer);
  }
  co_await timer->async_wait(asio::as_tuple(asio::use_awaitable));
  std::lock_guard lock(mu_);
  auto& waiters = slots_[key].waiters;
  waiters.erase(std::remove(waiters.begin(), waiters.end(), timer), waiters.end());
}

WakeupHub::Sub& WakeupHub::SubOf(Slot& slot, const std::string& name) {
  auto it = slot.subs.find(name);
  if (it != slot.subs.end()) return it->second;
  if (slot.subs.size() >= slot.sweep_at) {
    // Entries nobody waits on (a member that went away, or one between requests) are dropped.
    // A sub without an entry has the floor's generation, at least that of every dropped
    // entry, so a waiter that read an entry's generation and waits after the drop still sees
    // any notification since (and at worst returns once too early).
    size_t waiting = 0;
    for (auto e = slot.subs.begin(); e != slot.subs.end();) {
      if (e->second.waiters.empty()) {
        slot.floor = std::max(slot.floor, e->second.generation);
        e = slot.subs.erase(e);
      } else {
        ++waiting;
        ++e;
      }
    }
    slot.sweep_at = std::max(kMinSweep, 2 * waiting);
  }
  Sub& sub = slot.subs[name];
  sub.generation = slot.floor;
  return sub;
}

uint64_t WakeupHub::Generation(const std::string& key, const std::string& sub) {
  std::lock_guard lock(mu_);
  Slot& slot = slots_[key];
  return GenerationOf(slot, SubOf(slot, sub));
}

void WakeupHub::Notify(const std::string& key, const std::string& name) {
  Timers timers;
  {
    std::lock_guard lock(mu_);
    Slot& slot = slots_[key];
    const uint64_t generation = ++counter_;
    auto it = slot.subs.find(name);
    if (it == slot.subs.end()) {
      // Nobody has read this sub's generation since its entry was dropped (or ever): the next
      // entry made starts above every generation read before.
      slot.floor = generation;
    } else {
      it->second.generation = generation;
      timers.swap(it->second.waiters);
    }
  }
  Wake(std::move(timers));
}

asio::awaitable<void> WakeupHub::Wait(const std::string& key, const std::string& name,
                                      uint64_t seen, TimePoint deadline) {
  auto timer = std::make_shared<asio::steady_timer>(co_await asio::this_coro::executor, deadline);
  {
    std::lock_guard lock(mu_);
    Slot& slot = slots_[key];
    Sub& sub = SubOf(slot, name);
    if (shutdown_ || GenerationOf(slot, sub) != seen) co_return;
    sub.waiters.push_back(timer);
  }
  co_await timer->async_wait(asio::as_tuple(asio::use_awaitable));
  std::lock_guard lock(mu_);
  Slot& slot = slots_[key];
  auto it = slot.subs.find(name);
  if (it == slot.subs.end()) co_return;  // woken and dropped since
  auto& waiters = it->second.waiters;
  waiters.erase(std::remove(waiters.begin(), waiters.end(), timer), waiters.end());
}

void WakeupHub::Shutdown() {
  Timers timers;
  {
    std::lock_guard lock(mu_);
    shutdown_ = true;
    for (auto& [key, slot] : slots_) {
      slot.generation = ++counter_;
      for (auto& t : slot.waiters) timers.push_back(std::move(t));
      slot.waiters.clear();
      for (auto& [name, sub] : slot.subs) {
        for (auto& t : sub.waiters) timers.push_back(std::move(t));
        sub.waiters.clear();
      }
    }
  }
  Wake(std::move(timers));
}

bool WakeupHub::shut_down() const {
  std::lock_guard lock(mu_);
  return shutdown_;
}

size_t WakeupHub::SubEntries() const {
  std::lock_guard lock(mu_);
  size_t n = 0;
  for (const auto& [key, slot] : slots_) n += slot.subs.size();
  return n;
}

}  // namespace converge::server
