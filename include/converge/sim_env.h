// The simulated Env: deterministic, single-threaded, in virtual time.
//
// Everything a component can observe through a SimEnv — the clock, random numbers, the order in
// which timers, posted tasks and messages run, what a crash leaves on "disk", which messages are
// dropped or duplicated and how late they arrive — is a function of the seed and of the calls
// the test makes. Same seed, same calls => the same run, step for step; the trace hash
// (TraceHash) proves it. A failing seed is replayed by constructing SimEnv with that seed.
//
// Event loop: nothing runs by itself. Post, Schedule and message deliveries enqueue events
// ordered by (due virtual time, insertion sequence); RunOne / RunUntilIdle / RunFor execute them
// on the calling thread, moving virtual time forward to each event's due time. Virtual time
// starts at 0 (monotonic) and only moves forward; the Clock never blocks.
//
// Filesystem (SimFileSystem): in memory, implementing env.h's durability model exactly, with a
// simulated machine crash (Crash), a crash point after N mutating operations (CrashAfterOps),
// torn writes and byte corruption for recovery tests.
//
// Network (SimTransport): endpoints are any unique names; messages are delivered after a
// latency drawn uniformly from [min, max], and may be dropped, duplicated, reordered (when the
// latency window is wide) or blocked by partitions.
//
// Thread-safety: none. A SimEnv and everything it hands out must be used from the one thread
// that drives the simulation; callbacks run inside RunOne/RunUntilIdle/RunFor on that thread.
// The Run* functions must not be called from inside a callback (checked).
//
// Lifetime: SimEnv outlives every object created from it (files, locks, endpoints, node Envs).
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "converge/env.h"
#include "converge/status.h"

namespace converge::sim {

class SimEnv;

struct SimOptions {
  // Wall clock at virtual time 0 (2023-11-14T22:13:20Z by default).
  int64_t start_wall_nanos = 1'700'000'000'000'000'000;
  // Keep the last `trace_keep_lines` trace lines for TraceLines() (to find where two runs
  // diverge). 0 keeps none; the hash is computed either way.
  size_t trace_keep_lines = 0;
};

// ---------------------------------------------------------------------------------------
// An in-memory FileSystem with env.h's durability model:
// - file content is durable up to the last successful WritableFile::Sync (or Truncate);
// - a file's directory entry (creation, rename, deletion) is durable after SyncDir(parent);
// - CreateDirs and DeleteDir are durable at once.
// Paths are normalized ("//" and "." collapse, ".." pops); relative paths resolve against "/".
// The root "/" always exists. Renaming a directory is not supported (InvalidArgument).
// Once the armed crash point is hit, every operation (reads included) fails with Internal until
// Crash() is called; FileExists then returns false.
class SimFileSystem : public FileSystem {
 public:
  ~SimFileSystem() override;
  SimFileSystem(const SimFileSystem&) = delete;
  SimFileSystem& operator=(const SimFileSystem&) = delete;

  // Simulated machine crash: every file's content and every directory entry revert to their
  // last durable state. Handles (files, readers, locks) opened before the crash fail afterwards
  // with Internal; locks are released. Clears the crash point and crashed().
  void Crash();
  // Arms a crash point: the `n`-th mutating operation from now (Append, Sync, Close, RenameFile,
  // DeleteFile, DeleteDir, Truncate, CreateDirs, NewWritableFile, SyncDir) and every later
  // operation fail with Internal ("simulated crash") until Crash() is called. n = 0 disarms.
  void CrashAfterOps(uint64_t n);
  // True from the moment the armed crash point was hit until Crash().
  bool crashed() const;
  // When true, Crash() keeps a random prefix (possibly empty, possibly all) of each file's
  // unsynced appended tail instead of dropping it, and with probability 1/2 garbles the last
  // 1..kTornGarbleMaxBytes kept bytes (never bytes that were durable): a torn write.
  // Unsynced content that is not a pure append (after kTruncate) is lost as usual.
  // Default false: exactly the unsynced bytes are lost.
  void SetTornWrites(bool torn);
  static constexpr size_t kTornGarbleMaxBytes = 16;
  // Mutating operations attempted so far (those failed by a crash point included).
  uint64_t mutating_ops() const;

  // Corruption for recovery tests; neither counts as a mutating operation nor is affected by a
  // crash point. XORs the byte at `offset` of the file's current content with `xor_mask` (and
  // of its durable content, when that is long enough). NotFound if there is no such file;
  // OutOfRange if `offset` is past its current end.
  Status CorruptByte(const std::string& path, uint64_t offset, uint8_t xor_mask);
  // Cuts a file's current and durable content to at most `size` bytes (a lost tail).
  // NotFound if there is no such file.
  Status CorruptTruncate(const std::string& path, uint64_t size);

  // FileSystem (see env.h). Failures: NotFound (missing file or parent directory),
  // AlreadyExists (kCreateNew on an existing file; CreateDirs over a file), FailedPrecondition
  // (a directory where a file is expected or vice versa, DeleteDir of a non-empty directory,
  // LockFile on a held lock, use of a closed WritableFile), Internal (crash point hit, or a
  // handle from before a Crash()).
  Result<std::unique_ptr<WritableFile>> NewWritableFile(const std::string& path,
                                                        OpenMode mode) override;
  Result<std::unique_ptr<RandomAccessFile>> NewRandomAccessFile(const std::string& path) override;
  bool FileExists(const std::string& path) override;
  Result<uint64_t> GetFileSize(const std::string& path) override;
  Result<std::vector<std::string>> ListDir(const std::string& dir) override;
  Status CreateDirs(const std::string& dir) override;
  Status DeleteFile(const std::string& path) override;
  Status DeleteDir(const std::string& dir) override;
  Status RenameFile(const std::string& from, const std::string& to) override;
  Status Truncate(const std::string& path, uint64_t size) override;
  Status SyncDir(const std::string& dir) override;
  Result<std::unique_ptr<FileLock>> LockFile(const std::string& path) override;

  struct Impl;

 private:
  friend class SimEnv;
  // `name` prefixes this filesystem's trace lines ("fs" or "fs[name]").
  SimFileSystem(SimEnv& env, uint64_t seed, std::string name);
  std::unique_ptr<Impl> impl_;
};

// ---------------------------------------------------------------------------------------
// A simulated network. Fate of a message is decided with the transport's own seeded stream:
// at Send it is dropped if the endpoints are partitioned or with the drop probability;
// otherwise it is delivered once (or twice, with the duplicate probability), each copy after its
// own latency. At delivery a copy is dropped if the endpoints are partitioned by then or no
// endpoint listens at the destination. Deliveries run as events of the SimEnv loop.
// Send to an address nobody listens on is accepted (OK) and dropped, like UDP.
class SimTransport : public Transport {
 public:
  ~SimTransport() override;
  SimTransport(const SimTransport&) = delete;
  SimTransport& operator=(const SimTransport&) = delete;

  // One-way latency, uniform in [min_ns, max_ns] (0 <= min_ns <= max_ns, checked).
  // Default [100'000, 1'000'000] (0.1 to 1 ms). A wide window reorders messages.
  void SetLatency(int64_t min_ns, int64_t max_ns);
  // Probability in [0, 1] that a sent message is lost. Default 0.
  void SetDropProbability(double p);
  // Probability in [0, 1] that a sent (not dropped) message is delivered twice. Default 0.
  void SetDuplicateProbability(double p);
  // Messages in flight per (from, to) pair before Send returns ResourceExhausted. Default 100'000.
  void SetMaxInFlightPerLink(size_t n);
  // Blocks messages between `a` and `b`, both directions, including ones already in flight.
  void Partition(const std::string& a, const std::string& b);
  // Blocks every message to or from `a` (any peer, present or future) until Heal().
  void Isolate(const std::string& a);
  // Removes all partitions and isolations. Messages dropped meanwhile stay lost.
  void Heal();

  struct Stats {
    uint64_t sent = 0;        // accepted by Send
    uint64_t delivered = 0;   // handed to a handler (duplicates count twice)
    uint64_t dropped = 0;     // lost to drop probability, partitions or unknown destinations
    uint64_t duplicated = 0;  // extra copies created
  };
  Stats stats() const;

  // Transport: InvalidArgument for an empty address; AlreadyExists if `address` is in use.
  // Endpoint::Send: InvalidArgument for a payload over kMaxPayloadBytes; ResourceExhausted when
  // the link's in-flight bound is reached.
  Result<std::unique_ptr<Endpoint>> Listen(const std::string& address, Handler handler) override;

  struct Impl;

 private:
  friend class SimEnv;
  SimTransport(SimEnv& env, uint64_t seed);
  std::unique_ptr<Impl> impl_;
};

// ---------------------------------------------------------------------------------------
class SimEnv : public Env {
 public:
  explicit SimEnv(uint64_t seed, SimOptions options = {});
  ~SimEnv() override;
  SimEnv(const SimEnv&) = delete;
  SimEnv& operator=(const SimEnv&) = delete;

  // Monotonic = virtual time; wall = start_wall_nanos + virtual time + wall offset.
  Clock& clock() override;
  // The seeded generator for components (the simulator's own choices use separate streams, so
  // a component drawing more numbers does not change network or crash behaviour).
  Random& random() override;
  Executor& executor() override;
  FileSystem& fs() override;
  Transport& transport() override;

  SimFileSystem& sim_fs();
  SimTransport& sim_transport();
  uint64_t seed() const;

  // Multi-node simulations: an independent in-memory filesystem (crashed separately) whose trace
  // lines are tagged with `name`, and an Env that shares this SimEnv's clock, random, executor
  // and transport but uses `fs`. Both must not outlive this SimEnv.
  std::unique_ptr<SimFileSystem> NewFileSystem(const std::string& name);
  std::unique_ptr<Env> NodeEnv(FileSystem& fs);

  // Event loop in virtual time (callbacks run inside these calls, on this thread).
  // Runs the next event (earliest due time, then insertion order), first moving virtual time to
  // its due time if that is later. Returns false if there is no event.
  bool RunOne();
  // Runs events until none is left or `max_steps` ran; returns how many ran.
  size_t RunUntilIdle(size_t max_steps = 10'000'000);
  // Runs every event due within [now, now + duration_ns] (including ones those events create),
  // then sets virtual time to the end of the window. Returns how many ran. duration_ns >= 0
  // (checked).
  size_t RunFor(int64_t duration_ns);
  // Moves virtual time forward by `ns` >= 0 without running anything (due events run on the
  // next Run* call, in order, without moving time back).
  void AdvanceTime(int64_t ns);
  // Virtual monotonic time in nanoseconds.
  int64_t now_nanos() const;
  // Events waiting to run.
  size_t pending_events() const;

  // Wall clock skew for tests: wall = start + monotonic + offset. May be negative.
  void SetWallOffset(int64_t ns);

  // Deterministic trace: every delivered or dropped message, fired timer and fs mutation is
  // folded (with the virtual time) into a running 64-bit hash; components may add their own
  // lines. Two runs are identical when their hashes are.
  void Trace(std::string_view line);
  uint64_t TraceHash() const;
  // The last SimOptions::trace_keep_lines lines, oldest first, as "<time_ns> <line>".
  std::vector<std::string> TraceLines() const;

  struct Impl;

 private:
  friend class SimTransport;
  // Enqueues an untraced, uncancellable event `delay_ns` from now (message deliveries).
  void ScheduleInternal(int64_t delay_ns, std::function<void()> fn);

  std::unique_ptr<Impl> impl_;
  std::unique_ptr<SimFileSystem> fs_;
  std::unique_ptr<SimTransport> transport_;
};

}  // namespace converge::sim
