// Black-box tests of `converge serve` over damaged storage: the real binary is stopped, its
// files are damaged the way disks and operators damage them, and it is started again on the
// same data directory. What was lost must be visible (group description, metrics, server log)
// and nothing unknown may be deleted.
#include <gtest/gtest.h>
#include <signal.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "converge/client.h"
#include "converge/event.h"
#include "serve_process.h"

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wrestrict"  // GCC bug 105329 on "literal" + std::string
#endif

namespace converge {
namespace {

namespace fs = std::filesystem;
using client::Client;
using testing::ServeProcess;

// A data directory that outlives the server processes started on it.
class DataDir {
 public:
  DataDir() {
    std::string tmpl = (fs::temp_directory_path() / "converge-damage-XXXXXX").string();
    if (::mkdtemp(tmpl.data()) != nullptr) path_ = tmpl;
  }
  ~DataDir() {
    std::error_code ec;
    if (!path_.empty()) fs::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

constexpr char kConfig[] =
    "topic_defaults:\n"
    "  segment_max_bytes: 4096\n";

Event MakeEvent(int i) {
  Event e;
  e.set_source("/damage");
  e.set_id("e-" + std::to_string(i));
  e.set_type("com.example.damage");
  Status s = e.SetJsonData("{\"n\":" + std::to_string(i) + ",\"pad\":\"" + std::string(60, 'p') +
                           "\"}");
  if (!s.ok()) ADD_FAILURE() << s.ToString();
  return e;
}

class DamageTest : public ::testing::Test {
 protected:
  void Start(const std::string& yaml = kConfig) {
    server_ = std::make_unique<ServeProcess>(yaml, dir_.path());
    Status s = server_->Start();
    ASSERT_TRUE(s.ok()) << s.ToString();
    client_ = std::make_unique<Client>(server_->ClientOptions());
  }
  void Stop() {
    client_.reset();
    Result<int> code = server_->Signal(SIGTERM);
    ASSERT_TRUE(code.ok()) << code.status().ToString();
    EXPECT_EQ(*code, 0) << server_->Log();
    stopped_log_ = server_->Log();
    server_.reset();
  }
  void Publish(const std::string& topic, int from, int to) {
    std::vector<Event> events;
    for (int i = from; i < to; ++i) events.push_back(MakeEvent(i));
    auto published = client_->Publish(topic, events);
    ASSERT_TRUE(published.ok()) << published.status().ToString();
  }
  void CreateTopic(const std::string& name) {
    client::TopicSpec spec;
    spec.name = name;
    spec.partitions = 1;
    auto t = client_->CreateTopic(spec);
    ASSERT_TRUE(t.ok()) << t.status().ToString();
  }
  // Fetches and acks until a long poll comes back empty; the number delivered, or the error.
  Result<size_t> Drain(const std::string& topic, const std::string& group) {
    size_t n = 0;
    while (true) {
      client::FetchOptions f;
      f.max_events = 1000;
      f.wait_ms = 500;
      auto got = client_->Fetch(topic, group, f);
      if (!got.ok()) return got.status();
      if (got->empty()) return n;
      std::vector<client::Lease> leases;
      for (const client::Delivery& d : *got) leases.push_back(d.lease());
      auto acked = client_->Ack(topic, group, leases);
      if (!acked.ok()) return acked.status();
      n += got->size();
    }
  }
  std::string Get(const std::string& target, int* status = nullptr) {
    client::HttpRequest req;
    req.target = target;
    auto res = client_->Send(req);
    EXPECT_TRUE(res.ok()) << res.status().ToString();
    if (!res.ok()) return "";
    if (status != nullptr) *status = res->status;
    return res->body;
  }
  std::string PartitionDir(const std::string& topic) {
    return dir_.path() + "/log/topics/" + topic + "/0000";
  }
  std::vector<std::string> Segments(const std::string& topic) {
    std::vector<std::string> out;
    for (const auto& e : fs::directory_iterator(PartitionDir(topic))) {
      const std::string name = e.path().filename().string();
      if (name.size() == 24 && name.ends_with(".log")) out.push_back(e.path().string());
    }
    std::sort(out.begin(), out.end());
    return out;
  }

  DataDir dir_;
  std::unique_ptr<ServeProcess> server_;
  std::unique_ptr<Client> client_;
  std::string stopped_log_;
};

// Issue #12, 4: a topic directory without topic.json was deleted at start, segments and all,
// without a word. Now the topic is kept, named in the server's log, and answers DATA_LOSS.
TEST_F(DamageTest, TopicWithoutMetadataIsKeptAndReported) {
  ASSERT_NO_FATAL_FAILURE(Start());
  CreateTopic("precious");
  Publish("precious", 0, 20);
  ASSERT_NO_FATAL_FAILURE(Stop());
  fs::remove(dir_.path() + "/log/topics/precious/topic.json");
  const size_t segments = Segments("precious").size();
  ASSERT_GT(segments, 0u);

  ASSERT_NO_FATAL_FAILURE(Start());
  EXPECT_NE(server_->Log().find("topic 'precious' is quarantined"), std::string::npos)
      << server_->Log();
  EXPECT_NE(server_->Log().find(dir_.path() + "/log/topics/precious"), std::string::npos);
  int status = 0;
  std::string body = Get("/v1/topics/precious", &status);
  EXPECT_EQ(status, 500) << body;
  EXPECT_NE(body.find("DATA_LOSS"), std::string::npos) << body;
  EXPECT_EQ(Segments("precious").size(), segments);
}

// Issue #12, 3: damaged events in the middle of a partition were skipped silently (a fresh
// group read the rest and reported lag 0). Now the skip is counted in the group description
// and the metrics and written to the server's log.
TEST_F(DamageTest, SkippedDamageIsVisible) {
  ASSERT_NO_FATAL_FAILURE(Start());
  CreateTopic("orders");
  Publish("orders", 0, 300);
  ASSERT_NO_FATAL_FAILURE(Stop());
  std::vector<std::string> segments = Segments("orders");
  ASSERT_GE(segments.size(), 4u);
  {
    // Flip a bit in the header checksum of the first record of a middle segment.
    std::fstream f(segments[segments.size() / 2], std::ios::in | std::ios::out | std::ios::binary);
    ASSERT_TRUE(f.good());
    f.seekg(12);
    char c = 0;
    f.read(&c, 1);
    c ^= 0x40;
    f.seekp(12);
    f.write(&c, 1);
  }

  ASSERT_NO_FATAL_FAILURE(Start());
  auto delivered = Drain("orders", "fresh");
  ASSERT_TRUE(delivered.ok()) << delivered.status().ToString();
  EXPECT_LT(*delivered, 300u);
  const uint64_t skipped = 300 - *delivered;
  const std::string topic = Get("/v1/topics/orders");
  EXPECT_NE(topic.find("\"damaged_skipped\":" + std::to_string(skipped)), std::string::npos)
      << topic;
  EXPECT_NE(topic.find("are damaged"), std::string::npos) << topic;
  auto metrics = client_->Metrics();
  ASSERT_TRUE(metrics.ok());
  EXPECT_NE(metrics->find("converge_consumer_damaged_skipped{topic=\"orders\",group=\"fresh\"} " +
                          std::to_string(skipped)),
            std::string::npos)
      << *metrics;
  EXPECT_NE(server_->Log().find("converge serve: damage: consumer group 'fresh'"),
            std::string::npos)
      << server_->Log();
}

// groups.on_damage: stop: the group delivers what precedes the damage and then fails with
// DATA_LOSS naming the range.
TEST_F(DamageTest, StopOnDamageNamesTheRange) {
  ASSERT_NO_FATAL_FAILURE(Start());
  CreateTopic("orders");
  Publish("orders", 0, 300);
  ASSERT_NO_FATAL_FAILURE(Stop());
  std::vector<std::string> segments = Segments("orders");
  ASSERT_GE(segments.size(), 4u);
  const std::string victim = segments[segments.size() / 2];
  const std::string from = fs::path(victim).filename().string().substr(0, 20);
  {
    std::fstream f(victim, std::ios::in | std::ios::out | std::ios::binary);
    f.seekg(12);
    char c = 0;
    f.read(&c, 1);
    c ^= 0x40;
    f.seekp(12);
    f.write(&c, 1);
  }
  ASSERT_NO_FATAL_FAILURE(Start(std::string(kConfig) + "groups:\n  on_damage: stop\n"));
  auto delivered = Drain("orders", "careful");
  ASSERT_FALSE(delivered.ok());
  EXPECT_NE(delivered.status().ToString().find("DATA_LOSS"), std::string::npos)
      << delivered.status().ToString();
  EXPECT_NE(delivered.status().ToString().find("records [" + std::to_string(std::stoull(from))),
            std::string::npos)
      << delivered.status().ToString();
}

// Issue #12, 1: after the tail of a partition is lost, a group's committed offset stayed
// beyond the new end: the next events reused those offsets and were never delivered, with lag
// 0. Now the committed offset is moved back at start and the loss is reported.
TEST_F(DamageTest, GroupAheadOfTruncatedLogStillGetsNewEvents) {
  ASSERT_NO_FATAL_FAILURE(Start());
  CreateTopic("orders");
  Publish("orders", 0, 10);
  auto consumed = Drain("orders", "workers");
  ASSERT_TRUE(consumed.ok()) << consumed.status().ToString();
  ASSERT_EQ(*consumed, 10u);
  ASSERT_NO_FATAL_FAILURE(Stop());
  // The active segment loses its last records (a damaged tail is cut at recovery).
  std::vector<std::string> segments = Segments("orders");
  const std::string active = segments.back();
  const uint64_t size = fs::file_size(active);
  ASSERT_GT(size, 400u);
  {
    // Damage a byte near the end: the last record fails its checksum and is cut as a torn
    // tail, and the group had consumed it.
    std::fstream f(active, std::ios::in | std::ios::out | std::ios::binary);
    f.seekg(static_cast<std::streamoff>(size - 5));
    char c = 0;
    f.read(&c, 1);
    c ^= 0x40;
    f.seekp(static_cast<std::streamoff>(size - 5));
    f.write(&c, 1);
  }

  ASSERT_NO_FATAL_FAILURE(Start());
  EXPECT_NE(server_->Log().find("beyond the log's end"), std::string::npos) << server_->Log();
  Publish("orders", 100, 103);
  auto fresh = Drain("orders", "workers");
  ASSERT_TRUE(fresh.ok()) << fresh.status().ToString();
  EXPECT_EQ(*fresh, 3u);
  const std::string topic = Get("/v1/topics/orders");
  EXPECT_NE(topic.find("\"lost_beyond_end\":1"), std::string::npos) << topic;
}

}  // namespace
}  // namespace converge
