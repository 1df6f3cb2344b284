#include "server/wakeup_hub.h"

#include <gtest/gtest.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <chrono>
#include <deque>
#include <string>

namespace converge::server {
namespace {

namespace asio = boost::asio;

// Waits on (key, sub) from `seen` for up to an hour; sets *done when it returns.
asio::awaitable<void> WaitNamed(WakeupHub* hub, std::string key, std::string sub, uint64_t seen,
                                bool* done) {
  co_await hub->Wait(key, sub, seen, std::chrono::steady_clock::now() + std::chrono::hours(1));
  *done = true;
}

class WakeupHubTest : public ::testing::Test {
 protected:
  ~WakeupHubTest() override {
    hub_.Shutdown();  // ends the waits still pending
    io_.restart();
    io_.run();
  }
  // Starts a named wait that read its generation now.
  void Start(const std::string& sub, bool* done) { Start(sub, hub_.Generation("g", sub), done); }
  void Start(const std::string& sub, uint64_t seen, bool* done) {
    asio::co_spawn(io_, WaitNamed(&hub_, "g", sub, seen, done), asio::detached);
    Settle();
  }
  void Settle() {
    io_.restart();
    io_.run_for(std::chrono::milliseconds(20));
  }
  // A flag a wait sets when it returns; it lives as long as the fixture (waits still pending
  // at the end of a test return in the destructor).
  bool* Flag() { return &flags_.emplace_back(false); }

  WakeupHub hub_;
  asio::io_context io_;
  std::deque<bool> flags_;
};

// A member's notification wakes that member's waiters only; the group's wakes every one.
TEST_F(WakeupHubTest, NamedNotifyWakesOnlyThatSub) {
  bool *a = Flag(), *a2 = Flag(), *b = Flag();
  Start("a", a);
  Start("a", a2);
  Start("b", b);
  EXPECT_FALSE(*a || *a2 || *b);
  hub_.Notify("g", "a");
  Settle();
  EXPECT_TRUE(*a);
  EXPECT_TRUE(*a2);
  EXPECT_FALSE(*b);
  hub_.Notify("g", "c");  // nobody waits on c
  Settle();
  EXPECT_FALSE(*b);
  hub_.Notify("g");
  Settle();
  EXPECT_TRUE(*b);
}

// A notification between the generation read and the wait is not missed, whether it names the
// member or the whole group; one for another member does not end the wait.
TEST_F(WakeupHubTest, NotifyBetweenReadAndWaitIsNotMissed) {
  bool *named = Flag(), *group = Flag(), *other = Flag();
  uint64_t seen = hub_.Generation("g", "a");
  hub_.Notify("g", "a");
  Start("a", seen, named);
  EXPECT_TRUE(*named);
  seen = hub_.Generation("g", "a");
  hub_.Notify("g");
  Start("a", seen, group);
  EXPECT_TRUE(*group);
  seen = hub_.Generation("g", "a");
  hub_.Notify("g", "b");
  Start("a", seen, other);
  EXPECT_FALSE(*other);
}

// Entries of subs nobody waits on are dropped past a bound, and a waiter whose entry was
// dropped between its read and its wait still sees a notification made meanwhile.
TEST_F(WakeupHubTest, IdleEntriesAreBoundedAndDroppingOneLosesNoNotification) {
  const uint64_t seen = hub_.Generation("g", "x");
  for (int i = 0; i < 5000; ++i) hub_.Generation("g", std::to_string(i) + "m");
  EXPECT_LE(hub_.SubEntries(), 1025u);
  hub_.Notify("g", "x");  // x's entry was dropped: this must still reach a wait from `seen`
  bool* x = Flag();
  Start("x", seen, x);
  EXPECT_TRUE(*x);
  // Entries with waiters stay.
  bool* w = Flag();
  Start("w", w);
  for (int i = 0; i < 5000; ++i) hub_.Generation("g", std::to_string(i) + "n");
  hub_.Notify("g", "w");
  Settle();
  EXPECT_TRUE(*w);
}

}  // namespace
}  // namespace converge::server
