// Runs blocking calls (storage: Log::Append waits for fsync) off the HTTP io threads and
// resumes the calling coroutine on its own executor when they finish.
//
// Why: an io thread blocked in fsync stalls every connection it serves, and with one io
// thread nothing would share a group commit. Running appends on a small pool lets concurrent
// publishers block together on one sync while the io threads keep parsing requests.
//
// Contract: `co_await pool.Run(job)` calls job() once on a pool thread and returns its value
// (which must not be void) to the coroutine, resumed on the coroutine's executor. The pool's
// queue is bounded by the server's in-flight request limit, not here.
//
// GCC 12 caveat (seen with valgrind, reproduced in isolation): a closure or aggregate
// *temporary* inside a co_await full-expression is destroyed incorrectly (a double free of its
// captures). Always name the lambda first:
//     auto job = [..] { ... };
//     auto r = co_await pool.Run(std::move(job));
// For the same reason the initiation below is a class with user-provided constructors.
// Thread-safety: Run may be called from any coroutine on any executor.
#pragma once

#include <boost/asio/associated_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/execution.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/prefer.hpp>
#include <boost/asio/thread_pool.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <functional>
#include <memory>
#include <type_traits>
#include <utility>

namespace converge::server {

namespace internal {

template <typename Fn>
class PoolJob {
 public:
  using Value = std::invoke_result_t<Fn&>;
  static_assert(!std::is_void_v<Value>, "return a Status instead of void");

  PoolJob(boost::asio::thread_pool& pool, Fn fn)
      : pool_(&pool), fn_(std::make_shared<Fn>(std::move(fn))) {}
  PoolJob(const PoolJob& other) : pool_(other.pool_), fn_(other.fn_) {}
  PoolJob(PoolJob&& other) noexcept : pool_(other.pool_), fn_(std::move(other.fn_)) {}
  ~PoolJob() {}

  template <typename Handler>
  void operator()(Handler handler) {
    namespace asio = boost::asio;
    // The tracked executor keeps io_context::run() from returning while the job runs.
    auto work = asio::prefer(asio::get_associated_executor(handler),
                             asio::execution::outstanding_work.tracked);
    asio::post(*pool_, [h = std::move(handler), fn = fn_, work]() mutable {
      Value value = (*fn)();
      auto ex = asio::get_associated_executor(h, work);
      asio::post(ex, [h = std::move(h), v = std::move(value), work]() mutable {
        std::move(h)(std::move(v));
      });
    });
  }

 private:
  boost::asio::thread_pool* pool_;
  std::shared_ptr<Fn> fn_;
};

// Like PoolJob for a job that finishes later: fn(done) runs on a pool thread and the
// coroutine resumes with the value passed to `done`, which may be called from any thread,
// once, during fn or after it returned.
template <typename Value, typename Fn>
class PoolAsyncJob {
 public:
  PoolAsyncJob(boost::asio::thread_pool& pool, Fn fn)
      : pool_(&pool), fn_(std::make_shared<Fn>(std::move(fn))) {}
  PoolAsyncJob(const PoolAsyncJob& other) : pool_(other.pool_), fn_(other.fn_) {}
  PoolAsyncJob(PoolAsyncJob&& other) noexcept : pool_(other.pool_), fn_(std::move(other.fn_)) {}
  ~PoolAsyncJob() {}

  template <typename Handler>
  void operator()(Handler handler) {
    namespace asio = boost::asio;
    auto work = asio::prefer(asio::get_associated_executor(handler),
                             asio::execution::outstanding_work.tracked);
    // `done` is a std::function (copyable), so the handler is shared.
    auto shared = std::make_shared<Handler>(std::move(handler));
    asio::post(*pool_, [shared, fn = fn_, work]() mutable {
      (*fn)(std::function<void(Value)>([shared, work](Value value) mutable {
        auto ex = asio::get_associated_executor(*shared, work);
        asio::post(ex, [shared, v = std::move(value), work]() mutable {
          std::move (*shared)(std::move(v));
        });
      }));
    });
  }

 private:
  boost::asio::thread_pool* pool_;
  std::shared_ptr<Fn> fn_;
};

// The initiation of RunInline (a class for the GCC 12 reason above).
template <typename Value, typename Fn>
class InlineAsyncJob {
 public:
  explicit InlineAsyncJob(Fn fn) : fn_(std::make_shared<Fn>(std::move(fn))) {}
  InlineAsyncJob(const InlineAsyncJob& other) : fn_(other.fn_) {}
  InlineAsyncJob(InlineAsyncJob&& other) noexcept : fn_(std::move(other.fn_)) {}
  ~InlineAsyncJob() {}
  template <typename Handler>
  void operator()(Handler handler) {
    namespace asio = boost::asio;
    auto work = asio::prefer(asio::get_associated_executor(handler),
                             asio::execution::outstanding_work.tracked);
    auto shared = std::make_shared<Handler>(std::move(handler));
    (*fn_)(std::function<void(Value)>([shared, work](Value value) mutable {
      auto ex = asio::get_associated_executor(*shared, work);
      asio::post(ex, [shared, v = std::move(value), work]() mutable {
        std::move (*shared)(std::move(v));
      });
    }));
  }

 private:
  std::shared_ptr<Fn> fn_;
};

}  // namespace internal

class BlockingPool {
 public:
  explicit BlockingPool(size_t threads) : pool_(threads) {}
  ~BlockingPool() { pool_.join(); }
  BlockingPool(const BlockingPool&) = delete;
  BlockingPool& operator=(const BlockingPool&) = delete;

  template <typename Fn>
  auto Run(Fn fn) {
    using Value = std::invoke_result_t<Fn&>;
    return boost::asio::async_initiate<const boost::asio::use_awaitable_t<>&, void(Value)>(
        internal::PoolJob<Fn>(pool_, std::move(fn)), boost::asio::use_awaitable);
  }

  // `co_await pool.RunAsync<Value>(job)`: job(std::function<void(Value)> done) runs on a pool
  // thread; the coroutine resumes with what `done` is called with (once, from any thread).
  // For storage calls that complete asynchronously (Store::CommitAsync) so that a pool
  // thread is not held for each write waiting on a sync.
  template <typename Value, typename Fn>
  auto RunAsync(Fn fn) {
    return boost::asio::async_initiate<const boost::asio::use_awaitable_t<>&, void(Value)>(
        internal::PoolAsyncJob<Value, Fn>(pool_, std::move(fn)), boost::asio::use_awaitable);
  }

  // `co_await BlockingPool::RunInline<Value>(job)`: like RunAsync, but job(done) runs at once on
  // the calling coroutine's thread (it must not block; it may Post blocking work here).
  template <typename Value, typename Fn>
  static auto RunInline(Fn fn) {
    return boost::asio::async_initiate<const boost::asio::use_awaitable_t<>&, void(Value)>(
        internal::InlineAsyncJob<Value, Fn>(std::move(fn)), boost::asio::use_awaitable);
  }

  // Runs `task` on a pool thread (fire and forget).
  void Post(std::function<void()> task) { boost::asio::post(pool_, std::move(task)); }

  // Waits for queued jobs to finish; later Run calls are not allowed.
  void Join() { pool_.join(); }

 private:
  boost::asio::thread_pool pool_;
};

}  // namespace converge::server
