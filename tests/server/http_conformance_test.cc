// Black-box tests of the HTTP front of `converge serve`: message framing (request smuggling),
// Host and target forms, HEAD, timeouts, the Authorization scheme, probes under load, query
// strings, file-descriptor exhaustion and replies during SIGTERM. Each test starts the real
// binary and speaks raw HTTP/1.1 to it over loopback sockets.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cctype>
#include <chrono>
#include <cstdlib>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "converge/client.h"
#include "converge/event.h"
#include "serve_process.h"
#include "test_util.h"

namespace converge {
namespace {

using client::Client;
using client::Delivery;
using testing::RawExchange;
using testing::RawStatus;
using testing::ServeProcess;

using testing::Must;

int64_t NowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// Concatenation by append: GCC 12 reports a false -Wrestrict on `"literal" + std::string`.
std::string Cat(std::initializer_list<std::string_view> parts) {
  std::string out;
  for (std::string_view p : parts) out.append(p);
  return out;
}

// Occurrences of `needle` in `hay`.
size_t Count(const std::string& hay, std::string_view needle) {
  size_t n = 0;
  for (size_t at = hay.find(needle); at != std::string::npos; at = hay.find(needle, at + 1)) ++n;
  return n;
}

// Status lines ("HTTP/1.1 200 ") in `raw`: how many responses it holds.
size_t CountResponses(const std::string& raw) {
  size_t n = 0;
  for (size_t at = raw.find("HTTP/1."); at != std::string::npos; at = raw.find("HTTP/1.", at + 1)) {
    n += raw.size() >= at + 13 && std::isdigit(static_cast<unsigned char>(raw[at + 7])) &&
         raw[at + 8] == ' ' && std::isdigit(static_cast<unsigned char>(raw[at + 9])) &&
         raw[at + 12] == ' ';
  }
  return n;
}

// A structured-mode CloudEvent publish of one event with id `id` to `topic`, as raw HTTP/1.1.
std::string PublishRequest(const std::string& topic, const std::string& id,
                           const std::string& extra_headers = "") {
  const std::string body =
      Cat({R"({"specversion":"1.0","id":")", id, R"(","source":"/t","type":"x","data":1})"});
  return Cat({"POST /v1/topics/", topic, "/events HTTP/1.1\r\nHost: x\r\n", extra_headers,
              "Content-Type: application/cloudevents+json\r\nContent-Length: ",
              std::to_string(body.size()), "\r\n\r\n", body});
}

// One keep-alive HTTP/1.1 connection to the server, for tests that need to see exactly which
// request got which reply.
class RawConnection {
 public:
  explicit RawConnection(uint16_t port) {
    fd_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd_ >= 0 && connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
      close(fd_);
      fd_ = -1;
    }
  }
  ~RawConnection() {
    if (fd_ >= 0) close(fd_);
  }
  RawConnection(const RawConnection&) = delete;
  RawConnection& operator=(const RawConnection&) = delete;

  bool ok() const { return fd_ >= 0; }
  bool Send(const std::string& bytes) {
    size_t sent = 0;
    while (sent < bytes.size()) {
      ssize_t n = send(fd_, bytes.data() + sent, bytes.size() - sent, MSG_NOSIGNAL);
      if (n <= 0) return false;
      sent += static_cast<size_t>(n);
    }
    return true;
  }
  // Reads one response (header and Content-Length body); its status, or 0 if the connection
  // ended (or timeout_ms passed) first. `head`: a reply to HEAD (no body follows).
  int ReadResponse(int64_t timeout_ms, std::string* body = nullptr, bool head = false) {
    const int64_t deadline = NowMs() + timeout_ms;
    size_t end;
    while ((end = in_.find("\r\n\r\n")) == std::string::npos) {
      if (!Fill(deadline)) return 0;
    }
    const std::string header = in_.substr(0, end + 4);
    size_t length = 0;
    for (const char* name : {"Content-Length: ", "content-length: "}) {
      size_t at = header.find(name);
      if (at != std::string::npos) length = std::strtoull(header.c_str() + at + 16, nullptr, 10);
    }
    if (head) length = 0;
    while (in_.size() < end + 4 + length) {
      if (!Fill(deadline)) return 0;
    }
    if (body) *body = in_.substr(end + 4, length);
    in_.erase(0, end + 4 + length);
    return RawStatus(header);
  }
  // True if the server closed the connection within timeout_ms.
  bool ClosedWithin(int64_t timeout_ms) {
    const int64_t deadline = NowMs() + timeout_ms;
    while (NowMs() < deadline) {
      pollfd p{fd_, POLLIN, 0};
      if (poll(&p, 1, 20) <= 0) continue;
      char buf[4096];
      ssize_t n = recv(fd_, buf, sizeof(buf), 0);
      if (n <= 0) return true;
      in_.append(buf, static_cast<size_t>(n));
    }
    return false;
  }

 private:
  bool Fill(int64_t deadline) {
    while (NowMs() < deadline) {
      pollfd p{fd_, POLLIN, 0};
      if (poll(&p, 1, 20) <= 0) continue;
      char buf[4096];
      ssize_t n = recv(fd_, buf, sizeof(buf), 0);
      if (n <= 0) return false;
      in_.append(buf, static_cast<size_t>(n));
      return true;
    }
    return false;
  }
  int fd_ = -1;
  std::string in_;
};

class HttpConformanceTest : public ::testing::Test {
 protected:
  void StartServer(std::string yaml = "", uint64_t open_files = 0) {
    server_ = std::make_unique<ServeProcess>(std::move(yaml));
    if (open_files > 0) server_->set_open_files_limit(open_files);
    Status s = server_->Start();
    ASSERT_TRUE(s.ok()) << s.ToString();
  }
  Client NewClient(std::string token = "") { return Client(server_->ClientOptions(token)); }
  void CreateTopic(const std::string& name) {
    Client c = NewClient();
    client::TopicSpec spec;
    spec.name = name;
    Result<client::TopicDescription> t = c.CreateTopic(spec);
    ASSERT_TRUE(t.ok()) << t.status().ToString();
  }
  uint64_t EndOffset(const std::string& topic) {
    Client c = NewClient();
    return Must(c.DescribeTopic(topic)).offsets.at(0).end_offset;
  }
  std::string Exchange(const std::string& bytes) {
    return Must(RawExchange(server_->port(), bytes, 5000));
  }
  std::unique_ptr<ServeProcess> server_;
};

// ---------------------------------------------------------------------------------------
// 1. Framing: a Transfer-Encoding the server does not end in chunked used to be read as "no
// body", and the body then ran as a request of its own.

TEST_F(HttpConformanceTest, RefusesAmbiguousFramingAndNeverRunsTheSmuggledRequest) {
  StartServer();
  CreateTopic("t");
  struct Case {
    std::string name;
    std::string head;  // request line and header fields, without the blank line
    std::string body;  // what the header frames as its body, if anything
    int status;
  };
  const std::string get = "GET /healthz HTTP/1.1\r\nHost: x\r\n";
  const std::string post =
      "POST /v1/topics/t/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n";
  const std::vector<Case> cases = {
      {"identity", get + "Transfer-Encoding: identity\r\n", "", 400},
      {"xchunked", get + "Transfer-Encoding: xchunked\r\n", "", 400},
      {"gzip", get + "Transfer-Encoding: gzip\r\n", "", 400},
      {"chunked, identity", get + "Transfer-Encoding: chunked, identity\r\n", "", 400},
      {"chunked then identity field",
       get + "Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n", "", 400},
      {"identity then chunked field",
       get + "Transfer-Encoding: identity\r\nTransfer-Encoding: chunked\r\n", "0\r\n\r\n", 501},
      {"gzip, chunked", get + "Transfer-Encoding: gzip, chunked\r\n", "0\r\n\r\n", 501},
      {"chunked, chunked", get + "Transfer-Encoding: chunked, chunked\r\n", "0\r\n\r\n", 400},
      {"empty coding", get + "Transfer-Encoding: \r\n", "", 400},
      {"identity + Content-Length 0", post + "Transfer-Encoding: identity\r\nContent-Length: 0\r\n",
       "", 400},
      {"gzip + Content-Length", post + "Transfer-Encoding: gzip\r\nContent-Length: 2\r\n", "{}",
       400},
      {"Content-Length + chunked", get + "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
       "0\r\n\r\n", 400},
      {"chunked + Content-Length", get + "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n",
       "0\r\n\r\n", 400},
      {"conflicting Content-Length", get + "Content-Length: 0\r\nContent-Length: 5\r\n", "", 400},
      {"chunked in HTTP/1.0",
       "GET /healthz HTTP/1.0\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n",
       "0\r\n\r\n", 400},
  };
  int n = 0;
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    const std::string smuggled = PublishRequest("t", "smuggled-" + std::to_string(n++));
    const std::string reply = Exchange(Cat({c.head, "\r\n", c.body, smuggled}));
    EXPECT_EQ(RawStatus(reply), c.status) << reply;
    EXPECT_EQ(CountResponses(reply), 1u) << "a second response: " << reply;
    EXPECT_NE(reply.find("Connection: close"), std::string::npos) << reply;
  }
  // Not one of the requests after a refused header ran.
  EXPECT_EQ(EndOffset("t"), 0u);
  // Proper framing still works, chunked included, on one connection.
  const std::string body = R"({"specversion":"1.0","id":"ok","source":"/t","type":"x"})";
  char size[16];
  std::snprintf(size, sizeof(size), "%zx", body.size());
  const std::string chunked =
      Cat({"POST /v1/topics/t/events HTTP/1.1\r\nHost: x\r\n",
           "Content-Type: application/cloudevents+json\r\n", "Transfer-Encoding: chunked\r\n\r\n",
           size, "\r\n", body, "\r\n0\r\n\r\n"});
  const std::string reply = Exchange(chunked + PublishRequest("t", "ok2", "Connection: close\r\n"));
  EXPECT_EQ(Count(reply, "HTTP/1.1 200"), 2u) << reply;
  EXPECT_EQ(EndOffset("t"), 2u);
}

// A body with a content coding the server does not decode (RFC 9110 section 8.4) used to be
// read as if it were not encoded: gzip bytes became an event's data or a document. It is
// refused with 415 (and Accept-Encoding: identity, section 15.5.16) before anything is read,
// on every route with a body; "identity" is no coding.
TEST_F(HttpConformanceTest, RefusesContentCodingsItDoesNotDecode) {
  StartServer();
  CreateTopic("t");
  const std::string structured = R"({"specversion":"1.0","id":"coded","source":"/t","type":"x"})";
  const std::string binary =
      "ce-specversion: 1.0\r\nce-id: coded-bin\r\nce-source: /t\r\nce-type: x\r\n"
      "Content-Type: application/octet-stream\r\n";
  struct Case {
    std::string head, body;
  };
  const std::vector<Case> cases = {
      {"POST /v1/topics/t/events HTTP/1.1\r\nContent-Type: application/cloudevents+json\r\n"
       "Content-Encoding: gzip\r\n",
       structured},
      {"POST /v1/topics/t/events HTTP/1.1\r\n" + binary + "Content-Encoding: br\r\n",
       std::string("\x1f\x8b\x08\x00zipped", 10)},
      {"POST /v1/topics/t/events HTTP/1.1\r\n" + binary + "Content-Encoding: identity, gzip\r\n",
       "abc"},
      {"POST /v1/topics/t/events HTTP/1.1\r\n" + binary +
           "Content-Encoding: identity\r\nContent-Encoding: deflate\r\n",
       "abc"},
      {"PUT /v1/collections/c/docs/k HTTP/1.1\r\nContent-Type: application/json\r\n"
       "Content-Encoding: gzip\r\n",
       R"({"n":1})"},
      {"POST /v1/topics HTTP/1.1\r\nContent-Type: application/json\r\nContent-Encoding: x-zip\r\n",
       R"({"name":"coded"})"},
  };
  ASSERT_EQ(RawStatus(Exchange("PUT /v1/collections/c HTTP/1.1\r\nHost: x\r\nContent-Type: "
                               "application/json\r\nContent-Length: 2\r\n\r\n{}")),
            201);
  for (const Case& c : cases) {
    SCOPED_TRACE(c.head);
    const std::string reply =
        Exchange(Cat({c.head, "Host: x\r\nContent-Length: ", std::to_string(c.body.size()),
                      "\r\n\r\n", c.body}));
    EXPECT_EQ(RawStatus(reply), 415) << reply;
    EXPECT_NE(reply.find("\"code\":\"UNSUPPORTED_MEDIA_TYPE\""), std::string::npos) << reply;
    EXPECT_NE(reply.find("Accept-Encoding: identity\r\n"), std::string::npos) << reply;
  }
  EXPECT_EQ(EndOffset("t"), 0u);
  EXPECT_EQ(RawStatus(Exchange("GET /v1/collections/c/docs/k HTTP/1.1\r\nHost: x\r\n\r\n")), 404);
  EXPECT_EQ(RawStatus(Exchange("GET /v1/topics/coded HTTP/1.1\r\nHost: x\r\n\r\n")), 404);
  // "identity" (any case) is the body as it is.
  const std::string reply =
      Exchange(Cat({"POST /v1/topics/t/events HTTP/1.1\r\nHost: x\r\nContent-Type: "
                    "application/cloudevents+json\r\nContent-Encoding: Identity\r\n"
                    "Content-Length: ",
                    std::to_string(structured.size()), "\r\n\r\n", structured}));
  EXPECT_EQ(RawStatus(reply), 200) << reply;
  EXPECT_EQ(EndOffset("t"), 1u);
}

// ---------------------------------------------------------------------------------------
// 2. File descriptors: idle connections beyond what the process can open used to make every
// request wait (accept failing with EMFILE) until they closed.

TEST_F(HttpConformanceTest, ServesFreshRequestsWhenIdleConnectionsExhaustTheFileLimit) {
  StartServer("", 256);
  CreateTopic("t");
  EXPECT_NE(server_->Log().find("limits.max_connections lowered"), std::string::npos)
      << server_->Log();
  // More idle connections than the process has descriptors.
  std::vector<std::unique_ptr<RawConnection>> idle;
  for (int i = 0; i < 400; ++i) {
    idle.push_back(std::make_unique<RawConnection>(server_->port()));
    ASSERT_TRUE(idle.back()->ok());
  }
  // A fresh request is served at once (an idle connection makes room for it)...
  for (const char* target : {"/healthz", "/readyz", "/v1/topics/t"}) {
    SCOPED_TRACE(target);
    RawConnection fresh(server_->port());
    ASSERT_TRUE(fresh.ok());
    ASSERT_TRUE(fresh.Send(Cat({"GET ", target, " HTTP/1.1\r\nHost: x\r\n\r\n"})));
    EXPECT_EQ(fresh.ReadResponse(5000), 200) << server_->Log();
  }
  // ...and the connections beyond the limit were closed, not left waiting.
  size_t closed = 0;
  for (auto& c : idle) closed += c->ClosedWithin(closed == 0 ? 3000 : 5);
  EXPECT_GE(closed, 400u - 256u);
  idle.clear();
  Client c = NewClient();
  ASSERT_OK(c.Health());
}

// A soft open-files limit below the hard one (1024 soft is a common default) is raised at
// start, and the log says so: idle connections beyond the soft limit are then simply held.
TEST_F(HttpConformanceTest, RaisesTheSoftFileLimitToTheHardOneAtStart) {
  server_ = std::make_unique<ServeProcess>("limits: {max_connections: 1000}");
  server_->set_open_files_limit(256, 2048);
  ASSERT_OK(server_->Start());
  EXPECT_NE(server_->Log().find("raised the open-files limit from 256 to 2048"), std::string::npos)
      << server_->Log();
  EXPECT_EQ(server_->Log().find("limits.max_connections lowered"), std::string::npos)
      << server_->Log();
  std::vector<std::unique_ptr<RawConnection>> idle;
  for (int i = 0; i < 600; ++i) {
    idle.push_back(std::make_unique<RawConnection>(server_->port()));
    ASSERT_TRUE(idle.back()->ok());
  }
  RawConnection fresh(server_->port());
  ASSERT_TRUE(fresh.ok());
  ASSERT_TRUE(fresh.Send("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"));
  EXPECT_EQ(fresh.ReadResponse(5000), 200) << server_->Log();
  // None was closed to make room (the process can hold them all): the oldest ones, which
  // would go first, and a sample of the rest are still served.
  for (size_t i = 0; i < idle.size(); i += i < 20 ? 1 : 25) {
    ASSERT_TRUE(idle[i]->Send("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"));
    EXPECT_EQ(idle[i]->ReadResponse(5000), 200) << "connection " << i;
  }
}

// Storage files (here: topics with many partitions, opened after the start) can take more
// descriptors than the reserve left for them; accept then fails with EMFILE. The acceptor must
// neither spin nor leave new connections waiting.
TEST_F(HttpConformanceTest, ServesFreshRequestsWhenStorageFilesExhaustTheFileLimit) {
  StartServer("", 256);
  Client c = NewClient();
  for (int i = 0; i < 3; ++i) {
    client::TopicSpec spec;
    spec.name = "wide" + std::to_string(i);
    spec.partitions = 32;
    ASSERT_TRUE(c.CreateTopic(spec).ok());
  }
  std::vector<std::unique_ptr<RawConnection>> idle;
  for (int i = 0; i < 300; ++i) {
    idle.push_back(std::make_unique<RawConnection>(server_->port()));
    ASSERT_TRUE(idle.back()->ok());
  }
  for (const char* target : {"/healthz", "/readyz", "/v1/topics/wide0"}) {
    SCOPED_TRACE(target);
    RawConnection fresh(server_->port());
    ASSERT_TRUE(fresh.ok());
    ASSERT_TRUE(fresh.Send(Cat({"GET ", target, " HTTP/1.1\r\nHost: x\r\n\r\n"})));
    EXPECT_EQ(fresh.ReadResponse(5000), 200) << server_->Log();
  }
  idle.clear();
  ASSERT_OK(c.Health());
}

// ---------------------------------------------------------------------------------------
// 3. The Authorization scheme is case-insensitive (RFC 9110 section 11.1).

TEST_F(HttpConformanceTest, AcceptsTheBearerSchemeInAnyCase) {
  StartServer(
      "auth:\n  tokens:\n    - service: ops\n      token: ops-token-0123456789abc\n"
      "      admin: true\n");
  for (const char* scheme : {"Bearer", "bearer", "BEARER", "bEaReR"}) {
    SCOPED_TRACE(scheme);
    std::string reply =
        Exchange(Cat({"GET /v1/topics HTTP/1.1\r\nHost: x\r\nAuthorization: ", scheme,
                      " ops-token-0123456789abc\r\n\r\n"}));
    EXPECT_EQ(RawStatus(reply), 200) << reply;
  }
  std::string reply = Exchange(
      "GET /v1/topics HTTP/1.1\r\nHost: x\r\nAuthorization: bearer "
      "OPS-TOKEN-0123456789ABC\r\n\r\n");
  EXPECT_EQ(RawStatus(reply), 401) << reply;
}

// Credentials given twice are not read as either one: which of two Authorization fields
// counts is exactly what a proxy that adds its own and the server could disagree on. (The
// first one used to win: a request carrying a reader's token and then an admin's ran as the
// reader, and with the order swapped as the admin.)
TEST_F(HttpConformanceTest, RefusesARepeatedAuthorizationHeader) {
  StartServer(
      "auth:\n  tokens:\n    - service: ops\n      token: ops-token-0123456789abc\n"
      "      admin: true\n    - service: app\n      token: app-token-0123456789abc\n"
      "      publish: ['*']\n      subscribe: ['*']\n");
  const std::string ops = "Authorization: Bearer ops-token-0123456789abc\r\n";
  const std::string app = "Authorization: bearer app-token-0123456789abc\r\n";
  for (const std::string& twice : {ops + ops, ops + app, app + ops}) {
    for (const char* request :
         {"GET /v1/topics HTTP/1.1\r\nHost: x\r\n",
          "POST /v1/topics HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
          "Content-Length: 15\r\n"}) {
      const bool post = std::string_view(request).starts_with("POST");
      const std::string reply =
          Exchange(Cat({request, twice, "\r\n", post ? R"({"name":"made"})" : ""}));
      EXPECT_EQ(RawStatus(reply), 401) << twice << reply;
      EXPECT_NE(reply.find("UNAUTHENTICATED"), std::string::npos) << reply;
      EXPECT_NE(reply.find("more than once"), std::string::npos) << reply;
    }
  }
  // Nothing was created, and one field of either token still works.
  EXPECT_EQ(RawStatus(Exchange(Cat({"GET /v1/topics/made HTTP/1.1\r\nHost: x\r\n", app, "\r\n"}))),
            404);
  EXPECT_EQ(RawStatus(Exchange(Cat({"GET /v1/topics HTTP/1.1\r\nHost: x\r\n", app, "\r\n"}))), 200);
  // The probes take no credentials and ignore them.
  EXPECT_EQ(RawStatus(Exchange(Cat({"GET /healthz HTTP/1.1\r\nHost: x\r\n", ops, app, "\r\n"}))),
            200);
}

// ---------------------------------------------------------------------------------------
// 4. Liveness and readiness probes are never refused for load.

TEST_F(HttpConformanceTest, AnswersProbesWhileInflightRequestsAreFull) {
  StartServer("limits: {max_inflight_requests: 1}");
  CreateTopic("t");
  // A long poll holds the only in-flight slot.
  RawConnection poll(server_->port());
  ASSERT_TRUE(poll.ok());
  const std::string fetch_body = R"({"max_events":1,"wait_ms":20000})";
  const std::string fetch = Cat({"POST /v1/topics/t/groups/g/fetch HTTP/1.1\r\nHost: x\r\n",
                                 "Content-Type: application/json\r\nContent-Length: ",
                                 std::to_string(fetch_body.size()), "\r\n\r\n", fetch_body});
  ASSERT_TRUE(poll.Send(fetch));
  bool full = false;
  const int64_t until = NowMs() + 10'000;
  while (!full && NowMs() < until) {
    full = RawStatus(Exchange("GET /v1/topics HTTP/1.1\r\nHost: x\r\n\r\n")) == 429;
    // The GET can reach the server before the fetch does and take the slot; the
    // fetch is then refused with 429 and must be sent again.
    if (!full) {
      const int status = poll.ReadResponse(50);
      ASSERT_TRUE(status == 0 || status == 429) << "the long poll ended with " << status;
      if (status == 429) {
        ASSERT_TRUE(poll.Send(fetch));
      }
    }
  }
  ASSERT_TRUE(full) << "the long poll never filled the in-flight limit";
  for (int i = 0; i < 3; ++i) {
    for (const char* target : {"/healthz", "/readyz"}) {
      SCOPED_TRACE(target);
      std::string reply = Exchange(Cat({"GET ", target, " HTTP/1.1\r\nHost: x\r\n\r\n"}));
      EXPECT_EQ(RawStatus(reply), 200) << reply;
    }
  }
  // Still full for everything else.
  EXPECT_EQ(RawStatus(Exchange("GET /v1/topics HTTP/1.1\r\nHost: x\r\n\r\n")), 429);
}

// ---------------------------------------------------------------------------------------
// 5. Host, absolute-form targets, HEAD, and the request timeout of a header.

TEST_F(HttpConformanceTest, RequiresHostAndServesAbsoluteFormTargets) {
  StartServer();
  CreateTopic("t");
  std::string reply = Exchange("GET /healthz HTTP/1.1\r\n\r\n");
  EXPECT_EQ(RawStatus(reply), 400) << reply;
  EXPECT_NE(reply.find("Host"), std::string::npos) << reply;
  reply = Exchange("GET /healthz HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n");
  EXPECT_EQ(RawStatus(reply), 400) << reply;
  reply = Exchange("GET /healthz HTTP/1.0\r\n\r\n");  // HTTP/1.0 may omit it
  EXPECT_NE(reply.find(" 200 "), std::string::npos) << reply;

  const std::string port = std::to_string(server_->port());
  reply =
      Exchange(Cat({"GET http://127.0.0.1:", port, "/v1/topics/t HTTP/1.1\r\nHost: x\r\n\r\n"}));
  EXPECT_EQ(RawStatus(reply), 200) << reply;
  EXPECT_NE(reply.find("\"name\":\"t\""), std::string::npos) << reply;
  reply = Exchange("GET HTTP://localhost/healthz?probe=1 HTTP/1.1\r\nHost: x\r\n\r\n");
  EXPECT_EQ(RawStatus(reply), 200) << reply;
  reply = Exchange(Cat({"POST https://h", PublishRequest("t", "abs").substr(5)}));
  EXPECT_EQ(RawStatus(reply), 200) << reply;
  EXPECT_EQ(EndOffset("t"), 1u);
  for (const char* bad :
       {"GET healthz HTTP/1.1", "GET http:///healthz HTTP/1.1", "GET ftp://h/healthz HTTP/1.1"}) {
    reply = Exchange(Cat({bad, "\r\nHost: x\r\n\r\n"}));
    EXPECT_EQ(RawStatus(reply), 400) << bad << ": " << reply;
  }
}

TEST_F(HttpConformanceTest, AnswersHeadLikeGetWithoutTheBody) {
  StartServer();
  CreateTopic("t");
  for (const char* target : {"/healthz", "/readyz", "/v1/topics/t", "/metrics"}) {
    SCOPED_TRACE(target);
    RawConnection conn(server_->port());
    ASSERT_TRUE(conn.ok());
    std::string get_body;
    ASSERT_TRUE(conn.Send(Cat({"GET ", target, " HTTP/1.1\r\nHost: x\r\n\r\n"})));
    ASSERT_EQ(conn.ReadResponse(5000, &get_body), 200);
    // HEAD then GET on one connection: the HEAD reply has no body, so the next bytes are the
    // GET reply.
    ASSERT_TRUE(conn.Send(Cat({"HEAD ", target, " HTTP/1.1\r\nHost: x\r\n\r\n", "GET ", target,
                               " HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"})));
    std::string head_body = "unset";
    EXPECT_EQ(conn.ReadResponse(5000, &head_body, /*head=*/true), 200);
    EXPECT_EQ(head_body, "");
    std::string again;
    EXPECT_EQ(conn.ReadResponse(5000, &again), 200);
    if (std::string_view(target) != "/metrics") {
      EXPECT_EQ(again, get_body);
    }
  }
  // The Content-Length of the HEAD reply is the GET body's.
  std::string reply = Exchange("HEAD /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
  const std::string get_reply =
      Exchange("GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
  const std::string get_body = get_reply.substr(get_reply.find("\r\n\r\n") + 4);
  EXPECT_NE(reply.find("Content-Length: " + std::to_string(get_body.size()) + "\r\n"),
            std::string::npos)
      << reply;
  EXPECT_EQ(reply.substr(reply.find("\r\n\r\n") + 4), "");
  // A stream answered to HEAD: the header and no events.
  reply = Exchange("HEAD /v1/topics/t/groups/g/stream HTTP/1.1\r\nHost: x\r\n\r\n");
  EXPECT_EQ(RawStatus(reply), 200) << reply;
  EXPECT_NE(reply.find("text/event-stream"), std::string::npos) << reply;
  EXPECT_EQ(reply.find("subscribed"), std::string::npos) << reply;
  // Methods: HEAD is allowed wherever GET is, and a POST-only path refuses it.
  // (GET-only and POST-only paths: /v1/topics/{topic} takes DELETE and
  // /v1/topics/{topic}/events GET since the admin routes.)
  reply = Exchange("DELETE /v1/topology HTTP/1.1\r\nHost: x\r\n\r\n");
  EXPECT_EQ(RawStatus(reply), 405) << reply;
  EXPECT_NE(reply.find("Allow: GET, HEAD\r\n"), std::string::npos) << reply;
  reply = Exchange("HEAD /v1/topics/t/groups/g/fetch HTTP/1.1\r\nHost: x\r\n\r\n");
  EXPECT_EQ(RawStatus(reply), 405) << reply;
}

TEST_F(HttpConformanceTest, BoundsTheHeaderReadByTheRequestTimeout) {
  StartServer("limits: {idle_timeout_ms: 5000, request_timeout_ms: 300}");
  // A header that never completes is cut at request_timeout_ms, not idle_timeout_ms.
  Result<int64_t> stalled = testing::RawTimeToClose(
      server_->port(), "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ", 10'000);
  ASSERT_TRUE(stalled.ok()) << stalled.status().ToString();
  EXPECT_GE(*stalled, 250);
  EXPECT_LT(*stalled, 3000);
  // A connection that has not started a request may idle for idle_timeout_ms.
  Result<int64_t> idle = testing::RawTimeToClose(server_->port(), "", 10'000);
  ASSERT_TRUE(idle.ok()) << idle.status().ToString();
  EXPECT_GE(*idle, 4500);
}

// ---------------------------------------------------------------------------------------
// 6. Query strings: malformed escapes, control bytes and numbers with junk are 400 on every
// route that takes a query.

TEST_F(HttpConformanceTest, RefusesMalformedQueryStringsOnEveryRoute) {
  StartServer();
  CreateTopic("t");
  const std::vector<std::string> targets = {
      "/v1/topics/t/groups/g/dead-letters?limit=1%00x",
      "/v1/topics/t/groups/g/dead-letters?limit=1x",
      "/v1/topics/t/groups/g/dead-letters?from_offset=%2",
      "/v1/topics/t/groups/g/dead-letters?limit=%zz",
      "/v1/topics/t/groups/g/dead-letters?x%00=1",
      "/v1/topics/t/groups/g/stream?max_events=1%00",
      "/v1/topics/t/groups/g/stream?consumer=a%0Ab",
      "/v1/topics/t/groups/g/stream?auto_ack=true%00",
      "/v1/topics?x=%7f",
      "/v1/sagas?limit=1%00x",
      "/v1/sagas?limit=%205",
      "/v1/sagas?limit=5%20",
      "/v1/sagas?state=%ZZ",
      "/v1/sagas?definition=a%00b",
      "/v1/saga-timers?limit=5%00",
      "/v1/saga-definitions?x=%1",
      "/v1/collections?x=%00",
      "/v1/collections/c/docs?limit=1%00",
      "/v1/collections/c/docs?prefix=%G0",
  };
  for (const std::string& target : targets) {
    SCOPED_TRACE(target);
    std::string reply = Exchange(Cat({"GET ", target, " HTTP/1.1\r\nHost: x\r\n\r\n"}));
    EXPECT_EQ(RawStatus(reply), 400) << reply;
    EXPECT_NE(reply.find("\"code\":\"INVALID_ARGUMENT\""), std::string::npos) << reply;
  }
  // Well-formed ones still work.
  {
    Client c = NewClient();
    client::FetchOptions f;
    f.wait_ms = 0;
    ASSERT_TRUE(c.Fetch("t", "g", f).ok());  // creates the group
  }
  for (const char* target : {"/v1/topics/t/groups/g/dead-letters?limit=5&from_offset=0",
                             "/v1/sagas?limit=5", "/v1/saga-timers?limit=5"}) {
    std::string reply = Exchange(Cat({"GET ", target, " HTTP/1.1\r\nHost: x\r\n\r\n"}));
    EXPECT_EQ(RawStatus(reply), 200) << target << ": " << reply;
  }
}

// ---------------------------------------------------------------------------------------
// 7. SIGTERM: a request whose effect is applied is answered before its connection closes.

TEST_F(HttpConformanceTest, AnswersEveryAppliedPublishDuringSigterm) {
  // durability none: publishes are quick, so connections spend most of their time between
  // requests, where a shutdown finds them.
  StartServer("topic_defaults: {durability: none}");
  const std::string data_dir = server_->data_dir();
  CreateTopic("d");
  {
    Client c = NewClient();
    client::FetchOptions f;
    f.wait_ms = 0;
    ASSERT_TRUE(c.Fetch("d", "audit", f).ok());  // the group reads from the start
  }
  std::set<std::string> answered;  // got a 200
  std::mutex mu;
  // The first process owns the temp dir (its destructor removes it): it stays until the end.
  std::vector<std::unique_ptr<ServeProcess>> runs;
  runs.push_back(std::move(server_));
  for (int round = 0; round < 10; ++round) {
    if (round > 0) {
      runs.push_back(
          std::make_unique<ServeProcess>("topic_defaults: {durability: none}", data_dir));
      ASSERT_OK(runs.back()->Start());
    }
    ServeProcess* server = runs.back().get();
    std::atomic<int> acked{0};
    std::vector<std::thread> publishers;
    for (int t = 0; t < 12; ++t) {
      publishers.emplace_back([&, t, port = server->port()] {
        RawConnection conn(port);
        for (int i = 0; conn.ok(); ++i) {
          const std::string id =
              Cat({"r", std::to_string(round), "-p", std::to_string(t), "-", std::to_string(i)});
          if (!conn.Send(PublishRequest("d", id))) return;
          std::string body;
          const int status = conn.ReadResponse(20'000, &body);
          if (status == 200) {
            std::lock_guard lock(mu);
            answered.insert(id);
            ++acked;
          } else {
            return;  // refused (503 while draining) or closed: nothing more on this one
          }
        }
      });
    }
    const int64_t until = NowMs() + 10'000;
    while (acked.load() < 200 && NowMs() < until) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    Result<int> code = server->Signal(SIGTERM);
    for (std::thread& t : publishers) t.join();
    ASSERT_TRUE(code.ok()) << code.status().ToString();
    EXPECT_EQ(*code, 0) << server->Log();
  }
  // Every event in the log got its 200.
  ServeProcess again("", data_dir);
  ASSERT_OK(again.Start());
  Client c(again.ClientOptions());
  const uint64_t end = Must(c.DescribeTopic("d")).offsets.at(0).end_offset;
  std::set<std::string> stored;
  while (stored.size() < end) {
    client::FetchOptions f;
    f.max_events = 1000;
    f.wait_ms = 1000;
    std::vector<Delivery> got = Must(c.Fetch("d", "audit", f));
    if (got.empty()) break;
    std::vector<client::Lease> leases;
    for (const Delivery& d : got) {
      stored.insert(d.event->id());
      leases.push_back(d.lease());
    }
    ASSERT_TRUE(c.Ack("d", "audit", leases).ok());
  }
  EXPECT_EQ(stored.size(), end);
  size_t unanswered = 0;
  for (const std::string& id : stored) {
    if (!answered.count(id)) {
      ++unanswered;
      ADD_FAILURE() << "event " << id << " was appended but its publisher got no 200";
    }
  }
  EXPECT_EQ(unanswered, 0u);
  for (const std::string& id : answered) EXPECT_EQ(stored.count(id), 1u) << id;
}

// A SIGTERM that arrives the moment the port is announced (or while storage still opens) is
// a clean stop: the process exits 0 after its final sync, never killed by the signal's default
// action before its handler is in place.
TEST(ServeSignalTest, SigtermRightAfterStartIsACleanStop) {
  // The window was narrow: the unfixed binary died by the signal in about one run of 20 rounds
  // in three; 40 rounds take under a second.
  for (int round = 0; round < 40; ++round) {
    ServeProcess serve;
    ASSERT_TRUE(serve.Start().ok()) << serve.Log();
    Result<int> code = serve.Signal(SIGTERM);
    ASSERT_TRUE(code.ok()) << code.status().ToString();
    EXPECT_EQ(*code, 0) << "round " << round << "\n" << serve.Log();
    if (*code != 0) break;
  }
}

}  // namespace
}  // namespace converge
