#include "http_call.h"

#include <openssl/ssl.h>

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <cstdio>

namespace converge::cli {

namespace http = boost::beast::http;
namespace ssl = boost::asio::ssl;

std::string EscapePathSegment(const std::string& s) {
  std::string out;
  for (char c : s) {
    const bool plain = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                       c == '-' || c == '_' || c == '.' || c == '~';
    if (plain) {
      out.push_back(c);
    } else {
      char buf[4];
      std::snprintf(buf, sizeof(buf), "%%%02X", static_cast<unsigned char>(c));
      out += buf;
    }
  }
  return out;
}

namespace {

template <typename Stream>
HttpCallReply Exchange(Stream& stream, http::request<http::string_body>& req) {
  http::write(stream, req);
  boost::beast::flat_buffer buffer;
  http::response<http::string_body> res;
  http::read(stream, buffer, res);
  return HttpCallReply{static_cast<int>(res.result_int()), res.body(),
                       std::string(res[http::field::etag])};
}

}  // namespace

Result<HttpCallReply> HttpCall(const HttpEndpoint& endpoint, http::verb method,
                               const std::string& target, const std::string& body,
                               const std::string& content_type, const HttpCallHeaders& headers) {
  std::string rest = endpoint.server;
  bool tls = false;
  if (rest.rfind("http://", 0) == 0) {
    rest = rest.substr(7);
  } else if (rest.rfind("https://", 0) == 0) {
    rest = rest.substr(8);
    tls = true;
  } else if (rest.find("://") != std::string::npos) {
    return InvalidArgumentError("--server: only http:// and https:// URLs are supported");
  }
  while (!rest.empty() && rest.back() == '/') rest.pop_back();
  const size_t colon = rest.rfind(':');
  const std::string host = colon == std::string::npos ? rest : rest.substr(0, colon);
  const std::string port =
      colon == std::string::npos ? (tls ? "443" : "80") : rest.substr(colon + 1);
  http::request<http::string_body> req(method, target, 11);
  req.set(http::field::host, host);
  req.set(http::field::user_agent, "converge-cli");
  if (!endpoint.token.empty()) req.set(http::field::authorization, "Bearer " + endpoint.token);
  if (!body.empty()) {
    req.set(http::field::content_type, content_type);
    req.body() = body;
  }
  for (const auto& [name, value] : headers) req.set(name, value);
  req.prepare_payload();
  try {
    boost::asio::io_context io;
    boost::asio::ip::tcp::resolver resolver(io);
    if (!tls) {
      boost::beast::tcp_stream stream(io);
      stream.expires_after(endpoint.timeout);
      stream.connect(resolver.resolve(host, port));
      HttpCallReply reply = Exchange(stream, req);
      boost::system::error_code ec;
      stream.socket().shutdown(boost::asio::ip::tcp::socket::shutdown_both, ec);
      return reply;
    }
    ssl::context ctx(ssl::context::tls_client);
    if (endpoint.cacert.empty()) {
      ctx.set_default_verify_paths();
    } else {
      ctx.load_verify_file(endpoint.cacert);
    }
    ctx.set_verify_mode(ssl::verify_peer);
    boost::beast::ssl_stream<boost::beast::tcp_stream> stream(io, ctx);
    // SNI, and the certificate must name the host.
    if (!SSL_set_tlsext_host_name(stream.native_handle(), host.c_str())) {
      return InvalidArgumentError("--server: cannot use host name '" + host + "' for TLS");
    }
    stream.set_verify_callback(ssl::host_name_verification(host));
    boost::beast::get_lowest_layer(stream).expires_after(endpoint.timeout);
    boost::beast::get_lowest_layer(stream).connect(resolver.resolve(host, port));
    stream.handshake(ssl::stream_base::client);
    HttpCallReply reply = Exchange(stream, req);
    boost::system::error_code ec;
    stream.shutdown(ec);  // the server may close first: nothing to do about it
    return reply;
  } catch (const boost::system::system_error& e) {
    return UnavailableError("cannot reach " + endpoint.server + ": " + e.code().message());
  } catch (const std::exception& e) {
    return UnavailableError("cannot reach " + endpoint.server + ": " + e.what());
  }
}

Result<HttpCallReply> HttpCall(const std::string& server, const std::string& token,
                               http::verb method, const std::string& target,
                               const std::string& body, std::chrono::seconds timeout) {
  HttpEndpoint endpoint;
  endpoint.server = server;
  endpoint.token = token;
  endpoint.timeout = timeout;
  return HttpCall(endpoint, method, target, body);
}

}  // namespace converge::cli
