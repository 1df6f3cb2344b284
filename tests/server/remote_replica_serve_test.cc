// Replicas of another node's store collection (`source.remote`, the sidecar-to-sidecar
// channel GET /v1/collections/{collection}/changes), with two real `converge serve` processes:
//   - node A's change stream answers only tokens that may read the collection: a token scoped
//     to another collection gets 403 and nothing, before its query is looked at;
//   - node B copies A's collection into a SQLite table (sparse: A's other collections are
//     passed), a token from A's write reads its own write on B, staleness by value;
//   - SIGKILL of A and of B under write load on A, restarts, and B's table equals A's
//     collection.
//   - a bootstrap larger than one store transaction into a read-only collection, in pages,
//     resumed safely after a crash mid-bootstrap; on_position_gone: rebootstrap (SQLite and
//     PostgreSQL); reconciliation of a read-only collection copy.
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <boost/json/value.hpp>
#include <chrono>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "converge/sql.h"
#include "serve_process.h"
#include "support/postgres_server.h"
#include "test_util.h"

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wrestrict"
#endif

namespace converge {
namespace {

using testing::HttpCall;
using testing::HttpResult;
using testing::ServeProcess;
namespace json = boost::json;

const std::string kOwner = "owner-token-0123456789";
const std::string kReplicator = "replicator-token-0123456789";
const std::string kOther = "other-collection-token-0123456789";

// Node A: the customers collection's owner, a token that may read customers only (what node
// B replicates with), and one that may read products only.
std::string ConfigA(const std::string& extra = "") {
  return extra +
         "auth:\n"
         "  tokens:\n"
         "    - {service: orders, token: " +
         kOwner +
         "}\n"
         "    - {service: node-b, token: " +
         kReplicator +
         ", read_collections: [customers]}\n"
         "    - {service: catalog-reader, token: " +
         kOther + ", read_collections: [products]}\n";
}

// Node B: no auth (loopback), one replica of A's customers: into a SQLite table, or into its
// store's read-only collection customers_copy.
std::string ConfigB(uint16_t a_port, const std::string& db_path, const std::string& token,
                    bool store_target, const std::string& pg_conninfo,
                    const std::string& extra = "") {
  const std::string target =
      store_target ? "    target: {store_collection: customers_copy}\n"
      : !pg_conninfo.empty()
          ? "    target: {postgres: '" + pg_conninfo + "', table: customers_copy}\n"
          : "    target: {sqlite: " + db_path + ", table: customers_copy}\n";
  return std::string(store_target ? "" : "store: {enabled: false}\n") +
         "replicas:\n"
         "  - name: customers\n"
         "    source:\n"
         "      remote: {url: 'http://127.0.0.1:" +
         std::to_string(a_port) + "', token: " + token + ", collection: customers}\n" + target +
         "    max_batch: 200\n"
         "    poll_interval_ms: 200\n" +
         extra;
}

json::value ParseBody(const HttpResult& r) {
  boost::system::error_code ec;
  json::value v = json::parse(r.body, ec);
  EXPECT_FALSE(ec) << r.body;
  return v;
}

double MetricValue(const std::string& text, const std::string& series) {
  size_t at = 0;
  while ((at = text.find(series + " ", at)) != std::string::npos) {
    if (at == 0 || text[at - 1] == '\n') return std::stod(text.substr(at + series.size() + 1));
    at += series.size();
  }
  return -1;
}

// A loopback port free right now (for a node that must keep its address across restarts).
uint16_t FreePort() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  EXPECT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  socklen_t len = sizeof addr;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  ::close(fd);
  return ntohs(addr.sin_port);
}

class RemoteReplicaServeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = ::testing::TempDir() + "remote_replica_" + std::to_string(::getpid()) + "_" +
           ::testing::UnitTest::GetInstance()->current_test_info()->name();
    std::system(("rm -rf " + dir_ + " && mkdir -p " + dir_).c_str());
    db_path_ = dir_ + "/copy.db";
    a_port_ = FreePort();
    // Tests named *Retention* run A with a feed that keeps only its newest few KiB.
    if (std::string(::testing::UnitTest::GetInstance()->current_test_info()->name())
            .find("Retention") != std::string::npos) {
      a_extra_ = "topic_defaults: {segment_max_bytes: 4096, retention_max_bytes: 8192}\n";
    }
    ASSERT_NO_FATAL_FAILURE(StartA(""));
  }
  void TearDown() override {
    b_.reset();
    a_.reset();
    old_.clear();
    pg_.reset();
    std::system(("rm -rf " + dir_).c_str());
  }

  void StartA(const std::string& data_dir) {
    auto a = std::make_unique<ServeProcess>(ConfigA(a_extra_), data_dir);
    a->set_listen("127.0.0.1:" + std::to_string(a_port_));
    // The port was free a moment ago; after a kill it may take a moment to be reusable.
    Status started = a->Start();
    for (int i = 0; !started.ok() && i < 20; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(250));
      a = std::make_unique<ServeProcess>(ConfigA(a_extra_), data_dir);
      a->set_listen("127.0.0.1:" + std::to_string(a_port_));
      started = a->Start();
    }
    ASSERT_OK(started);
    if (a_) old_.push_back(std::move(a_));
    a_ = std::move(a);
  }
  void StartB(const std::string& data_dir, const std::string& token = kReplicator) {
    auto b = std::make_unique<ServeProcess>(
        ConfigB(a_port_, db_path_, token, store_target_, pg_ ? pg_->ConnInfo() : "", b_extra_),
        data_dir);
    ASSERT_OK(b->Start());
    if (b_) old_.push_back(std::move(b_));
    b_ = std::move(b);
  }

  HttpResult CallA(const std::string& method, const std::string& target,
                   const std::string& body = "", const std::string& token = kOwner) {
    testing::HttpHeaders headers;
    if (!body.empty()) headers.push_back({"Content-Type", "application/json"});
    return HttpCall(a_->port(), method, target, body, headers, token);
  }
  HttpResult CallB(const std::string& method, const std::string& target) {
    return HttpCall(b_->port(), method, target, "", {}, "");
  }

  void CreateCollections() {
    for (const char* c : {"customers", "products"}) {
      HttpResult r = CallA("PUT", std::string("/v1/collections/") + c, R"({"owner":"orders"})");
      ASSERT_TRUE(r.status == 201 || r.status == 200) << r.status << " " << r.body;
    }
  }

  uint64_t Put(const std::string& collection, const std::string& key, const std::string& doc) {
    HttpResult put = CallA("PUT", "/v1/collections/" + collection + "/docs/" + key, doc);
    EXPECT_TRUE(put.status == 200 || put.status == 201) << put.body;
    return put.status / 100 == 2 ? std::stoull(put.Header("Converge-Version")) : 0;
  }

  // Polls B's /v1/replicas/customers until caught up past `commitseq`.
  json::object WaitCaughtUp(uint64_t commitseq) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    json::object last;
    while (std::chrono::steady_clock::now() < deadline) {
      HttpResult r = CallB("GET", "/v1/replicas/customers");
      if (r.status == 200) {
        last = ParseBody(r).as_object();
        const json::array& positions = last["positions"].as_array();
        const uint64_t seq =
            positions.empty() ? 0 : positions[0].as_object().at("commitseq").to_number<uint64_t>();
        if (last["running"].as_bool() && last["lag_changes"].to_number<int64_t>() == 0 &&
            seq >= commitseq) {
          return last;
        }
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    ADD_FAILURE() << "the replica did not catch up: " << json::serialize(last) << "\nB:\n"
                  << b_->Log() << "\nA:\n"
                  << a_->Log();
    return last;
  }

  // key -> (version, document) of B's copy: the table's live rows, or for a store target
  // the copy collection's documents (read with the usual store routes) at the versions the
  // replica's rows route reports.
  std::map<std::string, std::pair<uint64_t, std::string>> TableRows() {
    std::map<std::string, std::pair<uint64_t, std::string>> out;
    if (store_target_) {
      std::string page;
      while (true) {
        HttpResult r = CallB("GET", "/v1/collections/customers_copy/docs?limit=1000" +
                                        (page.empty() ? "" : "&page_token=" + page));
        if (r.status == 404) return out;
        EXPECT_EQ(r.status, 200) << r.body;
        if (r.status != 200) return out;
        json::object o = ParseBody(r).as_object();
        for (const json::value& d : o["documents"].as_array()) {
          const std::string key(d.as_object().at("key").as_string());
          HttpResult row = CallB("GET", "/v1/replicas/customers/rows/" + key);
          EXPECT_EQ(row.status, 200) << row.body;
          const uint64_t version =
              row.status == 200 ? ParseBody(row).as_object()["version"].to_number<uint64_t>() : 0;
          out[key] = {version, json::serialize(d.as_object().at("value"))};
        }
        const json::value* next = o.if_contains("next_page_token");
        if (next == nullptr || !next->is_string() || next->as_string().empty()) break;
        page = std::string(next->as_string());
      }
      return out;
    }
    auto db =
        pg_ ? sql::Database::ConnectPostgres(sql::PostgresOptions{.conninfo = pg_->ConnInfo()})
            : sql::Database::OpenSqlite(sql::SqliteOptions{.path = db_path_});
    EXPECT_TRUE(db.ok()) << db.status().ToString();
    if (!db.ok()) return out;
    Result<int64_t> n = (*db)->Query(
        "SELECT key, version, document FROM customers_copy WHERE NOT deleted", {},
        [&out](const sql::Row& row) -> Status {
          out[std::string(row.Bytes(0))] = {static_cast<uint64_t>(*row.Int(1)),
                                            json::serialize(json::parse(row.Bytes(2)))};
          return Status::Ok();
        });
    EXPECT_TRUE(n.ok()) << n.status().ToString();
    return out;
  }

  std::map<std::string, std::pair<uint64_t, std::string>> CollectionDocs() {
    std::map<std::string, std::pair<uint64_t, std::string>> out;
    std::string page;
    while (true) {
      HttpResult r = CallA("GET", "/v1/collections/customers/docs?limit=1000" +
                                      (page.empty() ? "" : "&page_token=" + page));
      EXPECT_EQ(r.status, 200) << r.body;
      if (r.status != 200) return out;
      json::object o = ParseBody(r).as_object();
      for (const json::value& d : o["documents"].as_array()) {
        const json::object& doc = d.as_object();
        out[std::string(doc.at("key").as_string())] = {doc.at("version").to_number<uint64_t>(),
                                                       json::serialize(doc.at("value"))};
      }
      const json::value* next = o.if_contains("next_page_token");
      if (next == nullptr || !next->is_string() || next->as_string().empty()) break;
      page = std::string(next->as_string());
    }
    return out;
  }

  void KillEitherUnderLoadAndCompare();
  void RebootstrapAfterRetention();

  std::string dir_;
  std::string db_path_;
  std::string a_extra_;        // more of A's config (before auth:)
  bool store_target_ = false;  // B copies into its store's collection customers_copy
  std::string b_extra_;        // more settings of B's replica
  std::unique_ptr<testing::PostgresServer> pg_;  // B's PostgreSQL target, when used
  uint16_t a_port_ = 0;
  std::unique_ptr<ServeProcess> a_;
  std::unique_ptr<ServeProcess> b_;
  std::vector<std::unique_ptr<ServeProcess>> old_;  // killed nodes owning their data dirs
};

TEST_F(RemoteReplicaServeTest, ChangeStreamNeedsReadPermissionOfTheCollection) {
  CreateCollections();
  Put("customers", "secret", R"({"ssn":"123-45"})");
  Put("products", "p1", R"({"sku":"p-1"})");
  // The replicator's token reads customers' changes (and nothing of products). The feed
  // follows the store's commits closely, not at once: poll (the long poll waits for it).
  HttpResult ok;
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  do {
    ok = CallA("GET", "/v1/collections/customers/changes?from=0&wait_ms=1000", "", kReplicator);
    ASSERT_EQ(ok.status, 200) << ok.body;
  } while (ok.body.find("123-45") == std::string::npos && std::chrono::steady_clock::now() < until);
  EXPECT_NE(ok.body.find("123-45"), std::string::npos) << ok.body;
  EXPECT_EQ(ok.body.find("p-1"), std::string::npos) << ok.body;
  // A token that may not read customers: 403 and nothing, for good and for bad queries alike
  // (authorization comes first).
  for (const std::string& target :
       {std::string("/v1/collections/customers/changes?from=0"),
        std::string("/v1/collections/customers/changes?from=-1&bogus=1"),
        std::string("/v1/collections/customers/changes?wait_ms=1000")}) {
    HttpResult r = CallA("GET", target, "", kOther);
    EXPECT_EQ(r.status, 403) << target << " " << r.body;
    EXPECT_EQ(r.code(), "PERMISSION_DENIED");
    EXPECT_EQ(r.body.find("123-45"), std::string::npos);
  }
  // The replicator may not read products, nor write customers, nor read its documents' route
  // for another collection.
  EXPECT_EQ(CallA("GET", "/v1/collections/products/changes", "", kReplicator).status, 403);
  EXPECT_EQ(CallA("GET", "/v1/collections/products/docs/p1", "", kReplicator).status, 403);
  EXPECT_EQ(CallA("PUT", "/v1/collections/customers/docs/x", R"({"a":1})", kReplicator).status,
            403);
  // No token: 401.
  EXPECT_EQ(CallA("GET", "/v1/collections/customers/changes", "", "").status, 401);
  // Bad input from an allowed token: 400.
  EXPECT_EQ(CallA("GET", "/v1/collections/customers/changes?from=x", "", kReplicator).status, 400);
  EXPECT_EQ(CallA("GET", "/v1/collections/customers/changes?limit=0", "", kReplicator).status, 400);

  // A node B replicating with the products-only token gets nothing, and says why.
  ASSERT_NO_FATAL_FAILURE(StartB("", kOther));
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (b_->Log().find("PERMISSION_DENIED") == std::string::npos &&
         b_->Log().find("403") == std::string::npos &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_NE(b_->Log().find("403"), std::string::npos) << b_->Log();
  EXPECT_TRUE(TableRows().empty());
  HttpResult m = CallB("GET", "/metrics");
  EXPECT_EQ(MetricValue(m.body, "converge_replica_applied_total{replica=\"customers\"}"), 0);
}

TEST_F(RemoteReplicaServeTest, CopiesTheCollectionWithReadYourWritesAndStaleness) {
  CreateCollections();
  ASSERT_NO_FATAL_FAILURE(StartB(""));
  uint64_t seq = 0;
  for (int i = 0; i < 30; ++i) {
    seq = Put("customers", "k" + std::to_string(i % 20), R"({"i":)" + std::to_string(i) + "}");
    // Another collection's writes in between: passed by A, never applied on B.
    Put("products", "p" + std::to_string(i), R"({"i":)" + std::to_string(i) + "}");
  }
  // Read-your-writes across nodes: the token of a write on A, read on B.
  HttpResult put = CallA("PUT", "/v1/collections/customers/docs/ryw", R"({"mine":true})");
  ASSERT_TRUE(put.status == 200 || put.status == 201) << put.body;
  const std::string token = put.Header("Converge-Consistency-Token");
  ASSERT_FALSE(token.empty());
  const uint64_t version = std::stoull(put.Header("Converge-Version"));
  HttpResult row =
      CallB("GET", "/v1/replicas/customers/rows/ryw?token=" + token + "&timeout_ms=20000");
  ASSERT_EQ(row.status, 200) << row.body << "\n" << b_->Log();
  EXPECT_EQ(ParseBody(row).as_object()["version"].to_number<uint64_t>(), version);
  // A token of a write to another collection is reached too (its offsets are passed).
  HttpResult other = CallA("PUT", "/v1/collections/products/docs/last", R"({"x":1})");
  ASSERT_EQ(other.status / 100, 2);
  HttpResult passed = CallB(
      "GET", "/v1/replicas/customers/rows/ryw?token=" + other.Header("Converge-Consistency-Token") +
                 "&timeout_ms=20000");
  EXPECT_EQ(passed.status, 200) << passed.body;

  json::object d = WaitCaughtUp(std::max(seq, version));
  // 31 changes of customers (20 keys, 10 of them twice, and ryw): each applied, or superseded
  // by a later version of its key in the same batch. Nothing of products.
  const int64_t applied = d["applied"].to_number<int64_t>();
  EXPECT_EQ(applied + d["superseded"].to_number<int64_t>(), 31) << json::serialize(d);
  EXPECT_GE(applied, 21);
  EXPECT_EQ(d["stale"].to_number<int64_t>(), 0);
  EXPECT_EQ(d["filtered"].to_number<int64_t>(), 0) << "A passes other collections itself";
  EXPECT_EQ(d["lag_changes"].to_number<int64_t>(), 0);
  EXPECT_EQ(d["lag_ms"].to_number<int64_t>(), 0);
  EXPECT_EQ(d["malformed"].to_number<int64_t>(), 0);
  EXPECT_TRUE(d["stopped"].is_null());
  EXPECT_EQ(d["source"].as_object().at("remote").as_object().at("collection").as_string(),
            "customers");
  EXPECT_EQ(d["source"].as_object().at("topic").as_string(), "store-changes");
  EXPECT_EQ(json::serialize(d).find(kReplicator), std::string::npos) << "the token is shown";
  HttpResult m = CallB("GET", "/metrics");
  ASSERT_EQ(m.status, 200);
  EXPECT_EQ(MetricValue(m.body, "converge_replica_applied_total{replica=\"customers\"}"),
            static_cast<double>(applied))
      << m.body;
  EXPECT_EQ(MetricValue(m.body, "converge_replica_lag_changes{replica=\"customers\"}"), 0);
  EXPECT_EQ(MetricValue(m.body, "converge_replica_lag_ms{replica=\"customers\"}"), 0);
  EXPECT_EQ(MetricValue(m.body, "converge_replica_running{replica=\"customers\"}"), 1);
  EXPECT_EQ(MetricValue(m.body, "converge_replica_stopped{replica=\"customers\"}"), 0);
  const double latency =
      MetricValue(m.body, "converge_replica_last_apply_latency_ms{replica=\"customers\"}");
  EXPECT_GE(latency, 0);
  EXPECT_LT(latency, 60'000);
  EXPECT_EQ(TableRows(), CollectionDocs());

  // While A is down, B's copy stays readable and its lag grows visibly, by value.
  a_->Kill();
  old_.push_back(std::move(a_));
  HttpResult stale = CallB("GET", "/v1/replicas/customers/rows/ryw?max_staleness_ms=60000");
  EXPECT_EQ(stale.status, 200) << stale.body;
  EXPECT_EQ(CallB("GET", "/v1/replicas/customers/rows/k3").status, 200);
  // SIGTERM of B while its long poll cannot reach A: a clean exit.
  Result<int> code = b_->Signal(SIGTERM);
  ASSERT_TRUE(code.ok()) << code.status().ToString();
  EXPECT_EQ(*code, 0) << b_->Log();
}

void RemoteReplicaServeTest::KillEitherUnderLoadAndCompare() {
  CreateCollections();
  ASSERT_NO_FATAL_FAILURE(StartB(""));
  // Each round: write load on A; kill B (round 0) or A (round 1) in the middle; restart.
  for (int round = 0; round < 2; ++round) {
    std::atomic<bool> stop{false};
    std::vector<std::thread> writers;
    for (int w = 0; w < 3; ++w) {
      writers.emplace_back([&, w] {
        for (int i = 0; !stop.load(); ++i) {
          const std::string collection = i % 4 == 3 ? "products" : "customers";
          const std::string key = "k" + std::to_string((i * 7 + w) % 40);
          const bool del = i % 9 == 4;
          const std::string body =
              del ? "" : R"({"w":)" + std::to_string(w) + R"(,"i":)" + std::to_string(i) + "}";
          std::string req = std::string(del ? "DELETE" : "PUT") + " /v1/collections/" + collection +
                            "/docs/" + key +
                            " HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer " + kOwner +
                            "\r\nContent-Type: application/json\r\nConnection: close\r\n"
                            "Content-Length: " +
                            std::to_string(body.size()) + "\r\n\r\n" + body;
          // A write cut by a kill is an expected outcome here, not a failure.
          (void)testing::RawExchange(a_port_, req, 2000);
        }
      });
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1200));
    if (round == 0) {
      b_->Kill();
      std::this_thread::sleep_for(std::chrono::milliseconds(300));
      ASSERT_NO_FATAL_FAILURE(StartB(b_->data_dir()));
    } else {
      a_->Kill();
      std::this_thread::sleep_for(std::chrono::milliseconds(300));
      ASSERT_NO_FATAL_FAILURE(StartA(a_->data_dir()));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(800));
    stop = true;
    for (auto& t : writers) t.join();
  }
  const uint64_t last = Put("customers", "final", R"({"done":true})");
  ASSERT_GT(last, 0u);
  json::object d = WaitCaughtUp(last);
  EXPECT_TRUE(d["stopped"].is_null()) << json::serialize(d);
  const auto docs = CollectionDocs();
  EXPECT_GT(docs.size(), 5u);
  EXPECT_EQ(TableRows(), docs) << "B:\n" << b_->Log();
}

TEST_F(RemoteReplicaServeTest, SigkillOfEitherNodeUnderWriteLoadThenCopyEqualsCollection) {
  KillEitherUnderLoadAndCompare();
}

TEST_F(RemoteReplicaServeTest, SigkillOfEitherNodeUnderWriteLoadThenPostgresTableEqualsIt) {
  Result<std::unique_ptr<testing::PostgresServer>> pg = testing::PostgresServer::Start();
  // Integration suites fail, never skip, when their server is missing.
  ASSERT_TRUE(pg.ok()) << pg.status().ToString();
  pg_ = std::move(pg).value();
  KillEitherUnderLoadAndCompare();
}

TEST_F(RemoteReplicaServeTest, SigkillOfEitherNodeUnderWriteLoadThenReadOnlyCollectionEqualsIt) {
  store_target_ = true;
  KillEitherUnderLoadAndCompare();
}

TEST_F(RemoteReplicaServeTest, ReadOnlyCollectionTargetReadsWorkWritesAreRefused) {
  store_target_ = true;
  CreateCollections();
  ASSERT_NO_FATAL_FAILURE(StartB(""));
  for (int i = 0; i < 10; ++i) Put("customers", "k" + std::to_string(i), R"({"i":1})");
  HttpResult put = CallA("PUT", "/v1/collections/customers/docs/k3", R"({"i":2,"name":"ada"})");
  ASSERT_EQ(put.status / 100, 2) << put.body;
  // Read-your-writes: A's token, read on B (the replica's rows route, then the store's own).
  HttpResult row = CallB("GET", "/v1/replicas/customers/rows/k3?token=" +
                                    put.Header("Converge-Consistency-Token") + "&timeout_ms=20000");
  ASSERT_EQ(row.status, 200) << row.body << b_->Log();
  EXPECT_EQ(ParseBody(row).as_object()["version"].to_number<uint64_t>(),
            std::stoull(put.Header("Converge-Version")));
  HttpResult doc = CallB("GET", "/v1/collections/customers_copy/docs/k3");
  ASSERT_EQ(doc.status, 200) << doc.body;
  EXPECT_EQ(ParseBody(doc).as_object()["name"].as_string(), "ada");
  HttpResult del = CallA("DELETE", "/v1/collections/customers/docs/k4");
  ASSERT_EQ(del.status, 204);
  HttpResult tomb = CallB(
      "GET", "/v1/replicas/customers/rows/k4?token=" + del.Header("Converge-Consistency-Token") +
                 "&timeout_ms=20000");
  ASSERT_EQ(tomb.status, 200) << tomb.body;
  EXPECT_TRUE(ParseBody(tomb).as_object()["deleted"].as_bool());
  EXPECT_EQ(CallB("GET", "/v1/collections/customers_copy/docs/k4").status, 404);
  WaitCaughtUp(std::stoull(del.Header("Converge-Version")));
  EXPECT_EQ(TableRows(), CollectionDocs());
  // Writes through B's API are refused, with a clear error, and change nothing (B has no auth:
  // every caller is an admin).
  auto refused = [&](const std::string& method, const std::string& target,
                     const std::string& body) {
    testing::HttpHeaders headers;
    if (!body.empty()) headers.push_back({"Content-Type", "application/json"});
    HttpResult r = HttpCall(b_->port(), method, target, body, headers, "");
    EXPECT_EQ(r.status, 409) << method << " " << target << " " << r.body;
    EXPECT_EQ(r.code(), "FAILED_PRECONDITION") << r.body;
    EXPECT_NE(r.message().find("read-only replica"), std::string::npos) << r.body;
  };
  refused("PUT", "/v1/collections/customers_copy/docs/k3", R"({"hacked":true})");
  refused("PUT", "/v1/collections/customers_copy/docs/new", R"({"hacked":true})");
  refused("DELETE", "/v1/collections/customers_copy/docs/k3", "");
  refused("PUT", "/v1/collections/customers_copy", R"({"owner":"me"})");
  refused("DELETE", "/v1/collections/customers_copy", "");
  refused("POST", "/v1/collections/_transaction",
          R"({"ops":[{"op":"put","collection":"customers_copy","key":"k1","value":{"x":1}}]})");
  HttpResult meta =
      HttpCall(b_->port(), "PUT", "/v1/collections/converge-replica.customers/docs/p/0",
               R"({"next_offset":0})", {{"Content-Type", "application/json"}}, "");
  EXPECT_EQ(meta.status, 409) << meta.body;
  EXPECT_EQ(CallB("GET", "/v1/collections/customers_copy/docs/new").status, 404);
  EXPECT_EQ(TableRows(), CollectionDocs());
}

TEST_F(RemoteReplicaServeTest, RetentionDroppedTheStartSoANewReplicaBootstrapsFromASnapshot) {
  CreateCollections();
  uint64_t seq = 0;
  for (int i = 0; i < 300; ++i) {
    const std::string key = "k" + std::to_string(i % 30);
    if (i % 7 == 6) {
      HttpResult del = CallA("DELETE", "/v1/collections/customers/docs/" + key);
      EXPECT_TRUE(del.status == 204 || del.status == 404) << del.body;
    } else {
      seq = Put(i % 5 == 4 ? "products" : "customers", key,
                R"({"i":)" + std::to_string(i) + R"(,"pad":"................................"})");
    }
  }
  // The feed no longer starts at 0.
  HttpResult gone = CallA("GET", "/v1/collections/customers/changes?from=0", "", kReplicator);
  ASSERT_EQ(gone.status, 410) << gone.body;
  EXPECT_EQ(gone.code(), "POSITION_GONE");
  ASSERT_NO_FATAL_FAILURE(StartB(""));
  WaitCaughtUp(seq);
  EXPECT_EQ(TableRows(), CollectionDocs()) << b_->Log();
  // And it follows the feed from there, with read-your-writes.
  HttpResult put = CallA("PUT", "/v1/collections/customers/docs/after", R"({"a":1})");
  ASSERT_EQ(put.status / 100, 2) << put.body;
  HttpResult row = CallB("GET", "/v1/replicas/customers/rows/after?token=" +
                                    put.Header("Converge-Consistency-Token") + "&timeout_ms=20000");
  EXPECT_EQ(row.status, 200) << row.body;
  HttpResult del = CallA("DELETE", "/v1/collections/customers/docs/k1");
  ASSERT_EQ(del.status, 204) << del.body;
  WaitCaughtUp(std::stoull(del.Header("Converge-Version")));
  EXPECT_EQ(TableRows(), CollectionDocs());
}

// A read-only collection target bootstraps from a snapshot larger than one store transaction
// (1,200 documents), in pages: until the last page commits with the position, the replica's
// rows answer 503 (bootstrapping). B starts from what a SIGKILL in the middle of an earlier
// bootstrap leaves (made deterministic: the bookkeeping's marker, a copied page with a key A
// has since deleted, no position; written while the replica was not configured), and is
// SIGKILLed again if it is seen mid-bootstrap; the copy ends equal to A's collection.
TEST_F(RemoteReplicaServeTest, RetentionDroppedTheStartSoALargeReadOnlyCopyBootstrapsInPages) {
  store_target_ = true;
  CreateCollections();
  uint64_t seq = 0;
  for (int i = 0; i < 1'200; ++i) {
    seq = Put("customers", "k" + std::to_string(i),
              R"({"i":)" + std::to_string(i) + R"(,"pad":"................................"})");
    ASSERT_GT(seq, 0u);
  }
  HttpResult gone = CallA("GET", "/v1/collections/customers/changes?from=0", "", kReplicator);
  ASSERT_EQ(gone.status, 410) << gone.body;

  // The state of B's store after a crash mid-bootstrap.
  b_ = std::make_unique<ServeProcess>("");
  ASSERT_OK(b_->Start());
  auto put_b = [&](const std::string& target, const std::string& body) {
    HttpResult r = HttpCall(b_->port(), "PUT", target, body,
                            {{"Content-Type", "application/json"}}, "");
    ASSERT_TRUE(r.status == 200 || r.status == 201) << target << " " << r.status << " " << r.body;
  };
  for (const char* c : {"converge-replica.customers", "customers_copy"}) {
    ASSERT_NO_FATAL_FAILURE(
        put_b(std::string("/v1/collections/") + c, R"({"owner":"converge-replica"})"));
  }
  const std::string meta = "/v1/collections/converge-replica.customers/docs/";
  ASSERT_NO_FATAL_FAILURE(
      put_b(meta + "r", R"({"source":"store-changes","collection":"customers_copy"})"));
  ASSERT_NO_FATAL_FAILURE(put_b(meta + "b", R"({"next_offset":5,"started_us":1})"));
  ASSERT_NO_FATAL_FAILURE(put_b(meta + "v%2Fdeleted-on-a", R"({"v":1,"d":false,"p":0,"c":1,"a":1})"));
  ASSERT_NO_FATAL_FAILURE(put_b("/v1/collections/customers_copy/docs/deleted-on-a", R"({"x":1})"));
  ASSERT_NO_FATAL_FAILURE(put_b(meta + "v%2Fk7", R"({"v":999999,"d":false,"p":0,"c":1,"a":1})"));
  ASSERT_NO_FATAL_FAILURE(put_b("/v1/collections/customers_copy/docs/k7", R"({"stale":1})"));
  b_->Kill();
  ASSERT_NO_FATAL_FAILURE(StartB(b_->data_dir()));

  // Kill B again if it is seen mid-bootstrap (its marker exists and rows are refused).
  bool killed = false;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (!killed && std::chrono::steady_clock::now() < deadline) {
    HttpResult row = CallB("GET", "/v1/replicas/customers/rows/k7");
    if (row.status == 200) break;
    EXPECT_EQ(row.status, 503) << row.body;
    if (CallB("GET", meta + "b").status == 200 && row.status == 503) {
      b_->Kill();
      killed = true;
    }
  }
  if (killed) {
    ASSERT_NO_FATAL_FAILURE(StartB(b_->data_dir()));
  }
  WaitCaughtUp(seq);
  const auto docs = CollectionDocs();
  EXPECT_EQ(docs.size(), 1'200u);
  EXPECT_EQ(TableRows(), docs) << b_->Log();
  EXPECT_EQ(CallB("GET", "/v1/collections/customers_copy/docs/deleted-on-a").status, 404);
  EXPECT_EQ(CallB("GET", meta + "b").status, 404);
  // And it follows the feed from there.
  const uint64_t after = Put("customers", "after", R"({"a":1})");
  WaitCaughtUp(after);
  EXPECT_EQ(TableRows(), CollectionDocs());
}

TEST_F(RemoteReplicaServeTest, RetentionDroppedChangesTheReplicaNeedsSoItStopsVisibly) {
  CreateCollections();
  ASSERT_NO_FATAL_FAILURE(StartB(""));
  const uint64_t first = Put("customers", "a", R"({"a":1})");
  WaitCaughtUp(first);
  const auto before = TableRows();
  // B is down while A's retention removes changes B has not applied.
  Result<int> code = b_->Signal(SIGTERM);
  ASSERT_TRUE(code.ok()) << code.status().ToString();
  for (int i = 0; i < 300; ++i) {
    Put("customers", "k" + std::to_string(i % 30),
        R"({"i":)" + std::to_string(i) + R"(,"pad":"................................"})");
  }
  ASSERT_NO_FATAL_FAILURE(StartB(b_->data_dir()));
  // Not skipped silently: the replica stops, and says so in /readyz, /metrics and its state.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  json::object d;
  while (std::chrono::steady_clock::now() < deadline) {
    d = ParseBody(CallB("GET", "/v1/replicas/customers")).as_object();
    if (!d["stopped"].is_null()) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ASSERT_TRUE(d["stopped"].is_string()) << json::serialize(d) << b_->Log();
  EXPECT_NE(std::string(d["stopped"].as_string()).find("retention"), std::string::npos)
      << json::serialize(d);
  EXPECT_EQ(d["damaged_ranges"].to_number<int64_t>(), 1);
  EXPECT_EQ(CallB("GET", "/readyz").status, 503);
  HttpResult m = CallB("GET", "/metrics");
  EXPECT_EQ(MetricValue(m.body, "converge_replica_stopped{replica=\"customers\"}"), 1);
  EXPECT_EQ(TableRows(), before);
  EXPECT_EQ(CallB("GET", "/v1/replicas/customers/rows/a?max_staleness_ms=60000").status, 503);
}

// on_position_gone: rebootstrap. B has applied changes, A's retention removed some it has
// not: B takes a new snapshot instead of stopping, and the keys A deleted meanwhile (whose
// deletes are gone with the feed) are deleted in B's table too (tombstones at the snapshot's
// commit sequence number), so the table equals A's collection; the feed goes on from there.
TEST_F(RemoteReplicaServeTest, RetentionDroppedChangesSoTheReplicaRebootstrapsWhenAskedTo) {
  RebootstrapAfterRetention();
}

TEST_F(RemoteReplicaServeTest, RetentionDroppedChangesSoThePostgresReplicaRebootstraps) {
  Result<std::unique_ptr<testing::PostgresServer>> pg = testing::PostgresServer::Start();
  // Integration suites fail, never skip, when their server is missing.
  ASSERT_TRUE(pg.ok()) << pg.status().ToString();
  pg_ = std::move(pg).value();
  RebootstrapAfterRetention();
}

void RemoteReplicaServeTest::RebootstrapAfterRetention() {
  b_extra_ = "    on_position_gone: rebootstrap\n";
  CreateCollections();
  ASSERT_NO_FATAL_FAILURE(StartB(""));
  uint64_t seq = 0;
  for (int i = 0; i < 20; ++i) seq = Put("customers", "old" + std::to_string(i), R"({"a":1})");
  WaitCaughtUp(seq);
  Result<int> code = b_->Signal(SIGTERM);
  ASSERT_TRUE(code.ok()) << code.status().ToString();
  // While B is down: deletes and updates of keys it has, new keys, and enough writes that
  // A's retention removes them all from the feed.
  for (int i = 0; i < 10; ++i) {
    HttpResult del = CallA("DELETE", "/v1/collections/customers/docs/old" + std::to_string(i));
    ASSERT_EQ(del.status, 204) << del.body;
  }
  for (int i = 0; i < 300; ++i) {
    seq = Put("customers", "k" + std::to_string(i % 30),
              R"({"i":)" + std::to_string(i) + R"(,"pad":"................................"})");
  }
  seq = Put("customers", "old15", R"({"a":2})");
  for (int i = 0; i < 200; ++i) {
    seq = Put("products", "p" + std::to_string(i % 10),
              R"({"i":)" + std::to_string(i) + R"(,"pad":"................................"})");
  }
  HttpResult gone = CallA("GET", "/v1/collections/customers/changes?from=1", "", kReplicator);
  ASSERT_EQ(gone.status, 410) << gone.body;
  ASSERT_NO_FATAL_FAILURE(StartB(b_->data_dir()));
  json::object d = WaitCaughtUp(seq);
  EXPECT_TRUE(d["stopped"].is_null()) << json::serialize(d);
  EXPECT_EQ(TableRows(), CollectionDocs()) << b_->Log();
  HttpResult row = CallB("GET", "/v1/replicas/customers/rows/old3");
  ASSERT_EQ(row.status, 200) << row.body;
  EXPECT_TRUE(ParseBody(row).as_object()["deleted"].as_bool()) << row.body;
  // And it follows the feed from there.
  HttpResult del = CallA("DELETE", "/v1/collections/customers/docs/old15");
  ASSERT_EQ(del.status, 204) << del.body;
  WaitCaughtUp(std::stoull(del.Header("Converge-Version")));
  EXPECT_EQ(TableRows(), CollectionDocs());
}

// Reconciliation of a read-only collection copy: drift is injected while B runs without the
// replica configured (then its collections are writable: B has no auth), B restarts with it,
// and a run finds exactly the damaged keys, repairs them (version-gated), and the copy equals
// A's collection again.
TEST_F(RemoteReplicaServeTest, ReconcileFindsAndRepairsDriftInAReadOnlyCollectionCopy) {
  store_target_ = true;
  CreateCollections();
  ASSERT_NO_FATAL_FAILURE(StartB(""));
  uint64_t seq = 0;
  for (int i = 0; i < 40; ++i) {
    seq = Put("customers", "k" + std::to_string(i), R"({"i":)" + std::to_string(i) + "}");
  }
  WaitCaughtUp(seq);
  HttpResult first = CallB("POST", "/v1/replicas/customers/reconcile");
  ASSERT_EQ(first.status, 200) << first.body << b_->Log();
  EXPECT_TRUE(ParseBody(first).as_object()["in_sync"].as_bool()) << first.body;
  const auto before = TableRows();
  Result<int> code = b_->Signal(SIGTERM);
  ASSERT_TRUE(code.ok()) << code.status().ToString();
  {
    ServeProcess plain("", b_->data_dir());
    ASSERT_OK(plain.Start());
    const std::string meta = "/v1/collections/converge-replica.customers/docs/v%2F";
    const std::string copy = "/v1/collections/customers_copy/docs/";
    auto call = [&](const std::string& method, const std::string& target,
                    const std::string& body) {
      testing::HttpHeaders headers;
      if (!body.empty()) headers.push_back({"Content-Type", "application/json"});
      HttpResult r = HttpCall(plain.port(), method, target, body, headers, "");
      EXPECT_EQ(r.status / 100, 2) << method << " " << target << ": " << r.body;
    };
    auto entry = [](uint64_t v) {
      return R"({"v":)" + std::to_string(v) + R"(,"d":false,"p":0,"c":1,"a":1})";
    };
    call("DELETE", copy + "k3", "");
    call("DELETE", meta + "k3", "");
    call("PUT", copy + "ghost", R"({"boo":1})");
    call("PUT", meta + "ghost", entry(5));
    call("PUT", copy + "k7", R"({"old":1})");
    call("PUT", meta + "k7", entry(before.at("k7").first - 1));
    call("PUT", copy + "k9", R"({"hand":1})");
    call("PUT", meta + "k9", entry(before.at("k9").first + 1000));
    ASSERT_TRUE(plain.Signal(SIGTERM).ok());
  }
  ASSERT_NO_FATAL_FAILURE(StartB(b_->data_dir()));
  WaitCaughtUp(seq);
  ASSERT_NE(TableRows(), CollectionDocs());
  auto names = [](const json::value& v) {
    std::vector<std::string> out;
    for (const json::value& k : v.as_array()) out.emplace_back(k.as_string());
    std::sort(out.begin(), out.end());
    return out;
  };
  const auto drifted = TableRows();
  HttpResult dry = CallB("POST", "/v1/replicas/customers/reconcile?dry_run=true");
  ASSERT_EQ(dry.status, 200) << dry.body;
  json::object o = ParseBody(dry).as_object();
  EXPECT_EQ(names(o["missing"]), std::vector<std::string>{"k3"}) << dry.body;
  EXPECT_EQ(names(o["extra"]), std::vector<std::string>{"ghost"}) << dry.body;
  EXPECT_EQ(names(o["divergent"]), (std::vector<std::string>{"k7", "k9"})) << dry.body;
  EXPECT_EQ(TableRows(), drifted);
  HttpResult fixed = CallB("POST", "/v1/replicas/customers/reconcile");
  ASSERT_EQ(fixed.status, 200) << fixed.body;
  o = ParseBody(fixed).as_object();
  EXPECT_EQ(o["repaired"].to_number<int64_t>(), 4) << fixed.body;
  EXPECT_EQ(TableRows(), CollectionDocs());
  EXPECT_EQ(CallB("GET", "/v1/collections/customers_copy/docs/ghost").status, 404);
  // The applier goes on after the repairs (they fence its batches, never undo them).
  const uint64_t last = Put("customers", "k7", R"({"i":"new"})");
  WaitCaughtUp(last);
  EXPECT_EQ(TableRows(), CollectionDocs());
  HttpResult again = CallB("POST", "/v1/replicas/customers/reconcile");
  ASSERT_EQ(again.status, 200) << again.body;
  EXPECT_TRUE(ParseBody(again).as_object()["in_sync"].as_bool()) << again.body;
}

TEST_F(RemoteReplicaServeTest, ReconcileOverTheChannelFindsAndRepairsDriftInTheTable) {
  CreateCollections();
  ASSERT_NO_FATAL_FAILURE(StartB(""));
  uint64_t seq = 0;
  for (int i = 0; i < 40; ++i) {
    seq = Put("customers", "k" + std::to_string(i), R"({"i":)" + std::to_string(i) + "}");
    Put("products", "p" + std::to_string(i), R"({"i":1})");
  }
  WaitCaughtUp(seq);
  // In sync: found nothing, one round trip.
  HttpResult first = CallB("POST", "/v1/replicas/customers/reconcile");
  ASSERT_EQ(first.status, 200) << first.body << b_->Log();
  json::object o = ParseBody(first).as_object();
  EXPECT_TRUE(o["in_sync"].as_bool()) << first.body;
  EXPECT_EQ(o["round_trips"].to_number<int64_t>(), 1) << first.body;
  EXPECT_EQ(o["remote"].as_string(), "http://127.0.0.1:" + std::to_string(a_port_));
  // Drift injected straight into B's table: a row deleted, one inserted, one moved back, one
  // moved ahead (edited by hand).
  {
    auto db = sql::Database::OpenSqlite(sql::SqliteOptions{.path = db_path_});
    ASSERT_TRUE(db.ok());
    for (const char* stmt :
         {"DELETE FROM customers_copy WHERE key = 'k3'",
          "INSERT INTO customers_copy (key, version, document, deleted, commit_time_us, "
          "applied_us, source_partition) VALUES ('ghost', 5, '{\"boo\":1}', 0, 0, 0, 0)",
          "UPDATE customers_copy SET version = version - 1, document = '{\"old\":1}' WHERE key = "
          "'k7'",
          "UPDATE customers_copy SET version = version + 1000, document = '{\"hand\":1}' "
          "WHERE key = 'k9'"}) {
      ASSERT_TRUE((*db)->Execute(stmt, {}).ok()) << stmt;
    }
  }
  ASSERT_NE(TableRows(), CollectionDocs());
  // A dry run reports exactly those, and changes nothing.
  const auto drifted = TableRows();
  HttpResult dry = CallB("POST", "/v1/replicas/customers/reconcile?dry_run=true");
  ASSERT_EQ(dry.status, 200) << dry.body;
  o = ParseBody(dry).as_object();
  auto names = [](const json::value& v) {
    std::vector<std::string> out;
    for (const json::value& k : v.as_array()) out.emplace_back(k.as_string());
    std::sort(out.begin(), out.end());
    return out;
  };
  EXPECT_EQ(names(o["missing"]), std::vector<std::string>{"k3"}) << dry.body;
  EXPECT_EQ(names(o["extra"]), std::vector<std::string>{"ghost"}) << dry.body;
  EXPECT_EQ(names(o["divergent"]), (std::vector<std::string>{"k7", "k9"})) << dry.body;
  EXPECT_EQ(o["repaired"].to_number<int64_t>(), 0);
  EXPECT_EQ(TableRows(), drifted);
  // The repair.
  HttpResult fixed = CallB("POST", "/v1/replicas/customers/reconcile");
  ASSERT_EQ(fixed.status, 200) << fixed.body;
  o = ParseBody(fixed).as_object();
  EXPECT_EQ(o["repaired"].to_number<int64_t>(), 4) << fixed.body;
  EXPECT_EQ(TableRows(), CollectionDocs());
  HttpResult drift = CallB("GET", "/v1/replicas/customers/drift");
  EXPECT_EQ(drift.status, 200);
  // And the next run finds it in sync again (A's digest was not rebuilt: it follows the feed).
  Put("customers", "k1", R"({"i":"new"})");
  const uint64_t last = Put("customers", "k2", R"({"i":"new"})");
  WaitCaughtUp(last);
  HttpResult again = CallB("POST", "/v1/replicas/customers/reconcile");
  ASSERT_EQ(again.status, 200) << again.body;
  EXPECT_TRUE(ParseBody(again).as_object()["in_sync"].as_bool()) << again.body;
  HttpResult m = CallB("GET", "/metrics");
  EXPECT_EQ(MetricValue(m.body, "converge_replica_reconcile_repaired_total{replica=\"customers\"}"),
            4);
  // A's responder answers only tokens that may read the collection.
  HttpResult refused =
      CallA("POST", "/v1/collections/customers/reconcile", "not a message", kOther);
  EXPECT_EQ(refused.status, 403) << refused.body;
  HttpResult garbage =
      CallA("POST", "/v1/collections/customers/reconcile", "not a message", kReplicator);
  EXPECT_EQ(garbage.status, 400) << garbage.body;
}

TEST_F(RemoteReplicaServeTest, ScheduledReconciliationRepairsDriftByItself) {
  b_extra_ = "    reconcile_interval_ms: 1000\n";
  CreateCollections();
  ASSERT_NO_FATAL_FAILURE(StartB(""));
  uint64_t seq = 0;
  for (int i = 0; i < 10; ++i) seq = Put("customers", "k" + std::to_string(i), R"({"i":1})");
  WaitCaughtUp(seq);
  {
    auto db = sql::Database::OpenSqlite(sql::SqliteOptions{.path = db_path_});
    ASSERT_TRUE(db.ok());
    ASSERT_TRUE((*db)->Execute("DELETE FROM customers_copy WHERE key = 'k5'", {}).ok());
  }
  ASSERT_NE(TableRows(), CollectionDocs());
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (TableRows() != CollectionDocs() && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_EQ(TableRows(), CollectionDocs()) << b_->Log();
  HttpResult drift = CallB("GET", "/v1/replicas/customers/drift");
  ASSERT_EQ(drift.status, 200) << drift.body;
  HttpResult m = CallB("GET", "/metrics");
  EXPECT_GE(MetricValue(m.body, "converge_replica_reconcile_repaired_total{replica=\"customers\"}"),
            1);
}

}  // namespace
}  // namespace converge
