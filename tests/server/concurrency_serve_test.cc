// Black-box tests of `converge serve` under many small clients: hundreds of keep-alive
// connections, each publishing one event per request and waiting for its durable reply.
//
// What they pin down: a publish waiting for its fsync holds no server thread, so every publish
// in flight joins the next group commit whatever storage_threads is (before, at most
// storage_threads requests shared a sync); every acknowledged event is readable, also after a
// SIGKILL in the middle of the load.
#include <gtest/gtest.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <set>
#include <string>
#include <thread>

#include "converge/client.h"
#include "serve_process.h"
#include "support/http_load.h"
#include "test_util.h"

namespace converge {
namespace {

namespace bhttp = boost::beast::http;
using client::Client;
using testing::ServeProcess;

void CreateTopic(Client& c, const std::string& name, uint32_t partitions) {
  client::TopicSpec spec;
  spec.name = name;
  spec.partitions = partitions;
  Result<client::TopicDescription> t = c.CreateTopic(spec);
  ASSERT_TRUE(t.ok()) << t.status().ToString();
}

// The sync-count checks ask that requests in flight share syncs: on average more than
// kMinShare requests per sync, which one request per sync (the old behaviour) cannot meet. On a
// quiet machine the share is 8 to 30; with other tests running beside this one it has been
// measured as low as 7.5 (acks), so the bound leaves room for a loaded machine.
constexpr uint64_t kMinShare = 3;

std::string IdOf(uint64_t seq) {
  std::string id = "e";
  id += std::to_string(seq);
  return id;
}

// One structured CloudEvent per request, id "e<seq>".
bhttp::request<bhttp::string_body> PublishRequest(const std::string& topic, uint64_t seq) {
  std::string target = "/v1/topics/";
  target += topic;
  target += "/events";
  bhttp::request<bhttp::string_body> req{bhttp::verb::post, target, 11};
  req.set(bhttp::field::host, "127.0.0.1");
  req.set(bhttp::field::content_type, "application/cloudevents+json");
  std::string body = "{\"specversion\":\"1.0\",\"id\":\"";
  body += IdOf(seq);
  body += "\",\"source\":\"/load\",\"type\":\"com.example.load\",\"data\":{\"n\":";
  body += std::to_string(seq);
  body += "}}";
  req.body() = std::move(body);
  return req;
}

// Every event id stored in `topic`, read through a fresh consumer group.
std::set<std::string> ReadAllIds(Client& c, const std::string& topic) {
  std::set<std::string> ids;
  while (true) {
    client::FetchOptions f;
    f.max_events = 1000;
    f.wait_ms = 500;
    Result<std::vector<client::Delivery>> got = c.Fetch(topic, "check", f);
    if (!got.ok()) {
      ADD_FAILURE() << got.status().ToString();
      break;
    }
    if (got->empty()) break;
    std::vector<client::Lease> leases;
    for (const client::Delivery& d : *got) {
      leases.push_back(d.lease());
      if (d.event.has_value()) ids.insert(d.event->id());
    }
    Result<client::AckResult> acked = c.Ack(topic, "check", leases);
    EXPECT_TRUE(acked.ok()) << acked.status().ToString();
  }
  return ids;
}

// The number of file syncs the server made so far (its /metrics).
uint64_t FileSyncs(uint16_t port) {
  testing::HttpResult r = testing::HttpCall(port, "GET", "/metrics");
  const std::string key = "converge_fsync_duration_seconds_count{kind=\"file\"} ";
  const size_t at = r.body.find(key);
  if (at == std::string::npos) return 0;
  return std::strtoull(r.body.c_str() + at + key.size(), nullptr, 10);
}

// 512 connections (far more than storage_threads) each publish single events: all are
// acknowledged, all are readable, and the requests share group commits — many more of them
// per sync than there are storage threads.
TEST(ConcurrencyServeTest, ManyConcurrentSingleEventPublishesShareSyncsAndAllArrive) {
  ServeProcess server("storage_threads: 1\n");
  ASSERT_OK(server.Start());
  {
    Client c(server.ClientOptions());
    CreateTopic(c, "many", 1);
  }
  const uint64_t syncs_before = FileSyncs(server.port());
  testing::HttpLoadOptions load;
  load.port = server.port();
  load.connections = 512;
  load.requests = 4096;
  load.make_request = [](size_t, uint64_t seq) { return PublishRequest("many", seq); };
  load.on_reply = [](uint64_t, const bhttp::response<bhttp::string_body>& reply) {
    return reply.result_int() == 200;
  };
  testing::HttpLoadResult result = testing::RunHttpLoad(load);
  EXPECT_EQ(result.errors, 0u) << result.first_error << "\n" << server.Log();
  EXPECT_EQ(result.ok, load.requests);
  const uint64_t syncs = FileSyncs(server.port()) - syncs_before;
  // With at most storage_threads (1) request per group commit there would be >= 4096 syncs.
  std::printf("%llu file syncs for %llu %s\n", static_cast<unsigned long long>(syncs),
              static_cast<unsigned long long>(load.requests), "single-event publishes");
  EXPECT_LT(syncs, load.requests / kMinShare)
      << syncs << " file syncs for " << load.requests << " single-event publishes";

  Client c(server.ClientOptions());
  std::set<std::string> ids = ReadAllIds(c, "many");
  EXPECT_EQ(ids.size(), load.requests);
  for (uint64_t seq = 0; seq < load.requests; ++seq) {
    if (ids.count(IdOf(seq)) == 0) {
      ADD_FAILURE() << "acknowledged event e" << seq << " is missing";
      break;
    }
  }
}

// 512 connections each ack one lease per request, with sync_acks on (the default): every
// ack is answered, the acks share journal syncs (many more per sync than there are storage
// threads: an ack waiting for its sync holds no thread), and after a restart the group has
// every record committed, so nothing is delivered again.
TEST(ConcurrencyServeTest, ManyConcurrentSingleLeaseAcksShareJournalSyncs) {
  constexpr uint64_t kEvents = 1000;  // a group leases at most 1000 records at once
  auto server = std::make_unique<ServeProcess>("storage_threads: 1\n");
  ASSERT_OK(server->Start());
  std::vector<client::Lease> leases;
  {
    Client c(server->ClientOptions());
    CreateTopic(c, "acks", 1);
    std::vector<Event> batch;
    for (uint64_t seq = 0; seq < kEvents; ++seq) {
      Event e;
      e.set_id(IdOf(seq));
      e.set_source("/load");
      e.set_type("com.example.load");
      batch.push_back(std::move(e));
    }
    ASSERT_TRUE(c.Publish("acks", batch).ok());
    while (leases.size() < kEvents) {
      client::FetchOptions f;
      f.max_events = 1000;
      f.wait_ms = 500;
      Result<std::vector<client::Delivery>> got = c.Fetch("acks", "g", f);
      ASSERT_TRUE(got.ok()) << got.status().ToString();
      ASSERT_FALSE(got->empty()) << "fetched " << leases.size() << " of " << kEvents;
      for (const client::Delivery& d : *got) leases.push_back(d.lease());
    }
  }
  const uint64_t syncs_before = FileSyncs(server->port());
  testing::HttpLoadOptions load;
  load.port = server->port();
  load.connections = 512;
  load.requests = kEvents;
  load.make_request = [&leases](size_t, uint64_t seq) {
    const client::Lease& l = leases[seq];
    bhttp::request<bhttp::string_body> req{bhttp::verb::post, "/v1/topics/acks/groups/g/ack",
                                           11};
    req.set(bhttp::field::host, "127.0.0.1");
    req.set(bhttp::field::content_type, "application/json");
    req.body() = "{\"acks\":[{\"partition\":" + std::to_string(l.partition) +
                 ",\"offset\":" + std::to_string(l.offset) + ",\"lease_id\":\"" +
                 std::to_string(l.lease_id) + "\"}]}";
    return req;
  };
  load.on_reply = [](uint64_t, const bhttp::response<bhttp::string_body>& reply) {
    return reply.result_int() == 200 && reply.body() == "{\"acked\":1,\"lost\":[]}";
  };
  testing::HttpLoadResult result = testing::RunHttpLoad(load);
  EXPECT_EQ(result.errors, 0u) << result.first_error << "\n" << server->Log();
  EXPECT_EQ(result.ok, load.requests);
  const uint64_t syncs = FileSyncs(server->port()) - syncs_before;
  // With at most storage_threads (1) ack per journal sync there would be >= 1000 syncs.
  std::printf("%llu file syncs for %llu %s\n", static_cast<unsigned long long>(syncs),
              static_cast<unsigned long long>(load.requests), "single-lease acks");
  EXPECT_LT(syncs, load.requests / kMinShare)
      << syncs << " file syncs for " << load.requests << " single-lease acks";

  // Every ack was durable when answered: after a SIGKILL nothing is delivered again.
  const std::string data = server->data_dir();
  server->Kill();
  auto restarted = std::make_unique<ServeProcess>("", data);
  ASSERT_OK(restarted->Start());
  Client c(restarted->ClientOptions());
  client::FetchOptions f;
  f.max_events = 10;
  f.wait_ms = 300;
  Result<std::vector<client::Delivery>> again = c.Fetch("acks", "g", f);
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  EXPECT_TRUE(again->empty()) << again->size() << " acked records delivered again, first at "
                              << again->front().offset;
  restarted.reset();
  server.reset();
}

// 256 connections each start one saga per request: every start is answered 201 and the starts
// share syncs (saga-log writes and command appends), many more per sync than there are storage
// threads: a start waiting for its sync holds no thread. Every started saga exists.
TEST(ConcurrencyServeTest, ManyConcurrentSagaStartsShareSyncs) {
  constexpr uint64_t kStarts = 1024;
  ServeProcess server("storage_threads: 1\n");
  ASSERT_OK(server.Start());
  testing::HttpHeaders yaml = {{"Content-Type", "application/yaml"}};
  testing::HttpResult reg = testing::HttpCall(server.port(), "POST", "/v1/saga-definitions",
                                              "name: ship\nversion: 1\nsteps:\n"
                                              "  - name: pack\n    participant: warehouse\n"
                                              "    action: warehouse.pack\n    timeout_ms: 60000\n",
                                              yaml);
  ASSERT_EQ(reg.status, 201) << reg.body;
  const uint64_t syncs_before = FileSyncs(server.port());
  testing::HttpLoadOptions load;
  load.port = server.port();
  load.connections = 256;
  load.requests = kStarts;
  load.make_request = [](size_t, uint64_t seq) {
    bhttp::request<bhttp::string_body> req{bhttp::verb::post, "/v1/sagas", 11};
    req.set(bhttp::field::host, "127.0.0.1");
    req.set(bhttp::field::content_type, "application/json");
    req.body() = "{\"definition\":\"ship\",\"id\":\"s" + std::to_string(seq) + "\"}";
    return req;
  };
  load.on_reply = [](uint64_t seq, const bhttp::response<bhttp::string_body>& reply) {
    return reply.result_int() == 201 &&
           reply.body() == "{\"id\":\"s" + std::to_string(seq) + "\"}";
  };
  testing::HttpLoadResult result = testing::RunHttpLoad(load);
  EXPECT_EQ(result.errors, 0u) << result.first_error << "\n" << server.Log();
  EXPECT_EQ(result.ok, load.requests);
  const uint64_t syncs = FileSyncs(server.port()) - syncs_before;
  // With one start per sync (storage_threads: 1) there would be >= 1024 syncs.
  std::printf("%llu file syncs for %llu %s\n", static_cast<unsigned long long>(syncs),
              static_cast<unsigned long long>(load.requests), "saga starts");
  EXPECT_LT(syncs, load.requests / kMinShare) << syncs << " file syncs for " << load.requests
                                      << " saga starts";
  testing::HttpResult listed =
      testing::HttpCall(server.port(), "GET", "/v1/sagas?limit=100000");
  ASSERT_EQ(listed.status, 200);
  for (uint64_t seq = 0; seq < kStarts; ++seq) {
    if (listed.body.find("\"id\":\"s" + std::to_string(seq) + "\"") == std::string::npos) {
      ADD_FAILURE() << "started saga s" << seq << " is not listed";
      break;
    }
  }
}

// SIGKILL while 256 connections publish single events: after a restart every acknowledged
// event is there.
TEST(ConcurrencyServeTest, SigkillUnderConcurrentSingleEventPublishesLosesNoAcknowledgedEvent) {
  auto server = std::make_unique<ServeProcess>();
  ASSERT_OK(server->Start());
  {
    Client c(server->ClientOptions());
    CreateTopic(c, "durable", 4);
  }
  std::mutex mu;
  std::set<uint64_t> acked;
  std::atomic<uint64_t> acked_count{0};
  testing::HttpLoadOptions load;
  load.port = server->port();
  load.connections = 256;
  load.requests = 1'000'000;  // until the kill
  load.make_request = [](size_t, uint64_t seq) { return PublishRequest("durable", seq); };
  load.on_reply = [&](uint64_t seq, const bhttp::response<bhttp::string_body>& reply) {
    if (reply.result_int() != 200) return false;
    std::lock_guard<std::mutex> lock(mu);
    acked.insert(seq);
    ++acked_count;
    return true;
  };
  testing::HttpLoadResult result;
  std::thread loader([&] { result = testing::RunHttpLoad(load); });
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  while (acked_count.load() < 3000 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  server->Kill();
  loader.join();
  ASSERT_GE(acked.size(), 3000u) << result.first_error;
  EXPECT_GT(result.errors, 0u);  // the connections the kill cut

  const std::string data = server->data_dir();
  auto restarted = std::make_unique<ServeProcess>("", data);
  ASSERT_OK(restarted->Start());
  Client c(restarted->ClientOptions());
  std::set<std::string> stored = ReadAllIds(c, "durable");
  size_t missing = 0;
  for (uint64_t seq : acked) missing += stored.count(IdOf(seq)) ? 0 : 1;
  EXPECT_EQ(missing, 0u) << "of " << acked.size() << " acknowledged events";
  restarted.reset();
  server.reset();
}

}  // namespace
}  // namespace converge
