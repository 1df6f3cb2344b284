// Black-box tests of consumer-group behaviour over HTTP: members, sessions, streams that end,
// leaving, dead-letter replay, and how every group route answers bad or unknown input. Each
// test starts the real `converge serve` binary (see serve_process.h).
#include <gtest/gtest.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "converge/client.h"
#include "converge/event.h"
#include "serve_process.h"
#include "test_backend.h"
#include "test_util.h"

namespace converge {
namespace {

using client::Client;
using client::Delivery;
using testing::ServeProcess;
using Clock = std::chrono::steady_clock;

using testing::Must;
using testing::TestBackendIs;

int64_t MsSince(Clock::time_point start) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start).count();
}

Event MakeEvent(const std::string& id) {
  Event e;
  e.set_source("/groups-test");
  e.set_id(id);
  e.set_type("com.example.test");
  Status s = e.SetJsonData("{\"n\":1}");
  if (!s.ok()) ADD_FAILURE() << s.ToString();
  return e;
}

// "field":value out of a flat JSON reply (enough for the counters these tests read).
std::string Field(const std::string& json, const std::string& name) {
  const std::string key = "\"" + name + "\":";
  size_t at = json.find(key);
  if (at == std::string::npos) return "<absent>";
  at += key.size();
  size_t end = at;
  if (end < json.size() && json[end] == '"') {
    end = json.find('"', end + 1);
    return json.substr(at + 1, end - at - 1);
  }
  while (end < json.size() && json[end] != ',' && json[end] != '}' && json[end] != ']') ++end;
  return json.substr(at, end - at);
}

class GroupsTest : public ::testing::Test {
 protected:
  void StartServer(std::string yaml = "") {
    server_ = std::make_unique<ServeProcess>(std::move(yaml));
    Status s = server_->Start();
    ASSERT_TRUE(s.ok()) << s.ToString();
    client_ = std::make_unique<Client>(server_->ClientOptions());
  }
  Client NewClient(std::string token = "") { return Client(server_->ClientOptions(token)); }

  // One request as a client without a converge library sends it; `token` empty: the token
  // of client_.
  testing::HttpResult Call(const std::string& method, const std::string& target,
                           const std::string& body = "", const std::string& token = "") {
    testing::HttpHeaders headers;
    if (!body.empty()) headers.emplace_back("Content-Type", "application/json");
    return testing::HttpCall(server_->port(), method, target, body, headers,
                             token.empty() ? token_ : token);
  }

  void CreateTopic(const std::string& name, uint32_t partitions = 1) {
    client::TopicSpec spec;
    spec.name = name;
    spec.partitions = partitions;
    Result<client::TopicDescription> t = client_->CreateTopic(spec);
    ASSERT_TRUE(t.ok()) << t.status().ToString();
  }
  void Publish(const std::string& topic, const std::string& id) {
    Result<client::Published> p = client_->PublishOne(topic, MakeEvent(id));
    ASSERT_TRUE(p.ok()) << p.status().ToString();
  }
  // Events in the topic (sum of partition end offsets).
  uint64_t TopicEnd(const std::string& topic) {
    client::TopicDescription t = Must(client_->DescribeTopic(topic));
    uint64_t n = 0;
    for (const auto& p : t.offsets) n += p.end_offset;
    return n;
  }
  std::vector<Delivery> FetchAs(const std::string& topic, const std::string& group,
                                const std::string& consumer, int64_t wait_ms) {
    client::FetchOptions f;
    f.max_events = 10;
    f.wait_ms = wait_ms;
    f.consumer = consumer;
    return Must(client_->Fetch(topic, group, f), "fetch");
  }

  std::unique_ptr<ServeProcess> server_;
  std::unique_ptr<Client> client_;
  std::string token_;  // client_'s
};

// ---------------------------------------------------------------------------------------
// Streams that end

// A consumer that crashes on an event (closing its stream without an ack) uses up a delivery
// attempt each time, so the poison event ends in the dead-letter topic instead of being
// redelivered forever.
TEST_F(GroupsTest, StreamClosedWithoutAckCountsTheAttemptAndDeadLetters) {
  StartServer();
  CreateTopic("poison");
  auto r = Call("POST", "/v1/topics/poison/groups",
                R"({"name":"workers","max_deliveries":3,"lease_ms":600000})");
  ASSERT_EQ(r.status, 201) << r.body;
  Publish("poison", "p1");
  for (uint32_t attempt = 1; attempt <= 3; ++attempt) {
    client::SubscribeOptions options;
    options.consumer = "crashy";
    std::unique_ptr<client::Subscription> sub =
        Must(client_->Subscribe("poison", "workers", options));
    Result<std::optional<Delivery>> d = sub->Next(10'000);
    ASSERT_TRUE(d.ok()) << d.status().ToString();
    ASSERT_TRUE(d->has_value()) << "attempt " << attempt << " was not delivered within 10 s";
    EXPECT_EQ((*d)->attempt, attempt);
    sub.reset();  // the consumer dies: the stream closes with the lease outstanding
  }
  const auto start = Clock::now();
  client::DeadLetterList dl;
  do {
    dl = Must(client_->ListDeadLetters("poison", "workers"));
    if (!dl.dead_letters.empty()) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  } while (MsSince(start) < 10'000);
  ASSERT_EQ(dl.dead_letters.size(), 1u);
  EXPECT_EQ(dl.dead_letters[0].delivery_count, 3u);
  EXPECT_EQ(dl.dead_letters[0].event->id(), "p1");
  // Nothing is delivered any more.
  EXPECT_TRUE(FetchAs("poison", "workers", "healthy", 300).empty());
}

// A closed stream gives up its partition and leases at once, not after missed heartbeats.
TEST_F(GroupsTest, ClosedStreamHandsItsPartitionAndLeasesOverPromptly) {
  StartServer();
  CreateTopic("handover");
  auto r = Call("POST", "/v1/topics/handover/groups", R"({"name":"g","lease_ms":600000})");
  ASSERT_EQ(r.status, 201) << r.body;
  Publish("handover", "e1");
  client::SubscribeOptions options;
  options.consumer = "a";
  std::unique_ptr<client::Subscription> sub = Must(client_->Subscribe("handover", "g", options));
  Result<std::optional<Delivery>> d = sub->Next(10'000);
  ASSERT_TRUE(d.ok() && d->has_value());
  // "a" holds the only partition; "b" gets nothing while the stream is open.
  EXPECT_TRUE(FetchAs("handover", "g", "b", 0).empty());
  sub.reset();
  const auto closed = Clock::now();
  std::vector<Delivery> got;
  while (got.empty() && MsSince(closed) < 15'000) got = FetchAs("handover", "g", "b", 500);
  const int64_t took = MsSince(closed);
  ASSERT_EQ(got.size(), 1u) << "not handed over within 15 s";
  EXPECT_EQ(got[0].event->id(), "e1");
  EXPECT_EQ(got[0].attempt, 2u);
  // The old behaviour took two heartbeats (about 30 s); a closed socket is seen at once.
  EXPECT_LT(took, 5'000) << "handover took " << took << " ms";
}

// The same over TLS, where the server reads and writes the encrypted stream at once: the
// stream keeps delivering while its socket is watched, and a close is still seen at once.
TEST_F(GroupsTest, ClosedTlsStreamIsSeenPromptlyAndAnOpenOneKeepsDelivering) {
  ServeProcess probe;  // only for its temp dir
  const std::string cert = probe.dir() + "/cert.pem", key = probe.dir() + "/key.pem";
  const std::string cmd = "openssl req -x509 -newkey rsa:2048 -nodes -keyout " + key + " -out " +
                          cert +
                          " -days 1 -subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1 "
                          ">/dev/null 2>&1";
  ASSERT_EQ(std::system(cmd.c_str()), 0) << "openssl could not make a test certificate";
  server_ = std::make_unique<ServeProcess>("tls: {cert_file: " + cert + ", key_file: " + key +
                                           "}\nlimits: {stream_heartbeat_ms: 60000}\n");
  ASSERT_TRUE(server_->Start().ok());
  client::Options o = server_->ClientOptions();
  o.tls = true;
  o.tls_ca_file = cert;
  client_ = std::make_unique<Client>(o);
  CreateTopic("tls");
  // Over TLS: through the client (the shared plain-HTTP helper does not speak TLS).
  client::GroupSpec spec;
  spec.name = "g";
  spec.lease_ms = 600000;
  ASSERT_TRUE(client_->CreateGroup("tls", spec).ok());
  client::SubscribeOptions options;
  options.consumer = "a";
  std::unique_ptr<client::Subscription> sub = Must(client_->Subscribe("tls", "g", options));
  std::vector<client::Lease> leases;
  for (int i = 0; i < 5; ++i) {
    Publish("tls", "e" + std::to_string(i));
    Result<std::optional<Delivery>> d = sub->Next(10'000);
    ASSERT_TRUE(d.ok() && d->has_value()) << i;
    if (i < 4) leases.push_back((*d)->lease());
  }
  ASSERT_EQ(Must(client_->Ack("tls", "g", leases)).acked, 4u);
  sub.reset();
  const auto closed = Clock::now();
  std::vector<Delivery> got;
  while (got.empty() && MsSince(closed) < 15'000) got = FetchAs("tls", "g", "b", 500);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].event->id(), "e4");
  EXPECT_EQ(got[0].attempt, 2u);
  EXPECT_LT(MsSince(closed), 5'000);
}

// ---------------------------------------------------------------------------------------
// Leaving and sessions

TEST_F(GroupsTest, LeaveReleasesPartitionAndLeasesAtOnce) {
  StartServer();
  CreateTopic("leave", 2);
  auto r = Call("POST", "/v1/topics/leave/groups", R"({"name":"g","lease_ms":600000})");
  ASSERT_EQ(r.status, 201) << r.body;
  for (int i = 0; i < 4; ++i) Publish("leave", "e" + std::to_string(i));
  std::vector<Delivery> a;
  for (int i = 0; i < 10 && a.size() < 4; ++i) {
    for (Delivery& d : FetchAs("leave", "g", "a", 200)) a.push_back(std::move(d));
  }
  ASSERT_EQ(a.size(), 4u);
  r = Call("POST", "/v1/topics/leave/groups/g/leave", R"({"consumer":"a"})");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(Field(r.body, "left"), "true") << r.body;
  // "b" is now the only member: both partitions, every event at once, and a graceful leave
  // does not use up an attempt.
  std::vector<Delivery> b;
  const auto start = Clock::now();
  while (b.size() < 4 && MsSince(start) < 5'000) {
    for (Delivery& d : FetchAs("leave", "g", "b", 200)) b.push_back(std::move(d));
  }
  ASSERT_EQ(b.size(), 4u);
  for (const Delivery& d : b) EXPECT_EQ(d.attempt, 1u);
  // Leaving again (or as someone who never joined) is not an error.
  r = Call("POST", "/v1/topics/leave/groups/g/leave", R"({"consumer":"a"})");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(Field(r.body, "left"), "false") << r.body;
  // Bad input.
  EXPECT_EQ(Call("POST", "/v1/topics/leave/groups/g/leave", R"({"consumer":"a b"})").status, 400);
  EXPECT_EQ(Call("POST", "/v1/topics/leave/groups/g/leave", R"({"consumer":7})").status, 400);
  EXPECT_EQ(Call("POST", "/v1/topics/leave/groups/g/leave", R"({"member":"a"})").status, 400);
  EXPECT_EQ(Call("POST", "/v1/topics/leave/groups/g/leave", "[1]").status, 400);
  EXPECT_EQ(Call("POST", "/v1/topics/leave/groups/nope/leave", R"({"consumer":"a"})").status, 404);
}

TEST_F(GroupsTest, SessionTimeoutIsAGroupOptionAndIsHonoured) {
  StartServer();
  CreateTopic("sessions");
  auto r = Call("POST", "/v1/topics/sessions/groups",
                R"({"name":"g","lease_ms":600000,"session_timeout_ms":1000})");
  ASSERT_EQ(r.status, 201) << r.body;
  EXPECT_EQ(Field(r.body, "session_timeout_ms"), "1000") << r.body;
  Publish("sessions", "e1");
  ASSERT_EQ(FetchAs("sessions", "g", "a", 2000).size(), 1u);
  // "a" goes silent: after its session (1 s) "b" gets the partition and the event, whose
  // lease ended with a's session (a failed attempt).
  const auto start = Clock::now();
  std::vector<Delivery> got;
  while (got.empty() && MsSince(start) < 15'000) got = FetchAs("sessions", "g", "b", 200);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].attempt, 2u);
  EXPECT_LT(MsSince(start), 8'000);

  // Validated with clear errors.
  for (const char* bad :
       {R"({"name":"h","session_timeout_ms":0})", R"({"name":"h","session_timeout_ms":99})",
        R"({"name":"h","session_timeout_ms":86400001})",
        R"({"name":"h","session_timeout_ms":"1000"})",
        R"({"name":"h","session_timeout_ms":1.5})"}) {
    r = Call("POST", "/v1/topics/sessions/groups", bad);
    EXPECT_EQ(r.status, 400) << bad << " -> " << r.body;
    EXPECT_NE(r.body.find("session_timeout_ms"), std::string::npos) << r.body;
  }
}

// A consumer that is waiting for events (a long poll, an idle stream) is still there: its
// session does not run out while it waits, however short the session timeout.
TEST_F(GroupsTest, WaitingConsumersKeepTheirSessionsAlive) {
  StartServer();
  CreateTopic("waiting");
  auto r = Call("POST", "/v1/topics/waiting/groups",
                R"({"name":"g","lease_ms":600000,"session_timeout_ms":300})");
  ASSERT_EQ(r.status, 201) << r.body;
  Publish("waiting", "e1");
  std::vector<Delivery> got = FetchAs("waiting", "g", "a", 2000);
  ASSERT_EQ(got.size(), 1u);
  // A long poll five times the session: nothing new arrives, and e1 stays leased to "a".
  EXPECT_TRUE(FetchAs("waiting", "g", "a", 1500).empty());
  client::Lease lease = got[0].lease();
  client::AckResult acked = Must(client_->Ack("waiting", "g", std::span(&lease, 1), "a"));
  EXPECT_EQ(acked.acked, 1u);
  EXPECT_TRUE(acked.lost.empty());

  // The same for a stream that has nothing to send (its heartbeat is 15 s).
  Publish("waiting", "e2");
  client::SubscribeOptions options;
  options.consumer = "s";
  std::unique_ptr<client::Subscription> sub = Must(client_->Subscribe("waiting", "g", options));
  Result<std::optional<Delivery>> d = sub->Next(10'000);
  ASSERT_TRUE(d.ok() && d->has_value());
  Result<std::optional<Delivery>> none = sub->Next(1500);
  ASSERT_TRUE(none.ok());
  EXPECT_FALSE(none->has_value());
  lease = (*d)->lease();
  acked = Must(client_->Ack("waiting", "g", std::span(&lease, 1), "s"));
  EXPECT_EQ(acked.acked, 1u);
  EXPECT_TRUE(acked.lost.empty());
}

// With more consumers than partitions, most members own nothing and their long polls wait.
// A change that concerns one member (its acks, records in its partition) must not wake the
// others' long polls: before the fix every ack woke every long poll waiting on the group, and
// each made a fetch (a storage-pool hop) for nothing, so the work per ack grew with the number
// of waiting consumers (at 1024 consumers of 4 partitions the group delivered 7x less than at
// 64). Countable from outside: a member's idle time (idle_ms in the group's description)
// restarts with every fetch it makes, so a member whose long poll was not woken shows the
// whole time since the poll began. A member given a partition is still woken at once.
TEST_F(GroupsTest, AMembersAcksDoNotWakeTheOtherMembersLongPolls) {
  StartServer();
  CreateTopic("herd");  // one partition
  auto r = Call("POST", "/v1/topics/herd/groups", R"({"name":"g","lease_ms":600000})");
  ASSERT_EQ(r.status, 201) << r.body;
  std::vector<Event> events;
  for (int i = 0; i < 40; ++i) events.push_back(MakeEvent("h" + std::to_string(i)));
  ASSERT_TRUE(client_->Publish("herd", events).ok());
  // "a" joins first and sorts first: it owns the partition, the idle members own nothing.
  auto cycle = [&] {
    client::FetchOptions f;
    f.max_events = 1;
    f.consumer = "a";
    std::vector<Delivery> got = Must(client_->Fetch("herd", "g", f), "fetch");
    ASSERT_EQ(got.size(), 1u);
    const client::Lease lease = got[0].lease();
    client::AckResult acked = Must(client_->Ack("herd", "g", std::span(&lease, 1), "a"));
    ASSERT_EQ(acked.acked, 1u);
  };
  cycle();

  constexpr int kIdle = 40;
  constexpr int64_t kWaitMs = 6000;
  std::vector<std::vector<Delivery>> idle_got(kIdle);
  std::vector<int64_t> idle_ms_taken(kIdle, -1);
  std::vector<std::thread> idle;
  for (int i = 0; i < kIdle; ++i) {
    idle.emplace_back([&, i] {
      Client c = NewClient();
      client::FetchOptions f;
      f.max_events = 1;
      f.wait_ms = kWaitMs;
      f.consumer = "idle-" + std::string(i < 10 ? "0" : "") + std::to_string(i);
      const Clock::time_point start = Clock::now();
      Result<std::vector<Delivery>> got = c.Fetch("herd", "g", f);
      idle_ms_taken[i] = MsSince(start);
      if (got.ok()) idle_got[i] = std::move(got).value();
    });
  }
  // Every idle member joined (its long poll is waiting) ...
  const Clock::time_point joined_by = Clock::now() + std::chrono::seconds(10);
  std::string described;
  while (Clock::now() < joined_by) {
    described = Call("GET", "/v1/topics/herd/groups/g").body;
    size_t members = 0;
    for (size_t at = 0; (at = described.find("\"consumer\":\"idle-", at)) != std::string::npos;
         ++at) {
      ++members;
    }
    if (members == kIdle) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  // ... and has been waiting a while (the time its idle_ms must show if nothing woke it).
  std::this_thread::sleep_for(std::chrono::milliseconds(1200));
  for (int i = 0; i < 20; ++i) cycle();
  described = Call("GET", "/v1/topics/herd/groups/g").body;
  int checked = 0;
  for (size_t at = 0; (at = described.find("{\"consumer\":\"idle-", at)) != std::string::npos;
       ++at) {
    const std::string member = described.substr(at, described.find('}', at) - at + 1);
    const int64_t idle_ms = std::stoll(Field(member, "idle_ms"));
    EXPECT_GE(idle_ms, 1000) << "a long poll of " << Field(member, "consumer")
                             << " was woken by another member's acks: " << member;
    ++checked;
  }
  EXPECT_EQ(checked, kIdle) << described;

  // "a" leaves: the partition goes to "idle-00" (first by name), whose long poll is woken and
  // gets the next record long before its wait ends.
  r = Call("POST", "/v1/topics/herd/groups/g/leave", R"({"consumer":"a"})");
  ASSERT_EQ(r.status, 200) << r.body;
  for (std::thread& t : idle) t.join();
  ASSERT_EQ(idle_got[0].size(), 1u) << "idle-00 was not given the partition's records";
  EXPECT_LT(idle_ms_taken[0], kWaitMs - 1000);
  for (int i = 1; i < kIdle; ++i) EXPECT_TRUE(idle_got[i].empty()) << i;
}

// A long poll whose group is deleted under it makes the group again on its next look (as
// every fetch does) and must then wait on the new group: a record published into it wakes
// the poll at once. Before the fix the poll made the group again without watching it, and
// slept until its keep-alive or its deadline.
TEST_F(GroupsTest, ALongPollWhoseGroupIsDeletedWaitsOnTheGroupMadeAgain) {
  StartServer();
  CreateTopic("remade");  // empty: the group made again has nothing to deliver at once
  auto r = Call("POST", "/v1/topics/remade/groups",
                R"({"name":"g","session_timeout_ms":60000})");
  ASSERT_EQ(r.status, 201) << r.body;
  constexpr int64_t kWaitMs = 20'000;
  std::vector<Delivery> got;
  int64_t taken_ms = -1;
  std::thread poll([&] {
    Client c = NewClient();
    client::FetchOptions f;
    f.max_events = 10;
    f.wait_ms = kWaitMs;
    f.consumer = "a";
    const Clock::time_point start = Clock::now();
    Result<std::vector<Delivery>> fetched = c.Fetch("remade", "g", f);
    taken_ms = MsSince(start);
    if (fetched.ok()) got = std::move(fetched).value();
  });
  // The poll has joined (it is waiting) ...
  const Clock::time_point until = Clock::now() + std::chrono::seconds(10);
  while (Clock::now() < until &&
         Call("GET", "/v1/topics/remade/groups/g").body.find("\"consumer\":\"a\"") ==
             std::string::npos) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  // ... the group is deleted, and the woken poll makes it again (with "a" as its member).
  r = Call("DELETE", "/v1/topics/remade/groups/g");
  ASSERT_EQ(r.status, 200) << r.body;
  bool remade = false;
  while (Clock::now() < until && !remade) {
    remade = Call("GET", "/v1/topics/remade/groups/g").body.find("\"consumer\":\"a\"") !=
             std::string::npos;
    if (!remade) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  ASSERT_TRUE(remade) << "the long poll did not make its group again";
  const Clock::time_point published = Clock::now();
  Publish("remade", "after-delete");
  poll.join();
  ASSERT_EQ(got.size(), 1u) << "after " << taken_ms << " ms; the group now: "
                            << Call("GET", "/v1/topics/remade/groups/g").body
                            << "\nserver log:\n" << server_->Log();
  EXPECT_EQ(got[0].event->id(), "after-delete");
  EXPECT_LT(MsSince(published), 5000) << "the poll slept through the new group's record";
}

TEST_F(GroupsTest, DefaultSessionTimeoutComesFromTheConfiguration) {
  StartServer("groups:\n  session_timeout_ms: 1000\n  lease_ms: 600000\n");
  CreateTopic("auto");
  Publish("auto", "e1");
  ASSERT_EQ(FetchAs("auto", "g", "a", 2000).size(), 1u);  // creates the group
  const auto start = Clock::now();
  std::vector<Delivery> got;
  while (got.empty() && MsSince(start) < 15'000) got = FetchAs("auto", "g", "b", 200);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_LT(MsSince(start), 8'000);
}

TEST_F(GroupsTest, InvalidSessionTimeoutInTheConfigurationIsRefused) {
  server_ = std::make_unique<ServeProcess>("groups:\n  session_timeout_ms: 5\n");
  Status s = server_->Start();
  EXPECT_FALSE(s.ok());
  EXPECT_NE(server_->Log().find("groups.session_timeout_ms"), std::string::npos) << server_->Log();
}

// ---------------------------------------------------------------------------------------
// Dead-letter replay

TEST_F(GroupsTest, ReplayWithIncludeReplayedAppendsAgainAndCountsWhatWasAppended) {
  StartServer();
  CreateTopic("replay");
  auto r = Call("POST", "/v1/topics/replay/groups", R"({"name":"g","max_deliveries":1})");
  ASSERT_EQ(r.status, 201) << r.body;
  Publish("replay", "e1");
  std::vector<Delivery> got = FetchAs("replay", "g", "a", 2000);
  ASSERT_EQ(got.size(), 1u);
  ASSERT_TRUE(client_->NackOne("replay", "g", {got[0].lease(), 0, true, "no"}).ok());
  ASSERT_EQ(TopicEnd("replay"), 1u);

  r = Call("POST", "/v1/topics/replay/groups/g/dead-letters/replay", "{}");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(Field(r.body, "replayed"), "1") << r.body;
  EXPECT_EQ(TopicEnd("replay"), 2u);

  r = Call("POST", "/v1/topics/replay/groups/g/dead-letters/replay", "{}");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(Field(r.body, "replayed"), "0") << r.body;
  EXPECT_EQ(Field(r.body, "skipped_already_replayed"), "1") << r.body;
  EXPECT_EQ(TopicEnd("replay"), 2u);

  for (uint64_t round = 0; round < 2; ++round) {
    r = Call("POST", "/v1/topics/replay/groups/g/dead-letters/replay",
             R"({"include_replayed":true})");
    ASSERT_EQ(r.status, 200) << r.body;
    EXPECT_EQ(Field(r.body, "replayed"), "1") << r.body;
    EXPECT_EQ(TopicEnd("replay"), 3u + round);
  }
  // The replayed copies are delivered (the original was dead-lettered).
  std::vector<Delivery> back;
  const auto start = Clock::now();
  while (back.size() < 3 && MsSince(start) < 5'000) {
    for (Delivery& d : FetchAs("replay", "g", "a", 200)) {
      client::Lease l = d.lease();
      ASSERT_TRUE(client_->Ack("replay", "g", std::span<const client::Lease>(&l, 1)).ok());
      back.push_back(std::move(d));
    }
  }
  EXPECT_EQ(back.size(), 3u);
}

constexpr char kAuthConfig[] = R"(
auth:
  tokens:
    - service: reader
      token: reader-token-0123456789
      subscribe: ["orders"]
    - service: ops
      token: ops-token-0123456789abcd
      admin: true
)";

// Authorization comes before validation on every group route: a caller without permission
// learns nothing about its body.
// A replay is a publish from outside: it may not append into a topic converge writes itself
// (the store's change feed, a saga participant's command topic, internal '_' topics such as
// dead letters), whether that topic is the chosen target or the group's own topic. The answer
// is the publish path's (403 SYSTEM_TOPIC) and nothing is appended or marked. Before the fix
// the replay appended there: a forged change event or saga command. Creating such a topic
// over HTTP is refused the same way (converge creates them with the options it needs).
TEST_F(GroupsTest, ReplayAndTopicCreationRefuseSystemTopics) {
  StartServer();
  // A saga definition makes "shipping" a command topic (the orchestrator creates it).
  auto r = Call("POST", "/v1/saga-definitions",
                "name: ship\nversion: 1\nsteps:\n  - name: s\n    participant: shipping\n"
                "    action: shipping.go\n    pivot: true\n    timeout_ms: 60000\n");
  ASSERT_EQ(r.status, 201) << r.body;
  // Topic creation: system-owned names are refused whether they exist yet or not (the store's
  // feed does not exist before the first write).
  for (const std::string name : {"store-changes", "shipping", "_private", "_dlq.a.b"}) {
    r = Call("POST", "/v1/topics", R"({"name":")" + name + R"("})");
    EXPECT_EQ(r.status, 403) << name << " -> " << r.body;
    EXPECT_EQ(Field(r.body, "code"), "SYSTEM_TOPIC") << name << " -> " << r.body;
  }
  CreateTopic("replay");  // an ordinary name is fine

  r = Call("POST", "/v1/topics/replay/groups", R"({"name":"g","max_deliveries":1})");
  ASSERT_EQ(r.status, 201) << r.body;
  Publish("replay", "e1");
  std::vector<Delivery> got = FetchAs("replay", "g", "a", 2000);
  ASSERT_EQ(got.size(), 1u);
  ASSERT_TRUE(client_->NackOne("replay", "g", {got[0].lease(), 0, true, "no"}).ok());
  const std::string replay = "/v1/topics/replay/groups/g/dead-letters/replay";
  for (const std::string target :
       {"store-changes", "shipping", "_dlq.replay.g", "_private", "_groups"}) {
    r = Call("POST", replay, R"({"target_topic":")" + target + R"("})");
    EXPECT_EQ(r.status, 403) << target << " -> " << r.body;
    EXPECT_EQ(Field(r.body, "code"), "SYSTEM_TOPIC") << target << " -> " << r.body;
  }
  EXPECT_EQ(TopicEnd("shipping"), 0u);
  r = Call("GET", "/v1/topics/replay/groups/g/dead-letters");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(Field(r.body, "replayed"), "false") << r.body;

  // A group on a system topic (reading the store's feed is fine) cannot replay into it either.
  ASSERT_EQ(Call("PUT", "/v1/collections/carts", "{}").status, 201);
  ASSERT_EQ(Call("PUT", "/v1/collections/carts/docs/c1", "{}").status, 201);  // creates the feed
  // The feed is published in the background: wait for its topic.
  for (const auto start = Clock::now(); MsSince(start) < 10'000;) {
    r = Call("POST", "/v1/topics/store-changes/groups", R"({"name":"audit","max_deliveries":1})");
    if (r.status != 404) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  ASSERT_EQ(r.status, 201) << r.body;
  got = FetchAs("store-changes", "audit", "a", 5000);
  ASSERT_FALSE(got.empty());
  for (const Delivery& d : got) {
    ASSERT_TRUE(client_->NackOne("store-changes", "audit", {d.lease(), 0, true, "no"}).ok());
  }
  const uint64_t feed_end = TopicEnd("store-changes");
  r = Call("POST", "/v1/topics/store-changes/groups/audit/dead-letters/replay", "{}");
  EXPECT_EQ(r.status, 403) << r.body;
  EXPECT_EQ(Field(r.body, "code"), "SYSTEM_TOPIC") << r.body;
  EXPECT_EQ(TopicEnd("store-changes"), feed_end);
  // To an ordinary topic it works.
  r = Call("POST", "/v1/topics/store-changes/groups/audit/dead-letters/replay",
           R"({"target_topic":"replay"})");
  EXPECT_EQ(r.status, 200) << r.body;

  // The other route that makes converge append to a caller-chosen topic: a saga definition's
  // participants get its commands. One naming the store's feed is refused; nothing is
  // registered, so no command can go there.
  const uint64_t feed_before = TopicEnd("store-changes");
  r = Call("POST", "/v1/saga-definitions",
           "name: feed\nversion: 1\nsteps:\n  - name: s\n    participant: store-changes\n"
           "    action: x.go\n    pivot: true\n    timeout_ms: 60000\n");
  EXPECT_EQ(r.status, 403) << r.body;
  EXPECT_EQ(Field(r.body, "code"), "SYSTEM_TOPIC") << r.body;
  r = Call("GET", "/v1/saga-definitions");
  EXPECT_EQ(r.body.find("\"feed\""), std::string::npos) << r.body;
  r = Call("POST", "/v1/sagas", R"({"definition":"feed","id":"s1","input":{}})");
  EXPECT_NE(r.status, 201) << r.body;
  EXPECT_EQ(TopicEnd("store-changes"), feed_before);
  // A second definition sharing "shipping" with the first is fine.
  r = Call("POST", "/v1/saga-definitions",
           "name: ship2\nversion: 1\nsteps:\n  - name: s\n    participant: shipping\n"
           "    action: shipping.go\n    pivot: true\n    timeout_ms: 60000\n");
  EXPECT_EQ(r.status, 201) << r.body;
}

// The same for a definition loaded from the configuration: the server refuses to start.
TEST_F(GroupsTest, ConfiguredSagaDefinitionWithASystemTopicParticipantIsRefused) {
  auto probe = std::make_unique<ServeProcess>("");
  const std::string def_path = probe->dir() + "/feed.yaml";
  std::ofstream(def_path) << "name: feed\nversion: 1\nsteps:\n  - name: s\n"
                             "    participant: store-changes\n    action: x.go\n"
                             "    pivot: true\n    timeout_ms: 60000\n";
  server_ = std::make_unique<ServeProcess>("sagas:\n  definitions: [" + def_path + "]\n");
  EXPECT_FALSE(server_->Start().ok());
  EXPECT_NE(server_->Log().find("written only by the store"), std::string::npos)
      << server_->Log();
}

TEST_F(GroupsTest, GroupRoutesAuthorizeBeforeValidating) {
  server_ = std::make_unique<ServeProcess>(kAuthConfig);
  ASSERT_TRUE(server_->Start().ok());
  token_ = "ops-token-0123456789abcd";
  client_ = std::make_unique<Client>(server_->ClientOptions(token_));
  CreateTopic("orders");
  CreateTopic("other");
  const std::string reader = "reader-token-0123456789";
  // The reader may subscribe to "orders" but not publish there: a replay is refused (403)
  // whatever its body holds.
  for (const char* body : {R"({"bogus":1})", R"({"max_events":"x"})", R"({"max_events":0})",
                           R"({"to_offset":-1})", "{}"}) {
    auto r = Call("POST", "/v1/topics/orders/groups/g/dead-letters/replay", body, reader);
    EXPECT_EQ(r.status, 403) << body << " -> " << r.body;
  }
  // A topic the reader may not subscribe to: 403 on every group route, bad body or not.
  const std::vector<std::pair<std::string, std::string>> routes = {
      {"POST", "/v1/topics/other/groups"},
      {"POST", "/v1/topics/other/groups/g/fetch"},
      {"POST", "/v1/topics/other/groups/g/ack"},
      {"POST", "/v1/topics/other/groups/g/nack"},
      {"POST", "/v1/topics/other/groups/g/extend"},
      {"POST", "/v1/topics/other/groups/g/leave"},
      {"GET", "/v1/topics/other/groups/g/stream?max_events=zero"},
      {"GET", "/v1/topics/other/groups/g/dead-letters?limit=x"},
      {"POST", "/v1/topics/other/groups/g/dead-letters/replay"},
  };
  for (const auto& [method, target] : routes) {
    auto r = Call(method, target, method == "POST" ? R"({"bogus":true})" : "", reader);
    EXPECT_EQ(r.status, 403) << method << " " << target << " -> " << r.body;
  }
  // With permission, the same bad body is a 400.
  auto r = Call("POST", "/v1/topics/orders/groups/g/leave", R"({"bogus":true})", reader);
  EXPECT_EQ(r.status, 400) << r.body;
}

// ---------------------------------------------------------------------------------------
// Unknown groups, members and partitions

TEST_F(GroupsTest, UnknownGroupsAndPartitionsGetTheSameAnswerOnEveryRoute) {
  StartServer();
  CreateTopic("known", 2);
  auto r = Call("POST", "/v1/topics/known/groups", R"({"name":"g"})");
  ASSERT_EQ(r.status, 201) << r.body;
  const std::string lease7 = R"({"partition":7,"offset":0,"lease_id":"1"})";
  // No such group (on an existing topic) and no such topic: 404 everywhere except fetch and
  // stream, which create a missing group on an existing topic.
  for (const std::string topic : {"known", "missing"}) {
    const std::string base = "/v1/topics/" + topic + "/groups/nope";
    for (const auto& [method, path, body] :
         std::vector<std::tuple<std::string, std::string, std::string>>{
             {"POST", "/ack", R"({"acks":[]})"},
             {"POST", "/nack", R"({"nacks":[]})"},
             {"POST", "/extend", R"({"leases":[],"lease_ms":1000})"},
             {"POST", "/leave", "{}"},
             {"GET", "/dead-letters", ""},
             {"POST", "/dead-letters/replay", "{}"},
         }) {
      r = Call(method, base + path, body);
      EXPECT_EQ(r.status, 404) << method << " " << base + path << " -> " << r.body;
      EXPECT_EQ(Field(r.body, "code"), "NOT_FOUND") << r.body;
    }
  }
  r = Call("POST", "/v1/topics/missing/groups/nope/fetch", "{}");
  EXPECT_EQ(r.status, 404) << r.body;
  r = Call("GET", "/v1/topics/missing/groups/nope/stream");
  EXPECT_EQ(r.status, 404) << r.body;
  r = Call("POST", "/v1/topics/missing/groups", R"({"name":"g"})");
  EXPECT_EQ(r.status, 404) << r.body;
  // A partition the topic does not have: 400 for ack and nack alike, and nothing applied.
  r = Call("POST", "/v1/topics/known/groups/g/ack", "{\"acks\":[" + lease7 + "]}");
  EXPECT_EQ(r.status, 400) << r.body;
  r = Call("POST", "/v1/topics/known/groups/g/nack", "{\"nacks\":[" + lease7 + "]}");
  EXPECT_EQ(r.status, 400) << r.body;
  EXPECT_NE(r.body.find("partition 7"), std::string::npos) << r.body;
  r = Call("POST", "/v1/topics/known/groups/g/extend",
           "{\"lease_ms\":1000,\"leases\":[" + lease7 + "]}");
  EXPECT_EQ(r.status, 400) << r.body;
  EXPECT_NE(r.body.find("partition 7"), std::string::npos) << r.body;
}

// ---------------------------------------------------------------------------------------
// Lease extension

// A handler slower than the group's lease keeps its event by extending the lease: it is not
// redelivered meanwhile and the late ack is not lost. A lease that expired is not revived.
TEST_F(GroupsTest, ExtendedLeasesAreNotRedeliveredAndExpiredOnesAreNotRevived) {
  StartServer();
  CreateTopic("slow");
  auto r = Call("POST", "/v1/topics/slow/groups", R"({"name":"g","lease_ms":1500})");
  ASSERT_EQ(r.status, 201) << r.body;
  Publish("slow", "kept");
  Publish("slow", "dropped");
  const auto start = Clock::now();
  std::vector<Delivery> got = FetchAs("slow", "g", "worker", 2000);
  ASSERT_EQ(got.size(), 2u);
  const Delivery& kept = got[0].event->id() == "kept" ? got[0] : got[1];
  const Delivery& dropped = got[0].event->id() == "kept" ? got[1] : got[0];
  auto lease_json = [](const Delivery& d, uint64_t lease_id) {
    return "{\"partition\":" + std::to_string(d.partition) +
           ",\"offset\":" + std::to_string(d.offset) + ",\"lease_id\":\"" +
           std::to_string(lease_id) + "\"}";
  };
  // One lease of this delivery and one that never existed.
  r = Call("POST", "/v1/topics/slow/groups/g/extend",
           "{\"consumer\":\"worker\",\"lease_ms\":8000,\"leases\":[" +
               lease_json(kept, kept.lease_id) + "," + lease_json(dropped, dropped.lease_id + 99) +
               "]}");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(Field(r.body, "extended"), "1") << r.body;
  EXPECT_NE(r.body.find("\"lost\":[1]"), std::string::npos) << r.body;
  EXPECT_EQ(Field(r.body, "lease_id"), std::to_string(kept.lease_id)) << r.body;
  const int64_t expires_ms = std::stoll(Field(r.body, "lease_expires_at_ms"));
  EXPECT_GT(expires_ms, kept.lease_expires_at_ms + 4000) << r.body;
  // Until well past the first expiry (1.5 s): the event not extended comes again (acked at
  // once), the extended one never.
  std::vector<Delivery> again;
  while (MsSince(start) < 4000) {
    for (Delivery& d : FetchAs("slow", "g", "worker", 500)) {
      const std::vector<client::Lease> one = {d.lease()};
      EXPECT_EQ(Must(client_->Ack("slow", "g", one, "worker")).acked, 1u);
      again.push_back(std::move(d));
    }
  }
  ASSERT_LT(MsSince(start), 7000) << "too slow to tell an extension from an expiry";
  ASSERT_EQ(again.size(), 1u);
  EXPECT_EQ(again[0].event->id(), "dropped");
  EXPECT_EQ(again[0].attempt, 2u);
  // The expired lease is lost, not revived; the extended one still acks.
  r = Call("POST", "/v1/topics/slow/groups/g/extend",
           "{\"lease_ms\":8000,\"leases\":[" + lease_json(dropped, dropped.lease_id) + "]}");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(Field(r.body, "extended"), "0") << r.body;
  EXPECT_NE(r.body.find("\"leases\":[]"), std::string::npos) << r.body;
  // The same through the C++ client.
  const std::vector<client::Lease> pair = {dropped.lease(), kept.lease()};
  client::ExtendResult ext = Must(client_->ExtendLeases("slow", "g", pair, 8000, "worker"));
  EXPECT_EQ(ext.extended, 1u);
  EXPECT_EQ(ext.lost, std::vector<size_t>{0});
  const std::vector<client::Lease> late = {kept.lease()};
  client::AckResult acked = Must(client_->Ack("slow", "g", late, "worker"));
  EXPECT_EQ(acked.acked, 1u);
  EXPECT_TRUE(acked.lost.empty());
  EXPECT_TRUE(FetchAs("slow", "g", "worker", 200).empty());
}

// Every option a topic is created with reads back, the dedup window included.
TEST_F(GroupsTest, TopicDescriptionsShowTheDedupWindowAndSyncInterval) {
  StartServer();
  auto r =
      Call("POST", "/v1/topics",
           R"({"name":"dd","durability":"interval","sync_interval_ms":77,"dedup_window_ms":1234})");
  ASSERT_EQ(r.status, 201) << r.body;
  EXPECT_EQ(Field(r.body, "dedup_window_ms"), "1234") << r.body;
  CreateTopic("plain");
  r = Call("GET", "/v1/topics/dd");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(Field(r.body, "dedup_window_ms"), "1234") << r.body;
  // JetStream does not fsync each message: there a topic reads back as what the engine does
  // (nats-server's sync interval, docs/formats/jetstream.md), whatever was asked.
  EXPECT_EQ(Field(r.body, "sync_interval_ms"), TestBackendIs("jetstream") ? "120000" : "77")
      << r.body;
  r = Call("GET", "/v1/topics/plain");
  EXPECT_EQ(Field(r.body, "dedup_window_ms"), "600000") << r.body;  // topic_defaults
  r = Call("GET", "/v1/topics");
  EXPECT_NE(r.body.find("\"dedup_window_ms\":1234"), std::string::npos) << r.body;
  EXPECT_NE(r.body.find("\"dedup_window_ms\":600000"), std::string::npos) << r.body;
}

// ---------------------------------------------------------------------------------------
// Names

// The longest topic and group names can have a group (and a dead-letter topic).
TEST_F(GroupsTest, LongestTopicAndGroupNamesCanHaveGroupsAndDeadLetters) {
  StartServer();
  const std::string group(64, 'g');
  for (size_t len : {195u, 200u}) {
    const std::string topic(len, 't');
    CreateTopic(topic);
    Publish(topic, "e1");
    std::vector<Delivery> got = FetchAs(topic, group, "a", 2000);
    ASSERT_EQ(got.size(), 1u) << len;
    ASSERT_TRUE(client_->NackOne(topic, group, {got[0].lease(), 0, true, "no"}).ok());
    client::DeadLetterList dl = Must(client_->ListDeadLetters(topic, group));
    ASSERT_EQ(dl.dead_letters.size(), 1u);
    EXPECT_EQ(dl.dead_letters[0].event->id(), "e1");
    auto r =
        Call("POST", "/v1/topics/" + topic + "/groups/" + group + "/dead-letters/replay", "{}");
    ASSERT_EQ(r.status, 200) << r.body;
    EXPECT_EQ(Field(r.body, "replayed"), "1") << r.body;
    // Another group on the same topic gets its own dead-letter topic.
    const std::string group2 = std::string(63, 'g') + "h";
    got = FetchAs(topic, group2, "a", 2000);
    ASSERT_EQ(got.size(), 2u);
    ASSERT_TRUE(client_->NackOne(topic, group2, {got[0].lease(), 0, true, "no"}).ok());
    EXPECT_EQ(Must(client_->ListDeadLetters(topic, group2)).dead_letters.size(), 1u);
    EXPECT_EQ(Must(client_->ListDeadLetters(topic, group)).dead_letters.size(), 1u);
  }
  // Too long: a clear error naming the limit.
  auto r = Call("POST", "/v1/topics/" + std::string(201, 't') + "/groups/g/fetch", "{}");
  EXPECT_EQ(r.status, 400);
  EXPECT_NE(r.body.find("1..200"), std::string::npos) << r.body;
  r = Call("POST",
           "/v1/topics/" + std::string(200, 't') + "/groups/" + std::string(65, 'g') + "/fetch",
           "{}");
  EXPECT_EQ(r.status, 400);
  EXPECT_NE(r.body.find("1..64"), std::string::npos) << r.body;
}

// ---------------------------------------------------------------------------------------
// Bodies and query parameters

TEST_F(GroupsTest, GroupBodiesAndQueryParametersAreParsedStrictly) {
  StartServer();
  CreateTopic("strict");
  auto r = Call("POST", "/v1/topics/strict/groups", R"({"name":"g"})");
  ASSERT_EQ(r.status, 201) << r.body;
  const std::string g = "/v1/topics/strict/groups/g";
  const std::vector<std::pair<std::string, std::string>> bad = {
      {"/v1/topics/strict/groups", R"({"name":"h","bogus":1})"},
      {"/v1/topics/strict/groups", R"({"name":5})"},
      {"/v1/topics/strict/groups", R"({})"},
      {"/v1/topics/strict/groups", R"({"name":"h","lease_ms":"5"})"},
      {"/v1/topics/strict/groups", R"({"name":"h","lease_ms":1.5})"},
      {"/v1/topics/strict/groups", R"({"name":"h","max_deliveries":-1})"},
      {"/v1/topics/strict/groups", R"({"name":"h","max_in_flight":true})"},
      {"/v1/topics/strict/groups", R"({"name":"h","start":"middle"})"},
      {"/v1/topics/strict/groups", R"([])"},
      {g + "/fetch", R"({"bogus":1})"},
      {g + "/fetch", R"({"max_events":"1"})"},
      {g + "/fetch", R"({"max_events":0})"},
      {g + "/fetch", R"({"wait_ms":-1})"},
      {g + "/fetch", R"({"consumer":["a"]})"},
      {g + "/fetch", "{"},
      {g + "/ack", R"({"acks":[],"bogus":1})"},
      {g + "/ack", R"({"acks":{}})"},
      {g + "/ack", R"({})"},
      {g + "/ack", R"({"acks":[{"partition":0,"offset":0}]})"},
      {g + "/ack", R"({"acks":[{"partition":0,"offset":0,"lease_id":"x"}]})"},
      {g + "/ack", R"({"acks":[{"partition":0,"offset":-1,"lease_id":"1"}]})"},
      {g + "/ack", R"({"acks":[{"partition":0,"offset":0,"lease_id":"1","x":1}]})"},
      {g + "/ack", R"({"acks":[1]})"},
      {g + "/nack", R"({"nacks":[{"partition":0,"offset":0,"lease_id":"1","delay_ms":"5"}]})"},
      {g + "/nack", R"({"nacks":[{"partition":0,"offset":0,"lease_id":"1","permanent":1}]})"},
      {g + "/nack", R"({"nacks":[{"partition":0,"offset":0,"lease_id":"1","reason":5}]})"},
      {g + "/nack", R"({"nacks":[],"consumer":""})"},
      {g + "/extend", R"({"leases":[]})"},
      {g + "/extend", R"({"leases":[],"lease_ms":0})"},
      {g + "/extend", R"({"leases":[],"lease_ms":"5"})"},
      {g + "/extend", R"({"leases":[],"lease_ms":600001})"},
      {g + "/extend", R"({"leases":[],"lease_ms":1000,"bogus":1})"},
      {g + "/extend", R"({"lease_ms":1000})"},
      {g + "/extend", R"({"leases":[{"partition":0,"offset":0}],"lease_ms":1000})"},
      {g + "/extend",
       R"({"leases":[{"partition":0,"offset":0,"lease_id":"1","delay_ms":1}],"lease_ms":1000})"},
      {g + "/extend", R"({"leases":[],"lease_ms":1000,"consumer":""})"},
      {g + "/leave", R"({"consumer":""})"},
      {g + "/dead-letters/replay", R"({"bogus":1})"},
      {g + "/dead-letters/replay", R"({"include_replayed":"yes"})"},
      {g + "/dead-letters/replay", R"({"max_events":0})"},
      {g + "/dead-letters/replay", R"({"from_offset":-1})"},
      {g + "/dead-letters/replay", R"({"target_topic":5})"},
  };
  for (const auto& [target, body] : bad) {
    r = Call("POST", target, body);
    EXPECT_EQ(r.status, 400) << target << " " << body << " -> " << r.body;
  }
  for (const std::string query :
       {"limit=0", "limit=1x", "limit=", "limit=-1", "from_offset=0x1", "from_offset=+1",
        "limit=99999999999999999999999", "limt=5", "limit=1&limit=2"}) {
    r = Call("GET", g + "/dead-letters?" + query);
    EXPECT_EQ(r.status, 400) << query << " -> " << r.body;
  }
  for (const std::string query : {"max_events=0", "max_events=1.5", "max_events=", "auto_ack=yes",
                                  "consumer=a%20b", "max_event=5", "consumer=a&consumer=b"}) {
    r = Call("GET", g + "/stream?" + query);
    EXPECT_EQ(r.status, 400) << query << " -> " << r.body;
  }
  // Body routes take no query parameters (a body field sent there would be ignored).
  for (const std::string path :
       {"/fetch", "/ack", "/nack", "/extend", "/leave", "/dead-letters/replay"}) {
    r = Call("POST", g + path + "?wait_ms=1000", "{}");
    EXPECT_EQ(r.status, 400) << path << " -> " << r.body;
    EXPECT_NE(r.body.find("wait_ms"), std::string::npos) << r.body;
  }
  r = Call("POST", "/v1/topics/strict/groups?name=h", R"({"name":"h"})");
  EXPECT_EQ(r.status, 400) << r.body;
}

}  // namespace
}  // namespace converge
