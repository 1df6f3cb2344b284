#include "server/push_http_client.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <algorithm>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/connect.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <boost/url/parse.hpp>
#include <cctype>
#include <charconv>
#include <deque>

#include "converge/event.h"
#include "wire/cloudevents_binary.h"

namespace converge::server {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
using tcp = asio::ip::tcp;
namespace wire = ::converge::internal::wire;

Result<PushUrl> ParsePushUrl(std::string_view text) {
  auto parsed = boost::urls::parse_absolute_uri(text);
  if (!parsed) {
    return InvalidArgumentError("endpoint '" + std::string(text) +
                                "' is not an absolute URL: " + parsed.error().message());
  }
  const boost::urls::url_view& u = *parsed;
  PushUrl out;
  const std::string scheme(u.scheme());
  if (scheme == "https") {
    out.https = true;
  } else if (scheme != "http") {
    return InvalidArgumentError("endpoint '" + std::string(text) +
                                "': only http and https URLs are supported");
  }
  if (u.has_userinfo()) {
    return InvalidArgumentError(
        "endpoint: user info in the URL is not supported (use the "
        "signature to authenticate converge)");
  }
  out.host = u.host_address();
  if (out.host.empty()) return InvalidArgumentError("endpoint: the URL has no host");
  if (u.has_port()) {
    const std::string_view p = u.port();
    unsigned v = 0;
    auto [end, ec] = std::from_chars(p.data(), p.data() + p.size(), v);
    if (ec != std::errc() || end != p.data() + p.size() || v == 0 || v > 65535) {
      return InvalidArgumentError("endpoint: bad port '" + std::string(p) + "'");
    }
    out.port = static_cast<uint16_t>(v);
  } else {
    out.port = out.https ? 443 : 80;
  }
  out.target = std::string(u.encoded_path());
  if (out.target.empty()) out.target = "/";
  if (u.has_query()) out.target += "?" + std::string(u.encoded_query());
  return out;
}

Result<RenderedPush> RenderPush(PushMode mode, std::string_view stored_record) {
  Result<Event> decoded = DecodeBinary(stored_record);
  if (!decoded.ok()) {
    return FailedPreconditionError("the record is not a converge event: " +
                                   std::string(decoded.status().message()));
  }
  const Event& e = *decoded;
  RenderedPush out;
  if (mode == PushMode::kStructured) {
    out.headers.emplace_back("Content-Type", "application/cloudevents+json");
    CONVERGE_RETURN_IF_ERROR(AppendJson(e, &out.body));
    return out;
  }
  wire::AppendBinaryModeHeaders(e, &out.headers);
  out.body = e.data();
  return out;
}

namespace {

std::string HmacHex(std::string_view secret, std::string_view text) {
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int mac_len = 0;
  HMAC(EVP_sha256(), secret.data(), static_cast<int>(secret.size()),
       reinterpret_cast<const unsigned char*>(text.data()), text.size(), mac, &mac_len);
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  for (unsigned i = 0; i < mac_len; ++i) {
    out += kHex[mac[i] >> 4];
    out += kHex[mac[i] & 15];
  }
  return out;
}

}  // namespace

std::string PushSignedHeaders(const std::vector<std::pair<std::string, std::string>>& headers) {
  std::vector<std::pair<std::string, std::string>> signed_headers;
  for (const auto& [name, value] : headers) {
    std::string lower(name);
    for (char& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    if (lower == "content-type" || lower.rfind("ce-", 0) == 0) {
      signed_headers.emplace_back(std::move(lower), value);
    }
  }
  std::sort(signed_headers.begin(), signed_headers.end());
  std::string out;
  for (const auto& [name, value] : signed_headers) {
    out += name;
    out += ':';
    out += value;
    out += '\n';
  }
  return out;
}

std::string PushSignature(std::string_view secret, int64_t unix_seconds,
                          const std::vector<std::pair<std::string, std::string>>& headers,
                          std::string_view body) {
  const std::string t = std::to_string(unix_seconds);
  std::string v1_text = t + ".";
  v1_text.append(body);
  std::string v2_text = t + "." + PushSignedHeaders(headers) + "\n";
  v2_text.append(body);
  return "t=" + t + ",v1=" + HmacHex(secret, v1_text) + ",v2=" + HmacHex(secret, v2_text);
}

Status CheckPushCaFile(const std::string& path) {
  asio::ssl::context ctx(asio::ssl::context::tls_client);
  boost::system::error_code ec;
  ctx.load_verify_file(path, ec);
  if (ec) {
    return InvalidArgumentError("cannot load " + path + " as PEM certificates: " + ec.message());
  }
  return Status::Ok();
}

// ---------------------------------------------------------------------------------------
// The client

namespace {

// One connection, plain or TLS.
struct Connection {
  std::unique_ptr<beast::tcp_stream> tcp;
  std::unique_ptr<beast::ssl_stream<beast::tcp_stream>> tls;
  beast::flat_buffer buffer;

  beast::tcp_stream& lowest() { return tls ? beast::get_lowest_layer(*tls) : *tcp; }
};

}  // namespace

struct PushHttpClient::Impl : std::enable_shared_from_this<Impl> {
  Impl(asio::io_context& io_context, Env& e, PushTarget t)
      : io(io_context), env(e), target(std::move(t)), ssl(asio::ssl::context::tls_client) {
    if (target.url.https) {
      if (target.ca_file.empty()) {
        ssl.set_default_verify_paths();
      } else {
        // Checked when the config was read; a file changed since fails every request (retried)
        // rather than falling back to the system's store.
        boost::system::error_code ec;
        ssl.load_verify_file(target.ca_file, ec);
        if (ec) trust_error = "cannot load ca_file " + target.ca_file + ": " + ec.message();
      }
      ssl.set_verify_mode(asio::ssl::verify_peer);
    }
    host_header = target.url.host.find(':') != std::string::npos ? "[" + target.url.host + "]"
                                                                 : target.url.host;
    if (target.url.port != (target.url.https ? 443 : 80)) {
      host_header += ":" + std::to_string(target.url.port);
    }
  }

  asio::awaitable<std::unique_ptr<Connection>> Connect(
      std::chrono::steady_clock::time_point deadline) {
    tcp::resolver resolver(io);
    auto endpoints = co_await resolver.async_resolve(
        target.url.host, std::to_string(target.url.port), asio::use_awaitable);
    auto c = std::make_unique<Connection>();
    if (target.url.https) {
      c->tls = std::make_unique<beast::ssl_stream<beast::tcp_stream>>(io, ssl);
      if (!SSL_set_tlsext_host_name(c->tls->native_handle(), target.url.host.c_str())) {
        throw boost::system::system_error(beast::error_code(static_cast<int>(::ERR_get_error()),
                                                            asio::error::get_ssl_category()));
      }
      c->tls->set_verify_callback(asio::ssl::host_name_verification(target.url.host));
    } else {
      c->tcp = std::make_unique<beast::tcp_stream>(io);
    }
    c->lowest().expires_at(deadline);
    co_await c->lowest().async_connect(endpoints, asio::use_awaitable);
    c->lowest().socket().set_option(tcp::no_delay(true));
    if (c->tls)
      co_await c->tls->async_handshake(asio::ssl::stream_base::client, asio::use_awaitable);
    co_return c;
  }

  // Sends on `c`; true in *keep when the connection may be reused.
  asio::awaitable<bhttp::response<bhttp::string_body>> Exchange(
      Connection& c, const bhttp::request<bhttp::string_body>& req, bool* got_bytes) {
    bhttp::response_parser<bhttp::string_body> parser;
    parser.body_limit(1 << 20);
    if (c.tls) {
      co_await bhttp::async_write(*c.tls, req, asio::use_awaitable);
      co_await bhttp::async_read_header(*c.tls, c.buffer, parser, asio::use_awaitable);
      *got_bytes = true;
      co_await bhttp::async_read(*c.tls, c.buffer, parser, asio::use_awaitable);
    } else {
      co_await bhttp::async_write(*c.tcp, req, asio::use_awaitable);
      co_await bhttp::async_read_header(*c.tcp, c.buffer, parser, asio::use_awaitable);
      *got_bytes = true;
      co_await bhttp::async_read(*c.tcp, c.buffer, parser, asio::use_awaitable);
    }
    co_return parser.release();
  }

  asio::awaitable<void> Run(PushRequest request, std::function<void(PushOutcome)> done) {
    PushOutcome outcome;
    Result<RenderedPush> rendered = RenderPush(target.mode, request.value);
    if (!rendered.ok()) {
      // Not sendable now or ever: as a permanent refusal.
      outcome.status = 400;
      outcome.detail = std::string(rendered.status().message());
      done(std::move(outcome));
      co_return;
    }
    bhttp::request<bhttp::string_body> req{bhttp::verb::post, target.url.target, 11};
    req.set(bhttp::field::host, host_header);
    req.set(bhttp::field::user_agent, "converge-push");
    for (auto& [name, value] : rendered->headers) req.set(name, value);
    req.set("Converge-Subscription", target.subscription);
    req.set("Converge-Delivery-Attempt", std::to_string(request.attempt));
    // The event's position in the log: a receiver may key its own bookkeeping on it.
    req.set("Converge-Partition", std::to_string(request.partition));
    req.set("Converge-Offset", std::to_string(request.offset));
    const int64_t now_s = env.clock().NowWallNanos() / 1'000'000'000;
    req.set("Converge-Signature",
            PushSignature(target.secret, now_s, rendered->headers, rendered->body));
    req.body() = std::move(rendered->body);
    req.keep_alive(true);
    req.prepare_payload();

    const auto deadline =
        std::chrono::steady_clock::now() + std::chrono::milliseconds(target.timeout_ms);
    for (int round = 0; round < 2; ++round) {
      std::unique_ptr<Connection> c;
      bool reused = false;
      if (!idle.empty()) {
        c = std::move(idle.back());
        idle.pop_back();
        reused = true;
      }
      bool got_bytes = false;
      try {
        if (c == nullptr) {
          if (!trust_error.empty()) throw std::runtime_error(trust_error);
          c = co_await Connect(deadline);
        }
        c->lowest().expires_at(deadline);
        bhttp::response<bhttp::string_body> res = co_await Exchange(*c, req, &got_bytes);
        outcome.kind = PushOutcome::Kind::kHttp;
        outcome.status = res.result_int();
        if (auto it = res.find(bhttp::field::retry_after); it != res.end()) {
          outcome.retry_after_ms = ParseRetryAfterMs(it->value(), env.clock().NowWallMicros());
        }
        if (outcome.status < 200 || outcome.status >= 300) {
          outcome.detail = res.body().substr(0, 200);
        }
        if (res.keep_alive() && !closed) {
          c->lowest().expires_never();
          idle.push_back(std::move(c));
        }
        done(std::move(outcome));
        co_return;
      } catch (const boost::system::system_error& e) {
        const bool timed_out = e.code() == beast::error::timeout;
        if (reused && !got_bytes && !timed_out && round == 0) continue;  // a stale connection
        outcome.kind = timed_out ? PushOutcome::Kind::kTimeout : PushOutcome::Kind::kConnectError;
        outcome.detail = e.code().message();
        done(std::move(outcome));
        co_return;
      } catch (const std::exception& e) {
        outcome.kind = PushOutcome::Kind::kConnectError;
        outcome.detail = e.what();
        done(std::move(outcome));
        co_return;
      }
    }
  }

  asio::io_context& io;
  Env& env;
  PushTarget target;
  asio::ssl::context ssl;
  std::string host_header;
  std::string trust_error;                        // set when the ca_file could not be loaded
  std::vector<std::unique_ptr<Connection>> idle;  // on the io thread
  bool closed = false;
};

PushHttpClient::PushHttpClient(asio::io_context& io, Env& env, PushTarget target)
    : impl_(std::make_shared<Impl>(io, env, std::move(target))) {}

PushHttpClient::~PushHttpClient() {
  // Idle connections close on the io thread; requests in flight end by their timeout.
  asio::post(impl_->io, [impl = impl_] {
    impl->closed = true;
    impl->idle.clear();
  });
}

void PushHttpClient::Send(const PushRequest& request, std::function<void(PushOutcome)> done) {
  asio::co_spawn(
      impl_->io,
      [impl = impl_, request, done = std::move(done)]() mutable {
        return impl->Run(std::move(request), std::move(done));
      },
      asio::detached);
}

}  // namespace converge::server
