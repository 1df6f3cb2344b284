// The two lanes: a thread of its own (an eventfd and poll, so it can also watch a PostgreSQL
// socket while idle) and the Env's executor.
#include "outbox/lane.h"

#include <poll.h>
#include <pthread.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <deque>
#include <thread>

#include "converge/status.h"

namespace converge::outbox_internal {
namespace {

class ThreadLane final : public Lane {
 public:
  explicit ThreadLane(const std::string& name) : event_fd_(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) {
    CONVERGE_CHECK_MSG(event_fd_ >= 0, "eventfd failed");
    thread_ = std::thread([this, name] {
      pthread_setname_np(pthread_self(), name.substr(0, 15).c_str());
      Run();
    });
  }

  ~ThreadLane() override {
    Shutdown();
    close(event_fd_);
  }

  void Post(std::function<void()> fn) override {
    bool signal = false;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (stopped_) return;  // `fn` is destroyed outside the lock
      queue_.push_back(std::move(fn));
      signal = idle_;
    }
    if (signal) Signal();
  }

  void WatchFd(int fd, std::function<void()> fn) override {
    // Only the lane's thread reads these.
    watch_fd_ = fd;
    watch_fn_ = fd >= 0 ? std::move(fn) : nullptr;
  }

  void Shutdown() override {
    std::deque<std::function<void()>> dropped;
    {
      std::lock_guard<std::mutex> lock(mu_);
      stopped_ = true;
      dropped.swap(queue_);
    }
    Signal();
    if (thread_.joinable()) {
      // The owners (relay, consumer) shut their lane down from outside it, so a step never
      // holds the last reference.
      CONVERGE_CHECK_MSG(thread_.get_id() != std::this_thread::get_id(),
                         "a lane shut down from its own thread");
      thread_.join();
    }
  }

 private:
  void Signal() {
    uint64_t one = 1;
    // EAGAIN only if the counter would overflow, which still leaves it readable.
    ssize_t n = write(event_fd_, &one, sizeof(one));
    (void)n;
  }

  void Run() {
    for (;;) {
      std::function<void()> fn;
      {
        std::lock_guard<std::mutex> lock(mu_);
        if (stopped_) return;
        if (!queue_.empty()) {
          fn = std::move(queue_.front());
          queue_.pop_front();
        } else {
          idle_ = true;
        }
      }
      if (fn) {
        fn();
        continue;
      }
      pollfd fds[2];
      fds[0] = {event_fd_, POLLIN, 0};
      nfds_t n = 1;
      if (watch_fd_ >= 0) {
        fds[1] = {watch_fd_, POLLIN, 0};
        n = 2;
      }
      int rc = poll(fds, n, -1);
      {
        std::lock_guard<std::mutex> lock(mu_);
        idle_ = false;
      }
      if (rc < 0) {
        CONVERGE_CHECK_MSG(errno == EINTR, "poll failed");
        continue;
      }
      if (fds[0].revents & POLLIN) {
        uint64_t value;
        ssize_t r = read(event_fd_, &value, sizeof(value));
        (void)r;
      }
      if (n == 2 && fds[1].revents != 0) {
        std::function<void()> ready = std::move(watch_fn_);
        watch_fd_ = -1;
        watch_fn_ = nullptr;
        if (ready) ready();
      }
    }
  }

  const int event_fd_;
  std::mutex mu_;
  std::deque<std::function<void()>> queue_;  // guarded by mu_
  bool stopped_ = false;                     // guarded by mu_
  bool idle_ = false;                        // guarded by mu_: the thread is (about to be) in poll
  int watch_fd_ = -1;                        // lane thread only
  std::function<void()> watch_fn_;           // lane thread only
  std::thread thread_;
};

class ExecutorLane final : public Lane {
 public:
  explicit ExecutorLane(Executor& executor)
      : executor_(executor), alive_(std::make_shared<std::atomic<bool>>(true)) {}
  ~ExecutorLane() override { Shutdown(); }

  void Post(std::function<void()> fn) override {
    if (!alive_->load()) return;
    executor_.Post([alive = alive_, fn = std::move(fn)] {
      if (alive->load()) fn();
    });
  }

  // An executor has no descriptors to wait on (the simulated sources have none; a real one
  // falls back to its poll interval).
  void WatchFd(int /*fd*/, std::function<void()> /*fn*/) override {}

  void Shutdown() override { alive_->store(false); }

 private:
  Executor& executor_;
  std::shared_ptr<std::atomic<bool>> alive_;
};

}  // namespace

std::shared_ptr<Lane> NewThreadLane(const std::string& thread_name) {
  return std::make_shared<ThreadLane>(thread_name);
}

std::shared_ptr<Lane> NewExecutorLane(Executor& executor) {
  return std::make_shared<ExecutorLane>(executor);
}

void LaneSlot::Set(std::shared_ptr<Lane> lane) {
  std::lock_guard<std::mutex> lock(mu_);
  lane_ = std::move(lane);
}

std::shared_ptr<Lane> LaneSlot::Get() const {
  std::lock_guard<std::mutex> lock(mu_);
  return lane_;
}

void LaneSlot::Post(std::function<void()> fn) const {
  std::shared_ptr<Lane> lane = Get();
  if (lane != nullptr) lane->Post(std::move(fn));
}

}  // namespace converge::outbox_internal
