// Replicas in `converge serve` (config `replicas:`, /v1/replicas), against the real binary:
//   - a store collection copied into a SQLite table: every write returns a consistency token,
//     and a row read with that token returns the version just written (read-your-writes);
//   - staleness and counters by value in /v1/replicas/{name} and /metrics;
//   - a token that may not read the source gets 403, the same for a replica that is missing;
//   - a topic replica stopped by a malformed change: /readyz, the metric, max_staleness_ms;
//   - SIGKILL of the server under write load, restart: the table equals the collection.
#include <gtest/gtest.h>
#include <signal.h>

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
#include "support/run_command.h"
#include "test_util.h"

// GCC 12 at -O3 reports string concatenations in this file as overlapping memcpy (a known
// false positive of its -Wrestrict).
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
const std::string kReader = "reader-token-0123456789";
const std::string kStranger = "stranger-token-0123456789";
const std::string kAdmin = "admin-token-0123456789ab";

// `target`: the YAML flow mapping of the customers replica's database ("sqlite: <path>" or
// "postgres: '<conninfo>'").
std::string Config(const std::string& db_path, std::string target = "") {
  if (target.empty()) target = "sqlite: " + db_path;
  return "auth:\n"
         "  tokens:\n"
         "    - {service: orders, token: " +
         kOwner +
         "}\n"
         "    - {service: search, token: " +
         kReader +
         ", subscribe: [store-changes]}\n"
         "    - {service: stranger, token: " +
         kStranger +
         ", subscribe: [other-*]}\n"
         "    - {service: ops, token: " +
         kAdmin +
         ", admin: true, publish: [order-changes]}\n"
         "replicas:\n"
         "  - name: customers\n"
         "    source: {store_collection: customers}\n"
         "    target: {" +
         target +
         ", table: customers_copy}\n"
         "    max_batch: 500\n"
         "  - name: orders\n"
         "    source: {topic: order-changes}\n"
         "    target: {sqlite: " +
         db_path +
         ", table: orders_copy}\n"
         "    on_malformed: stop\n";
}

json::value ParseBody(const HttpResult& r) {
  boost::system::error_code ec;
  json::value v = json::parse(r.body, ec);
  EXPECT_FALSE(ec) << r.body;
  return v;
}

// The value of the sample `name{labels}` in a /metrics text, or -1 when absent.
double MetricValue(const std::string& text, const std::string& series) {
  size_t at = 0;
  while ((at = text.find(series + " ", at)) != std::string::npos) {
    if (at == 0 || text[at - 1] == '\n') return std::stod(text.substr(at + series.size() + 1));
    at += series.size();
  }
  return -1;
}

class ReplicaServeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    db_dir_ = ::testing::TempDir() + "replica_serve_" + std::to_string(::getpid()) + "_" +
              ::testing::UnitTest::GetInstance()->current_test_info()->name();
    std::system(("rm -rf " + db_dir_ + " && mkdir -p " + db_dir_).c_str());
    db_path_ = db_dir_ + "/copy.db";
    std::string target;
    if (WithPostgres()) {
      Result<std::unique_ptr<testing::PostgresServer>> pg = testing::PostgresServer::Start();
      // Integration suites fail, never skip, when their server is missing.
      ASSERT_TRUE(pg.ok()) << pg.status().ToString();
      pg_ = std::move(pg).value();
      target = "postgres: '" + pg_->ConnInfo() + "'";
    }
    server_ = std::make_unique<ServeProcess>(Config(db_path_, target));
    ASSERT_OK(server_->Start());
  }
  virtual bool WithPostgres() const { return false; }
  std::string TargetYaml() const {
    return pg_ ? "postgres: '" + pg_->ConnInfo() + "'" : "sqlite: " + db_path_;
  }
  void TearDown() override {
    server_.reset();
    old_.clear();
    pg_.reset();
    std::system(("rm -rf " + db_dir_).c_str());
  }

  HttpResult Call(const std::string& method, const std::string& target,
                  const std::string& body = "", const std::string& token = kOwner) {
    testing::HttpHeaders headers;
    if (!body.empty()) headers.push_back({"Content-Type", "application/json"});
    return HttpCall(server_->port(), method, target, body, headers, token);
  }

  void CreateCollection() {
    HttpResult r = Call("PUT", "/v1/collections/customers", R"({"owner":"orders"})");
    ASSERT_TRUE(r.status == 201 || r.status == 200) << r.status << " " << r.body;
  }

  // Polls /v1/replicas/{name} until it has no lag and its commitseq reaches `commitseq`.
  json::object WaitCaughtUp(const std::string& name, uint64_t commitseq) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    json::object last;
    while (std::chrono::steady_clock::now() < deadline) {
      HttpResult r = Call("GET", "/v1/replicas/" + name, "", kAdmin);
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
    ADD_FAILURE() << "replica " << name << " did not catch up: " << json::serialize(last) << "\n"
                  << server_->Log();
    return last;
  }

  // key -> (version, document) of the live rows of the replica's table, read with plain SQL.
  std::map<std::string, std::pair<uint64_t, std::string>> TableRows(const std::string& table) {
    std::map<std::string, std::pair<uint64_t, std::string>> out;
    auto db =
        pg_ ? sql::Database::ConnectPostgres(sql::PostgresOptions{.conninfo = pg_->ConnInfo()})
            : sql::Database::OpenSqlite(sql::SqliteOptions{.path = db_path_});
    EXPECT_TRUE(db.ok()) << db.status().ToString();
    if (!db.ok()) return out;
    Result<int64_t> n = (*db)->Query(
        "SELECT key, version, document FROM " + table + " WHERE NOT deleted", {},
        [&out](const sql::Row& row) -> Status {
          // Compared as JSON values (the collection's side is re-serialized too).
          out[std::string(row.Bytes(0))] = {static_cast<uint64_t>(*row.Int(1)),
                                            json::serialize(json::parse(row.Bytes(2)))};
          return Status::Ok();
        });
    EXPECT_TRUE(n.ok()) << n.status().ToString();
    return out;
  }

  // key -> (version, compact document) of the collection, read over HTTP.
  std::map<std::string, std::pair<uint64_t, std::string>> CollectionDocs() {
    std::map<std::string, std::pair<uint64_t, std::string>> out;
    std::string page;
    while (true) {
      HttpResult r = Call("GET", "/v1/collections/customers/docs?limit=1000" +
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

  void ReadYourWrites();
  void KillUnderLoadAndCompare();
  void ReconcileFindsAndRepairsDrift();

  std::string db_dir_;
  std::string db_path_;
  std::unique_ptr<testing::PostgresServer> pg_;     // the PostgreSQL target, when used
  std::vector<std::unique_ptr<ServeProcess>> old_;  // killed servers owning the data dir
  std::unique_ptr<ServeProcess> server_;
};

void ReplicaServeTest::ReadYourWrites() {
  CreateCollection();
  uint64_t last_seq = 0;
  for (int i = 1; i <= 20; ++i) {
    const std::string doc = R"({"name":"ada","n":)" + std::to_string(i) + "}";
    HttpResult put = Call("PUT", "/v1/collections/customers/docs/c1", doc);
    ASSERT_TRUE(put.status == 200 || put.status == 201) << put.body;
    const std::string token = put.Header("Converge-Consistency-Token");
    ASSERT_FALSE(token.empty()) << "no Converge-Consistency-Token on a store write";
    const uint64_t version = std::stoull(put.Header("Converge-Version"));
    last_seq = version;
    // At once, with the token: the replica waits until it has applied this write.
    HttpResult row = Call(
        "GET", "/v1/replicas/customers/rows/c1?token=" + token + "&timeout_ms=20000", "", kReader);
    ASSERT_EQ(row.status, 200) << row.body;
    json::object o = ParseBody(row).as_object();
    EXPECT_EQ(o["version"].to_number<uint64_t>(), version);
    EXPECT_FALSE(o["deleted"].as_bool());
    EXPECT_EQ(o["document"].as_object().at("n").to_number<int64_t>(), i);
  }
  // A delete's token: the row is a tombstone.
  HttpResult del = Call("DELETE", "/v1/collections/customers/docs/c1");
  ASSERT_EQ(del.status, 204) << del.body;
  const std::string del_token = del.Header("Converge-Consistency-Token");
  ASSERT_FALSE(del_token.empty());
  HttpResult gone = Call("GET", "/v1/replicas/customers/rows/c1?token=" + del_token, "", kReader);
  ASSERT_EQ(gone.status, 200) << gone.body;
  EXPECT_TRUE(ParseBody(gone).as_object()["deleted"].as_bool());
  // A transaction's token.
  HttpResult tx =
      Call("POST", "/v1/collections/_transaction",
           R"({"ops":[{"op":"put","collection":"customers","key":"c2","value":{"a":1}},)"
           R"({"op":"put","collection":"customers","key":"c3","value":{"a":2}}]})");
  ASSERT_EQ(tx.status, 200) << tx.body;
  const std::string tx_token = tx.Header("Converge-Consistency-Token");
  ASSERT_FALSE(tx_token.empty());
  HttpResult c3 = Call("GET", "/v1/replicas/customers/rows/c3?token=" + tx_token, "", kReader);
  ASSERT_EQ(c3.status, 200) << c3.body;
  EXPECT_EQ(ParseBody(c3).as_object()["document"].as_object().at("a").to_number<int64_t>(), 2);

  // A token the replica cannot reach in time: 504 TOKEN_NOT_APPLIED, at its deadline.
  HttpResult late = Call("GET",
                         "/v1/replicas/customers/rows/c3?token=ct1~store-changes~0~c999999999"
                         "&timeout_ms=300",
                         "", kReader);
  EXPECT_EQ(late.status, 504) << late.body;
  EXPECT_EQ(late.code(), "TOKEN_NOT_APPLIED");
  // Malformed input: 400, after authorization.
  EXPECT_EQ(Call("GET", "/v1/replicas/customers/rows/c3?token=nonsense", "", kReader).status, 400);
  EXPECT_EQ(Call("GET", "/v1/replicas/customers/rows/c3?tokn=x", "", kReader).status, 400);
  EXPECT_EQ(Call("GET", "/v1/replicas/customers/rows/c3?max_staleness_ms=-1", "", kReader).status,
            400);
  EXPECT_EQ(Call("GET", "/v1/replicas/customers/rows/nope", "", kReader).status, 404);
  // Caught up: max_staleness_ms=0 is met.
  WaitCaughtUp("customers", 0);
  EXPECT_EQ(Call("GET", "/v1/replicas/customers/rows/c2?max_staleness_ms=0", "", kReader).status,
            200);
  (void)last_seq;
}

TEST_F(ReplicaServeTest, StoreWriteTokenGivesReadYourWrites) { ReadYourWrites(); }

TEST_F(ReplicaServeTest, StalenessAndMetricsByValue) {
  CreateCollection();
  uint64_t seq = 0;
  for (int i = 0; i < 30; ++i) {
    HttpResult put = Call("PUT", "/v1/collections/customers/docs/k" + std::to_string(i),
                          R"({"i":)" + std::to_string(i) + "}");
    ASSERT_TRUE(put.status == 200 || put.status == 201) << put.body;
    seq = std::stoull(put.Header("Converge-Version"));
  }
  json::object d = WaitCaughtUp("customers", seq);
  EXPECT_EQ(d["lag_changes"].to_number<int64_t>(), 0);
  EXPECT_EQ(d["lag_ms"].to_number<int64_t>(), 0);
  EXPECT_EQ(d["applied"].to_number<int64_t>(), 30);
  EXPECT_EQ(d["malformed"].to_number<int64_t>(), 0);
  EXPECT_TRUE(d["stopped"].is_null());
  EXPECT_EQ(d["source"].as_object().at("topic").as_string(), "store-changes");
  EXPECT_GE(d["last_apply_latency_us"].to_number<int64_t>(), 0);
  HttpResult m = Call("GET", "/metrics", "", kAdmin);
  ASSERT_EQ(m.status, 200);
  EXPECT_EQ(MetricValue(m.body, "converge_replica_applied_total{replica=\"customers\"}"), 30)
      << m.body;
  EXPECT_EQ(MetricValue(m.body, "converge_replica_lag_changes{replica=\"customers\"}"), 0);
  EXPECT_EQ(MetricValue(m.body, "converge_replica_lag_ms{replica=\"customers\"}"), 0);
  EXPECT_EQ(MetricValue(m.body, "converge_replica_stopped{replica=\"customers\"}"), 0);
  EXPECT_EQ(MetricValue(m.body, "converge_replica_malformed_total{replica=\"customers\"}"), 0);
  EXPECT_EQ(MetricValue(m.body, "converge_replica_running{replica=\"customers\"}"), 1);
  // The table holds exactly the collection.
  EXPECT_EQ(TableRows("customers_copy"), CollectionDocs());
  // SIGTERM stops the appliers cleanly: exit code 0.
  Result<int> code = server_->Signal(SIGTERM);
  ASSERT_TRUE(code.ok()) << code.status().ToString();
  EXPECT_EQ(*code, 0) << server_->Log();
}

TEST_F(ReplicaServeTest, CallerWhoMayNotReadTheSourceGets403AndNothing) {
  CreateCollection();
  HttpResult put = Call("PUT", "/v1/collections/customers/docs/secret", R"({"ssn":"123"})");
  ASSERT_TRUE(put.status == 201 || put.status == 200) << put.body;
  const std::string token = put.Header("Converge-Consistency-Token");
  for (const std::string& target : std::vector<std::string>{
           "/v1/replicas/customers", "/v1/replicas/customers/rows/secret?token=" + token,
           "/v1/replicas/customers/rows/secret?bogus=1"}) {
    HttpResult r = Call("GET", target, "", kStranger);
    EXPECT_EQ(r.status, 403) << target << " " << r.body;
    EXPECT_EQ(r.code(), "PERMISSION_DENIED");
    EXPECT_EQ(r.body.find("123"), std::string::npos);
  }
  // A missing replica: the same answer (no existence leak).
  HttpResult missing = Call("GET", "/v1/replicas/nosuch", "", kStranger);
  HttpResult present = Call("GET", "/v1/replicas/customers", "", kStranger);
  EXPECT_EQ(missing.status, 403);
  EXPECT_EQ(missing.code(), present.code());
  // The list shows a stranger nothing.
  HttpResult list = Call("GET", "/v1/replicas", "", kStranger);
  ASSERT_EQ(list.status, 200);
  EXPECT_TRUE(ParseBody(list).as_object()["replicas"].as_array().empty()) << list.body;
  // No token: 401.
  EXPECT_EQ(HttpCall(server_->port(), "GET", "/v1/replicas/customers").status, 401);
  // The collection's owner (store permissions) and a feed reader may read; admin sees 404.
  EXPECT_EQ(Call("GET", "/v1/replicas/customers", "", kOwner).status, 200);
  EXPECT_EQ(Call("GET", "/v1/replicas/customers", "", kReader).status, 200);
  EXPECT_EQ(Call("GET", "/v1/replicas/nosuch", "", kAdmin).status, 404);
  HttpResult list2 = Call("GET", "/v1/replicas", "", kReader);
  EXPECT_EQ(ParseBody(list2).as_object()["replicas"].as_array().size(), 1u) << list2.body;
}

TEST_F(ReplicaServeTest, MalformedChangeStopsTopicReplicaVisibly) {
  HttpResult created =
      Call("POST", "/v1/topics", R"({"name":"order-changes","partitions":1})", kAdmin);
  ASSERT_TRUE(created.status == 200 || created.status == 201) << created.body;
  auto publish = [&](const std::string& event) {
    testing::HttpHeaders headers = {{"Content-Type", "application/cloudevents+json"}};
    return HttpCall(server_->port(), "POST", "/v1/topics/order-changes/events", event, headers,
                    kAdmin);
  };
  HttpResult ok = publish(
      R"({"specversion":"1.0","id":"o1/1","source":"/orders","type":"converge.change.upsert",)"
      R"("subject":"o1","version":"1","datacontenttype":"application/json","data":{"total":5}})");
  ASSERT_TRUE(ok.status == 200 || ok.status == 201) << ok.body;
  HttpResult bad = publish(
      R"({"specversion":"1.0","id":"o2/x","source":"/orders","type":"converge.change.upsert",)"
      R"("subject":"o2","datacontenttype":"application/json","data":{"total":7}})");
  ASSERT_TRUE(bad.status == 200 || bad.status == 201) << bad.body;
  // The applier applies o1, then stops at the event without a version.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  json::object d;
  while (std::chrono::steady_clock::now() < deadline) {
    d = ParseBody(Call("GET", "/v1/replicas/orders", "", kAdmin)).as_object();
    if (!d["stopped"].is_null()) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  ASSERT_FALSE(d["stopped"].is_null()) << json::serialize(d);
  EXPECT_EQ(d["malformed"].to_number<int64_t>(), 1);
  EXPECT_EQ(d["applied"].to_number<int64_t>(), 1);
  HttpResult ready = HttpCall(server_->port(), "GET", "/readyz");
  EXPECT_EQ(ready.status, 503);
  EXPECT_NE(ready.body.find("replica 'orders' stopped"), std::string::npos) << ready.body;
  HttpResult m = Call("GET", "/metrics", "", kAdmin);
  EXPECT_EQ(MetricValue(m.body, "converge_replica_stopped{replica=\"orders\"}"), 1);
  EXPECT_EQ(MetricValue(m.body, "converge_replica_malformed_total{replica=\"orders\"}"), 1);
  // Reading o1 is fine; asking for a bound on staleness is refused while stopped.
  EXPECT_EQ(Call("GET", "/v1/replicas/orders/rows/o1", "", kAdmin).status, 200);
  HttpResult stale = Call("GET", "/v1/replicas/orders/rows/o1?max_staleness_ms=60000", "", kAdmin);
  EXPECT_EQ(stale.status, 503) << stale.body;
  EXPECT_EQ(stale.code(), "REPLICA_STALE");
  EXPECT_NE(server_->Log().find("replica 'orders': STOPPED"), std::string::npos);
}

// Reconciliation (POST /v1/replicas/{name}/reconcile, GET .../drift): rows deleted, inserted
// and modified directly in the SQLite table are reported exactly by a dry run, which changes
// nothing; a run repairs them so the table equals the collection; a second run finds nothing.
void ReplicaServeTest::ReconcileFindsAndRepairsDrift() {
  CreateCollection();
  uint64_t seq = 0;
  for (int i = 0; i < 40; ++i) {
    HttpResult put = Call("PUT", "/v1/collections/customers/docs/c" + std::to_string(i),
                          R"({"i":)" + std::to_string(i) + "}");
    ASSERT_TRUE(put.status == 200 || put.status == 201) << put.body;
    seq = std::stoull(put.Header("Converge-Version"));
  }
  WaitCaughtUp("customers", seq);
  const auto docs = CollectionDocs();
  ASSERT_EQ(TableRows("customers_copy"), docs);
  // Nothing reconciled yet.
  EXPECT_EQ(Call("GET", "/v1/replicas/customers/drift", "", kAdmin).status, 404);

  // Drift, made behind converge's back.
  {
    auto db =
        pg_ ? sql::Database::ConnectPostgres(sql::PostgresOptions{.conninfo = pg_->ConnInfo()})
            : sql::Database::OpenSqlite(sql::SqliteOptions{.path = db_path_});
    ASSERT_TRUE(db.ok()) << db.status().ToString();
    const std::string no = pg_ ? "false" : "0";
    for (const std::string& stmt : std::vector<std::string>{
             "DELETE FROM customers_copy WHERE key = 'c3'",
             "INSERT INTO customers_copy (key, version, document, deleted, commit_time_us, "
             "applied_us, source_partition) VALUES ('ghost', 7, '{\"g\":1}', " +
                 no + ", 1, 1, 0)",
             // Edited by hand: a version the source never wrote.
             "UPDATE customers_copy SET version = version + 1000, document = '{\"hand\":1}' "
             "WHERE key = 'c5'",
             // An older state restored.
             "UPDATE customers_copy SET version = version - 1, document = '{\"old\":1}' "
             "WHERE key = 'c7'",
         }) {
      Result<int64_t> n = (*db)->Execute(stmt);
      ASSERT_TRUE(n.ok()) << stmt << ": " << n.status().ToString();
      ASSERT_EQ(*n, 1) << stmt;
    }
  }
  const auto drifted = TableRows("customers_copy");
  ASSERT_NE(drifted, docs);

  auto keys = [](const json::object& o, const char* name) {
    std::vector<std::string> out;
    for (const json::value& k : o.at(name).as_array()) out.emplace_back(k.as_string());
    std::sort(out.begin(), out.end());
    return out;
  };
  using Keys = std::vector<std::string>;

  // A dry run reports exactly the injected differences and changes nothing.
  HttpResult dry = Call("POST", "/v1/replicas/customers/reconcile?dry_run=true", "", kOwner);
  ASSERT_EQ(dry.status, 200) << dry.body;
  json::object d = ParseBody(dry).as_object();
  EXPECT_EQ(keys(d, "missing"), Keys{"c3"}) << dry.body;
  EXPECT_EQ(keys(d, "extra"), Keys{"ghost"}) << dry.body;
  EXPECT_EQ(keys(d, "divergent"), (Keys{"c5", "c7"})) << dry.body;
  EXPECT_EQ(d["missing_count"].to_number<int64_t>(), 1);
  EXPECT_EQ(d["extra_count"].to_number<int64_t>(), 1);
  EXPECT_EQ(d["divergent_count"].to_number<int64_t>(), 2);
  EXPECT_TRUE(keys(d, "changed_during_run").empty());
  EXPECT_TRUE(d["dry_run"].as_bool());
  EXPECT_FALSE(d["in_sync"].as_bool());
  EXPECT_EQ(d["repaired"].to_number<int64_t>(), 0);
  EXPECT_EQ(d["source_keys"].to_number<int64_t>(), 40);
  EXPECT_EQ(d["copy_rows"].to_number<int64_t>(), 40);
  EXPECT_GT(d["bytes_sent"].to_number<int64_t>(), 0);
  EXPECT_GT(d["bytes_received"].to_number<int64_t>(), 0);
  EXPECT_GE(d["round_trips"].to_number<int64_t>(), 2);
  EXPECT_LE(d["round_trips"].to_number<int64_t>(), 4);
  EXPECT_EQ(TableRows("customers_copy"), drifted);
  // The drift route answers the last result.
  HttpResult drift = Call("GET", "/v1/replicas/customers/drift", "", kReader);
  ASSERT_EQ(drift.status, 200) << drift.body;
  EXPECT_EQ(drift.body, dry.body);

  // A run repairs them: the table equals the collection again.
  HttpResult run = Call("POST", "/v1/replicas/customers/reconcile", "", kOwner);
  ASSERT_EQ(run.status, 200) << run.body;
  json::object rr = ParseBody(run).as_object();
  EXPECT_FALSE(rr["dry_run"].as_bool());
  EXPECT_EQ(rr["repaired"].to_number<int64_t>(), 4) << run.body;
  EXPECT_TRUE(keys(rr, "changed_during_run").empty()) << run.body;
  EXPECT_EQ(TableRows("customers_copy"), docs);

  // A second run finds nothing, in one round trip.
  HttpResult again = Call("POST", "/v1/replicas/customers/reconcile?dry_run=false", "", kAdmin);
  ASSERT_EQ(again.status, 200) << again.body;
  json::object a = ParseBody(again).as_object();
  EXPECT_TRUE(a["in_sync"].as_bool()) << again.body;
  EXPECT_EQ(a["missing_count"].to_number<int64_t>(), 0);
  EXPECT_EQ(a["extra_count"].to_number<int64_t>(), 0);
  EXPECT_EQ(a["divergent_count"].to_number<int64_t>(), 0);
  EXPECT_EQ(a["repaired"].to_number<int64_t>(), 0);
  EXPECT_EQ(a["round_trips"].to_number<int64_t>(), 1);

  // The CLI: the same route, printed.
  const char* binary = std::getenv("CONVERGE_BINARY");
  ASSERT_NE(binary, nullptr);
  const std::string cli =
      std::string(binary) +
      " reconcile customers --dry-run --url http://127.0.0.1:" + std::to_string(server_->port()) +
      " --token ";
  testing::CommandOutput ran = testing::RunCommand(cli + kOwner + " 2>&1");
  EXPECT_EQ(ran.exit_code, 0) << ran.out;
  EXPECT_NE(ran.out.find("dry run: in sync"), std::string::npos) << ran.out;
  ran = testing::RunCommand(cli + kStranger + " 2>&1");
  EXPECT_EQ(ran.exit_code, 1) << ran.out;
  EXPECT_NE(ran.out.find("PERMISSION_DENIED"), std::string::npos) << ran.out;

  // The replica keeps applying after a repair.
  HttpResult put = Call("PUT", "/v1/collections/customers/docs/c5", R"({"after":1})");
  ASSERT_EQ(put.status, 200) << put.body;
  WaitCaughtUp("customers", std::stoull(put.Header("Converge-Version")));
  EXPECT_EQ(TableRows("customers_copy"), CollectionDocs());

  HttpResult m = Call("GET", "/metrics", "", kAdmin);
  ASSERT_EQ(m.status, 200);
  EXPECT_EQ(MetricValue(m.body, "converge_replica_reconcile_runs_total{replica=\"customers\"}"), 4)
      << m.body;
  EXPECT_EQ(MetricValue(m.body,
                        "converge_replica_reconcile_differences_total{replica="
                        "\"customers\",kind=\"divergent\"}"),
            4);
  EXPECT_EQ(MetricValue(m.body, "converge_replica_reconcile_repaired_total{replica=\"customers\"}"),
            4);
  EXPECT_GE(
      MetricValue(m.body, "converge_replica_reconcile_last_run_seconds{replica=\"customers\"}"), 0);

  // Bad input: a clear error, nothing run.
  HttpResult bad = Call("POST", "/v1/replicas/customers/reconcile?dry_run=yes", "", kOwner);
  EXPECT_EQ(bad.status, 400) << bad.body;
  EXPECT_EQ(Call("POST", "/v1/replicas/customers/reconcile?bogus=1", "", kOwner).status, 400);
  // A topic replica has no collection to compare with.
  EXPECT_EQ(Call("POST", "/v1/replicas/orders/reconcile", "", kAdmin).status, 409);
}

TEST_F(ReplicaServeTest, ReconcileFindsAndRepairsDriftMadeInTheTable) {
  ReconcileFindsAndRepairsDrift();
}

TEST_F(ReplicaServeTest, ReconcileAndDriftNeedPermissionToReadTheReplica) {
  CreateCollection();
  HttpResult put = Call("PUT", "/v1/collections/customers/docs/secret", R"({"ssn":"123"})");
  ASSERT_TRUE(put.status == 201 || put.status == 200) << put.body;
  for (const std::string& target : {std::string("/v1/replicas/customers/reconcile"),
                                    std::string("/v1/replicas/customers/reconcile?dry_run=bogus"),
                                    std::string("/v1/replicas/nosuch/reconcile")}) {
    HttpResult r = Call("POST", target, "", kStranger);
    EXPECT_EQ(r.status, 403) << target << " " << r.body;
    EXPECT_EQ(r.code(), "PERMISSION_DENIED");
  }
  HttpResult d = Call("GET", "/v1/replicas/customers/drift", "", kStranger);
  EXPECT_EQ(d.status, 403) << d.body;
  EXPECT_EQ(HttpCall(server_->port(), "POST", "/v1/replicas/customers/reconcile").status, 401);
  // Nothing ran: the drift is still empty for a caller who may read it.
  EXPECT_EQ(Call("GET", "/v1/replicas/customers/drift", "", kAdmin).status, 404);
  EXPECT_EQ(Call("POST", "/v1/replicas/nosuch/reconcile", "", kAdmin).status, 404);
}

void ReplicaServeTest::KillUnderLoadAndCompare() {
  CreateCollection();
  for (int round = 0; round < 2; ++round) {
    std::atomic<bool> stop{false};
    std::vector<std::thread> writers;
    const uint16_t port = server_->port();
    for (int w = 0; w < 3; ++w) {
      writers.emplace_back([&, w] {
        for (int i = 0; !stop.load(); ++i) {
          const std::string key = "k" + std::to_string((i * 7 + w) % 40);
          // Raw requests: a write cut by the kill is an expected outcome here, not a failure.
          const bool del = i % 9 == 4;
          const std::string body =
              del ? "" : R"({"w":)" + std::to_string(w) + R"(,"i":)" + std::to_string(i) + "}";
          std::string req = std::string(del ? "DELETE" : "PUT") +
                            " /v1/collections/customers/docs/" + key +
                            " HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer " + kOwner +
                            "\r\nContent-Type: application/json\r\nConnection: close\r\n"
                            "Content-Length: " +
                            std::to_string(body.size()) + "\r\n\r\n" + body;
          (void)testing::RawExchange(port, req, 2000);
        }
      });
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1500));
    server_->Kill();
    stop = true;
    for (auto& t : writers) t.join();
    auto restarted =
        std::make_unique<ServeProcess>(Config(db_path_, TargetYaml()), server_->data_dir());
    // The old fixture owns the data dir: keep it alive until the end.
    old_.push_back(std::move(server_));
    server_ = std::move(restarted);
    ASSERT_OK(server_->Start());
  }
  // After the last restart: the replica catches up with everything the store kept.
  HttpResult last = Call("PUT", "/v1/collections/customers/docs/final", R"({"done":true})");
  ASSERT_TRUE(last.status == 200 || last.status == 201) << last.body;
  WaitCaughtUp("customers", std::stoull(last.Header("Converge-Version")));
  const auto docs = CollectionDocs();
  EXPECT_GT(docs.size(), 5u);
  EXPECT_EQ(TableRows("customers_copy"), docs);
}

TEST_F(ReplicaServeTest, SigkillUnderWriteLoadThenTableEqualsCollection) {
  KillUnderLoadAndCompare();
}

// The same with the customers replica in PostgreSQL (started by the test).
class ReplicaServePostgresTest : public ReplicaServeTest {
 protected:
  bool WithPostgres() const override { return true; }
};

TEST_F(ReplicaServePostgresTest, StoreWriteTokenGivesReadYourWrites) { ReadYourWrites(); }

TEST_F(ReplicaServePostgresTest, SigkillUnderWriteLoadThenTableEqualsCollection) {
  KillUnderLoadAndCompare();
}

TEST_F(ReplicaServePostgresTest, ReconcileFindsAndRepairsDriftMadeInTheTable) {
  ReconcileFindsAndRepairsDrift();
}

}  // namespace
}  // namespace converge
