// Runs blocking calls (storage: Log::Append waits for fsync) off the HTTP io threads and
// resumes the calling coroutine on its own executor when they finish.
//
// Why: an io thread blocked in fsync stalls every connection it serves, and with one io
// thread nothing would share a group commit. Running appends on a small pool lets concurrent
// publishers block together on one sync while the io threads keep parsing requests.
//
// Contract: Run(fn) calls fn() once on a pool thread and returns its value to the coroutine.
// The pool's queue is bounded by the server's in-flight request limit, not here.
// Thread-safety: Run may be called from any coroutine on any executor.
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/associated_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/execution.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/prefer.hpp>
#include <boost/asio/thread_pool.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/this_coro.hpp>
#include <type_traits>
#include <utility>

namespace converge::server {

class BlockingPool {
 public:
  explicit BlockingPool(size_t threads) : pool_(threads) {}
  ~BlockingPool() { pool_.join(); }
  BlockingPool(const BlockingPool&) = delete;
  BlockingPool& operator=(const BlockingPool&) = delete;

  template <typename Fn>
  boost::asio::awaitable<std::invoke_result_t<Fn&>> Run(Fn fn) {
    namespace asio = boost::asio;
    using R = std::invoke_result_t<Fn&>;
    static_assert(!std::is_void_v<R>, "return a Status instead of void");
    auto ex = co_await asio::this_coro::executor;
    co_return co_await asio::async_initiate<const asio::use_awaitable_t<>&, void(R)>(
        [this, ex](auto handler, Fn f) {
          // The tracked executor keeps io_context::run() from returning while the job runs.
          auto work = asio::prefer(ex, asio::execution::outstanding_work.tracked);
          asio::post(pool_, [h = std::move(handler), f = std::move(f), work]() mutable {
            R result = f();
            auto hex = asio::get_associated_executor(h, work);
            asio::post(hex, [h = std::move(h), r = std::move(result), work]() mutable {
              std::move(h)(std::move(r));
            });
          });
        },
        asio::use_awaitable, std::move(fn));
  }

  // Posts a fire-and-forget job.
  template <typename Fn>
  void Post(Fn fn) {
    boost::asio::post(pool_, std::move(fn));
  }

  // Waits for queued jobs to finish; later Run calls are not allowed.
  void Join() { pool_.join(); }

 private:
  boost::asio::thread_pool pool_;
};

}  // namespace converge::server
