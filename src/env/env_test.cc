// Tests of the production Env: POSIX files in a temp dir, the Asio executor, clock and random.
#include "converge/env.h"

#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <filesystem>
#include <future>
#include <mutex>
#include <set>
#include <thread>
#include <vector>

#include "env/asio_executor.h"
#include "env/posix_fs.h"

namespace converge {
namespace {

// A fresh directory under $TMPDIR, removed with everything in it at the end of the test.
class TempDir {
 public:
  TempDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "converge-env-XXXXXX").string();
    char* made = ::mkdtemp(tmpl.data());
    EXPECT_NE(made, nullptr);
    path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }
  std::string operator/(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

// ---------------------------------------------------------------------------------------
// Clock and Random

TEST(PosixClockTest, MonotonicNeverGoesBackAndWallIsRecent) {
  Clock& clock = Env::Default().clock();
  int64_t prev = clock.NowMonotonicNanos();
  for (int i = 0; i < 1000; ++i) {
    int64_t now = clock.NowMonotonicNanos();
    EXPECT_GE(now, prev);
    prev = now;
  }
  // After 2023-01-01 and before 2100-01-01.
  EXPECT_GT(clock.NowWallNanos(), 1'672'531'200'000'000'000);
  EXPECT_LT(clock.NowWallNanos(), 4'102'444'800'000'000'000);
  EXPECT_EQ(clock.NowWallMicros() / 1'000'000, clock.NowWallNanos() / 1'000'000'000);
}

TEST(PosixRandomTest, RangesAreRespectedAndCovered) {
  Random& random = Env::Default().random();
  std::set<int64_t> seen;
  for (int i = 0; i < 10000; ++i) {
    int64_t x = random.UniformRange(-3, 3);
    ASSERT_GE(x, -3);
    ASSERT_LE(x, 3);
    seen.insert(x);
    ASSERT_LT(random.Uniform(7), 7u);
    double d = random.NextDouble();
    ASSERT_GE(d, 0.0);
    ASSERT_LT(d, 1.0);
  }
  EXPECT_EQ(seen.size(), 7u);  // every value of [-3, 3] appears
  EXPECT_EQ(random.UniformRange(5, 5), 5);
  // The full int64 range does not overflow.
  (void)random.UniformRange(INT64_MIN, INT64_MAX);
  EXPECT_FALSE(random.Bernoulli(0.0));
  EXPECT_TRUE(random.Bernoulli(1.0));
}

TEST(PosixRandomTest, FillCoversOddLengthsAndThreadsDiffer) {
  Random& random = Env::Default().random();
  std::vector<uint8_t> buf(37, 0);
  random.Fill(buf);
  int zeros = 0;
  for (uint8_t b : buf) zeros += (b == 0);
  EXPECT_LT(zeros, 10);

  // Each thread draws from its own generator: concurrent use is safe and streams differ.
  constexpr int kThreads = 4;
  std::vector<std::vector<uint64_t>> draws(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 1000; ++i) draws[t].push_back(random.Next64());
    });
  }
  for (auto& th : threads) th.join();
  std::set<uint64_t> all;
  for (auto& d : draws) all.insert(d.begin(), d.end());
  EXPECT_EQ(all.size(), static_cast<size_t>(kThreads * 1000));
}

// ---------------------------------------------------------------------------------------
// Executor

// Collects values from executor callbacks; Wait blocks until `n` have arrived.
class Recorder {
 public:
  void Add(int v) {
    std::lock_guard<std::mutex> lock(mu_);
    values_.push_back(v);
    cv_.notify_all();
  }
  std::vector<int> Wait(size_t n) {
    std::unique_lock<std::mutex> lock(mu_);
    bool ok = cv_.wait_for(lock, std::chrono::seconds(10), [&] { return values_.size() >= n; });
    EXPECT_TRUE(ok) << "timed out waiting for " << n << " callbacks";
    return values_;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<int> values_;
};

TEST(AsioExecutorTest, PostRunsOnTheExecutorThreadInOrder) {
  internal::AsioExecutor executor;
  Recorder rec;
  std::atomic<bool> on_executor{true};
  for (int i = 0; i < 100; ++i) {
    executor.Post([&, i] {
      if (!executor.InExecutorThread()) on_executor = false;
      rec.Add(i);
    });
  }
  std::vector<int> got = rec.Wait(100);
  for (int i = 0; i < 100; ++i) EXPECT_EQ(got[i], i);
  EXPECT_TRUE(on_executor);
}

TEST(AsioExecutorTest, TimersFireInDueOrder) {
  internal::AsioExecutor executor;
  Recorder rec;
  const int64_t ms = 1'000'000;
  executor.Schedule(60 * ms, [&] { rec.Add(3); });
  executor.Schedule(20 * ms, [&] { rec.Add(1); });
  executor.Schedule(40 * ms, [&] { rec.Add(2); });
  executor.Schedule(-5, [&] { rec.Add(0); });  // negative delay: as soon as possible
  EXPECT_EQ(rec.Wait(4), (std::vector<int>{0, 1, 2, 3}));
}

TEST(AsioExecutorTest, TimerWaitsAtLeastItsDelay) {
  internal::AsioExecutor executor;
  Clock& clock = Env::Default().clock();
  Recorder rec;
  const int64_t start = clock.NowMonotonicNanos();
  std::atomic<int64_t> fired_at{0};
  executor.Schedule(15'000'000, [&] {
    fired_at = clock.NowMonotonicNanos();
    rec.Add(1);
  });
  rec.Wait(1);
  EXPECT_GE(fired_at.load() - start, 15'000'000);
}

TEST(AsioExecutorTest, CancelIsExact) {
  internal::AsioExecutor executor;
  Recorder rec;
  const int64_t ms = 1'000'000;
  TimerId cancelled = executor.Schedule(20 * ms, [&] { rec.Add(1); });
  TimerId kept = executor.Schedule(5 * ms, [&] { rec.Add(2); });
  EXPECT_TRUE(executor.Cancel(cancelled));
  EXPECT_FALSE(executor.Cancel(cancelled));  // already cancelled
  EXPECT_FALSE(executor.Cancel(987654));     // unknown
  executor.Schedule(60 * ms, [&] { rec.Add(3); });
  EXPECT_EQ(rec.Wait(2), (std::vector<int>{2, 3}));  // 1 never ran although its time passed
  EXPECT_FALSE(executor.Cancel(kept));               // already fired
}

TEST(AsioExecutorTest, CancelFromInsideACallback) {
  internal::AsioExecutor executor;
  Recorder rec;
  TimerId later = executor.Schedule(30'000'000, [&] { rec.Add(99); });
  executor.Post([&] { rec.Add(executor.Cancel(later) ? 1 : 0); });
  executor.Schedule(50'000'000, [&] { rec.Add(2); });
  EXPECT_EQ(rec.Wait(2), (std::vector<int>{1, 2}));
}

TEST(AsioExecutorTest, DestructionDropsPendingTimers) {
  std::atomic<int> ran{0};
  {
    internal::AsioExecutor executor;
    executor.Schedule(3'600'000'000'000, [&] { ++ran; });
  }
  EXPECT_EQ(ran.load(), 0);
}

TEST(DefaultEnvTest, IsASingleton) {
  EXPECT_EQ(&Env::Default(), &Env::Default());
  Recorder rec;
  Env::Default().executor().Post([&] { rec.Add(7); });
  EXPECT_EQ(rec.Wait(1), std::vector<int>{7});
}

// ---------------------------------------------------------------------------------------
// POSIX file system

class PosixFsTest : public ::testing::Test {
 protected:
  FileSystem& fs_ = Env::Default().fs();
  TempDir dir_;
};

TEST_F(PosixFsTest, AppendSyncCloseAndReadBack) {
  const std::string path = dir_ / "a.log";
  auto file = fs_.NewWritableFile(path, OpenMode::kCreateNew);
  ASSERT_TRUE(file.ok()) << file.status().ToString();
  ASSERT_TRUE((*file)->Append("hello ").ok());
  ASSERT_TRUE((*file)->Append("world").ok());
  EXPECT_EQ((*file)->Size(), 11u);
  ASSERT_TRUE((*file)->Sync().ok());
  ASSERT_TRUE((*file)->Close().ok());

  Status after_close = (*file)->Append("x");
  EXPECT_EQ(after_close.code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ((*file)->Close().code(), StatusCode::kFailedPrecondition);

  auto content = fs_.ReadFileToString(path);
  ASSERT_TRUE(content.ok());
  EXPECT_EQ(*content, "hello world");
  EXPECT_EQ(*fs_.GetFileSize(path), 11u);

  auto reader = fs_.NewRandomAccessFile(path);
  ASSERT_TRUE(reader.ok());
  uint8_t buf[16];
  auto n = (*reader)->Read(6, 16, buf);  // short read at end of file
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(std::string(reinterpret_cast<char*>(buf), *n), "world");
  EXPECT_EQ(*(*reader)->Read(11, 4, buf), 0u);
  EXPECT_EQ(*(*reader)->Size(), 11u);
}

TEST_F(PosixFsTest, OpenModes) {
  const std::string path = dir_ / "m";
  ASSERT_TRUE(fs_.WriteFileAtomically(path, "abc").ok());

  auto exists = fs_.NewWritableFile(path, OpenMode::kCreateNew);
  EXPECT_EQ(exists.status().code(), StatusCode::kAlreadyExists);
  EXPECT_NE(exists.status().message().find(path), std::string_view::npos)
      << exists.status().ToString();

  {
    auto append = fs_.NewWritableFile(path, OpenMode::kAppend);
    ASSERT_TRUE(append.ok());
    EXPECT_EQ((*append)->Size(), 3u);
    ASSERT_TRUE((*append)->Append("def").ok());
    EXPECT_EQ((*append)->Size(), 6u);
  }  // destructor closes
  EXPECT_EQ(*fs_.ReadFileToString(path), "abcdef");

  {
    auto trunc = fs_.NewWritableFile(path, OpenMode::kTruncate);
    ASSERT_TRUE(trunc.ok());
    EXPECT_EQ((*trunc)->Size(), 0u);
    ASSERT_TRUE((*trunc)->Append("z").ok());
  }
  EXPECT_EQ(*fs_.ReadFileToString(path), "z");
}

TEST_F(PosixFsTest, MissingThingsAreNotFoundWithPathInMessage) {
  const std::string missing = dir_ / "nope";
  auto r = fs_.NewRandomAccessFile(missing);
  EXPECT_EQ(r.status().code(), StatusCode::kNotFound);
  EXPECT_NE(r.status().message().find(missing), std::string_view::npos);
  EXPECT_NE(r.status().message().find("No such file"), std::string_view::npos);
  EXPECT_EQ(fs_.GetFileSize(missing).status().code(), StatusCode::kNotFound);
  EXPECT_EQ(fs_.DeleteFile(missing).code(), StatusCode::kNotFound);
  EXPECT_EQ(fs_.ListDir(missing).status().code(), StatusCode::kNotFound);
  EXPECT_EQ(fs_.RenameFile(missing, dir_ / "x").code(), StatusCode::kNotFound);
  EXPECT_EQ(fs_.Truncate(missing, 0).code(), StatusCode::kNotFound);
  EXPECT_EQ(fs_.NewWritableFile(dir_ / "no/dir/f", OpenMode::kTruncate).status().code(),
            StatusCode::kNotFound);
  EXPECT_FALSE(fs_.FileExists(missing));
}

TEST_F(PosixFsTest, DirectoriesCreateListDelete) {
  const std::string nested = dir_ / "a/b/c";
  ASSERT_TRUE(fs_.CreateDirs(nested).ok());
  ASSERT_TRUE(fs_.CreateDirs(nested).ok());  // idempotent
  ASSERT_TRUE(fs_.CreateDirs(nested + "/").ok());
  EXPECT_TRUE(fs_.FileExists(nested));
  ASSERT_TRUE(fs_.WriteFileAtomically(nested + "/z", "1").ok());
  ASSERT_TRUE(fs_.WriteFileAtomically(nested + "/a", "2").ok());
  ASSERT_TRUE(fs_.CreateDirs(nested + "/m").ok());
  auto names = fs_.ListDir(nested);
  ASSERT_TRUE(names.ok());
  EXPECT_EQ(*names, (std::vector<std::string>{"a", "m", "z"}));  // sorted, no temp leftovers

  // A file where a directory is wanted.
  EXPECT_EQ(fs_.CreateDirs(nested + "/z").code(), StatusCode::kAlreadyExists);
  EXPECT_EQ(fs_.CreateDirs(nested + "/z/y").code(), StatusCode::kAlreadyExists);
  EXPECT_EQ(fs_.NewWritableFile(nested + "/z/y", OpenMode::kTruncate).status().code(),
            StatusCode::kFailedPrecondition);  // ENOTDIR

  EXPECT_EQ(fs_.DeleteDir(nested).code(), StatusCode::kFailedPrecondition);  // not empty
  ASSERT_TRUE(fs_.DeleteFile(nested + "/z").ok());
  ASSERT_TRUE(fs_.DeleteFile(nested + "/a").ok());
  ASSERT_TRUE(fs_.DeleteDir(nested + "/m").ok());
  ASSERT_TRUE(fs_.DeleteDir(nested).ok());
  EXPECT_FALSE(fs_.FileExists(nested));
  EXPECT_TRUE(fs_.SyncDir(dir_ / "a/b").ok());
  EXPECT_EQ(fs_.SyncDir(nested).code(), StatusCode::kNotFound);
}

TEST_F(PosixFsTest, RenameReplacesAndTruncateCuts) {
  ASSERT_TRUE(fs_.WriteFileAtomically(dir_ / "from", "new content").ok());
  ASSERT_TRUE(fs_.WriteFileAtomically(dir_ / "to", "old").ok());
  ASSERT_TRUE(fs_.RenameFile(dir_ / "from", dir_ / "to").ok());
  EXPECT_FALSE(fs_.FileExists(dir_ / "from"));
  EXPECT_EQ(*fs_.ReadFileToString(dir_ / "to"), "new content");
  ASSERT_TRUE(fs_.SyncDir(dir_.path()).ok());

  ASSERT_TRUE(fs_.Truncate(dir_ / "to", 3).ok());
  EXPECT_EQ(*fs_.ReadFileToString(dir_ / "to"), "new");
  EXPECT_EQ(fs_.GetFileSize(dir_.path()).status().code(), StatusCode::kFailedPrecondition);
}

TEST_F(PosixFsTest, LockIsExclusiveUntilReleased) {
  const std::string path = dir_ / "LOCK";
  auto first = fs_.LockFile(path);
  ASSERT_TRUE(first.ok()) << first.status().ToString();
  auto second = fs_.LockFile(path);
  EXPECT_EQ(second.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(second.status().message().find(path), std::string_view::npos);
  first->reset();  // release
  auto third = fs_.LockFile(path);
  EXPECT_TRUE(third.ok()) << third.status().ToString();
}

TEST_F(PosixFsTest, LargeAppendAndPartialReads) {
  const std::string path = dir_ / "big";
  std::string data(3 << 20, '\0');
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<char>(i * 131 + (i >> 9));
  {
    auto file = fs_.NewWritableFile(path, OpenMode::kTruncate);
    ASSERT_TRUE(file.ok());
    ASSERT_TRUE((*file)->Append(data).ok());
    ASSERT_TRUE((*file)->Sync().ok());
    ASSERT_TRUE((*file)->Close().ok());
  }
  auto reader = fs_.NewRandomAccessFile(path);
  ASSERT_TRUE(reader.ok());
  std::string got(1000, '\0');
  auto n = (*reader)->Read(1'234'567, got.size(), reinterpret_cast<uint8_t*>(got.data()));
  ASSERT_TRUE(n.ok());
  ASSERT_EQ(*n, 1000u);
  EXPECT_EQ(got, data.substr(1'234'567, 1000));
  EXPECT_EQ(*fs_.ReadFileToString(path), data);
}

TEST(PosixErrorTest, MapsErrnoToCodes) {
  EXPECT_EQ(internal::PosixError("op", "/p", ENOENT).code(), StatusCode::kNotFound);
  EXPECT_EQ(internal::PosixError("op", "/p", EEXIST).code(), StatusCode::kAlreadyExists);
  EXPECT_EQ(internal::PosixError("op", "/p", ENOSPC).code(), StatusCode::kResourceExhausted);
  EXPECT_EQ(internal::PosixError("op", "/p", EIO).code(), StatusCode::kInternal);
  Status s = internal::PosixError("write", "/data/x", ENOSPC);
  EXPECT_EQ(s.message(), "write '/data/x': No space left on device");
}

}  // namespace
}  // namespace converge
