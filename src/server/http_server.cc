#include "server/http_server.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

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
#include <optional>

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
  // A request is being handled or a stream is open. Written on the strand; read by the
  // acceptor to pick a connection to evict.
  std::atomic<bool> busy{false};
  std::atomic<int64_t> idle_since{0};  // steady-clock ns when busy last became false
  std::atomic<bool> evicting{false};   // chosen by EvictIdle, close posted
  // Set (on the strand) when the server closed the socket on purpose (drain, eviction): a
  // request read meanwhile is not handled, since its reply could not be sent.
  bool closing = false;
  std::function<void()> close;  // closes the socket; null once the session ended
  Watchdog watchdog;            // closes the socket when a phase overruns its timeout

  void SetBusy(bool b) {
    busy.store(b);
    if (!b) idle_since.store(std::chrono::steady_clock::now().time_since_epoch().count());
  }
  // On the strand: closes the socket unless a request is being handled.
  bool CloseIfIdle() {
    if (busy.load() || !close) return false;
    closing = true;
    close();
    return true;
  }
};

HttpServer::HttpServer(asio::io_context& ioc, HttpServerOptions options, HttpHandler handler,
                       MetricsRegistry* metrics)
    : ioc_(ioc),
      options_(std::move(options)),
      handler_(std::move(handler)),
      control_(asio::make_strand(ioc)),
      acceptor_(control_),
      drain_timer_(control_) {
  connections_gauge_ = metrics->GetGauge("converge_http_connections", "Open HTTP connections.");
  inflight_gauge_ = metrics->GetGauge("converge_http_inflight_requests", "Requests being handled.");
  evicted_connections_ = metrics->GetCounter(
      "converge_http_evicted_connections_total",
      "Idle connections closed to make room for a new one at limits.max_connections.");
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

HttpServer::~HttpServer() {
  if (spare_fd_ >= 0) ::close(spare_fd_);
}

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
  // Accepts also happen outside Asio (ShedPending): they must never block.
  if (!ec) acceptor_.non_blocking(true, ec);
  if (ec) {
    return UnavailableError("cannot listen on " + options_.address + ":" +
                            std::to_string(options_.port) + ": " + ec.message());
  }
  port_ = acceptor_.local_endpoint().port();
  if (spare_fd_ < 0) spare_fd_ = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  return Status::Ok();
}

void HttpServer::Start() { asio::co_spawn(control_, AcceptLoop(), asio::detached); }

asio::awaitable<void> HttpServer::AcceptLoop() {
  asio::steady_timer backoff(control_);
  const uint32_t max_connections = options_.limits.max_connections;
  while (!draining_) {
    auto [ec, socket] = co_await acceptor_.async_accept(asio::make_strand(ioc_), kTuple);
    if (ec) {
      if (draining_ || ec == asio::error::operation_aborted || !acceptor_.is_open()) break;
      if (ec == asio::error::no_descriptors || ec.value() == ENFILE) {
        // Out of file descriptors (storage files took more than their reserve): the
        // connection would wait in the backlog, its client timing out, until one frees up.
        // Close the longest-idle connection and accept again once its descriptor is free; if
        // none is idle, take the new one with the spare descriptor and close it at once.
        const auto now = std::chrono::steady_clock::now();
        if (now - last_fd_warning_ > std::chrono::seconds(10)) {
          last_fd_warning_ = now;
          std::fprintf(stderr,
                       "converge serve: out of file descriptors at accept (%u connections open): "
                       "closing idle connections, or new ones at once\n",
                       static_cast<unsigned>(connections_.load()));
        }
        if (EvictIdle()) {
          backoff.expires_after(Ms(2));  // the eviction runs on the connection's strand
          co_await backoff.async_wait(kTuple);
          continue;
        }
        if (ShedPending()) continue;
      }
      // Out of memory and similar: back off briefly instead of spinning.
      backoff.expires_after(Ms(50));
      co_await backoff.async_wait(kTuple);
      continue;
    }
    const uint64_t open = connections_.load();
    if (open >= max_connections &&
        (open >= uint64_t{max_connections} + kEvictionSlack || !EvictIdle())) {
      rejected_connections_->Add();
      boost::system::error_code ignored;
      socket.close(ignored);
      continue;
    }
    socket.set_option(tcp::no_delay(true), ec);
    auto conn = std::make_shared<Connection>(socket.get_executor());
    conn->SetBusy(false);
    Register(conn);
    if (tls_) {
      asio::co_spawn(conn->executor, RunTlsSession(std::move(socket), conn), asio::detached);
    } else {
      asio::co_spawn(conn->executor, RunSession(tcp::socket(std::move(socket)), conn),
                     asio::detached);
    }
  }
}

bool HttpServer::EvictIdle() {
  std::shared_ptr<Connection> victim;
  {
    std::lock_guard lock(mu_);
    int64_t oldest = 0;
    for (const auto& c : live_) {
      if (c->busy.load() || c->evicting.load()) continue;
      const int64_t since = c->idle_since.load();
      if (!victim || since < oldest) {
        victim = c;
        oldest = since;
      }
    }
    if (!victim) return false;
    victim->evicting.store(true);
  }
  evicted_connections_->Add();
  asio::post(victim->executor, [victim] {
    // Busy again meanwhile: it stays (the new connection is within kEvictionSlack).
    if (!victim->CloseIfIdle()) victim->evicting.store(false);
  });
  return true;
}

bool HttpServer::ShedPending() {
  if (spare_fd_ < 0) return false;
  ::close(spare_fd_);
  const int fd = ::accept4(acceptor_.native_handle(), nullptr, nullptr, SOCK_CLOEXEC);
  if (fd >= 0) ::close(fd);
  spare_fd_ = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  rejected_connections_->Add();
  return true;
}

bool HttpServer::IsProbe(std::string_view target) const {
  const std::string_view path = target.substr(0, target.find('?'));
  for (const std::string& p : options_.probe_paths) {
    if (path == p) return true;
  }
  return false;
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

// Feeds the bytes already in `buffer` to `parser` until its header (`header_only`) or the
// whole message is complete, or more input is needed (the parser is not eager: it stops at the
// end of the header). A parse error (header_limit, body_limit, a Content-Length over it) is
// returned as from http::async_read_header / http::async_read.
boost::system::error_code ParseBuffered(http::request_parser<http::string_body>& parser,
                                        beast::flat_buffer& buffer, bool header_only) {
  boost::system::error_code ec;
  while (!(header_only ? parser.is_header_done() : parser.is_done()) && buffer.size() > 0) {
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

// Why a request header is refused before the request is handled.
struct Refusal {
  http::status status;
  const char* code;
  std::string message;
};

std::string_view Trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// Message framing (RFC 9112 section 6): the body must be delimited one way only, or bytes
// of one request could be read as another (request smuggling). Beast treats a
// Transfer-Encoding it does not end in chunked as "no body" and reads the rest as the next
// request, so every Transfer-Encoding is checked here.
std::optional<Refusal> CheckFraming(const http::request_header<>& h) {
  std::vector<std::string_view> codings;
  bool has_te = false;
  for (const auto& field : h) {
    if (field.name() != http::field::transfer_encoding) continue;
    has_te = true;
    std::string_view list(field.value().data(), field.value().size());
    while (!list.empty()) {
      const size_t comma = list.find(',');
      std::string_view item = Trim(list.substr(0, comma));
      list = comma == std::string_view::npos ? std::string_view() : list.substr(comma + 1);
      if (!item.empty()) codings.push_back(item);
    }
  }
  size_t content_lengths = 0;
  for (const auto& field : h) content_lengths += field.name() == http::field::content_length;
  if (!has_te) return std::nullopt;
  auto bad = [](std::string message) {
    return Refusal{http::status::bad_request, "MALFORMED_HTTP", std::move(message)};
  };
  if (h.version() < 11) return bad("Transfer-Encoding in an HTTP/1.0 request");
  if (content_lengths > 0) return bad("both Transfer-Encoding and Content-Length");
  if (codings.empty() || !beast::iequals(codings.back(), "chunked")) {
    return bad("the final transfer coding must be chunked");
  }
  for (size_t i = 0; i + 1 < codings.size(); ++i) {
    if (beast::iequals(codings[i], "chunked")) return bad("chunked applied more than once");
  }
  if (codings.size() > 1) {
    return Refusal{http::status::not_implemented, "NOT_IMPLEMENTED",
                   "transfer coding '" + std::string(codings[0].substr(0, 64)) +
                       "' is not supported (only chunked)"};
  }
  return std::nullopt;
}

// Content codings (RFC 9110 section 8.4): no route decodes one, so a body sent with any
// coding but "identity" would be read as if it were not encoded (gzip bytes stored as an
// event's data or a document). Refused with 415 before the body is read.
std::optional<Refusal> CheckContentCoding(const http::request_header<>& h) {
  for (const auto& field : h) {
    if (field.name() != http::field::content_encoding) continue;
    std::string_view list(field.value().data(), field.value().size());
    while (!list.empty()) {
      const size_t comma = list.find(',');
      std::string_view item = Trim(list.substr(0, comma));
      list = comma == std::string_view::npos ? std::string_view() : list.substr(comma + 1);
      if (item.empty() || beast::iequals(item, "identity")) continue;
      return Refusal{http::status::unsupported_media_type, "UNSUPPORTED_MEDIA_TYPE",
                     "content coding '" + std::string(item.substr(0, 64)) +
                         "' is not supported (send the body without Content-Encoding)"};
    }
  }
  return std::nullopt;
}

// Host (RFC 9112 section 3.2): exactly one in HTTP/1.1, at most one in HTTP/1.0.
std::optional<Refusal> CheckHost(const http::request_header<>& h) {
  size_t hosts = 0;
  for (const auto& field : h) hosts += field.name() == http::field::host;
  if (hosts > 1) return Refusal{http::status::bad_request, "MALFORMED_HTTP", "more than one Host"};
  if (hosts == 0 && h.version() >= 11) {
    return Refusal{http::status::bad_request, "MALFORMED_HTTP",
                   "an HTTP/1.1 request must have a Host header"};
  }
  return std::nullopt;
}

// The request target (RFC 9112 section 3.2): origin-form ("/path?query") as it is;
// absolute-form ("http://host/path?query") becomes its path and query, so that every route
// sees one form. Anything else is refused.
std::optional<Refusal> NormalizeTarget(http::request_header<>& h) {
  const std::string_view target(h.target().data(), h.target().size());
  if (!target.empty() && target.front() == '/') return std::nullopt;
  size_t scheme_end = 0;
  if (target.size() > 7 && beast::iequals(target.substr(0, 7), "http://")) scheme_end = 7;
  if (target.size() > 8 && beast::iequals(target.substr(0, 8), "https://")) scheme_end = 8;
  if (scheme_end > 0) {
    const size_t rest = target.find_first_of("/?#", scheme_end);
    if (rest != scheme_end) {  // a non-empty authority
      std::string origin = rest == std::string_view::npos ? "/" : std::string(target.substr(rest));
      if (origin.front() == '?') origin.insert(0, "/");
      if (origin.front() != '#') {
        h.target(origin);
        return std::nullopt;
      }
    }
  }
  return Refusal{http::status::bad_request, "MALFORMED_HTTP",
                 "the request target must be a path or an absolute http(s) URI"};
}

// HEAD is served wherever GET is: a 405's Allow list names it too.
void AddHeadToAllow(HttpResponse& res) {
  auto it = res.find(http::field::allow);
  if (it == res.end()) return;
  const std::string_view allow(it->value().data(), it->value().size());
  bool get = false, head = false;
  std::string_view list = allow;
  while (!list.empty()) {
    const size_t comma = list.find(',');
    const std::string_view item = Trim(list.substr(0, comma));
    list = comma == std::string_view::npos ? std::string_view() : list.substr(comma + 1);
    get = get || item == "GET";
    head = head || item == "HEAD";
  }
  if (get && !head) res.set(http::field::allow, std::string(allow) + ", HEAD");
}

// The sink of a stream answered to HEAD: nothing is sent, the stream ends at its first write.
class NullSink : public StreamSink {
 public:
  asio::awaitable<bool> Write(std::string) override { co_return false; }
  bool Closing() const override { return true; }
  // Nothing is ever sent, so the stream is as good as closed by its peer from the start.
  bool PeerClosed() const override { return true; }
  void OnPeerClosed(std::function<void()> fn) override { fn(); }
};

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
  bool linger = false;       // refused with input possibly unread: drain it before closing

  // Sends a reply that ends the connection (limits, malformed input).
  auto send_final = [&](HttpResponse res) -> asio::awaitable<void> {
    res.keep_alive(false);
    res.prepare_payload();
    watchdog.Arm(limits.request_timeout_ms);
    co_await http::async_write(stream, res, kTuple);
    linger = true;
  };

  for (;;) {
    conn->SetBusy(false);
    if (draining_) break;
    http::request_parser<http::string_body> parser;
    parser.header_limit(limits.max_header_bytes);
    parser.body_limit(limits.max_body_bytes);
    if (buffer.size() == 0) {
      // Between requests the connection may idle for idle_timeout_ms; once a request starts,
      // all of it must arrive within request_timeout_ms (below).
      watchdog.Arm(limits.idle_timeout_ms);
      auto [rec, got] = co_await stream.async_read_some(buffer.prepare(64 * 1024), kTuple);
      if (rec || conn->closing) break;
      buffer.commit(got);
    }
    watchdog.Arm(limits.request_timeout_ms);
    // A header already in the buffer (the usual case: the read above got the whole request)
    // is parsed right here; http::async_read_header would complete through a posted handler,
    // a trip through the io_context's queue that may wake and move to the other io thread.
    boost::system::error_code ec = ParseBuffered(parser, buffer, /*header_only=*/true);
    size_t n = 0;
    if (!ec && !parser.is_header_done()) {
      std::tie(ec, n) = co_await http::async_read_header(stream, buffer, parser, kTuple);
    }
    if (conn->closing) break;  // closed by the drain or an eviction: not handled
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
    conn->SetBusy(true);
    auto& header = parser.get();
    std::optional<Refusal> refused = CheckFraming(header);
    if (!refused) refused = CheckHost(header);
    if (!refused) refused = NormalizeTarget(header);
    if (!refused) refused = CheckContentCoding(header);
    if (refused) {
      bad_requests_->Add();
      HttpResponse res = JsonError(refused->status, refused->code, refused->message);
      // Which codings would have been accepted (RFC 9110 section 15.5.16): none but identity.
      if (refused->status == http::status::unsupported_media_type) {
        res.set(http::field::accept_encoding, "identity");
      }
      co_await send_final(std::move(res));
      break;
    }
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
    // A request without a body is complete with its header, and a small body usually arrives
    // with it: parse what is buffered here; an asynchronous read (which completes through a
    // posted handler even when it has nothing to wait for) only for the rest.
    ec = ParseBuffered(parser, buffer, /*header_only=*/false);
    if (!ec && !parser.is_done()) {
      std::tie(ec, n) = co_await http::async_read(stream, buffer, parser, kTuple);
    }
    if (conn->closing) break;
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
    // HEAD is GET without the body (RFC 9110 section 9.3.2): routed and handled as GET, so
    // the header is the one GET would send.
    const bool head = req.method() == http::verb::head;
    if (head) req.method(http::verb::get);

    HttpReply reply;
    const bool probe = IsProbe(std::string_view(req.target().data(), req.target().size()));
    if (!probe && inflight_.fetch_add(1) >= limits.max_inflight_requests) {
      inflight_.fetch_sub(1);
      rejected_inflight_->Add();
      reply.response =
          JsonError(http::status::too_many_requests, "TOO_MANY_REQUESTS",
                    "server is at limits.max_inflight_requests (" +
                        std::to_string(limits.max_inflight_requests) + "); retry later",
                    req.version());
      reply.response.set(http::field::retry_after, "1");
    } else {
      // Liveness and readiness probes are answered at once and never refused for load; they
      // are not counted in flight.
      if (!probe) inflight_gauge_->Set(static_cast<double>(inflight_.load()));
      try {
        reply = co_await handler_(req);
      } catch (const std::exception& e) {
        reply = HttpReply{JsonError(http::status::internal_server_error, "INTERNAL",
                                    std::string("unexpected error: ") + e.what(), req.version()),
                          nullptr};
      }
      if (!probe) {
        inflight_.fetch_sub(1);
        inflight_gauge_->Set(static_cast<double>(inflight_.load()));
      }
    }

    HttpResponse& res = reply.response;
    res.version(req.version());
    res.set(http::field::server, "converge");
    AddHeadToAllow(res);
    if (reply.stream) {
      res.keep_alive(false);
      res.chunked(true);
      res.body().clear();
      http::response_serializer<http::string_body> sr(res);
      watchdog.Arm(limits.request_timeout_ms);
      auto [wec, wn] = co_await http::async_write_header(stream, sr, kTuple);
      watchdog.Disarm();
      if (wec) break;
      NullSink null_sink;
      ChunkSink<Stream> chunks(stream, watchdog, draining_, limits.request_timeout_ms);
      // A stream answered to HEAD still runs, to its first write, so that whatever it set up
      // (a group member, a subscriber slot) is released the way a closed stream's is.
      StreamSink& sink = head ? static_cast<StreamSink&>(null_sink) : chunks;
      if (!head) chunks.StartWatchingPeer();
      try {
        co_await reply.stream(sink);
      } catch (const std::exception& e) {
        std::fprintf(stderr, "converge serve: stream ended by error: %s\n", e.what());
      }
      if (head) break;
      co_await chunks.StopWatchingPeer();
      watchdog.Arm(limits.request_timeout_ms);
      co_await asio::async_write(stream, http::make_chunk_last(), kTuple);
      break;
    }
    const bool keep_alive = req.keep_alive() && !draining_;
    res.keep_alive(keep_alive);
    res.prepare_payload();
    // Header and body in one gathered write, without Beast's serializer (its buffer views cost
    // more CPU than the rest of a small request's handling). HEAD gets the header only.
    SerializeHeader(res, &header_bytes);
    const std::array<asio::const_buffer, 2> out = {
        asio::buffer(header_bytes), head ? asio::const_buffer() : asio::buffer(res.body())};
    watchdog.Arm(limits.request_timeout_ms);
    auto [wec, wn] = co_await asio::async_write(stream, out, kTuple);
    if (wec || !keep_alive) break;
  }
  GracefulClose(stream);
  if ((linger || buffer.size() > 0) && !conn->closing) {
    // A refused request may be followed by bytes not yet read (a body, more requests), and
    // so may a reply that ended the connection (Connection: close, the drain).
    // Closing with unread input makes the kernel send a reset, which can destroy the error
    // reply before the client reads it: read and drop input for a short while first.
    watchdog.Arm(std::min<int64_t>(limits.request_timeout_ms, 1000));
    size_t dropped = 0;
    while (dropped < (4u << 20)) {
      buffer.clear();
      auto [rec, got] = co_await Lowest(stream).async_read_some(buffer.prepare(64 * 1024), kTuple);
      if (rec) break;
      dropped += got;
    }
  }
  watchdog.Stop();
  conn->SetBusy(false);
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
  asio::post(control_, [this, done = std::move(done)] {
    drain_timer_.cancel();
    if (done) done();
  });
}

void HttpServer::BeginShutdown(std::function<void()> on_drained) {
  asio::post(control_, [this, on_drained = std::move(on_drained)]() mutable {
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
      asio::post(c->executor, [c] { c->CloseIfIdle(); });
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
          if (!c->close) return;
          c->closing = true;
          c->close();
        });
      }
    });
    MaybeDrained();
  });
}

}  // namespace converge::server
