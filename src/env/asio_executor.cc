#include "env/asio_executor.h"

#include <algorithm>
#include <boost/asio/post.hpp>
#include <chrono>
#include <utility>

namespace converge::internal {

AsioExecutor::AsioExecutor()
    : work_(boost::asio::make_work_guard(io_)), thread_([this] { io_.run(); }) {}

AsioExecutor::~AsioExecutor() {
  work_.reset();
  io_.stop();
  if (thread_.joinable()) thread_.join();
  // Pending timers are destroyed before io_ (member order), their handlers never run.
}

void AsioExecutor::Post(std::function<void()> fn) { boost::asio::post(io_, std::move(fn)); }

TimerId AsioExecutor::Schedule(int64_t delay_ns, std::function<void()> fn) {
  std::lock_guard<std::mutex> lock(mu_);
  const TimerId id = next_id_++;
  auto pending = std::make_unique<PendingTimer>(io_);
  pending->fn = std::move(fn);
  pending->timer.expires_after(std::chrono::nanoseconds(std::max<int64_t>(delay_ns, 0)));
  pending->timer.async_wait([this, id](const boost::system::error_code&) { Fire(id); });
  timers_.emplace(id, std::move(pending));
  return id;
}

void AsioExecutor::Fire(TimerId id) {
  // The map, not the wait's error code, decides: a Cancel that raced with expiry removed the
  // entry, so the callback does not run even if the wait completed successfully.
  std::function<void()> fn;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = timers_.find(id);
    if (it == timers_.end()) return;
    fn = std::move(it->second->fn);
    timers_.erase(it);
  }
  fn();
}

bool AsioExecutor::Cancel(TimerId id) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = timers_.find(id);
  if (it == timers_.end()) return false;
  it->second->timer.cancel();
  timers_.erase(it);
  return true;
}

}  // namespace converge::internal
