// A TCP listener on 127.0.0.1 that never answers: the kernel completes connections into its
// backlog, but nothing ever reads or writes, so a client waits for a server greeting that never
// comes (an unresponsive server, a stuck proxy). For tests of connect timeouts. Header-only.
//
// Close() drops the listener; the kernel then resets the queued connections, which ends any
// client still waiting (so a test can bound a wait without hanging on a client without timeout).
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <string>
#include <thread>

namespace converge::testing {

class BlackHoleListener {
 public:
  BlackHoleListener() {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd_ < 0) return;
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = 0;
    socklen_t len = sizeof(addr);
    if (::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
        ::listen(fd_, 64) != 0 ||
        ::getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
      Close();
      return;
    }
    port_ = ntohs(addr.sin_port);
  }
  ~BlackHoleListener() { Close(); }
  BlackHoleListener(const BlackHoleListener&) = delete;
  BlackHoleListener& operator=(const BlackHoleListener&) = delete;

  bool ok() const { return fd_ >= 0 && port_ != 0; }
  uint16_t port() const { return port_; }
  // Key=value and URI conninfos of a PostgreSQL "server" on this listener.
  std::string ConnInfo() const {
    return "host=127.0.0.1 port=" + std::to_string(port_) + " user=postgres dbname=postgres";
  }
  std::string Uri() const {
    return "postgresql://postgres@127.0.0.1:" + std::to_string(port_) + "/postgres";
  }

  void Close() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

 private:
  int fd_ = -1;
  uint16_t port_ = 0;
};

// Runs `fn` (a connect attempt against `hole`) on a thread and returns how many milliseconds it
// took. If it has not returned after `give_up_ms`, the listener is closed (which ends the
// attempt) and the result is at least `give_up_ms`: a client without a working connect timeout
// makes the test fail instead of hang.
template <typename Fn>
int64_t MillisUntilGivenUp(BlackHoleListener& hole, int64_t give_up_ms, Fn fn) {
  std::mutex mu;
  std::condition_variable cv;
  bool done = false;
  const auto start = std::chrono::steady_clock::now();
  std::thread t([&] {
    fn();
    std::lock_guard<std::mutex> lock(mu);
    done = true;
    cv.notify_all();
  });
  {
    std::unique_lock<std::mutex> lock(mu);
    if (!cv.wait_for(lock, std::chrono::milliseconds(give_up_ms), [&] { return done; })) {
      hole.Close();
    }
  }
  t.join();
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() -
                                                               start)
      .count();
}

}  // namespace converge::testing
