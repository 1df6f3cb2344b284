// Black-box tests of `converge serve` over damaged storage: the real binary is stopped, its
// files are damaged the way disks and operators damage them, and it is started again on the
// same data directory. What was lost must be visible (group description, metrics, server log)
// and nothing unknown may be deleted. The full-disk tests run the server on a small tmpfs,
// which needs root (CI runs as root): without it they fail under CI=true and are skipped
// elsewhere, saying why.
#include <errno.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/mount.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "converge/client.h"
#include "converge/event.h"
#include "converge/log.h"
#include "serve_process.h"
#include "test_util.h"

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
    testing::HttpResult res = testing::HttpCall(server_->port(), "GET", target);
    if (status != nullptr) *status = res.status;
    return res.body;
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

// Issue #12, 3: a segment file that is gone (the first one included) is damage, not
// retention: the log knows where its retention left it. A fresh group skips the missing
// records visibly (description, metric, server log) and under on_damage: stop fails naming
// them. (Before, a missing first segment made the partition start at the next segment's base,
// like after retention, and nothing told.)
TEST_F(DamageTest, MissingSegmentsAreDamageNotRetention) {
  for (const bool first : {true, false}) {
    SCOPED_TRACE(first ? "the first segment" : "a middle segment");
    const std::string name = first ? "first" : "middle";
    ASSERT_NO_FATAL_FAILURE(Start());
    CreateTopic(name);
    Publish(name, 0, 300);
    ASSERT_NO_FATAL_FAILURE(Stop());
    std::vector<std::string> segments = Segments(name);
    ASSERT_GE(segments.size(), 4u);
    const size_t victim = first ? 0 : segments.size() / 2;
    const uint64_t from = std::stoull(fs::path(segments[victim]).filename().string().substr(0, 20));
    const uint64_t to =
        std::stoull(fs::path(segments[victim + 1]).filename().string().substr(0, 20));
    ASSERT_TRUE(fs::remove(segments[victim]));

    ASSERT_NO_FATAL_FAILURE(Start());
    // The partition still starts at 0: the missing records are not taken for retention.
    const std::string topic = Get("/v1/topics/" + name);
    EXPECT_NE(topic.find("\"start_offset\":0,"), std::string::npos) << topic;
    auto delivered = Drain(name, "fresh");
    ASSERT_TRUE(delivered.ok()) << delivered.status().ToString();
    EXPECT_EQ(*delivered, 300u - (to - from));
    const std::string described = Get("/v1/topics/" + name);
    EXPECT_NE(described.find("\"damaged_skipped\":" + std::to_string(to - from)), std::string::npos)
        << described;
    auto metrics = client_->Metrics();
    ASSERT_TRUE(metrics.ok());
    EXPECT_NE(metrics->find("converge_consumer_damaged_skipped{topic=\"" + name +
                            "\",group=\"fresh\"} " + std::to_string(to - from)),
              std::string::npos)
        << *metrics;
    EXPECT_NE(server_->Log().find("converge serve: damage: consumer group 'fresh'"),
              std::string::npos)
        << server_->Log();
    ASSERT_NO_FATAL_FAILURE(Stop());

    // Under on_damage: stop the group fails at the hole, naming it.
    ASSERT_NO_FATAL_FAILURE(Start(std::string(kConfig) + "groups:\n  on_damage: stop\n"));
    auto stopped = Drain(name, "careful");
    ASSERT_FALSE(stopped.ok());
    EXPECT_NE(stopped.status().ToString().find("DATA_LOSS"), std::string::npos)
        << stopped.status().ToString();
    EXPECT_NE(stopped.status().ToString().find("records [" + std::to_string(from) + ", " +
                                               std::to_string(to) + ")"),
              std::string::npos)
        << stopped.status().ToString();
    ASSERT_NO_FATAL_FAILURE(Stop());
  }
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

// The saga log's recovery: a cut tail of the newest segment is told on stderr and in the
// metrics (it used to be counted and never shown).
TEST_F(DamageTest, SagaLogTailCutIsReported) {
  ASSERT_NO_FATAL_FAILURE(Start());
  ASSERT_NO_FATAL_FAILURE(Stop());
  const std::string segment = dir_.path() + "/sagas/saga-00000000000000000001.log";
  const uint64_t size = fs::file_size(segment);
  ASSERT_GT(size, 0u);
  std::ofstream(segment, std::ios::app | std::ios::binary) << "garbage";
  ASSERT_NO_FATAL_FAILURE(Start());
  const std::string line = "converge serve: saga log recovery: " + segment + ": bytes [" +
                           std::to_string(size) + ", " + std::to_string(size + 7) + ") cut off";
  EXPECT_NE(server_->Log().find(line), std::string::npos) << server_->Log();
  auto metrics = client_->Metrics();
  ASSERT_TRUE(metrics.ok());
  EXPECT_NE(metrics->find("\nconverge_saga_log_truncated_bytes 7\n"), std::string::npos)
      << *metrics;
  EXPECT_NE(metrics->find("\nconverge_saga_log_damaged_segments 1\n"), std::string::npos)
      << *metrics;
}

// Damage inside an older saga-log segment (acknowledged records, newer segments after them):
// it used to skip the rest of that segment silently and resume sagas from what was left. Now
// the server refuses to start, naming the file, the range and how to accept the loss.
TEST_F(DamageTest, SagaLogDamageInAnOlderSegmentStopsTheStart) {
  ASSERT_NO_FATAL_FAILURE(Start());
  ASSERT_NO_FATAL_FAILURE(Stop());
  const std::string older = dir_.path() + "/sagas/saga-00000000000000000001.log";
  const uint64_t size = fs::file_size(older);
  ASSERT_GT(size, 12u);
  {
    std::fstream f(older, std::ios::in | std::ios::out | std::ios::binary);
    f.seekg(10);
    char c = 0;
    f.read(&c, 1);
    c ^= 0x40;
    f.seekp(10);
    f.write(&c, 1);
  }
  // A newer (empty) segment, as after a roll: the damaged one is no longer the newest.
  std::ofstream(dir_.path() + "/sagas/saga-00000000000000000002.log").close();

  server_ = std::make_unique<ServeProcess>(kConfig, dir_.path());
  Status s = server_->Start();
  ASSERT_FALSE(s.ok()) << "the server started over a damaged saga log";
  const std::string log = server_->Log();
  // Byte 10 is in the first record, which starts after the 8-byte record-log file header.
  EXPECT_NE(log.find("converge serve: saga log recovery: " + older + ": bytes [8, " +
                     std::to_string(size) + ") are damaged"),
            std::string::npos)
      << log;
  EXPECT_NE(log.find("truncate -s 8 " + older), std::string::npos) << log;
  EXPECT_EQ(fs::file_size(older), size);  // nothing was cut

  // Doing what the message says accepts the loss.
  fs::resize_file(older, 0);
  ASSERT_NO_FATAL_FAILURE(Start());
}

// ---------------------------------------------------------------------------------------
// A full disk (issue #12): the server's data directory on a small tmpfs that a filler file
// fills up. Mounting needs root (CI runs as root): under CI=true a failed mount fails the
// test; elsewhere the test is skipped with the reason.

int64_t SteadyMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// A tmpfs of a few hundred KiB mounted on a fresh directory, unmounted by the destructor.
class SmallDisk {
 public:
  SmallDisk() {
    std::string tmpl = (fs::temp_directory_path() / "converge-fulldisk-XXXXXX").string();
    if (::mkdtemp(tmpl.data()) == nullptr) {
      error_ = std::string("mkdtemp: ") + std::strerror(errno);
      return;
    }
    path_ = tmpl;
    if (::mount("tmpfs", path_.c_str(), "tmpfs", MS_NOSUID | MS_NODEV, "size=1024k,mode=0700") !=
        0) {
      const int e = errno;
      error_ = "mounting a 1 MiB tmpfs on " + path_ + " failed (" + std::strerror(e) + ")" +
               (e == EPERM ? ": these tests need root (CI runs them as root)" : "");
      return;
    }
    mounted_ = true;
  }
  ~SmallDisk() {
    if (mounted_ && ::umount2(path_.c_str(), 0) != 0) {
      // Still busy (a child not yet reaped): detach it, the kernel frees it once unused.
      ::umount2(path_.c_str(), MNT_DETACH);
    }
    if (!path_.empty()) ::rmdir(path_.c_str());
  }
  bool mounted() const { return mounted_; }
  const std::string& error() const { return error_; }
  const std::string& path() const { return path_; }
  std::string filler() const { return path_ + "/filler"; }

  // Appends to the filler file until the disk is full. Returns the filler's size.
  Result<uint64_t> Fill() {
    int fd = ::open(filler().c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (fd < 0) return InternalError(std::string("open filler: ") + std::strerror(errno));
    const std::string chunk(4096, 'f');
    while (true) {
      ssize_t n = ::write(fd, chunk.data(), chunk.size());
      if (n > 0) continue;
      const int e = errno;
      ::close(fd);
      if (n < 0 && e != ENOSPC) return InternalError(std::string("filler: ") + std::strerror(e));
      break;
    }
    std::error_code ec;
    return static_cast<uint64_t>(fs::file_size(filler(), ec));
  }
  // Gives `bytes` back by cutting the filler.
  Status Free(uint64_t bytes) {
    std::error_code ec;
    const uint64_t size = fs::file_size(filler(), ec);
    if (ec) return InternalError("filler: " + ec.message());
    if (::truncate(filler().c_str(), static_cast<off_t>(size > bytes ? size - bytes : 0)) != 0) {
      return InternalError(std::string("truncate filler: ") + std::strerror(errno));
    }
    return Status::Ok();
  }
  void RemoveFiller() { ::unlink(filler().c_str()); }

 private:
  std::string path_;
  std::string error_;
  bool mounted_ = false;
};

using Reply = testing::HttpResult;

class FullDiskTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!disk_.mounted()) {
      const char* ci = std::getenv("CI");
      if (ci != nullptr && std::string(ci) == "true") {
        FAIL() << disk_.error();
      }
      GTEST_SKIP() << disk_.error();
    }
  }
  void TearDown() override {
    client_.reset();
    server_.reset();  // SIGKILL and reap before the tmpfs is unmounted
  }
  std::string DataDir() const { return disk_.path() + "/data"; }
  void Start(const std::string& yaml = "") {
    server_ = std::make_unique<ServeProcess>(yaml, DataDir());
    Status s = server_->Start();
    ASSERT_TRUE(s.ok()) << s.ToString();
    client_ = std::make_unique<Client>(server_->ClientOptions());
  }
  void Restart(const std::string& yaml = "") {
    client_.reset();
    Result<int> code = server_->Signal(SIGTERM);
    ASSERT_TRUE(code.ok()) << code.status().ToString();
    EXPECT_EQ(*code, 0) << server_->Log();
    server_.reset();
    ASSERT_NO_FATAL_FAILURE(Start(yaml));
  }
  Reply Call(const std::string& method, const std::string& target, const std::string& body = "",
             const std::string& content_type = "application/json") {
    testing::HttpHeaders headers;
    if (!body.empty()) headers.emplace_back("Content-Type", content_type);
    return testing::HttpCall(server_->port(), method, target, body, headers);
  }
  void CreateTopic(const std::string& name, uint32_t partitions) {
    Reply r = Call("POST", "/v1/topics",
                   "{\"name\":\"" + name + "\",\"partitions\":" + std::to_string(partitions) + "}");
    ASSERT_TRUE(r.status == 200 || r.status == 201) << r.status << " " << r.body;
  }
  // A structured CloudEvent in a batch: id `id`, partition key `key`, `pad` bytes of data.
  static std::string EventJson(const std::string& id, const std::string& key, size_t pad) {
    return "{\"specversion\":\"1.0\",\"source\":\"/fulldisk\",\"id\":\"" + id +
           "\",\"type\":\"t\",\"partitionkey\":\"" + key +
           "\",\"datacontenttype\":\"application/json\",\"data\":{\"pad\":\"" +
           std::string(pad, 'x') + "\"}}";
  }
  Reply PublishBatch(const std::string& topic, const std::vector<std::string>& events) {
    std::string body = "[";
    for (size_t i = 0; i < events.size(); ++i) body += (i ? "," : "") + events[i];
    body += "]";
    return Call("POST", "/v1/topics/" + topic + "/events", body,
                "application/cloudevents-batch+json");
  }
  // The ids a fresh group reads from `topic` (acking everything), in delivery order.
  std::vector<std::string> ReadAll(const std::string& topic, const std::string& group) {
    std::vector<std::string> ids;
    while (true) {
      client::FetchOptions f;
      f.max_events = 1000;
      f.wait_ms = 300;
      auto got = client_->Fetch(topic, group, f);
      EXPECT_TRUE(got.ok()) << got.status().ToString();
      if (!got.ok() || got->empty()) return ids;
      std::vector<client::Lease> leases;
      for (const client::Delivery& d : *got) {
        ids.push_back(d.event ? d.event->id() : "undecodable: " + d.decode_error);
        leases.push_back(d.lease());
      }
      auto acked = client_->Ack(topic, group, leases);
      EXPECT_TRUE(acked.ok()) << acked.status().ToString();
      if (!acked.ok()) return ids;
    }
  }
  uint64_t EndOffsets(const std::string& topic) {
    auto t = client_->DescribeTopic(topic);
    EXPECT_TRUE(t.ok()) << t.status().ToString();
    if (!t.ok()) return 0;
    uint64_t end = 0;
    for (const auto& p : t->offsets) end += p.end_offset;
    return end;
  }
  // Polls /readyz until it answers `want` (10 s at most); the last reply.
  Reply WaitReady(int want) {
    Reply r;
    const int64_t deadline = SteadyMs() + 10'000;
    do {
      r = Call("GET", "/readyz");
      if (r.status == want) return r;
      ::usleep(20'000);
    } while (SteadyMs() < deadline);
    return r;
  }

  SmallDisk disk_;
  std::unique_ptr<ServeProcess> server_;
  std::unique_ptr<Client> client_;
};

// A key that lands in partition `p` of `partitions`.
std::string KeyFor(uint32_t p, uint32_t partitions, int salt) {
  for (int i = 0;; ++i) {
    std::string key = "k" + std::to_string(salt) + "-" + std::to_string(i);
    if (Log::PartitionForKey(key, partitions) == p) return key;
  }
}

// A batch spanning partitions on a nearly full disk: the first partitions' bytes fit, the
// rest do not. The reply is 503 UNAVAILABLE with Retry-After (a write the disk refused, on
// every route) and nothing of the batch is readable, in any partition, before or after a
// restart.
TEST_F(FullDiskTest, BatchAcrossPartitionsIsAllOrNothing) {
  ASSERT_NO_FATAL_FAILURE(Start());
  constexpr uint32_t kParts = 4;
  CreateTopic("wide", kParts);
  std::vector<std::string> before;
  for (uint32_t p = 0; p < kParts; ++p) {
    before.push_back(EventJson("before-" + std::to_string(p), KeyFor(p, kParts, 0), 10));
  }
  Reply r = PublishBatch("wide", before);
  ASSERT_EQ(r.status, 200) << r.body;

  ASSERT_TRUE(disk_.Fill().ok());
  // 24 KiB free (plus what the partitions' last pages hold): one partition's 16 KiB fits,
  // all four (64 KiB) do not.
  ASSERT_TRUE(disk_.Free(24 * 1024).ok());
  std::vector<std::string> batch;
  for (uint32_t p = 0; p < kParts; ++p) {
    for (int i = 0; i < 8; ++i) {
      batch.push_back(EventJson("batch-" + std::to_string(p) + "-" + std::to_string(i),
                                KeyFor(p, kParts, 1 + i), 2000));
    }
  }
  r = PublishBatch("wide", batch);
  EXPECT_EQ(r.status, 503) << r.body;
  EXPECT_NE(r.body.find("\"UNAVAILABLE\""), std::string::npos) << r.body;
  EXPECT_FALSE(r.Header("Retry-After").empty());
  EXPECT_EQ(EndOffsets("wide"), kParts);

  disk_.RemoveFiller();
  std::vector<std::string> ids = ReadAll("wide", "fresh");
  std::sort(ids.begin(), ids.end());
  EXPECT_EQ(ids, (std::vector<std::string>{"before-0", "before-1", "before-2", "before-3"}));
  ASSERT_NO_FATAL_FAILURE(Restart());
  EXPECT_EQ(EndOffsets("wide"), kParts);
  ids = ReadAll("wide", "after-restart");
  std::sort(ids.begin(), ids.end());
  EXPECT_EQ(ids, (std::vector<std::string>{"before-0", "before-1", "before-2", "before-3"}));
  // The same batch goes through once there is space.
  r = PublishBatch("wide", batch);
  EXPECT_EQ(r.status, 200) << r.body;
}

// /readyz is 503 while the log cannot write and 200 again by itself once space returns; then a
// publish succeeds without a restart and everything acknowledged before is still there.
TEST_F(FullDiskTest, ReadinessFollowsTheDisk) {
  ASSERT_NO_FATAL_FAILURE(Start());
  CreateTopic("t", 1);
  std::vector<std::string> acked;
  for (int i = 0; i < 5; ++i) {
    const std::string id = "early-" + std::to_string(i);
    ASSERT_EQ(PublishBatch("t", {EventJson(id, "k", 100)}).status, 200);
    acked.push_back(id);
  }
  EXPECT_EQ(Call("GET", "/readyz").status, 200);

  ASSERT_TRUE(disk_.Fill().ok());
  // The segment's last page may still take an event or two: publish until one is refused.
  Reply r;
  for (int i = 0; i < 100; ++i) {
    const std::string id = "full-" + std::to_string(i);
    r = PublishBatch("t", {EventJson(id, "k", 2000)});
    if (r.status != 200) break;
    acked.push_back(id);
  }
  ASSERT_EQ(r.status, 503) << r.body;
  EXPECT_NE(r.body.find("\"UNAVAILABLE\""), std::string::npos) << r.body;
  EXPECT_FALSE(r.Header("Retry-After").empty());
  r = Call("GET", "/readyz");
  EXPECT_EQ(r.status, 503) << r.body;
  EXPECT_NE(r.body.find("the log cannot write"), std::string::npos) << r.body;
  EXPECT_NE(r.body.find("{\"component\":\"log\""), std::string::npos) << r.body;

  disk_.RemoveFiller();
  r = WaitReady(200);
  EXPECT_EQ(r.status, 200) << r.body;
  r = PublishBatch("t", {EventJson("late", "k", 100)});
  EXPECT_EQ(r.status, 200) << r.body;
  acked.push_back("late");
  EXPECT_EQ(ReadAll("t", "reader"), acked);
}

// An ack (groups.sync_acks: true) that cannot be written is an error and changes nothing: the
// committed offset stays, the lease still holds; once there is space the same ack succeeds.
TEST_F(FullDiskTest, AckOnFullDiskChangesNothing) {
  ASSERT_NO_FATAL_FAILURE(Start("groups:\n  sync_acks: true\n  lease_ms: 600000\n"));
  CreateTopic("jobs", 1);
  std::vector<std::string> events;
  for (int i = 0; i < 1000; ++i) {
    events.push_back(EventJson("j" + std::to_string(i), "k" + std::to_string(i), 10));
  }
  ASSERT_EQ(PublishBatch("jobs", events).status, 200);
  client::FetchOptions f;
  f.max_events = 1000;
  auto got = client_->Fetch("jobs", "g", f);
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  ASSERT_EQ(got->size(), 1000u);

  ASSERT_TRUE(disk_.Fill().ok());
  // The journal's last page may take a few acks: ack one at a time until one is refused.
  size_t failed = got->size();
  Status ack_error;
  for (size_t i = 0; i < got->size(); ++i) {
    const std::vector<client::Lease> one = {(*got)[i].lease()};
    auto acked = client_->Ack("jobs", "g", one);
    if (!acked.ok()) {
      failed = i;
      ack_error = acked.status();
      break;
    }
  }
  ASSERT_LT(failed, got->size()) << "every ack succeeded on a full disk";
  // A write the disk refused is answered like on every route: 503 UNAVAILABLE, Retry-After.
  EXPECT_EQ(ack_error.code(), StatusCode::kUnavailable) << ack_error.ToString();
  {
    const client::Lease l = (*got)[failed].lease();
    Reply raw = Call("POST", "/v1/topics/jobs/groups/g/ack",
                     "{\"acks\":[{\"partition\":" + std::to_string(l.partition) +
                         ",\"offset\":" + std::to_string(l.offset) + ",\"lease_id\":\"" +
                         std::to_string(l.lease_id) + "\"}]}");
    EXPECT_EQ(raw.status, 503) << raw.body;
    EXPECT_NE(raw.body.find("\"UNAVAILABLE\""), std::string::npos) << raw.body;
    EXPECT_FALSE(raw.Header("Retry-After").empty()) << raw.body;
  }
  // Readiness names the journal that cannot write.
  Reply ready = Call("GET", "/readyz");
  EXPECT_EQ(ready.status, 503) << ready.body;
  EXPECT_NE(ready.body.find("{\"component\":\"consumer_groups\""), std::string::npos) << ready.body;
  const std::string committed = "\"committed_offset\":" + std::to_string(failed);
  Reply groups = Call("GET", "/v1/topics/jobs");
  EXPECT_NE(groups.body.find(committed), std::string::npos) << ack_error.ToString() << "\n"
                                                            << groups.body;
  // Nothing is delivered meanwhile: the refused event is still leased.
  f.max_events = 10;
  auto again = client_->Fetch("jobs", "g", f);
  if (again.ok()) {
    EXPECT_TRUE(again->empty()) << again->front().offset;
  }

  disk_.RemoveFiller();
  // The same lease is still good once there is space (a restart is not needed).
  Status last;
  const int64_t deadline = SteadyMs() + 10'000;
  do {
    const std::vector<client::Lease> one = {(*got)[failed].lease()};
    auto acked = client_->Ack("jobs", "g", one);
    last = acked.status();
    if (acked.ok()) {
      EXPECT_TRUE(acked->lost.empty());
      break;
    }
    ::usleep(20'000);
  } while (SteadyMs() < deadline);
  ASSERT_TRUE(last.ok()) << last.ToString();
  EXPECT_EQ(WaitReady(200).status, 200);
  groups = Call("GET", "/v1/topics/jobs");
  EXPECT_NE(groups.body.find("\"committed_offset\":" + std::to_string(failed + 1)),
            std::string::npos)
      << groups.body;
  ASSERT_NO_FATAL_FAILURE(Restart());
  groups = Call("GET", "/v1/topics/jobs");
  EXPECT_NE(groups.body.find("\"committed_offset\":" + std::to_string(failed + 1)),
            std::string::npos)
      << groups.body;
}

// A store write (a document PUT, a transaction) that cannot be written is refused and changes
// nothing: reads show the old value, the change feed gets nothing; once there is space writes
// work again without a restart.
TEST_F(FullDiskTest, StoreWriteOnFullDiskChangesNothing) {
  ASSERT_NO_FATAL_FAILURE(Start());
  Reply r = Call("PUT", "/v1/collections/carts", "{}");
  ASSERT_EQ(r.status, 201) << r.body;
  r = Call("PUT", "/v1/collections/carts/docs/c1", "{\"n\":0}");
  ASSERT_TRUE(r.status == 200 || r.status == 201) << r.body;

  ASSERT_TRUE(disk_.Fill().ok());
  // The WAL's last page may take a write or two: write until one is refused.
  int last_ok = 0;
  int refused = -1;
  for (int i = 1; i < 100; ++i) {
    r = Call("PUT", "/v1/collections/carts/docs/c1",
             "{\"n\":" + std::to_string(i) + ",\"pad\":\"" + std::string(1500, 'p') + "\"}");
    if (r.status != 200 && r.status != 201) {
      refused = i;
      break;
    }
    last_ok = i;
  }
  ASSERT_GT(refused, 0) << "every store write succeeded on a full disk";
  EXPECT_EQ(r.status, 503) << r.body;
  EXPECT_FALSE(r.Header("Retry-After").empty());
  const std::string refused_body = r.body;
  r = Call("GET", "/v1/collections/carts/docs/c1");
  EXPECT_EQ(r.status, 200) << refused_body << "\n" << r.body;
  EXPECT_NE(r.body.find("\"n\":" + std::to_string(last_ok)), std::string::npos) << r.body;
  // A transaction is refused too, and changes nothing.
  r = Call(
      "POST", "/v1/collections/_transaction",
      "{\"ops\":[{\"op\":\"put\",\"collection\":\"carts\",\"key\":\"c2\",\"value\":{\"pad\":\"" +
          std::string(3000, 'q') + "\"}}]}");
  EXPECT_EQ(r.status, 503) << r.body;
  EXPECT_EQ(Call("GET", "/v1/collections/carts/docs/c2").status, 404);

  disk_.RemoveFiller();
  Reply put;
  const int64_t deadline = SteadyMs() + 10'000;
  do {
    put = Call("PUT", "/v1/collections/carts/docs/c1", "{\"n\":1000}");
    if (put.status == 200) break;
    ::usleep(20'000);
  } while (SteadyMs() < deadline);
  EXPECT_EQ(put.status, 200) << put.body;
  r = Call("GET", "/v1/collections/carts/docs/c1");
  EXPECT_NE(r.body.find("\"n\":1000"), std::string::npos) << r.body;
  EXPECT_EQ(Call("GET", "/v1/collections/carts/docs/c2").status, 404);

  // The change feed holds every acknowledged write and none of the refused ones.
  ASSERT_NO_FATAL_FAILURE(Restart());
  std::vector<std::string> ids = ReadAll("store-changes", "audit");
  size_t c1 = 0;
  for (const std::string& id : ids) {
    if (id.starts_with("carts/c1/")) ++c1;
    EXPECT_FALSE(id.starts_with("carts/c2/")) << id;
  }
  EXPECT_EQ(c1, static_cast<size_t>(last_ok) + 2) << ::testing::PrintToString(ids);
  r = Call("GET", "/v1/collections/carts/docs/c1");
  EXPECT_NE(r.body.find("\"n\":1000"), std::string::npos) << r.body;
}

// A group create the disk refuses is a 503 with Retry-After and leaves no group behind (before
// it was a 500, and the group existed in memory: a retry got 409); once there is space the
// same create succeeds without a restart, and survives one.
TEST_F(FullDiskTest, GroupCreateOnFullDiskChangesNothing) {
  ASSERT_NO_FATAL_FAILURE(Start());
  CreateTopic("t", 1);
  ASSERT_TRUE(disk_.Fill().ok());
  // The journal's last page may take a group or two: create until one is refused.
  Reply r;
  std::string refused;
  std::vector<std::string> created;
  for (int i = 0; i < 100; ++i) {
    const std::string name = "g" + std::to_string(i);
    r = Call("POST", "/v1/topics/t/groups", R"({"name":")" + name + "\"}");
    if (r.status != 201) {
      refused = name;
      break;
    }
    created.push_back(name);
  }
  ASSERT_FALSE(refused.empty()) << "every group create succeeded on a full disk";
  EXPECT_EQ(r.status, 503) << r.body;
  EXPECT_NE(r.body.find("\"UNAVAILABLE\""), std::string::npos) << r.body;
  EXPECT_FALSE(r.Header("Retry-After").empty()) << r.body;
  const std::string quoted = "\"" + refused + "\"";
  r = Call("GET", "/v1/topics/t");
  EXPECT_EQ(r.body.find(quoted), std::string::npos) << r.body;

  disk_.RemoveFiller();
  const int64_t deadline = SteadyMs() + 10'000;
  do {
    r = Call("POST", "/v1/topics/t/groups", R"({"name":")" + refused + "\"}");
    if (r.status == 201) break;
    ::usleep(20'000);
  } while (SteadyMs() < deadline);
  EXPECT_EQ(r.status, 201) << r.body;
  created.push_back(refused);
  ASSERT_NO_FATAL_FAILURE(Restart());
  r = Call("GET", "/v1/topics/t");
  for (const std::string& name : created) {
    EXPECT_NE(r.body.find("\"" + name + "\""), std::string::npos) << name << "\n" << r.body;
  }
}

constexpr const char* kTwoStepSaga = R"yaml(name: order
version: 1
steps:
  - name: reserve
    participant: inventory
    action: inventory.reserve
    compensation: inventory.release
    timeout_ms: 60000
  - name: charge
    participant: payments
    action: payments.charge
    pivot: true
    timeout_ms: 60000
)yaml";

// A saga start (and cancel) the saga log cannot write is refused with a retryable 503 and
// changes nothing: no saga appears, readiness names the orchestrator. Once there is space
// readiness comes back by itself, the same start succeeds without a restart, and after a
// restart exactly the acknowledged sagas are there.
TEST_F(FullDiskTest, SagaStartOnFullDiskChangesNothingAndRecovers) {
  ASSERT_NO_FATAL_FAILURE(Start());
  Reply r = Call("POST", "/v1/saga-definitions", kTwoStepSaga, "application/yaml");
  ASSERT_EQ(r.status, 201) << r.body;
  r = Call("POST", "/v1/sagas", R"({"definition":"order","id":"before"})");
  ASSERT_EQ(r.status, 201) << r.body;

  ASSERT_TRUE(disk_.Fill().ok());
  // The saga log's last page may take a start or two: start until one is refused.
  const std::string pad(3000, 'p');
  std::vector<std::string> started = {"before"};
  std::string refused_id;
  for (int i = 0; i < 100; ++i) {
    const std::string id = "full-" + std::to_string(i);
    r = Call("POST", "/v1/sagas",
             R"({"definition":"order","id":")" + id + R"(","data":{"pad":")" + pad + "\"}}");
    if (r.status != 201) {
      refused_id = id;
      break;
    }
    started.push_back(id);
  }
  ASSERT_FALSE(refused_id.empty()) << "every saga start succeeded on a full disk";
  EXPECT_EQ(r.status, 503) << r.body;
  EXPECT_NE(r.body.find("\"UNAVAILABLE\""), std::string::npos) << r.body;
  EXPECT_FALSE(r.Header("Retry-After").empty()) << r.body;
  // Nothing of the refused start is there.
  EXPECT_EQ(Call("GET", "/v1/sagas/" + refused_id).status, 404);
  // The refused start was undone, and the last page of the saga log may still take small
  // records: start small sagas until one is refused, so that a cancel cannot fit either.
  Reply small;
  for (int i = 0; i < 1000; ++i) {
    const std::string id = "small-" + std::to_string(i);
    small = Call("POST", "/v1/sagas", R"({"definition":"order","id":")" + id + "\"}");
    if (small.status != 201) break;
    started.push_back(id);
  }
  ASSERT_EQ(small.status, 503) << small.body;
  // A cancel is refused the same way and changes nothing.
  const Reply saga_before = Call("GET", "/v1/sagas/before");
  ASSERT_EQ(saga_before.status, 200) << saga_before.body;
  r = Call("POST", "/v1/sagas/before/cancel", R"({"reason":"test"})");
  EXPECT_EQ(r.status, 503) << r.body;
  EXPECT_FALSE(r.Header("Retry-After").empty()) << r.body;
  EXPECT_EQ(Call("GET", "/v1/sagas/before").body, saga_before.body);
  r = Call("GET", "/readyz");
  EXPECT_EQ(r.status, 503) << r.body;
  EXPECT_NE(r.body.find("{\"component\":\"sagas\""), std::string::npos) << r.body;
  r = Call("GET", "/metrics");
  EXPECT_NE(r.body.find("\nconverge_saga_log_write_errors_total "), std::string::npos);
  EXPECT_EQ(r.body.find("\nconverge_saga_log_write_errors_total 0\n"), std::string::npos);

  disk_.RemoveFiller();
  r = WaitReady(200);
  EXPECT_EQ(r.status, 200) << r.body;
  r = Call("POST", "/v1/sagas",
           R"({"definition":"order","id":")" + refused_id + R"(","data":{"pad":")" + pad + "\"}}");
  EXPECT_EQ(r.status, 201) << r.body;
  started.push_back(refused_id);
  r = Call("POST", "/v1/sagas", R"({"definition":"order","id":"after"})");
  EXPECT_EQ(r.status, 201) << r.body;
  started.push_back("after");

  ASSERT_NO_FATAL_FAILURE(Restart());
  for (const std::string& id : started) {
    EXPECT_EQ(Call("GET", "/v1/sagas/" + id).status, 200) << id;
  }
}

}  // namespace
}  // namespace converge
