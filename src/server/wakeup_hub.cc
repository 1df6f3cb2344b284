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

void WakeupHub::Wake(std::vector<std::shared_ptr<asio::steady_timer>> timers) {
  // Cancel on the timer's own executor (the waiter's strand): timers are not thread-safe.
  for (auto& t : timers) {
    asio::post(t->get_executor(), [t] { t->cancel(); });
  }
}

void WakeupHub::Notify(const std::string& key) {
  std::vector<std::shared_ptr<asio::steady_timer>> timers;
  {
    std::lock_guard lock(mu_);
    Slot& slot = slots_[key];
    ++slot.generation;
    timers.swap(slot.waiters);
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

void WakeupHub::Shutdown() {
  std::vector<std::shared_ptr<asio::steady_timer>> timers;
  {
    std::lock_guard lock(mu_);
    shutdown_ = true;
    for (auto& [key, slot] : slots_) {
      ++slot.generation;
      for (auto& t : slot.waiters) timers.push_back(std::move(t));
      slot.waiters.clear();
    }
  }
  Wake(std::move(timers));
}

bool WakeupHub::shut_down() const {
  std::lock_guard lock(mu_);
  return shutdown_;
}

}  // namespace converge::server
