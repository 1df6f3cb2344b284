// Tests of the production Env: POSIX files in a temp dir, the Asio executor, clock and random.
#include "converge/env.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include <array>
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
#include "env/tcp_transport.h"
#include "support/temp_dir.h"

namespace converge {
namespace {


// One temporary directory per test (tests/support/temp_dir.h).
using ::converge::testing::TempDir;

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

// Secrets come from the kernel, not from the per-thread generator whose outputs leave the
// process as ids: a recorded stream of Next64 must not contain them.
TEST(PosixRandomTest, FillSecretIsNotDrawnFromTheIdGenerator) {
  Random& random = Env::Default().random();
  std::vector<uint64_t> before(64);
  for (uint64_t& v : before) v = random.Next64();
  std::array<uint8_t, 33> a{}, b{};
  random.FillSecret(a);
  random.FillSecret(b);
  EXPECT_NE(a, b);
  int zeros = 0;
  for (uint8_t x : a) zeros += (x == 0);
  EXPECT_LT(zeros, 10);
  // The generator's next outputs are those it would have given without the secrets: had
  // FillSecret drawn from it, the words of `a` would be missing from the stream.
  uint64_t first_word = 0;
  for (int j = 0; j < 8; ++j) first_word |= uint64_t{a[j]} << (8 * j);
  std::set<uint64_t> after;
  for (int i = 0; i < 64; ++i) after.insert(random.Next64());
  EXPECT_EQ(after.count(first_word), 0u);
  EXPECT_EQ(std::set<uint64_t>(before.begin(), before.end()).count(first_word), 0u);
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
  const std::string path = dir_.Sub("a.log");
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
  const std::string path = dir_.Sub("m");
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
  const std::string missing = dir_.Sub("nope");
  auto r = fs_.NewRandomAccessFile(missing);
  EXPECT_EQ(r.status().code(), StatusCode::kNotFound);
  EXPECT_NE(r.status().message().find(missing), std::string_view::npos);
  EXPECT_NE(r.status().message().find("No such file"), std::string_view::npos);
  EXPECT_EQ(fs_.GetFileSize(missing).status().code(), StatusCode::kNotFound);
  EXPECT_EQ(fs_.DeleteFile(missing).code(), StatusCode::kNotFound);
  EXPECT_EQ(fs_.ListDir(missing).status().code(), StatusCode::kNotFound);
  EXPECT_EQ(fs_.RenameFile(missing, dir_.Sub("x")).code(), StatusCode::kNotFound);
  EXPECT_EQ(fs_.Truncate(missing, 0).code(), StatusCode::kNotFound);
  EXPECT_EQ(fs_.NewWritableFile(dir_.Sub("no/dir/f"), OpenMode::kTruncate).status().code(),
            StatusCode::kNotFound);
  EXPECT_FALSE(fs_.FileExists(missing));
}

TEST_F(PosixFsTest, DirectoriesCreateListDelete) {
  const std::string nested = dir_.Sub("a/b/c");
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
  EXPECT_TRUE(fs_.SyncDir(dir_.Sub("a/b")).ok());
  EXPECT_EQ(fs_.SyncDir(nested).code(), StatusCode::kNotFound);
}

TEST_F(PosixFsTest, RenameReplacesAndTruncateCuts) {
  ASSERT_TRUE(fs_.WriteFileAtomically(dir_.Sub("from"), "new content").ok());
  ASSERT_TRUE(fs_.WriteFileAtomically(dir_.Sub("to"), "old").ok());
  ASSERT_TRUE(fs_.RenameFile(dir_.Sub("from"), dir_.Sub("to")).ok());
  EXPECT_FALSE(fs_.FileExists(dir_.Sub("from")));
  EXPECT_EQ(*fs_.ReadFileToString(dir_.Sub("to")), "new content");
  ASSERT_TRUE(fs_.SyncDir(dir_.path()).ok());

  ASSERT_TRUE(fs_.Truncate(dir_.Sub("to"), 3).ok());
  EXPECT_EQ(*fs_.ReadFileToString(dir_.Sub("to")), "new");
  EXPECT_EQ(fs_.GetFileSize(dir_.path()).status().code(), StatusCode::kFailedPrecondition);
}

TEST_F(PosixFsTest, LockIsExclusiveUntilReleased) {
  const std::string path = dir_.Sub("LOCK");
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
  const std::string path = dir_.Sub("big");
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
  EXPECT_TRUE(s.storage_full());
  EXPECT_TRUE(internal::PosixError("write", "/data/x", EDQUOT).storage_full());
  // Out of descriptors is ResourceExhausted too, but not a full disk.
  EXPECT_FALSE(internal::PosixError("open", "/data/x", EMFILE).storage_full());
}

// ---------------------------------------------------------------------------------------
// TCP transport

// Collects messages from a transport handler; Wait blocks until `n` have arrived.
class Inbox {
 public:
  Transport::Handler Handler(internal::AsioExecutor* executor = nullptr) {
    return [this, executor](Message m) {
      if (executor != nullptr && !executor->InExecutorThread()) off_thread_ = true;
      std::lock_guard<std::mutex> lock(mu_);
      messages_.push_back(std::move(m));
      cv_.notify_all();
    };
  }
  std::vector<Message> Wait(size_t n, int timeout_s = 20) {
    std::unique_lock<std::mutex> lock(mu_);
    bool ok =
        cv_.wait_for(lock, std::chrono::seconds(timeout_s), [&] { return messages_.size() >= n; });
    EXPECT_TRUE(ok) << "timed out: " << messages_.size() << " of " << n << " messages";
    return messages_;
  }
  size_t size() {
    std::lock_guard<std::mutex> lock(mu_);
    return messages_.size();
  }
  bool off_thread() const { return off_thread_; }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<Message> messages_;
  std::atomic<bool> off_thread_{false};
};

// Blocks until every task posted to `executor` before this call has run.
void Flush(internal::AsioExecutor& executor) {
  std::promise<void> done;
  executor.Post([&] { done.set_value(); });
  done.get_future().wait();
}

uint16_t PortOf(const std::string& address) {
  return static_cast<uint16_t>(std::stoi(address.substr(address.rfind(':') + 1)));
}

TEST(TcpTransportTest, TwoEndpointsExchangeMessages) {
  internal::AsioExecutor executor;
  internal::TcpTransport transport(executor);
  Inbox inbox_a, inbox_b;
  auto a = transport.Listen("127.0.0.1:0", inbox_a.Handler(&executor));
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  // B echoes every message back to its sender, with a suffix.
  std::unique_ptr<Endpoint> b_endpoint;
  std::atomic<bool> reply_failed{false};
  auto b = transport.Listen("127.0.0.1:0", [&](Message m) {
    if (!b_endpoint->Send(m.from, m.payload + "/echo").ok()) reply_failed = true;
    inbox_b.Handler (&executor)(std::move(m));
  });
  ASSERT_TRUE(b.ok()) << b.status().ToString();
  b_endpoint = std::move(*b);
  EXPECT_NE(PortOf((*a)->address()), 0);
  EXPECT_NE(PortOf((*a)->address()), PortOf(b_endpoint->address()));
  EXPECT_EQ((*a)->address().rfind("127.0.0.1:", 0), 0u);

  constexpr int kMessages = 500;
  for (int i = 0; i < kMessages; ++i) {
    ASSERT_TRUE((*a)->Send(b_endpoint->address(), "msg-" + std::to_string(i)).ok());
  }
  std::vector<Message> at_b = inbox_b.Wait(kMessages);
  std::vector<Message> at_a = inbox_a.Wait(kMessages);
  ASSERT_EQ(at_b.size(), static_cast<size_t>(kMessages));
  ASSERT_EQ(at_a.size(), static_cast<size_t>(kMessages));
  // One connection per peer: order happens to be kept (not part of the contract).
  for (int i = 0; i < kMessages; ++i) {
    EXPECT_EQ(at_b[i].payload, "msg-" + std::to_string(i));
    EXPECT_EQ(at_b[i].from, (*a)->address());
    EXPECT_EQ(at_b[i].to, b_endpoint->address());
    EXPECT_EQ(at_a[i].payload, "msg-" + std::to_string(i) + "/echo");
    EXPECT_EQ(at_a[i].from, b_endpoint->address());
  }
  EXPECT_FALSE(reply_failed);
  EXPECT_FALSE(inbox_a.off_thread());
  EXPECT_FALSE(inbox_b.off_thread());
  internal::TcpEndpointStats stats = internal::GetTcpEndpointStats(**a);
  EXPECT_EQ(stats.frames_received, static_cast<uint64_t>(kMessages));
  EXPECT_EQ(stats.protocol_errors, 0u);
}

TEST(TcpTransportTest, EmptyAndMaximalPayloadsArriveIntact) {
  internal::AsioExecutor executor;
  internal::TcpTransport transport(executor);
  Inbox inbox;
  auto a = transport.Listen("127.0.0.1:0", [](Message) {});
  auto b = transport.Listen("127.0.0.1:0", inbox.Handler());
  ASSERT_TRUE(a.ok() && b.ok());
  std::string big(Transport::kMaxPayloadBytes, '\0');
  for (size_t i = 0; i < big.size(); i += 4096) big[i] = static_cast<char>(i >> 12);
  const std::string medium(10'000, 'm');  // above the coalescing threshold
  ASSERT_TRUE((*a)->Send((*b)->address(), "").ok());
  ASSERT_TRUE((*a)->Send((*b)->address(), big).ok());
  ASSERT_TRUE((*a)->Send((*b)->address(), medium).ok());
  ASSERT_TRUE((*a)->Send((*b)->address(), "tail").ok());
  std::vector<Message> got = inbox.Wait(4);
  ASSERT_EQ(got.size(), 4u);
  EXPECT_EQ(got[0].payload, "");
  EXPECT_TRUE(got[1].payload == big);
  EXPECT_EQ(got[2].payload, medium);
  EXPECT_EQ(got[3].payload, "tail");
}

TEST(TcpTransportTest, OversizedPayloadAndBadAddressesRejected) {
  internal::AsioExecutor executor;
  internal::TcpTransport transport(executor);
  auto a = transport.Listen("127.0.0.1:0", [](Message) {});
  ASSERT_TRUE(a.ok());
  Status too_big = (*a)->Send((*a)->address(), std::string(Transport::kMaxPayloadBytes + 1, 'x'));
  EXPECT_EQ(too_big.code(), StatusCode::kInvalidArgument);
  EXPECT_EQ((*a)->Send("no-port", "x").code(), StatusCode::kInvalidArgument);
  EXPECT_EQ((*a)->Send("host:99999", "x").code(), StatusCode::kInvalidArgument);
  EXPECT_EQ((*a)->Send("host:12ab", "x").code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(transport.Listen("127.0.0.1", [](Message) {}).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(transport.Listen((*a)->address(), [](Message) {}).status().code(),
            StatusCode::kAlreadyExists);
}

TEST(TcpTransportTest, PeerSendingOversizedFrameIsDisconnected) {
  internal::AsioExecutor executor;
  internal::TcpTransport transport(executor);
  Inbox inbox;
  auto b = transport.Listen("127.0.0.1:0", inbox.Handler());
  ASSERT_TRUE(b.ok());

  // A raw client claims a frame of 4 GiB - 1 bytes.
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(fd, 0);
  struct timeval tv = {10, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(PortOf((*b)->address()));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  const unsigned char header[8] = {0xff, 0xff, 0xff, 0xff, 1, 0, 0, 0};
  ASSERT_EQ(::write(fd, header, sizeof(header)), static_cast<ssize_t>(sizeof(header)));
  char buf[16];
  ssize_t n = ::read(fd, buf, sizeof(buf));
  EXPECT_TRUE(n == 0 || (n < 0 && errno == ECONNRESET)) << "n=" << n << " errno=" << errno;
  ::close(fd);

  // The endpoint survived and still serves well-behaved peers.
  auto a = transport.Listen("127.0.0.1:0", [](Message) {});
  ASSERT_TRUE(a.ok());
  ASSERT_TRUE((*a)->Send((*b)->address(), "still alive").ok());
  EXPECT_EQ(inbox.Wait(1)[0].payload, "still alive");
  EXPECT_EQ(internal::GetTcpEndpointStats(**b).protocol_errors, 1u);
}

TEST(TcpTransportTest, SendQueueIsBounded) {
  internal::AsioExecutor executor;
  internal::TcpTransportOptions options;
  options.max_queued_frames_per_peer = 4;
  internal::TcpTransport transport(executor, options);
  Inbox inbox;
  auto a = transport.Listen("127.0.0.1:0", [](Message) {});
  auto b = transport.Listen("127.0.0.1:0", inbox.Handler());
  ASSERT_TRUE(a.ok() && b.ok());
  // Hold the executor thread so nothing drains while we fill the queue.
  std::promise<void> release;
  std::shared_future<void> released = release.get_future().share();
  executor.Post([released] { released.wait(); });
  for (int i = 0; i < 4; ++i) ASSERT_TRUE((*a)->Send((*b)->address(), "m").ok());
  EXPECT_EQ((*a)->Send((*b)->address(), "m").code(), StatusCode::kResourceExhausted);
  release.set_value();
  inbox.Wait(4);
  Flush(executor);
}

TEST(TcpTransportTest, SendToNobodyIsAcceptedAndLost) {
  internal::AsioExecutor executor;
  internal::TcpTransport transport(executor);
  Inbox inbox;
  auto a = transport.Listen("127.0.0.1:0", [](Message) {});
  auto b = transport.Listen("127.0.0.1:0", inbox.Handler());
  ASSERT_TRUE(a.ok() && b.ok());
  // A port that was just free: connecting is refused.
  std::string dead_address;
  {
    auto dead = transport.Listen("127.0.0.1:0", [](Message) {});
    ASSERT_TRUE(dead.ok());
    dead_address = (*dead)->address();
  }
  Flush(executor);  // its sockets are closed
  EXPECT_TRUE((*a)->Send(dead_address, "lost").ok());
  ASSERT_TRUE((*a)->Send((*b)->address(), "delivered").ok());
  EXPECT_EQ(inbox.Wait(1)[0].payload, "delivered");
}

TEST(TcpTransportTest, ReconnectsAfterPeerRestarts) {
  internal::AsioExecutor executor;
  internal::TcpTransport transport(executor);
  auto a = transport.Listen("127.0.0.1:0", [](Message) {});
  ASSERT_TRUE(a.ok());
  Inbox first;
  auto b = transport.Listen("127.0.0.1:0", first.Handler());
  ASSERT_TRUE(b.ok());
  const std::string b_address = (*b)->address();
  ASSERT_TRUE((*a)->Send(b_address, "before").ok());
  first.Wait(1);
  b->reset();       // B goes away...
  Flush(executor);  // ...its sockets are closed
  Inbox second;
  auto b2 = transport.Listen(b_address, second.Handler());  // ...and comes back on its port
  ASSERT_TRUE(b2.ok()) << b2.status().ToString();
  // Datagram semantics: messages may be lost while A notices the old connection died, so A
  // retries (as protocols on this transport do) until one arrives.
  std::atomic<bool> stop{false};
  std::function<void()> resend = [&] {
    if (stop) return;
    (void)(*a)->Send(b_address, "after");
    executor.Schedule(20'000'000, resend);
  };
  executor.Post(resend);
  std::vector<Message> got = second.Wait(1);
  stop = true;
  ASSERT_FALSE(got.empty());
  EXPECT_EQ(got[0].payload, "after");
  EXPECT_EQ(first.size(), 1u);  // the old handler is never called after its endpoint is gone
  Flush(executor);
}

TEST(TcpTransportTest, HandlerMayDestroyItsOwnEndpoint) {
  internal::AsioExecutor executor;
  internal::TcpTransport transport(executor);
  std::unique_ptr<Endpoint> b;
  std::atomic<int> calls{0};
  std::promise<void> destroyed;
  auto listened = transport.Listen("127.0.0.1:0", [&](Message) {
    if (++calls == 1) {
      b.reset();
      destroyed.set_value();
    }
  });
  ASSERT_TRUE(listened.ok());
  b = std::move(*listened);
  const std::string b_address = b->address();
  auto a = transport.Listen("127.0.0.1:0", [](Message) {});
  ASSERT_TRUE(a.ok());
  for (int i = 0; i < 10; ++i) ASSERT_TRUE((*a)->Send(b_address, "x").ok());
  destroyed.get_future().wait();
  Flush(executor);
  EXPECT_EQ(calls.load(), 1);
}

TEST(TcpTransportTest, DefaultEnvTransportWorks) {
  Inbox inbox;
  auto a = Env::Default().transport().Listen("127.0.0.1:0", inbox.Handler());
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  ASSERT_TRUE((*a)->Send((*a)->address(), "to myself").ok());
  EXPECT_EQ(inbox.Wait(1)[0].payload, "to myself");
}

}  // namespace
}  // namespace converge
