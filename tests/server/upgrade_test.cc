// A data directory written by the release before the issue-13 restructuring (7c68a72) opens
// with this binary, and keeps working: the log (and its dedup ids), the consumer-group state,
// the store WAL and the saga log, each in the format of then (no record-log file header, the
// old dedup fingerprint). tests/server/testdata/datadir-7c68a72 was made by that release's
// `converge serve` (see the README there); the test starts the current binary on a copy.
#include <gtest/gtest.h>

#include <boost/json.hpp>
#include <cstdlib>
#include <filesystem>
#include <set>
#include <string>

#include "serve_process.h"
#include "test_util.h"

namespace converge {
namespace {

namespace fs = std::filesystem;
namespace json = boost::json;
using testing::HttpCall;
using testing::HttpResult;
using testing::ServeProcess;

const testing::HttpHeaders kJson = {{"Content-Type", "application/json"}};

json::value Parse(const HttpResult& r) {
  boost::system::error_code ec;
  json::value v = json::parse(r.body, ec);
  EXPECT_FALSE(ec) << r.body;
  return v;
}

class UpgradeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const char* source = std::getenv("CONVERGE_SOURCE_DIR");
    ASSERT_NE(source, nullptr) << "CONVERGE_SOURCE_DIR is not set (run the test through ctest)";
    dir_ = fs::temp_directory_path() / ("converge-upgrade-" + std::to_string(::getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    fs::copy(fs::path(source) / "tests/server/testdata/datadir-7c68a72", dir_ / "data",
             fs::copy_options::recursive);
  }
  void TearDown() override {
    server_.reset();
    fs::remove_all(dir_);
  }
  void Start() {
    server_ = std::make_unique<ServeProcess>("", (dir_ / "data").string());
    Status s = server_->Start();
    ASSERT_TRUE(s.ok()) << s.ToString();
  }
  void Stop() {
    Result<int> code = server_->Signal(SIGTERM);
    ASSERT_TRUE(code.ok()) << code.status().ToString();
    EXPECT_EQ(*code, 0) << server_->Log();
  }
  uint16_t port() const { return server_->port(); }
  uint64_t EndOffsets(const std::string& topic) {
    HttpResult r = HttpCall(port(), "GET", "/v1/topics/" + topic);
    EXPECT_EQ(r.status, 200) << r.body;
    const json::value described = Parse(r);
    uint64_t sum = 0;
    for (const json::value& p : described.at("partition_offsets").as_array()) {
      sum += p.at("end_offset").to_number<uint64_t>();
    }
    return sum;
  }
  // Every event id the group "billing" is given from now on: fetches and acks until a fetch
  // comes back empty (one event per key is leased at a time).
  std::set<std::string> DrainIds() {
    std::set<std::string> ids;
    for (int round = 0; round < 50; ++round) {
      HttpResult r = HttpCall(port(), "POST", "/v1/topics/orders/groups/billing/fetch",
                              R"({"max_events":100})", kJson);
      EXPECT_EQ(r.status, 200) << r.body;
      const json::value fetched = Parse(r);
      const json::array& deliveries = fetched.at("deliveries").as_array();
      if (deliveries.empty()) break;
      json::array acks;
      for (const json::value& d : deliveries) {
        ids.insert(std::string(d.at("event").at("id").as_string()));
        acks.push_back(json::object{{"partition", d.at("partition")},
                                    {"offset", d.at("offset")},
                                    {"lease_id", d.at("lease_id")}});
      }
      HttpResult ack = HttpCall(port(), "POST", "/v1/topics/orders/groups/billing/ack",
                                json::serialize(json::object{{"acks", acks}}), kJson);
      EXPECT_EQ(ack.status, 200) << ack.body;
    }
    return ids;
  }
  std::string Publish(const std::string& id, int n) {
    HttpResult r =
        HttpCall(port(), "POST", "/v1/topics/orders/events",
                 R"({"specversion":"1.0","id":")" + id +
                     R"(","source":"/shop","type":"order.created","subject":"k1","data":{"n":)" +
                     std::to_string(n) + "}}",
                 {{"Content-Type", "application/cloudevents+json"}});
    EXPECT_EQ(r.status, 200) << r.body;
    return r.body;
  }
  // The document's version and its "tier" (0 and -1 when it does not exist).
  std::pair<int64_t, int64_t> Doc(const std::string& key) {
    HttpResult r = HttpCall(port(), "GET", "/v1/collections/customers/docs/" + key);
    if (r.status == 404) return {0, -1};
    EXPECT_EQ(r.status, 200) << r.body;
    int64_t version = std::strtoll(r.Header("ETag").c_str() + 1, nullptr, 10);
    return {version, Parse(r).at("tier").to_number<int64_t>()};
  }

  fs::path dir_;
  std::unique_ptr<ServeProcess> server_;
};

TEST_F(UpgradeTest, ADataDirOfThePreviousReleaseOpensAndKeepsWorking) {
  Start();
  EXPECT_EQ(HttpCall(port(), "GET", "/readyz").status, 200) << server_->Log();
  EXPECT_EQ(server_->Log().find("damage"), std::string::npos) << server_->Log();

  // The log: 20 events in two partitions.
  EXPECT_EQ(EndOffsets("orders"), 20u);
  // Its dedup ids: an id published then is still a duplicate (the fingerprint changed).
  std::string again = Publish("evt-1", 1);
  EXPECT_NE(again.find("\"duplicate\":true"), std::string::npos) << again;
  EXPECT_EQ(EndOffsets("orders"), 20u);

  // The group state: evt-1..5 were acked then and are never given again.
  std::set<std::string> ids = DrainIds();
  EXPECT_EQ(ids.size(), 15u);
  for (int i = 1; i <= 20; ++i) {
    EXPECT_EQ(ids.count("evt-" + std::to_string(i)), i <= 5 ? 0u : 1u) << i;
  }

  // The store WAL: c1 created (version 2), c2 updated (version 5), c3 deleted.
  HttpResult coll = HttpCall(port(), "GET", "/v1/collections/customers");
  ASSERT_EQ(coll.status, 200) << coll.body;
  EXPECT_EQ(Parse(coll).at("owner"), "crm");
  EXPECT_EQ(Doc("c1"), std::make_pair(int64_t{2}, int64_t{1}));
  EXPECT_EQ(Doc("c2"), std::make_pair(int64_t{5}, int64_t{9}));
  EXPECT_EQ(Doc("c3").first, 0);

  // The saga log: the saga started then, with its data and history.
  HttpResult saga = HttpCall(port(), "GET", "/v1/sagas/saga-upgrade-1");
  ASSERT_EQ(saga.status, 200) << saga.body;
  json::value info = Parse(saga);
  EXPECT_EQ(info.at("definition"), "order");
  EXPECT_EQ(info.at("data"), json::parse(R"({"order":42})"));
  EXPECT_EQ(info.at("history").as_array().at(0).at("event"), "started");

  // New writes beside the old files, then a restart: old and new both read back.
  Publish("evt-21", 21);
  HttpResult put = HttpCall(port(), "PUT", "/v1/collections/customers/docs/c4",
                            R"({"name":"customer 4","tier":4})", kJson);
  EXPECT_EQ(put.status / 100, 2) << put.body;
  Stop();
  Start();
  EXPECT_EQ(EndOffsets("orders"), 21u);
  EXPECT_EQ(Doc("c2"), std::make_pair(int64_t{5}, int64_t{9}));
  EXPECT_EQ(Doc("c4").second, 4);
  EXPECT_EQ(HttpCall(port(), "GET", "/v1/sagas/saga-upgrade-1").status, 200);
  again = Publish("evt-2", 2);
  EXPECT_NE(again.find("\"duplicate\":true"), std::string::npos) << again;
}

}  // namespace
}  // namespace converge
