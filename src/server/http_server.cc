#include "server/http_server.h"

#include <array>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <boost/json/serialize.hpp>
#include <boost/json/value.hpp>
#include <chrono>
#include <cstdio>

namespace converge::server {

namespace {

using asio::ip::tcp;
constexpr auto kTuple = asio::as_tuple(asio::use_awaitable);

std::chrono::milliseconds Ms(int64_t ms) { return std::chrono::milliseconds(ms); }

}  // namespace

// The timeouts of one connection, on its strand. A timer per read or write operation (as
// beast::tcp_stream arms) costs a timerfd syscall per chunk of a large body; this one moves a
// deadline in memory and touches the timer only when the deadline gets earlier than it is set
// for, or when it fires.
class Watchdog {
 public:
  using Clock = std::chrono::steady_clock;
  explicit Watchdog(asio::any_io_executor ex) : timer_(ex, Clock::now() + kFar) {}

  // Arms: the connection is closed unless Disarm or Arm is called within `ms`.
  void Arm(int64_t ms) {
    deadline_ = Clock::now() + Ms(ms);
    if (deadline_ < timer_.expiry()) timer_.expires_at(deadline_);  // wakes Run to re-wait
  }
  void Disarm() { deadline_ = Clock::time_point::max(); }

  // Runs until Stop; calls on_expire (once) when an armed deadline passes.
  asio::awaitable<void> Run(std::function<void()> on_expire) {
    while (!stopped_) {
      co_await timer_.async_wait(kTuple);  // aborted when re-armed earlier: just loop
      if (stopped_) break;
      const auto now = Clock::now();
      if (now >= deadline_) {
        on_expire();
        break;
      }
      if (timer_.expiry() <= now) {
        timer_.expires_at(deadline_ == Clock::time_point::max() ? now + kFar : deadline_);
      }
    }
  }
  void Stop() {
    stopped_ = true;
    timer_.cancel();
  }

 private:
  static constexpr std::chrono::hours kFar{24};
  asio::steady_timer timer_;
  Clock::time_point deadline_ = Clock::time_point::max();
  bool stopped_ = false;
};

HttpResponse JsonError(http::status status, std::string_view code, std::string_view message,
                       unsigned version) {
  HttpResponse res{status, version};
  res.set(http::field::content_type, "application/json");
  boost::json::object body;
  body["code"] = code;
  body["message"] = message;
  res.body() = boost::json::serialize(body);
  res.prepare_payload();
  return res;
}

// A live connection, as seen by shutdown. Fields are touched only on the connection's strand,
// except `executor` (immutable).
struct HttpServer::Connection {
  explicit Connection(asio::any_io_executor ex) : executor(ex), watchdog(ex) {}
  asio::any_io_executor executor;
  bool busy = false;            // a request is being handled or a stream is open
  std::function<void()> close;  // closes the socket; null once the session ended
  Watchdog watchdog;            // closes the socket when a phase overruns its timeout
};

HttpServer::HttpServer(asio::io_context& ioc, HttpServerOptions options, HttpHandler handler,
                       MetricsRegistry* metrics)
    : ioc_(ioc),
      options_(std::move(options)),
      handler_(std::move(handler)),
      acceptor_(ioc),
      drain_timer_(ioc) {
  connections_gauge_ = metrics->GetGauge("converge_http_connections", "Open HTTP connections.");
  inflight_gauge_ = metrics->GetGauge("converge_http_inflight_requests", "Requests being handled.");
  rejected_connections_ = metrics->GetCounter("converge_http_rejected_total",
                                              "Requests or connections refused by a limit.",
                                              {{"reason", "max_connections"}});
  rejected_inflight_ = metrics->GetCounter("converge_http_rejected_total",
                                           "Requests or connections refused by a limit.",
                                           {{"reason", "max_inflight_requests"}});
  rejected_too_large_ =
      metrics->GetCounter("converge_http_rejected_total",
                          "Requests or connections refused by a limit.", {{"reason", "too_large"}});
  bad_requests_ = metrics->GetCounter("converge_http_rejected_total",
                                      "Requests or connections refused by a limit.",
                                      {{"reason", "malformed_http"}});
}

HttpServer::~HttpServer() = default;

Status HttpServer::Listen() {
  if (!options_.tls_cert_file.empty()) {
    try {
      tls_.emplace(asio::ssl::context::tls_server);
      tls_->set_options(asio::ssl::context::default_workarounds | asio::ssl::context::no_sslv2 |
                        asio::ssl::context::no_sslv3 | asio::ssl::context::no_tlsv1 |
                        asio::ssl::context::no_tlsv1_1);
      tls_->use_certificate_chain_file(options_.tls_cert_file);
      tls_->use_private_key_file(options_.tls_key_file, asio::ssl::context::pem);
    } catch (const boost::system::system_error& e) {
      return InvalidArgumentError("TLS: cannot load " + options_.tls_cert_file + " / " +
                                  options_.tls_key_file + ": " + e.what());
    }
  }
  boost::system::error_code ec;
  auto address =
      asio::ip::make_address(options_.address == "localhost" ? "127.0.0.1" : options_.address, ec);
  if (ec) return InvalidArgumentError("bad listen address '" + options_.address + "'");
  tcp::endpoint endpoint(address, options_.port);
  acceptor_.open(endpoint.protocol(), ec);
  if (!ec) acceptor_.set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) acceptor_.bind(endpoint, ec);
  if (!ec) acceptor_.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) {
    return UnavailableError("cannot listen on " + options_.address + ":" +
                            std::to_string(options_.port) + ": " + ec.message());
  }
  port_ = acceptor_.local_endpoint().port();
  return Status::Ok();
}

void HttpServer::Start() { asio::co_spawn(acceptor_.get_executor(), AcceptLoop(), asio::detached); }

asio::awaitable<void> HttpServer::AcceptLoop() {
  asio::steady_timer backoff(acceptor_.get_executor());
  while (!draining_) {
    auto [ec, socket] = co_await acceptor_.async_accept(asio::make_strand(ioc_), kTuple);
    if (ec) {
      if (draining_ || ec == asio::error::operation_aborted || !acceptor_.is_open()) break;
      // Out of file descriptors and similar: back off briefly instead of spinning.
      backoff.expires_after(Ms(50));
      co_await backoff.async_wait(kTuple);
      continue;
    }
    if (connections_.load() >= options_.limits.max_connections) {
      rejected_connections_->Add();
      boost::system::error_code ignored;
      socket.close(ignored);
      continue;
    }
    socket.set_option(tcp::no_delay(true), ec);
    auto conn = std::make_shared<Connection>(socket.get_executor());
    Register(conn);
    if (tls_) {
      asio::co_spawn(conn->executor, RunTlsSession(std::move(socket), conn), asio::detached);
    } else {
      asio::co_spawn(conn->executor, RunSession(tcp::socket(std::move(socket)), conn),
                     asio::detached);
    }
  }
}

void HttpServer::StartWatchdog(const std::shared_ptr<Connection>& conn) {
  // The watchdog runs on the connection's strand, like the session.
  Connection* c = conn.get();
  auto job = [conn, c]() -> asio::awaitable<void> {
    std::function<void()> close = [c] {
      if (c->close) c->close();
    };
    co_await c->watchdog.Run(std::move(close));
  };
  asio::co_spawn(conn->executor, std::move(job), asio::detached);
}

asio::awaitable<void> HttpServer::RunTlsSession(tcp::socket socket,
                                                std::shared_ptr<Connection> conn) {
  beast::ssl_stream<tcp::socket> stream(std::move(socket), *tls_);
  conn->close = [&stream] {
    boost::system::error_code ignored;
    beast::get_lowest_layer(stream).close(ignored);
  };
  StartWatchdog(conn);
  conn->watchdog.Arm(options_.limits.request_timeout_ms);
  auto [ec] = co_await stream.async_handshake(asio::ssl::stream_base::server, kTuple);
  if (ec) {
    conn->watchdog.Stop();
    conn->close = nullptr;
    Unregister(conn);
    co_return;
  }
  co_await RunSession(std::move(stream), conn);
}

namespace {

// The TLS or TCP stream's socket, for closing.
template <class Stream>
tcp::socket& Lowest(Stream& s) {
  return beast::get_lowest_layer(s);
}

// A malformed request (as opposed to a closed, reset or timed-out connection).
bool IsParseError(const boost::system::error_code& ec) {
  static const boost::system::error_category& http_category =
      boost::beast::http::make_error_code(http::error::bad_method).category();
  return ec.category() == http_category && ec != http::error::end_of_stream &&
         ec != http::error::partial_message;
}

// Feeds the bytes already in `buffer` to `parser` (whose header is complete) until the message
// is done or more input is needed. A parse error (including body_limit) is returned as from
// http::async_read.
boost::system::error_code ParseBuffered(http::request_parser<http::string_body>& parser,
                                        beast::flat_buffer& buffer) {
  boost::system::error_code ec;
  while (!parser.is_done() && buffer.size() > 0) {
    const size_t used = parser.put(buffer.data(), ec);
    buffer.consume(used);
    if (ec == http::error::need_more) return {};
    if (ec) return ec;
    if (used == 0) break;
  }
  return {};
}

// The status line and header of a complete response, as a client receives them (the body is
// sent after it from the response itself).
void SerializeHeader(const HttpResponse& res, std::string* out) {
  out->clear();
  out->append(res.version() == 10 ? "HTTP/1.0 " : "HTTP/1.1 ");
  char code[8];
  const int len = std::snprintf(code, sizeof(code), "%u ", res.result_int());
  out->append(code, static_cast<size_t>(len));
  const beast::string_view reason = res.reason();
  out->append(reason.data(), reason.size());
  out->append("\r\n");
  for (const auto& field : res) {
    const beast::string_view name = field.name_string();
    const beast::string_view value = field.value();
    out->append(name.data(), name.size());
    out->append(": ");
    out->append(value.data(), value.size());
    out->append("\r\n");
  }
  out->append("\r\n");
}

template <class Stream>
void GracefulClose(Stream& stream) {
  boost::system::error_code ignored;
  Lowest(stream).shutdown(tcp::socket::shutdown_send, ignored);
}

// Streams a reply's chunks over a connection, and watches the connection's read side so a
// peer that goes away is noticed while the stream is idle (a write into a closed connection
// may succeed for a long time, and an idle stream writes only a heartbeat now and then).
// Everything runs on the connection's strand.
template <class Stream>
class ChunkSink : public StreamSink {
 public:
  ChunkSink(Stream& stream, Watchdog& watchdog, const std::atomic<bool>& draining,
            int64_t timeout_ms)
      : stream_(stream),
        watchdog_(watchdog),
        draining_(draining),
        timeout_ms_(timeout_ms),
        reader_done_(stream.get_executor(), std::chrono::steady_clock::time_point::max()) {}

  asio::awaitable<bool> Write(std::string data) override {
    if (data.empty()) co_return true;  // an empty chunk would end the response
    watchdog_.Arm(timeout_ms_);
    auto [ec, n] =
        co_await asio::async_write(stream_, http::make_chunk(asio::buffer(data)), kTuple);
    watchdog_.Disarm();
    if (ec) MarkPeerClosed();
    co_return !ec;
  }
  bool Closing() const override { return draining_.load(); }
  bool PeerClosed() const override { return peer_closed_; }
  void OnPeerClosed(std::function<void()> fn) override {
    if (peer_closed_) {
      fn();
    } else {
      on_peer_closed_ = std::move(fn);
    }
  }

  // Starts reading the connection until EOF or an error.
  void StartWatchingPeer() {
    reading_ = true;
    asio::co_spawn(stream_.get_executor(), WatchPeer(), asio::detached);
  }
  // Ends the read (it refers to the stream and to this sink) and waits for it to finish.
  asio::awaitable<void> StopWatchingPeer() {
    if (!reading_) co_return;
    boost::system::error_code ignored;
    Lowest(stream_).cancel(ignored);
    while (reading_) co_await reader_done_.async_wait(kTuple);
  }

 private:
  asio::awaitable<void> WatchPeer() {
    char scratch[256];
    for (;;) {
      auto [ec, n] = co_await stream_.async_read_some(asio::buffer(scratch), kTuple);
      if (ec) break;
      // Bytes after the request (a client should send none on a stream) are dropped.
    }
    MarkPeerClosed();
    reading_ = false;
    reader_done_.cancel();
  }
  void MarkPeerClosed() {
    if (peer_closed_) return;
    peer_closed_ = true;
    if (std::function<void()> fn = std::move(on_peer_closed_)) fn();
  }

  Stream& stream_;
  Watchdog& watchdog_;
  const std::atomic<bool>& draining_;
  int64_t timeout_ms_;
  bool peer_closed_ = false;
  bool reading_ = false;
  asio::steady_timer reader_done_;  // cancelled when the read ends
  std::function<void()> on_peer_closed_;
};

}  // namespace

template <class Stream>
asio::awaitable<void> HttpServer::RunSession(Stream stream, std::shared_ptr<Connection> conn) {
  conn->close = [&stream] {
    boost::system::error_code ignored;
    Lowest(stream).close(ignored);
  };
  if (!tls_) StartWatchdog(conn);
  Watchdog& watchdog = conn->watchdog;
  const LimitsConfig& limits = options_.limits;
  // Room for 64 KiB reads of large bodies (fewer syscalls) and for the largest header.
  beast::flat_buffer buffer(std::max<size_t>(limits.max_header_bytes + 4096, 1u << 20));
  std::string header_bytes;  // the serialized header of a reply, reused

  // Sends a reply that ends the connection (limits, malformed input).
  auto send_final = [&](HttpResponse res) -> asio::awaitable<void> {
    res.keep_alive(false);
    res.prepare_payload();
    watchdog.Arm(limits.request_timeout_ms);
    co_await http::async_write(stream, res, kTuple);
  };

  for (;;) {
    conn->busy = false;
    if (draining_) break;
    http::request_parser<http::string_body> parser;
    parser.header_limit(limits.max_header_bytes);
    parser.body_limit(limits.max_body_bytes);
    watchdog.Arm(limits.idle_timeout_ms);
    auto [ec, n] = co_await http::async_read_header(stream, buffer, parser, kTuple);
    if (ec) {
      if (ec == http::error::header_limit) {
        rejected_too_large_->Add();
        co_await send_final(JsonError(http::status::request_header_fields_too_large,
                                      "HEADERS_TOO_LARGE",
                                      "request line and headers exceed limits.max_header_bytes (" +
                                          std::to_string(limits.max_header_bytes) + ")"));
      } else if (ec == http::error::body_limit) {
        // The parser checks Content-Length against the body limit with the header.
        rejected_too_large_->Add();
        co_await send_final(JsonError(http::status::payload_too_large, "PAYLOAD_TOO_LARGE",
                                      "request body exceeds limits.max_body_bytes (" +
                                          std::to_string(limits.max_body_bytes) + ")"));
      } else if (IsParseError(ec)) {
        bad_requests_->Add();
        co_await send_final(JsonError(http::status::bad_request, "MALFORMED_HTTP",
                                      "cannot parse the HTTP request: " + ec.message()));
      }
      break;
    }
    conn->busy = true;
    const auto& header = parser.get();
    if (auto length = parser.content_length(); length && *length > limits.max_body_bytes) {
      rejected_too_large_->Add();
      co_await send_final(JsonError(http::status::payload_too_large, "PAYLOAD_TOO_LARGE",
                                    "request body of " + std::to_string(*length) +
                                        " bytes exceeds limits.max_body_bytes (" +
                                        std::to_string(limits.max_body_bytes) + ")"));
      break;
    }
    if (beast::iequals(header[http::field::expect], "100-continue")) {
      http::response<http::empty_body> cont{http::status::continue_, header.version()};
      watchdog.Arm(limits.request_timeout_ms);
      auto [wec, wn] = co_await http::async_write(stream, cont, kTuple);
      if (wec) break;
    }
    watchdog.Arm(limits.request_timeout_ms);
    // A request without a body is complete with its header, and a small body usually arrives
    // with it: parse what is buffered here; an asynchronous read (which completes through a
    // posted handler even when it has nothing to wait for) only for the rest.
    ec = ParseBuffered(parser, buffer);
    if (!ec && !parser.is_done()) {
      std::tie(ec, n) = co_await http::async_read(stream, buffer, parser, kTuple);
    }
    if (ec) {
      if (ec == http::error::body_limit) {
        rejected_too_large_->Add();
        co_await send_final(JsonError(http::status::payload_too_large, "PAYLOAD_TOO_LARGE",
                                      "request body exceeds limits.max_body_bytes (" +
                                          std::to_string(limits.max_body_bytes) + ")"));
      } else if (IsParseError(ec)) {
        bad_requests_->Add();
        co_await send_final(JsonError(http::status::bad_request, "MALFORMED_HTTP",
                                      "cannot parse the HTTP request body: " + ec.message()));
      }
      break;
    }
    HttpRequest req = parser.release();
    watchdog.Disarm();

    HttpReply reply;
    if (inflight_.fetch_add(1) >= limits.max_inflight_requests) {
      inflight_.fetch_sub(1);
      rejected_inflight_->Add();
      reply.response =
          JsonError(http::status::too_many_requests, "TOO_MANY_REQUESTS",
                    "server is at limits.max_inflight_requests (" +
                        std::to_string(limits.max_inflight_requests) + "); retry later",
                    req.version());
      reply.response.set(http::field::retry_after, "1");
    } else {
      inflight_gauge_->Set(static_cast<double>(inflight_.load()));
      try {
        reply = co_await handler_(req);
      } catch (const std::exception& e) {
        reply = HttpReply{JsonError(http::status::internal_server_error, "INTERNAL",
                                    std::string("unexpected error: ") + e.what(), req.version()),
                          nullptr};
      }
      inflight_.fetch_sub(1);
      inflight_gauge_->Set(static_cast<double>(inflight_.load()));
    }

    HttpResponse& res = reply.response;
    res.version(req.version());
    res.set(http::field::server, "converge");
    if (reply.stream) {
      res.keep_alive(false);
      res.chunked(true);
      res.body().clear();
      http::response_serializer<http::string_body> sr(res);
      watchdog.Arm(limits.request_timeout_ms);
      auto [wec, wn] = co_await http::async_write_header(stream, sr, kTuple);
      watchdog.Disarm();
      if (wec) break;
      ChunkSink<Stream> sink(stream, watchdog, draining_, limits.request_timeout_ms);
      sink.StartWatchingPeer();
      try {
        co_await reply.stream(sink);
      } catch (const std::exception& e) {
        std::fprintf(stderr, "converge serve: stream ended by error: %s\n", e.what());
      }
      co_await sink.StopWatchingPeer();
      watchdog.Arm(limits.request_timeout_ms);
      co_await asio::async_write(stream, http::make_chunk_last(), kTuple);
      break;
    }
    const bool keep_alive = req.keep_alive() && !draining_;
    res.keep_alive(keep_alive);
    res.prepare_payload();
    // Header and body in one gathered write, without Beast's serializer (its buffer views cost
    // more CPU than the rest of a small request's handling).
    SerializeHeader(res, &header_bytes);
    const std::array<asio::const_buffer, 2> out = {asio::buffer(header_bytes),
                                                   asio::buffer(res.body())};
    watchdog.Arm(limits.request_timeout_ms);
    auto [wec, wn] = co_await asio::async_write(stream, out, kTuple);
    if (wec || !keep_alive) break;
  }
  GracefulClose(stream);
  watchdog.Stop();
  conn->busy = false;
  conn->close = nullptr;
  Unregister(conn);
}

void HttpServer::Register(const std::shared_ptr<Connection>& conn) {
  std::lock_guard lock(mu_);
  live_.insert(conn);
  connections_.store(live_.size());
  connections_gauge_->Set(static_cast<double>(live_.size()));
}

void HttpServer::Unregister(const std::shared_ptr<Connection>& conn) {
  {
    std::lock_guard lock(mu_);
    live_.erase(conn);
    connections_.store(live_.size());
    connections_gauge_->Set(static_cast<double>(live_.size()));
  }
  MaybeDrained();
}

void HttpServer::MaybeDrained() {
  std::function<void()> done;
  {
    std::lock_guard lock(mu_);
    if (!draining_ || drained_called_ || !live_.empty()) return;
    drained_called_ = true;
    done = std::move(on_drained_);
  }
  asio::post(ioc_, [this, done = std::move(done)] {
    drain_timer_.cancel();
    if (done) done();
  });
}

void HttpServer::BeginShutdown(std::function<void()> on_drained) {
  asio::post(acceptor_.get_executor(), [this, on_drained = std::move(on_drained)]() mutable {
    if (draining_.exchange(true)) return;
    {
      std::lock_guard lock(mu_);
      on_drained_ = std::move(on_drained);
    }
    boost::system::error_code ignored;
    acceptor_.close(ignored);
    std::vector<std::shared_ptr<Connection>> conns;
    {
      std::lock_guard lock(mu_);
      conns.assign(live_.begin(), live_.end());
    }
    // Idle keep-alive connections are closed now; busy ones close after their reply.
    for (auto& c : conns) {
      asio::post(c->executor, [c] {
        if (!c->busy && c->close) c->close();
      });
    }
    drain_timer_.expires_after(Ms(options_.limits.shutdown_timeout_ms));
    drain_timer_.async_wait([this](boost::system::error_code ec) {
      if (ec) return;  // drained in time
      std::vector<std::shared_ptr<Connection>> left;
      {
        std::lock_guard lock(mu_);
        left.assign(live_.begin(), live_.end());
      }
      std::fprintf(stderr, "converge serve: drain timeout, closing %zu connection(s)\n",
                   left.size());
      for (auto& c : left) {
        asio::post(c->executor, [c] {
          if (c->close) c->close();
        });
      }
    });
    MaybeDrained();
  });
}

}  // namespace converge::server
