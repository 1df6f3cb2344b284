// Waker on eventfd + poll; the in-process wake-up registry.
#include "outbox/wakeup.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>

namespace converge::outbox_internal {

Waker::Waker() : fd_(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) {
  CONVERGE_CHECK_MSG(fd_ >= 0, "eventfd failed");
}

Waker::~Waker() { close(fd_); }

void Waker::Signal() {
  uint64_t one = 1;
  // EAGAIN only if the counter would overflow, which still leaves it readable.
  ssize_t n = write(fd_, &one, sizeof(one));
  (void)n;
}

Waker::WakeReason Waker::Wait(int extra_fd) {
  for (;;) {
    pollfd fds[2];
    fds[0] = {fd_, POLLIN, 0};
    nfds_t n = 1;
    if (extra_fd >= 0) {
      fds[1] = {extra_fd, POLLIN, 0};
      n = 2;
    }
    int rc = poll(fds, n, -1);
    if (rc < 0) {
      if (errno == EINTR) continue;
      CONVERGE_CHECK_MSG(false, "poll failed");
    }
    if (fds[0].revents & POLLIN) {
      uint64_t value;
      ssize_t r = read(fd_, &value, sizeof(value));
      (void)r;
      return WakeReason::kSignaled;
    }
    if (n == 2 && fds[1].revents != 0) return WakeReason::kFdReady;
  }
}

TimerId SignalAfter(Env& env, const std::shared_ptr<Waker>& waker, int64_t delay_ns) {
  std::weak_ptr<Waker> weak = waker;
  return env.executor().Schedule(delay_ns, [weak] {
    if (auto w = weak.lock()) w->Signal();
  });
}

WakeupRegistry& WakeupRegistry::Global() {
  static WakeupRegistry* registry = new WakeupRegistry();
  return *registry;
}

std::unique_ptr<WakeupRegistry::Subscription> WakeupRegistry::Subscribe(
    const std::string& key, std::shared_ptr<Waker> waker) {
  std::lock_guard<std::mutex> lock(mu_);
  uint64_t id = next_id_++;
  map_[key].emplace_back(id, waker);
  return std::make_unique<Subscription>(this, key, id);
}

void WakeupRegistry::Notify(const std::string& key) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = map_.find(key);
  if (it == map_.end()) return;
  for (auto& [id, weak] : it->second) {
    if (auto w = weak.lock()) w->Signal();
  }
}

void WakeupRegistry::Unsubscribe(const std::string& key, uint64_t id) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = map_.find(key);
  if (it == map_.end()) return;
  auto& subs = it->second;
  for (size_t i = 0; i < subs.size(); ++i) {
    if (subs[i].first == id) {
      subs.erase(subs.begin() + static_cast<std::ptrdiff_t>(i));
      break;
    }
  }
  if (subs.empty()) map_.erase(it);
}

WakeupRegistry::Subscription::~Subscription() { registry_->Unsubscribe(key_, id_); }

}  // namespace converge::outbox_internal
