// SimEnv: the virtual-time event loop, clock, random and executor of the simulator.
#include "converge/sim_env.h"

#include <deque>
#include <map>
#include <unordered_map>
#include <utility>

#include "env/prng.h"

namespace converge::sim {
namespace {

// Stream separators: the components' generator, the filesystem's and the network's draw from
// independent sequences derived from the one seed.
constexpr uint64_t kFsStream = 0x5f46535f53545245ULL;
constexpr uint64_t kNetStream = 0x5f4e45545f535452ULL;

class SimClock : public Clock {
 public:
  SimClock(const int64_t& now, int64_t start_wall) : now_(now), start_wall_(start_wall) {}
  int64_t NowMonotonicNanos() override { return now_; }
  int64_t NowWallNanos() override { return start_wall_ + now_ + wall_offset_; }
  void set_wall_offset(int64_t ns) { wall_offset_ = ns; }

 private:
  const int64_t& now_;
  const int64_t start_wall_;
  int64_t wall_offset_ = 0;
};

class SimExecutor : public Executor {
 public:
  explicit SimExecutor(SimEnv::Impl& impl) : impl_(impl) {}
  void Post(std::function<void()> fn) override;
  TimerId Schedule(int64_t delay_ns, std::function<void()> fn) override;
  bool Cancel(TimerId id) override;

 private:
  SimEnv::Impl& impl_;
};

// An Env for one node of a multi-node simulation: shared loop and network, own filesystem.
class NodeEnvImpl : public Env {
 public:
  NodeEnvImpl(SimEnv& env, FileSystem& fs) : env_(env), fs_(fs) {}
  Clock& clock() override { return env_.clock(); }
  Random& random() override { return env_.random(); }
  Executor& executor() override { return env_.executor(); }
  FileSystem& fs() override { return fs_; }
  Transport& transport() override { return env_.transport(); }

 private:
  SimEnv& env_;
  FileSystem& fs_;
};

}  // namespace

struct SimEnv::Impl {
  Impl(uint64_t seed_in, const SimOptions& options_in)
      : seed(seed_in),
        options(options_in),
        clock(now, options_in.start_wall_nanos),
        random(seed_in),
        executor(*this) {}

  struct Event {
    std::function<void()> fn;
    TimerId timer = 0;  // 0: not a cancellable timer
  };
  using Key = std::pair<int64_t, uint64_t>;  // (due time, insertion sequence)

  TimerId Enqueue(int64_t delay_ns, std::function<void()> fn, bool timer) {
    const int64_t due = now + (delay_ns > 0 ? delay_ns : 0);
    const Key key{due, next_seq++};
    Event event{std::move(fn), timer ? next_timer_id++ : 0};
    const TimerId id = event.timer;
    queue.emplace(key, std::move(event));
    if (id != 0) timers.emplace(id, key);  // lookup only: iteration order never matters
    return id;
  }

  void AddTrace(std::string_view line) {
    const int64_t t = now;
    trace_hash = internal::Fnv1a(trace_hash, &t, sizeof(t));
    trace_hash = internal::Fnv1a(trace_hash, line.data(), line.size());
    trace_hash = internal::Fnv1a(trace_hash, "\n", 1);
    if (options.trace_keep_lines > 0) {
      if (trace_lines.size() == options.trace_keep_lines) trace_lines.pop_front();
      std::string kept = std::to_string(t);
      kept.append(" ").append(line);
      trace_lines.push_back(std::move(kept));
    }
  }

  const uint64_t seed;
  const SimOptions options;
  int64_t now = 0;
  SimClock clock;
  internal::SeededRandom random;
  SimExecutor executor;
  std::map<Key, Event> queue;
  std::unordered_map<TimerId, Key> timers;
  uint64_t next_seq = 0;
  TimerId next_timer_id = 1;
  bool running = false;
  uint64_t trace_hash = internal::kFnvOffset;
  std::deque<std::string> trace_lines;
};

namespace {

void SimExecutor::Post(std::function<void()> fn) { impl_.Enqueue(0, std::move(fn), false); }

TimerId SimExecutor::Schedule(int64_t delay_ns, std::function<void()> fn) {
  return impl_.Enqueue(delay_ns, std::move(fn), true);
}

bool SimExecutor::Cancel(TimerId id) {
  auto it = impl_.timers.find(id);
  if (it == impl_.timers.end()) return false;
  impl_.queue.erase(it->second);
  impl_.timers.erase(it);
  return true;
}

}  // namespace

SimEnv::SimEnv(uint64_t seed, SimOptions options)
    : impl_(std::make_unique<Impl>(seed, options)),
      fs_(new SimFileSystem(*this, seed ^ kFsStream, "")),
      transport_(new SimTransport(*this, seed ^ kNetStream)) {}

SimEnv::~SimEnv() = default;

Clock& SimEnv::clock() { return impl_->clock; }
Random& SimEnv::random() { return impl_->random; }
Executor& SimEnv::executor() { return impl_->executor; }
FileSystem& SimEnv::fs() { return *fs_; }
Transport& SimEnv::transport() { return *transport_; }
SimFileSystem& SimEnv::sim_fs() { return *fs_; }
SimTransport& SimEnv::sim_transport() { return *transport_; }
uint64_t SimEnv::seed() const { return impl_->seed; }

std::unique_ptr<SimFileSystem> SimEnv::NewFileSystem(const std::string& name) {
  // Each named filesystem gets its own stream, independent of creation order.
  const uint64_t name_hash = internal::Fnv1a(internal::kFnvOffset, name.data(), name.size());
  return std::unique_ptr<SimFileSystem>(
      new SimFileSystem(*this, impl_->seed ^ kFsStream ^ name_hash, name));
}

std::unique_ptr<Env> SimEnv::NodeEnv(FileSystem& fs) {
  return std::make_unique<NodeEnvImpl>(*this, fs);
}

bool SimEnv::RunOne() {
  Impl& s = *impl_;
  CONVERGE_CHECK_MSG(!s.running, "SimEnv::Run* called from inside a simulated callback");
  if (s.queue.empty()) return false;
  auto it = s.queue.begin();
  const int64_t due = it->first.first;
  Impl::Event event = std::move(it->second);
  s.queue.erase(it);
  if (due > s.now) s.now = due;
  if (event.timer != 0) {
    s.timers.erase(event.timer);
    s.AddTrace("timer " + std::to_string(event.timer));
  }
  s.running = true;
  event.fn();
  s.running = false;
  return true;
}

size_t SimEnv::RunUntilIdle(size_t max_steps) {
  size_t steps = 0;
  while (steps < max_steps && RunOne()) ++steps;
  return steps;
}

size_t SimEnv::RunFor(int64_t duration_ns) {
  CONVERGE_CHECK(duration_ns >= 0);
  const int64_t end = impl_->now + duration_ns;
  size_t steps = 0;
  while (!impl_->queue.empty() && impl_->queue.begin()->first.first <= end) {
    RunOne();
    ++steps;
  }
  if (impl_->now < end) impl_->now = end;
  return steps;
}

void SimEnv::AdvanceTime(int64_t ns) {
  CONVERGE_CHECK(ns >= 0);
  impl_->now += ns;
}

int64_t SimEnv::now_nanos() const { return impl_->now; }
size_t SimEnv::pending_events() const { return impl_->queue.size(); }
void SimEnv::SetWallOffset(int64_t ns) { impl_->clock.set_wall_offset(ns); }
void SimEnv::Trace(std::string_view line) { impl_->AddTrace(line); }
uint64_t SimEnv::TraceHash() const { return impl_->trace_hash; }

std::vector<std::string> SimEnv::TraceLines() const {
  return std::vector<std::string>(impl_->trace_lines.begin(), impl_->trace_lines.end());
}

void SimEnv::ScheduleInternal(int64_t delay_ns, std::function<void()> fn) {
  impl_->Enqueue(delay_ns, std::move(fn), false);
}

}  // namespace converge::sim
