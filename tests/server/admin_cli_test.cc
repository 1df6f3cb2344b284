// The operating commands of the converge binary against a real `converge serve`: topics,
// groups, publish, consume, dlq, store, saga (over https, with timers); tables and --json;
// the server's error code and message with exit 1; and `converge relay --drain`'s counts.
#include <gtest/gtest.h>

#include <boost/json.hpp>
#include <cstdlib>
#include <fstream>
#include <string>

#include "converge/env.h"
#include "converge/event.h"
#include "converge/outbox.h"
#include "converge/sql.h"
#include "serve_process.h"
#include "support/run_command.h"
#include "test_util.h"

namespace converge {
namespace {

namespace json = boost::json;
using testing::Must;
using testing::ServeProcess;

const std::string kAdmin = "admin-token-0123456789";
const std::string kApp = "app-token-0123456789abc";

std::string Converge() {
  const char* b = std::getenv("CONVERGE_BINARY");
  return b != nullptr ? b : "converge";
}

class AdminCliTest : public ::testing::Test {
 protected:
  void Start(const std::string& extra = "") {
    server_ =
        std::make_unique<ServeProcess>("auth:\n  tokens:\n    - {service: ops, token: " + kAdmin +
                                       ", admin: true}\n    - {service: app, token: " + kApp +
                                       ", publish: ['orders*'], subscribe: ['orders*']}\n" + extra);
    ASSERT_OK(server_->Start());
    server_url_ =
        (tls_ ? "https://127.0.0.1:" : "http://127.0.0.1:") + std::to_string(server_->port());
  }
  // `converge <args>` against the server with `token`; stdout and stderr together.
  testing::CommandOutput Cli(const std::string& args, const std::string& token = kAdmin) {
    std::string cmd = Converge() + " " + args + " --server " + server_url_;
    if (!token.empty()) cmd += " --token " + token;
    if (!cacert_.empty()) cmd += " --cacert " + cacert_;
    return testing::RunCommand(cmd + " 2>&1 </dev/null");
  }
  json::value CliJson(const std::string& args, const std::string& token = kAdmin) {
    testing::CommandOutput out = Cli(args + " --json", token);
    EXPECT_EQ(out.exit_code, 0) << args << ": " << out.out;
    boost::system::error_code ec;
    json::value v = json::parse(out.out, ec);
    EXPECT_FALSE(ec) << args << ": " << out.out;
    return v;
  }

  std::unique_ptr<ServeProcess> server_;
  std::string server_url_;
  bool tls_ = false;
  std::string cacert_;
};

TEST_F(AdminCliTest, TopicsPublishConsumeAndGroups) {
  Start();
  // topics create / list / describe
  testing::CommandOutput created = Cli("topics create orders --partitions 2");
  ASSERT_EQ(created.exit_code, 0) << created.out;
  EXPECT_NE(created.out.find("created topic orders (2 partitions"), std::string::npos)
      << created.out;
  testing::CommandOutput list = Cli("topics list");
  ASSERT_EQ(list.exit_code, 0) << list.out;
  EXPECT_NE(list.out.find("TOPIC"), std::string::npos) << list.out;
  EXPECT_NE(list.out.find("orders"), std::string::npos) << list.out;
  // publish: one event from options, then a batch from a file
  testing::CommandOutput published =
      Cli("publish orders --type t.x --id e1 --key k --data '{\"n\":1}'", kApp);
  ASSERT_EQ(published.exit_code, 0) << published.out;
  EXPECT_NE(published.out.find("e1"), std::string::npos) << published.out;
  const std::string batch = server_->dir() + "/batch.json";
  std::ofstream(batch)
      << R"([{"specversion":"1.0","id":"e2","source":"/s","type":"t.x","partitionkey":"k"},
                             {"specversion":"1.0","id":"e3","source":"/s","type":"t.x","partitionkey":"k"}])";
  json::value results = CliJson("publish orders --file " + batch, kApp);
  ASSERT_EQ(results.at("results").as_array().size(), 2u);
  const int64_t partition =
      results.at("results").as_array()[0].at("partition").to_number<int64_t>();
  json::value described = CliJson("topics describe orders");
  uint64_t events = 0;
  for (const json::value& p : described.at("partition_offsets").as_array()) {
    events += p.at("end_offset").to_number<uint64_t>();
  }
  EXPECT_EQ(events, 3u);
  EXPECT_EQ(Cli("topics describe orders").exit_code, 0);

  // consume by offset: nothing changes
  testing::CommandOutput range =
      Cli("consume orders --from-offset 1 --partition " + std::to_string(partition) + " --max 5");
  ASSERT_EQ(range.exit_code, 0) << range.out;
  EXPECT_EQ(range.out.find("e1"), std::string::npos) << range.out;
  EXPECT_NE(range.out.find("e2"), std::string::npos) << range.out;
  EXPECT_NE(range.out.find("e3"), std::string::npos) << range.out;
  // consume through a group: fetched and acked
  testing::CommandOutput consumed = Cli("consume orders --group g", kApp);
  ASSERT_EQ(consumed.exit_code, 0) << consumed.out;
  EXPECT_NE(consumed.out.find("e1"), std::string::npos) << consumed.out;
  json::value group = CliJson("groups describe orders g");
  EXPECT_EQ(group.at("lag").to_number<int>(), 0) << json::serialize(group);
  EXPECT_EQ(group.at("consumers").as_array()[0].at("consumer").as_string(), "converge-cli");
  testing::CommandOutput table = Cli("groups describe orders g");
  EXPECT_NE(table.out.find("converge-cli"), std::string::npos) << table.out;
  EXPECT_NE(Cli("groups list orders").out.find("g "), std::string::npos);
  // seek back, consume again without acking
  testing::CommandOutput seek = Cli("groups seek orders g --to earliest", kApp);
  ASSERT_EQ(seek.exit_code, 0) << seek.out;
  EXPECT_EQ(CliJson("groups describe orders g").at("lag").to_number<int>(), 3);
  ASSERT_EQ(Cli("consume orders --group g --no-ack", kApp).exit_code, 0);
  EXPECT_EQ(CliJson("groups describe orders g").at("lag").to_number<int>(), 3);
  EXPECT_EQ(
      Cli("groups seek orders g --to offset --offset 1 --partition " + std::to_string(partition))
          .exit_code,
      0);
  EXPECT_EQ(CliJson("groups describe orders g").at("lag").to_number<int>(), 2);
  EXPECT_EQ(Cli("groups seek orders g --to time --time-ms 0").exit_code, 0);
  EXPECT_EQ(CliJson("groups describe orders g").at("lag").to_number<int>(), 3);
  // dead letters of the group: none yet
  testing::CommandOutput dlq = Cli("dlq list orders g");
  ASSERT_EQ(dlq.exit_code, 0) << dlq.out;
  EXPECT_NE(dlq.out.find("next offset 0"), std::string::npos) << dlq.out;
  testing::CommandOutput replay = Cli("dlq replay orders g", kApp);
  ASSERT_EQ(replay.exit_code, 0) << replay.out;
  EXPECT_NE(replay.out.find("replayed 0"), std::string::npos) << replay.out;
  // a dead letter, discarded from the CLI
  testing::CommandOutput fetched = Cli("consume orders --group g --no-ack --max 1 --json", kApp);
  ASSERT_EQ(fetched.exit_code, 0) << fetched.out;
  json::value lease = json::parse(fetched.out).at("deliveries").as_array().at(0);
  ASSERT_EQ(testing::HttpCall(server_->port(), "POST", "/v1/topics/orders/groups/g/nack",
                              R"({"nacks":[{"partition":)" + json::serialize(lease.at("partition")) +
                                  R"(,"offset":)" + json::serialize(lease.at("offset")) +
                                  R"(,"lease_id":)" + json::serialize(lease.at("lease_id")) +
                                  R"(,"permanent":true}]})",
                              {{"Content-Type", "application/json"}}, kApp)
                .status,
            200);
  testing::CommandOutput listed = Cli("dlq list orders g");
  EXPECT_NE(listed.out.find("rejected"), std::string::npos) << listed.out;
  testing::CommandOutput discarded = Cli("dlq discard orders g --from 0 --to 1", kApp);
  ASSERT_EQ(discarded.exit_code, 0) << discarded.out;
  EXPECT_NE(discarded.out.find("discarded 1"), std::string::npos) << discarded.out;
  // delete the group, then the topic
  ASSERT_EQ(Cli("groups delete orders g", kApp).exit_code, 0);
  EXPECT_EQ(Cli("groups describe orders g").exit_code, 1);
  testing::CommandOutput deleted = Cli("topics delete orders");
  ASSERT_EQ(deleted.exit_code, 0) << deleted.out;
  EXPECT_NE(deleted.out.find("deleted topic orders"), std::string::npos) << deleted.out;
}

TEST_F(AdminCliTest, ErrorsPrintTheServersCodeAndMessageAndExitOne) {
  Start();
  testing::CommandOutput missing = Cli("topics describe nope");
  EXPECT_EQ(missing.exit_code, 1);
  EXPECT_NE(missing.out.find("NOT_FOUND: topic 'nope' does not exist"), std::string::npos)
      << missing.out;
  testing::CommandOutput wrong = Cli("topics list", "wrong-token-0123456789");
  EXPECT_EQ(wrong.exit_code, 1);
  EXPECT_NE(wrong.out.find("UNAUTHENTICATED"), std::string::npos) << wrong.out;
  testing::CommandOutput none = Cli("topics list", "");
  EXPECT_EQ(none.exit_code, 1);
  EXPECT_NE(none.out.find("UNAUTHENTICATED"), std::string::npos) << none.out;
  testing::CommandOutput denied = Cli("topics create orders", kApp);
  EXPECT_EQ(denied.exit_code, 1);
  EXPECT_NE(denied.out.find("PERMISSION_DENIED"), std::string::npos) << denied.out;
  testing::CommandOutput bad = Cli("topics create orders --durability sometimes");
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_NE(bad.out.find("INVALID_ARGUMENT"), std::string::npos) << bad.out;
  // Usage errors are the command's own: exit 2, nothing sent.
  EXPECT_EQ(Cli("consume orders").exit_code, 2);
  EXPECT_EQ(Cli("groups seek orders g").exit_code, 2);
  EXPECT_EQ(Cli("topics frob").exit_code, 2);
  EXPECT_EQ(Cli("dlq status orders g").exit_code, 2);
  // A server that is not there.
  testing::CommandOutput gone =
      testing::RunCommand(Converge() + " topics list --server http://127.0.0.1:1 --timeout 5 2>&1");
  EXPECT_EQ(gone.exit_code, 1);
  EXPECT_NE(gone.out.find("cannot reach"), std::string::npos) << gone.out;
}

TEST_F(AdminCliTest, StoreGetAndPut) {
  Start();
  ASSERT_EQ(testing::HttpCall(server_->port(), "PUT", "/v1/collections/carts", "{}",
                              {{"Content-Type", "application/json"}}, kAdmin)
                .status,
            201);
  json::value written = CliJson("store put carts c/1 --data '{\"n\":1}'");
  const std::string version = std::to_string(written.at("version").to_number<int64_t>());
  testing::CommandOutput table = Cli("store put carts c/3 --data '{\"n\":1}'");
  ASSERT_EQ(table.exit_code, 0) << table.out;
  EXPECT_NE(table.out.find("carts/c/3: version "), std::string::npos) << table.out;
  testing::CommandOutput get = Cli("store get carts c/1");
  ASSERT_EQ(get.exit_code, 0) << get.out;
  EXPECT_NE(get.out.find("version \"" + version + "\""), std::string::npos) << get.out;
  EXPECT_NE(get.out.find("{\"n\":1}"), std::string::npos) << get.out;
  // A stale precondition: the server's 412, exit 1, nothing written.
  testing::CommandOutput stale = Cli("store put carts c/1 --data '{\"n\":3}' --if-match 999");
  EXPECT_EQ(stale.exit_code, 1) << stale.out;
  EXPECT_NE(stale.out.find("HTTP 412"), std::string::npos) << stale.out;
  testing::CommandOutput fresh =
      Cli("store put carts c/1 --data '{\"n\":2}' --if-match " + version);
  EXPECT_EQ(fresh.exit_code, 0) << fresh.out;
  EXPECT_EQ(Cli("store put carts c/1 --data '{}' --if-none-match").exit_code, 1);
  EXPECT_NE(Cli("store get carts c/1").out.find("{\"n\":2}"), std::string::npos);
  EXPECT_EQ(Cli("store get carts nope").exit_code, 1);
  EXPECT_EQ(Cli("store put carts c/2").exit_code, 2);  // no --data
}

TEST_F(AdminCliTest, RelayDeadLettersFromTheCli) {
  ServeProcess probe;
  sql::SqliteOptions so;
  so.path = probe.dir() + "/svc.db";
  std::unique_ptr<sql::Database> db = Must(sql::Database::OpenSqlite(so), "open");
  ASSERT_OK(Outbox::CreateSchema(*db));
  Start(
      "relays:\n  sink: {create_topics: false}\n  sources:\n    - name: svc\n      database: "
      "sqlite:" +
      so.path + "\n      poll_interval_ms: 20\n");
  Outbox outbox(Env::Default());
  Event a;
  a.set_source("/svc");
  a.set_id("a1");
  a.set_type("t.x");
  Event b = a;
  b.set_id("b1");
  std::vector<OutboxEntry> rows = {{"orders-late", &a}, {"orders-never", &b}};
  ASSERT_OK(db->Transact([&](sql::Transaction& tx) { return outbox.Write(tx, rows); }));
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (std::chrono::steady_clock::now() < until &&
         CliJson("dlq status --relays").at("dead_letters").at("total").to_number<int>() < 2) {
  }
  testing::CommandOutput status = Cli("dlq status --relays");
  EXPECT_NE(status.out.find("2 (2 pending"), std::string::npos) << status.out;
  EXPECT_NE(status.out.find("svc"), std::string::npos) << status.out;
  testing::CommandOutput list = Cli("dlq list --relays");
  EXPECT_NE(list.out.find("orders-late"), std::string::npos) << list.out;
  EXPECT_NE(list.out.find("pending"), std::string::npos) << list.out;
  EXPECT_EQ(Cli("dlq list --relays", kApp).exit_code, 1);  // admin tokens only
  ASSERT_EQ(Cli("topics create orders-late").exit_code, 0);
  testing::CommandOutput replay = Cli("dlq replay --relays --from 0 --to 1");
  ASSERT_EQ(replay.exit_code, 0) << replay.out;
  EXPECT_NE(replay.out.find("replayed 1"), std::string::npos) << replay.out;
  testing::CommandOutput discard = Cli("dlq discard --relays --from 1 --to 2");
  ASSERT_EQ(discard.exit_code, 0) << discard.out;
  EXPECT_NE(discard.out.find("discarded 1"), std::string::npos) << discard.out;
  EXPECT_EQ(CliJson("dlq list --relays --state pending").at("dead_letters").as_array().size(), 0u);
  testing::CommandOutput read = Cli("consume orders-late --from-offset 0");
  EXPECT_NE(read.out.find("a1"), std::string::npos) << read.out;
}

// The saga command over https (--cacert), with its timers.
TEST_F(AdminCliTest, SagaOverHttpsWithTimers) {
  ServeProcess probe;
  cacert_ = probe.dir() + "/cert.pem";
  const std::string key = probe.dir() + "/key.pem";
  const std::string cmd = "openssl req -x509 -newkey rsa:2048 -nodes -keyout " + key + " -out " +
                          cacert_ +
                          " -days 1 -subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1 "
                          ">/dev/null 2>&1";
  ASSERT_EQ(std::system(cmd.c_str()), 0) << "openssl could not make a test certificate";
  const std::string def = probe.dir() + "/order.yaml";
  std::ofstream(def) << "name: order\nversion: 1\nsteps:\n  - name: charge\n"
                        "    participant: payments\n    action: payments.charge\n"
                        "    pivot: true\n    timeout_ms: 600000\n";
  tls_ = true;
  Start("tls: {cert_file: " + cacert_ + ", key_file: " + key + "}\nsagas:\n  definitions: [" + def +
        "]\n");
  testing::CommandOutput started = Cli("saga start order");
  ASSERT_EQ(started.exit_code, 0) << started.out;
  const std::string id = started.out.substr(0, started.out.find('\n'));
  ASSERT_FALSE(id.empty());
  testing::CommandOutput timers = Cli("saga timers");
  ASSERT_EQ(timers.exit_code, 0) << timers.out;
  EXPECT_NE(timers.out.find("step-timeout"), std::string::npos) << timers.out;
  testing::CommandOutput set = Cli("saga timer-set " + id + " step-timeout --due-ms 4102444800000");
  ASSERT_EQ(set.exit_code, 0) << set.out;
  EXPECT_NE(set.out.find("2100-01-01"), std::string::npos) << set.out;
  testing::CommandOutput cancel = Cli("saga timer-cancel " + id + " step-timeout");
  ASSERT_EQ(cancel.exit_code, 0) << cancel.out;
  EXPECT_EQ(Cli("saga timers").out.find(id), std::string::npos);
  testing::CommandOutput missing = Cli("saga show 01890000-0000-7000-8000-000000000000");
  EXPECT_EQ(missing.exit_code, 1) << missing.out;
  EXPECT_NE(missing.out.find("converge saga: NOT_FOUND: "), std::string::npos) << missing.out;
  // The other commands over https too; and a certificate the CLI does not trust is refused.
  EXPECT_EQ(Cli("topics list").exit_code, 0);
  cacert_.clear();
  testing::CommandOutput untrusted = Cli("topics list");
  EXPECT_EQ(untrusted.exit_code, 1) << untrusted.out;
  EXPECT_NE(untrusted.out.find("cannot reach"), std::string::npos) << untrusted.out;
}

// `converge relay --drain` says how many rows were published and how many dead-lettered: a
// dead-lettered row is not reported as relayed.
TEST(RelayDrainCli, CountsPublishedAndDeadLetteredRowsApart) {
  ServeProcess probe;  // a temp dir
  sql::SqliteOptions so;
  so.path = probe.dir() + "/svc.db";
  std::unique_ptr<sql::Database> db = Must(sql::Database::OpenSqlite(so), "open");
  ASSERT_OK(Outbox::CreateSchema(*db));
  Outbox outbox(Env::Default());
  Event good;
  good.set_source("/svc");
  good.set_id("g1");
  good.set_type("t.x");
  Event doomed = good;
  doomed.set_id("d1");
  // The relay's own dead-letter topic takes no published rows: that one is dead-lettered.
  std::vector<OutboxEntry> rows = {{"orders", &good}, {"outbox-dead", &doomed}};
  ASSERT_OK(db->Transact([&](sql::Transaction& tx) { return outbox.Write(tx, rows); }));
  const std::string config = probe.dir() + "/relay.yaml";
  std::ofstream(config) << "relays:\n  sink: {dead_letter_topic: outbox-dead}\n  sources:\n"
                           "    - name: svc\n      database: sqlite:"
                        << so.path << "\n";
  testing::CommandOutput out = testing::RunCommand(
      Converge() + " relay --drain --log-dir " + probe.dir() + "/log --config " + config + " 2>&1");
  ASSERT_EQ(out.exit_code, 0) << out.out;
  EXPECT_NE(out.out.find("svc: 2 rows: 1 published, 1 dead-lettered"), std::string::npos)
      << out.out;
}

}  // namespace
}  // namespace converge
