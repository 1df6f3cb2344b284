// Multi-writer collections (`multi_writer:`, docs/formats/replica.md, "Multi-writer
// collections") with two real `converge serve` processes that both accept writes to the same
// keys and pull each other's origin log over GET /v1/multi-writer/{collection}/changes:
//   - a token that may not read the collection gets 403 and nothing from that route, before
//     its query is looked at; a node given such a token for its peer merges nothing;
//   - concurrent writes to the same keys on both nodes, SIGKILL of one node and then of the
//     other under that load, restarts, and both nodes converge to equal content, under lww
//     (one winner per key), multi-value (siblings, then resolved by a write naming them) and
//     crdt-fields (a g-counter field counting every acknowledged increment exactly once);
//   - anti-entropy (reconcile_interval_ms): a node restored from an older backup of its data
//     lost writes of its own that only its peer holds (the peer never sends them back: it
//     exports its own writes only); the reconciliation finds them and repairs by merging,
//     while both nodes keep writing, and no write made during the run is reverted.
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <boost/json/value.hpp>
#include <chrono>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "serve_process.h"
#include "test_util.h"

namespace converge {
namespace {

using testing::HttpCall;
using testing::HttpResult;
using testing::ServeProcess;
namespace json = boost::json;

const std::string kApp = "app-token-0123456789";
const std::string kPeer = "peer-token-0123456789";
const std::string kOther = "other-collection-token-0123456789";
constexpr int kKeys = 12;

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

double MetricValue(const std::string& text, const std::string& series) {
  size_t at = 0;
  while ((at = text.find(series + " ", at)) != std::string::npos) {
    if (at == 0 || text[at - 1] == '\n') return std::stod(text.substr(at + series.size() + 1));
    at += series.size();
  }
  return -1;
}

class MultiWriterServeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    port_[0] = FreePort();
    port_[1] = FreePort();
  }
  void TearDown() override {
    node_[0].reset();
    node_[1].reset();
    old_.clear();
  }

  std::string Config(int i) const {
    const int peer = 1 - i;
    std::string extra;
    if (policy_ == "crdt-fields") extra = "    crdt_fields: {n: g-counter}\n";
    return "store: {enabled: true}\n"
           "auth:\n"
           "  tokens:\n"
           "    - {service: app, token: " +
           kApp +
           "}\n"
           "    - {service: peer, token: " +
           kPeer +
           ", read_collections: [carts]}\n"
           "    - {service: other, token: " +
           kOther +
           ", read_collections: [orders]}\n"
           "multi_writer:\n"
           "  - collection: carts\n"
           "    node_id: " +
           std::to_string(i + 1) + "\n    policy: " + policy_ + "\n" + extra +
           "    poll_interval_ms: 50\n"
           "    reconcile_interval_ms: " +
           std::to_string(reconcile_ms_) +
           "\n"
           "    peers:\n"
           "      - {node_id: " +
           std::to_string(peer + 1) + ", url: 'http://127.0.0.1:" + std::to_string(port_[peer]) +
           "', token: " + (peer_token_.empty() ? kPeer : peer_token_) + "}\n";
  }

  void Start(int i, const std::string& data_dir) {
    auto n = std::make_unique<ServeProcess>(Config(i), data_dir);
    n->set_listen("127.0.0.1:" + std::to_string(port_[i]));
    // The port was free a moment ago; after a kill it may take a moment to be reusable.
    Status started = n->Start();
    for (int k = 0; !started.ok() && k < 20; ++k) {
      std::this_thread::sleep_for(std::chrono::milliseconds(250));
      n = std::make_unique<ServeProcess>(Config(i), data_dir);
      n->set_listen("127.0.0.1:" + std::to_string(port_[i]));
      started = n->Start();
    }
    ASSERT_TRUE(started.ok()) << started.ToString();
    if (node_[i]) old_.push_back(std::move(node_[i]));
    node_[i] = std::move(n);
  }

  HttpResult Call(int i, const std::string& method, const std::string& target,
                  const std::string& body = "", const std::string& token = kApp,
                  const testing::HttpHeaders& extra = {}) {
    testing::HttpHeaders headers = extra;
    if (!body.empty()) headers.push_back({"Content-Type", "application/json"});
    return HttpCall(port_[i], method, target, body, headers, token);
  }

  // Each node's GET of every key: status and body (context and siblings included).
  std::vector<std::string> Snapshot(int i) {
    std::vector<std::string> out;
    for (int k = 0; k < kKeys; ++k) {
      HttpResult r = Call(i, "GET", "/v1/multi-writer/carts/docs/k" + std::to_string(k));
      out.push_back(std::to_string(r.status) + " " + (r.status == 200 ? r.body : ""));
    }
    return out;
  }

  void WaitEqual() {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    std::vector<std::string> a, b;
    while (std::chrono::steady_clock::now() < deadline) {
      a = Snapshot(0);
      b = Snapshot(1);
      if (a == b) return;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    std::string diff;
    for (int k = 0; k < kKeys; ++k) {
      if (a[k] != b[k]) diff += "\nA: " + a[k] + "\nB: " + b[k];
    }
    ADD_FAILURE() << "the nodes did not converge:" << diff << "\nA log:\n"
                  << node_[0]->Log() << "\nB log:\n"
                  << node_[1]->Log();
  }

  // Writes on both nodes (3 writers each, the same keys), kills node 0 in the middle of the
  // first round and node 1 in the second, restarts them; crdt-fields writers send their own
  // g-counter entry (writer id w: its running count), so the join counts what they sent.
  void WriteLoadWithKills() {
    ASSERT_NO_FATAL_FAILURE(Start(0, ""));
    ASSERT_NO_FATAL_FAILURE(Start(1, ""));
    for (int round = 0; round < 2; ++round) {
      std::atomic<bool> stop{false};
      std::vector<std::thread> writers;
      for (int w = 0; w < 6; ++w) {
        writers.emplace_back([&, w] {
          const int i = w % 2;
          for (int n = 0; !stop.load(); ++n) {
            const int k = (n * 5 + w) % kKeys;
            const bool del = policy_ != "crdt-fields" && n % 7 == 3;
            std::string body;
            if (policy_ == "crdt-fields") {
              const uint64_t count = ++counts_[w][k];
              body = R"({"n":{"type":"g-counter","entries":{")" + std::to_string(w + 1) + R"(":)" +
                     std::to_string(count) + R"(}},"w":)" + std::to_string(w) + "}";
            } else if (!del) {
              body = R"({"w":)" + std::to_string(w) + R"(,"n":)" + std::to_string(n) + "}";
            }
            std::string req = std::string(del ? "DELETE" : "PUT") +
                              " /v1/multi-writer/carts/docs/k" + std::to_string(k) +
                              " HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer " + kApp +
                              "\r\nContent-Type: application/json\r\nConnection: close\r\n"
                              "Content-Length: " +
                              std::to_string(body.size()) + "\r\n\r\n" + body;
            // A write cut by a kill is an expected outcome here, not a failure.
            (void)testing::RawExchange(port_[i], req, 2000);
          }
        });
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(1000));
      const int victim = round;
      node_[victim]->Kill();
      std::this_thread::sleep_for(std::chrono::milliseconds(300));
      ASSERT_NO_FATAL_FAILURE(Start(victim, node_[victim]->data_dir()));
      std::this_thread::sleep_for(std::chrono::milliseconds(700));
      stop = true;
      for (auto& t : writers) t.join();
    }
    if (policy_ == "crdt-fields") {
      // Each writer's count acknowledged once more (a write cut by a kill may or may not have
      // committed; a later one carries a greater count, which the join keeps).
      for (int w = 0; w < 6; ++w) {
        for (int k = 0; k < kKeys; ++k) {
          if (counts_[w][k] == 0) continue;
          const uint64_t count = ++counts_[w][k];
          HttpResult r =
              Call(w % 2, "PUT", "/v1/multi-writer/carts/docs/k" + std::to_string(k),
                   R"({"n":{"type":"g-counter","entries":{")" + std::to_string(w + 1) + R"(":)" +
                       std::to_string(count) + R"(}},"w":)" + std::to_string(w) + "}");
          ASSERT_EQ(r.status, 200) << r.body;
        }
      }
    }
    WaitEqual();
  }

  std::string policy_ = "lww";
  int64_t reconcile_ms_ = 0;
  std::string peer_token_;
  uint16_t port_[2] = {0, 0};
  std::unique_ptr<ServeProcess> node_[2];
  std::vector<std::unique_ptr<ServeProcess>> old_;
  uint64_t counts_[6][kKeys] = {};
};

TEST_F(MultiWriterServeTest, TokenThatMayNotReadTheCollectionGets403AndNothing) {
  peer_token_ = kOther;  // each node pulls the other with a token scoped to another collection
  ASSERT_NO_FATAL_FAILURE(Start(0, ""));
  ASSERT_NO_FATAL_FAILURE(Start(1, ""));
  HttpResult w = Call(1, "PUT", "/v1/multi-writer/carts/docs/k1", R"({"from":"b"})");
  ASSERT_EQ(w.status, 200) << w.body;
  // Authorization before the query: a malformed one gets the same 403.
  for (const std::string q : {"?from=1", "?from=abc&limit=-1", "?bogus=1"}) {
    HttpResult r = Call(1, "GET", "/v1/multi-writer/carts/changes" + q, "", kOther);
    EXPECT_EQ(r.status, 403) << q << " " << r.body;
    EXPECT_NE(r.body.find("PERMISSION_DENIED"), std::string::npos) << r.body;
    EXPECT_EQ(r.body.find("k1"), std::string::npos) << r.body;
  }
  // A token that may read carts gets the page (binary), one that may not write gets 403.
  HttpResult ok = Call(1, "GET", "/v1/multi-writer/carts/changes?from=1", "", kPeer);
  EXPECT_EQ(ok.status, 200);
  EXPECT_NE(ok.body.find("k1"), std::string::npos);
  EXPECT_EQ(Call(1, "PUT", "/v1/multi-writer/carts/docs/k2", R"({})", kOther).status, 403);
  // Node 0 pulls with the refused token: its pulls fail and nothing of node 1 arrives. Its
  // first pulls may have failed to connect (node 0 starts first; node 1 took long enough to
  // start under AddressSanitizer for three such failures), so the wait is for the refusal
  // itself in the log (each distinct error is logged once).
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  const std::string refused = "may not read collection 'carts'";
  double errors = 0;
  while (std::chrono::steady_clock::now() < deadline &&
         (errors < 3 || node_[0]->Log().find(refused) == std::string::npos)) {
    errors = MetricValue(Call(0, "GET", "/metrics").body,
                         "converge_multi_writer_pull_errors_total{collection=\"carts\"}");
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_GE(errors, 3) << node_[0]->Log();
  EXPECT_EQ(Call(0, "GET", "/v1/multi-writer/carts/docs/k1").status, 404);
  EXPECT_EQ(Call(0, "GET", "/v1/collections/carts/docs/k1").status, 404);
  EXPECT_NE(node_[0]->Log().find(refused), std::string::npos) << node_[0]->Log();
}

TEST_F(MultiWriterServeTest, WritesThroughTheStoreRoutesAreRefused) {
  ASSERT_NO_FATAL_FAILURE(Start(0, ""));
  ASSERT_NO_FATAL_FAILURE(Start(1, ""));
  HttpResult r = Call(0, "PUT", "/v1/collections/carts/docs/k1", R"({"a":1})");
  EXPECT_TRUE(r.status == 403 || r.status == 409) << r.status << " " << r.body;
  EXPECT_EQ(Call(0, "PUT", "/v1/multi-writer/carts/docs/k1", "not json").status, 400);
  HttpResult bad = Call(0, "PUT", "/v1/multi-writer/carts/docs/k1", R"({"a":1})", kApp,
                        {{"Converge-Context", "nonsense"}});
  EXPECT_EQ(bad.status, 400) << bad.body;
  EXPECT_EQ(Call(0, "GET", "/v1/multi-writer/carts/docs/k1").status, 404);
  EXPECT_EQ(Call(0, "GET", "/v1/multi-writer/orders/docs/k1").status, 404);
}

TEST_F(MultiWriterServeTest, LwwConvergesAfterSigkillOfEitherNodeUnderConcurrentWrites) {
  policy_ = "lww";
  ASSERT_NO_FATAL_FAILURE(WriteLoadWithKills());
  // Staleness by value: caught up with the peer, pulled within the last few poll intervals.
  for (int i = 0; i < 2; ++i) {
    const std::string peer = "{collection=\"carts\",peer=\"" + std::to_string(2 - i) + "\"}";
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    double lag = -1, age = -1;
    while (std::chrono::steady_clock::now() < deadline) {
      const std::string metrics = Call(i, "GET", "/metrics").body;
      lag = MetricValue(metrics, "converge_multi_writer_peer_lag_writes" + peer);
      age = MetricValue(metrics, "converge_multi_writer_peer_last_pull_age_ms" + peer);
      if (lag == 0 && age >= 0 && age < 5000) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    EXPECT_EQ(lag, 0) << "node " << i;
    EXPECT_GE(age, 0) << "node " << i;
    EXPECT_LT(age, 5000) << "node " << i;
  }
  for (int k = 0; k < kKeys; ++k) {
    HttpResult r = Call(0, "GET", "/v1/multi-writer/carts/docs/k" + std::to_string(k));
    if (r.status != 200) continue;
    EXPECT_EQ(json::parse(r.body).as_object().at("siblings").as_array().size(), 1u) << r.body;
    // The store's own route shows the same winner (or nothing for a delete).
    HttpResult doc = Call(1, "GET", "/v1/collections/carts/docs/k" + std::to_string(k));
    const json::value parsed = json::parse(r.body);
    const json::value& want = parsed.as_object().at("document");
    if (want.is_null()) {
      EXPECT_EQ(doc.status, 404);
    } else {
      EXPECT_EQ(json::parse(doc.body), want);
    }
  }
}

TEST_F(MultiWriterServeTest, SiblingsConvergeAfterSigkillOfEitherNodeAndAreResolvedByAWrite) {
  policy_ = "multi-value";
  ASSERT_NO_FATAL_FAILURE(WriteLoadWithKills());
  // Concurrent writes on both nodes while the other was down left siblings somewhere; a
  // write on node 1 naming what node 0's reader saw resolves them, on both nodes.
  size_t with_siblings = 0;
  for (int k = 0; k < kKeys; ++k) {
    const std::string path = "/v1/multi-writer/carts/docs/k" + std::to_string(k);
    HttpResult r = Call(0, "GET", path);
    if (r.status != 200) continue;
    if (json::parse(r.body).as_object().at("siblings").as_array().size() > 1) ++with_siblings;
    HttpResult w = Call(1, "PUT", path, R"({"resolved":true})", kApp,
                        {{"Converge-Context", r.Header("Converge-Context")}});
    ASSERT_EQ(w.status, 200) << w.body;
  }
  EXPECT_GT(with_siblings, 0u);
  WaitEqual();
  for (int k = 0; k < kKeys; ++k) {
    HttpResult r = Call(0, "GET", "/v1/multi-writer/carts/docs/k" + std::to_string(k));
    if (r.status != 200) continue;
    json::object o = json::parse(r.body).as_object();
    EXPECT_EQ(o.at("siblings").as_array().size(), 1u) << r.body;
    EXPECT_EQ(json::serialize(o.at("document")), R"({"resolved":true})");
  }
}

TEST_F(MultiWriterServeTest, CrdtCounterCountsEveryIncrementAfterSigkillOfEitherNode) {
  policy_ = "crdt-fields";
  ASSERT_NO_FATAL_FAILURE(WriteLoadWithKills());
  for (int k = 0; k < kKeys; ++k) {
    uint64_t want = 0;
    for (int w = 0; w < 6; ++w) want += counts_[w][k];
    if (want == 0) continue;
    for (int i = 0; i < 2; ++i) {
      HttpResult r = Call(i, "GET", "/v1/multi-writer/carts/docs/k" + std::to_string(k));
      ASSERT_EQ(r.status, 200) << r.body;
      const json::value body = json::parse(r.body);
      const json::object& n = body.as_object().at("document").as_object().at("n").as_object();
      uint64_t sum = 0;
      for (const auto& e : n.at("entries").as_object()) sum += e.value().to_number<uint64_t>();
      EXPECT_EQ(sum, want) << "node " << i << " key k" << k << ": " << r.body;
    }
  }
}

TEST_F(MultiWriterServeTest, AntiEntropyRepairsANodeRestoredFromABackupByMerging) {
  reconcile_ms_ = 1000;
  ASSERT_NO_FATAL_FAILURE(Start(0, ""));
  ASSERT_NO_FATAL_FAILURE(Start(1, ""));
  auto put = [&](int i, int k, const std::string& doc) {
    HttpResult r = Call(i, "PUT", "/v1/multi-writer/carts/docs/k" + std::to_string(k), doc);
    ASSERT_EQ(r.status, 200) << r.body;
  };
  for (int k = 0; k < 6; ++k)
    ASSERT_NO_FATAL_FAILURE(put(k % 2, k, R"({"v":)" + std::to_string(k) + "}"));
  WaitEqual();
  // A backup of node 0, then writes of node 0 that node 1 pulls.
  const std::string data = node_[0]->data_dir();
  const std::string backup = data + ".backup";
  Result<int> code = node_[0]->Signal(SIGTERM);
  ASSERT_TRUE(code.ok()) << code.status().ToString();
  ASSERT_EQ(std::system(("rm -rf " + backup + " && cp -a " + data + " " + backup).c_str()), 0);
  ASSERT_NO_FATAL_FAILURE(Start(0, data));
  for (int k = 6; k < 11; ++k)
    ASSERT_NO_FATAL_FAILURE(put(0, k, R"({"lost":)" + std::to_string(k) + "}"));
  for (int k = 6; k < 11; ++k) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    while (Call(1, "GET", "/v1/multi-writer/carts/docs/k" + std::to_string(k)).status != 200) {
      ASSERT_LT(std::chrono::steady_clock::now(), deadline) << node_[1]->Log();
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  }
  // Node 0 restored from the backup: it no longer has its writes of k6..k10.
  node_[0]->Kill();
  ASSERT_EQ(std::system(("rm -rf " + data + " && cp -a " + backup + " " + data).c_str()), 0);
  ASSERT_NO_FATAL_FAILURE(Start(0, data));
  EXPECT_EQ(Call(0, "GET", "/v1/multi-writer/carts/docs/k6").status, 404);
  // Writes on both nodes while the anti-entropy runs.
  std::atomic<bool> stop{false};
  std::atomic<int> acked[2] = {0, 0};
  std::vector<std::thread> writers;
  for (int i = 0; i < 2; ++i) {
    writers.emplace_back([&, i] {
      for (int n = 1; !stop.load(); ++n) {
        HttpResult r =
            Call(i, "PUT", "/v1/multi-writer/carts/docs/k" + std::to_string(i == 0 ? 11 : 5),
                 R"({"during":)" + std::to_string(n) + "}");
        if (r.status == 200) acked[i] = n;
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
      }
    });
  }
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (std::chrono::steady_clock::now() < deadline &&
         Call(0, "GET", "/v1/multi-writer/carts/docs/k10").status != 200) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  stop = true;
  for (auto& t : writers) t.join();
  WaitEqual();
  for (int k = 6; k < 11; ++k) {
    HttpResult r = Call(0, "GET", "/v1/collections/carts/docs/k" + std::to_string(k));
    EXPECT_EQ(r.status, 200) << "k" << k << " " << r.body;
    EXPECT_EQ(r.body, R"({"lost":)" + std::to_string(k) + "}");
  }
  // The last acknowledged write of each writer is what both nodes show: nothing reverted.
  for (int i = 0; i < 2; ++i) {
    for (int j = 0; j < 2; ++j) {
      HttpResult r =
          Call(j, "GET", "/v1/collections/carts/docs/k" + std::to_string(i == 0 ? 11 : 5));
      EXPECT_EQ(r.body, R"({"during":)" + std::to_string(acked[i].load()) + "}") << "node " << j;
    }
  }
  const std::string metrics = Call(0, "GET", "/metrics").body;
  EXPECT_GE(
      MetricValue(metrics, "converge_multi_writer_reconcile_repaired_total{collection=\"carts\"}"),
      5)
      << metrics;
  std::system(("rm -rf " + backup).c_str());
}

}  // namespace
}  // namespace converge
