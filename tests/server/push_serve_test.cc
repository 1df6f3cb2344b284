// Black-box tests of push delivery (docs/push.md): the real `converge serve` POSTs events to a
// small HTTP endpoint run by this test process, which checks every request's signature and
// answers as each test tells it to (2xx, 4xx, 5xx, 429 with Retry-After, slowly, or not at
// all). Covers: the subscription API (auth before input, bad bodies change nothing), order per
// key at concurrency > 1, retries, dead letters, an endpoint down then up, and a SIGKILL of
// converge mid-delivery, the signature (v2) covering the binary-mode ce-* headers, and https
// endpoints (a certificate made at test time, trusted through ca_file; wrong name, untrusted).
#include <gtest/gtest.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/json.hpp>
#include <cctype>
#include <chrono>
#include <condition_variable>
#include <fstream>
#include <functional>
#include <map>
#include <mutex>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "converge/client.h"
#include "converge/event.h"
#include "serve_process.h"
#include "support/run_command.h"
#include "test_util.h"

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wrestrict"  // GCC bug 105329 on "literal" + std::string
#endif

namespace converge {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
namespace json = boost::json;
using tcp = asio::ip::tcp;
using Clock = std::chrono::steady_clock;
using testing::HttpCall;
using testing::Must;
using testing::RunCommand;
using testing::ServeProcess;

constexpr char kAdmin[] = "admin-token-0123456789";
constexpr char kService[] = "service-token-0123456789";
constexpr char kSecret[] = "push-secret-0123456789abcdef";

std::string Hex(const unsigned char* p, size_t n) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  for (size_t i = 0; i < n; ++i) {
    out += kHex[p[i] >> 4];
    out += kHex[p[i] & 15];
  }
  return out;
}

using Headers = std::vector<std::pair<std::string, std::string>>;

std::string HmacHex(const std::string& secret, const std::string& text) {
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  HMAC(EVP_sha256(), secret.data(), static_cast<int>(secret.size()),
       reinterpret_cast<const unsigned char*>(text.data()), text.size(), mac, &len);
  return Hex(mac, len);
}

bool SameDigest(const std::string& want, const std::string& got) {
  return want.size() == got.size() && CRYPTO_memcmp(want.data(), got.data(), want.size()) == 0;
}

// The verification recipe of docs/push.md, written here from the document (not with the
// server's code): split "t=...,v1=...,v2=...", refuse a timestamp more than 5 minutes away,
// recompute v2 = HMAC-SHA256 over "<t>." + the content-type and ce-* headers (lower-cased
// names, sorted, "name:value\n" each) + "\n" + body, and v1 over "<t>." + body.
bool VerifySignature(const Headers& headers, const std::string& body, const std::string& secret) {
  std::string header;
  std::vector<std::pair<std::string, std::string>> signed_headers;
  for (const auto& [name, value] : headers) {
    std::string lower = name;
    for (char& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    if (lower == "converge-signature") header = value;
    if (lower == "content-type" || lower.rfind("ce-", 0) == 0) {
      signed_headers.emplace_back(lower, value);
    }
  }
  std::string t, v1, v2;
  size_t start = 0;
  while (start <= header.size()) {
    size_t end = header.find(',', start);
    if (end == std::string::npos) end = header.size();
    const std::string part = header.substr(start, end - start);
    if (part.rfind("t=", 0) == 0) t = part.substr(2);
    if (part.rfind("v1=", 0) == 0) v1 = part.substr(3);
    if (part.rfind("v2=", 0) == 0) v2 = part.substr(3);
    start = end + 1;
  }
  if (t.empty() || v1.empty() || v2.empty()) return false;
  const long long ts = std::atoll(t.c_str());
  const long long now = std::chrono::duration_cast<std::chrono::seconds>(
                            std::chrono::system_clock::now().time_since_epoch())
                            .count();
  if (std::llabs(now - ts) > 300) return false;
  std::sort(signed_headers.begin(), signed_headers.end());
  std::string text = t + ".";
  for (const auto& [name, value] : signed_headers) text += name + ":" + value + "\n";
  text += "\n" + body;
  return SameDigest(HmacHex(secret, text), v2) && SameDigest(HmacHex(secret, t + "." + body), v1);
}

// One request the endpoint received.
struct Received {
  std::string subscription;  // Converge-Subscription
  std::string id;            // ce-id (binary) or the event's "id" (structured)
  std::string subject;       // the event's subject: "<key>/<seq>" in these tests
  std::string body;
  std::string content_type;
  Headers headers;  // all of them, as received
  int attempt = 0;
  // Converge-Partition / Converge-Offset: the event's position in the log (-1 when absent).
  long long partition = -1;
  long long offset = -1;
  bool signature_ok = false;
};

struct Answer {
  int status = 200;
  std::string retry_after;  // header, if set
  int delay_ms = 0;         // before answering
};

// A small HTTP/1.1 server on 127.0.0.1 with a thread per connection (keep-alive honoured).
class TestEndpoint {
 public:
  using Handler = std::function<Answer(const Received&)>;

  explicit TestEndpoint(Handler handler, uint16_t port = 0) : handler_(std::move(handler)) {
    Open(port);
  }
  // HTTPS with this certificate and key (PEM files).
  TestEndpoint(Handler handler, const std::string& cert_file, const std::string& key_file)
      : handler_(std::move(handler)) {
    tls_ = std::make_unique<asio::ssl::context>(asio::ssl::context::tls_server);
    tls_->use_certificate_chain_file(cert_file);
    tls_->use_private_key_file(key_file, asio::ssl::context::pem);
    Open(0);
  }
  ~TestEndpoint() { Close(); }

  uint16_t port() const { return port_; }
  std::string url() const { return "http://127.0.0.1:" + std::to_string(port_) + "/events"; }

  // Stops listening and ends every connection (converge then sees connection errors).
  void Close() {
    if (!accept_thread_.joinable()) return;
    stopping_ = true;
    boost::system::error_code ec;
    {
      // A blocked accept() is not woken by closing its socket: wake it with a connection.
      tcp::socket wake(io_);
      wake.connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), port_), ec);
      accept_thread_.join();
    }
    acceptor_.close(ec);
    {
      std::lock_guard lock(mu_);
      for (tcp::socket* s : sockets_) s->shutdown(tcp::socket::shutdown_both, ec);
    }
    for (std::thread& t : conn_threads_) t.join();
    conn_threads_.clear();
  }
  // Listens again on the same port.
  void Open(uint16_t port) {
    stopping_ = false;
    acceptor_ = tcp::acceptor(io_);
    tcp::endpoint ep(asio::ip::make_address("127.0.0.1"), port);
    acceptor_.open(ep.protocol());
    acceptor_.set_option(asio::socket_base::reuse_address(true));
    acceptor_.bind(ep);
    acceptor_.listen();
    port_ = acceptor_.local_endpoint().port();
    accept_thread_ = std::thread([this] { AcceptLoop(); });
  }

  int connections() const { return connections_.load(); }
  int handshakes() const { return handshakes_.load(); }
  std::vector<Received> received() {
    std::lock_guard lock(mu_);
    return received_;
  }
  size_t count() {
    std::lock_guard lock(mu_);
    return received_.size();
  }
  // Waits until `pred` holds for what was received (polls; the machine may be slow).
  bool WaitFor(const std::function<bool(const std::vector<Received>&)>& pred,
               int64_t timeout_ms = 60'000) {
    const auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
    std::unique_lock lock(mu_);
    while (!pred(received_)) {
      if (cv_.wait_until(lock, deadline) == std::cv_status::timeout) return pred(received_);
    }
    return true;
  }

 private:
  void AcceptLoop() {
    while (!stopping_) {
      auto socket = std::make_unique<tcp::socket>(io_);
      boost::system::error_code ec;
      acceptor_.accept(*socket, ec);
      if (ec || stopping_) return;
      connections_.fetch_add(1);
      std::lock_guard lock(mu_);
      tcp::socket* raw = socket.release();
      sockets_.insert(raw);
      conn_threads_.emplace_back([this, raw] { Serve(raw); });
    }
  }

  void Serve(tcp::socket* socket) {
    if (tls_ != nullptr) {
      asio::ssl::stream<tcp::socket&> stream(*socket, *tls_);
      boost::system::error_code ec;
      stream.handshake(asio::ssl::stream_base::server, ec);
      if (!ec) {
        handshakes_.fetch_add(1);
        ServeStream(stream);
      }
    } else {
      ServeStream(*socket);
    }
    std::lock_guard lock(mu_);
    boost::system::error_code ec;
    socket->close(ec);
    sockets_.erase(socket);
    delete socket;
  }

  template <class Stream>
  void ServeStream(Stream& stream) {
    beast::flat_buffer buffer;
    boost::system::error_code ec;
    while (!stopping_) {
      bhttp::request<bhttp::string_body> req;
      bhttp::read(stream, buffer, req, ec);
      if (ec) break;
      Received r;
      r.body = req.body();
      r.content_type = std::string(req[bhttp::field::content_type]);
      r.attempt = std::atoi(std::string(req["Converge-Delivery-Attempt"]).c_str());
      r.subscription = std::string(req["Converge-Subscription"]);
      if (auto p = req.find("Converge-Partition"); p != req.end())
        r.partition = std::atoll(std::string(p->value()).c_str());
      if (auto o = req.find("Converge-Offset"); o != req.end())
        r.offset = std::atoll(std::string(o->value()).c_str());
      for (const auto& field : req) {
        r.headers.emplace_back(std::string(field.name_string()), std::string(field.value()));
      }
      r.signature_ok = VerifySignature(r.headers, r.body, kSecret);
      if (r.content_type == "application/cloudevents+json") {
        json::value v = json::parse(r.body, ec);
        if (!ec && v.is_object()) {
          const json::object& o = v.as_object();
          if (auto* id = o.if_contains("id"); id && id->is_string()) r.id = id->as_string();
          if (auto* s = o.if_contains("subject"); s && s->is_string()) r.subject = s->as_string();
        }
        ec = {};
      } else {
        r.id = std::string(req["ce-id"]);
        r.subject = std::string(req["ce-subject"]);
      }
      Answer a = handler_(r);
      if (a.delay_ms > 0) std::this_thread::sleep_for(std::chrono::milliseconds(a.delay_ms));
      bhttp::response<bhttp::string_body> res{static_cast<bhttp::status>(a.status), 11};
      if (!a.retry_after.empty()) res.set(bhttp::field::retry_after, a.retry_after);
      res.body() = a.status < 300 ? "" : "{\"why\":\"test\"}";
      res.keep_alive(req.keep_alive());
      res.prepare_payload();
      {
        // Recorded before the answer is written, so that the order here is the order in which
        // converge could act on the answers.
        std::lock_guard lock(mu_);
        if (a.status >= 200 && a.status < 300) r.attempt = -r.attempt;  // mark: acked
        received_.push_back(r);
      }
      bhttp::write(stream, res, ec);
      cv_.notify_all();
      if (ec || !req.keep_alive()) break;
    }
  }

  Handler handler_;
  asio::io_context io_;
  tcp::acceptor acceptor_{io_};
  uint16_t port_ = 0;
  std::atomic<bool> stopping_{false};
  std::atomic<int> connections_{0};
  std::atomic<int> handshakes_{0};  // TLS handshakes that succeeded
  std::unique_ptr<asio::ssl::context> tls_;
  std::thread accept_thread_;
  std::vector<std::thread> conn_threads_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::set<tcp::socket*> sockets_;
  std::vector<Received> received_;
};

bool Acked(const Received& r) { return r.attempt < 0; }

std::string Config(const std::string& extra = "") {
  return std::string("auth:\n  tokens:\n") + "    - service: ops\n      token: " + kAdmin +
         "\n      admin: true\n" + "    - service: orders\n      token: " + kService +
         "\n      publish: ['*']\n      subscribe: ['*']\n" + extra;
}

class PushTest : public ::testing::Test {
 protected:
  void StartServer(const std::string& extra_config = "", std::string data_dir = "") {
    client_.reset();
    server_ = std::make_unique<ServeProcess>(Config(extra_config), std::move(data_dir));
    Status s = server_->Start();
    ASSERT_TRUE(s.ok()) << s.ToString();
  }
  testing::HttpResult Call(const std::string& method, const std::string& target,
                           const std::string& body = "", const std::string& token = kAdmin) {
    testing::HttpHeaders headers;
    if (!body.empty()) headers.emplace_back("Content-Type", "application/json");
    return HttpCall(server_->port(), method, target, body, headers, token);
  }
  void CreateTopic(const std::string& name, int partitions) {
    auto r = Call("POST", "/v1/topics",
                  "{\"name\":\"" + name + "\",\"partitions\":" + std::to_string(partitions) + "}");
    ASSERT_EQ(r.status, 201) << r.body;
  }
  void Subscribe(const std::string& name, const std::string& topic, const std::string& url,
                 const std::string& more = "") {
    auto r = Call("POST", "/v1/subscriptions",
                  "{\"name\":\"" + name + "\",\"topic\":\"" + topic + "\",\"endpoint\":\"" + url +
                      "\",\"secret\":\"" + kSecret + "\"" + more + "}");
    ASSERT_EQ(r.status, 201) << r.body;
  }
  // Publishes events with subject "<key>/<seq>" and partitionkey <key>.
  void Publish(const std::string& topic, const std::string& key, int seq) {
    Event e;
    e.set_source("/push-test");
    e.set_id(key + "-" + std::to_string(seq));
    e.set_type("com.example.push");
    e.set_subject(key + "/" + std::to_string(seq));
    e.set_partitionkey(key);
    ASSERT_TRUE(e.SetJsonData("{\"seq\":" + std::to_string(seq) + "}").ok());
    if (client_ == nullptr)
      client_ = std::make_unique<client::Client>(server_->ClientOptions(kService));
    Result<client::Published> p = client_->PublishOne(topic, e);
    ASSERT_TRUE(p.ok()) << p.status().ToString();
  }
  std::string Metrics() { return Call("GET", "/metrics").body; }
  // Polls /metrics until it has `line` (an ack is counted just after the endpoint answered).
  bool WaitMetric(const std::string& line, int64_t timeout_ms = 20'000) {
    const auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
    while (Metrics().find(line) == std::string::npos) {
      if (Clock::now() > deadline) return false;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return true;
  }
  std::string DeadLetters(const std::string& topic, const std::string& group) {
    auto r =
        Call("GET", "/v1/topics/" + topic + "/groups/" + group + "/dead-letters", "", kService);
    EXPECT_EQ(r.status, 200) << r.body;
    return r.body;
  }

  std::unique_ptr<ServeProcess> server_;
  std::unique_ptr<client::Client> client_;
};

TEST_F(PushTest, SubscriptionApiAuthorizesBeforeReadingAndRejectsBadBodies) {
  StartServer();
  CreateTopic("orders", 1);
  const std::string good = std::string("{\"name\":\"s1\",\"topic\":\"orders\",\"endpoint\":") +
                           "\"http://127.0.0.1:9/x\"}";
  EXPECT_EQ(Call("POST", "/v1/subscriptions", good, "").status, 401);
  EXPECT_EQ(Call("POST", "/v1/subscriptions", good, "wrong-token-0123456789").status, 401);
  EXPECT_EQ(Call("POST", "/v1/subscriptions", good, kService).status, 403);
  // 403 even for a body that is not JSON: authorization comes first.
  EXPECT_EQ(Call("POST", "/v1/subscriptions", "{nope", kService).status, 403);
  EXPECT_EQ(Call("GET", "/v1/subscriptions", "", "").status, 401);

  const std::vector<std::string> bad = {
      "{nope",
      "[]",
      "{\"name\":\"s1\",\"topic\":\"orders\",\"endpoint\":\"ftp://127.0.0.1/x\"}",
      "{\"name\":\"s1\",\"topic\":\"orders\",\"endpoint\":\"file:///etc/passwd\"}",
      "{\"name\":\"s1\",\"topic\":\"orders\",\"endpoint\":\"not a url\"}",
      "{\"name\":\"s1\",\"topic\":\"orders\",\"endpoint\":\"http://u:p@127.0.0.1/x\"}",
      "{\"name\":\"s1\",\"topic\":\"orders\"}",
      "{\"topic\":\"orders\",\"endpoint\":\"http://127.0.0.1:9/x\"}",
      "{\"name\":\"bad name\",\"topic\":\"orders\",\"endpoint\":\"http://127.0.0.1:9/x\"}",
      "{\"name\":\"s1\",\"topic\":\"_internal\",\"endpoint\":\"http://127.0.0.1:9/x\"}",
      "{\"name\":\"s1\",\"topic\":\"orders\",\"endpoint\":\"http://127.0.0.1:9/x\",\"mode\":\"x\"}",
      "{\"name\":\"s1\",\"topic\":\"orders\",\"endpoint\":\"http://127.0.0.1:9/"
      "x\",\"max_concurrency\":0}",
      "{\"name\":\"s1\",\"topic\":\"orders\",\"endpoint\":\"http://127.0.0.1:9/"
      "x\",\"timeout_ms\":-1}",
      "{\"name\":\"s1\",\"topic\":\"orders\",\"endpoint\":\"http://127.0.0.1:9/"
      "x\",\"secret\":\"short\"}",
      "{\"name\":\"s1\",\"topic\":\"orders\",\"endpoint\":\"http://127.0.0.1:9/x\",\"extra\":1}",
      // A file on converge's machine is for the serve config only.
      "{\"name\":\"s1\",\"topic\":\"orders\",\"endpoint\":\"https://127.0.0.1:9/"
      "x\",\"ca_file\":\"/etc/passwd\"}",
      "{\"name\":\"s1\",\"topic\":\"orders\",\"endpoint\":\"http://127.0.0.1:9/x\","
      "\"initial_backoff_ms\":500,\"max_backoff_ms\":100}",
  };
  for (const std::string& body : bad) {
    auto r = Call("POST", "/v1/subscriptions", body);
    EXPECT_EQ(r.status, 400) << body << " -> " << r.body;
    EXPECT_EQ(r.code(), body == "{nope" || body == "[]" ? "INVALID_JSON" : "INVALID_ARGUMENT")
        << r.body;
  }
  auto listed = Call("GET", "/v1/subscriptions");
  EXPECT_EQ(listed.status, 200);
  EXPECT_EQ(listed.body, "{\"subscriptions\":[]}");
  EXPECT_EQ(Call("POST", "/v1/subscriptions",
                 "{\"name\":\"s1\",\"topic\":\"nosuch\",\"endpoint\":\"http://127.0.0.1:9/x\"}")
                .status,
            404);

  auto created = Call("POST", "/v1/subscriptions", good);
  ASSERT_EQ(created.status, 201) << created.body;
  EXPECT_NE(created.body.find("\"secret\":\""), std::string::npos);  // generated: shown once
  EXPECT_EQ(Call("POST", "/v1/subscriptions", good).status, 409);
  auto got = Call("GET", "/v1/subscriptions/s1", "", kService);
  EXPECT_EQ(got.status, 200);
  EXPECT_EQ(got.body.find("secret"), std::string::npos) << got.body;
  EXPECT_NE(got.body.find("\"group\":\"push-s1\""), std::string::npos) << got.body;
  EXPECT_EQ(Call("DELETE", "/v1/subscriptions/s1", "", kService).status, 403);
  EXPECT_EQ(Call("DELETE", "/v1/subscriptions/s1").status, 204);
  EXPECT_EQ(Call("GET", "/v1/subscriptions/s1").status, 404);
  EXPECT_EQ(Call("DELETE", "/v1/subscriptions/s1").status, 404);
}

// Many keys at concurrency 8: each key's events reach the endpoint in order, every request is
// signed, every event arrives; in both content modes.
TEST_F(PushTest, OrderPerKeyAcrossManyKeysSignedInBothModes) {
  for (const char* mode : {"structured", "binary"}) {
    SCOPED_TRACE(mode);
    // The first delivery of every third event fails (a 500), to mix retries into the order.
    TestEndpoint endpoint([&](const Received& r) {
      const int seq = std::atoi(r.subject.c_str() + r.subject.find('/') + 1);
      return Answer{r.attempt == 1 && seq % 3 == 1 ? 500 : 200, "", 0};
    });
    StartServer();
    CreateTopic("orders", 4);
    Subscribe("s", "orders", endpoint.url(),
              std::string(",\"mode\":\"") + mode +
                  "\",\"max_concurrency\":8,\"initial_backoff_ms\":10,\"max_backoff_ms\":50");
    constexpr int kKeys = 24, kPerKey = 12;
    for (int seq = 0; seq < kPerKey; ++seq) {
      for (int k = 0; k < kKeys; ++k) Publish("orders", "k" + std::to_string(k), seq);
    }
    ASSERT_TRUE(endpoint.WaitFor(
        [&](const std::vector<Received>& got) {
          std::set<std::string> acked;
          for (const Received& r : got) {
            if (Acked(r)) acked.insert(r.subject);
          }
          return acked.size() == static_cast<size_t>(kKeys * kPerKey);
        },
        30'000))
        << "received " << endpoint.count() << "\n"
        << DeadLetters("orders", "push-s") << server_->Log();
    std::map<std::string, int> next;  // per key: the next sequence number to be acked
    // Every request names its event's log position: one position per event (the same on a
    // retry), together every offset of every partition.
    std::map<std::string, std::pair<long long, long long>> position;
    std::map<std::pair<long long, long long>, std::string> event_at;
    for (const Received& r : endpoint.received()) {
      ASSERT_GE(r.partition, 0) << r.subject;
      ASSERT_LT(r.partition, 4) << r.subject;
      ASSERT_GE(r.offset, 0) << r.subject;
      auto [it, fresh] = position.emplace(r.subject, std::make_pair(r.partition, r.offset));
      EXPECT_EQ(it->second, std::make_pair(r.partition, r.offset)) << r.subject;
      auto [at, new_position] = event_at.emplace(it->second, r.subject);
      EXPECT_EQ(at->second, r.subject) << r.partition << "/" << r.offset;
    }
    std::map<long long, long long> per_partition;
    for (const auto& [pos, subject] : event_at) {
      EXPECT_EQ(pos.second, per_partition[pos.first]++) << "partition " << pos.first;
    }
    EXPECT_EQ(event_at.size(), static_cast<size_t>(kKeys * kPerKey));
    for (const Received& r : endpoint.received()) {
      EXPECT_TRUE(r.signature_ok) << r.subject;
      EXPECT_EQ(r.content_type, std::string(mode) == "binary" ? "application/json"
                                                              : "application/cloudevents+json");
      const std::string key = r.subject.substr(0, r.subject.find('/'));
      const int seq = std::atoi(r.subject.c_str() + r.subject.find('/') + 1);
      // A key's request is never for an event after one not yet acked.
      EXPECT_EQ(seq, next[key]) << "key " << key << " got " << seq << " before " << next[key];
      if (Acked(r)) next[key] = seq + 1;
    }
    // Connections are kept alive and reused: about one per concurrent request, not one per
    // request.
    EXPECT_LE(endpoint.connections(), 24) << endpoint.count() << " requests";
    EXPECT_TRUE(WaitMetric("converge_push_delivered_total{subscription=\"s\",topic=\"orders\"} " +
                           std::to_string(kKeys * kPerKey)))
        << Metrics();
    EXPECT_NE(Metrics().find("converge_push_request_duration_seconds_count"), std::string::npos);
    server_.reset();
  }
}

TEST_F(PushTest, RetriesServerErrorsHonoursRetryAfterAndTimesOutSlowEndpoints) {
  std::mutex mu;
  std::map<std::string, int> seen;
  Clock::time_point first_429;
  std::atomic<int64_t> retry_after_gap_ms{-1};
  TestEndpoint endpoint([&](const Received& r) {
    std::lock_guard lock(mu);
    const int n = seen[r.subject]++;
    if (r.subject == "a/0") return Answer{n < 2 ? 500 : 200, "", 0};
    if (r.subject == "b/0") {
      if (n == 0) {
        first_429 = Clock::now();
        return Answer{429, "2", 0};
      }
      if (n == 1) {
        retry_after_gap_ms =
            std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - first_429).count();
      }
      return Answer{200, "", 0};
    }
    if (r.subject == "c/0") return Answer{200, "", n == 0 ? 1500 : 0};  // past the timeout
    if (r.subject == "d/0") return Answer{n == 0 ? 408 : 200, "", 0};
    return Answer{200, "", 0};
  });
  StartServer();
  CreateTopic("orders", 2);
  Subscribe("s", "orders", endpoint.url(),
            ",\"timeout_ms\":500,\"initial_backoff_ms\":20,\"max_backoff_ms\":100,"
            "\"max_deliveries\":100");
  for (const char* key : {"a", "b", "c", "d"}) Publish("orders", key, 0);
  ASSERT_TRUE(endpoint.WaitFor([](const std::vector<Received>& got) {
    std::set<std::string> acked;
    for (const Received& r : got) {
      if (Acked(r)) acked.insert(r.subject);
    }
    return acked.size() == 4;
  })) << server_->Log();
  std::lock_guard lock(mu);
  // (At least: on a loaded machine an answer may also miss the 500 ms timeout.)
  EXPECT_GE(seen["a/0"], 3);
  EXPECT_GE(seen["b/0"], 2);
  EXPECT_GE(retry_after_gap_ms.load(), 1900);  // Retry-After: 2 (seconds), not the 20 ms backoff
  EXPECT_GE(seen["c/0"], 2);                   // the slow answer timed out and was retried
  EXPECT_GE(seen["d/0"], 2);
  EXPECT_NE(Metrics().find("converge_push_retried_total{subscription=\"s\",topic=\"orders\"}"),
            std::string::npos);
  EXPECT_EQ(DeadLetters("orders", "push-s").find("\"offset\""), std::string::npos);
}

TEST_F(PushTest, ClientErrorIsDeadLetteredAndTheKeyGoesOn) {
  TestEndpoint endpoint([](const Received& r) {
    return Answer{r.subject == "k/1" ? 400 : 200, "", 0};
  });
  StartServer();
  CreateTopic("orders", 1);
  Subscribe("s", "orders", endpoint.url());
  for (int i = 0; i < 3; ++i) Publish("orders", "k", i);
  ASSERT_TRUE(endpoint.WaitFor([](const std::vector<Received>& got) {
    return std::any_of(got.begin(), got.end(),
                       [](const Received& r) { return r.subject == "k/2" && Acked(r); });
  })) << server_->Log();
  int k1 = 0;
  for (const Received& r : endpoint.received()) k1 += r.subject == "k/1";
  EXPECT_EQ(k1, 1);  // a 4xx is final: not retried
  const std::string dead = DeadLetters("orders", "push-s");
  EXPECT_NE(dead.find("endpoint answered 400"), std::string::npos) << dead;
  EXPECT_NE(dead.find("k-1"), std::string::npos) << dead;
  EXPECT_TRUE(
      WaitMetric("converge_push_dead_lettered_total{subscription=\"s\",topic=\"orders\"} 1"));
}

TEST_F(PushTest, EndpointDownThenUpGetsEverything) {
  TestEndpoint endpoint([](const Received&) { return Answer{200, "", 0}; });
  const uint16_t port = endpoint.port();
  const std::string url = endpoint.url();
  endpoint.Close();  // down: connections refused
  StartServer();
  CreateTopic("orders", 2);
  Subscribe("s", "orders", url,
            ",\"initial_backoff_ms\":50,\"max_backoff_ms\":200,\"max_deliveries\":1000");
  for (int i = 0; i < 20; ++i) Publish("orders", "k" + std::to_string(i % 4), i);
  // Retries pile up while it is down.
  const auto deadline = Clock::now() + std::chrono::seconds(30);
  while (Clock::now() < deadline &&
         Metrics().find("converge_push_retried_total{subscription=\"s\",topic=\"orders\"} 0") !=
             std::string::npos) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  endpoint.Open(port);
  ASSERT_TRUE(endpoint.WaitFor([](const std::vector<Received>& got) {
    std::set<std::string> acked;
    for (const Received& r : got) {
      if (Acked(r)) acked.insert(r.subject);
    }
    return acked.size() == 20;
  })) << server_->Log();
  EXPECT_EQ(DeadLetters("orders", "push-s").find("\"offset\""), std::string::npos);
}

// converge is killed while requests are in flight (the endpoint answers slowly); after a
// restart on the same data everything is delivered, in order per key, and the subscription
// made through the API is still there.
TEST_F(PushTest, SigkillMidDeliveryLosesNothing) {
  std::atomic<bool> slow{true};
  TestEndpoint endpoint([&](const Received&) { return Answer{200, "", slow ? 200 : 0}; });
  StartServer();
  const std::string data_dir = server_->data_dir();
  CreateTopic("orders", 2);
  Subscribe("s", "orders", endpoint.url(), ",\"max_concurrency\":4");
  constexpr int kKeys = 6, kPerKey = 10;
  for (int seq = 0; seq < kPerKey; ++seq) {
    for (int k = 0; k < kKeys; ++k) Publish("orders", "k" + std::to_string(k), seq);
  }
  ASSERT_TRUE(endpoint.WaitFor([](const std::vector<Received>& got) { return got.size() >= 8; }));
  // Keep the directory: a second process starts on it.
  // (Outside the fixture's directory, which goes with it.)
  const std::string keep = ::testing::TempDir() + "/push-kill-" + std::to_string(::getpid());
  std::system(("rm -rf '" + keep + "'").c_str());
  server_->Kill();
  ASSERT_EQ(std::system(("cp -a '" + data_dir + "' '" + keep + "'").c_str()), 0);
  server_.reset();
  const size_t before_restart = endpoint.count();
  slow = false;
  StartServer("", keep);
  ASSERT_TRUE(endpoint.WaitFor([](const std::vector<Received>& got) {
    std::set<std::string> acked;
    for (const Received& r : got) {
      if (Acked(r)) acked.insert(r.subject);
    }
    return acked.size() == static_cast<size_t>(kKeys * kPerKey);
  })) << server_->Log();
  // Per key, the first acknowledgements are in order (redelivery after the kill may repeat).
  std::map<std::string, int> next;
  for (const Received& r : endpoint.received()) {
    if (!Acked(r)) continue;
    const std::string key = r.subject.substr(0, r.subject.find('/'));
    const int seq = std::atoi(r.subject.c_str() + r.subject.find('/') + 1);
    EXPECT_LE(seq, next[key]) << r.subject;
    next[key] = std::max(next[key], seq + 1);
  }
  EXPECT_EQ(Call("GET", "/v1/subscriptions/s").status, 200);
  EXPECT_LT(before_restart, static_cast<size_t>(kKeys * kPerKey));  // it was killed mid-way
  server_.reset();
  std::system(("rm -rf '" + keep + "'").c_str());
}

// SIGTERM while requests are in flight: converge drains and exits cleanly (the unanswered
// events stay in the group, delivered again at the next start).
TEST_F(PushTest, SigtermWithRequestsInFlightExitsCleanly) {
  TestEndpoint endpoint([](const Received&) { return Answer{200, "", 3000}; });
  StartServer();
  CreateTopic("orders", 2);
  Subscribe("s", "orders", endpoint.url(), ",\"max_concurrency\":4,\"timeout_ms\":20000");
  for (int i = 0; i < 8; ++i) Publish("orders", "k" + std::to_string(i), 0);
  const auto deadline = Clock::now() + std::chrono::seconds(30);
  while (Metrics().find("converge_push_in_flight{subscription=\"s\",topic=\"orders\"} 0") !=
             std::string::npos &&
         Clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  Result<int> code = server_->Signal(SIGTERM, 30'000);
  ASSERT_TRUE(code.ok()) << code.status().ToString();
  EXPECT_EQ(*code, 0) << server_->Log();
}

// The Python verifier printed in docs/push.md ("Verifying a request"), taken from the document.
std::string DocPythonVerifier() {
  const char* src = std::getenv("CONVERGE_SOURCE_DIR");
  std::ifstream in(std::string(src != nullptr ? src : CONVERGE_SOURCE_DIR_FALLBACK) +
                   "/docs/push.md");
  std::stringstream ss;
  ss << in.rdbuf();
  const std::string doc = ss.str();
  const size_t section = doc.find("## Verifying a request");
  if (section == std::string::npos) return "";
  const size_t start = doc.find("```python\n", section);
  if (start == std::string::npos) return "";
  const size_t end = doc.find("```", start + 10);
  if (end == std::string::npos) return "";
  return doc.substr(start + 10, end - start - 10);
}

std::string JsonHeaders(const Headers& headers) {
  json::object o;
  for (const auto& [name, value] : headers) o[name] = value;
  return json::serialize(o);
}

// Binary mode: the signature covers the ce-* headers and Content-Type as well as the body. A
// request converge sent verifies; the same request with an attribute header changed, added or
// removed, its Content-Type or its body changed does not. Checked with the recipe written in
// this test and with the Python function of docs/push.md run by python3.
TEST_F(PushTest, SignatureCoversBinaryModeHeaders) {
  TestEndpoint endpoint([](const Received&) { return Answer{200, "", 0}; });
  StartServer();
  CreateTopic("orders", 1);
  Subscribe("s", "orders", endpoint.url(), ",\"mode\":\"binary\"");
  Publish("orders", "k", 0);
  ASSERT_TRUE(endpoint.WaitFor([](const std::vector<Received>& got) {
    return !got.empty() && Acked(got.back());
  })) << server_->Log();
  const Received sent = endpoint.received().back();
  ASSERT_TRUE(sent.signature_ok);

  auto with = [&](const std::string& name, const std::string& value) {
    Headers h;
    bool replaced = false;
    for (const auto& [n, v] : sent.headers) {
      if (n == name) {
        replaced = true;
        if (!value.empty()) h.emplace_back(n, value);
      } else {
        h.emplace_back(n, v);
      }
    }
    if (!replaced) h.emplace_back(name, value);
    return h;
  };
  struct Case {
    std::string what;
    Headers headers;
    std::string body;
    bool valid;
  };
  const std::vector<Case> cases = {
      {"as sent", sent.headers, sent.body, true},
      {"ce-type changed", with("ce-type", "com.example.refund"), sent.body, false},
      {"ce-id changed", with("ce-id", "k-99"), sent.body, false},
      {"ce-subject removed", with("ce-subject", ""), sent.body, false},
      {"ce-extension added", with("ce-tenant", "other"), sent.body, false},
      {"content-type changed", with("Content-Type", "text/plain"), sent.body, false},
      {"body changed", sent.headers, "{\"seq\":1}", false},
  };
  std::string expected_lines;
  json::array py_cases;
  for (const Case& c : cases) {
    EXPECT_EQ(VerifySignature(c.headers, c.body, kSecret), c.valid) << c.what;
    json::object o;
    o["headers"] = json::parse(JsonHeaders(c.headers));
    o["body"] = c.body;
    py_cases.push_back(std::move(o));
    expected_lines += c.valid ? "True\n" : "False\n";
  }

  const std::string verifier = DocPythonVerifier();
  ASSERT_FALSE(verifier.empty()) << "no python block under 'Verifying a request' in push.md";
  const std::string dir = ::testing::TempDir() + "/push-verify-" + std::to_string(::getpid());
  ASSERT_EQ(std::system(("mkdir -p '" + dir + "'").c_str()), 0);
  std::ofstream(dir + "/cases.json") << json::serialize(py_cases);
  std::ofstream(dir + "/verify.py")
      << verifier
      << "\nimport json, sys\n"
         "for case in json.load(open(sys.argv[1])):\n"
         "    print(verify(sys.argv[2].encode(), case['headers'], case['body'].encode()))\n";
  auto out =
      RunCommand("python3 '" + dir + "/verify.py' '" + dir + "/cases.json' '" + kSecret + "' 2>&1");
  EXPECT_EQ(out.exit_code, 0) << out.out;
  EXPECT_EQ(out.out, expected_lines);
  std::system(("rm -rf '" + dir + "'").c_str());
}

// HTTPS endpoints: the endpoint's certificate (made now, for the name "localhost" only) is
// trusted through the subscription's ca_file. Events reach https://localhost:<port>, verified;
// the same endpoint reached by a name its certificate does not have (127.0.0.1), or without
// ca_file (the system's store does not know the test CA), never gets a request: those
// deliveries fail the TLS handshake and are retried (converge_push_retried_total), then
// dead-lettered at max_deliveries with the certificate error as the reason. A ca_file that is not
// PEM certificates, or one for an http endpoint, stops the start.
TEST_F(PushTest, HttpsEndpointTrustedThroughCaFile) {
  const std::string dir = ::testing::TempDir() + "/push-tls-" + std::to_string(::getpid());
  ASSERT_EQ(std::system(("rm -rf '" + dir + "' && mkdir -p '" + dir + "'").c_str()), 0);
  const std::string cert = dir + "/cert.pem", key = dir + "/key.pem";
  ASSERT_EQ(
      std::system(("openssl req -x509 -newkey rsa:2048 -nodes -keyout '" + key + "' -out '" + cert +
                   "' -days 1 -subj /CN=localhost -addext subjectAltName=DNS:localhost "
                   ">/dev/null 2>&1")
                      .c_str()),
      0)
      << "openssl could not make a test certificate";
  TestEndpoint endpoint([](const Received&) { return Answer{200, "", 0}; }, cert, key);
  const std::string port = std::to_string(endpoint.port());
  auto sub = [&](const std::string& name, const std::string& host, const std::string& more) {
    return "  - name: " + name + "\n    topic: orders\n    endpoint: https://" + host + ":" + port +
           "/events\n    secret: " + kSecret +
           "\n    initial_backoff_ms: 20\n    max_backoff_ms: 100\n    max_deliveries: 3\n" + more;
  };
  StartServer("topic_defaults:\n  partitions: 1\nsubscriptions:\n" +
              sub("good", "localhost", "    mode: binary\n    ca_file: " + cert + "\n") +
              sub("wronghost", "127.0.0.1", "    ca_file: " + cert + "\n") +
              sub("untrusted", "localhost", ""));
  CreateTopic("orders", 1);
  for (int i = 0; i < 5; ++i) Publish("orders", "k", i);
  ASSERT_TRUE(endpoint.WaitFor([](const std::vector<Received>& got) {
    return std::count_if(got.begin(), got.end(), [](const Received& r) { return Acked(r); }) >= 5;
  })) << server_->Log();
  EXPECT_TRUE(WaitMetric("converge_push_delivered_total{subscription=\"good\",topic=\"orders\"} 5"))
      << Metrics();
  // The two others fail their handshakes again and again.
  for (const char* name : {"wronghost", "untrusted"}) {
    const std::string zero = std::string("converge_push_retried_total{subscription=\"") + name +
                             "\",topic=\"orders\"} 0";
    const auto deadline = Clock::now() + std::chrono::seconds(30);
    while (Clock::now() < deadline && Metrics().find(zero) != std::string::npos) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    const std::string m = Metrics();
    EXPECT_EQ(m.find(zero), std::string::npos) << name << "\n" << m;
    EXPECT_NE(m.find(std::string("converge_push_delivered_total{subscription=\"") + name +
                     "\",topic=\"orders\"} 0"),
              std::string::npos)
        << name << "\n"
        << m;
    // After max_deliveries (3) failed handshakes the group dead-letters each event, with the
    // TLS error as the reason.
    const auto dead_deadline = Clock::now() + std::chrono::seconds(30);
    std::string dead;
    while (Clock::now() < dead_deadline) {
      dead = DeadLetters("orders", std::string("push-") + name);
      if (dead.find("k-4") != std::string::npos) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    EXPECT_NE(dead.find("k-4"), std::string::npos) << name << "\n" << dead;
    EXPECT_NE(dead.find("endpoint unreachable"), std::string::npos) << dead;
    EXPECT_NE(dead.find("certificate verify failed"), std::string::npos) << dead;
  }
  for (const Received& r : endpoint.received()) {
    EXPECT_EQ(r.subscription, "good");
    EXPECT_TRUE(r.signature_ok) << r.subject;
  }
  auto got = Call("GET", "/v1/subscriptions/good");
  EXPECT_NE(got.body.find("\"ca_file\":"), std::string::npos) << got.body;
  server_.reset();

  // Strict: a ca_file that holds no certificate, or one for an http endpoint, stops the start.
  std::ofstream(dir + "/not-a-cert.pem") << "hello\n";
  for (const std::string& bad :
       {sub("x", "localhost", "    ca_file: " + dir + "/not-a-cert.pem\n"),
        sub("x", "localhost", "    ca_file: " + dir + "/missing.pem\n"),
        "  - name: x\n    topic: orders\n    endpoint: http://127.0.0.1:9/x\n    secret: " +
            std::string(kSecret) + "\n    ca_file: " + cert + "\n"}) {
    ServeProcess bad_server(Config("subscriptions:\n" + bad));
    Status s = bad_server.Start();
    EXPECT_FALSE(s.ok()) << bad;
    EXPECT_NE(bad_server.Log().find("ca_file"), std::string::npos) << bad_server.Log();
  }
  std::system(("rm -rf '" + dir + "'").c_str());
}

// A subscription of the serve config, its secret read from a file; bad entries stop the start.
TEST_F(PushTest, ConfigSubscriptionWithSecretFile) {
  TestEndpoint endpoint([](const Received&) { return Answer{204, "", 0}; });
  const std::string secret_file = ::testing::TempDir() + "/push_secret";
  std::ofstream(secret_file) << kSecret << "\n";
  StartServer(
      "topic_defaults:\n  partitions: 1\nauto_create_topics: true\nsubscriptions:\n"
      "  - name: fromconfig\n    topic: orders\n    endpoint: " +
      endpoint.url() + "\n    mode: binary\n    secret_file: " + secret_file + "\n");
  Publish("orders", "k", 0);  // creates the topic; the subscription starts once it exists
  ASSERT_TRUE(endpoint.WaitFor([](const std::vector<Received>& got) {
    return !got.empty() && Acked(got.back());
  })) << server_->Log();
  EXPECT_TRUE(endpoint.received()[0].signature_ok);
  auto r = Call("GET", "/v1/subscriptions/fromconfig");
  EXPECT_NE(r.body.find("\"source\":\"config\""), std::string::npos) << r.body;
  EXPECT_EQ(Call("DELETE", "/v1/subscriptions/fromconfig").status, 409);
  server_.reset();

  ServeProcess bad(
      Config("subscriptions:\n  - name: x\n    topic: orders\n    endpoint: "
             "gopher://h/\n    secret: " +
             std::string(kSecret) + "\n"));
  Status s = bad.Start();
  EXPECT_FALSE(s.ok());
}

}  // namespace
}  // namespace converge
