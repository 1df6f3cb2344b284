// One HTTP/1.1 request from a command (converge saga, converge reconcile) to a running
// `converge serve`.
#pragma once

#include <boost/beast/http/verb.hpp>
#include <chrono>
#include <string>

#include "converge/status.h"

namespace converge::cli {

struct HttpCallReply {
  int status = 0;
  std::string body;
};

// Percent-encodes everything but RFC 3986's unreserved characters (one path segment).
std::string EscapePathSegment(const std::string& s);

// Sends one request to `server` ("http://host:port"; other schemes are InvalidArgument) with
// `token` as its bearer credential (none when empty) and `body` as JSON (none when empty);
// Unavailable when the server cannot be reached within `timeout`.
Result<HttpCallReply> HttpCall(const std::string& server, const std::string& token,
                               boost::beast::http::verb method, const std::string& target,
                               const std::string& body, std::chrono::seconds timeout);

}  // namespace converge::cli
