// Env: everything outside the process that converge's logic may touch.
//
// The rule for the whole codebase: core and strategy code reads time, randomness, files and
// the network only through an Env handed to it. Production code gets the real one
// (Env::Default()); tests get a simulated one (converge/sim_env.h): single-threaded, seeded,
// in virtual time, with a filesystem that loses unsynced writes on a simulated crash and a
// transport that delays, drops, duplicates, reorders and partitions messages. The same
// component code runs in both.
//
// Thread-safety: the production Env and every object it hands out are thread-safe unless a
// class says otherwise (a WritableFile is used by one thread at a time). The simulated Env is
// single-threaded: every call must come from the thread that drives the simulation.
//
// Lifetime: an Env outlives every object created from it. Files and listeners are owned by
// the caller through the returned unique_ptr.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "converge/status.h"

namespace converge {

// ---------------------------------------------------------------------------------------
// Time
class Clock {
 public:
  virtual ~Clock() = default;
  // Nanoseconds on a clock that never goes backwards; the epoch is arbitrary.
  virtual int64_t NowMonotonicNanos() = 0;
  // Nanoseconds since the Unix epoch; may jump (NTP, simulated skew).
  virtual int64_t NowWallNanos() = 0;

  int64_t NowWallMicros() { return NowWallNanos() / 1000; }
  int64_t NowMonotonicMicros() { return NowMonotonicNanos() / 1000; }
};

// ---------------------------------------------------------------------------------------
// Randomness
class Random {
 public:
  virtual ~Random() = default;
  // 64 uniformly random bits.
  virtual uint64_t Next64() = 0;

  // Uniform in [0, n); n > 0.
  uint64_t Uniform(uint64_t n);
  // Uniform in [lo, hi]; lo <= hi.
  int64_t UniformRange(int64_t lo, int64_t hi);
  // Uniform in [0, 1).
  double NextDouble();
  // True with probability p.
  bool Bernoulli(double p) { return NextDouble() < p; }
  // Fills `out` with random bytes.
  void Fill(std::span<uint8_t> out);
  // Fills `out` with bytes that must stay secret (keys). Next64 is fast but predictable from
  // its outputs, which leave the process as ids; these do not come from it. The production Env
  // reads the kernel's cryptographic generator (getrandom); the simulator's come from its seed,
  // so a run still replays. Blocks only before the kernel's generator is first seeded.
  virtual void FillSecret(std::span<uint8_t> out) { Fill(out); }
};

// ---------------------------------------------------------------------------------------
// Timers and deferred work
using TimerId = uint64_t;

class Executor {
 public:
  virtual ~Executor() = default;
  // Runs `fn` soon, on the executor's thread (production: a background thread; simulation:
  // the thread that drives the simulation, when it runs the event loop).
  virtual void Post(std::function<void()> fn) = 0;
  // Runs `fn` once `delay_ns` of monotonic time has passed. Returns an id for Cancel.
  virtual TimerId Schedule(int64_t delay_ns, std::function<void()> fn) = 0;
  // Cancels a timer that has not fired. Returns false if it already fired or is unknown.
  virtual bool Cancel(TimerId id) = 0;
};

// ---------------------------------------------------------------------------------------
// Files
//
// Durability model (the simulated filesystem implements exactly this, and the production
// one maps it onto POSIX):
// - Data appended to a WritableFile is durable only after Sync() returns OK.
// - The existence of a newly created, renamed or deleted file is durable only after
//   SyncDir() on its parent directory returns OK.
// - Directories made by CreateDirs or removed by DeleteDir, and a Truncate, are durable as soon
//   as the call returns OK.
// - A crash keeps exactly what was made durable; everything else is lost.

// Appends to one file. Used by one thread at a time.
class WritableFile {
 public:
  virtual ~WritableFile() = default;
  virtual Status Append(std::span<const uint8_t> data) = 0;
  Status Append(std::string_view data) {
    return Append(std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(data.data()),
                                           data.size()));
  }
  // Makes every byte appended so far durable (fdatasync).
  virtual Status Sync() = 0;
  // Closes the file; unsynced data is not made durable. Further calls fail.
  virtual Status Close() = 0;
  // Bytes in the file, including what was appended and not yet synced.
  virtual uint64_t Size() const = 0;
};

// Reads at arbitrary offsets. Thread-safe.
class RandomAccessFile {
 public:
  virtual ~RandomAccessFile() = default;
  // Reads up to `n` bytes at `offset` into `scratch`; returns how many were read
  // (fewer than n only at end of file).
  virtual Result<size_t> Read(uint64_t offset, size_t n, uint8_t* scratch) const = 0;
  // Current size of the file.
  virtual Result<uint64_t> Size() const = 0;
};

// An exclusive lock on a file, held until destroyed (production: flock).
class FileLock {
 public:
  virtual ~FileLock() = default;
};

enum class OpenMode : uint8_t {
  kTruncate,  // create, or empty an existing file
  kAppend,    // create, or keep the contents and append after them
  kCreateNew  // create; AlreadyExists if it exists
};

class FileSystem {
 public:
  virtual ~FileSystem() = default;
  virtual Result<std::unique_ptr<WritableFile>> NewWritableFile(const std::string& path,
                                                                OpenMode mode) = 0;
  // NotFound if the file does not exist.
  virtual Result<std::unique_ptr<RandomAccessFile>> NewRandomAccessFile(
      const std::string& path) = 0;
  // True if a file or directory exists at `path`.
  virtual bool FileExists(const std::string& path) = 0;
  // NotFound if the file does not exist.
  virtual Result<uint64_t> GetFileSize(const std::string& path) = 0;
  // Names (not paths) of the entries of a directory, sorted. NotFound if it does not exist.
  virtual Result<std::vector<std::string>> ListDir(const std::string& dir) = 0;
  // Creates a directory and its missing parents, durably; OK if it exists. AlreadyExists if a
  // component exists and is not a directory.
  virtual Status CreateDirs(const std::string& dir) = 0;
  // NotFound if the file does not exist.
  virtual Status DeleteFile(const std::string& path) = 0;
  // Deletes an empty directory, durably. NotFound if missing; FailedPrecondition if not empty.
  virtual Status DeleteDir(const std::string& dir) = 0;
  // Atomically replaces `to` with `from`.
  virtual Status RenameFile(const std::string& from, const std::string& to) = 0;
  // Cuts (or zero-extends) a file to `size` bytes and makes its content durable before
  // returning. NotFound if the file does not exist.
  virtual Status Truncate(const std::string& path, uint64_t size) = 0;
  // Makes creations, renames and deletions in `dir` durable.
  virtual Status SyncDir(const std::string& dir) = 0;
  // Takes an exclusive lock on `path` (created if missing, as a non-durable entry);
  // FailedPrecondition if another holder has it.
  virtual Result<std::unique_ptr<FileLock>> LockFile(const std::string& path) = 0;

  // Helpers built on the primitives above.
  // Reads a whole file.
  Result<std::string> ReadFileToString(const std::string& path);
  // Writes `data` to `path` atomically and durably: temp file, Sync, rename, SyncDir.
  Status WriteFileAtomically(const std::string& path, std::string_view data);
};

// ---------------------------------------------------------------------------------------
// Messages between services
//
// An unreliable, unordered datagram service between named endpoints, the way networks
// really behave: a message may be delayed, lost or (in simulation) duplicated and reordered.
// Protocols built on it add their own ids, acks and retries. Handlers run on the executor.
// Production addresses are "host:port" (TCP underneath, length-prefixed frames);
// simulated addresses are any unique name.
struct Message {
  std::string from;
  std::string to;
  std::string payload;
};

class Endpoint {
 public:
  virtual ~Endpoint() = default;
  // The address others send to.
  virtual const std::string& address() const = 0;
  // Queues a message; OK means accepted for sending, not delivered. ResourceExhausted when
  // the send queue for `to` is full; InvalidArgument for a payload over the size limit.
  virtual Status Send(const std::string& to, std::string payload) = 0;
};

class Transport {
 public:
  using Handler = std::function<void(Message)>;
  virtual ~Transport() = default;
  // Opens an endpoint at `address` ("127.0.0.1:0" picks a free port in production).
  // Messages to it are passed to `handler` on the executor until the Endpoint is destroyed.
  virtual Result<std::unique_ptr<Endpoint>> Listen(const std::string& address,
                                                   Handler handler) = 0;
  // Largest payload accepted by Send.
  static constexpr size_t kMaxPayloadBytes = 16u << 20;
};

// ---------------------------------------------------------------------------------------
class Env {
 public:
  virtual ~Env() = default;
  virtual Clock& clock() = 0;
  virtual Random& random() = 0;
  virtual Executor& executor() = 0;
  virtual FileSystem& fs() = 0;
  virtual Transport& transport() = 0;

  // The production Env: the real clock, a seeded-from-OS random source, a background
  // executor thread, POSIX files and TCP. A process-wide singleton, never destroyed.
  static Env& Default();
};

}  // namespace converge
