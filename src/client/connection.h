// One HTTP/1.1 connection (plain or TLS) driven synchronously with deadlines: every
// operation starts an asynchronous Asio operation and runs a private io_context until it
// completes or the deadline passes (then the socket is closed and the operation fails).
//
// Thread-safety: one thread at a time.
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl/ssl_stream.hpp>
#include <chrono>
#include <memory>
#include <optional>

#include "converge/client.h"

namespace converge::client::internal {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = boost::beast::http;
using Clock = std::chrono::steady_clock;

class Connection {
 public:
  explicit Connection(const Options& options);
  ~Connection();

  bool is_open() const { return open_; }
  // Connects (and handshakes) if not connected. Unavailable on failure.
  Status EnsureOpen(Clock::time_point deadline);
  void Close();

  // Sends a request. Unavailable on failure (the connection is closed).
  Status Write(http::request<http::string_body>& request, Clock::time_point deadline);
  // Reads one whole response. `nothing_read` is set when the connection ended before any
  // byte of it (a stale keep-alive connection: the request was not processed).
  Result<http::response<http::string_body>> Read(Clock::time_point deadline, bool* nothing_read);

  // Streaming: reads the header of a response whose body follows in pieces.
  Status ReadHeader(http::response_parser<http::buffer_body>& parser, Clock::time_point deadline);
  // Starts (if not already pending) a read of more body bytes and runs until it completes or
  // `deadline`. Returns the bytes appended to *out (0 with OK means "nothing yet"), Unavailable
  // when the stream ended.
  Result<size_t> ReadBodySome(http::response_parser<http::buffer_body>& parser,
                              Clock::time_point deadline, std::string* out);

 private:
  template <typename Initiate>
  boost::system::error_code RunUntil(Clock::time_point deadline, Initiate initiate,
                                     size_t* bytes = nullptr);
  beast::tcp_stream& Lowest();

  Options options_;
  asio::io_context ioc_;
  std::optional<asio::ssl::context> ssl_ctx_;
  std::unique_ptr<beast::tcp_stream> tcp_;
  std::unique_ptr<beast::ssl_stream<beast::tcp_stream>> tls_;
  beast::flat_buffer buffer_;
  bool open_ = false;

  // A pending streaming read (kept across ReadBodySome calls that time out).
  bool body_read_pending_ = false;
  bool body_read_done_ = false;
  boost::system::error_code body_read_ec_;
  char body_chunk_[16384];
};

}  // namespace converge::client::internal
