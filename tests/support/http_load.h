// Many concurrent keep-alive HTTP/1.1 connections driven by one or two threads (Boost.Asio
// coroutines, not a thread per client): the load of many small service instances, each
// sending one request and waiting for its reply before the next.
//
// RunHttpLoad opens `connections` connections to host:port; each sends requests made by
// `make_request(connection, seq)` (seq unique over the run, 0..requests-1) one at a time until
// `requests` were sent in total, and hands every reply to `on_reply` (which returns false for
// a reply it counts as an error). A connection that fails (refused, reset, timed out) counts
// its request as an error and ends. Latency is from the start of writing a request to the end
// of reading its reply.
//
// Thread-safety: make_request and on_reply are called from the load threads (concurrently
// when threads > 1).
#pragma once

#include <sys/resource.h>

#include <atomic>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>
#include <chrono>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace converge::testing {

struct HttpLoadOptions {
  std::string host = "127.0.0.1";
  uint16_t port = 0;
  // Non-empty: connection i goes to ports[i % ports.size()] instead (several servers).
  std::vector<uint16_t> ports;
  size_t connections = 64;
  uint64_t requests = 1000;
  unsigned threads = 1;
  std::function<boost::beast::http::request<boost::beast::http::string_body>(size_t connection,
                                                                           uint64_t seq)>
      make_request;
  std::function<bool(uint64_t seq, const boost::beast::http::response<
                                       boost::beast::http::string_body>& reply)>
      on_reply;
};

struct HttpLoadResult {
  uint64_t ok = 0;
  uint64_t errors = 0;
  std::string first_error;
  int64_t elapsed_ns = 0;
  std::vector<int64_t> latencies_ns;  // of the OK replies
};

namespace http_load_internal {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;

struct Shared {
  const HttpLoadOptions* options = nullptr;
  asio::ip::tcp::endpoint endpoint;
  std::atomic<uint64_t> next{0};
  std::mutex mu;
  HttpLoadResult result;
};

inline int64_t Now() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

inline void Fail(Shared& shared, const std::string& why) {
  std::lock_guard<std::mutex> lock(shared.mu);
  ++shared.result.errors;
  if (shared.result.first_error.empty()) shared.result.first_error = why;
}

inline asio::awaitable<void> RunConnection(Shared& shared, size_t index) {
  const HttpLoadOptions& o = *shared.options;
  auto executor = co_await asio::this_coro::executor;
  asio::ip::tcp::socket socket(executor);
  try {
    asio::ip::tcp::endpoint endpoint = shared.endpoint;
    if (!o.ports.empty()) endpoint.port(o.ports[index % o.ports.size()]);
    co_await socket.async_connect(endpoint, asio::use_awaitable);
    socket.set_option(asio::ip::tcp::no_delay(true));
  } catch (const std::exception& e) {
    if (shared.next.fetch_add(1) < o.requests) Fail(shared, std::string("connect: ").append(e.what()));
    co_return;
  }
  beast::flat_buffer buffer;
  std::vector<int64_t> latencies;
  uint64_t ok = 0;
  while (true) {
    const uint64_t seq = shared.next.fetch_add(1);
    if (seq >= o.requests) break;
    bhttp::request<bhttp::string_body> request = o.make_request(index, seq);
    request.keep_alive(true);
    request.prepare_payload();
    bhttp::response<bhttp::string_body> reply;
    const int64_t start = Now();
    try {
      co_await bhttp::async_write(socket, request, asio::use_awaitable);
      co_await bhttp::async_read(socket, buffer, reply, asio::use_awaitable);
    } catch (const std::exception& e) {
      Fail(shared, std::string("request: ").append(e.what()));
      break;
    }
    const int64_t took = Now() - start;
    if (o.on_reply && !o.on_reply(seq, reply)) {
      std::string why = "reply ";
      why += std::to_string(reply.result_int());
      why += ": ";
      why += reply.body();
      Fail(shared, why);
      continue;
    }
    latencies.push_back(took);
    ++ok;
  }
  boost::system::error_code ignored;
  socket.shutdown(asio::ip::tcp::socket::shutdown_both, ignored);
  std::lock_guard<std::mutex> lock(shared.mu);
  shared.result.ok += ok;
  shared.result.latencies_ns.insert(shared.result.latencies_ns.end(), latencies.begin(),
                                    latencies.end());
}

}  // namespace http_load_internal

// Raises the soft limit of open files to the hard limit (many connections need a descriptor
// each).
inline void RaiseOpenFilesLimit() {
  struct rlimit rl;
  if (::getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    ::setrlimit(RLIMIT_NOFILE, &rl);
  }
}

inline HttpLoadResult RunHttpLoad(const HttpLoadOptions& options) {
  namespace asio = boost::asio;
  using namespace http_load_internal;
  RaiseOpenFilesLimit();
  Shared shared;
  shared.options = &options;
  shared.endpoint = asio::ip::tcp::endpoint(asio::ip::make_address(options.host), options.port);
  asio::io_context ioc(static_cast<int>(std::max(1u, options.threads)));
  const int64_t start = Now();
  for (size_t i = 0; i < options.connections; ++i) {
    asio::co_spawn(asio::make_strand(ioc), RunConnection(shared, i), asio::detached);
  }
  std::vector<std::thread> extra;
  for (unsigned t = 1; t < options.threads; ++t) extra.emplace_back([&ioc] { ioc.run(); });
  ioc.run();
  for (auto& t : extra) t.join();
  shared.result.elapsed_ns = Now() - start;
  return std::move(shared.result);
}

}  // namespace converge::testing
