// The production Executor: one background thread running a Boost.Asio io_context.
//
// Post and Schedule may be called from any thread; callbacks run on the executor thread, one at
// a time, in the order they become due (timers due at the same instant have no guaranteed
// order). Cancel is exact: it returns true if and only if the callback will never run.
// The TCP transport shares this io_context so its handlers run on the same thread.
//
// Destruction stops the thread and drops pending work without running it; it must not happen on
// the executor thread itself. (Env::Default()'s executor is never destroyed.)
#pragma once

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <thread>

#include "converge/env.h"

namespace converge::internal {

class AsioExecutor : public Executor {
 public:
  // Starts the executor thread.
  AsioExecutor();
  ~AsioExecutor() override;
  AsioExecutor(const AsioExecutor&) = delete;
  AsioExecutor& operator=(const AsioExecutor&) = delete;

  void Post(std::function<void()> fn) override;
  TimerId Schedule(int64_t delay_ns, std::function<void()> fn) override;
  bool Cancel(TimerId id) override;

  // The io_context run by the executor thread (for I/O objects such as sockets).
  boost::asio::io_context& io_context() { return io_; }
  // True when called from the executor thread.
  bool InExecutorThread() const { return std::this_thread::get_id() == thread_.get_id(); }

 private:
  struct PendingTimer {
    explicit PendingTimer(boost::asio::io_context& io) : timer(io) {}
    boost::asio::steady_timer timer;
    std::function<void()> fn;
  };
  void Fire(TimerId id);

  boost::asio::io_context io_;
  boost::asio::executor_work_guard<boost::asio::io_context::executor_type> work_;
  std::mutex mu_;
  TimerId next_id_ = 1;                                      // guarded by mu_
  std::map<TimerId, std::unique_ptr<PendingTimer>> timers_;  // guarded by mu_
  std::thread thread_;
};

}  // namespace converge::internal
