// The HTTP side of push delivery (docs/push.md): the endpoint URL, the request converge sends
// for an event (CloudEvents binary or structured mode, signed), and the Boost.Beast client
// that sends it (PushTransport of push_delivery.h).
//
// Signature: every request carries
//   Converge-Signature: t=<unix seconds>,v1=<hex>,v2=<hex>
// v1 = HMAC-SHA256(secret, "<t>." + body) (the body only: kept for receivers written for it);
// v2 = HMAC-SHA256(secret, "<t>." + <signed headers> + "\n" + body), where the signed headers
// are Content-Type and every ce-* header (names lower-cased, sorted, "name:value\n" each), so
// that in binary mode the event's attributes cannot be changed in transit either. The exact
// recipe, with a Python verifier, is in docs/push.md.
//
// Client: one pool of idle keep-alive connections per endpoint (scheme, host, port); a request
// takes an idle connection or opens one (TLS for https, verifying the certificate and host
// name against the system's trust store, or only against the subscription's ca_file), and gives it
// back after a complete keep-alive response. A request on a reused connection that fails before any
// byte of the answer (the endpoint closed it while idle) is sent once more on a new connection. The
// whole request, connecting included, is bounded by the subscription's timeout. Thread-safety:
// PushHttpClient runs on one io_context thread; Send may be called from any thread (it posts).
#pragma once

#include <boost/asio/io_context.hpp>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "converge/status.h"
#include "server/push_delivery.h"

namespace converge::server {

struct PushUrl {
  bool https = false;
  std::string host;    // without brackets for IPv6
  uint16_t port = 0;   // 80 / 443 when the URL names none
  std::string target;  // path and query, "/" when empty
};

// An absolute http:// or https:// URL with a host and no user info or fragment.
// InvalidArgument naming the problem otherwise.
Result<PushUrl> ParsePushUrl(std::string_view url);

// What is sent for one stored record. FailedPrecondition when the record is not a converge
// event (it cannot be rendered; the runner dead-letters it).
struct RenderedPush {
  std::vector<std::pair<std::string, std::string>> headers;  // Content-Type included
  std::string body;
};
Result<RenderedPush> RenderPush(PushMode mode, std::string_view stored_record);

// The signed-headers part of v2: Content-Type and every ce-* header of `headers`, names
// lower-cased, sorted by name then value, each as "name:value\n".
std::string PushSignedHeaders(const std::vector<std::pair<std::string, std::string>>& headers);

// "t=<unix_seconds>,v1=<hex>,v2=<hex>" for a request with `headers` (those converge sets from
// the rendering: Content-Type and the ce-* headers) and `body`.
std::string PushSignature(std::string_view secret, int64_t unix_seconds,
                          const std::vector<std::pair<std::string, std::string>>& headers,
                          std::string_view body);

// One endpoint's settings, as the client needs them.
struct PushTarget {
  std::string subscription;  // sent as Converge-Subscription
  PushUrl url;
  PushMode mode = PushMode::kStructured;
  std::string secret;
  int64_t timeout_ms = 10'000;
  std::string ca_file;  // https: the PEM certificates trusted instead of the system's store
};

// Ok when `path` is a readable file of PEM certificates OpenSSL accepts as trust anchors;
// InvalidArgument saying why not.
Status CheckPushCaFile(const std::string& path);

class PushHttpClient : public PushTransport {
 public:
  PushHttpClient(boost::asio::io_context& io, Env& env, PushTarget target);
  ~PushHttpClient() override;

  void Send(const PushRequest& request, std::function<void(PushOutcome)> done) override;

 private:
  struct Impl;
  std::shared_ptr<Impl> impl_;
};

}  // namespace converge::server
