// Several `converge serve` processes sharing one store in PostgreSQL (store.backend: postgres),
// driven over HTTP as clients would:
//   - concurrent If-Match increments of one key through both sidecars: exactly one write wins
//     per version and no update is lost (counted);
//   - a multi-key transaction through one sidecar is all or nothing as read through the other;
//   - each sidecar's feed topic carries every change made through either, exactly once, in
//     commit order;
//   - SIGKILL of a sidecar under write load loses no acknowledged write (read through the
//     other, and its own feed catches up after a restart);
//   - PostgreSQL restart: /readyz goes unready and ready again, acknowledged writes survive,
//     writes resume.
#include <gtest/gtest.h>
#include <signal.h>

#include <atomic>
#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <boost/json/value.hpp>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "converge/env.h"
#include "converge/event.h"
#include "converge/log.h"
#include "serve_process.h"
#include "support/postgres_server.h"
#include "test_backend.h"
#include "test_util.h"

namespace converge {
namespace {

using testing::HttpHeaders;
using testing::HttpResult;

// One request on a new connection; a body goes as JSON.
HttpResult HttpCall(uint16_t port, std::string_view method, const std::string& target,
                    const std::string& body = "", HttpHeaders headers = {}) {
  if (!body.empty()) headers.emplace_back("Content-Type", "application/json");
  return testing::HttpCall(port, method, target, body, headers);
}

std::string SharedStoreConfig(const std::string& conninfo, const std::string& prefix) {
  return "store:\n  backend: postgres\n  postgres_conninfo: \"" + conninfo +
         "\"\n  postgres_table_prefix: " + prefix + "\n  postgres_connect_timeout_ms: 2000\n";
}

// A PUT that may meet a dead server: the status, or 0 when the exchange failed (no test
// failure: the SIGKILL test expects those).
int TryPut(uint16_t port, const std::string& target, const std::string& body,
           const std::string& if_none_match) {
  namespace asio = boost::asio;
  namespace http = boost::beast::http;
  asio::io_context ioc;
  asio::ip::tcp::socket socket(ioc);
  boost::beast::error_code ec;
  socket.connect(asio::ip::tcp::endpoint(asio::ip::make_address("127.0.0.1"), port), ec);
  if (ec) return 0;
  http::request<http::string_body> req{http::verb::put, target, 11};
  req.set(http::field::host, "127.0.0.1");
  req.set(http::field::content_type, "application/json");
  req.set(http::field::if_none_match, if_none_match);
  req.body() = body;
  req.prepare_payload();
  http::write(socket, req, ec);
  if (ec) return 0;
  boost::beast::flat_buffer buffer;
  http::response<http::string_body> res;
  http::read(socket, buffer, res, ec);
  return ec ? 0 : static_cast<int>(res.result_int());
}

// "<prefix><n>" (appending avoids a GCC 12 -Wrestrict false positive on operator+).
std::string Numbered(std::string prefix, long n) {
  prefix += std::to_string(n);
  return prefix;
}

// Polls `fn` until it returns true or `ms` pass.
template <typename Fn>
bool Eventually(Fn fn, int64_t ms) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(ms);
  while (std::chrono::steady_clock::now() < deadline) {
    if (fn()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return fn();
}

// The change feed of a stopped sidecar, read from its log: (event id, commit seq) in order.
struct FeedEvent {
  std::string id;
  std::string type;
  std::string key;
  uint64_t seq = 0;
};
std::vector<FeedEvent> ReadFeed(const std::string& data_dir) {
  std::vector<FeedEvent> out;
  LogOptions lo;
  lo.dir = data_dir + "/log";
  auto log = Log::Open(Env::Default(), lo);
  EXPECT_TRUE(log.ok()) << log.status().ToString();
  if (!log.ok()) return out;
  uint64_t next = 0;
  while (true) {
    auto batch = (*log)->Read("store-changes", 0, next, 1000, 4 << 20);
    EXPECT_TRUE(batch.ok()) << batch.status().ToString();
    if (!batch.ok() || batch->records.empty()) break;
    for (const StoredRecord& r : batch->records) {
      auto event = DecodeBinary(r.value);
      EXPECT_TRUE(event.ok());
      if (!event.ok()) continue;
      FeedEvent e;
      e.id = std::string(r.id);
      e.type = event->type();
      e.key = event->subject().value_or("");
      const auto* seq = event->FindExtension("commitseq");
      e.seq = seq != nullptr ? std::strtoull(seq->value.c_str(), nullptr, 10) : 0;
      out.push_back(std::move(e));
    }
    next = batch->next_offset;
  }
  return out;
}

class StorePostgresServeTest : public ::testing::Test {
 protected:
  void SetUp() override { conninfo_ = testing::TestPostgresConnInfo(); }
  std::string conninfo_;
};

TEST_F(StorePostgresServeTest, TwoSidecarsShareConditionalWritesTransactionsAndFeeds) {
  const std::string config = SharedStoreConfig(conninfo_, "shared");
  testing::ServeProcess a(config), b(config);
  ASSERT_TRUE(a.Start().ok()) << a.Log();
  ASSERT_TRUE(b.Start().ok()) << b.Log();
  ASSERT_EQ(HttpCall(a.port(), "PUT", "/v1/collections/counters", "{}").status, 201);
  // The collection made through A is there through B.
  EXPECT_EQ(HttpCall(b.port(), "PUT", "/v1/collections/counters", "{}").status, 200);
  ASSERT_EQ(HttpCall(b.port(), "PUT", "/v1/collections/pairs", "{}").status, 201);
  ASSERT_EQ(
      HttpCall(a.port(), "PUT", "/v1/collections/counters/docs/hot", "0", {{"If-None-Match", "*"}})
          .status,
      201);

  // Increments through both sidecars at once.
  constexpr int kWriters = 4;  // two per sidecar
  constexpr int kIncrements = 25;
  std::mutex mu;
  std::multiset<std::string> winning_etags;
  std::atomic<long> conflicts{0};
  std::atomic<bool> failed{false};
  std::vector<std::thread> writers;
  for (int w = 0; w < kWriters; ++w) {
    const uint16_t port = w % 2 == 0 ? a.port() : b.port();
    writers.emplace_back([&, port] {
      int ok = 0;
      while (ok < kIncrements && !failed) {
        HttpResult r = HttpCall(port, "GET", "/v1/collections/counters/docs/hot");
        if (r.status != 200) {
          failed = true;
          ADD_FAILURE() << "read " << r.status << " " << r.body;
          return;
        }
        const long n = std::strtol(r.body.c_str(), nullptr, 10);
        const std::string etag = r.Header("ETag");
        HttpResult put = HttpCall(port, "PUT", "/v1/collections/counters/docs/hot",
                                  std::to_string(n + 1), {{"If-Match", etag}});
        if (put.status == 200) {
          ++ok;
          std::lock_guard<std::mutex> g(mu);
          winning_etags.insert(etag);
        } else if (put.status == 412) {
          ++conflicts;
        } else {
          failed = true;
          ADD_FAILURE() << "write " << put.status << " " << put.body;
          return;
        }
      }
    });
  }
  // Meanwhile: transactions through A, each writing x and y with the same value, read
  // through B as one page (one snapshot): never one without the other.
  constexpr int kTxns = 20;
  std::atomic<bool> txns_done{false};
  std::atomic<int> torn{0}, pages{0};
  std::thread reader([&] {
    while (!txns_done) {
      HttpResult page = HttpCall(b.port(), "GET", "/v1/collections/pairs/docs");
      if (page.status != 200) continue;
      boost::json::value v = boost::json::parse(page.body);
      std::map<std::string, std::string> values;
      for (const auto& d : v.at("documents").as_array()) {
        values[std::string(d.at("key").as_string())] = boost::json::serialize(d.at("value"));
      }
      if (values["x"] != values["y"]) ++torn;
      ++pages;
    }
  });
  for (int i = 1; i <= kTxns; ++i) {
    const std::string n = std::to_string(i);
    HttpResult t =
        HttpCall(a.port(), "POST", "/v1/collections/_transaction",
                 R"({"ops":[{"op":"put","collection":"pairs","key":"x","value":)" + n +
                     R"(},{"op":"put","collection":"pairs","key":"y","value":)" + n + "}]}");
    ASSERT_EQ(t.status, 200) << t.body;
  }
  // A refused transaction changes nothing anywhere: its check fails, its put is not applied.
  HttpResult refused =
      HttpCall(a.port(), "POST", "/v1/collections/_transaction",
               R"({"ops":[{"op":"put","collection":"pairs","key":"z","value":1},)"
               R"({"op":"check","collection":"pairs","key":"x","if_match":"\"1\""}]})");
  EXPECT_EQ(refused.status, 412) << refused.body;
  txns_done = true;
  reader.join();
  for (auto& t : writers) t.join();
  ASSERT_FALSE(failed.load());
  EXPECT_EQ(torn.load(), 0) << "a transaction was seen half applied";
  EXPECT_GT(pages.load(), 0);
  EXPECT_EQ(HttpCall(b.port(), "GET", "/v1/collections/pairs/docs/z").status, 404);

  // Exactly one winner per version, and no lost update.
  const long successes = kWriters * kIncrements;
  EXPECT_EQ(static_cast<long>(winning_etags.size()), successes);
  EXPECT_EQ(std::set<std::string>(winning_etags.begin(), winning_etags.end()).size(),
            winning_etags.size())
      << "two writes won with the same If-Match";
  for (const uint16_t port : {a.port(), b.port()}) {
    HttpResult final_value = HttpCall(port, "GET", "/v1/collections/counters/docs/hot");
    ASSERT_EQ(final_value.status, 200);
    EXPECT_EQ(std::strtol(final_value.body.c_str(), nullptr, 10), successes) << "lost update";
  }
  std::printf("increments: %ld acknowledged, %ld conflicts (412); %d pages read\n", successes,
              conflicts.load(), pages.load());

  // Each sidecar's feed: every change through either sidecar, once, in commit order.
  ASSERT_TRUE(a.Signal(SIGTERM).ok());
  ASSERT_TRUE(b.Signal(SIGTERM).ok());
  const size_t expected = 1 + static_cast<size_t>(successes) + 2 * kTxns;
  std::vector<std::string> ids_a;
  for (const std::string& dir : {a.data_dir(), b.data_dir()}) {
    const std::vector<FeedEvent> feed = ReadFeed(dir);
    EXPECT_EQ(feed.size(), expected) << dir;
    std::set<std::string> ids;
    uint64_t prev = 0;
    std::map<std::string, uint64_t> last_of_key;
    for (const FeedEvent& e : feed) {
      EXPECT_TRUE(ids.insert(e.id).second) << "duplicate " << e.id;
      EXPECT_GE(e.seq, prev) << "out of commit order at " << e.id;
      prev = e.seq;
      EXPECT_GT(e.seq, last_of_key[e.key]) << "key " << e.key << " out of order";
      last_of_key[e.key] = e.seq;
    }
    std::vector<std::string> ordered;
    for (const FeedEvent& e : feed) ordered.push_back(e.id);
    if (ids_a.empty()) {
      ids_a = ordered;
    } else {
      EXPECT_EQ(ordered, ids_a) << "the two feeds differ";
    }
  }
}

TEST_F(StorePostgresServeTest, SigkillOfASidecarUnderWriteLoadLosesNoAcknowledgedWrite) {
  const std::string config = SharedStoreConfig(conninfo_, "killed");
  testing::ServeProcess a(config), b(config);
  ASSERT_TRUE(a.Start().ok()) << a.Log();
  ASSERT_TRUE(b.Start().ok()) << b.Log();
  ASSERT_EQ(HttpCall(a.port(), "PUT", "/v1/collections/orders", "{}").status, 201);

  std::mutex mu;
  std::vector<std::string> acked;
  std::atomic<bool> stop{false};
  std::vector<std::thread> writers;
  for (int w = 0; w < 4; ++w) {
    writers.emplace_back([&, w] {
      for (long i = 0; !stop; ++i) {
        const std::string key = Numbered(Numbered("w", w) + "-", i);
        const int status = TryPut(a.port(), "/v1/collections/orders/docs/" + key,
                                  "{\"n\":" + std::to_string(i) + "}", "*");
        if (status == 201) {
          std::lock_guard<std::mutex> g(mu);
          acked.push_back(key);
        } else if (status == 0 || status >= 500) {
          return;  // the sidecar is gone
        }
      }
    });
  }
  ASSERT_TRUE(Eventually(
      [&] {
        std::lock_guard<std::mutex> g(mu);
        return acked.size() >= 200;
      },
      30'000));
  a.Kill();  // SIGKILL under load
  stop = true;
  for (auto& t : writers) t.join();
  std::vector<std::string> keys;
  {
    std::lock_guard<std::mutex> g(mu);
    keys = acked;
  }
  size_t lost = 0;
  for (const std::string& key : keys) {
    if (HttpCall(b.port(), "GET", "/v1/collections/orders/docs/" + key).status != 200) ++lost;
  }
  EXPECT_EQ(lost, 0u) << "of " << keys.size() << " acknowledged writes";
  std::printf("acknowledged before SIGKILL: %zu, lost: %zu\n", keys.size(), lost);

  // The killed sidecar's feed catches up after a restart (same data dir): every acknowledged
  // write once.
  testing::ServeProcess again(config, a.data_dir());
  ASSERT_TRUE(again.Start().ok()) << again.Log();
  ASSERT_TRUE(again.Signal(SIGTERM).ok());
  const std::vector<FeedEvent> feed = ReadFeed(a.data_dir());
  std::set<std::string> fed;
  for (const FeedEvent& e : feed) EXPECT_TRUE(fed.insert(e.key).second) << "duplicate " << e.id;
  for (const std::string& key : keys) EXPECT_EQ(fed.count(key), 1u) << key;
}

TEST_F(StorePostgresServeTest, PostgresRestartMakesReadyzUnreadyThenReadyAndWritesResume) {
  auto pg = testing::PostgresServer::Start();
  ASSERT_TRUE(pg.ok()) << pg.status().ToString();
  testing::ServeProcess serve(SharedStoreConfig((*pg)->ConnInfo(), "restart"));
  ASSERT_TRUE(serve.Start().ok()) << serve.Log();
  ASSERT_EQ(HttpCall(serve.port(), "PUT", "/v1/collections/orders", "{}").status, 201);
  for (int i = 0; i < 20; ++i) {
    ASSERT_EQ(HttpCall(serve.port(), "PUT", "/v1/collections/orders/docs/" + Numbered("k", i), "1")
                  .status,
              201);
  }
  EXPECT_EQ(HttpCall(serve.port(), "GET", "/readyz").status, 200);

  ASSERT_TRUE((*pg)->Stop().ok());
  EXPECT_TRUE(
      Eventually([&] { return HttpCall(serve.port(), "GET", "/readyz").status == 503; }, 10'000));
  HttpResult down = HttpCall(serve.port(), "PUT", "/v1/collections/orders/docs/late", "1");
  EXPECT_EQ(down.status, 503) << down.body;
  HttpResult ready = HttpCall(serve.port(), "GET", "/readyz");
  EXPECT_NE(ready.body.find("store"), std::string::npos) << ready.body;
  // Reads say so too (the list of collections is not answered empty).
  EXPECT_EQ(HttpCall(serve.port(), "GET", "/v1/collections/orders/docs/k0").status, 503);
  EXPECT_EQ(HttpCall(serve.port(), "GET", "/v1/collections").status, 503);

  ASSERT_TRUE((*pg)->Restart().ok());
  EXPECT_TRUE(
      Eventually([&] { return HttpCall(serve.port(), "GET", "/readyz").status == 200; }, 20'000));
  for (int i = 0; i < 20; ++i) {
    EXPECT_EQ(
        HttpCall(serve.port(), "GET", "/v1/collections/orders/docs/" + Numbered("k", i)).status,
        200);
  }
  EXPECT_TRUE(Eventually(
      [&] {
        return HttpCall(serve.port(), "PUT", "/v1/collections/orders/docs/late", "1").status == 201;
      },
      10'000));
}

}  // namespace
}  // namespace converge
