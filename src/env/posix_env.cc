// Env::Default(): the production Env, wiring the OS-backed implementations together.
#include <sys/random.h>
#include <time.h>

#include <atomic>
#include <cerrno>
#include <thread>

#include "converge/env.h"
#include "env/asio_executor.h"
#include "env/posix_fs.h"
#include "env/prng.h"
#include "env/tcp_transport.h"

namespace converge {
namespace internal {
namespace {

int64_t ReadClock(clockid_t id) {
  struct timespec ts;
  ::clock_gettime(id, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

class PosixClock : public Clock {
 public:
  int64_t NowMonotonicNanos() override { return ReadClock(CLOCK_MONOTONIC); }
  int64_t NowWallNanos() override { return ReadClock(CLOCK_REALTIME); }
};

// 256 bits from the kernel; if getrandom is unavailable, a mix of clocks and a counter
// (distinct per thread, which is all a non-cryptographic generator needs).
Xoshiro256StarStar SeedFromOs() {
  uint64_t words[4] = {0, 0, 0, 0};
  size_t got = 0;
  auto* bytes = reinterpret_cast<uint8_t*>(words);
  while (got < sizeof(words)) {
    ssize_t n = ::getrandom(bytes + got, sizeof(words) - got, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      break;
    }
    got += static_cast<size_t>(n);
  }
  if (got < sizeof(words)) {
    static std::atomic<uint64_t> counter{0};
    SplitMix64 mix(static_cast<uint64_t>(ReadClock(CLOCK_REALTIME)) ^
                   (static_cast<uint64_t>(ReadClock(CLOCK_MONOTONIC)) << 1) ^
                   (counter.fetch_add(1) * 0x9e3779b97f4a7c15ULL));
    for (uint64_t& w : words) w ^= mix.Next();
  }
  return Xoshiro256StarStar(words[0], words[1], words[2], words[3]);
}

// Thread-safe without locks: each thread has its own generator, seeded from the OS on first use.
class PosixRandom : public Random {
 public:
  uint64_t Next64() override {
    thread_local Xoshiro256StarStar rng = SeedFromOs();
    return rng.Next();
  }
  void FillSecret(std::span<uint8_t> out) override {
    size_t done = 0;
    while (done < out.size()) {
      const ssize_t n = ::getrandom(out.data() + done, out.size() - done, 0);
      if (n < 0 && errno == EINTR) continue;
      CONVERGE_CHECK(n > 0);  // getrandom cannot fail on Linux >= 3.17 with valid arguments
      done += static_cast<size_t>(n);
    }
  }
};

class PosixEnv : public Env {
 public:
  PosixEnv() : transport_(executor_) {}
  Clock& clock() override { return clock_; }
  Random& random() override { return random_; }
  Executor& executor() override { return executor_; }
  FileSystem& fs() override { return fs_; }
  Transport& transport() override { return transport_; }

 private:
  PosixClock clock_;
  PosixRandom random_;
  AsioExecutor executor_;
  PosixFileSystem fs_;
  TcpTransport transport_;
};

}  // namespace
}  // namespace internal

Env& Env::Default() {
  // Never destroyed: the executor thread may still be running callbacks at exit.
  static Env* const env = new internal::PosixEnv();
  return *env;
}

}  // namespace converge
