// The peers' side of the many-small-clients workload (`converge bench log --clients`): N
// connections on one thread (Boost.Asio coroutines), each sending one request and waiting
// for its reply before the next — Redis XADD over RESP, JetStream publish as a NATS request
// (PUB with a reply subject; the stream's ack is the reply).
#include "bench/many_clients.h"

#include <atomic>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/read_until.hpp>
#include <boost/asio/streambuf.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <mutex>
#include <string>

#include "bench/timing.h"
#include "support/http_load.h"

namespace converge::bench {
namespace {

namespace asio = boost::asio;
using asio::ip::tcp;

struct Run {
  uint64_t requests = 0;
  std::atomic<uint64_t> next{0};
  std::mutex mu;
  ManyClientsResult result;

  void Fail(const std::string& why) {
    std::lock_guard<std::mutex> lock(mu);
    ++result.errors;
    if (result.first_error.empty()) result.first_error = why;
  }
  void Done(uint64_t ok, const std::vector<int64_t>& latencies) {
    std::lock_guard<std::mutex> lock(mu);
    result.ok += ok;
    result.latencies_ns.insert(result.latencies_ns.end(), latencies.begin(), latencies.end());
  }
};

// One line ending in \r\n, without it.
asio::awaitable<std::string> ReadLine(tcp::socket& socket, asio::streambuf& buf) {
  const size_t n = co_await asio::async_read_until(socket, buf, "\r\n", asio::use_awaitable);
  std::string line(asio::buffers_begin(buf.data()), asio::buffers_begin(buf.data()) + n - 2);
  buf.consume(n);
  co_return line;
}

// `n` bytes and the \r\n after them.
asio::awaitable<std::string> ReadPayload(tcp::socket& socket, asio::streambuf& buf, size_t n) {
  if (buf.size() < n + 2) {
    co_await asio::async_read(socket, buf, asio::transfer_at_least(n + 2 - buf.size()),
                              asio::use_awaitable);
  }
  std::string payload(asio::buffers_begin(buf.data()), asio::buffers_begin(buf.data()) + n);
  buf.consume(n + 2);
  co_return payload;
}

asio::awaitable<void> RespClient(Run& run, tcp::endpoint endpoint,
                                 const std::function<std::string(uint64_t)>& command) {
  tcp::socket socket(co_await asio::this_coro::executor);
  asio::streambuf buf;
  std::vector<int64_t> latencies;
  uint64_t ok = 0;
  try {
    co_await socket.async_connect(endpoint, asio::use_awaitable);
    socket.set_option(tcp::no_delay(true));
    while (true) {
      const uint64_t seq = run.next.fetch_add(1);
      if (seq >= run.requests) break;
      const std::string request = command(seq);
      const int64_t start = NowNanos();
      co_await asio::async_write(socket, asio::buffer(request), asio::use_awaitable);
      std::string line = co_await ReadLine(socket, buf);
      if (!line.empty() && line[0] == '$') {
        co_await ReadPayload(socket, buf, std::stoul(line.substr(1)));
      } else if (line.empty() || line[0] == '-') {
        run.Fail(std::string("redis: ").append(line));
        continue;
      }
      latencies.push_back(NowNanos() - start);
      ++ok;
    }
  } catch (const std::exception& e) {
    run.Fail(std::string("redis client: ") + e.what());
  }
  run.Done(ok, latencies);
}

asio::awaitable<void> NatsClient(Run& run, tcp::endpoint endpoint, uint32_t index,
                                 const std::string& subject, const std::string& payload) {
  tcp::socket socket(co_await asio::this_coro::executor);
  asio::streambuf buf;
  std::vector<int64_t> latencies;
  uint64_t ok = 0;
  std::string inbox = "_INBOX.many.";
  inbox += std::to_string(index);
  try {
    co_await socket.async_connect(endpoint, asio::use_awaitable);
    socket.set_option(tcp::no_delay(true));
    std::string info = co_await ReadLine(socket, buf);  // INFO {...}
    if (info.rfind("INFO", 0) != 0) throw std::runtime_error(std::string("no INFO: ").append(info));
    std::string hello = "CONNECT {\"verbose\":false,\"pedantic\":false,\"echo\":false}\r\nSUB ";
    hello += inbox;
    hello += " 1\r\n";
    co_await asio::async_write(socket, asio::buffer(hello), asio::use_awaitable);
    std::string pub = "PUB ";
    pub += subject;
    pub += ' ';
    pub += inbox;
    pub += ' ';
    pub += std::to_string(payload.size());
    pub += "\r\n";
    pub += payload;
    pub += "\r\n";
    while (true) {
      const uint64_t seq = run.next.fetch_add(1);
      if (seq >= run.requests) break;
      const int64_t start = NowNanos();
      co_await asio::async_write(socket, asio::buffer(pub), asio::use_awaitable);
      // Wait for the stream's ack (MSG <inbox> 1 <n>), answering the server's PINGs.
      std::string ack;
      while (true) {
        std::string line = co_await ReadLine(socket, buf);
        if (line == "PING") {
          co_await asio::async_write(socket, asio::buffer(std::string("PONG\r\n")),
                                     asio::use_awaitable);
          continue;
        }
        if (line.rfind("MSG ", 0) == 0) {
          ack = co_await ReadPayload(socket, buf, std::stoul(line.substr(line.rfind(' ') + 1)));
          break;
        }
        if (line.rfind("-ERR", 0) == 0) throw std::runtime_error(line);
      }
      if (ack.find("\"error\"") != std::string::npos || ack.find("\"seq\"") == std::string::npos) {
        run.Fail(std::string("jetstream: ").append(ack));
        continue;
      }
      latencies.push_back(NowNanos() - start);
      ++ok;
    }
  } catch (const std::exception& e) {
    run.Fail(std::string("nats client: ") + e.what());
  }
  run.Done(ok, latencies);
}

template <typename Spawn>
ManyClientsResult RunClients(uint32_t clients, uint64_t requests, Spawn spawn) {
  testing::RaiseOpenFilesLimit();
  asio::io_context ioc(1);
  Run run;
  run.requests = requests;
  const int64_t start = NowNanos();
  for (uint32_t i = 0; i < clients; ++i) asio::co_spawn(ioc, spawn(run, i), asio::detached);
  ioc.run();
  run.result.elapsed_ns = NowNanos() - start;
  return std::move(run.result);
}

}  // namespace

ManyClientsResult RunRespClients(uint16_t port, uint32_t clients, uint64_t requests,
                                 const std::function<std::string(uint64_t)>& command) {
  const tcp::endpoint endpoint(asio::ip::make_address("127.0.0.1"), port);
  return RunClients(clients, requests, [&](Run& run, uint32_t) {
    return RespClient(run, endpoint, command);
  });
}

ManyClientsResult RunNatsRequestPublishers(uint16_t port, uint32_t clients, uint64_t requests,
                                           const std::string& subject,
                                           const std::string& payload) {
  const tcp::endpoint endpoint(asio::ip::make_address("127.0.0.1"), port);
  return RunClients(clients, requests, [&](Run& run, uint32_t i) {
    return NatsClient(run, endpoint, i, subject, payload);
  });
}

std::string RespCommand(std::initializer_list<std::string_view> args) {
  std::string out = "*";
  out += std::to_string(args.size());
  out += "\r\n";
  for (std::string_view a : args) {
    out += '$';
    out += std::to_string(a.size());
    out += "\r\n";
    out.append(a);
    out += "\r\n";
  }
  return out;
}

}  // namespace converge::bench
