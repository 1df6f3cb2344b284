#include "test_util.h"

#include <boost/asio/ip/address.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/string.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>
#include <boost/json/parse.hpp>
#include <boost/json/value.hpp>
#include <chrono>

namespace converge::testing {
namespace {

namespace http = boost::beast::http;
namespace json = boost::json;

std::string JsonMember(const std::string& body, const char* name) {
  json::error_code ec;
  json::value v = json::parse(body, ec);
  if (ec || !v.is_object()) return "";
  const json::value* m = v.as_object().if_contains(name);
  return m && m->is_string() ? std::string(m->as_string()) : "";
}

}  // namespace

std::string HttpResult::Header(std::string_view name) const {
  for (const auto& [k, v] : headers) {
    if (boost::beast::iequals(k, name)) return v;
  }
  return "";
}

std::string HttpResult::code() const { return JsonMember(body, "code"); }
std::string HttpResult::message() const { return JsonMember(body, "message"); }

HttpResult HttpCall(uint16_t port, std::string_view method, const std::string& target,
                    const std::string& body, const HttpHeaders& headers,
                    const std::string& token) {
  HttpResult out;
  try {
    boost::asio::io_context io;
    boost::beast::tcp_stream stream(io);
    stream.expires_after(std::chrono::seconds(30));
    stream.connect(
        boost::asio::ip::tcp::endpoint(boost::asio::ip::make_address("127.0.0.1"), port));
    http::request<http::string_body> req;
    req.method_string(boost::beast::string_view(method.data(), method.size()));
    req.target(target);
    req.version(11);
    req.set(http::field::host, "127.0.0.1");
    if (!token.empty()) req.set(http::field::authorization, "Bearer " + token);
    for (const auto& [name, value] : headers) req.insert(name, value);
    req.body() = body;
    req.prepare_payload();
    http::write(stream, req);
    boost::beast::flat_buffer buffer;
    http::response<http::string_body> res;
    http::read(stream, buffer, res);
    out.status = static_cast<int>(res.result_int());
    for (const auto& field : res) {
      out.headers.emplace_back(std::string(field.name_string()), std::string(field.value()));
    }
    out.body = res.body();
  } catch (const std::exception& e) {
    ADD_FAILURE() << "HTTP " << method << " " << target << ": " << e.what();
  }
  return out;
}

}  // namespace converge::testing
