// Where the relay and the inbox consumer run their steps.
//
// Their logic is event-driven: a step runs, then either continues or waits for a timer (from
// the Env's executor), a wake-up (a writer's commit, new records in the log) or a readable
// descriptor (PostgreSQL LISTEN/NOTIFY), each of which posts the next step to the lane. The
// steps themselves block on the database and the log, so a lane is one of:
// - a thread of its own (production): the Env's executor thread only fires timers and never
//   blocks on a database call;
// - the Env's executor itself (the simulator): everything runs on the thread that drives the
//   simulation, in virtual time and in an order fixed by the seed.
//
// Thread-safety: Post may be called from any thread; WatchFd only from the lane; Shutdown from
// any thread but the lane's.
#pragma once

#include <functional>
#include <memory>
#include <mutex>
#include <string>

#include "converge/env.h"

namespace converge::outbox_internal {

class Lane {
 public:
  virtual ~Lane() = default;
  // Runs `fn` on the lane after everything posted before it. After Shutdown, dropped.
  virtual void Post(std::function<void()> fn) = 0;
  // Until the next call: when `fd` becomes readable, posts `fn` (once). fd = -1 watches
  // nothing. A lane on an executor ignores descriptors (the owner's poll interval still
  // ends its waits): simulated sources have none.
  virtual void WatchFd(int fd, std::function<void()> fn) = 0;
  // Waits for the running step to finish and drops the rest; later posts are dropped.
  // Idempotent.
  virtual void Shutdown() = 0;
};

// A lane with its own thread (named `thread_name`, at most 15 characters).
std::shared_ptr<Lane> NewThreadLane(const std::string& thread_name);
// A lane that posts to `executor` (which must outlive every post).
std::shared_ptr<Lane> NewExecutorLane(Executor& executor);

// The lane of a running component, replaceable (Start after Stop) and reachable from other
// threads: wake-ups and timers post through it and are dropped while there is none.
class LaneSlot {
 public:
  void Set(std::shared_ptr<Lane> lane);
  std::shared_ptr<Lane> Get() const;
  // Posts to the current lane, if any.
  void Post(std::function<void()> fn) const;

 private:
  mutable std::mutex mu_;
  std::shared_ptr<Lane> lane_;
};

}  // namespace converge::outbox_internal
