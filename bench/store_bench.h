// `converge bench store`: conditional read-modify-write increments against the shared store
// and its peers (PostgreSQL `UPDATE ... WHERE version = $1`, JetStream KV `kvStore_Update` with
// the last revision), on one hot key and on uniformly spread keys.
//
// Every system implements the same two calls per client session, and one driver runs them:
// each client thread loops { key = pick(); (value, version) = Read(key);
// Write(key, value + 1, version) } and on a conflict re-reads and retries, so one increment
// is one successful conditional write. At the end the driver sums the counters and checks
// that the total equals the increments acknowledged (no lost update), or fails the run.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "bench/report.h"
#include "converge/status.h"

namespace converge::bench {

struct StoreWorkload {
  std::string dir;         // scratch directory of the system (filled by the runner)
  uint32_t clients = 32;   // concurrent client sessions (threads, one connection each)
  uint32_t keys = 10'000;  // spread workload: keys chosen uniformly
  uint32_t seconds = 10;   // measured seconds per workload, after 1 s of warm-up
  uint64_t seed = 1;
};

// One client's connection. Used by one thread.
class StoreSession {
 public:
  virtual ~StoreSession() = default;
  // The counter under `key` and its version token. NotFound if the key does not exist.
  virtual Status Read(const std::string& key, int64_t* value, std::string* version) = 0;
  // Sets the counter if its version is still `version`. OK, Aborted on a conflict (another
  // write came first), or another error.
  virtual Status Write(const std::string& key, int64_t value, const std::string& version) = 0;
};

class StoreSystem {
 public:
  virtual ~StoreSystem() = default;
  virtual std::string name() const = 0;
  // "fsync": an acknowledged write survives a machine crash; otherwise what it promises.
  virtual std::string durability() const = 0;
  // How the system was driven, for the report's note.
  virtual std::string note() const = 0;
  // Starts the system (servers in w.dir) and creates `keys` counters set to 0.
  virtual Status Start(const StoreWorkload& w, const std::vector<std::string>& keys) = 0;
  virtual Result<std::unique_ptr<StoreSession>> NewSession() = 0;
  virtual Status Stop() = 0;
};

// Systems (nullptr if this binary was built without one).
// `synced` false: the sidecar with store and feed durability none.
std::unique_ptr<StoreSystem> MakeConvergeStoreSystem(bool via_sidecar, bool synced = true);
std::unique_ptr<StoreSystem> MakePostgresStoreSystem();
// `sidecars` sidecars sharing one store in PostgreSQL (store.backend: postgres).
std::unique_ptr<StoreSystem> MakeConvergePostgresStoreSystem(int sidecars);
std::unique_ptr<StoreSystem> MakeJetStreamKvStoreSystem();

// Runs one workload ("hot": every client on one key; "spread": keys uniformly) against a
// started system: warm-up, then w.seconds measured. Appends one Measurement (rate_name "ops_per_s":
// successful increments per second; latency of one increment including its retries).
// Internal if a lost update is detected; the system's error otherwise.
Status RunIncrements(StoreSystem& system, const StoreWorkload& w, const std::string& workload,
                     const std::vector<std::string>& keys, std::vector<Measurement>& out);

}  // namespace converge::bench
