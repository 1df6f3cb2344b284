#include "client/connection.h"

#include <openssl/ssl.h>

#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/host_name_verification.hpp>
#include <boost/beast/ssl.hpp>

namespace converge::client::internal {

using boost::system::error_code;
using tcp = asio::ip::tcp;

Connection::Connection(const Options& options) : options_(options) {}

Connection::~Connection() { Close(); }

beast::tcp_stream& Connection::Lowest() { return tls_ ? beast::get_lowest_layer(*tls_) : *tcp_; }

void Connection::Close() {
  if (tcp_ || tls_) {
    error_code ignored;
    Lowest().socket().close(ignored);
    // Let cancelled handlers run so nothing refers to the streams we drop.
    ioc_.restart();
    ioc_.run();
  }
  tls_.reset();
  tcp_.reset();
  buffer_.clear();
  open_ = false;
  body_read_pending_ = false;
  body_read_done_ = false;
}

template <typename Initiate>
error_code Connection::RunUntil(Clock::time_point deadline, Initiate initiate, size_t* bytes) {
  bool done = false;
  error_code result;
  size_t n = 0;
  initiate([&](error_code ec, size_t transferred) {
    done = true;
    result = ec;
    n = transferred;
  });
  ioc_.restart();
  ioc_.run_until(deadline);
  if (!done) {
    error_code ignored;
    Lowest().socket().close(ignored);
    ioc_.restart();
    ioc_.run();
    open_ = false;
    return asio::error::timed_out;
  }
  if (bytes) *bytes = n;
  return result;
}

Status Connection::EnsureOpen(Clock::time_point deadline) {
  if (open_) return Status::Ok();
  Close();
  const std::string where = options_.host + ":" + std::to_string(options_.port);
  error_code ec;
  tcp::resolver resolver(ioc_);
  auto endpoints = resolver.resolve(options_.host, std::to_string(options_.port), ec);
  if (ec) return UnavailableError("cannot resolve " + options_.host + ": " + ec.message());
  if (options_.tls) {
    if (!ssl_ctx_) {
      ssl_ctx_.emplace(asio::ssl::context::tls_client);
      if (options_.tls_verify) {
        ssl_ctx_->set_verify_mode(asio::ssl::verify_peer);
        if (options_.tls_ca_file.empty()) {
          ssl_ctx_->set_default_verify_paths(ec);
        } else {
          ssl_ctx_->load_verify_file(options_.tls_ca_file, ec);
        }
        if (ec) return InvalidArgumentError("TLS CA: " + ec.message());
      } else {
        ssl_ctx_->set_verify_mode(asio::ssl::verify_none);
      }
    }
    tls_ = std::make_unique<beast::ssl_stream<beast::tcp_stream>>(ioc_, *ssl_ctx_);
    if (options_.tls_verify) {
      tls_->set_verify_callback(asio::ssl::host_name_verification(options_.host));
    }
    SSL_set_tlsext_host_name(tls_->native_handle(), options_.host.c_str());
  } else {
    tcp_ = std::make_unique<beast::tcp_stream>(ioc_);
  }
  ec = RunUntil(deadline, [&](auto done) {
    Lowest().socket().async_connect(*endpoints.begin(),
                                    [done](error_code e) mutable { done(e, 0); });
  });
  if (ec) {
    Close();
    return UnavailableError("cannot connect to " + where + ": " + ec.message());
  }
  error_code nodelay_ec;
  Lowest().socket().set_option(tcp::no_delay(true), nodelay_ec);
  if (tls_) {
    ec = RunUntil(deadline, [&](auto done) {
      tls_->async_handshake(asio::ssl::stream_base::client,
                            [done](error_code e) mutable { done(e, 0); });
    });
    if (ec) {
      Close();
      return UnavailableError("TLS handshake with " + where + " failed: " + ec.message());
    }
  }
  open_ = true;
  return Status::Ok();
}

Status Connection::Write(http::request<http::string_body>& request, Clock::time_point deadline) {
  error_code ec = RunUntil(deadline, [&](auto done) {
    auto handler = [done](error_code e, size_t n) mutable { done(e, n); };
    if (tls_) {
      http::async_write(*tls_, request, handler);
    } else {
      http::async_write(*tcp_, request, handler);
    }
  });
  if (ec) {
    Close();
    return UnavailableError("sending the request failed: " + ec.message());
  }
  return Status::Ok();
}

Result<http::response<http::string_body>> Connection::Read(Clock::time_point deadline,
                                                           bool* nothing_read) {
  *nothing_read = false;
  http::response_parser<http::string_body> parser;
  parser.body_limit(options_.max_response_bytes);
  parser.header_limit(64 * 1024);
  const size_t buffered_before = buffer_.size();
  error_code ec = RunUntil(deadline, [&](auto done) {
    auto handler = [done](error_code e, size_t n) mutable { done(e, n); };
    if (tls_) {
      http::async_read(*tls_, buffer_, parser, handler);
    } else {
      http::async_read(*tcp_, buffer_, parser, handler);
    }
  });
  if (ec) {
    bool eof = ec == http::error::end_of_stream || ec == asio::error::eof ||
               ec == asio::error::connection_reset || ec == asio::error::broken_pipe;
    *nothing_read = eof && buffered_before == 0 && !parser.got_some();
    Close();
    if (ec == asio::error::timed_out) {
      return DeadlineExceededError(
          "no reply within the timeout (the request may have been "
          "applied)");
    }
    return UnavailableError("reading the reply failed: " + ec.message());
  }
  http::response<http::string_body> res = parser.release();
  if (!res.keep_alive()) Close();
  return res;
}

Status Connection::ReadHeader(http::response_parser<http::buffer_body>& parser,
                              Clock::time_point deadline) {
  error_code ec = RunUntil(deadline, [&](auto done) {
    auto handler = [done](error_code e, size_t n) mutable { done(e, n); };
    if (tls_) {
      http::async_read_header(*tls_, buffer_, parser, handler);
    } else {
      http::async_read_header(*tcp_, buffer_, parser, handler);
    }
  });
  if (ec) {
    Close();
    return UnavailableError("reading the stream header failed: " + ec.message());
  }
  return Status::Ok();
}

Result<size_t> Connection::ReadBodySome(http::response_parser<http::buffer_body>& parser,
                                        Clock::time_point deadline, std::string* out) {
  if (!open_) return UnavailableError("the stream has ended");
  if (!body_read_pending_) {
    if (parser.is_done()) return UnavailableError("the stream has ended");
    parser.get().body().data = body_chunk_;
    parser.get().body().size = sizeof(body_chunk_);
    body_read_pending_ = true;
    body_read_done_ = false;
    auto handler = [this](error_code e, size_t) {
      body_read_done_ = true;
      body_read_ec_ = e;
    };
    if (tls_) {
      http::async_read_some(*tls_, buffer_, parser, handler);
    } else {
      http::async_read_some(*tcp_, buffer_, parser, handler);
    }
  }
  ioc_.restart();
  ioc_.run_until(deadline);
  if (!body_read_done_) return size_t{0};  // still pending: the next call continues it
  body_read_pending_ = false;
  size_t n = sizeof(body_chunk_) - parser.get().body().size;
  out->append(body_chunk_, n);
  if (body_read_ec_ && body_read_ec_ != http::error::need_buffer) {
    open_ = false;
    if (n > 0) return n;  // deliver what arrived; the next call reports the end
    Close();
    return UnavailableError("the stream has ended: " + body_read_ec_.message());
  }
  if (parser.is_done() && n == 0) {
    Close();
    return UnavailableError("the stream has ended");
  }
  return n;
}

}  // namespace converge::client::internal
