// The HTTP/1.1 transport of `converge serve`: Boost.Beast over Asio with C++20 coroutines,
// optional TLS (OpenSSL), keep-alive, request limits and graceful drain.
//
// Contract
// - Each connection is one coroutine on its own strand; requests on a connection are served
//   one at a time (HTTP/1.1 without pipelining concurrency), connections run concurrently.
// - Request framing and form are checked before anything else (RFC 9112), each refusal
//   answered and the connection closed, so that no byte after a refused header can be read
//   as a request of its own:
//     Transfer-Encoding whose final coding is not chunked, chunked applied twice,
//     Transfer-Encoding with Content-Length, Transfer-Encoding in HTTP/1.0,
//     conflicting Content-Length values                      -> 400
//     a coding other than chunked before the final chunked    -> 501
//     HTTP/1.1 without Host, or more than one Host            -> 400
//     a target that is neither a path nor an absolute URI     -> 400
//   An absolute-form target (http://host/path?q) is served as its path and query.
//   HEAD is served as GET without the body.
// - Limits enforced here, before the handler sees a request:
//     header bytes > max_header_bytes           -> 431, connection closed
//     body bytes > max_body_bytes               -> 413, connection closed (body not read)
//     requests being handled >= max_inflight    -> 429 with Retry-After, connection kept
//                                                  (never for probe_paths)
//     connections >= max_connections           -> the longest-idle connection waiting for a
//                                                  request is closed to make room; if none
//                                                  is idle, the new one is closed at once
//     out of file descriptors at accept          -> the new connection is closed at once
//     malformed HTTP                            -> 400, connection closed
//   Every error body is JSON {"code": ..., "message": ...}.
// - Timeouts: a connection waits idle_timeout_ms for the first byte of a request; from then
//   the whole request (header and body) must arrive within request_timeout_ms, and each reply
//   (or stream chunk) must be sent within request_timeout_ms.
// - BeginShutdown stops accepting, closes idle keep-alive connections, lets requests being
//   handled finish (their replies say Connection: close), ends streams, and calls on_drained
//   once no connection is left or shutdown_timeout_ms passed (then remaining ones are closed).
//   A request whose header was read before the shutdown is handled and answered; one that
//   was not is never handled (its connection is closed without a reply).
// Thread-safety: Listen/Start/BeginShutdown from any thread; handlers run on the
// connection's strand.
#pragma once

#include <atomic>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/http/message.hpp>
#include <boost/beast/http/string_body.hpp>
#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_set>
#include <vector>

#include "converge/status.h"
#include "server/config.h"
#include "server/metrics.h"

namespace converge::server {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = boost::beast::http;

using HttpRequest = http::request<http::string_body>;
using HttpResponse = http::response<http::string_body>;

// Writes the chunks of a streaming reply (Server-Sent Events).
class StreamSink {
 public:
  virtual ~StreamSink() = default;
  // Sends `data` as one chunk. False when the peer is gone or the write timed out.
  virtual asio::awaitable<bool> Write(std::string data) = 0;
  // True once the server is shutting down: the stream should end.
  virtual bool Closing() const = 0;
  // True once the peer closed its side of the connection (or it failed). Noticed while the
  // stream waits, not only when a write fails: the socket is read while the stream runs (a
  // client sends nothing after its request, so the read ends only at EOF or an error).
  virtual bool PeerClosed() const = 0;
  // Runs `fn` once, on the connection's strand, when the peer closes (at once if it has).
  // One callback per sink; it must be quick and must not block.
  virtual void OnPeerClosed(std::function<void()> fn) = 0;
};

struct HttpReply {
  // For a stream: the status and header fields; the body is ignored.
  HttpResponse response;
  // If set, the reply is streamed: the server sends the header with chunked encoding, runs
  // this, then ends the response and closes the connection.
  std::function<asio::awaitable<void>(StreamSink&)> stream;
};

using HttpHandler = std::function<asio::awaitable<HttpReply>(HttpRequest&)>;

// A JSON error reply {"code": code, "message": message}.
HttpResponse JsonError(http::status status, std::string_view code, std::string_view message,
                       unsigned version = 11);

struct HttpServerOptions {
  std::string address = "127.0.0.1";
  uint16_t port = 0;
  std::string tls_cert_file;  // both set = HTTPS
  std::string tls_key_file;
  LimitsConfig limits;
  // Paths (without query) of the liveness and readiness probes: never refused for load.
  std::vector<std::string> probe_paths;
};

class HttpServer {
 public:
  HttpServer(asio::io_context& ioc, HttpServerOptions options, HttpHandler handler,
             MetricsRegistry* metrics);
  ~HttpServer();

  // Loads TLS material and binds. InvalidArgument (bad address, TLS files), Unavailable
  // (address in use).
  Status Listen();
  // The bound port (after Listen).
  uint16_t port() const { return port_; }
  // Before Start: the effective connection limit (see FitConnectionsToFileLimit in server.cc).
  void set_max_connections(uint32_t n) { options_.limits.max_connections = n; }
  uint32_t max_connections() const { return options_.limits.max_connections; }
  // Starts the accept loop on the io_context.
  void Start();
  // See the contract above. `on_drained` is called once, on an io thread.
  void BeginShutdown(std::function<void()> on_drained);
  bool draining() const { return draining_.load(); }

  uint64_t connections() const { return connections_.load(); }

  // Connections over max_connections while evicted ones are still closing (bounded by this,
  // then new ones are closed at once). Each needs a file descriptor, like the spare one.
  static constexpr uint32_t kEvictionSlack = 16;

 private:
  struct Connection;
  asio::awaitable<void> AcceptLoop();
  void StartWatchdog(const std::shared_ptr<Connection>& conn);
  template <class Stream>
  asio::awaitable<void> RunSession(Stream stream, std::shared_ptr<Connection> conn);
  asio::awaitable<void> RunTlsSession(asio::ip::tcp::socket socket,
                                      std::shared_ptr<Connection> conn);
  // At max_connections: closes the longest-idle connection waiting for a request. False if
  // every connection is busy.
  bool EvictIdle();
  // Out of file descriptors: takes one pending connection with the spare descriptor and
  // closes it. False if there was none or it could not be taken.
  bool ShedPending();
  bool IsProbe(std::string_view target) const;
  void Register(const std::shared_ptr<Connection>& conn);
  void Unregister(const std::shared_ptr<Connection>& conn);
  void MaybeDrained();

  asio::io_context& ioc_;
  HttpServerOptions options_;
  HttpHandler handler_;
  std::optional<asio::ssl::context> tls_;
  // The accept loop, the shutdown and the drain timer run on this one strand: the signal
  // handler and the connections' strands reach the acceptor and the timer only through it.
  asio::strand<asio::io_context::executor_type> control_;
  asio::ip::tcp::acceptor acceptor_;
  asio::steady_timer drain_timer_;
  uint16_t port_ = 0;
  int spare_fd_ = -1;  // released to accept (and close) a connection when out of descriptors
  std::chrono::steady_clock::time_point last_fd_warning_{};

  std::atomic<bool> draining_{false};
  std::atomic<uint64_t> connections_{0};
  std::atomic<uint64_t> inflight_{0};
  std::mutex mu_;
  std::unordered_set<std::shared_ptr<Connection>> live_;
  std::function<void()> on_drained_;
  bool drained_called_ = false;

  Gauge* connections_gauge_;
  Gauge* inflight_gauge_;
  Counter* rejected_connections_;
  Counter* evicted_connections_;
  Counter* rejected_inflight_;
  Counter* rejected_too_large_;
  Counter* bad_requests_;
};

}  // namespace converge::server
