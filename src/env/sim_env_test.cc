// Tests of the simulated Env: determinism, virtual time, crash semantics, the lossy network.
#include "converge/sim_env.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <map>
#include <set>
#include <string>
#include <vector>

namespace converge::sim {
namespace {

constexpr int64_t kMs = 1'000'000;

std::string Read(FileSystem& fs, const std::string& path) {
  auto content = fs.ReadFileToString(path);
  EXPECT_TRUE(content.ok()) << path << ": " << content.status().ToString();
  return content.ok() ? *content : std::string();
}

void WriteSynced(FileSystem& fs, const std::string& path, std::string_view data) {
  auto file = fs.NewWritableFile(path, OpenMode::kAppend);
  ASSERT_TRUE(file.ok()) << file.status().ToString();
  ASSERT_TRUE((*file)->Append(data).ok());
  ASSERT_TRUE((*file)->Sync().ok());
  ASSERT_TRUE((*file)->Close().ok());
}

// ---------------------------------------------------------------------------------------
// Determinism: a scenario using timers, random, files and a lossy network.

struct ScenarioResult {
  uint64_t hash;
  std::vector<std::string> lines;
  SimTransport::Stats stats;
};

ScenarioResult RunScenario(uint64_t seed) {
  SimOptions options;
  options.trace_keep_lines = 100'000;
  SimEnv env(seed, options);
  SimTransport& net = env.sim_transport();
  net.SetLatency(10'000, 5 * kMs);  // wide: reorders
  net.SetDropProbability(0.2);
  net.SetDuplicateProbability(0.2);
  FileSystem& fs = env.fs();
  EXPECT_TRUE(fs.CreateDirs("/data").ok());

  const std::vector<std::string> names = {"n0", "n1", "n2"};
  std::vector<std::unique_ptr<Endpoint>> endpoints;
  std::map<std::string, std::unique_ptr<WritableFile>> logs;
  for (const std::string& name : names) {
    auto log = fs.NewWritableFile("/data/" + name + ".log", OpenMode::kAppend);
    EXPECT_TRUE(log.ok());
    logs[name] = std::move(*log);
  }
  for (const std::string& name : names) {
    auto endpoint = env.transport().Listen(name, [&, name](Message m) {
      env.Trace("recv " + name + " " + m.payload);
      WritableFile& log = *logs[name];
      (void)log.Append(m.payload + "\n");
      if (env.random().Bernoulli(0.3)) (void)log.Sync();
      // Reply sometimes, after a random think time.
      if (m.payload.size() < 40 && env.random().Bernoulli(0.5)) {
        const std::string reply = m.payload + "+";
        const std::string to = m.from;
        env.executor().Schedule(env.random().UniformRange(0, 3 * kMs), [&, name, reply, to] {
          for (auto& ep : endpoints) {
            if (ep->address() == name) (void)ep->Send(to, reply);
          }
        });
      }
    });
    EXPECT_TRUE(endpoint.ok());
    endpoints.push_back(std::move(*endpoint));
  }
  // Each node sends a message to a random peer every 1-10 ms; some timers are cancelled.
  std::vector<TimerId> cancellable;
  std::function<void(size_t, int)> tick = [&](size_t i, int n) {
    if (n == 0) return;
    const std::string to = names[env.random().Uniform(names.size())];
    (void)endpoints[i]->Send(to, names[i] + ":" + std::to_string(n));
    cancellable.push_back(env.executor().Schedule(50 * kMs, [&] { env.Trace("never?"); }));
    if (cancellable.size() % 3 == 0) {
      env.executor().Cancel(cancellable[env.random().Uniform(cancellable.size())]);
    }
    env.executor().Schedule(env.random().UniformRange(kMs, 10 * kMs),
                            [&, i, n] { tick(i, n - 1); });
  };
  for (size_t i = 0; i < names.size(); ++i) env.executor().Post([&, i] { tick(i, 40); });

  env.RunFor(100 * kMs);
  net.Partition("n0", "n1");
  env.RunFor(100 * kMs);
  net.Heal();
  env.sim_fs().SetTornWrites(true);
  env.sim_fs().Crash();  // old handles now fail; the nodes reopen their logs and carry on
  for (const std::string& name : names) {
    auto log = fs.NewWritableFile("/data/" + name + ".log", OpenMode::kAppend);
    EXPECT_TRUE(log.ok());
    logs[name] = std::move(*log);
  }
  env.RunUntilIdle();
  return {env.TraceHash(), env.TraceLines(), net.stats()};
}

TEST(SimDeterminismTest, SameSeedSameTraceDifferentSeedDifferentTrace) {
  const uint64_t seed = 42;
  ScenarioResult a = RunScenario(seed);
  ScenarioResult b = RunScenario(seed);
  ScenarioResult c = RunScenario(seed + 1);
  SCOPED_TRACE("seed " + std::to_string(seed));
  ASSERT_GT(a.lines.size(), 500u);  // the scenario did real work
  EXPECT_EQ(a.lines, b.lines);      // byte-identical trace
  EXPECT_EQ(a.hash, b.hash);
  EXPECT_NE(a.hash, c.hash);
  // The scenario exercised every kind of event.
  EXPECT_GT(a.stats.delivered, 100u);
  EXPECT_GT(a.stats.dropped, 10u);
  EXPECT_GT(a.stats.duplicated, 10u);
  auto has = [&](std::string_view needle) {
    for (const auto& line : a.lines) {
      if (line.find(needle) != std::string::npos) return true;
    }
    return false;
  };
  EXPECT_TRUE(has("timer "));
  EXPECT_TRUE(has("fs append"));
  EXPECT_TRUE(has("fs sync"));
  EXPECT_TRUE(has("fs crash"));
  EXPECT_TRUE(has("net deliver"));
  EXPECT_TRUE(has("net drop-partition"));
}

TEST(SimDeterminismTest, SeededRandomIsReproducibleAndIndependentOfNetwork) {
  SimEnv a(7), b(7), c(8);
  b.sim_transport().SetDropProbability(0.5);  // network settings do not shift component randomness
  auto ep = b.transport().Listen("x", [](Message) {});
  ASSERT_TRUE(ep.ok());
  for (int i = 0; i < 10; ++i) ASSERT_TRUE((*ep)->Send("x", "m").ok());
  bool differs = false;
  for (int i = 0; i < 100; ++i) {
    uint64_t x = a.random().Next64();
    EXPECT_EQ(x, b.random().Next64());
    differs |= x != c.random().Next64();
  }
  EXPECT_TRUE(differs);
  EXPECT_EQ(a.seed(), 7u);
}

// ---------------------------------------------------------------------------------------
// Virtual time and the event loop

TEST(SimExecutorTest, TimersRunInDueOrderTiesByInsertion) {
  SimEnv env(1);
  std::vector<int> order;
  Executor& ex = env.executor();
  ex.Schedule(30, [&] { order.push_back(3); });
  ex.Schedule(10, [&] { order.push_back(1); });
  ex.Schedule(10, [&] { order.push_back(2); });  // same due time: after the first
  ex.Post([&] { order.push_back(0); });
  ex.Schedule(-5, [&] { order.push_back(-1); });  // negative delay: due now, after the Post
  EXPECT_EQ(env.pending_events(), 5u);
  EXPECT_EQ(env.RunUntilIdle(), 5u);
  EXPECT_EQ(order, (std::vector<int>{0, -1, 1, 2, 3}));
  EXPECT_EQ(env.now_nanos(), 30);
  EXPECT_FALSE(env.RunOne());
}

TEST(SimExecutorTest, CancelAndNestedScheduling) {
  SimEnv env(1);
  std::vector<std::string> log;
  Executor& ex = env.executor();
  TimerId doomed = ex.Schedule(5 * kMs, [&] { log.push_back("doomed"); });
  TimerId kept = ex.Schedule(1 * kMs, [&] {
    log.push_back("kept@" + std::to_string(env.clock().NowMonotonicNanos()));
    ex.Schedule(2 * kMs, [&] { log.push_back("nested@" + std::to_string(env.now_nanos())); });
  });
  EXPECT_TRUE(ex.Cancel(doomed));
  EXPECT_FALSE(ex.Cancel(doomed));
  EXPECT_FALSE(ex.Cancel(12345));
  env.RunUntilIdle();
  EXPECT_EQ(log, (std::vector<std::string>{"kept@1000000", "nested@3000000"}));
  EXPECT_FALSE(ex.Cancel(kept));  // already fired
}

TEST(SimExecutorTest, RunForRunsOnlyTheWindowThenSetsTime) {
  SimEnv env(1);
  int fired = 0;
  env.executor().Schedule(10 * kMs, [&] { ++fired; });
  env.executor().Schedule(20 * kMs, [&] { ++fired; });
  EXPECT_EQ(env.RunFor(10 * kMs), 1u);  // the window's end is inclusive
  EXPECT_EQ(fired, 1);
  EXPECT_EQ(env.now_nanos(), 10 * kMs);
  EXPECT_EQ(env.RunFor(5 * kMs), 0u);
  EXPECT_EQ(env.now_nanos(), 15 * kMs);
  env.AdvanceTime(100 * kMs);  // overdue timer runs on the next Run*, time does not go back
  EXPECT_EQ(fired, 1);
  EXPECT_TRUE(env.RunOne());
  EXPECT_EQ(fired, 2);
  EXPECT_EQ(env.now_nanos(), 115 * kMs);
}

TEST(SimExecutorTest, RunUntilIdleHonoursStepBound) {
  SimEnv env(1);
  std::function<void()> forever = [&] { env.executor().Schedule(kMs, forever); };
  env.executor().Post(forever);
  EXPECT_EQ(env.RunUntilIdle(1000), 1000u);
  EXPECT_EQ(env.pending_events(), 1u);
}

TEST(SimExecutorTest, ClockStartsAtZeroWithWallOffset) {
  SimOptions options;
  options.start_wall_nanos = 1'000'000'000'000'000'000;
  SimEnv env(1, options);
  EXPECT_EQ(env.clock().NowMonotonicNanos(), 0);
  EXPECT_EQ(env.clock().NowWallNanos(), options.start_wall_nanos);
  env.AdvanceTime(5);
  env.SetWallOffset(-1000);
  EXPECT_EQ(env.clock().NowMonotonicNanos(), 5);
  EXPECT_EQ(env.clock().NowWallNanos(), options.start_wall_nanos + 5 - 1000);
}

TEST(SimExecutorDeathTest, RunFromInsideACallbackIsABug) {
  EXPECT_DEATH(
      {
        SimEnv env(1);
        env.executor().Post([&] { env.RunOne(); });
        env.RunOne();
      },
      "inside a simulated callback");
}

// ---------------------------------------------------------------------------------------
// Filesystem: crash semantics

TEST(SimFsCrashTest, LosesExactlyTheUnsyncedWrites) {
  SimEnv env(3);
  SimFileSystem& fs = env.sim_fs();
  ASSERT_TRUE(fs.CreateDirs("/db").ok());
  // Durable state: four synced files whose directory entries are synced.
  auto durable = fs.NewWritableFile("/db/durable", OpenMode::kCreateNew);
  ASSERT_TRUE(durable.ok());
  ASSERT_TRUE((*durable)->Append("synced;").ok());
  ASSERT_TRUE((*durable)->Sync().ok());
  WriteSynced(fs, "/db/old-name", "renamed");
  WriteSynced(fs, "/db/deleted", "back");
  WriteSynced(fs, "/db/rewritten", "old content");
  ASSERT_TRUE(fs.SyncDir("/db").ok());

  // Everything below is never made durable.
  ASSERT_TRUE((*durable)->Append("unsynced").ok());  // appended after the sync: lost
  EXPECT_EQ((*durable)->Size(), 15u);
  // Synced data, but its directory entry never made durable: the file is lost.
  WriteSynced(fs, "/db/undirsynced", "data");
  // Renamed and deleted after the last SyncDir: both revert.
  ASSERT_TRUE(fs.RenameFile("/db/old-name", "/db/new-name").ok());
  ASSERT_TRUE(fs.DeleteFile("/db/deleted").ok());
  // Reopened with kTruncate and rewritten without a sync: the old content survives.
  {
    auto f = fs.NewWritableFile("/db/rewritten", OpenMode::kTruncate);
    ASSERT_TRUE(f.ok());
    ASSERT_TRUE((*f)->Append("new").ok());
  }
  EXPECT_EQ(Read(fs, "/db/rewritten"), "new");
  auto reader = fs.NewRandomAccessFile("/db/durable");
  ASSERT_TRUE(reader.ok());
  auto lock = fs.LockFile("/db/LOCK");
  ASSERT_TRUE(lock.ok());

  fs.Crash();

  EXPECT_EQ(Read(fs, "/db/durable"), "synced;");
  EXPECT_FALSE(fs.FileExists("/db/undirsynced"));
  EXPECT_TRUE(fs.FileExists("/db/old-name"));
  EXPECT_FALSE(fs.FileExists("/db/new-name"));
  EXPECT_EQ(Read(fs, "/db/old-name"), "renamed");
  EXPECT_EQ(Read(fs, "/db/deleted"), "back");
  EXPECT_EQ(Read(fs, "/db/rewritten"), "old content");
  EXPECT_TRUE(fs.FileExists("/db"));  // CreateDirs is durable at once
  // Handles from before the crash are dead; the lock was released by the crash.
  uint8_t buf[4];
  EXPECT_EQ((*reader)->Read(0, 4, buf).status().code(), StatusCode::kInternal);
  EXPECT_EQ((*durable)->Append("x").code(), StatusCode::kInternal);
  auto relocked = fs.LockFile("/db/LOCK");
  EXPECT_TRUE(relocked.ok());
  lock->reset();  // an old lock's destructor does not release the new holder's lock
  EXPECT_EQ(fs.LockFile("/db/LOCK").status().code(), StatusCode::kFailedPrecondition);
  auto names = fs.ListDir("/db");
  ASSERT_TRUE(names.ok());
  // LOCK was created after the last SyncDir and recreated by the relock.
  EXPECT_THAT(*names,
              ::testing::ElementsAre("LOCK", "deleted", "durable", "old-name", "rewritten"));
}

TEST(SimFsCrashTest, RenameMadeDurableBySyncDirSurvives) {
  SimEnv env(3);
  FileSystem& fs = env.fs();
  ASSERT_TRUE(fs.CreateDirs("/d").ok());
  ASSERT_TRUE(fs.WriteFileAtomically("/d/config", "v1").ok());
  ASSERT_TRUE(fs.WriteFileAtomically("/d/config", "v2").ok());
  env.sim_fs().Crash();
  EXPECT_EQ(Read(fs, "/d/config"), "v2");
  EXPECT_FALSE(fs.FileExists("/d/config.tmp"));
}

TEST(SimFsCrashTest, HandleOpenedBeforeCrashFails) {
  SimEnv env(3);
  SimFileSystem& fs = env.sim_fs();
  auto f = fs.NewWritableFile("/f", OpenMode::kTruncate);
  ASSERT_TRUE(f.ok());
  fs.Crash();
  EXPECT_EQ((*f)->Append("x").code(), StatusCode::kInternal);
  EXPECT_EQ((*f)->Sync().code(), StatusCode::kInternal);
}

TEST(SimFsCrashTest, CrashAfterOpsFailsThatOpAndEverythingAfter) {
  SimEnv env(3);
  SimFileSystem& fs = env.sim_fs();
  auto f = fs.NewWritableFile("/wal", OpenMode::kTruncate);
  ASSERT_TRUE(f.ok());
  ASSERT_TRUE(fs.SyncDir("/").ok());
  const uint64_t before = fs.mutating_ops();
  fs.CrashAfterOps(3);
  EXPECT_TRUE((*f)->Append("a").ok());  // 1
  EXPECT_TRUE((*f)->Sync().ok());       // 2
  EXPECT_FALSE(fs.crashed());
  Status third = (*f)->Append("b");  // 3: the crash point
  EXPECT_EQ(third.code(), StatusCode::kInternal);
  EXPECT_NE(third.message().find("simulated crash"), std::string_view::npos);
  EXPECT_TRUE(fs.crashed());
  EXPECT_EQ(fs.mutating_ops(), before + 3);
  EXPECT_EQ((*f)->Sync().code(), StatusCode::kInternal);
  EXPECT_EQ(fs.CreateDirs("/x").code(), StatusCode::kInternal);
  EXPECT_EQ(fs.NewWritableFile("/y", OpenMode::kTruncate).status().code(), StatusCode::kInternal);
  EXPECT_EQ(fs.GetFileSize("/wal").status().code(), StatusCode::kInternal);
  EXPECT_FALSE(fs.FileExists("/wal"));
  EXPECT_EQ(fs.mutating_ops(), before + 3);  // ops on a dead filesystem are not counted

  fs.Crash();
  EXPECT_FALSE(fs.crashed());
  EXPECT_EQ(Read(fs, "/wal"), "a");       // the synced byte survived; "b" was never written
  EXPECT_TRUE(fs.CreateDirs("/x").ok());  // alive again, crash point disarmed
}

TEST(SimFsCrashTest, CrashAfterOpsZeroDisarms) {
  SimEnv env(3);
  SimFileSystem& fs = env.sim_fs();
  fs.CrashAfterOps(2);
  fs.CrashAfterOps(0);
  for (int i = 0; i < 10; ++i) ASSERT_TRUE(fs.CreateDirs("/d" + std::to_string(i)).ok());
  EXPECT_FALSE(fs.crashed());
}

TEST(SimFsCrashTest, TornWritesKeepOnlyAPrefixOfTheUnsyncedTail) {
  const std::string durable = "DURABLE-PREFIX|";
  std::string tail;
  for (int i = 0; i < 200; ++i) tail.push_back(static_cast<char>('a' + i % 26));
  int partial = 0, garbled = 0;
  for (uint64_t seed = 1; seed <= 200; ++seed) {
    SCOPED_TRACE("seed " + std::to_string(seed));
    SimEnv env(seed);
    SimFileSystem& fs = env.sim_fs();
    fs.SetTornWrites(true);
    WriteSynced(fs, "/log", durable);
    ASSERT_TRUE(fs.SyncDir("/").ok());
    {
      auto f = fs.NewWritableFile("/log", OpenMode::kAppend);
      ASSERT_TRUE(f.ok());
      for (size_t i = 0; i < tail.size(); i += 20)
        ASSERT_TRUE((*f)->Append(tail.substr(i, 20)).ok());
    }
    fs.Crash();
    const std::string got = Read(fs, "/log");
    ASSERT_GE(got.size(), durable.size());
    ASSERT_LE(got.size(), durable.size() + tail.size());
    ASSERT_EQ(got.substr(0, durable.size()), durable);  // durable bytes are never torn
    const std::string kept = got.substr(durable.size());
    // Every kept byte matches the tail except possibly the last kTornGarbleMaxBytes.
    const size_t intact = kept.size() > SimFileSystem::kTornGarbleMaxBytes
                              ? kept.size() - SimFileSystem::kTornGarbleMaxBytes
                              : 0;
    ASSERT_EQ(kept.substr(0, intact), tail.substr(0, intact));
    if (!kept.empty() && kept.size() < tail.size()) ++partial;
    if (kept != tail.substr(0, kept.size())) ++garbled;
    // The torn state is now durable: a second crash changes nothing.
    fs.Crash();
    ASSERT_EQ(Read(fs, "/log"), got);
  }
  EXPECT_GT(partial, 100);
  EXPECT_GT(garbled, 30);
}

TEST(SimFsCrashTest, NonTornCrashOfUnsyncedNewDataIsExact) {
  SimEnv env(9);
  SimFileSystem& fs = env.sim_fs();
  WriteSynced(fs, "/f", "abc");
  ASSERT_TRUE(fs.SyncDir("/").ok());
  auto f = fs.NewWritableFile("/f", OpenMode::kAppend);
  ASSERT_TRUE(f.ok());
  ASSERT_TRUE((*f)->Append("defgh").ok());
  fs.Crash();
  EXPECT_EQ(Read(fs, "/f"), "abc");
}

// ---------------------------------------------------------------------------------------
// Filesystem: ordinary behaviour

TEST(SimFsTest, ModesErrorsAndListing) {
  SimEnv env(5);
  SimFileSystem& fs = env.sim_fs();
  EXPECT_EQ(fs.NewWritableFile("/no/such/f", OpenMode::kTruncate).status().code(),
            StatusCode::kNotFound);
  ASSERT_TRUE(fs.CreateDirs("/a/b/").ok());
  ASSERT_TRUE(fs.CreateDirs("a//b/c").ok());  // relative paths resolve against "/"
  ASSERT_TRUE(fs.WriteFileAtomically("/a/b/file", "12345").ok());
  EXPECT_EQ(fs.NewWritableFile("/a/b/file", OpenMode::kCreateNew).status().code(),
            StatusCode::kAlreadyExists);
  EXPECT_EQ(fs.NewWritableFile("/a/b", OpenMode::kAppend).status().code(),
            StatusCode::kFailedPrecondition);
  EXPECT_EQ(fs.CreateDirs("/a/b/file/x").code(), StatusCode::kAlreadyExists);
  EXPECT_EQ(fs.NewWritableFile("/a/b/file/x", OpenMode::kAppend).status().code(),
            StatusCode::kFailedPrecondition);
  EXPECT_EQ(*fs.GetFileSize("/a/./b/../b/file"), 5u);
  EXPECT_EQ(fs.GetFileSize("/a/b/nope").status().code(), StatusCode::kNotFound);
  EXPECT_THAT(*fs.ListDir("/a/b"), ::testing::ElementsAre("c", "file"));
  EXPECT_EQ(fs.ListDir("/zz").status().code(), StatusCode::kNotFound);
  EXPECT_EQ(fs.DeleteDir("/a/b").code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(fs.RenameFile("/a/b", "/a/q").code(), StatusCode::kInvalidArgument);
  ASSERT_TRUE(fs.Truncate("/a/b/file", 2).ok());
  EXPECT_EQ(Read(fs, "/a/b/file"), "12");
  ASSERT_TRUE(fs.Truncate("/a/b/file", 4).ok());
  EXPECT_EQ(Read(fs, "/a/b/file"), std::string("12\0\0", 4));
  ASSERT_TRUE(fs.DeleteFile("/a/b/file").ok());
  ASSERT_TRUE(fs.DeleteDir("/a/b/c").ok());
  ASSERT_TRUE(fs.DeleteDir("/a/b").ok());
  EXPECT_THAT(*fs.ListDir("/a"), ::testing::IsEmpty());
  EXPECT_EQ(fs.DeleteDir("/a/b").code(), StatusCode::kNotFound);

  auto w = fs.NewWritableFile("/w", OpenMode::kTruncate);
  ASSERT_TRUE(w.ok());
  ASSERT_TRUE((*w)->Close().ok());
  EXPECT_EQ((*w)->Append("x").code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ((*w)->Close().code(), StatusCode::kFailedPrecondition);
}

TEST(SimFsTest, ReaderSeesAppendsAndShortReads) {
  SimEnv env(5);
  FileSystem& fs = env.fs();
  auto w = fs.NewWritableFile("/r", OpenMode::kCreateNew);
  ASSERT_TRUE(w.ok());
  ASSERT_TRUE((*w)->Append("hello").ok());
  auto r = fs.NewRandomAccessFile("/r");
  ASSERT_TRUE(r.ok());
  ASSERT_TRUE((*w)->Append(" world").ok());
  uint8_t buf[32];
  auto n = (*r)->Read(6, sizeof(buf), buf);
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(std::string(reinterpret_cast<char*>(buf), *n), "world");
  EXPECT_EQ(*(*r)->Read(100, 4, buf), 0u);
  EXPECT_EQ(*(*r)->Size(), 11u);
}

TEST(SimFsTest, CorruptByteAndTruncateHitDurableContent) {
  SimEnv env(5);
  SimFileSystem& fs = env.sim_fs();
  WriteSynced(fs, "/c", "abcdef");
  ASSERT_TRUE(fs.SyncDir("/").ok());
  ASSERT_TRUE(fs.CorruptByte("/c", 1, 0x01).ok());
  EXPECT_EQ(Read(fs, "/c"),
            "acc"
            "def");
  EXPECT_EQ(fs.CorruptByte("/c", 6, 1).code(), StatusCode::kOutOfRange);
  EXPECT_EQ(fs.CorruptByte("/nope", 0, 1).code(), StatusCode::kNotFound);
  ASSERT_TRUE(fs.CorruptTruncate("/c", 4).ok());
  fs.Crash();
  EXPECT_EQ(Read(fs, "/c"), "accd");  // both survive the crash: they hit durable content
}

TEST(SimFsTest, LocksAreExclusive) {
  SimEnv env(5);
  FileSystem& fs = env.fs();
  auto a = fs.LockFile("/LOCK");
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(fs.LockFile("/LOCK").status().code(), StatusCode::kFailedPrecondition);
  a->reset();
  EXPECT_TRUE(fs.LockFile("/LOCK").ok());
}

TEST(SimFsTest, NodeFileSystemsCrashIndependently) {
  SimEnv env(5);
  auto fs1 = env.NewFileSystem("n1");
  auto fs2 = env.NewFileSystem("n2");
  auto node1 = env.NodeEnv(*fs1);
  auto node2 = env.NodeEnv(*fs2);
  ASSERT_TRUE(node1->fs().WriteFileAtomically("/state", "one").ok());
  auto f = node2->fs().NewWritableFile("/state", OpenMode::kCreateNew);
  ASSERT_TRUE(f.ok());
  ASSERT_TRUE((*f)->Append("two").ok());
  EXPECT_FALSE(env.fs().FileExists("/state"));  // separate namespaces
  fs1->Crash();
  fs2->Crash();
  EXPECT_EQ(Read(node1->fs(), "/state"), "one");
  EXPECT_FALSE(node2->fs().FileExists("/state"));
  EXPECT_EQ(&node1->clock(), &env.clock());
  EXPECT_EQ(&node1->transport(), &env.transport());
}

// ---------------------------------------------------------------------------------------
// Network

class SimNetTest : public ::testing::Test {
 protected:
  void SetUp() override {
    for (const char* name : {"a", "b", "c"}) {
      auto ep = env_.transport().Listen(
          name, [this, name](Message m) { received_[name].push_back(m.from + ">" + m.payload); });
      ASSERT_TRUE(ep.ok());
      endpoints_[name] = std::move(*ep);
    }
  }
  SimEnv env_{11};
  std::map<std::string, std::unique_ptr<Endpoint>> endpoints_;
  std::map<std::string, std::vector<std::string>> received_;
};

TEST_F(SimNetTest, DeliversAfterLatencyOnTheLoop) {
  env_.sim_transport().SetLatency(2 * kMs, 2 * kMs);
  ASSERT_TRUE(endpoints_["a"]->Send("b", "hi").ok());
  EXPECT_TRUE(received_["b"].empty());  // nothing runs until the loop does
  env_.RunFor(2 * kMs - 1);
  EXPECT_TRUE(received_["b"].empty());
  env_.RunFor(1);
  EXPECT_EQ(received_["b"], std::vector<std::string>{"a>hi"});
  EXPECT_EQ(env_.sim_transport().stats().delivered, 1u);
}

TEST_F(SimNetTest, PartitionBlocksBothWaysAndHealRestores) {
  SimTransport& net = env_.sim_transport();
  ASSERT_TRUE(endpoints_["a"]->Send("b", "in-flight").ok());
  net.Partition("a", "b");  // in-flight messages are blocked too
  ASSERT_TRUE(endpoints_["a"]->Send("b", "1").ok());
  ASSERT_TRUE(endpoints_["b"]->Send("a", "2").ok());
  ASSERT_TRUE(endpoints_["a"]->Send("c", "3").ok());  // other links unaffected
  env_.RunUntilIdle();
  EXPECT_TRUE(received_["a"].empty());
  EXPECT_TRUE(received_["b"].empty());
  EXPECT_EQ(received_["c"], std::vector<std::string>{"a>3"});
  net.Heal();
  ASSERT_TRUE(endpoints_["a"]->Send("b", "4").ok());
  ASSERT_TRUE(endpoints_["b"]->Send("a", "5").ok());
  env_.RunUntilIdle();
  EXPECT_EQ(received_["b"], std::vector<std::string>{"a>4"});
  EXPECT_EQ(received_["a"], std::vector<std::string>{"b>5"});
  EXPECT_EQ(net.stats().dropped, 3u);
}

TEST_F(SimNetTest, IsolateCutsANodeOff) {
  env_.sim_transport().Isolate("c");
  ASSERT_TRUE(endpoints_["a"]->Send("c", "x").ok());
  ASSERT_TRUE(endpoints_["c"]->Send("b", "y").ok());
  ASSERT_TRUE(endpoints_["a"]->Send("b", "z").ok());
  env_.RunUntilIdle();
  EXPECT_TRUE(received_["c"].empty());
  EXPECT_EQ(received_["b"], std::vector<std::string>{"a>z"});
}

TEST_F(SimNetTest, DropProbabilityOneDropsEverything) {
  env_.sim_transport().SetDropProbability(1.0);
  for (int i = 0; i < 100; ++i) ASSERT_TRUE(endpoints_["a"]->Send("b", "m").ok());
  env_.RunUntilIdle();
  EXPECT_TRUE(received_["b"].empty());
  EXPECT_EQ(env_.sim_transport().stats().dropped, 100u);
}

TEST_F(SimNetTest, DuplicateProbabilityOneDeliversTwice) {
  env_.sim_transport().SetDuplicateProbability(1.0);
  for (int i = 0; i < 50; ++i) ASSERT_TRUE(endpoints_["a"]->Send("b", std::to_string(i)).ok());
  env_.RunUntilIdle();
  ASSERT_EQ(received_["b"].size(), 100u);
  std::map<std::string, int> counts;
  for (const auto& m : received_["b"]) ++counts[m];
  for (const auto& [m, n] : counts) EXPECT_EQ(n, 2) << m;
  EXPECT_EQ(env_.sim_transport().stats().duplicated, 50u);
}

TEST_F(SimNetTest, WideLatencyReorders) {
  env_.sim_transport().SetLatency(0, 10 * kMs);
  std::vector<std::string> sent;
  for (int i = 0; i < 50; ++i) {
    sent.push_back("a>" + std::to_string(i));
    ASSERT_TRUE(endpoints_["a"]->Send("b", std::to_string(i)).ok());
  }
  env_.RunUntilIdle();
  EXPECT_NE(received_["b"], sent);  // same messages, different order
  std::multiset<std::string> got(received_["b"].begin(), received_["b"].end());
  EXPECT_EQ(got, std::multiset<std::string>(sent.begin(), sent.end()));
}

TEST_F(SimNetTest, UnknownOrClosedDestinationDrops) {
  ASSERT_TRUE(endpoints_["a"]->Send("nobody", "x").ok());
  ASSERT_TRUE(endpoints_["a"]->Send("b", "y").ok());
  endpoints_["b"].reset();  // closed while the message is in flight
  env_.RunUntilIdle();
  EXPECT_EQ(env_.sim_transport().stats().dropped, 2u);
  EXPECT_TRUE(received_["b"].empty());
  // The name is free again.
  EXPECT_TRUE(env_.transport().Listen("b", [](Message) {}).ok());
  EXPECT_EQ(env_.transport().Listen("a", [](Message) {}).status().code(),
            StatusCode::kAlreadyExists);
}

TEST_F(SimNetTest, LimitsOnPayloadAndInFlight) {
  std::string big(Transport::kMaxPayloadBytes + 1, 'x');
  EXPECT_EQ(endpoints_["a"]->Send("b", big).code(), StatusCode::kInvalidArgument);
  big.pop_back();
  EXPECT_TRUE(endpoints_["a"]->Send("b", std::move(big)).ok());
  env_.sim_transport().SetMaxInFlightPerLink(2);
  EXPECT_TRUE(endpoints_["a"]->Send("c", "1").ok());
  EXPECT_TRUE(endpoints_["a"]->Send("c", "2").ok());
  EXPECT_EQ(endpoints_["a"]->Send("c", "3").code(), StatusCode::kResourceExhausted);
  EXPECT_TRUE(endpoints_["b"]->Send("c", "4").ok());  // per link
  env_.RunUntilIdle();
  EXPECT_TRUE(endpoints_["a"]->Send("c", "5").ok());  // drained
}

TEST_F(SimNetTest, HandlerMayCloseItsOwnEndpoint) {
  std::unique_ptr<Endpoint> self;
  auto ep = env_.transport().Listen("selfish", [&](Message) { self.reset(); });
  ASSERT_TRUE(ep.ok());
  self = std::move(*ep);
  ASSERT_TRUE(endpoints_["a"]->Send("selfish", "bye").ok());
  ASSERT_TRUE(endpoints_["a"]->Send("selfish", "after").ok());
  env_.RunUntilIdle();
  EXPECT_EQ(self, nullptr);
  EXPECT_EQ(env_.sim_transport().stats().delivered, 1u);
}

}  // namespace
}  // namespace converge::sim
