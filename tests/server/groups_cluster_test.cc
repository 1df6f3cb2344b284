// Consumer groups shared by several `converge serve` processes (cluster.consumer_groups: shared,
// the default with cluster: and the JetStream log; docs/scaling.md, "Consumer groups across
// sidecars"): one nats-server, PostgreSQL for the leases and the group state, real processes
// driven over HTTP as consumers would.
//   - Members of one group connected to different sidecars fetch and ack concurrently: each
//     sidecar forwards to the one running the group, members through both get partitions,
//     no event is acked twice. The owner is SIGKILLed mid-consumption: the other takes the
//     group over (the time is printed), nothing whose ack was answered before the kill is
//     delivered again, nothing is skipped, and the dead letters are kept.
//   - A sidecar joining takes over some groups (rebalance) with their state: acked events are
//     not delivered again through it.
#include <gtest/gtest.h>
#include <signal.h>

#include <atomic>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>
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

#include "converge/client.h"
#include "converge/event.h"
#include "serve_process.h"
#include "support/nats_server.h"
#include "support/postgres_server.h"
#include "test_util.h"

namespace converge {
namespace {

namespace json = boost::json;
using Clock = std::chrono::steady_clock;

constexpr int64_t kTtlMs = 2000;  // renew every ttl/3, margin ttl/5

template <typename Fn>
bool Eventually(Fn fn, int64_t ms) {
  const auto deadline = Clock::now() + std::chrono::milliseconds(ms);
  while (Clock::now() < deadline) {
    if (fn()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return fn();
}

double SecondsSince(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

class GroupsClusterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto pg = testing::PostgresServer::Start();
    ASSERT_TRUE(pg.ok()) << pg.status().ToString();
    pg_ = std::move(pg).value();
    auto nats = testing::NatsCluster::Start(testing::NatsClusterOptions{});
    ASSERT_TRUE(nats.ok()) << nats.status().ToString();
    nats_ = std::move(nats).value();
  }

  // Every sidecar: the same log (stream prefix), lease table and group state. No key for the
  // groups: sharing them is the default here.
  std::string Config(const std::string& instance, const std::string& prefix) const {
    return "log:\n  backend: jetstream\n  jetstream:\n    servers: [" + nats_->Url(0) +
           "]\n    stream_prefix: " + prefix +
           "\nstore:\n  enabled: false\nsagas:\n  enabled: false\n"
           "cluster:\n  instance_id: " +
           instance + "\n  postgres_conninfo: \"" + pg_->ConnInfo() +
           "\"\n  lease_ttl_ms: " + std::to_string(kTtlMs) + "\n";
  }

  static testing::HttpResult Post(uint16_t port, const std::string& target,
                                  const std::string& body) {
    return testing::HttpCall(port, "POST", target, body, {{"Content-Type", "application/json"}});
  }

  // A request that may meet a dead sidecar: status 0 for no answer (no test failure).
  static testing::HttpResult TryGet(uint16_t port, const std::string& target) {
    client::Options o;
    o.port = port;
    o.timeout_ms = 10'000;
    client::Client c(o);
    client::HttpRequest req;
    req.method = "GET";
    req.target = target;
    testing::HttpResult out;
    Result<client::HttpResponse> r = c.Send(req);
    if (r.ok()) {
      out.status = r->status;
      out.body = r->body;
    }
    return out;
  }
  static testing::HttpResult TryPost(uint16_t port, const std::string& target,
                                     const std::string& body) {
    client::Options o;
    o.port = port;
    o.timeout_ms = 10'000;
    client::Client c(o);
    client::HttpRequest req;
    req.method = "POST";
    req.target = target;
    req.headers = {{"Content-Type", "application/json"}};
    req.body = body;
    testing::HttpResult out;
    Result<client::HttpResponse> r = c.Send(req);
    if (r.ok()) {
      out.status = r->status;
      out.body = r->body;
    }
    return out;
  }

  // The value of one sample of /metrics (-1: not found or no answer).
  static double Metric(uint16_t port, const std::string& sample) {
    testing::HttpResult r = testing::HttpCall(port, "GET", "/metrics");
    const size_t at = r.body.find("\n" + sample + " ");
    if (at == std::string::npos) return -1;
    return std::strtod(r.body.c_str() + at + sample.size() + 2, nullptr);
  }
  static bool Owns(uint16_t port, const std::string& topic, const std::string& group) {
    return Metric(port, "converge_group_owned{topic=\"" + topic + "\",group=\"" + group + "\"}") ==
           1;
  }

  static void Publish(uint16_t port, const std::string& topic, int from, int to) {
    client::Options o;
    o.port = port;
    client::Client c(o);
    for (int n = from; n < to; ++n) {
      Event e;
      e.set_id("ev-" + std::to_string(n));
      e.set_source("/test");
      e.set_type("t");
      std::string subject = "k";
      subject += std::to_string(n % 32);
      e.set_subject(subject);
      Result<client::Published> p = c.PublishOne(topic, e);
      ASSERT_TRUE(p.ok()) << p.status().ToString();
    }
  }

  std::unique_ptr<testing::PostgresServer> pg_;
  std::unique_ptr<testing::NatsCluster> nats_;
};

// What the consumers saw, shared by their threads.
struct Observed {
  std::mutex mu;
  // id -> times a fetch answered with it (and when, and through which sidecar).
  std::map<std::string, std::vector<std::pair<Clock::time_point, int>>> deliveries;
  std::map<std::string, Clock::time_point> acked;  // ack answered 200, not lost: first time
  std::map<std::string, int> acked_count;
  std::set<std::string> dead_lettered;  // permanent nack answered 200
  // Acks and nacks not answered 200 (the sidecar was killed, or forwarded them to the owner
  // being killed): their outcome is unknown (committed or not); such an event is either
  // delivered again or was committed (then the group's position shows it).
  std::set<std::string> unknown;
  // Partitions delivered through each sidecar before the kill.
  std::map<int, std::set<int64_t>> partitions_by_node;
  std::atomic<Clock::time_point::rep> first_fetch_after_kill{0};
};

std::string Name(int g) {
  std::string name = "g";
  name += std::to_string(g);
  return name;
}

bool Poison(const std::string& id) { return std::stoi(id.substr(3)) % 50 == 7; }

TEST_F(GroupsClusterTest, MembersOnTwoSidecarsShareOneGroupAndSurviveSigkillOfTheOwner) {
  testing::ServeProcess a(Config("a", "gcluster"));
  testing::ServeProcess b(Config("b", "gcluster"));
  ASSERT_TRUE(a.Start().ok()) << a.Log();
  ASSERT_TRUE(b.Start().ok()) << b.Log();
  const uint16_t ports[2] = {a.port(), b.port()};

  ASSERT_EQ(Post(a.port(), "/v1/topics", R"({"name":"orders","partitions":4})").status, 201);
  constexpr int kEvents = 600;
  Publish(a.port(), "orders", 0, kEvents / 2);
  Publish(b.port(), "orders", kEvents / 2, kEvents);
  // Created through one sidecar, whichever runs it.
  testing::HttpResult created =
      Post(b.port(), "/v1/topics/orders/groups",
           R"({"name":"workers","lease_ms":10000,"max_deliveries":5,"session_timeout_ms":5000})");
  ASSERT_EQ(created.status, 201) << created.body << a.Log() << b.Log();

  Observed seen;
  std::atomic<bool> stop{false};
  std::atomic<bool> killed{false};
  std::atomic<bool> dead[2] = {false, false};
  Clock::time_point kill_time;
  std::atomic<int> killed_node{-1};

  // Four members: two connect to a, two to b; a member whose sidecar dies goes to the other.
  // The members on the sidecar running the group start once the other's have each had a
  // first answer, which joined them: a forwarded first fetch can take longer than the owner's
  // own members need to drain the topic (it does under ThreadSanitizer), and the test is of
  // members on both sidecars sharing the group.
  const int forwarding_node = Owns(a.port(), "orders", "workers") ? 1 : 0;
  std::atomic<int> answered_through_forwarder{0};
  auto member = [&](std::string name, int node) {
    if (node != forwarding_node) {
      const auto until = Clock::now() + std::chrono::seconds(30);
      while (answered_through_forwarder.load() < 2 && Clock::now() < until && !stop.load()) {
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
      }
    }
    bool answered = false;
    while (!stop.load()) {
      if (dead[node].load()) node = 1 - node;
      const auto started = Clock::now();
      const bool after_kill = killed.load();
      testing::HttpResult r =
          TryPost(ports[node], "/v1/topics/orders/groups/workers/fetch",
                  R"({"consumer":")" + name + R"(","max_events":20,"wait_ms":200})");
      if (r.status == 0) {
        if (killed.load() && node == killed_node.load()) dead[node] = true;
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
        continue;
      }
      if (r.status != 200) {  // 503 while the group changes hands
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
        continue;
      }
      if (after_kill && seen.first_fetch_after_kill.load() == 0) {
        Clock::time_point::rep expected = 0;
        seen.first_fetch_after_kill.compare_exchange_strong(expected,
                                                            started.time_since_epoch().count());
      }
      if (!answered) {
        answered = true;
        if (node == forwarding_node) ++answered_through_forwarder;
      }
      json::value v = json::parse(r.body);
      std::string acks = "{\"consumer\":\"" + name + "\",\"acks\":[";
      std::string nacks = "{\"consumer\":\"" + name + "\",\"nacks\":[";
      std::vector<std::string> ack_ids, nack_ids;
      {
        std::lock_guard<std::mutex> lock(seen.mu);
        for (const json::value& d : v.at("deliveries").as_array()) {
          const std::string id(d.at("event").at("id").as_string());
          seen.deliveries[id].push_back({Clock::now(), node});
          if (!killed.load()) seen.partitions_by_node[node].insert(d.at("partition").as_int64());
          const std::string lease = "{\"partition\":" + json::serialize(d.at("partition")) +
                                    ",\"offset\":" + json::serialize(d.at("offset")) +
                                    ",\"lease_id\":" + json::serialize(d.at("lease_id"));
          if (Poison(id)) {
            if (!nack_ids.empty()) nacks += ',';
            nacks += lease + ",\"permanent\":true,\"reason\":\"poison\"}";
            nack_ids.push_back(id);
          } else {
            if (!ack_ids.empty()) acks += ',';
            acks += lease + "}";
            ack_ids.push_back(id);
          }
        }
      }
      if (!ack_ids.empty()) {
        testing::HttpResult ar =
            TryPost(ports[node], "/v1/topics/orders/groups/workers/ack", acks + "]}");
        if (ar.status == 200) {
          json::value av = json::parse(ar.body);
          std::set<size_t> lost;
          for (const json::value& i : av.at("lost").as_array()) lost.insert(i.to_number<size_t>());
          std::lock_guard<std::mutex> lock(seen.mu);
          for (size_t i = 0; i < ack_ids.size(); ++i) {
            if (lost.count(i)) continue;
            seen.acked.emplace(ack_ids[i], Clock::now());
            seen.acked_count[ack_ids[i]]++;
          }
        } else {
          // No answer (the sidecar died), or a 503 from a sidecar whose forward to the dying
          // owner got no answer: the ack may or may not have been made durable.
          std::lock_guard<std::mutex> lock(seen.mu);
          for (const std::string& id : ack_ids) seen.unknown.insert(id);
        }
      }
      if (!nack_ids.empty()) {
        testing::HttpResult nr =
            TryPost(ports[node], "/v1/topics/orders/groups/workers/nack", nacks + "]}");
        if (nr.status == 200) {
          std::lock_guard<std::mutex> lock(seen.mu);
          for (const std::string& id : nack_ids) seen.dead_lettered.insert(id);
        } else {
          std::lock_guard<std::mutex> lock(seen.mu);
          for (const std::string& id : nack_ids) seen.unknown.insert(id);
        }
      }
    }
  };
  std::vector<std::thread> members;
  // The members stop and are joined however the test body ends.
  struct Joiner {
    std::atomic<bool>& stop;
    std::vector<std::thread>& threads;
    ~Joiner() {
      stop = true;
      for (auto& t : threads) {
        if (t.joinable()) t.join();
      }
    }
  } joiner{stop, members};
  members.emplace_back(member, "m0", 0);
  members.emplace_back(member, "m1", 0);
  members.emplace_back(member, "m2", 1);
  members.emplace_back(member, "m3", 1);

  auto acked = [&] {
    std::lock_guard<std::mutex> lock(seen.mu);
    return seen.acked.size();
  };
  // Mid-consumption: the sidecar running the group dies.
  ASSERT_TRUE(Eventually([&] { return acked() >= kEvents / 3; }, 30'000)) << acked();
  const bool a_owns = Owns(a.port(), "orders", "workers");
  const bool b_owns = Owns(b.port(), "orders", "workers");
  EXPECT_NE(a_owns, b_owns) << "exactly one sidecar runs the group";
  const int owner = b_owns ? 1 : 0;
  testing::ServeProcess& owner_process = owner == 0 ? a : b;
  testing::ServeProcess& survivor = owner == 0 ? b : a;
  // The other sidecar forwarded its members' requests to the owner.
  EXPECT_GT(Metric(survivor.port(), "converge_group_forwards_total{outcome=\"ok\"}"), 0);
  std::map<std::string, Clock::time_point> acked_before_kill;
  {
    std::lock_guard<std::mutex> lock(seen.mu);
    acked_before_kill = seen.acked;
  }
  killed_node = owner;
  kill_time = Clock::now();
  killed = true;
  owner_process.Kill();
  dead[owner] = true;

  // Done when every event is settled: acked or dead-lettered as answered, or settled by an
  // ack whose answer was lost, which the group's position then shows (no lag, nothing in
  // flight).
  auto settled = [&] {
    std::lock_guard<std::mutex> lock(seen.mu);
    size_t n = 0;
    for (int i = 0; i < kEvents; ++i) {
      const std::string id = "ev-" + std::to_string(i);
      if (seen.acked.count(id) || seen.dead_lettered.count(id) || seen.unknown.count(id)) ++n;
    }
    return n;
  };
  auto drained = [&] {
    testing::HttpResult d = TryGet(survivor.port(), "/v1/topics/orders/groups/workers");
    if (d.status != 200) return false;
    json::value v = json::parse(d.body);
    if (v.at("lag").as_int64() != 0) return false;
    for (const json::value& p : v.at("partitions").as_array()) {
      if (p.at("in_flight").as_int64() != 0) return false;
    }
    return true;
  };
  const bool done =
      Eventually([&] { return settled() >= static_cast<size_t>(kEvents) && drained(); }, 30'000);
  stop = true;
  for (auto& t : members) t.join();
  EXPECT_TRUE(done) << "drained " << drained() << ", acked " << seen.acked.size()
                    << ", dead-lettered " << seen.dead_lettered.size() << ", outcome unknown "
                    << seen.unknown.size() << " of " << kEvents << "\n"
                    << survivor.Log();

  const auto first = Clock::time_point(Clock::duration(seen.first_fetch_after_kill.load()));
  const double takeover = std::chrono::duration<double>(first - kill_time).count();
  std::printf(
      "group takeover: %.3f s from SIGKILL of the owner to the first fetch answered by the "
      "other sidecar (lease ttl %lld ms); %zu acked before the kill, %zu events in all\n",
      takeover, static_cast<long long>(kTtlMs), acked_before_kill.size(),
      static_cast<size_t>(kEvents));
  EXPECT_GT(takeover, 0);
  // ttl + renew interval + an acquire and the group's recovery, with room for a loaded machine.
  EXPECT_LT(takeover, 2 * kTtlMs / 1000.0 + 3);
  EXPECT_TRUE(Owns(survivor.port(), "orders", "workers"));

  // Members through both sidecars had partitions (before the kill).
  EXPECT_FALSE(seen.partitions_by_node[0].empty());
  EXPECT_FALSE(seen.partitions_by_node[1].empty());

  size_t redelivered_after_ack = 0, acked_twice = 0, missing = 0;
  for (int n = 0; n < kEvents; ++n) {
    const std::string id = "ev-" + std::to_string(n);
    if (Poison(id)) {
      if (!seen.dead_lettered.count(id) && !seen.unknown.count(id)) ++missing;
      continue;
    }
    auto it = seen.acked.find(id);
    if (it == seen.acked.end()) {
      // Settled by an ack whose answer was lost (the group has no lag left), or missing.
      if (!seen.unknown.count(id)) ++missing;
      continue;
    }
    if (seen.acked_count[id] > 1) ++acked_twice;
    // An ack answered before the kill is durable: the event is never delivered again.
    for (const auto& [when, node] : seen.deliveries[id]) {
      if (when > it->second) ++redelivered_after_ack;
    }
  }
  EXPECT_EQ(missing, 0u);
  EXPECT_EQ(acked_twice, 0u);
  EXPECT_EQ(redelivered_after_ack, 0u);
  size_t before_kill_redelivered = 0;
  for (const auto& [id, when] : acked_before_kill) {
    for (const auto& [t, node] : seen.deliveries[id]) {
      if (t > when) ++before_kill_redelivered;
    }
  }
  EXPECT_EQ(before_kill_redelivered, 0u);

  // The dead letters are kept: every poison event, listed through the survivor.
  testing::HttpResult dl = testing::HttpCall(
      survivor.port(), "GET", "/v1/topics/orders/groups/workers/dead-letters?limit=1000");
  ASSERT_EQ(dl.status, 200) << dl.body;
  std::set<std::string> listed;
  const json::value dl_body = json::parse(dl.body);
  for (const json::value& d : dl_body.at("dead_letters").as_array()) {
    listed.insert(std::string(d.at("event").at("id").as_string()));
  }
  std::set<std::string> poison;
  for (int n = 0; n < kEvents; ++n) {
    if (Poison("ev-" + std::to_string(n))) poison.insert("ev-" + std::to_string(n));
  }
  EXPECT_EQ(listed, poison);
}

TEST_F(GroupsClusterTest, AJoiningSidecarTakesOverSomeGroupsWithTheirState) {
  testing::ServeProcess a(Config("a", "gjoin"));
  ASSERT_TRUE(a.Start().ok()) << a.Log();
  ASSERT_EQ(Post(a.port(), "/v1/topics", R"({"name":"jobs","partitions":2})").status, 201);
  Publish(a.port(), "jobs", 0, 40);
  constexpr int kGroups = 8;
  auto group_path = [](int g) {
    std::string path = "/v1/topics/jobs/groups/g";
    path += std::to_string(g);
    return path;
  };
  // Half of each group's events fetched and acked through a, the only sidecar.
  std::map<int, std::set<std::string>> acked;
  for (int g = 0; g < kGroups; ++g) {
    ASSERT_EQ(Post(a.port(), "/v1/topics/jobs/groups",
                   R"({"name":"g)" + std::to_string(g) + R"(","lease_ms":60000})")
                  .status,
              201);
    while (acked[g].size() < 20) {
      testing::HttpResult r =
          Post(a.port(), group_path(g) + "/fetch",
               R"({"consumer":"c","max_events":)" + std::to_string(20 - acked[g].size()) + "}");
      ASSERT_EQ(r.status, 200) << r.body;
      std::string acks = R"({"consumer":"c","acks":[)";
      bool first = true;
      const json::value fetched = json::parse(r.body);
      for (const json::value& d : fetched.at("deliveries").as_array()) {
        acked[g].insert(std::string(d.at("event").at("id").as_string()));
        if (!first) acks += ',';
        first = false;
        acks += "{\"partition\":" + json::serialize(d.at("partition")) +
                ",\"offset\":" + json::serialize(d.at("offset")) +
                ",\"lease_id\":" + json::serialize(d.at("lease_id")) + "}";
      }
      ASSERT_EQ(Post(a.port(), group_path(g) + "/ack", acks + "]}").status, 200);
    }
    EXPECT_TRUE(Owns(a.port(), "jobs", Name(g)));
  }

  testing::ServeProcess b(Config("b", "gjoin"));
  ASSERT_TRUE(b.Start().ok()) << b.Log();
  const auto joined = Clock::now();
  // The rebalance gives b the groups its hash prefers; requests (through either sidecar) make
  // b run them.
  int moved = 0;
  ASSERT_TRUE(Eventually(
      [&] {
        moved = 0;
        bool each_runs_once = true;
        for (int g = 0; g < kGroups; ++g) {
          testing::HttpCall(a.port(), "GET", group_path(g));
          const bool on_a = Owns(a.port(), "jobs", Name(g));
          const bool on_b = Owns(b.port(), "jobs", Name(g));
          if (on_b) ++moved;
          if (on_a == on_b) each_runs_once = false;
        }
        return each_runs_once && moved > 0 && moved < kGroups;
      },
      20'000))
      << moved << " groups moved\n"
      << a.Log() << b.Log();
  std::printf("rebalance: %d of %d groups moved to the joining sidecar within %.3f s\n", moved,
              kGroups, SecondsSince(joined));
  // A stream is not relayed: the sidecar that does not run the group redirects to the one that
  // does.
  for (int g = 0; g < kGroups; ++g) {
    if (!Owns(b.port(), "jobs", Name(g))) continue;
    testing::HttpResult r =
        testing::HttpCall(a.port(), "GET", group_path(g) + "/stream?consumer=s");
    EXPECT_EQ(r.status, 307) << r.body;
    EXPECT_EQ(r.Header("Location"), "http://127.0.0.1:" + std::to_string(b.port()) + group_path(g) +
                                        "/stream?consumer=s");
    break;
  }
  // Listed and described through either sidecar, wherever each runs.
  for (uint16_t port : {a.port(), b.port()}) {
    testing::HttpResult list = testing::HttpCall(port, "GET", "/v1/topics/jobs/groups");
    ASSERT_EQ(list.status, 200) << list.body;
    const json::value listed = json::parse(list.body);
    std::set<std::string> names;
    for (const json::value& g : listed.at("groups").as_array()) {
      names.insert(std::string(g.at("name").as_string()));
    }
    EXPECT_EQ(names.size(), static_cast<size_t>(kGroups)) << list.body;
  }
  // Each group runs in exactly one of them, and the rest of each group's events (none acked
  // before) come through either sidecar, whichever runs it.
  for (int g = 0; g < kGroups; ++g) {
    const std::string name = Name(g);
    EXPECT_NE(Owns(a.port(), "jobs", name), Owns(b.port(), "jobs", name)) << name;
    std::set<std::string> rest;
    const uint16_t port = g % 2 == 0 ? a.port() : b.port();
    for (int tries = 0; tries < 50 && rest.size() < 20; ++tries) {
      testing::HttpResult r =
          Post(port, group_path(g) + "/fetch", R"({"consumer":"c","max_events":40})");
      if (r.status != 200) continue;
      const json::value fetched = json::parse(r.body);
      for (const json::value& d : fetched.at("deliveries").as_array()) {
        const std::string id(d.at("event").at("id").as_string());
        EXPECT_EQ(acked[g].count(id), 0u) << name << " delivered " << id << " again";
        rest.insert(id);
      }
    }
    EXPECT_EQ(rest.size(), 20u) << name;
  }
}

// An HTTP endpoint for push deliveries: answers 204 to every POST and counts the ce-id of each
// (binary mode). One thread per connection; the threads end with the process's sockets.
class PushReceiver {
 public:
  PushReceiver() : acceptor_(io_, {boost::asio::ip::make_address("127.0.0.1"), 0}) {
    port_ = acceptor_.local_endpoint().port();
    thread_ = std::thread([this] { Accept(); });
  }
  ~PushReceiver() {
    stopping_ = true;
    boost::system::error_code ec;
    boost::asio::ip::tcp::socket wake(io_);
    wake.connect(acceptor_.local_endpoint(), ec);
    thread_.join();
    // No connection is added after the accept thread ended. A shutdown (not a close, which
    // would rewrite the socket object a connection thread is reading through) wakes each
    // blocked read; the sockets close when they are destroyed, after their threads ended.
    // The threads take mu_ to count, so they are joined without holding it.
    for (auto& s : sockets_) s->shutdown(boost::asio::ip::tcp::socket::shutdown_both, ec);
    for (auto& t : connections_) t.join();
  }
  std::string url() const { return "http://127.0.0.1:" + std::to_string(port_) + "/events"; }
  std::map<std::string, int> received() {
    std::lock_guard<std::mutex> lock(mu_);
    return received_;
  }

 private:
  void Accept() {
    while (!stopping_) {
      auto socket = std::make_shared<boost::asio::ip::tcp::socket>(io_);
      boost::system::error_code ec;
      acceptor_.accept(*socket, ec);
      if (ec || stopping_) return;
      std::lock_guard<std::mutex> lock(mu_);
      sockets_.push_back(socket);
      connections_.emplace_back([this, socket] { Serve(*socket); });
    }
  }
  void Serve(boost::asio::ip::tcp::socket& socket) {
    namespace http = boost::beast::http;
    boost::beast::flat_buffer buffer;
    for (;;) {
      http::request<http::string_body> req;
      boost::system::error_code ec;
      http::read(socket, buffer, req, ec);
      if (ec) return;
      {
        std::lock_guard<std::mutex> lock(mu_);
        received_[std::string(req["ce-id"])]++;
      }
      http::response<http::empty_body> res{http::status::no_content, 11};
      res.keep_alive(req.keep_alive());
      http::write(socket, res, ec);
      if (ec || !req.keep_alive()) return;
    }
  }

  boost::asio::io_context io_;
  boost::asio::ip::tcp::acceptor acceptor_;
  uint16_t port_ = 0;
  std::atomic<bool> stopping_{false};
  std::thread thread_;
  std::mutex mu_;
  std::vector<std::shared_ptr<boost::asio::ip::tcp::socket>> sockets_;
  std::vector<std::thread> connections_;
  std::map<std::string, int> received_;
};

// The same push subscription configured on both sidecars delivers from the one running its
// group: every event once, none from both.
TEST_F(GroupsClusterTest, APushSubscriptionOnEverySidecarDeliversEachEventOnce) {
  PushReceiver receiver;
  const std::string sub =
      "subscriptions:\n  - name: hook\n    topic: orders\n    endpoint: " + receiver.url() +
      "\n    mode: binary\n    secret: 0123456789abcdef0123\n";
  testing::ServeProcess a(Config("a", "gpush") + sub);
  testing::ServeProcess b(Config("b", "gpush") + sub);
  ASSERT_TRUE(a.Start().ok()) << a.Log();
  ASSERT_TRUE(b.Start().ok()) << b.Log();
  ASSERT_EQ(Post(a.port(), "/v1/topics", R"({"name":"orders","partitions":2})").status, 201);
  constexpr int kEvents = 100;
  Publish(a.port(), "orders", 0, kEvents / 2);
  Publish(b.port(), "orders", kEvents / 2, kEvents);
  ASSERT_TRUE(Eventually([&] { return receiver.received().size() >= kEvents; }, 20'000))
      << receiver.received().size() << "\n"
      << a.Log() << b.Log();
  // A moment for a second delivery of anything to arrive.
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  size_t twice = 0;
  for (const auto& [id, n] : receiver.received()) twice += n > 1;
  EXPECT_EQ(receiver.received().size(), static_cast<size_t>(kEvents));
  EXPECT_EQ(twice, 0u);
  const bool on_a = Owns(a.port(), "orders", "push-hook");
  const bool on_b = Owns(b.port(), "orders", "push-hook");
  EXPECT_NE(on_a, on_b);
}

// Forwarding is no way around authorization: a sidecar that does not run the group refuses
// what the token may not do before forwarding anything (the owner checks again), and what the
// token may do works through either sidecar.
TEST_F(GroupsClusterTest, ForwardedGroupRequestsAreAuthorizedAtTheReceivingSidecar) {
  const std::string shop = "shop-token-0123456789";
  const std::string ops = "ops-token-0123456789ab";
  const std::string auth = "auth:\n  tokens:\n    - service: shop\n      token: \"" + shop +
                           "\"\n      publish: [\"orders\"]\n      subscribe: [\"orders\"]\n"
                           "    - service: ops\n      token: \"" +
                           ops + "\"\n      admin: true\n      subscribe: [\"secret\"]\n";
  testing::ServeProcess a(Config("a", "gauth") + auth);
  testing::ServeProcess b(Config("b", "gauth") + auth);
  ASSERT_TRUE(a.Start().ok()) << a.Log();
  ASSERT_TRUE(b.Start().ok()) << b.Log();
  const testing::HttpHeaders json_body = {{"Content-Type", "application/json"}};
  for (const char* topic : {"orders", "secret"}) {
    ASSERT_EQ(testing::HttpCall(a.port(), "POST", "/v1/topics",
                                std::string(R"({"name":")") + topic + R"("})", json_body, ops)
                  .status,
              201);
  }
  ASSERT_EQ(testing::HttpCall(a.port(), "POST", "/v1/topics/secret/groups", R"({"name":"g"})",
                              json_body, ops)
                .status,
            201);
  ASSERT_TRUE(Eventually(
      [&] { return Owns(a.port(), "secret", "g") != Owns(b.port(), "secret", "g"); }, 10'000));
  // The sidecar that does not run the group.
  const uint16_t other = Owns(a.port(), "secret", "g") ? b.port() : a.port();
  const std::string fetch = R"({"consumer":"x"})";
  testing::HttpResult r =
      testing::HttpCall(other, "POST", "/v1/topics/secret/groups/g/fetch", fetch, json_body, shop);
  EXPECT_EQ(r.status, 403) << r.body;
  // Claiming to be forwarded changes nothing.
  testing::HttpHeaders claimed = json_body;
  claimed.emplace_back("X-Converge-Forwarded", "a");
  r = testing::HttpCall(other, "POST", "/v1/topics/secret/groups/g/fetch", fetch, claimed, shop);
  EXPECT_EQ(r.status, 403) << r.body;
  r = testing::HttpCall(other, "GET", "/v1/topics/secret/groups/g", "", {}, shop);
  EXPECT_EQ(r.status, 403) << r.body;
  r = testing::HttpCall(other, "DELETE", "/v1/topics/secret/groups/g", "", {}, shop);
  EXPECT_EQ(r.status, 403) << r.body;
  r = testing::HttpCall(other, "POST", "/v1/topics/secret/groups/g/fetch", fetch, json_body);
  EXPECT_EQ(r.status, 401) << r.body;
  // Allowed: through either sidecar.
  for (uint16_t port : {a.port(), b.port()}) {
    r = testing::HttpCall(port, "POST", "/v1/topics/orders/groups/w/fetch", fetch, json_body, shop);
    EXPECT_EQ(r.status, 200) << r.body;
  }
  r = testing::HttpCall(other, "GET", "/v1/topics/secret/groups/g", "", {}, ops);
  EXPECT_EQ(r.status, 200) << r.body;
  r = testing::HttpCall(other, "DELETE", "/v1/topics/secret/groups/g", "", {}, ops);
  EXPECT_EQ(r.status, 200) << r.body;
}

// A topic whose groups run in both sidecars is described and deleted through either: the
// description lists every group (those running elsewhere described by their owner), the
// deletion deletes each group through the sidecar running it (with the caller's token), and
// a topic made again under the name starts its groups afresh. A group list that cannot be
// read (PostgreSQL down) is a 503, never a shorter list.
TEST_F(GroupsClusterTest, ATopicWithGroupsInBothSidecarsIsDescribedAndDeletedThroughEither) {
  const std::string ops = "ops-token-0123456789ab";
  const std::string auth =
      "auth:\n  tokens:\n    - service: ops\n      token: \"" + ops +
      "\"\n      admin: true\n      publish: [\"jobs\"]\n      subscribe: [\"jobs\"]\n";
  testing::ServeProcess a(Config("a", "gdelete") + auth);
  testing::ServeProcess b(Config("b", "gdelete") + auth);
  ASSERT_TRUE(a.Start().ok()) << a.Log();
  ASSERT_TRUE(b.Start().ok()) << b.Log();
  const testing::HttpHeaders json_body = {{"Content-Type", "application/json"}};
  auto call = [&](uint16_t port, const std::string& method, const std::string& target,
                  const std::string& body = "") {
    return testing::HttpCall(port, method, target, body,
                             body.empty() ? testing::HttpHeaders{} : json_body, ops);
  };
  ASSERT_EQ(call(a.port(), "POST", "/v1/topics", R"({"name":"jobs","partitions":2})").status, 201);
  auto publish = [&](const std::string& prefix, int n) {
    for (int i = 0; i < n; ++i) {
      const std::string body = R"({"specversion":"1.0","id":")" + prefix + std::to_string(i) +
                               R"(","source":"/t","type":"t","subject":"k)" +
                               std::to_string(i % 4) + R"("})";
      ASSERT_EQ(testing::HttpCall(a.port(), "POST", "/v1/topics/jobs/events", body,
                                  {{"Content-Type", "application/cloudevents+json"}}, ops)
                    .status,
                200);
    }
  };
  publish("old-", 20);
  // Fetches and acks everything the group gives, through `port`; the ids.
  auto consume = [&](uint16_t port, const std::string& group) {
    std::set<std::string> ids;
    for (int round = 0; round < 50; ++round) {
      testing::HttpResult r = call(port, "POST", "/v1/topics/jobs/groups/" + group + "/fetch",
                                   R"({"consumer":"c","max_events":100})");
      EXPECT_EQ(r.status, 200) << r.body;
      if (r.status != 200) break;
      const json::value v = json::parse(r.body);
      const json::array& deliveries = v.at("deliveries").as_array();
      if (deliveries.empty()) break;
      std::string acks = R"({"consumer":"c","acks":[)";
      for (size_t i = 0; i < deliveries.size(); ++i) {
        const json::value& d = deliveries[i];
        ids.insert(std::string(d.at("event").at("id").as_string()));
        if (i > 0) acks += ',';
        acks += "{\"partition\":" + json::serialize(d.at("partition")) +
                ",\"offset\":" + json::serialize(d.at("offset")) +
                ",\"lease_id\":" + json::serialize(d.at("lease_id")) + "}";
      }
      EXPECT_EQ(call(port, "POST", "/v1/topics/jobs/groups/" + group + "/ack", acks + "]}").status,
                200);
    }
    return ids;
  };
  // Groups until each sidecar runs at least one (the hash spreads them), each consumed to the
  // end, so each has committed positions.
  std::set<std::string> groups;
  bool on[2] = {false, false};
  for (int g = 0; g < 24 && !(on[0] && on[1]); ++g) {
    const std::string name = Name(g);
    ASSERT_EQ(call(g % 2 ? b.port() : a.port(), "POST", "/v1/topics/jobs/groups",
                   R"({"name":")" + name + R"(","lease_ms":60000})")
                  .status,
              201);
    groups.insert(name);
    EXPECT_EQ(consume(g % 2 ? a.port() : b.port(), name).size(), 20u);
    ASSERT_TRUE(Eventually(
        [&] { return Owns(a.port(), "jobs", name) != Owns(b.port(), "jobs", name); }, 10'000));
    on[Owns(a.port(), "jobs", name) ? 0 : 1] = true;
  }
  ASSERT_TRUE(on[0] && on[1]) << "the hash put every group in one sidecar";

  // Every group, through either sidecar, with the fields of its owner.
  for (uint16_t port : {a.port(), b.port()}) {
    testing::HttpResult r = call(port, "GET", "/v1/topics/jobs");
    ASSERT_EQ(r.status, 200) << r.body;
    std::set<std::string> listed;
    const json::value v = json::parse(r.body);
    for (const json::value& g : v.at("groups").as_array()) {
      listed.insert(std::string(g.at("name").as_string()));
      EXPECT_EQ(g.at("lag").as_int64(), 0) << json::serialize(g);
      EXPECT_EQ(g.at("lease_ms").as_int64(), 60000) << json::serialize(g);
      EXPECT_EQ(g.at("partitions").as_array().size(), 2u) << json::serialize(g);
      EXPECT_EQ(g.as_object().if_contains("consumers"), nullptr) << json::serialize(g);
    }
    EXPECT_EQ(listed, groups) << r.body;
  }

  // Deleted through a, whichever sidecar runs each group.
  testing::HttpResult deleted = call(a.port(), "DELETE", "/v1/topics/jobs");
  ASSERT_EQ(deleted.status, 200) << deleted.body << a.Log() << b.Log();
  std::set<std::string> gone;
  const json::value dv = json::parse(deleted.body);
  for (const json::value& g : dv.at("groups_deleted").as_array()) {
    gone.insert(std::string(g.as_string()));
  }
  EXPECT_EQ(gone, groups);
  EXPECT_EQ(call(b.port(), "GET", "/v1/topics/jobs").status, 404);

  // Made again under the same name: no group of the old topic is listed, and a group of an old
  // name starts from the new topic's beginning (no position of the old one applies).
  ASSERT_EQ(call(b.port(), "POST", "/v1/topics", R"({"name":"jobs","partitions":2})").status, 201);
  publish("new-", 12);
  testing::HttpResult listed = call(a.port(), "GET", "/v1/topics/jobs/groups");
  ASSERT_EQ(listed.status, 200) << listed.body;
  EXPECT_EQ(json::parse(listed.body).at("groups").as_array().size(), 0u) << listed.body;
  for (const std::string& name : groups) {
    ASSERT_EQ(
        call(a.port(), "POST", "/v1/topics/jobs/groups", R"({"name":")" + name + R"("})").status,
        201);
    std::set<std::string> ids = consume(b.port(), name);
    EXPECT_EQ(ids.size(), 12u) << name;
    for (const std::string& id : ids) EXPECT_EQ(id.rfind("new-", 0), 0u) << id;
  }

  // The shared list cannot be read: the description is refused, not shortened.
  ASSERT_TRUE(pg_->Stop().ok());
  for (uint16_t port : {a.port(), b.port()}) {
    EXPECT_EQ(call(port, "GET", "/v1/topics/jobs").status, 503);
    EXPECT_EQ(call(port, "GET", "/v1/topics/jobs/groups").status, 503);
  }
  ASSERT_TRUE(pg_->Restart().ok());
}

}  // namespace
}  // namespace converge
