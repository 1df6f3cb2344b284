// The shared store through the real sidecar (`converge serve` as a child process):
//   - concurrent writer *processes* doing If-Match increments on one key over HTTP never lose
//     an update: the final counter equals the increments acknowledged;
//   - the change feed (read from the log after a clean shutdown) has exactly one event per
//     committed write, in commit order;
//   - bearer tokens: 401 without one, 403 for a service that may not write, reads for all;
//   - malformed keys and bodies give 400, oversized documents 413.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>
#include <charconv>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>
#include <string_view>
#include <system_error>
#include <tuple>
#include <vector>

#include "converge/env.h"
#include "converge/event.h"
#include "converge/log.h"
#include "serve_process.h"

namespace converge {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;

struct Reply {
  int status = 0;
  std::string body;
  std::string etag;
};

// One keep-alive connection.
class HttpConn {
 public:
  explicit HttpConn(uint16_t port) : socket_(ioc_) {
    beast::error_code ec;
    socket_.connect(asio::ip::tcp::endpoint(asio::ip::make_address("127.0.0.1"), port), ec);
  }
  Reply Call(http::verb verb, const std::string& target, const std::string& body = "",
             const std::map<std::string, std::string>& headers = {}) {
    http::request<http::string_body> req{verb, target, 11};
    req.set(http::field::host, "127.0.0.1");
    if (!body.empty()) req.set(http::field::content_type, "application/json");
    for (const auto& [k, v] : headers) req.set(k, v);
    req.body() = body;
    req.prepare_payload();
    beast::error_code ec;
    http::write(socket_, req, ec);
    http::response<http::string_body> res;
    if (!ec) http::read(socket_, buffer_, res, ec);
    if (ec) return Reply{-1, ec.message(), ""};
    return Reply{static_cast<int>(res.result_int()), res.body(),
                 std::string(res[http::field::etag])};
  }

 private:
  asio::io_context ioc_;
  asio::ip::tcp::socket socket_;
  beast::flat_buffer buffer_;
};

const char kHot[] = "/v1/collections/counters/docs/hot";

// The value of the sample `series` (name and labels, as rendered) in a /metrics text, or -1.
double MetricValue(const std::string& text, const std::string& series) {
  const std::string prefix = "\n" + series + " ";
  const size_t at = text.find(prefix);
  if (at == std::string::npos) return -1;
  return std::strtod(text.c_str() + at + prefix.size(), nullptr);
}

// The commit sequence number that ends a change-feed event id, "<collection>/<key>/<seq>"
// (docs/formats/store.md); false if the id has none.
bool SeqOfFeedEventId(std::string_view id, uint64_t* seq) {
  const size_t slash = id.rfind('/');
  if (slash == std::string_view::npos || slash + 1 == id.size()) return false;
  const std::string_view digits = id.substr(slash + 1);
  if (digits.find_first_not_of("0123456789") != std::string_view::npos) return false;
  return std::from_chars(digits.data(), digits.data() + digits.size(), *seq).ec == std::errc{};
}

// Child process: `increments` successful If-Match increments of the hot key; writes
// "<successes> <conflicts>\n" to `fd` and exits 0, or exits 1 on an unexpected reply.
[[noreturn]] void IncrementChild(uint16_t port, int increments, int fd) {
  HttpConn conn(port);
  int ok = 0, conflicts = 0;
  while (ok < increments) {
    Reply r = conn.Call(http::verb::get, kHot);
    if (r.status != 200) _exit(1);
    const long n = std::strtol(r.body.c_str(), nullptr, 10);
    Reply w = conn.Call(http::verb::put, kHot, std::to_string(n + 1), {{"If-Match", r.etag}});
    if (w.status == 200) {
      ++ok;
    } else if (w.status == 412) {
      ++conflicts;
    } else {
      _exit(1);
    }
  }
  const std::string line = std::to_string(ok) + " " + std::to_string(conflicts) + "\n";
  if (write(fd, line.data(), line.size()) != static_cast<ssize_t>(line.size())) _exit(1);
  _exit(0);
}

TEST(StoreServerTest, ConcurrentWriterProcessesNeverLoseAnUpdateAndTheFeedIsExact) {
  testing::ServeProcess serve;
  ASSERT_TRUE(serve.Start().ok()) << serve.Log();
  HttpConn admin(serve.port());
  ASSERT_EQ(admin.Call(http::verb::put, "/v1/collections/counters", "{}").status, 201);
  ASSERT_EQ(admin.Call(http::verb::put, kHot, "0", {{"If-None-Match", "*"}}).status, 201);

  constexpr int kProcesses = 4;
  constexpr int kIncrements = 150;
  std::vector<pid_t> pids;
  std::vector<int> fds;
  for (int p = 0; p < kProcesses; ++p) {
    int pipefd[2];
    ASSERT_EQ(pipe(pipefd), 0);
    const pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      close(pipefd[0]);
      IncrementChild(serve.port(), kIncrements, pipefd[1]);
    }
    close(pipefd[1]);
    pids.push_back(pid);
    fds.push_back(pipefd[0]);
  }
  long successes = 0, conflicts = 0;
  for (int p = 0; p < kProcesses; ++p) {
    int status = 0;
    ASSERT_EQ(waitpid(pids[p], &status, 0), pids[p]);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "writer " << p;
    char buf[64] = {0};
    const ssize_t n = read(fds[p], buf, sizeof(buf) - 1);
    close(fds[p]);
    ASSERT_GT(n, 0);
    long ok = 0, c = 0;
    ASSERT_EQ(std::sscanf(buf, "%ld %ld", &ok, &c), 2);
    successes += ok;
    conflicts += c;
  }
  EXPECT_EQ(successes, kProcesses * kIncrements);
  EXPECT_GT(conflicts, 0) << "the writers should have contended";
  Reply final_value = admin.Call(http::verb::get, kHot);
  ASSERT_EQ(final_value.status, 200);
  EXPECT_EQ(std::strtol(final_value.body.c_str(), nullptr, 10), successes) << "lost update";

  // The store's metrics agree: every acknowledged write (the create included) and every 412.
  Reply metrics = admin.Call(http::verb::get, "/metrics");
  ASSERT_EQ(metrics.status, 200);
  EXPECT_EQ(MetricValue(metrics.body,
                        R"(converge_store_writes_total{collection="counters",outcome="ok"})"),
            successes + 1)
      << metrics.body;
  EXPECT_EQ(MetricValue(metrics.body,
                        R"(converge_store_writes_total{collection="counters",outcome="conflict"})"),
            conflicts);
  EXPECT_EQ(MetricValue(metrics.body, "converge_store_commit_seconds_count"), successes + 1);
  EXPECT_GT(MetricValue(metrics.body, "converge_store_commit_seconds_sum"), 0);
  EXPECT_EQ(MetricValue(metrics.body, R"(converge_store_documents{collection="counters"})"), 1);
  EXPECT_EQ(MetricValue(metrics.body, "converge_store_commits_total"), successes + 1);

  // Clean shutdown, then the change feed from the log: the create + one event per increment,
  // each value one more than the last, in commit order.
  auto code = serve.Signal(SIGTERM);
  ASSERT_TRUE(code.ok() && *code == 0) << serve.Log();
  LogOptions lo;
  lo.dir = serve.data_dir() + "/log";
  auto log = Log::Open(Env::Default(), lo);
  ASSERT_TRUE(log.ok()) << log.status().ToString();
  uint64_t next = 0, prev_seq = 0;
  long expected_value = 0;
  size_t events = 0;
  while (true) {
    auto batch = (*log)->Read("store-changes", 0, next, 1000, 1 << 20);
    ASSERT_TRUE(batch.ok()) << batch.status().ToString();
    if (batch->records.empty()) break;
    for (const StoredRecord& r : batch->records) {
      auto event = DecodeBinary(r.value);
      ASSERT_TRUE(event.ok());
      uint64_t seq = 0;
      ASSERT_TRUE(SeqOfFeedEventId(r.id, &seq));
      ASSERT_GT(seq, prev_seq) << "events out of commit order";
      prev_seq = seq;
      EXPECT_EQ(event->type(), "converge.store.put");
      EXPECT_EQ(std::strtol(event->data().c_str(), nullptr, 10), expected_value) << r.id;
      ++expected_value;
      ++events;
    }
    next = batch->next_offset;
  }
  EXPECT_EQ(events, static_cast<size_t>(successes + 1));
}

TEST(StoreServerTest, TokensPermissionsAndMalformedInput) {
  const std::string config = R"(
auth:
  tokens:
    - {service: orders, token: orders-token-0123456789}
    - {service: billing, token: billing-token-0123456789}
    - {service: stranger, token: stranger-token-0123456789}
limits:
  max_body_bytes: 65536
  max_event_bytes: 65536
store:
  max_document_bytes: 1024
)";
  testing::ServeProcess serve(config);
  ASSERT_TRUE(serve.Start().ok()) << serve.Log();
  HttpConn conn(serve.port());
  auto as = [](const char* token) {
    return std::map<std::string, std::string>{{"Authorization", std::string("Bearer ") + token}};
  };
  const auto orders = as("orders-token-0123456789");
  const auto billing = as("billing-token-0123456789");
  const auto stranger = as("stranger-token-0123456789");

  EXPECT_EQ(conn.Call(http::verb::get, "/v1/collections").status, 401);
  EXPECT_EQ(conn.Call(http::verb::get, "/v1/collections", "", as("wrong-token-0123456789")).status,
            401);
  EXPECT_EQ(
      conn.Call(http::verb::put, "/v1/collections/orders", R"({"owner":"orders"})", billing).status,
      403);
  ASSERT_EQ(
      conn.Call(http::verb::put, "/v1/collections/orders", R"({"writers":["billing"]})", orders)
          .status,
      201);
  EXPECT_EQ(conn.Call(http::verb::put, "/v1/collections/orders/docs/o1", "{}", orders).status, 201);
  EXPECT_EQ(conn.Call(http::verb::put, "/v1/collections/orders/docs/o1", "{}", billing).status,
            200);
  Reply denied = conn.Call(http::verb::put, "/v1/collections/orders/docs/o1", "{}", stranger);
  EXPECT_EQ(denied.status, 403) << denied.body;
  EXPECT_NE(denied.body.find("PERMISSION_DENIED"), std::string::npos);
  EXPECT_EQ(conn.Call(http::verb::delete_, "/v1/collections/orders/docs/o1", "", stranger).status,
            403);
  EXPECT_EQ(
      conn.Call(http::verb::post, "/v1/collections/_transaction",
                R"({"ops":[{"op":"put","collection":"orders","key":"x","value":1}]})", stranger)
          .status,
      403);
  EXPECT_EQ(conn.Call(http::verb::get, "/v1/collections/orders/docs/o1", "", stranger).status, 200);
  EXPECT_EQ(conn.Call(http::verb::get, "/v1/collections/orders/docs/x", "", stranger).status, 404);
  // Each refusal counted once, for the collection addressed.
  Reply metrics = conn.Call(http::verb::get, "/metrics");
  ASSERT_EQ(metrics.status, 200);
  EXPECT_EQ(MetricValue(metrics.body,
                        R"(converge_store_writes_total{collection="orders",outcome="denied"})"),
            3)
      << metrics.body;
  EXPECT_EQ(
      MetricValue(metrics.body, R"(converge_store_writes_total{collection="orders",outcome="ok"})"),
      2);

  // A caller that may not write is refused before its body, preconditions or query are read:
  // a malformed request from it is 403, not 400, and changes nothing.
  for (const auto& [verb, target, body] :
       std::vector<std::tuple<http::verb, std::string, std::string>>{
           {http::verb::put, "/v1/collections/orders/docs/o1", "{\"a\":"},
           {http::verb::put, "/v1/collections/orders/docs/o1?tll_ms=5", "{}"},
           {http::verb::delete_, "/v1/collections/orders/docs/o1?bogus=1", ""},
           {http::verb::put, "/v1/collections/orders", "{not json"},
           {http::verb::put, "/v1/collections/orders?x=1", "{}"},
           {http::verb::delete_, "/v1/collections/orders?force=true", ""}}) {
    Reply r = conn.Call(verb, target, body, stranger);
    EXPECT_EQ(r.status, 403) << target << " " << r.body;
  }
  EXPECT_EQ(conn.Call(http::verb::get, "/v1/collections/orders/docs/o1", "", stranger).status, 200);
  EXPECT_EQ(conn.Call(http::verb::get, "/v1/collections/orders", "", stranger).status, 200);

  // Malformed keys and bodies: 400. Oversized: 413 (the store's bound, and the server's).
  EXPECT_EQ(conn.Call(http::verb::put, "/v1/collections/orders/docs/a%20b", "{}", orders).status,
            400);
  EXPECT_EQ(conn.Call(http::verb::put, "/v1/collections/orders/docs/a%zz", "{}", orders).status,
            400);
  EXPECT_EQ(conn.Call(http::verb::put, "/v1/collections/bad%20name/docs/a", "{}", orders).status,
            400);
  EXPECT_EQ(conn.Call(http::verb::put, "/v1/collections/orders/docs/k", "{\"a\":", orders).status,
            400);
  EXPECT_EQ(conn.Call(http::verb::put, "/v1/collections/orders/docs/k",
                      "\"" + std::string(2000, 'x') + "\"", orders)
                .status,
            413);
  EXPECT_EQ(conn.Call(http::verb::put, "/v1/collections/orders/docs/k2",
                      "\"" + std::string(100'000, 'x') + "\"", orders)
                .status,
            413);
}

}  // namespace
}  // namespace converge
