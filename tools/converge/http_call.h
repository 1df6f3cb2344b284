// One HTTP/1.1 request from a command (converge saga, topics, groups, ...) to a running
// `converge serve`, over http:// or https://.
#pragma once

#include <boost/beast/http/verb.hpp>
#include <chrono>
#include <string>
#include <utility>
#include <vector>

#include "converge/status.h"

namespace converge::cli {

struct HttpCallReply {
  int status = 0;
  std::string body;
  std::string etag;  // the reply's ETag, if any
};

using HttpCallHeaders = std::vector<std::pair<std::string, std::string>>;

// Where a command's requests go and how.
struct HttpEndpoint {
  std::string server;  // "http://host:port" or "https://host:port"
  std::string token;   // bearer credential; none when empty
  // https: the PEM file of the CA (or the self-signed certificate) the server's certificate
  // must chain to; empty: the system's trust store. The host name is always verified.
  std::string cacert;
  std::chrono::seconds timeout{30};
};

// Percent-encodes everything but RFC 3986's unreserved characters (one path segment).
std::string EscapePathSegment(const std::string& s);

// Sends one request with `body` as JSON (none when empty; `content_type` overrides) and
// `headers`. Another
// scheme than http/https is InvalidArgument; Unavailable when the server cannot be reached
// (or its certificate is refused) within the timeout.
Result<HttpCallReply> HttpCall(const HttpEndpoint& endpoint, boost::beast::http::verb method,
                               const std::string& target, const std::string& body,
                               const std::string& content_type = "application/json",
                               const HttpCallHeaders& headers = {});

// The same over http:// with no CA file.
Result<HttpCallReply> HttpCall(const std::string& server, const std::string& token,
                               boost::beast::http::verb method, const std::string& target,
                               const std::string& body, std::chrono::seconds timeout);

}  // namespace converge::cli
